//! The orchestrator: applies the pull policy to what the store holds, runs at most one upstream fetch
//! per module at a time (single flight), has what fetchers bring verified, and commits it. The only module
//! that sees policy, fetchers and store together. One file per job: `request` (what a caller asks),
//! `admit` (who may be served what), `flight` (one fetch per module at a time), `job` (one upstream fetch
//! and the binding of its URL), `verify` (checking what came), `ops` (list, remove, pin, sweep), `judge`
//! (signatures), `registry` (the OCI endpoint's core).

mod admit;
mod flight;
mod job;
mod judge;
mod ops;
pub mod registry;
mod request;
mod verify;

pub use ops::PinTarget;
pub use request::{RawRequest, Refused, Request, RequestField};

use admit::{Admission, Caller, HeldContent, LazyCaller};
use flight::{unshare, Flight, Revalidation, RunningFetch};
use job::{Counted, FetchJob, Landed};
use ops::evict;
use verify::{candidates, finish_ingest, image_digests, payload_digests};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::access;
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::{FetchError, Fetchers};
use crate::metrics::{Eviction, Metrics};
use crate::policy::{self, Ask, Decision, Facts, UrlFacts};
use crate::signature::Policy;
use crate::store::{now_ms, OpenBlob, RefRecord, Store, StoreError, Verification};

/// When cached modules are deleted. A module in use is never deleted: being streamed now, pinned, named
/// by a WasmPlugin the daemon watches, or resolved within `resolve_lease`. Every other module may go:
/// least recently used first while the cache is over `max_cache_bytes`, and once unused for
/// `module_expiry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// Evict least recently used modules while the cache is larger; `None`: no limit.
    pub max_cache_bytes: Option<u64>,
    /// Modules unused for this long are deleted by the periodic sweep.
    pub module_expiry: Duration,
    /// How long a module is in use after Resolve handed out its path (a proxy reads the file itself).
    pub resolve_lease: Duration,
    /// How often the sweep runs.
    pub purge_interval: Duration,
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
    /// Until when the module is leased to the caller (Resolve only), unix ms.
    pub lease_until_ms: Option<u64>,
    /// Which signature rule verified the module for this URL, and by which key or identity.
    pub verified_by: Option<String>,
}

/// The modules named by the WasmPlugins the daemon watches, by plugin (`namespace/name`): in use, so
/// never evicted.
#[derive(Clone, Default)]
struct Watched(Arc<Mutex<HashMap<String, Sha256>>>);

impl Watched {
    fn digests(&self) -> HashSet<Sha256> {
        self.0.lock().unwrap().values().copied().collect()
    }
}

pub struct Cache {
    store: Arc<Store>,
    fetchers: Arc<Fetchers>,
    serve_stale: bool,
    /// Salt of credential fingerprints, kept in the index so proofs survive restarts.
    salt: [u8; 32],
    /// Running fetches by flight key, each with its count of bytes downloaded so far.
    flights: Arc<Mutex<HashMap<String, RunningFetch>>>,
    /// Owns the fetch tasks: a fetch goes on when the client that started it leaves, so that the
    /// requests sharing it still get the module; `close` stops new ones on shutdown.
    tasks: TaskTracker,
    lifecycle: Lifecycle,
    watched: Watched,
    /// The signature verification policy (`--verify-policy`), swapped on SIGHUP.
    policy: std::sync::RwLock<Option<Arc<Policy>>>,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(
        store: Arc<Store>,
        fetchers: Arc<Fetchers>,
        serve_stale: bool,
        lifecycle: Lifecycle,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let salt = store.index().salt()?;
        Ok(Cache {
            store,
            fetchers,
            serve_stale,
            salt,
            flights: Default::default(),
            tasks: TaskTracker::new(),
            lifecycle,
            watched: Watched::default(),
            policy: Default::default(),
            metrics,
        })
    }

