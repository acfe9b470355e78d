//! `wasmcache ls`: the cached modules.

use super::{rfc3339, CliError, SocketArg};
use crate::proto::ListRequest;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let mut client = args.socket.connect().await?;
    let modules = client.list(ListRequest {}).await?.into_inner().modules;
    if args.json {
        let rows: Vec<_> = modules
            .iter()
            .map(|m| {
                serde_json::json!({
                    "sha256": m.sha256,
                    "size": m.size,
                    "urls": m.urls,
                    "path": m.path,
                    "fetched_at": rfc3339(m.fetched_at.as_ref()),
                    "last_used": rfc3339(m.last_used.as_ref()),
                    "pinned": m.pinned,
                    "verified_by": m.verified_by,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<64}  {:>12}  {:<20}  {:<6}  URLS",
        "SHA256", "SIZE", "LAST_USED", "PINNED"
    );
    for m in &modules {
        let urls = if m.urls.is_empty() {
            "-".to_string()
        } else {
            m.urls.join(" ")
        };
        println!(
            "{:<64}  {:>12}  {:<20}  {:<6}  {urls}",
            m.sha256,
            m.size,
            rfc3339(m.last_used.as_ref()),
            if m.pinned { "yes" } else { "no" }
        );
        let mut verified: Vec<_> = m.verified_by.iter().collect();
        verified.sort();
        for (url, by) in verified {
            println!("  {url}: {by}");
        }
    }
    Ok(())
}
