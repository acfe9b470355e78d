//! `wasmcache rm`: forget a URL, or delete a module by digest.

use super::{CliError, ModuleArgs, ModuleTarget};
use crate::proto::{remove_request::Target, RemoveRequest};

pub(crate) async fn run(args: ModuleArgs) -> Result<(), CliError> {
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
