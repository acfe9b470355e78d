//! The registry protocol (OCI distribution): manifests and blobs over HTTP, with the registry's auth
//! challenges answered (Bearer tokens, Basic), retries for transient failures, size caps, and every
//! connection, token realm and redirect checked by the destination guard.
//!
//! Why not oci-client's client: it builds its own reqwest client, so its DNS lookups, token-realm
//! requests and redirects can't be put behind our guard; it reads manifests without a size cap, has no
//! retries and no mirrors. We take the reference parser and manifest types from oci-spec, and speak the
//! protocol here.
//!
//! Long: one client of the distribution protocol: manifests, blobs and referrers with the auth challenges, size caps and redirects that all three share.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, Method, Response, StatusCode};
use sha2::{Digest as _, Sha256 as Hasher};
use url::Url;

use super::auth::Credentials;
use super::challenge::{self, Challenge};
use crate::digest::Sha256;
use crate::fetch::guard::Guard;
use crate::fetch::net::{self, classify, find_cause};
use crate::fetch::retry::{self, retryable_status, Backoff, Failure};
use crate::fetch::{FetchError, Sink};

/// Tokens without `expires_in` are kept this long (the distribution spec's default is 60 s).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Token responses larger than this are refused.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// Where requests for one registry go.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `https://host[:port]` (or `http://` when configured so).
    pub base: Url,
    /// `host[:port]`, as credentials and the insecure list name it.
    pub host: String,
    /// TLS is not verified, and plain HTTP is tried when HTTPS fails to connect.
    pub insecure: bool,
    /// For a mirror: the registry it stands in for (sent as `?ns=`, as containerd does).
    pub ns: Option<String>,
}

/// A bearer token, cached per credential, host and repository so that tokens are never shared across
/// credentials.
struct Token {
    value: String,
    expires: Instant,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    /// Fingerprint of the credentials with a per-process salt; zeros for anonymous.
    credential: [u8; 32],
    host: String,
    repository: String,
}

pub(crate) struct RegistryClient {
    verified: Client,
    unverified: Client,
    guard: Guard,
    backoff: Backoff,
    /// Bound on each whole attempt of a request (its token request and its body included).
    deadline: Duration,
    tokens: Mutex<HashMap<TokenKey, Token>>,
    /// Hosts that answered over plain HTTP after HTTPS failed (insecure hosts only).
    plain_http: Mutex<HashSet<String>>,
    /// Hosts that challenged with Basic auth: later requests with credentials send them at once,
    /// saving the 401 round trip.
    basic_hosts: Mutex<HashSet<String>>,
    salt: [u8; 32],
}

/// One operation against one endpoint for one repository, with the credentials to answer challenges.
pub(crate) struct Session<'a> {
    pub endpoint: &'a Endpoint,
    pub repository: &'a str,
    pub credentials: Option<&'a Credentials>,
    /// The display form of the module URL, for errors.
    pub url: &'a str,
    /// Set when credentials were actually sent (a challenge was answered with them).
    pub authenticated: AtomicBool,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        endpoint: &'a Endpoint,
        repository: &'a str,
        credentials: Option<&'a Credentials>,
        url: &'a str,
    ) -> Self {
        Session {
            endpoint,
            repository,
            credentials,
            url,
            authenticated: AtomicBool::new(false),
        }
    }

    /// True when credentials were sent to the registry (or its token realm) in this session.
    pub(crate) fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }
}

/// A fetched manifest.
pub(crate) struct Manifest {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: Sha256,
}

impl RegistryClient {
    pub(crate) fn new(
        verified: Client,
        unverified: Client,
        guard: Guard,
        backoff: Backoff,
        deadline: Duration,
    ) -> Self {
        let mut salt = [0u8; 32];
        salt.iter_mut().for_each(|b| *b = fastrand::u8(..));
        RegistryClient {
            verified,
            unverified,
            guard,
            backoff,
            deadline,
            tokens: Mutex::default(),
            plain_http: Mutex::default(),
            basic_hosts: Mutex::default(),
            salt,
        }
    }

