//! The OCI Distribution pull-through endpoint (`--registry-listen`): the read side of the distribution spec
//! over HTTP/1.1 (TLS optional), answered by a [`RegistryBackend`] (the cache). It only translates: naming
//! ([`route`]), the client's credentials into a pull secret, backend answers and errors into responses.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v2/` | 200 `{}` |
//! | `GET`/`HEAD /v2/<name>/manifests/<tag or digest>` | the manifest as upstream served it: `Content-Type` its media type, `Docker-Content-Digest`, `ETag` |
//! | `GET`/`HEAD /v2/<name>/blobs/<digest>` | the blob, `sendfile`d; one `Range` (206/416) |
//! | `GET /v2/<name>/referrers/<digest>[?artifactType=...]` | the referrers index (`OCI-Filters-Applied` when filtered) |
//! | `POST`/`PUT`/`PATCH`/`DELETE` anything | 405 `UNSUPPORTED`, `Allow: GET, HEAD`, the connection closed unread |
//!
//! # Credentials
//! `Authorization: Basic` (or `Bearer TOKEN`, sent upstream as user `<token>` and the token as password) becomes
//! the pull secret of that one request for the registry it names; it is never stored, logged or echoed. A
//! request without credentials is anonymous (public modules only). When the backend says upstream wants
//! credentials, the answer is 401 with `WWW-Authenticate: Basic realm="wasmcache"`, on which containerd and
//! oras retry with theirs. `GET /v2/` answers 200 with the same challenge in the header: skopeo (containers/image)
//! takes its auth scheme from that ping whatever the status, and so sends its credentials from then on; docker
//! reads a challenge only from a 401, and keeps pulling anonymously.
//!
//! Every request ends with one log event and one count in `wasmcache_registry_requests_total`.
//!
//! Long: one translation table: every route of the distribution spec to a backend call, every answer and error to a response.

mod http;
pub mod route;
#[cfg(test)]
mod tests;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use http::Limits;

use crate::admin::{none_match, parse_range, Range};
use crate::cache::registry::{Document, ManifestRef, RegistryBackend, Upstream};
use crate::digest::Sha256;
use crate::error::{Error, RegistryObject};
use crate::fetch::oci::auth::{Credentials, DockerConfig};
use crate::metrics::Metrics;
use crate::store::OpenBlob;
use http::{Authorization, Body, Framing, HeadError, Method, RequestHead, Response, Stream};
use route::{Kind, Name, Refused, Route};

/// The challenge of every 401, and of `GET /v2/` (see the module doc).
const CHALLENGE: &str = "Basic realm=\"wasmcache\"";

/// What a referrers answer is, whatever upstream called it.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How much of a refused request's path its log event repeats.
const MAX_LOGGED_PATH: usize = 256;

/// The user name a `Bearer` token is sent upstream with (Docker's convention for identity tokens).
const BEARER_USER: &str = "<token>";

/// The endpoint: its backend, metrics, TLS (none: plain HTTP) and connection limits.
pub struct Endpoint {
    backend: Arc<dyn RegistryBackend>,
    metrics: Arc<Metrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
}

impl Endpoint {
    pub fn new(backend: Arc<dyn RegistryBackend>, metrics: Arc<Metrics>) -> Endpoint {
        Endpoint {
            backend,
            metrics,
            tls: None,
            limits: Limits::default(),
        }
    }

    /// Serves TLS with the certificate `certs` holds (and reloads when its files change).
    pub fn with_tls(mut self, certs: Arc<tls::CertReloader>) -> Endpoint {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(certs.server_config()));
        self
    }

    #[cfg(test)]
    pub fn with_limits(mut self, limits: Limits) -> Endpoint {
        self.limits = limits;
        self
    }
}

