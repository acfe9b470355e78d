//! The network layer every upstream client shares (the http(s) fetcher, the registry client and the
//! cluster's API client): guarded reqwest clients, the crypto provider, and what a transport error means
//! for a retry.

use std::net::SocketAddr;
use std::sync::Once;

use reqwest::Client;
use url::Url;

use super::guard::{Blocked, Guard};
use super::retry::Failure;
use super::{FetchError, Settings};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// The guarded reqwest clients every network fetcher shares: one that verifies TLS, one that does not
/// (for hosts the operator listed as insecure).
#[derive(Clone)]
pub(crate) struct Clients {
    pub verified: Client,
    pub unverified: Client,
    pub guard: Guard,
}

/// rustls needs a process-wide crypto provider; ring is the one we build with.
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Clients {
    pub(crate) fn new(settings: &Settings) -> Result<Self, FetchError> {
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

/// Sorts a transport error: blocked destinations and certificate failures are final, the rest transient.
pub(crate) fn classify(shown: &str, err: reqwest::Error) -> Failure {
    match Transport::of(err) {
        Transport::Blocked(source) => Failure::Fatal(FetchError::Blocked {
            url: shown.to_string(),
            source,
        }),
        Transport::Tls(cause) => Failure::Fatal(FetchError::Tls {
            url: shown.to_string(),
            cause,
        }),
        Transport::Other { cause, timed_out } => Failure::Retry { cause, timed_out },
    }
}

/// A body that broke off after its response head: the connection was made and its peer trusted, so whatever
/// broke it (a reset, a stall, a damaged TLS record) may not happen again. Always retried, by every fetcher.
pub(crate) fn body_read(err: reqwest::Error) -> Failure {
    Failure::Retry {
        timed_out: err.is_timeout(),
        cause: error_chain(&err.without_url()),
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

/// An error and its causes, outermost first.
fn causes<'a>(err: &'a (dyn std::error::Error + 'a)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'a)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// `err: cause: cause`, without repeats.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    for text in causes(err).map(ToString::to_string) {
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The innermost cause of an error: for a transport error, the part that says what went wrong.
pub(crate) fn innermost_cause(err: &dyn std::error::Error) -> String {
    causes(err).last().map(ToString::to_string).unwrap_or_default()
}

/// True when `url`'s host (or `host:port`) is listed, or the list holds `*`.
pub(crate) fn host_matches(hosts: &[String], url: &Url) -> bool {
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

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn the_chain_names_each_cause_once_and_the_innermost_is_the_last() {
        let err = Layer(
            "request failed: connection refused",
            Some(Box::new(Layer(
                "connection refused",
                Some(Box::new(Layer("os error 111", None))),
            ))),
        );
        assert_eq!(error_chain(&err), "request failed: connection refused: os error 111");
        assert_eq!(innermost_cause(&err), "os error 111");
    }

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
