//! The orchestrator: applies the pull policy to what the store holds, runs at most one upstream fetch
//! per module at a time (single flight), unwraps and verifies what fetchers bring, and commits it. The
//! only module that sees policy, fetchers and store together.

mod judge;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio_util::task::TaskTracker;

use crate::access::{self, Verdict};
use crate::config::Lifecycle;
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::http::has_credentials;
use crate::fetch::oci::auth::Credentials;
use crate::fetch::oci::auth::DockerConfig;
use crate::fetch::oci::Keyring;
use crate::fetch::unbox::{self, Kind};
use crate::fetch::{Conditions, FetchError, Fetched, Fetchers, Held, HeldImage, Meta, NothingHeld, Sink};
use crate::metrics::{Eviction, Metrics};
use crate::policy::{self, Ask, Decision, Facts, PullPolicy, UrlFacts};
use crate::signature::Policy;
use crate::source::ModuleUrl;
use crate::store::{
    now_ms, Committed, Hold, Ingest, OpenBlob, RefRecord, Store, StoreError, SweepPolicy, SweepReport, Verification,
};

/// A request for a module, as the core sees it.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: ModuleUrl,
    pub expected: Option<Sha256>,
    pub policy: PullPolicy,
    pub resource_name: String,
    pub resource_version: String,
    /// Registry credentials the request brought (OCI only).
    pub pull_secret: Option<DockerConfig>,
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

/// Who is asking, for the access check: the repository of an OCI request, and the salted fingerprint
/// of the credentials it would use there, with the credentials themselves for the fetch.
#[derive(Clone, Debug)]
struct Caller {
    repository: Option<String>,
    fingerprint: String,
    keyring: Keyring,
}

/// The caller, worked out when first needed: a hit on a public module needs no credentials, so a credential
/// provider that fails or hangs does not stand between a request and a public cached module.
struct LazyCaller<'a> {
    cache: &'a Cache,
    req: &'a Request,
    cell: tokio::sync::OnceCell<Caller>,
}

impl LazyCaller<'_> {
    async fn get(&self) -> Result<&Caller, Error> {
        self.cell.get_or_try_init(|| self.cache.caller(self.req)).await
    }
}

/// Whether a cached module may be served to a caller.
enum Admission {
    Serve,
    /// Act as if it were not cached.
    Refetch,
}

/// What a finished upstream fetch left in the store.
#[derive(Clone, Debug)]
struct Landed {
    digest: Sha256,
    manifest_digest: Option<Sha256>,
    fetched_at_ms: u64,
    /// Keeps the module from eviction until every caller waiting on this fetch has opened it (each then
    /// holds it through its own reader): the eviction that makes room for it must not take it.
    _hold: Arc<Hold>,
    verification: Option<Verification>,
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

/// The conditional parts of a refresh.
#[derive(Clone, Debug, Default)]
struct Revalidation {
    etag: Option<String>,
    known_digest: Option<Sha256>,
}

/// Fetches started again for one request when the module keeps being removed before it is opened.
const REMOVED_RETRIES: usize = 3;

type FlightResult = Result<Landed, Arc<Error>>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;
/// A fetch in progress and its count of bytes downloaded so far.
type RunningFetch = (Flight, Arc<AtomicU64>);

/// A listed module.
#[derive(Clone, Debug)]
pub struct Listed {
    pub digest: Sha256,
    pub size: u64,
    pub urls: Vec<String>,
    pub path: PathBuf,
    pub fetched_at_ms: u64,
    pub last_used_ms: u64,
    pub pinned: bool,
    /// URL -> what its signature rule found, for the URLs a rule judged.
    pub verified_by: std::collections::BTreeMap<String, String>,
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

    /// Deletes expired modules, then least recently used ones while the cache is over its size limit;
    /// never a module in use (see [`Lifecycle`]).
    pub async fn sweep(&self) -> Result<SweepReport, Error> {
        let policy = SweepPolicy {
            max_bytes: self.lifecycle.max_cache_bytes,
            expiry: self.lifecycle.module_expiry,
            remove_expired: true,
            keep: self.watched.digests(),
        };
        evict(self.store.clone(), self.metrics.clone(), policy).await
    }

