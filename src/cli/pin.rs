//! `wasmcache pin` and `wasmcache unpin`: keep a module from eviction, or let it go again.

use super::{CliError, ModuleTarget, SocketArg};
use crate::proto::{pin_request::Target, PinRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// A module URL, or a sha256 digest (64 hex characters, `sha256:` prefix optional)
    #[arg(value_name = "URL|DIGEST")]
    pub target: ModuleTarget,
}

pub async fn run(args: Args, pin: bool) -> Result<(), CliError> {
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
