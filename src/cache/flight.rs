//! Single flight: one upstream fetch per URL, expected digest and credentials at a time, shared by every
//! caller that asks meanwhile, run as a task the cache owns.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::*;
use crate::digest::Sha256;
use crate::error::Error;
use crate::source::ModuleUrl;
use crate::store::{OpenBlob, StoreError, SweepPolicy, Verification};

/// The conditional parts of a refresh.
#[derive(Clone, Debug, Default)]
pub(super) struct Revalidation {
    pub(super) etag: Option<String>,
    pub(super) known_digest: Option<Sha256>,
}

/// Fetches started again for one request when the module keeps being removed before it is opened.
pub(super) const REMOVED_RETRIES: usize = 3;

pub(super) type FlightResult = Result<Landed, Arc<Error>>;
pub(super) type Flight = Shared<BoxFuture<'static, FlightResult>>;
/// A fetch in progress and its count of bytes downloaded so far.
pub(super) type RunningFetch = (Flight, Arc<AtomicU64>);

impl Cache {
    pub(super) async fn fetch_and_open(
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
    pub(super) fn flight(&self, req: &Request, key: &str, caller: &Caller, conditions: Revalidation) -> Flight {
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
}

/// Turns a shared flight error back into an owned one, keeping its gRPC code and message.
pub(super) fn unshare(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|shared| Error::Shared {
        code: shared.code(),
        reason: shared.failure(),
        message: shared.to_string(),
    })
}
