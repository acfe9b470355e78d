//! The one accept loop of every test HTTP server (the origin, the registry proxy, the Kubernetes stub):
//! accept, optionally complete a TLS handshake, and serve the connection with hyper (HTTP/1.1 or h2).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;

use hyper::body::{Body as HttpBody, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Serves every connection on `listener` with `handle` until the task running this is aborted; aborting drops
/// the JoinSet and with it every open connection, mid-body or not.
pub async fn accept_loop<H, F, B>(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (tls, handle) = (tls.clone(), handle.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(handle);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    // A client that rejects the certificate aborts the handshake: nothing to serve then.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}
