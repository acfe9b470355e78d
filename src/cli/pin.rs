//! `wasmcache pin` and `wasmcache unpin`: keep a module from eviction, or let it go again.

use super::{CliError, ModuleArgs, ModuleTarget};
use crate::proto::{pin_request::Target, PinRequest};

pub(crate) async fn run(args: ModuleArgs, pin: bool) -> Result<(), CliError> {
    let target = match args.target {
        ModuleTarget::Url(url) => Target::Url(url),
        ModuleTarget::Digest(digest) => Target::Sha256(digest.to_string()),
    };
    let request = PinRequest { target: Some(target) };
    let mut client = args.socket.connect().await?;
    let response = if pin {
        client.pin(request).await?
    } else {
        client.unpin(request).await?
    }
    .into_inner();
    println!("{} sha256:{}", if pin { "pinned" } else { "unpinned" }, response.sha256);
    Ok(())
}
