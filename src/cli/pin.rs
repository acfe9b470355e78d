//! `wasmcache pin` and `wasmcache unpin`: keep a module from eviction, or let it go again.

use super::{CliError, SocketArg};
use crate::digest::Sha256;
use crate::proto::{pin_request::Target, PinRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// A module URL, or a sha256 digest (64 hex characters, `sha256:` prefix optional)
    pub target: String,
}

pub async fn run(args: Args, pin: bool) -> Result<(), CliError> {
    let target = if args.target.parse::<Sha256>().is_ok() {
        Target::Sha256(args.target.clone())
    } else {
        Target::Url(args.target.clone())
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