    /// Records that the watched WasmPlugin `plugin` names the module `digest` (replacing what it named
    /// before): the module is in use while the plugin exists.
    pub fn keep_for_plugin(&self, plugin: &str, digest: Sha256) {
        self.watched.0.lock().unwrap().insert(plugin.to_string(), digest);
    }

    /// The watched WasmPlugin `plugin` is gone: its module is in use no longer (on its account).
    pub fn release_plugin(&self, plugin: &str) {
        self.watched.0.lock().unwrap().remove(plugin);
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

    /// Re-hashes every blob and quarantines the ones that no longer match.
    pub async fn verify(&self) -> Result<(usize, Vec<Sha256>), Error> {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let (checked, bad) = tokio::task::spawn_blocking(move || store.verify_all())
            .await
            .map_err(|e| Error::Internal(format!("verify task failed: {e}")))??;
        for digest in &bad {
            tracing::error!(%digest, "verify found a corrupt blob; quarantined");
            metrics.evicted(Eviction::Corrupt);
        }
        Ok((checked, bad))
    }

    /// True when the module may be served without credentials (it was never pulled privately).
    pub fn is_public(&self, digest: &Sha256) -> bool {
        matches!(self.store.index().get_access(digest), Ok(record) if access::is_public(record.as_ref()))
    }

    /// How often the periodic sweep runs.
    pub fn purge_interval(&self) -> std::time::Duration {
        self.lifecycle.purge_interval
    }

    /// Pins (or unpins) the module a URL resolves to, or a digest; returns its digest.
    pub fn set_pinned(&self, target: PinTarget<'_>, pinned: bool) -> Result<Sha256, Error> {
        let digest = match target {
            PinTarget::Digest(d) => d,
            PinTarget::Url(url) => {
                let key = url.to_string();
                self.store
                    .index()
                    .get_ref(&key)?
                    .and_then(|r| r.digest())
                    .ok_or(Error::NotCached(key))?
            }
        };
        if self.store.set_pinned(&digest, pinned)? {
            Ok(digest)
        } else {
            Err(Error::NotCached(format!("module sha256:{digest}")))
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
            .and_then(|r| r.digest().map(|d| (d, r)))
            .filter(|(d, _)| self.store.contains(d));
        let facts = Facts {
            url: bound.map(|(digest, r)| UrlFacts {
                digest,
                manifest_digest: r.manifest_digest.as_deref().and_then(|m| m.parse().ok()),
                index_digest: r.index_digest.as_deref().and_then(|m| m.parse().ok()),
                resource: r.resource.clone(),
                judged: !judge::needs_judgement(self.policy().as_deref(), &req.url, &key, r),
            }),
        };
        let image = match &req.url {
            ModuleUrl::Oci(image) => Some(image),
            _ => None,
        };
        let ask = Ask {
            policy: req.policy,
            expected: req.expected,
            resource_name: &req.resource_name,
            resource_version: &req.resource_version,
            floating: image.is_some_and(|i| i.is_floating()),
            immutable: image.is_some_and(|i| i.digest().is_some()),
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
                    Err(Error::Store(StoreError::Corrupt { .. })) => {
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

    /// The caller's repository and credential fingerprint (`anonymous` without credentials). For an OCI
    /// request this runs the credential providers that match the image, when its pull secret has nothing for
    /// the registry.
    async fn caller(&self, req: &Request) -> Result<Caller, Error> {
        Ok(match &req.url {
            ModuleUrl::Oci(image) => {
                let oci = self.fetchers.oci();
                let keyring = oci
                    .keyring(&req.url.to_string(), image, req.pull_secret.as_ref())
                    .await?;
                Caller {
                    repository: Some(image.repository_key()),
                    fingerprint: oci.credentials(image, &keyring).map_or_else(
                        || access::ANONYMOUS.to_string(),
                        |c| hex::encode(c.fingerprint(&self.salt)),
                    ),
                    keyring,
                }
            }
            // An http(s) URL is its own scope: what its userinfo credentials fetched is private to them.
            ModuleUrl::Http(url) => Caller {
                repository: Some(req.url.to_string()),
                fingerprint: if has_credentials(url) {
                    let credentials = Credentials::new(url.username(), url.password().unwrap_or(""));
                    hex::encode(credentials.fingerprint(&self.salt))
                } else {
                    access::ANONYMOUS.to_string()
                },
                keyring: Keyring::default(),
            },
            ModuleUrl::File(_) => Caller {
                repository: None,
                fingerprint: access::ANONYMOUS.to_string(),
                keyring: Keyring::default(),
            },
        })
    }

    /// Applies the access check to a cached module; asks the registry when the caller's credentials
    /// are not proven yet, and returns its verdict as the error when it says no.
    async fn admit(
        &self,
        req: &Request,
        key: &str,
        caller: &LazyCaller<'_>,
        digest: Sha256,
    ) -> Result<Admission, Error> {
        let record = self.store.index().get_access(&digest)?;
        if access::is_public(record.as_ref()) {
            return Ok(Admission::Serve);
        }
        let caller = caller.get().await?;
        match access::judge(record.as_ref(), caller.repository.as_deref(), &caller.fingerprint) {
            Verdict::Allowed => Ok(Admission::Serve),
            Verdict::NotVisible => Ok(Admission::Refetch),
            Verdict::CheckRegistry => {
                let ModuleUrl::Oci(image) = &req.url else {
                    return Ok(Admission::Refetch);
                };
                self.fetchers.oci().check_access(key, image, &caller.keyring).await?;
                tracing::info!(url = %key, "credentials proven at the registry for a cached private module");
                let anonymous = caller.fingerprint == access::ANONYMOUS;
                let updated = access::prove(record, caller.repository.as_deref(), &caller.fingerprint, anonymous);
                if let Err(e) = self.store.index().put_access(&digest, &updated) {
                    tracing::warn!(cause = %e, "could not record proven credentials");
                }
                Ok(Admission::Serve)
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

    async fn fetch_and_open(
        &self,
        req: &Request,
        key: &str,
        caller: &LazyCaller<'_>,
        conditions: Revalidation,
        outcome: Outcome,
    ) -> Result<(Module, OpenBlob), Error> {
        let caller = caller.get().await?;
        let mut conditions = conditions;
        for _ in 0..REMOVED_RETRIES {
            let landed = self.flight(req, key, caller, conditions).await.map_err(unshare)?;
            match self.open(landed.digest).await {
                Ok(blob) => {
                    let mut module = self.module(
                        req,
                        landed.digest,
                        landed.manifest_digest,
                        landed.fetched_at_ms,
                        &blob,
                        outcome,
                    );
                    module.verified_by = landed.verification.as_ref().map(Verification::describe);
                    return Ok((module, blob));
                }
                // Removed (rm, eviction) between landing and opening: fetch it again.
                Err(Error::Store(StoreError::NotFound(_))) => {
                    tracing::debug!(url = %key, "module removed before it could be opened; fetching again");
                    conditions = Revalidation::default();
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Removed(key.to_string()))
    }

    /// Joins the running fetch of this URL (for the same expected digest and credentials), or starts one.
    fn flight(&self, req: &Request, key: &str, caller: &Caller, conditions: Revalidation) -> Flight {
        let flight_key = format!("{key}\n{:?}\n{}", req.expected, caller.fingerprint);
        let mut flights = self.flights.lock().unwrap();
        if let Some((running, _)) = flights.get(&flight_key) {
            return running.clone();
        }
        let downloaded = Arc::new(AtomicU64::new(0));
        let job = FetchJob {
            store: self.store.clone(),
            fetchers: self.fetchers.clone(),
            url: req.url.clone(),
            key: key.to_string(),
            expected: req.expected,
            conditions,
            caller: caller.clone(),
            downloaded: downloaded.clone(),
            metrics: self.metrics.clone(),
            limit: self.lifecycle.max_cache_bytes.map(|max| SweepPolicy {
                max_bytes: Some(max),
                expiry: self.lifecycle.module_expiry,
                remove_expired: false,
                keep: HashSet::new(),
            }),
            watched: self.watched.clone(),
            resource: (!req.resource_name.is_empty() || !req.resource_version.is_empty())
                .then(|| (req.resource_name.clone(), req.resource_version.clone())),
            policy: self.policy(),
        };
        let registry = self.flights.clone();
        let cleanup_key = flight_key.clone();
        let metrics = self.metrics.clone();
        let scheme = req.url.scheme();
        let handle = self.tasks.spawn(async move {
            let _inflight = metrics.fetch_started();
            let started = std::time::Instant::now();
            let result = job.run().await;
            let outcome = match &result {
                Ok(_) => "success",
                Err(e) => e.reason(),
            };
            metrics.fetched(scheme, outcome, started.elapsed());
            let result = result.map_err(Arc::new);
            registry.lock().unwrap().remove(&cleanup_key);
            result
        });
        let flight = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(Arc::new(Error::Internal(format!("fetch task failed: {e}")))))
        }
        .boxed()
        .shared();
        flights.insert(flight_key, (flight.clone(), downloaded));
        flight
    }

    /// Bytes downloaded so far by a running fetch of `url` (the largest, when several run).
    pub fn progress(&self, url: &ModuleUrl) -> Option<u64> {
        let prefix = format!("{url}\n");
        let flights = self.flights.lock().unwrap();
        flights
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, (_, bytes))| bytes.load(Ordering::Relaxed))
            .max()
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
                fetched_at_ms: e.refs.iter().map(|(_, r)| r.fetched_at_ms).max().unwrap_or(0),
                verified_by: e
                    .refs
                    .iter()
                    .filter_map(|(url, r)| Some((url.clone(), r.verification.as_ref()?.describe())))
                    .collect(),
                urls: e.refs.into_iter().map(|(url, _)| url).collect(),
                path: e.path,
                last_used_ms: e.record.as_ref().map_or(0, |r| r.last_used_ms),
                pinned: e.record.is_some_and(|r| r.pinned),
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
            if self.store.index().refs_to(&digest)?.is_empty() && self.store.delete(&digest)?.is_some() {
                self.metrics.evicted(Eviction::Removed);
                removed.digests.push(digest);
            }
        }
        Ok(removed)
    }

    /// Deletes a module and every URL that leads to it.
    pub fn remove_digest(&self, digest: &Sha256) -> Result<Removed, Error> {
        match self.store.delete(digest)? {
            Some(urls) => {
                self.metrics.evicted(Eviction::Removed);
                Ok(Removed {
                    digests: vec![*digest],
                    urls,
                })
            }
            None => Err(Error::NotCached(format!("module sha256:{digest}"))),
        }
    }
}

/// What `pin` and `unpin` name.
pub enum PinTarget<'a> {
    Url(&'a ModuleUrl),
    Digest(Sha256),
}

/// Runs a sweep off the async threads, and counts and logs what it did.
async fn evict(store: Arc<Store>, metrics: Arc<Metrics>, policy: SweepPolicy) -> Result<SweepReport, Error> {
    let limit = policy.max_bytes;
    let report = tokio::task::spawn_blocking(move || store.sweep(&policy))
        .await
        .map_err(|e| Error::Internal(format!("sweep task failed: {e}")))??;
    for (digest, size, why, refs) in &report.removed {
        metrics.evicted(Eviction::from(*why));
        tracing::info!(%digest, bytes = size, reason = ?why, urls = ?refs, "evicted module");
    }
    if report.over_limit {
        metrics.over_limit();
        tracing::warn!(
            bytes = report.bytes_after,
            ?limit,
            "cache stays above its size limit: every remaining module is in use (streamed, pinned, leased or watched)"
        );
    }
    Ok(report)
}

/// A registry's refusal of the caller's credentials: never answered with a cached copy.
fn is_access_verdict(e: &Error) -> bool {
    matches!(
        e,
        Error::Fetch(FetchError::Unauthenticated { .. } | FetchError::Forbidden { .. })
    )
}

/// The digests an image's signatures may be for: the index the reference named, and the platform manifest.
fn image_digests(meta: &Meta) -> Vec<Sha256> {
    meta.index_digest.into_iter().chain(meta.manifest_digest).collect()
}

/// The sha256 and sha512 of a downloaded payload as it came (before any unwrapping): what a detached
/// signature of an http(s) file covers.
async fn payload_digests(raw: &Ingest) -> Result<judge::Signed, Error> {
    let sha256 = raw.sha256();
    let path = raw.path().to_path_buf();
    let sha512 = tokio::task::spawn_blocking(move || crate::digest::sha512_of_file(&path))
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
        .map_err(|e| Error::Internal(format!("hashing the downloaded payload: {e}")))?;
    Ok(judge::Signed::Blob { sha256, sha512 })
}

/// What the URL's recorded verdict says, for ModuleInfo.
fn verified_by(record: Option<&RefRecord>) -> Option<String> {
    record.and_then(|r| r.verification.as_ref()).map(Verification::describe)
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
    conditions: Revalidation,
    caller: Caller,
    /// Shared with [`Cache::progress`].
    downloaded: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// The size limit to enforce once the new module is in.
    limit: Option<SweepPolicy>,
    watched: Watched,
    resource: Option<(String, String)>,
    /// The signature policy in force when the fetch started.
    policy: Option<Arc<Policy>>,
}

impl FetchJob {
    async fn run(self) -> Result<Landed, Error> {
        let started = std::time::Instant::now();
        let mut conditions = Conditions {
            etag: self.conditions.etag.clone(),
            known_digest: self.conditions.known_digest,
        };
        let mut use_held = true;
        let landed = loop {
            match self.attempt(&conditions, use_held).await? {
                Some(found) => break found,
                // What upstream's answer pointed at was removed meanwhile (rm, eviction): ask again for
                // the bytes. Without conditions or held content the answer always carries them.
                None => {
                    tracing::debug!(url = %self.key, "cached copy vanished during the fetch; downloading");
                    conditions = Conditions::default();
                    use_held = false;
                }
            }
        };
        if let Some(policy) = self
            .limit
            .as_ref()
            .filter(|p| p.max_bytes.is_some_and(|max| self.store.usage().1 > max))
        {
            // The new module is held by `landed` until its callers have it.
            let policy = SweepPolicy {
                keep: self.watched.digests(),
                ..policy.clone()
            };
            if let Err(e) = evict(self.store.clone(), self.metrics.clone(), policy).await {
                tracing::warn!(cause = %e, "size-limit eviction failed");
            }
        }
        tracing::info!(url = %self.key, digest = %landed.digest, elapsed_ms = started.elapsed().as_millis() as u64, "module fetched");
        Ok(landed)
    }

    /// One fetch from upstream and the binding of the URL to what it brought. `Ok(None)` when upstream
    /// pointed at a cached copy (not modified, or held content) that is no longer there.
    async fn attempt(&self, conditions: &Conditions, use_held: bool) -> Result<Option<Landed>, Error> {
        let mut raw = self.store.ingest()?;
        let mut sink = Counted {
            ingest: &mut raw,
            bytes: &self.downloaded,
        };
        let held = HeldContent {
            store: &self.store,
            caller: &self.caller,
        };
        let held: &dyn Held = if use_held { &held } else { &NothingHeld };
        let fetched = self
            .fetchers
            .fetch(&self.url, conditions, &self.caller.keyring, held, &mut sink)
            .await;
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(url = %self.key, cause = %e, "fetch failed");
                return Err(e.into());
            }
        };
        let now = now_ms();
        let judge = judge::Judge {
            policy: self.policy.clone(),
            fetchers: &self.fetchers,
            url: &self.url,
            key: &self.key,
            keyring: &self.caller.keyring,
            metrics: &self.metrics,
        };
        let landed = match fetched {
            Fetched::NotModified(meta) => {
                let record = self.store.index().get_ref(&self.key)?;
                let Some((mut record, digest)) = record
                    .and_then(|r| r.digest().map(|d| (r, d)))
                    .filter(|(_, d)| self.store.contains(d))
                else {
                    return Ok(None);
                };
                if judge::needs_judgement(self.policy.as_deref(), &self.url, &self.key, &record) {
                    let signed: Vec<Sha256> = [&record.index_digest, &record.manifest_digest]
                        .into_iter()
                        .filter_map(|d| d.as_deref().and_then(|d| d.parse().ok()))
                        .collect();
                    if signed.is_empty() {
                        // Not modified, but what a signature covers (the payload) was not kept: download it.
                        return Ok(None);
                    }
                    record.verification = judge.judge(judge::Signed::Image(signed)).await?;
                }
                record.resource = self.resource.clone();
                record.fetched_at_ms = now;
                self.store.index().put_ref(&self.key, &record)?;
                self.record_access(digest, meta.authenticated)?;
                self.store.index().flush().await?;
                let manifest_digest = record.manifest_digest.as_deref().and_then(|m| m.parse().ok());
                Landed {
                    digest,
                    manifest_digest,
                    fetched_at_ms: now,
                    _hold: Arc::new(self.store.hold(digest)),
                    verification: record.verification,
                }
            }
            Fetched::Held { meta, module } => {
                if !self.store.contains(&module) {
                    return Ok(None);
                }
                if let Some(expected) = self.expected {
                    if ![Some(module), meta.manifest_digest, meta.index_digest].contains(&Some(expected)) {
                        return Err(Error::ChecksumMismatch {
                            url: self.key.clone(),
                            expected,
                            found: candidates(module, &meta),
                        });
                    }
                }
                tracing::debug!(url = %self.key, %module, "upstream named a module already cached; nothing downloaded");
                let verification = judge.judge(judge::Signed::Image(image_digests(&meta))).await?;
                self.bind(module, false, &meta, now, verification).await?
            }
            Fetched::Complete(meta) => {
                // An OCI request may name the image manifest or index instead of the module.
                let names_image = self.expected.is_some()
                    && (self.expected == meta.manifest_digest || self.expected == meta.index_digest);
                let expected_module = if names_image { None } else { self.expected };
                // Judged before anything is committed: a refused module is never stored.
                let verification = match &self.url {
                    ModuleUrl::Oci(_) => judge.judge(judge::Signed::Image(image_digests(&meta))).await?,
                    _ if judge.applies() => judge.judge(payload_digests(&raw).await?).await?,
                    _ => None,
                };
                let store = self.store.clone();
                let max_bytes = self.fetchers.max_bytes();
                let key = self.key.clone();
                let pick = meta.pick;
                let committed = tokio::task::spawn_blocking(move || {
                    finish_ingest(&store, raw, &key, expected_module, max_bytes, pick)
                })
                .await
                .map_err(|e| Error::Internal(format!("commit task failed: {e}")))?;
                let committed = committed.map_err(|e| match e {
                    Error::ChecksumMismatch { url, expected, found } if meta.manifest_digest.is_some() => {
                        let found = found
                            .trim_start_matches("sha256:")
                            .parse()
                            .map_or(found, |module| candidates(module, &meta));
                        Error::ChecksumMismatch { url, expected, found }
                    }
                    other => other,
                })?;
                self.bind(committed.digest, committed.created, &meta, now, verification)
                    .await?
            }
        };
        Ok(Some(landed))
    }

    /// Binds the URL to a module its upstream just led to, records who may be served it, and makes both
    /// durable before anyone is told. When that fails, a blob this fetch created is deleted again: a failed
    /// fetch leaves no blob that no URL leads to.
    async fn bind(
        &self,
        digest: Sha256,
        created: bool,
        meta: &Meta,
        now: u64,
        verification: Option<Verification>,
    ) -> Result<Landed, Error> {
        let record = RefRecord {
            digest: digest.to_string(),
            manifest_digest: meta.manifest_digest.map(|d| d.prefixed()),
            index_digest: meta.index_digest.map(|d| d.prefixed()),
            resource: self.resource.clone(),
            etag: meta.etag.clone(),
            fetched_at_ms: now,
            verification: verification.clone(),
        };
        let hold = Arc::new(self.store.hold(digest));
        let index = self.store.index();
        let bound = async {
            // The manifests first: the registry endpoint serves them as soon as the reference is bound.
            for document in &meta.documents {
                index.put_document(&document.digest, &document.media_type, &document.body)?;
            }
            index.put_ref(&self.key, &record)?;
            self.record_access(digest, meta.authenticated)?;
            index.flush().await
        };
        if let Err(e) = bound.await {
            if created {
                self.store.discard(&digest);
            }
            return Err(e.into());
        }
        Ok(Landed {
            digest,
            manifest_digest: meta.manifest_digest,
            fetched_at_ms: now,
            _hold: hold,
            verification,
        })
    }

    /// A successful fetch proves the caller's credentials for the module, or makes it public when no
    /// credentials were needed. Not optional: without its record a private module would count as public.
    fn record_access(&self, digest: Sha256, authenticated: bool) -> Result<(), StoreError> {
        let index = self.store.index();
        let existing = index.get_access(&digest)?;
        if existing.is_none() && !authenticated {
            return Ok(()); // No record means public.
        }
        let updated = access::prove(
            existing,
            self.caller.repository.as_deref(),
            &self.caller.fingerprint,
            !authenticated,
        );
        index.put_access(&digest, &updated)
    }
}

/// What a download hashed to, for a checksum mismatch: the module's digest, and for OCI also the image
/// manifest's and index's, any of which the request could have named.
fn candidates(module: Sha256, meta: &Meta) -> String {
    let mut found = format!("module {}", module.prefixed());
    if let Some(m) = meta.manifest_digest {
        found.push_str(&format!(", image manifest {}", m.prefixed()));
    }
    if let Some(i) = meta.index_digest {
        found.push_str(&format!(", index {}", i.prefixed()));
    }
    found
}

/// The cache's answer to an OCI fetcher asking what it need not download: modules on disk that the
/// caller may be served (see [`access::judge`]). A private module is not offered to a caller whose
/// credentials are unproven for this repository, however its manifest names it: knowing a digest is
/// not access to the bytes, so such a caller downloads them from its own registry.
struct HeldContent<'a> {
    store: &'a Store,
    caller: &'a Caller,
}

impl HeldContent<'_> {
    fn servable(&self, digest: &Sha256) -> bool {
        self.store.contains(digest)
            && matches!(
                self.store.index().get_access(digest),
                Ok(record) if access::judge(record.as_ref(), self.caller.repository.as_deref(), &self.caller.fingerprint)
                    == Verdict::Allowed
            )
    }
}

impl Held for HeldContent<'_> {
    fn image(&self, digest: &Sha256) -> Option<HeldImage> {
        let wanted = digest.prefixed();
        let refs = match self.store.index().refs() {
            Ok(refs) => refs,
            Err(e) => {
                tracing::warn!(cause = %e, "could not read the index; downloading");
                return None;
            }
        };
        refs.into_iter()
            .filter(|(_, r)| {
                r.manifest_digest.as_deref() == Some(&wanted) || r.index_digest.as_deref() == Some(&wanted)
            })
            .filter_map(|(_, r)| {
                Some(HeldImage {
                    module: r.digest()?,
                    manifest: r.manifest_digest.as_deref()?.parse().ok()?,
                })
            })
            .find(|h| self.servable(&h.module))
    }

