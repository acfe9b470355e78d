//! One upstream fetch, run as an owned task: the fetchers bring the bytes, `verify` checks them, the store
//! commits them, and the URL is bound to the module only then.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::access;
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::{Conditions, Fetched, Fetchers, Held, Meta, NothingHeld, Sink};
use crate::metrics::Metrics;
use crate::signature::Policy;
use crate::source::ModuleUrl;
use crate::store::{now_ms, Hold, Ingest, RefRecord, Store, StoreError, SweepPolicy, Verification};

/// What a finished upstream fetch left in the store.
#[derive(Clone, Debug)]
pub(super) struct Landed {
    pub(super) digest: Sha256,
    pub(super) manifest_digest: Option<Sha256>,
    pub(super) fetched_at_ms: u64,
    /// Keeps the module from eviction until every caller waiting on this fetch has opened it (each then
    /// holds it through its own reader): the eviction that makes room for it must not take it.
    pub(super) _hold: Arc<Hold>,
    pub(super) verification: Option<Verification>,
}

/// One upstream fetch, run as an owned task.
pub(super) struct FetchJob {
    pub(super) store: Arc<Store>,
    pub(super) fetchers: Arc<Fetchers>,
    pub(super) url: ModuleUrl,
    pub(super) key: String,
    pub(super) expected: Option<Sha256>,
    pub(super) conditions: Revalidation,
    pub(super) caller: Caller,
    /// Shared with [`Cache::progress`].
    pub(super) downloaded: Arc<AtomicU64>,
    pub(super) metrics: Arc<Metrics>,
    /// The size limit to enforce once the new module is in.
    pub(super) limit: Option<SweepPolicy>,
    pub(super) watched: Watched,
    pub(super) resource: Option<(String, String)>,
    /// The signature policy in force when the fetch started.
    pub(super) policy: Option<Arc<Policy>>,
}

impl FetchJob {
    pub(super) async fn run(self) -> Result<Landed, Error> {
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
    pub(super) async fn attempt(&self, conditions: &Conditions, use_held: bool) -> Result<Option<Landed>, Error> {
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
                let Some(mut record) = record.filter(|r| self.store.contains(&r.digest)) else {
                    return Ok(None);
                };
                let digest = record.digest;
                if judge::needs_judgement(self.policy.as_deref(), &self.url, &self.key, &record) {
                    let signed: Vec<Sha256> = [&record.index_digest, &record.manifest_digest]
                        .into_iter()
                        .flatten()
                        .copied()
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
                let manifest_digest = record.manifest_digest;
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
                let (pick, image) = (meta.pick, (meta.manifest_digest, meta.index_digest));
                let committed = tokio::task::spawn_blocking(move || {
                    finish_ingest(&store, raw, &key, expected_module, max_bytes, pick, image)
                })
                .await
                .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
                self.bind(committed.digest, committed.created, &meta, now, verification)
                    .await?
            }
        };
        Ok(Some(landed))
    }

    /// Binds the URL to a module its upstream just led to, records who may be served it, and makes both
    /// durable before anyone is told. When that fails, a blob this fetch created is deleted again: a failed
    /// fetch leaves no blob that no URL leads to.
    pub(super) async fn bind(
        &self,
        digest: Sha256,
        created: bool,
        meta: &Meta,
        now: u64,
        verification: Option<Verification>,
    ) -> Result<Landed, Error> {
        let record = RefRecord {
            digest,
            manifest_digest: meta.manifest_digest,
            index_digest: meta.index_digest,
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
    pub(super) fn record_access(&self, digest: Sha256, authenticated: bool) -> Result<(), StoreError> {
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

/// The fetch sink: an ingest, with a running count of bytes for progress reports.
pub(super) struct Counted<'a> {
    pub(super) ingest: &'a mut Ingest,
    pub(super) bytes: &'a AtomicU64,
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
