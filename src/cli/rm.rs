//! `wasmcache rm`: forget a URL, or delete a module by digest.

use super::{CliError, SocketArg};
use crate::digest::Sha256;
use crate::proto::{remove_request::Target, RemoveRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// A module URL, or a sha256 digest (64 hex characters, `sha256:` prefix optional)
    pub target: String,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let target = if args.target.parse::<Sha256>().is_ok() {
        Target::Sha256(args.target.clone())
    } else {
        Target::Url(args.target.clone())
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