    fn module(&self, digest: &Sha256) -> bool {
        self.servable(digest)
    }
}

/// Unwraps the downloaded payload when it is an archive, checks the Wasm header, and commits.
fn finish_ingest(
    store: &Store,
    raw: Ingest,
    url: &str,
    expected: Option<Sha256>,
    max_bytes: u64,
    pick: unbox::Pick,
) -> Result<Committed, Error> {
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
            unbox::unwrap(raw.path(), &mut out, max_bytes, pick).map_err(unbox_err)?;
            out.flush().map_err(|e| Error::Fetch(FetchError::sink(url)(e)))?;
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
        Ok(c) => Ok(c),
        Err(StoreError::DigestMismatch { expected, actual }) => Err(Error::ChecksumMismatch {
            url: url.to_string(),
            expected,
            found: actual.prefixed(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The fetch sink: an ingest, with a running count of bytes for progress reports.
struct Counted<'a> {
    ingest: &'a mut Ingest,
    bytes: &'a AtomicU64,
}

impl Sink for Counted<'_> {
    fn reset(&mut self) -> std::io::Result<()> {
        self.bytes.store(0, Ordering::Relaxed);
        self.ingest.reset()
    }

    fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.ingest.write_all(chunk)?;
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn sha256(&self) -> Option<Sha256> {
        Some(self.ingest.sha256())
    }
}