/// Serves the endpoint on `listener` until `stop` is cancelled; then stops accepting, closes idle
/// connections, lets each request being answered finish (its response says `Connection: close`), and returns
/// when all connections are closed. The connections are this future's tasks: dropping it (a drain deadline
/// that passed) aborts them.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    if e.is_panic() {
                        tracing::error!(cause = %e, "registry connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Response heads are written whole; Nagle would only hold them back.
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(endpoint.clone().connection(tcp, stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "registry listener could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// A request's answer, with what its log event and metric need.
struct Exchange {
    response: Response,
    kind: Kind,
    name: Option<String>,
    reference: Option<String>,
    /// The error behind a failure, for the log (never credentials).
    cause: Option<String>,
    /// The path of a request that names nothing (refused before routing), for the log; without the query.
    path: Option<String>,
    /// Close the connection after the response.
    close: bool,
    /// Bytes may be left unread on the connection: close it with [`http::linger`].
    linger: bool,
}

impl Exchange {
    fn new(kind: Kind, response: Response) -> Exchange {
        Exchange {
            response,
            kind,
            name: None,
            reference: None,
            cause: None,
            path: None,
            close: false,
            linger: false,
        }
    }
}

impl Endpoint {
    async fn connection(self: Arc<Self>, tcp: TcpStream, stop: CancellationToken) {
        let mut stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(acceptor) => match tokio::time::timeout(self.limits.head_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                Ok(Err(e)) => return tracing::debug!(cause = %e, "registry TLS handshake failed"),
                Err(_) => return tracing::debug!("registry TLS handshake timed out"),
            },
        };
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            let (head, exchange, started) = match http::read_head(&mut stream, &mut buf, &self.limits, &stop).await {
                Ok(Some(head)) => {
                    let started = Instant::now();
                    let exchange = self.respond(&head).await;
                    (Some(head), exchange, started)
                }
                Ok(None) | Err(HeadError::Gone) => return,
                Err(HeadError::Refuse(status, message)) => {
                    let mut exchange = Exchange::new(Kind::Other, error(status, "UNSUPPORTED", &message, None));
                    exchange.close = true;
                    exchange.linger = true;
                    (None, exchange, Instant::now())
                }
            };
            let keep_alive = head.as_ref().is_some_and(|h| h.keep_alive);
            let connection = if exchange.close || !keep_alive || stop.is_cancelled() {
                http::Connection::Close
            } else if head.as_ref().is_some_and(|h| h.http10) {
                http::Connection::KeepAlive10
            } else {
                http::Connection::KeepAlive
            };
            let counted = AtomicU64::new(0);
            let sent = |n: u64| {
                counted.fetch_add(n, Ordering::Relaxed);
                self.metrics.registry_sent(n);
            };
            let head_only = head.as_ref().is_some_and(|h| h.method == Method::Head);
            let written = http::write_response(
                &mut stream,
                &mut out,
                &exchange.response,
                head_only,
                connection,
                &self.limits,
                &sent,
            )
            .await;
            self.record(
                head.as_ref(),
                &exchange,
                counted.load(Ordering::Relaxed),
                written.as_ref().err(),
                started,
            );
            // The blob (and its hold) goes as soon as it is sent, not when the connection next idles.
            drop(exchange.response);
            if written.is_err() {
                return;
            }
            if connection == http::Connection::Close {
                if exchange.linger {
                    http::linger(&mut stream, self.limits.send_timeout).await;
                } else {
                    use tokio::io::AsyncWriteExt as _;
                    let _ = tokio::time::timeout(self.limits.send_timeout, stream.shutdown()).await;
                }
                return;
            }
        }
    }

    /// Answers one request head.
    async fn respond(&self, head: &RequestHead) -> Exchange {
        let (path, query) = head.path_and_query();
        let (kind, route) = route::route(path, query);
        if let Method::Other(method) = &head.method {
            // Nothing of a mutating request is read: it is answered and the connection closed.
            let under_v2 = path == "/v2" || path.starts_with("/v2/");
            let mut exchange = Exchange::new(
                kind,
                if under_v2 {
                    let mut response = error(
                        405,
                        "UNSUPPORTED",
                        &format!("{method} is not supported: this is a read-only pull-through cache"),
                        None,
                    );
                    response.headers.push(("Allow", "GET, HEAD".into()));
                    response
                } else {
                    error(404, "UNSUPPORTED", "not found: this endpoint serves /v2/", None)
                },
            );
            exchange.close = true;
            exchange.linger = true;
            return exchange;
        }
        if !matches!(head.framing, Framing::None | Framing::Length(0)) {
            let mut exchange = Exchange::new(
                kind,
                error(400, "UNSUPPORTED", "GET and HEAD requests carry no body here", None),
            );
            exchange.close = true;
            exchange.linger = true;
            return exchange;
        }
        if !head.http10 && !head.host {
            let mut exchange = Exchange::new(
                kind,
                error(400, "UNSUPPORTED", "an HTTP/1.1 request needs a Host header", None),
            );
            exchange.close = true;
            return exchange;
        }
        let route = match route {
            Ok(route) => route,
            Err(Refused { status, code, message }) => {
                let mut exchange = Exchange::new(kind, error(status, code, &message, None));
                exchange.path = Some(path.chars().take(MAX_LOGGED_PATH).collect());
                exchange.cause = Some(message);
                return exchange;
            }
        };
        let (name, reference) = match &route {
            Route::Ping => (None, None),
            Route::Manifest(name, reference) => (
                Some(name),
                Some(match reference {
                    ManifestRef::Tag(tag) => tag.clone(),
                    ManifestRef::Digest(digest) => digest.prefixed(),
                }),
            ),
            Route::Blob(name, digest) | Route::Referrers(name, digest, _) => (Some(name), Some(digest.prefixed())),
        };
        let mut exchange = match name {
            None => Exchange::new(kind, ping()),
            Some(name) => match client_credentials(&head.authorization) {
                Ok(credentials) => {
                    let upstream = upstream(name, credentials);
                    let mut exchange = self.ask(&upstream, &route, head).await;
                    if let Some(ns) = &name.namespace {
                        // The distribution spec's proxy section: a registry scoping by `ns` says so.
                        exchange.response.headers.push(("OCI-Namespace", ns.clone()));
                    }
                    exchange
                }
                Err(why) => Exchange::new(kind, unauthorized(why)),
            },
        };
        exchange.kind = kind;
        exchange.name = name.map(ToString::to_string);
        exchange.reference = reference;
        exchange
    }

    /// Asks the backend and turns its answer into a response.
    async fn ask(&self, upstream: &Upstream, route: &Route, head: &RequestHead) -> Exchange {
        let (object, answer) = match route {
            Route::Ping => unreachable!("answered without the backend"),
            Route::Manifest(_, reference) => (
                RegistryObject::Manifest,
                self.backend
                    .manifest(upstream, reference)
                    .await
                    .and_then(|document| manifest(document, reference, head)),
            ),
            Route::Blob(_, digest) => (
                RegistryObject::Blob,
                self.backend
                    .blob(upstream, *digest)
                    .await
                    .map(|opened| blob(opened, *digest, head)),
            ),
            Route::Referrers(_, digest, artifact_type) => (
                RegistryObject::Referrers,
                self.backend
                    .referrers(upstream, *digest, artifact_type.as_deref())
                    .await
                    .map(|document| referrers(document, artifact_type.is_some())),
            ),
        };
        match answer {
            Ok(response) => Exchange::new(Kind::Other, response),
            Err(e) => {
                let (status, code) = e.registry_status(object);
                let detail = serde_json::json!({ "reason": e.reason() });
                let mut response = error(status, code, &e.to_string(), Some(detail));
                if status == 401 {
                    response.headers.push(("WWW-Authenticate", CHALLENGE.into()));
                }
                let mut exchange = Exchange::new(Kind::Other, response);
                exchange.cause = Some(e.to_string());
                exchange
            }
        }
    }

    /// The request's log event and count. Never the Authorization header, which is not passed here.
    fn record(
        &self,
        head: Option<&RequestHead>,
        exchange: &Exchange,
        bytes: u64,
        failed: Option<&std::io::Error>,
        started: Instant,
    ) {
        let status = exchange.response.status;
        let method = head.map_or("other", |h| h.method.label());
        let route = exchange.kind.label();
        self.metrics.registry_request(route, method, status);
        let duration_ms = started.elapsed().as_millis() as u64;
        let name = exchange.name.as_deref().unwrap_or("");
        let reference = exchange.reference.as_deref().unwrap_or("");
        let cause = exchange.cause.as_deref();
        let path = exchange.path.as_deref();
        let send_error = failed.map(ToString::to_string);
        // tracing takes the level as a constant, so the one field list is spelled once for both levels.
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    method,
                    route,
                    name,
                    reference,
                    status,
                    bytes,
                    duration_ms,
                    cause,
                    path,
                    send_error,
                    "registry request"
                )
            };
        }
        if status >= 500 || failed.is_some() {
            event!(tracing::Level::WARN);
        } else {
            event!(tracing::Level::INFO);
        }
    }
}

