//! The operator's verbs on the cache: list, remove, pin, verify, and the size and age sweep.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::digest::Sha256;
use crate::error::Error;
use crate::metrics::{Eviction, Metrics};
use crate::source::ModuleUrl;
use crate::store::{Store, SweepPolicy, SweepReport};

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

impl Cache {
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

    /// Pins (or unpins) the module a URL resolves to, or a digest; returns its digest.
    pub fn set_pinned(&self, target: PinTarget<'_>, pinned: bool) -> Result<Sha256, Error> {
        let digest = match target {
            PinTarget::Digest(d) => d,
            PinTarget::Url(url) => {
                let key = url.to_string();
                self.store
                    .index()
                    .get_ref(&key)?
                    .map(|r| r.digest)
                    .ok_or(Error::NotCached(key))?
            }
        };
        if self.store.set_pinned(&digest, pinned)? {
            Ok(digest)
        } else {
            Err(Error::NotCached(format!("module sha256:{digest}")))
        }
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
        let digest = record.digest;
        if self.store.index().refs_to(&digest)?.is_empty() && self.store.delete(&digest)?.is_some() {
            self.metrics.evicted(Eviction::Removed);
            removed.digests.push(digest);
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
pub(super) async fn evict(store: Arc<Store>, metrics: Arc<Metrics>, policy: SweepPolicy) -> Result<SweepReport, Error> {
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
