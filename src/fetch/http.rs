//! The http(s) fetcher: reqwest over rustls, every destination checked by the [`Guard`], per-attempt
//! timeouts, and retries with backoff for transient failures only.

use std::time::Duration;

use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::{Client, StatusCode};
use url::Url;

use super::net::{self, classify, host_matches, Clients};
use super::retry::{self, retryable_status, Backoff, Failure};
use super::{Conditions, FetchError, Fetched, Meta, Settings, Sink};
use crate::source::display_url;

pub(crate) struct HttpFetcher {
    clients: Clients,
    insecure_hosts: Vec<String>,
    backoff: Backoff,
    timeout: Duration,
    /// Bound on each whole attempt, body included.
    deadline: Duration,
    max_bytes: u64,
}

impl HttpFetcher {
    pub(crate) fn new(settings: &Settings, clients: Clients) -> Self {
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
    pub(crate) async fn fetch(
        &self,
        url: &Url,
        conditions: &Conditions,
        sink: &mut dyn Sink,
    ) -> Result<Fetched, FetchError> {
        self.fetch_capped(url, conditions, sink, (self.max_bytes, "module"))
            .await
    }

    /// Downloads a small document (a detached signature bundle) of at most `max` bytes into memory, as a
    /// module is downloaded (guard, retries, deadline); `Ok(None)` when the origin has none (404, 410).
    pub(crate) async fn document(
        &self,
        url: &Url,
        max: u64,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>, FetchError> {
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
        // The sink is handed to one attempt at a time.
        let sink = &tokio::sync::Mutex::new(sink);
        let shown = &shown;
        retry::run(&self.backoff, self.deadline, shown, None, || async move {
            let mut sink = sink.lock().await;
            sink.reset().map_err(|e| Failure::Fatal(FetchError::sink(shown)(e)))?;
            self.attempt(url, shown, conditions, &mut **sink, limit).await
        })
        .await
    }

    async fn attempt(
        &self,
        url: &Url,
        shown: &str,
        conditions: &Conditions,
        sink: &mut dyn Sink,
        (max_bytes, what): (u64, &'static str),
    ) -> Result<Fetched, Failure> {
        let authenticated = has_credentials(url);
        let mut request = self.client_for(url).get(url.clone());
        if let Some(etag) = &conditions.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(classify(shown, e)),
            Err(_) => {
                return Err(Failure::Retry {
                    cause: format!("no response within {}", humantime::format_duration(self.timeout)),
                    timed_out: true,
                })
            }
        };
        let status = response.status();
        let fatal = |e| Err(Failure::Fatal(e));
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
                return Err(Failure::Retry {
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
                        .map_err(|e| Failure::Fatal(FetchError::sink(shown)(e)))?;
                }
                Ok(None) => break,
                Err(e) => return Err(net::body_read(e)),
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
pub(crate) fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}
