//! The http(s) fetcher: reqwest over rustls, every destination checked by the [`Guard`], per-attempt
//! timeouts, and retries with backoff for transient failures only.

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::{Client, StatusCode};
use url::Url;

use super::guard::{Blocked, Guard};
use super::retry::{past_deadline, retryable_status, Backoff};
use super::{Conditions, FetchError, Fetched, Meta, Settings, Sink};
use crate::source::display_url;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

pub struct HttpFetcher {
    clients: Clients,
    insecure_hosts: Vec<String>,
    backoff: Backoff,
    timeout: Duration,
    /// Bound on each whole attempt, body included.
    deadline: Duration,
    max_bytes: u64,
}

/// The guarded reqwest clients every network fetcher shares: one that verifies TLS, one that does not
/// (for hosts the operator listed as insecure).
#[derive(Clone)]
pub struct Clients {
    pub verified: Client,
    pub unverified: Client,
    pub guard: Guard,
}

/// How one attempt failed: give up now, or try again after a pause.
enum AttemptError {
    Fatal(FetchError),
    Retry { cause: String, timed_out: bool },
}

/// rustls needs a process-wide crypto provider; ring is the one we build with.
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Clients {
    pub fn new(settings: &Settings) -> Result<Self, FetchError> {
        install_crypto_provider();
        let guard = Guard::new(&settings.blocked_cidrs);
        let extra_roots = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| FetchError::Config(format!("reading --ca-file {}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| FetchError::Config(format!("parsing --ca-file {}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(FetchError::Config(format!(
                        "--ca-file {} holds no PEM certificate",
                        path.display()
                    )));
                }
                certs
            }
            None => Vec::new(),
        };
        let build = |skip_verify: bool| -> Result<Client, FetchError> {
            let redirect_guard = guard.clone();
            let mut builder = Client::builder()
                .user_agent(concat!("wasmcache/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(settings.timeout)
                .read_timeout(settings.timeout)
                .dns_resolver(GuardedResolver { guard: guard.clone() })
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= MAX_REDIRECTS {
                        return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                    }
                    match redirect_guard.check_url(attempt.url()) {
                        Ok(()) => attempt.follow(),
                        Err(blocked) => attempt.error(blocked),
                    }
                }))
                .tls_danger_accept_invalid_certs(skip_verify);
            if !extra_roots.is_empty() {
                builder = builder.tls_certs_merge(extra_roots.clone());
            }
            builder
                .build()
                .map_err(|e| FetchError::Config(format!("building http client: {e}")))
        };
        Ok(Clients {
            verified: build(false)?,
            unverified: build(true)?,
            guard,
        })
    }
}

impl HttpFetcher {
    pub fn new(settings: &Settings, clients: Clients) -> Self {
        HttpFetcher {
            clients,
            insecure_hosts: settings.insecure_hosts.clone(),
            backoff: settings.backoff.clone(),
            timeout: settings.timeout,
            deadline: settings.deadline,
            max_bytes: settings.max_bytes,
        }
    }

    fn client_for(&self, url: &Url) -> &Client {
        if host_matches(&self.insecure_hosts, url) {
            &self.clients.unverified
        } else {
            &self.clients.verified
        }
    }

    /// Downloads `url` into `sink`, retrying transient failures with backoff.
    pub async fn fetch(&self, url: &Url, conditions: &Conditions, sink: &mut dyn Sink) -> Result<Fetched, FetchError> {
        self.fetch_capped(url, conditions, sink, (self.max_bytes, "module"))
            .await
    }