    /// Puts a signature verification policy in force (`None`: none). Fetches already running finish under
    /// the policy they started with; every binding judged under another policy is judged again before it
    /// is served.
    pub fn set_policy(&self, policy: Option<Arc<Policy>>) {
        *self.policy.write().unwrap() = policy;
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.policy.read().unwrap().clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Makes sure the module is cached, as [`Cache::get`] does, and leases it for `--resolve-lease`: the
    /// caller gets the blob's path and reads the file itself, so the module stays in use until the lease
    /// ends; resolving again renews it.
    pub async fn resolve(&self, req: &Request) -> Result<Module, Error> {
        let (mut module, _blob) = self.get(req).await?;
        let until = now_ms().saturating_add(self.lifecycle.resolve_lease.as_millis() as u64);
        self.store.lease(&module.digest, until)?;
        module.lease_until_ms = Some(until);
        Ok(module)
    }

    /// True when the module may be served without credentials (it was never pulled privately).
    pub fn is_public(&self, digest: &Sha256) -> bool {
        matches!(self.store.index().get_access(digest), Ok(record) if access::is_public(record.as_ref()))
    }

    /// How often the periodic sweep runs.
    pub fn purge_interval(&self) -> std::time::Duration {
        self.lifecycle.purge_interval
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
        let result = self.lookup(req).await;
        self.metrics
            .lookup(matches!(&result, Ok((m, _)) if m.outcome == Outcome::Hit));
        result
    }

    async fn lookup(&self, req: &Request) -> Result<(Module, OpenBlob), Error> {
        let key = req.url.to_string();
        let caller = LazyCaller {
            cache: self,
            req,
            cell: tokio::sync::OnceCell::new(),
        };
        let record = self.store.index().get_ref(&key)?;
        let bound = record
            .as_ref()
            .map(|r| (r.digest, r))
            .filter(|(d, _)| self.store.contains(d));
        let facts = Facts {
            url: bound.map(|(digest, r)| UrlFacts {
                digest,
                manifest_digest: r.manifest_digest,
                index_digest: r.index_digest,
                resource: r.resource.clone(),
                judged: !judge::needs_judgement(self.policy().as_deref(), &req.url, &key, r),
            }),
        };
        let ask = Ask {
            policy: req.policy,
            expected: req.expected,
            resource_name: &req.resource_name,
            resource_version: &req.resource_version,
            floating: req.url.is_floating(),
            immutable: req.url.is_immutable(),
        };
        let decision = policy::decide(&ask, &facts);
        tracing::debug!(?decision, "pull policy decided");
        let fresh = Revalidation::default();
        match decision {
            Decision::UseCached(digest) => match self.admit(req, &key, &caller, digest).await? {
                Admission::Refetch => self.fetch_and_open(req, &key, &caller, fresh, Outcome::Fetched).await,
                Admission::Serve => match self.open(digest).await {
                    Ok(blob) => {
                        let url = facts
                            .url
                            .as_ref()
                            .expect("a cached decision comes from the URL's binding");
                        let fetched_at = record.as_ref().map_or(0, |r| r.fetched_at_ms);
                        let mut module = self.module(req, digest, url.manifest_digest, fetched_at, &blob, Outcome::Hit);
                        module.verified_by = verified_by(record.as_ref());
                        Ok((module, blob))
                    }
                    // Removed (rm, eviction) since the lookup: fetch it again.
                    Err(Error::Store(StoreError::NotFound(_))) => {
                        self.fetch_and_open(req, &key, &caller, fresh, Outcome::Fetched).await
                    }
                    Err(Error::Store(StoreError::Corrupt(_))) => {
                        self.metrics.evicted(Eviction::Corrupt);
                        // Quarantined; fetch it again from the URL that asked.
                        match self.fetch_and_open(req, &key, &caller, fresh, Outcome::Fetched).await {
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
            },
            Decision::Fetch => self.fetch_and_open(req, &key, &caller, fresh, Outcome::Fetched).await,
            Decision::Revalidate { stale_ok } => {
                let cached = facts.url.as_ref().map(|u| u.digest);
                let conditions = match (&facts.url, &record, stale_ok) {
                    (Some(url), Some(r), true) => Revalidation {
                        etag: r.etag.clone(),
                        known_digest: url.index_digest.or(url.manifest_digest),
                    },
                    _ => fresh,
                };
                match self
                    .fetch_and_open(req, &key, &caller, conditions, Outcome::Refreshed)
                    .await
                {
                    Ok(found) => Ok(found),
                    Err(e) if stale_ok && self.serve_stale && !is_access_verdict(&e) => {
                        let (Some(digest), Some(record)) = (cached, record) else {
                            return Err(e);
                        };
                        if !matches!(self.admit(req, &key, &caller, digest).await, Ok(Admission::Serve)) {
                            return Err(e);
                        }
                        let Ok(blob) = self.open(digest).await else {
                            return Err(e);
                        };
                        tracing::warn!(cause = %e, %digest, "refresh failed; serving the cached copy");
                        let manifest = facts.url.as_ref().and_then(|u| u.manifest_digest);
                        let mut module =
                            self.module(req, digest, manifest, record.fetched_at_ms, &blob, Outcome::Stale);
                        module.verified_by = verified_by(Some(&record));
                        Ok((module, blob))
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
            lease_until_ms: None,
            verified_by: None,
        }
    }

    /// Opens a cached blob for reading, hashing it first unless this process verified it unchanged.
    pub(crate) async fn open(&self, digest: Sha256) -> Result<OpenBlob, Error> {
        // A hit on a blob already verified is served without a hop to the blocking pool: that hop
        // dominated the tail latency of small hits.
        if let Some(blob) = self.store.open_verified_blob(&digest)? {
            return Ok(blob);
        }
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.open_blob(&digest))
            .await
            .map_err(|e| Error::Internal(format!("blob reader panicked: {e}")))??)
    }
}

/// A registry's refusal of the caller's credentials: never answered with a cached copy.
fn is_access_verdict(e: &Error) -> bool {
    matches!(
        e,
        Error::Fetch(FetchError::Unauthenticated { .. } | FetchError::Forbidden { .. })
    )
}

/// What the URL's recorded verdict says, for ModuleInfo.
fn verified_by(record: Option<&RefRecord>) -> Option<String> {
    record.and_then(|r| r.verification.as_ref()).map(Verification::describe)
}

#[cfg(test)]
mod tests;
