//! `wasmcache gc`: sweep the cache now and report what was removed.

use super::{CliError, SocketArg};
use crate::proto::GcRequest;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let mut client = args.socket.connect().await?;
    let report = client.gc(GcRequest {}).await?.into_inner();
    if args.json {
        let removed: Vec<_> = report
            .removed
            .iter()
            .map(|m| serde_json::json!({"sha256": m.sha256, "size": m.size, "reason": m.reason, "urls": m.urls}))
            .collect();
        let value = serde_json::json!({
            "removed": removed,
            "bytes_after": report.bytes_after,
            "over_limit": report.over_limit,
        });
        println!("{value}");
        return Ok(());
    }
    for m in &report.removed {
        println!(
            "removed sha256:{} ({} bytes, {}) {}",
            m.sha256,
            m.size,
            m.reason,
            m.urls.join(" ")
        );
    }
    let freed: u64 = report.removed.iter().map(|m| m.size).sum();
    println!(
        "removed {} module(s), {freed} bytes; {} bytes remain",
        report.removed.len(),
        report.bytes_after
    );
    if report.over_limit {
        println!("the cache is still above its size limit: every remaining module is in use or pinned");
    }
    Ok(())
}