    /// Downloads a small document (a detached signature bundle) of at most `max` bytes into memory, as a
    /// module is downloaded (guard, retries, deadline); `Ok(None)` when the origin has none (404, 410).
    pub async fn document(&self, url: &Url, max: u64, what: &'static str) -> Result<Option<Vec<u8>>, FetchError> {
        let mut bytes = super::MemorySink::default();
        match self
            .fetch_capped(url, &Conditions::default(), &mut bytes, (max, what))
            .await
        {
            Ok(_) => Ok(Some(bytes.0)),
            Err(FetchError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn fetch_capped(
        &self,
        url: &Url,
        conditions: &Conditions,
        sink: &mut dyn Sink,
        limit: (u64, &'static str),
    ) -> Result<Fetched, FetchError> {
        let shown = display_url(url);
        if let Err(source) = self.clients.guard.check_url(url) {
            return Err(FetchError::Blocked { url: shown, source });
        }
        let attempts = self.backoff.attempts.max(1);
        let mut last = (String::new(), false);
        for attempt in 1..=attempts {
            sink.reset().map_err(FetchError::sink(&shown))?;
            // The client's timeouts bound each wait; only this bounds an origin that keeps every wait short
            // and never finishes (a slowloris).
            let outcome = tokio::time::timeout(self.deadline, self.attempt(url, &shown, conditions, sink, limit))
                .await
                .unwrap_or_else(|_| {
                    Err(AttemptError::Retry {
                        cause: past_deadline(self.deadline),
                        timed_out: true,
                    })
                });
            match outcome {
                Ok(fetched) => return Ok(fetched),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry { cause, timed_out }) => {
                    tracing::debug!(url = %shown, attempt, %cause, "fetch attempt failed");
                    last = (cause, timed_out);
                    if attempt < attempts {
                        tokio::time::sleep(self.backoff.delay_after(attempt)).await;
                    }
                }
            }
        }
        let (cause, timed_out) = last;
        Err(if timed_out {
            FetchError::Timeout {
                url: shown,
                attempts,
                cause,
            }
        } else {
            FetchError::Unavailable {
                url: shown,
                attempts,
                cause,
            }
        })
    }

    async fn attempt(
        &self,
        url: &Url,
        shown: &str,
        conditions: &Conditions,
        sink: &mut dyn Sink,
        (max_bytes, what): (u64, &'static str),
    ) -> Result<Fetched, AttemptError> {
        let authenticated = has_credentials(url);
        let mut request = self.client_for(url).get(url.clone());
        if let Some(etag) = &conditions.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(classify(shown, e)),
            Err(_) => {
                return Err(AttemptError::Retry {
                    cause: format!("no response within {}", humantime::format_duration(self.timeout)),
                    timed_out: true,
                })
            }
        };
        let status = response.status();
        let fatal = |e| Err(AttemptError::Fatal(e));
        let url = shown.to_string();
        match status {
            StatusCode::NOT_MODIFIED if conditions.etag.is_some() => {
                return Ok(Fetched::NotModified(Meta {
                    authenticated,
                    ..Meta::default()
                }))
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return fatal(FetchError::NotFound {
                    url,
                    detail: format!("HTTP {}", status.as_u16()),
                })
            }
            StatusCode::UNAUTHORIZED => return fatal(FetchError::Unauthenticated { url, status: 401 }),
            StatusCode::FORBIDDEN => return fatal(FetchError::Forbidden { url, status: 403 }),
            s if s.is_success() => {}
            s if retryable_status(s.as_u16()) => {
                return Err(AttemptError::Retry {
                    cause: format!("HTTP {}", s.as_u16()),
                    timed_out: false,
                })
            }
            s => {
                return fatal(FetchError::Status {
                    url,
                    status: s.as_u16(),
                })
            }
        }
        if response.content_length().is_some_and(|len| len > max_bytes) {
            return fatal(FetchError::TooLarge {
                url,
                what,
                limit: max_bytes,
            });
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = response;
        let mut received = 0u64;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    if received > max_bytes {
                        return fatal(FetchError::TooLarge {
                            url,
                            what,
                            limit: max_bytes,
                        });
                    }
                    sink.write_chunk(&chunk)
                        .map_err(|e| AttemptError::Fatal(FetchError::sink(shown)(e)))?;
                }
                Ok(None) => break,
                Err(e) => return Err(classify(shown, e)),
            }
        }
        Ok(Fetched::Complete(Meta {
            etag,
            authenticated,
            ..Meta::default()
        }))
    }
}

/// True when the URL carries userinfo, which reqwest sends as Basic credentials: what such a request
/// brings back may be private.
pub fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Sorts a transport error: blocked destinations and certificate failures are final, the rest transient.
fn classify(shown: &str, err: reqwest::Error) -> AttemptError {
    match Transport::of(err) {
        Transport::Blocked(source) => AttemptError::Fatal(FetchError::Blocked {
            url: shown.to_string(),
            source,
        }),
        Transport::Tls(cause) => AttemptError::Fatal(FetchError::Tls {
            url: shown.to_string(),
            cause,
        }),
        Transport::Other { cause, timed_out } => AttemptError::Retry { cause, timed_out },
    }
}

/// What a reqwest error means for a retry loop.
pub(crate) enum Transport {
    /// The guard refused the destination (at resolution or on a redirect).
    Blocked(Blocked),
    /// TLS failed: an untrusted certificate, or a peer that does not speak TLS. Retrying won't help.
    Tls(String),
    Other {
        cause: String,
        timed_out: bool,
    },
}

impl Transport {
    pub(crate) fn of(err: reqwest::Error) -> Transport {
        let err = err.without_url();
        if let Some(blocked) = find_cause::<Blocked>(&err) {
            return Transport::Blocked(blocked.clone());
        }
        if let Some(tls) = find_cause::<rustls::Error>(&err) {
            return Transport::Tls(tls.to_string());
        }
        Transport::Other {
            cause: error_chain(&err),
            timed_out: err.is_timeout(),
        }
    }
}

/// The first cause of type `T` in an error chain, looking inside `io::Error`s as well: their `source()`
/// skips the error they wrap, which is where rustls puts its errors.
pub(crate) fn find_cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(found) = find_cause::<T>(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

/// `err: cause: cause`, without repeats.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// True when `url`'s host (or `host:port`) is listed, or the list holds `*`.
pub fn host_matches(hosts: &[String], url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
    hosts.iter().any(|h| {
        let h = h.trim().trim_start_matches('[').replace("]:", ":");
        let h = h.trim_end_matches(']');
        h == "*" || h.eq_ignore_ascii_case(host) || with_port.as_deref().is_some_and(|wp| h.eq_ignore_ascii_case(wp))
    })
}

/// Resolves names with the system resolver, then drops the addresses the guard blocks.
struct GuardedResolver {
    guard: Guard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed = guard.filter(addrs)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_hosts_match_by_host_or_host_and_port() {
        let url = Url::parse("https://reg.local:8443/m.wasm").unwrap();
        assert!(host_matches(&["reg.local".into()], &url));
        assert!(host_matches(&["reg.local:8443".into()], &url));
        assert!(host_matches(&["*".into()], &url));
        assert!(!host_matches(&["reg.local:443".into()], &url));
        assert!(!host_matches(&["other".into()], &url));
        let v6 = Url::parse("https://[::1]:8443/m.wasm").unwrap();
        assert!(host_matches(&["[::1]:8443".into()], &v6));
        assert!(host_matches(&["::1".into()], &v6));
    }
}
