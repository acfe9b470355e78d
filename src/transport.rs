//! HTTP/2 for the gRPC routes on accepted connections, Unix socket or TCP.
//!
//! tonic's own server does not expose hyper's per-stream send buffer, which defaults to 400 KiB: with 256
//! clients each reading a 4 MiB module the daemon held about 100 MiB of queued chunks. Driving hyper here
//! bounds it to [`SEND_BUFFER`] per stream and otherwise keeps tonic's behaviour: HTTP/2 only, no limit on
//! concurrent streams, GOAWAY to every connection on stop, and the listener closed as soon as accepting
//! stops. Deadlines stay with the clients, whose reset of a late stream cancels its handler.

use std::io;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Bytes hyper may queue per stream ahead of the socket: one chunk being written and one waiting keep a
/// local reader busy; more only makes memory grow with the number of clients.
pub const SEND_BUFFER: usize = 2 * crate::service::CHUNK_SIZE;

/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `routes` on every connection from `incoming` until `stop` is cancelled; then stops accepting,
/// asks each connection to finish its open streams, and returns when all have closed.
pub async fn serve<S, IO>(incoming: S, routes: Routes, stop: CancellationToken)
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(None)
        .max_send_buf_size(SEND_BUFFER);
    let graceful = GracefulShutdown::new();
    {
        // Dropped when the loop ends, which closes a TCP listener at once.
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let io = tokio::select! {
                () = stop.cancelled() => break,
                next = incoming.next() => match next {
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        tracing::warn!(cause = %e, "could not accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                    None => break,
                },
            };
            let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(routes.clone()));
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(cause = %e, "connection ended with an error");
                }
            });
        }
    }
    graceful.shutdown().await;
}