/// `GET /v2/`.
fn ping() -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("WWW-Authenticate", CHALLENGE.into()),
        ],
        body: Body::Bytes(Bytes::from_static(b"{}")),
    }
}

/// A manifest or index, byte for byte as upstream served it.
fn manifest(document: Document, reference: &ManifestRef, head: &RequestHead) -> Result<Response, Error> {
    if let ManifestRef::Digest(asked) = reference {
        if document.digest != *asked {
            return Err(Error::Internal(format!(
                "the cache answered manifest {} for {}",
                document.digest.prefixed(),
                asked.prefixed()
            )));
        }
    }
    let etag = format!("\"{}\"", document.digest.prefixed());
    let mut headers = vec![
        ("Content-Type", header_safe(&document.media_type)),
        ("Docker-Content-Digest", document.digest.prefixed()),
        ("ETag", etag.clone()),
    ];
    if head.if_none_match.as_deref().is_some_and(|v| none_match(v, &etag)) {
        headers.retain(|(name, _)| *name != "Content-Type");
        return Ok(Response {
            status: 304,
            headers,
            body: Body::Empty,
        });
    }
    Ok(Response {
        status: 200,
        headers,
        body: Body::Bytes(document.bytes),
    })
}

/// A blob, whole or one range of it.
fn blob(opened: OpenBlob, digest: Sha256, head: &RequestHead) -> Response {
    let size = opened.size;
    let etag = format!("\"{}\"", digest.prefixed());
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Docker-Content-Digest", digest.prefixed()),
        ("Accept-Ranges", "bytes".into()),
        ("ETag", etag.clone()),
    ];
    if head.if_none_match.as_deref().is_some_and(|v| none_match(v, &etag)) {
        headers.retain(|(name, _)| *name != "Content-Type");
        return Response {
            status: 304,
            headers,
            body: Body::Empty,
        };
    }
    let (status, offset, len) = match head.range.as_deref().map(|r| parse_range(r, size)) {
        None | Some(Range::Ignored) => (200, 0, size),
        Some(Range::Bytes(first, last)) => {
            headers.push(("Content-Range", format!("bytes {first}-{last}/{size}")));
            (206, first, last - first + 1)
        }
        Some(Range::Unsatisfiable) => {
            headers.retain(|(name, _)| *name != "Content-Type");
            headers.push(("Content-Range", format!("bytes */{size}")));
            return Response {
                status: 416,
                headers,
                body: Body::Empty,
            };
        }
    };
    Response {
        status,
        headers,
        body: Body::File {
            blob: opened,
            offset,
            len,
        },
    }
}

