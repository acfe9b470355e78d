//! The admin HTTP listener: Prometheus metrics (`/metrics`), liveness (`/healthz`), readiness
//! (`/readyz`), and cached modules by digest (`/v1/modules/sha256/<hex>`) for an Envoy `remote` data
//! source on the node. It never fetches: an uncached digest is 404.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::digest::Sha256;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::service::BlobChunks;
use crate::store::StoreError;

type Body = BoxBody<Bytes, std::io::Error>;

/// What the admin endpoints read. The cache arrives once the index is open; until then `/readyz` is 503.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub cache: OnceLock<Arc<Cache>>,
    pub ready: AtomicBool,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(AdminState {
            metrics,
            cache: OnceLock::new(),
            ready: AtomicBool::new(false),
        })
    }
}

/// Serves until `stop` is cancelled; connections still open then are closed.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(cause = %e, "admin listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(cause = %e, "admin connection ended with an error");
                },
                () = stop.cancelled() => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            if let Some(cache) = state.cache.get() {
                let (entries, bytes) = cache.store().usage();
                state.metrics.set_cache_size(entries, bytes);
            }
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => match state.cache.get() {
            _ if !state.ready.load(Ordering::SeqCst) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
            Some(cache) => match cache.store().index().failure() {
                Some(failure) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: cache index unavailable: {}\n", failure.cause),
                ),
                None => text(StatusCode::OK, "ready\n".into()),
            },
        },
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/v1/modules/sha256/") => {
            let hex = &p["/v1/modules/sha256/".len()..];
            match state.cache.get() {
                Some(cache) => module(state, cache, hex, &req).await,
                None => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// `GET`/`HEAD /v1/modules/sha256/<hex>`: the verified bytes, with a strong ETag and single-range support.
async fn module(state: &AdminState, cache: &Cache, hex: &str, req: &Request<Incoming>) -> Response<Body> {
    let digest: Sha256 = match hex.parse() {
        Ok(d) if !hex.contains(':') => d,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "expected /v1/modules/sha256/<64 hex characters>\n".into(),
            )
        }
    };
    if !cache.is_public(&digest) {
        // A module pulled with credentials is served only to proven credentials, over gRPC; here it
        // does not exist.
        return text(StatusCode::NOT_FOUND, "not cached\n".into());
    }
    let blob = match cache.open(digest).await {
        Ok(blob) => blob,
        Err(Error::Store(StoreError::NotFound(_) | StoreError::Corrupt(_))) => {
            return text(StatusCode::NOT_FOUND, "not cached\n".into())
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let size = blob.size;
    let etag = format!("\"{digest}\"");
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/wasm")
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| none_match(v, &etag)) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(empty())
            .expect("valid response");
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, size));
    let (status, start, len) = match range {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, size),
        Some(Range::Bytes(start, end)) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Some(Range::Unsatisfiable) => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(empty())
                .expect("valid response");
        }
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    if req.method() == Method::HEAD {
        return builder.body(empty()).expect("valid response");
    }
    // The hold keeps the blob from eviction until the body is sent.
    let hold = blob.hold;
    let metrics = state.metrics.clone();
    let chunks = BlobChunks::new(blob.file, start, start + len).map(move |chunk| {
        let _ = &hold;
        chunk.map(|bytes| {
            metrics.served(bytes.len() as u64);
            Frame::data(bytes)
        })
    });
    builder
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .expect("valid response")
}

/// A `Range` header against a body's size; the registry endpoint (`crate::registry`) serves blob ranges with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// Inclusive byte positions.
    Bytes(u64, u64),
    /// Not satisfiable for this size: 416.
    Unsatisfiable,
    /// Not a single byte range we serve (multiple ranges, other units): the whole body, as RFC 9110 allows.
    Ignored,
}

/// Parses a `Range` header against a body of `size` bytes.
pub(crate) fn parse_range(header: &str, size: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return Range::Unsatisfiable,
            Ok(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
            Err(_) => return Range::Ignored,
        },
        (false, _) => match (
            first.parse::<u64>(),
            if last.is_empty() {
                Ok(u64::MAX)
            } else {
                last.parse::<u64>()
            },
        ) {
            (Ok(a), Ok(b)) if a <= b => Some((a, b.min(size.saturating_sub(1)))),
            _ => return Range::Ignored,
        },
        (true, true) => return Range::Ignored,
    };
    match parsed {
        Some((a, b)) if size > 0 && a < size && a <= b => Range::Bytes(a, b),
        _ => Range::Unsatisfiable,
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(BodyExt::boxed(
            Full::new(Bytes::from(body)).map_err(|never| match never {}),
        ))
        .expect("valid response")
}

fn empty() -> Body {
    BodyExt::boxed(Empty::new().map_err(|never| match never {}))
}

/// True when an `If-None-Match` value names `etag` (a quoted strong tag) or is `*`. The comparison is weak,
/// as RFC 9110 (13.1.2) requires for If-None-Match: `W/"x"` matches `"x"`. Malformed members match nothing.
pub(crate) fn none_match(header: &str, etag: &str) -> bool {
    let wanted = etag.trim_matches('"');
    let mut rest = header.trim();
    if rest == "*" {
        return true;
    }
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(quoted) = tag.strip_prefix('"') else {
            return false;
        };
        let Some(end) = quoted.find('"') else {
            return false;
        };
        if &quoted[..end] == wanted {
            return true;
        }
        rest = &quoted[end + 1..];
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn if_none_match_compares_weakly() {
        let etag = "\"abc\"";
        for matching in ["\"abc\"", "W/\"abc\"", "\"x\", W/\"abc\"", "*", " \"x\" ,\"abc\" "] {
            assert!(none_match(matching, etag), "{matching}");
        }
        for other in ["\"abcd\"", "abc", "W/abc", "\"x\"", "\"ab", "", "W/\"ab\"c\""] {
            assert!(!none_match(other, etag), "{other}");
        }
    }
    use super::*;

    #[test]
    fn ranges_within_the_body_are_served_and_clamped() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Range::Bytes(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), Range::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Range::Bytes(0, 99));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Range::Unsatisfiable);
    }

    #[test]
    fn other_range_forms_get_the_whole_body() {
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Ignored);
        assert_eq!(parse_range("items=0-1", 100), Range::Ignored);
        assert_eq!(parse_range("bytes=9-2", 100), Range::Ignored);
        assert_eq!(parse_range("bytes=x-2", 100), Range::Ignored);
    }
}
