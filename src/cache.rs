//! The orchestrator: applies the pull policy to what the store holds, runs at most one upstream fetch
//! per module at a time (single flight), unwraps and verifies what fetchers bring, and commits it. The
//! only module that sees policy, fetchers and store together.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio_util::task::TaskTracker;

use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::unbox::{self, Kind};
use crate::fetch::{Conditions, FetchError, Fetched, Fetchers, Sink};
use crate::policy::{self, Ask, Decision, Facts, PullPolicy, UrlFacts};
use crate::source::ModuleUrl;
use crate::store::{now_ms, Ingest, OpenBlob, RefRecord, Store, StoreError};

/// A request for a module, as the core sees it.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: ModuleUrl,
    pub expected: Option<Sha256>,
    pub policy: PullPolicy,
    pub resource_name: String,
    pub resource_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Fetched,
    Refreshed,
    Stale,
}

/// What a request resolved to.
#[derive(Clone, Debug)]
pub struct Module {
    pub digest: Sha256,
    pub size: u64,
    /// The requested URL, without credentials.
    pub source_url: String,
    pub manifest_digest: Option<Sha256>,
    pub path: PathBuf,
    pub fetched_at_ms: u64,
    pub outcome: Outcome,
}

/// What a finished upstream fetch left in the store.
#[derive(Clone, Debug)]
struct Landed {
    digest: Sha256,
    manifest_digest: Option<Sha256>,
    fetched_at_ms: u64,
}

type FlightResult = Result<Landed, Arc<Error>>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;

/// A listed module.
#[derive(Clone, Debug)]
pub struct Listed {
    pub digest: Sha256,
    pub size: u64,
    pub urls: Vec<String>,
    pub path: PathBuf,
    pub fetched_at_ms: u64,
    pub last_used_ms: u64,
}

/// What a removal did.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    pub digests: Vec<Sha256>,
    pub urls: Vec<String>,
}

pub struct Cache {
    store: Arc<Store>,
    fetchers: Arc<Fetchers>,
    serve_stale: bool,
    flights: Arc<Mutex<HashMap<String, Flight>>>,
    /// Owns the fetch tasks: a fetch goes on when the client that started it leaves, so that the
    /// requests sharing it still get the module; `close` stops new ones on shutdown.
    tasks: TaskTracker,
}