/// The referrers index of a digest.
fn referrers(document: Document, filtered: bool) -> Response {
    let mut headers = vec![("Content-Type", OCI_INDEX.to_string())];
    if filtered {
        headers.push(("OCI-Filters-Applied", "artifactType".into()));
    }
    Response {
        status: 200,
        headers,
        body: Body::Bytes(document.bytes),
    }
}

/// A distribution-spec error body: `{"errors":[{"code","message","detail"}]}`.
fn error(status: u16, code: &'static str, message: &str, detail: Option<serde_json::Value>) -> Response {
    let mut entry = serde_json::json!({ "code": code, "message": message });
    if let Some(detail) = detail {
        entry["detail"] = detail;
    }
    let body = serde_json::to_vec(&serde_json::json!({ "errors": [entry] })).expect("JSON values serialize");
    Response {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: Body::Bytes(Bytes::from(body)),
    }
}

fn unauthorized(why: &str) -> Response {
    let mut response = error(401, "UNAUTHORIZED", why, None);
    response.headers.push(("WWW-Authenticate", CHALLENGE.into()));
    response
}

/// A value from upstream (a media type) made safe for a header line: anything but visible ASCII and spaces
/// would let upstream inject header fields, so such a value is replaced.
fn header_safe(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        value.to_string()
    } else {
        "application/octet-stream".to_string()
    }
}

/// `Basic` credentials are base64 with or without padding, as clients write it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The client's credentials, from its `Authorization` header: `Basic` user and password, or a `Bearer` token as
/// password of user [`BEARER_USER`]. `Ok(None)`: anonymous (no header, or `Basic` with an empty user and
/// password, which containers/image sends when it has none). The error says what is wrong without repeating
/// any of the value.
fn client_credentials(authorization: &Authorization) -> Result<Option<Credentials>, &'static str> {
    const MALFORMED: &str = "malformed Authorization header";
    let value = match authorization {
        Authorization::None => return Ok(None),
        Authorization::Malformed => return Err(MALFORMED),
        Authorization::One(value) => value,
    };
    let (scheme, param) = value.split_once(' ').unwrap_or((value, ""));
    let param = param.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64.decode(param).map_err(|_| MALFORMED)?;
        let text = String::from_utf8(decoded).map_err(|_| MALFORMED)?;
        let (user, password) = text.split_once(':').ok_or(MALFORMED)?;
        if user.is_empty() && password.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials::new(user, password)))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        // token68 (RFC 9110 11.2).
        let token68 = !param.is_empty()
            && param
                .trim_end_matches('=')
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'));
        if !token68 {
            return Err(MALFORMED);
        }
        Ok(Some(Credentials::new(BEARER_USER, param)))
    } else {
        Err("only Basic and Bearer credentials are accepted")
    }
}

/// The backend's view of a request: the repository, and the client's credentials as a pull secret for its
/// registry (for this request only).
fn upstream(name: &Name, credentials: Option<Credentials>) -> Upstream {
    Upstream {
        registry: name.registry.clone(),
        repository: name.repository.clone(),
        secret: credentials.map(|c| DockerConfig::from_entries([(name.registry.clone(), c)])),
    }
}