    /// The digest the registry reports for a manifest, from a HEAD request (falling back to GET when the
    /// registry does not answer HEAD with a digest).
    pub(crate) async fn manifest_digest(
        &self,
        s: &Session<'_>,
        reference: &str,
        max_bytes: u64,
    ) -> Result<Sha256, FetchError> {
        let path = &format!("/v2/{}/manifests/{reference}", s.repository);
        let head = self
            .with_retries(s, move || async move {
                let response = self
                    .send(s, Method::HEAD, path, Some(super::formats::MANIFEST_ACCEPT))
                    .await?;
                Ok(header_digest(response.headers()))
            })
            .await?;
        match head {
            Some(d) => Ok(d),
            None => Ok(self.manifest(s, reference, max_bytes).await?.digest),
        }
    }

    /// Fetches a manifest, at most `max_bytes` long, and computes its digest.
    pub(crate) async fn manifest(
        &self,
        s: &Session<'_>,
        reference: &str,
        max_bytes: u64,
    ) -> Result<Manifest, FetchError> {
        let path = format!("/v2/{}/manifests/{reference}", s.repository);
        self.document(s, &path, super::formats::MANIFEST_ACCEPT, max_bytes)
            .await
    }

    /// The referrers of a manifest (OCI distribution 1.1): an image index listing the manifests whose
    /// `subject` is `digest`. Registries without the API answer 404 (or another 4xx).
    pub(crate) async fn referrers(
        &self,
        s: &Session<'_>,
        digest: Sha256,
        max_bytes: u64,
    ) -> Result<Manifest, FetchError> {
        let path = format!("/v2/{}/referrers/{}", s.repository, digest.prefixed());
        self.document(s, &path, super::formats::OCI_INDEX, max_bytes).await
    }