impl Cache {
    pub fn new(store: Arc<Store>, fetchers: Arc<Fetchers>, serve_stale: bool) -> Self {
        Cache {
            store,
            fetchers,
            serve_stale,
            flights: Default::default(),
            tasks: TaskTracker::new(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Waits for running fetches to finish, after which no new one starts.
    pub async fn close(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Makes sure the module is cached as the policy requires, and opens it for reading.
    #[tracing::instrument(skip_all, fields(url = %req.url, policy = ?req.policy))]
    pub async fn get(&self, req: &Request) -> Result<(Module, OpenBlob), Error> {
        let key = req.url.to_string();
        let record = self.store.index().get_ref(&key)?;
        let facts = Facts {
            expected_cached: req.expected.is_some_and(|d| self.store.contains(&d)),
            url: record
                .as_ref()
                .and_then(|r| r.digest().map(|d| (d, r)))
                .filter(|(d, _)| self.store.contains(d))
                .map(|(digest, r)| UrlFacts {
                    digest,
                    resource: r.resource.clone(),
                }),
        };
        let ask = Ask {
            policy: req.policy,
            expected: req.expected,
            resource_name: &req.resource_name,
            resource_version: &req.resource_version,
        };
        let decision = policy::decide(&ask, &facts);
        tracing::debug!(?decision, "pull policy decided");
        match decision {
            Decision::UseCached(digest) => match self.open(digest).await {
                Ok(blob) => {
                    if facts.url.is_none() {
                        self.remember_url(&key, digest);
                    }
                    let fetched_at = record.as_ref().map_or(0, |r| r.fetched_at_ms);
                    let manifest = record
                        .as_ref()
                        .and_then(|r| r.manifest_digest.as_deref())
                        .and_then(|m| m.parse().ok());
                    Ok((
                        self.module(req, digest, manifest, fetched_at, &blob, Outcome::Hit),
                        blob,
                    ))
                }
                Err(Error::Store(StoreError::Corrupt { .. })) => {
                    // Quarantined; fetch it again from the URL that asked.
                    match self.fetch_and_open(req, &key, None, Outcome::Fetched).await {
                        Ok(found) => Ok(found),
                        Err(cause) => Err(Error::CorruptNotRefetched {
                            url: key,
                            digest,
                            cause: Box::new(cause),
                        }),
                    }
                }
                Err(e) => Err(e),
            },
            Decision::Fetch => self.fetch_and_open(req, &key, None, Outcome::Fetched).await,
            Decision::Revalidate { stale_ok } => {
                let cached = facts.url.as_ref().map(|u| u.digest);
                let etag = record
                    .as_ref()
                    .and_then(|r| r.etag.clone())
                    .filter(|_| stale_ok);
                match self
                    .fetch_and_open(req, &key, etag, Outcome::Refreshed)
                    .await
                {
                    Ok(found) => Ok(found),
                    Err(e) if stale_ok && self.serve_stale => {
                        let digest = cached.expect("revalidation implies a cached module");
                        let Ok(blob) = self.open(digest).await else {
                            return Err(e);
                        };
                        tracing::warn!(cause = %e, %digest, "refresh failed; serving the cached copy");
                        let record = record.expect("revalidation implies a record");
                        let manifest = record
                            .manifest_digest
                            .as_deref()
                            .and_then(|m| m.parse().ok());
                        Ok((
                            self.module(
                                req,
                                digest,
                                manifest,
                                record.fetched_at_ms,
                                &blob,
                                Outcome::Stale,
                            ),
                            blob,
                        ))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn module(
        &self,
        req: &Request,
        digest: Sha256,
        manifest_digest: Option<Sha256>,
        fetched_at_ms: u64,
        blob: &OpenBlob,
        outcome: Outcome,
    ) -> Module {
        Module {
            digest,
            size: blob.size,
            source_url: req.url.to_string(),
            manifest_digest,
            path: blob.path.clone(),
            fetched_at_ms,
            outcome,
        }
    }

    /// Records that `key` resolves to an already-cached blob it did not fetch (a hit by digest).
    fn remember_url(&self, key: &str, digest: Sha256) {
        let record = RefRecord {
            digest: digest.to_string(),
            manifest_digest: None,
            resource: None,
            etag: None,
            fetched_at_ms: now_ms(),
        };
        if let Err(e) = self.store.index().put_ref(key, &record) {
            tracing::warn!(url = %key, cause = %e, "could not record url");
        }
    }

    async fn open(&self, digest: Sha256) -> Result<OpenBlob, Error> {
        let store = self.store.clone();
        Ok(
            tokio::task::spawn_blocking(move || store.open_blob(&digest))
                .await
                .map_err(|e| Error::Internal(format!("blob reader panicked: {e}")))??,
        )
    }

    async fn fetch_and_open(
        &self,
        req: &Request,
        key: &str,
        etag: Option<String>,
        outcome: Outcome,
    ) -> Result<(Module, OpenBlob), Error> {
        let landed = self.flight(req, key, etag).await.map_err(unshare)?;
        let blob = match self.open(landed.digest).await {
            Err(Error::Store(StoreError::NotFound(_))) => {
                // Removed between landing and opening: rare, and the client may simply retry.
                return Err(Error::Internal(format!(
                    "{key}: module was removed while it was being served"
                )));
            }
            other => other?,
        };
        Ok((
            self.module(
                req,
                landed.digest,
                landed.manifest_digest,
                landed.fetched_at_ms,
                &blob,
                outcome,
            ),
            blob,
        ))
    }

    /// Joins the running fetch of this URL (and expected digest), or starts one.
    fn flight(&self, req: &Request, key: &str, etag: Option<String>) -> Flight {
        let flight_key = format!("{key}\n{:?}", req.expected);
        let mut flights = self.flights.lock().unwrap();
        if let Some(running) = flights.get(&flight_key) {
            return running.clone();
        }
        let job = FetchJob {
            store: self.store.clone(),
            fetchers: self.fetchers.clone(),
            url: req.url.clone(),
            key: key.to_string(),
            expected: req.expected,
            etag,
            resource: (!req.resource_name.is_empty() || !req.resource_version.is_empty())
                .then(|| (req.resource_name.clone(), req.resource_version.clone())),
        };
        let registry = self.flights.clone();
        let cleanup_key = flight_key.clone();
        let handle = self.tasks.spawn(async move {
            let result = job.run().await.map_err(Arc::new);
            registry.lock().unwrap().remove(&cleanup_key);
            result
        });
        let flight = async move {
            handle.await.unwrap_or_else(|e| {
                Err(Arc::new(Error::Internal(format!("fetch task failed: {e}"))))
            })
        }
        .boxed()
        .shared();
        flights.insert(flight_key, flight.clone());
        flight
    }

    /// Every cached module with the URLs that lead to it.
    pub fn list(&self) -> Result<Vec<Listed>, Error> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|e| Listed {
                digest: e.digest,
                size: e.size,
                fetched_at_ms: e
                    .refs
                    .iter()
                    .map(|(_, r)| r.fetched_at_ms)
                    .max()
                    .unwrap_or(0),
                urls: e.refs.into_iter().map(|(url, _)| url).collect(),
                path: e.path,
                last_used_ms: e.record.map_or(0, |r| r.last_used_ms),
            })
            .collect())
    }

    /// Forgets a URL; deletes its module when no other URL leads to it.
    pub fn remove_url(&self, url: &ModuleUrl) -> Result<Removed, Error> {
        let key = url.to_string();
        let Some(record) = self.store.index().remove_ref(&key)? else {
            return Err(Error::NotCached(key));
        };
        let mut removed = Removed {
            digests: vec![],
            urls: vec![key],
        };
        if let Some(digest) = record.digest() {
            if self.store.index().refs_to(&digest)?.is_empty()
                && self.store.delete(&digest)?.is_some()
            {
                removed.digests.push(digest);
            }
        }
        Ok(removed)
    }

    /// Deletes a module and every URL that leads to it.
    pub fn remove_digest(&self, digest: &Sha256) -> Result<Removed, Error> {
        match self.store.delete(digest)? {
            Some(urls) => Ok(Removed {
                digests: vec![*digest],
                urls,
            }),
            None => Err(Error::NotCached(format!("module sha256:{digest}"))),
        }
    }
}

/// Turns a shared flight error back into an owned one, keeping its gRPC code and message.
fn unshare(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|shared| Error::Shared {
        code: shared.code(),
        reason: shared.reason(),
        message: shared.to_string(),
    })
}

/// One upstream fetch, run as an owned task.
struct FetchJob {
    store: Arc<Store>,
    fetchers: Arc<Fetchers>,
    url: ModuleUrl,
    key: String,
    expected: Option<Sha256>,
    etag: Option<String>,
    resource: Option<(String, String)>,
}

impl FetchJob {
    async fn run(self) -> Result<Landed, Error> {
        let started = std::time::Instant::now();
        let mut raw = self.store.ingest()?;
        let conditions = Conditions {
            etag: self.etag.clone(),
        };
        let fetched = self.fetchers.fetch(&self.url, &conditions, &mut raw).await;
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(url = %self.key, cause = %e, "fetch failed");
                return Err(e.into());
            }
        };
        let now = now_ms();
        let landed = match fetched {
            Fetched::NotModified => {
                let mut record = self.store.index().get_ref(&self.key)?.ok_or_else(|| {
                    Error::Internal(format!("{}: record vanished during revalidation", self.key))
                })?;
                record.resource = self.resource.clone();
                record.fetched_at_ms = now;
                self.store.index().put_ref(&self.key, &record)?;
                let digest = record
                    .digest()
                    .ok_or_else(|| Error::Internal("unreadable digest in index".into()))?;
                Landed {
                    digest,
                    manifest_digest: None,
                    fetched_at_ms: now,
                }
            }
            Fetched::Complete(meta) => {
                let store = self.store.clone();
                let max_bytes = self.fetchers.max_bytes();
                let (key, expected) = (self.key.clone(), self.expected);
                let committed = tokio::task::spawn_blocking(move || {
                    finish_ingest(&store, raw, &key, expected, max_bytes)
                })
                .await
                .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
                let record = RefRecord {
                    digest: committed.to_string(),
                    manifest_digest: meta.manifest_digest.map(|d| d.prefixed()),
                    resource: self.resource.clone(),
                    etag: meta.etag,
                    fetched_at_ms: now,
                };
                self.store.index().put_ref(&self.key, &record)?;
                Landed {
                    digest: committed,
                    manifest_digest: meta.manifest_digest,
                    fetched_at_ms: now,
                }
            }
        };
        // Make the new mapping durable before anyone is told about it.
        if let Err(e) = self.store.index().flush().await {
            tracing::warn!(cause = %e, "could not flush the index");
        }
        tracing::info!(url = %self.key, digest = %landed.digest, elapsed_ms = started.elapsed().as_millis() as u64, "module fetched");
        Ok(landed)
    }
}

/// Unwraps the downloaded payload when it is an archive, checks the Wasm header, and commits.
fn finish_ingest(
    store: &Store,
    raw: Ingest,
    url: &str,
    expected: Option<Sha256>,
    max_bytes: u64,
) -> Result<Sha256, Error> {
    let unbox_err = |source| {
        Error::Fetch(FetchError::Unbox {
            url: url.to_string(),
            source,
        })
    };
    let head = unbox::read_head(raw.path()).map_err(unbox_err)?;
    let module = match unbox::sniff(&head) {
        Kind::Wasm => raw,
        Kind::Gzip | Kind::Tar => {
            let mut out = store.ingest()?;
            unbox::unwrap(raw.path(), &mut out, max_bytes).map_err(unbox_err)?;
            out.flush().map_err(|e| Error::Fetch(FetchError::Sink(e)))?;
            out
        }
        Kind::Unknown => {
            // Neither Wasm nor an archive: this names what the payload starts with.
            unbox::check_wasm(&head).map_err(unbox_err)?;
            raw
        }
    };
    unbox::check_wasm(&unbox::read_head(module.path()).map_err(unbox_err)?).map_err(unbox_err)?;
    match store.commit(module, expected) {
        Ok(c) => Ok(c.digest),
        Err(StoreError::DigestMismatch { expected, actual }) => Err(Error::ChecksumMismatch {
            url: url.to_string(),
            expected,
            actual,
        }),
        Err(e) => Err(e.into()),
    }
}

impl Sink for Ingest {
    fn reset(&mut self) -> std::io::Result<()> {
        Ingest::reset(self)
    }

    fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.write_all(chunk)
    }
}
