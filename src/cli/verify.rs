//! `wasmcache verify`: re-hash every cached module; quarantine the ones that no longer match.

use super::{CliError, SocketArg};
use crate::proto::VerifyRequest;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print one JSON object: {"checked": N, "quarantined": ["<hex>", ...]}
    #[arg(long)]
    pub json: bool,
}

/// Exits non-zero when a module was quarantined, so a cron job or a probe notices.
pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let mut client = args.socket.connect().await?;
    let report = client.verify(VerifyRequest {}).await?.into_inner();
    if args.json {
        let value = serde_json::json!({
            "checked": report.checked,
            "quarantined": report.quarantined_sha256,
        });
        println!("{value}");
    } else {
        for digest in &report.quarantined_sha256 {
            println!("quarantined sha256:{digest}: its bytes no longer match its digest");
        }
        println!(
            "checked {} module(s), {} quarantined",
            report.checked,
            report.quarantined_sha256.len()
        );
    }
    if report.quarantined_sha256.is_empty() {
        Ok(())
    } else {
        Err(CliError(format!(
            "{} corrupt module(s) quarantined",
            report.quarantined_sha256.len()
        )))
    }
}