    /// GETs a JSON document (manifest, index), at most `max_bytes` long, and computes its digest.
    async fn document(
        &self,
        s: &Session<'_>,
        path: &str,
        accept: &str,
        max_bytes: u64,
    ) -> Result<Manifest, FetchError> {
        self.with_retries(s, move || async move {
            let mut response = self.send(s, Method::GET, path, Some(accept)).await?;
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let too_large = || {
                Failure::Fatal(FetchError::TooLarge {
                    url: s.url.to_string(),
                    what: "manifest",
                    limit: max_bytes,
                })
            };
            if response.content_length().is_some_and(|l| l > max_bytes) {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(net::body_read)? {
                if (body.len() + chunk.len()) as u64 > max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            let digest = Sha256::of(&body);
            Ok(Manifest {
                body,
                content_type,
                digest,
            })
        })
        .await
    }

    /// Downloads a blob into `sink`, checking its size and digest against the descriptor as it streams.
    /// A download that breaks halfway starts again from an empty sink. `what` names it in a size error.
    pub(crate) async fn blob(
        &self,
        s: &Session<'_>,
        (digest, size): (Sha256, Option<u64>),
        (max_bytes, what): (u64, &'static str),
        sink: &mut dyn Sink,
    ) -> Result<(), FetchError> {
        let path = &format!("/v2/{}/blobs/{}", s.repository, digest.prefixed());
        let fatal = |e| Failure::Fatal(e);
        let url = s.url;
        if size.is_some_and(|n| n > max_bytes) {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                what,
                limit: max_bytes,
            });
        }
        // The sink is handed to one attempt at a time.
        let sink = &tokio::sync::Mutex::new(sink);
        self.with_retries(s, move || async move {
            let mut sink = sink.lock().await;
            sink.reset().map_err(|e| fatal(FetchError::sink(url)(e)))?;
            let mut response = self.send(s, Method::GET, path, None).await?;
            let too_large = || {
                fatal(FetchError::TooLarge {
                    url: url.to_string(),
                    what,
                    limit: max_bytes,
                })
            };
            if response.content_length().is_some_and(|l| l > max_bytes) {
                return Err(too_large());
            }
            // Hash here only when the sink does not already.
            let mut hasher = sink.sha256().is_none().then(Hasher::new);
            let mut received = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(net::body_read)? {
                received += chunk.len() as u64;
                if received > max_bytes {
                    return Err(too_large());
                }
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&chunk);
                }
                sink.write_chunk(&chunk).map_err(|e| fatal(FetchError::sink(url)(e)))?;
            }
            let actual = match hasher {
                Some(hasher) => Sha256::from_bytes(hasher.finalize().into()),
                None => sink.sha256().expect("the sink hashes what it is written"),
            };
            digest.check(actual).map_err(|mismatch| {
                fatal(FetchError::DigestMismatch {
                    url: url.to_string(),
                    what: format!("blob {}", digest.prefixed()),
                    mismatch,
                })
            })?;
            if let Some(size) = size.filter(|&n| n != received) {
                return Err(fatal(FetchError::SizeMismatch {
                    url: url.to_string(),
                    what: format!("blob {}", digest.prefixed()),
                    expected: size,
                    actual: received,
                }));
            }
            Ok(())
        })
        .await
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of attempts. Each attempt (a manifest or
    /// blob request, with the token request that answers its challenge) is bounded by the deadline as a whole;
    /// one cut off counts as timed out.
    async fn with_retries<T, F, Fut>(&self, s: &Session<'_>, attempt: F) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        retry::run(&self.backoff, self.deadline, s.url, Some(&s.endpoint.host), attempt).await
    }

    /// Sends one request, answering an auth challenge once; maps statuses to failures.
    async fn send(
        &self,
        s: &Session<'_>,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, Failure> {
        let key = self.token_key(s);
        let first = match (self.cached_token(&key), s.credentials) {
            (Some(token), _) => Some(Auth::Bearer(token)),
            (None, Some(c)) if self.basic_hosts.lock().unwrap().contains(&s.endpoint.host) => {
                s.mark_authenticated();
                Some(Auth::Basic(c.clone()))
            }
            _ => None,
        };
        let mut response = self.request(s, method.clone(), path, accept, first).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let values = response.headers().get_all(WWW_AUTHENTICATE);
            let challenge = challenge::choose(values.iter().filter_map(|v| v.to_str().ok())).unwrap_or_else(|e| {
                tracing::warn!(cause = %e, host = %s.endpoint.host, "registry challenge not understood");
                None
            });
            let auth = match challenge {
                Some(Challenge::Bearer { realm, service, scope }) => {
                    let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", s.repository));
                    let token = self.fetch_token(s, &realm, service.as_deref(), &scope).await?;
                    self.tokens.lock().unwrap().insert(
                        key,
                        Token {
                            value: token.0.clone(),
                            expires: token.1,
                        },
                    );
                    Some(Auth::Bearer(token.0))
                }
                Some(Challenge::Basic) => s.credentials.map(|c| {
                    self.basic_hosts.lock().unwrap().insert(s.endpoint.host.clone());
                    s.mark_authenticated();
                    Auth::Basic(c.clone())
                }),
                None => None,
            };
            if let Some(auth) = auth {
                response = self.request(s, method, path, accept, Some(auth)).await?;
            }
        }
        let url = s.url.to_string();
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(Failure::Fatal(FetchError::NotFound {
                url,
                detail: format!("registry {} answered 404 for {path}", s.endpoint.host),
            })),
            StatusCode::UNAUTHORIZED => Err(Failure::Fatal(FetchError::Unauthenticated { url, status: 401 })),
            StatusCode::FORBIDDEN => Err(Failure::Fatal(FetchError::Forbidden { url, status: 403 })),
            status if retryable_status(status.as_u16()) => Err(Failure::Retry {
                cause: format!("HTTP {}", status.as_u16()),
                timed_out: false,
            }),
            status => Err(Failure::Fatal(FetchError::Status {
                url,
                status: status.as_u16(),
            })),
        }
    }

    /// One HTTP exchange with the endpoint, over HTTPS, or plain HTTP for insecure hosts that need it.
    async fn request(
        &self,
        s: &Session<'_>,
        method: Method,
        path: &str,
        accept: Option<&str>,
        auth: Option<Auth>,
    ) -> Result<Response, Failure> {
        let ep = s.endpoint;
        // reqwest resolves only host names through the guarded resolver; an IP literal goes straight to
        // connect, so the registry's (or mirror's) own address is judged here, before any connection.
        if let Err(source) = self.guard.check_url(&ep.base) {
            return Err(Failure::Fatal(FetchError::Blocked {
                url: s.url.to_string(),
                source,
            }));
        }
        let known_plain = ep.insecure && self.plain_http.lock().unwrap().contains(&ep.host);
        let mut url = ep.base.clone();
        if known_plain {
            let _ = url.set_scheme("http");
        }
        let result = self
            .request_to(&url, ep, method.clone(), path, accept, auth.clone())
            .await;
        match result {
            Err(e) if ep.insecure && url.scheme() == "https" && (e.is_connect() || is_tls(&e)) => {
                let _ = url.set_scheme("http");
                let retried = self.request_to(&url, ep, method, path, accept, auth).await;
                if retried.is_ok() {
                    self.plain_http.lock().unwrap().insert(ep.host.clone());
                }
                retried.map_err(|e| classify(s.url, e))
            }
            other => other.map_err(|e| classify(s.url, e)),
        }
    }

    async fn request_to(
        &self,
        base: &Url,
        ep: &Endpoint,
        method: Method,
        path: &str,
        accept: Option<&str>,
        auth: Option<Auth>,
    ) -> Result<Response, reqwest::Error> {
        let mut url = base.clone();
        url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
        if let Some(ns) = &ep.ns {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        let client = if ep.insecure { &self.unverified } else { &self.verified };
        let mut request = client.request(method, url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request = match auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            Some(Auth::Basic(c)) => request.basic_auth(c.username(), Some(c.password())),
            None => request,
        };
        // The client's connect and read timeouts bound a stalled registry; `with_retries` bounds a slow one.
        request.send().await
    }

    fn token_key(&self, s: &Session<'_>) -> TokenKey {
        TokenKey {
            credential: s.credentials.map_or([0; 32], |c| c.fingerprint(&self.salt)),
            host: s.endpoint.host.clone(),
            repository: s.repository.to_string(),
        }
    }

    fn cached_token(&self, key: &TokenKey) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap();
        match tokens.get(key) {
            Some(t) if t.expires > Instant::now() => Some(t.value.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    /// Asks the token realm for a pull token, with the session's credentials when it has some.
    async fn fetch_token(
        &self,
        s: &Session<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Instant), Failure> {
        let url = s.url.to_string();
        let fatal = |reason: String| {
            Failure::Fatal(FetchError::Format {
                url: url.clone(),
                reason,
            })
        };
        let mut realm_url = Url::parse(realm).map_err(|e| fatal(format!("token realm {realm:?} is not a url: {e}")))?;
        if !matches!(realm_url.scheme(), "https" | "http") {
            return Err(fatal(format!("token realm {realm:?} is not http(s)")));
        }
        if let Err(source) = self.guard.check_url(&realm_url) {
            return Err(Failure::Fatal(FetchError::Blocked { url, source }));
        }
        if realm_url.scheme() == "http" && s.credentials.is_some() && !s.endpoint.insecure {
            return Err(fatal(format!(
                "token realm {} is plain http; credentials are only sent there for --insecure-registry hosts",
                realm_url.host_str().unwrap_or("")
            )));
        }
        {
            let mut q = realm_url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let client = if s.endpoint.insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let mut request = client.get(realm_url);
        if let Some(c) = s.credentials {
            request = request.basic_auth(c.username(), Some(c.password()));
            s.mark_authenticated();
        }
        let mut response = request.send().await.map_err(|e| classify(s.url, e))?;
        match response.status() {
            st if st.is_success() => {}
            StatusCode::UNAUTHORIZED => return Err(Failure::Fatal(FetchError::Unauthenticated { url, status: 401 })),
            StatusCode::FORBIDDEN => return Err(Failure::Fatal(FetchError::Forbidden { url, status: 403 })),
            st if retryable_status(st.as_u16()) => {
                return Err(Failure::Retry {
                    cause: format!("token realm answered HTTP {}", st.as_u16()),
                    timed_out: false,
                })
            }
            st => return Err(fatal(format!("token realm answered HTTP {}", st.as_u16()))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(net::body_read)? {
            if (body.len() + chunk.len()) as u64 > MAX_TOKEN_RESPONSE {
                return Err(fatal("token response is larger than 1 MiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| fatal(format!("token response is not JSON: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fatal("token response has no token".into()))?;
        let ttl = parsed.expires_in.map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
        // Renew a little early so a token does not expire mid-request.
        let expires = Instant::now() + ttl.saturating_sub(Duration::from_secs(5)).max(Duration::from_secs(1));
        Ok((token, expires))
    }
}

#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(Credentials),
}

fn header_digest(headers: &HeaderMap) -> Option<Sha256> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn is_tls(e: &reqwest::Error) -> bool {
    find_cause::<rustls::Error>(e).is_some()
}
