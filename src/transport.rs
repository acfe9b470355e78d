//! HTTP/2 for the gRPC routes on accepted connections, Unix socket or TCP.
//!
//! tonic's own server does not expose hyper's per-stream send buffer, which defaults to 400 KiB: with 256
//! clients each reading a 4 MiB module the daemon held about 100 MiB of queued chunks. Driving hyper here
//! bounds it to [`SEND_BUFFER`] per stream and otherwise keeps tonic's behaviour: HTTP/2 only, no limit on
//! concurrent streams, a call's `grpc-timeout` enforced ([`Deadlines`]), GOAWAY to every connection on stop,
//! and the listener closed as soon as accepting stops.
//!
//! Connections from the Unix socket are wrapped in [`authority::AuthorityRewrite`] first, so that clients
//! which send the socket path as `:authority` (gRPC C-core, grpc-java) are served too.

pub(crate) mod authority;
mod hpack;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
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
pub(crate) async fn serve<S, IO>(incoming: S, routes: Routes, stop: CancellationToken)
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(None)
        .max_send_buf_size(SEND_BUFFER)
        // hyper's default, stated because the Unix socket's authority rewrite relies on it. The header
        // table size is left unset: the protocol's 4096 (authority::HEADER_TABLE_SIZE).
        .max_frame_size(authority::MAX_FRAME_SIZE);
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
            let service = TowerToHyperService::new(Deadlines(routes.clone()));
            let connection = builder.serve_connection(TokioIo::new(io), service);
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

/// Ends a call whose `grpc-timeout` passes before its response starts with DEADLINE_EXCEEDED, and drops
/// its handler. A fetch the handler was waiting on goes on for other callers (the cache owns it).
#[derive(Clone)]
pub(crate) struct Deadlines<S>(pub S);

type Reply = hyper::Response<tonic::body::Body>;

impl<S, B> tower::Service<hyper::Request<B>> for Deadlines<S>
where
    S: tower::Service<hyper::Request<B>, Response = Reply, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let response = self.0.call(request);
        Box::pin(async move {
            let Some(timeout) = timeout else {
                return response.await;
            };
            match tokio::time::timeout(timeout, response).await {
                Ok(response) => response,
                Err(_) => Ok(crate::error::call_deadline_status(timeout).into_http()),
            }
        })
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 protocol.
/// `None` for anything else, which leaves the call without a server-side deadline.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_grpc_timeout_is_ignored() {
        for bad in ["", "m", "S5", "123456789S", "10s", "-1S", "1.5S", "1 S", "１S", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
