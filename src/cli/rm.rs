//! `wasmcache rm`: forget a URL, or delete a module by digest.

use super::{CliError, ModuleTarget, SocketArg};
use crate::proto::{remove_request::Target, RemoveRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// A module URL, or a sha256 digest (64 hex characters, `sha256:` prefix optional)
    #[arg(value_name = "URL|DIGEST")]
    pub target: ModuleTarget,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let target = match args.target {
        ModuleTarget::Url(url) => Target::Url(url),
        ModuleTarget::Digest(digest) => Target::Sha256(digest.to_string()),
    };
    let mut client = args.socket.connect().await?;
    let removed = client
        .remove(RemoveRequest { target: Some(target) })
        .await?
        .into_inner();
    for digest in &removed.removed_sha256 {
        println!("deleted module sha256:{digest}");
    }
    for url in &removed.removed_urls {
        println!("forgot url {url}");
    }
    Ok(())
}
