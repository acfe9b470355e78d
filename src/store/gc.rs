//! Deleting modules: expiry of unused ones, least-recently-used eviction down to a size limit, and a
//! full re-hash of every blob. A blob in use is never deleted: held open (a stream in progress), pinned,
//! leased (its path was handed out and the lease has not ended), or kept by the caller (a module a
//! watched WasmPlugin names). Anything else may go: least recently used first while the cache is over
//! the limit, and once unused for the expiry. When the limit can't be met without deleting a blob in
//! use, it stays and the report says so.

use std::collections::HashSet;
use std::time::Duration;

use super::{now_ms, Store, StoreError};
use crate::digest::{self, Sha256};

/// What a sweep may delete.
#[derive(Clone, Debug, Default)]
pub struct SweepPolicy {
    /// Bring the cache under this many bytes, least recently used first.
    pub max_bytes: Option<u64>,
    /// Blobs unused for this long have expired.
    pub expiry: Duration,
    /// Also delete every expired blob (the periodic sweep); `false` deletes only what the size limit
    /// requires (after a commit).
    pub remove_expired: bool,
    /// In use for reasons the store does not know of (modules named by watched WasmPlugins).
    pub keep: HashSet<Sha256>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    Expired,
    SizeLimit,
}

#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Deleted blobs with their size, why, and the references dropped with them.
    pub removed: Vec<(Sha256, u64, Evicted, Vec<String>)>,
    /// The cache is still above the size limit: every remaining blob was in use.
    pub over_limit: bool,
    pub bytes_after: u64,
}

struct Candidate {
    digest: Sha256,
    size: u64,
    last_used_ms: u64,
    in_use: bool,
}

impl Store {
    /// True when the blob may not be deleted now: held open, pinned, leased, or kept by `keep`.
    fn in_use(&self, digest: &Sha256, keep: &HashSet<Sha256>, now: u64) -> bool {
        keep.contains(digest)
            || self.is_held(digest)
            || matches!(self.index.get_blob(digest), Ok(Some(r)) if r.pinned || r.leased_until_ms > now)
    }

    /// Deletes what `policy` allows, in one pass.
    pub fn sweep(&self, policy: &SweepPolicy) -> Result<SweepReport, StoreError> {
        let now = now_ms();
        let window = policy.expiry.as_millis() as u64;
        let sizes: Vec<(Sha256, u64)> = self.sizes.lock().unwrap().iter().map(|(d, s)| (*d, *s)).collect();
        let mut candidates: Vec<Candidate> = sizes
            .into_iter()
            .map(|(digest, size)| Candidate {
                digest,
                size,
                last_used_ms: self.last_used_ms(&digest),
                in_use: self.in_use(&digest, &policy.keep, now),
            })
            .collect();
        candidates.sort_by_key(|c| (c.last_used_ms, c.digest));
        let mut report = SweepReport::default();
        let mut total: u64 = candidates.iter().map(|c| c.size).sum();
        for c in candidates.iter().filter(|c| !c.in_use) {
            let expired = now.saturating_sub(c.last_used_ms) >= window;
            let over = policy.max_bytes.is_some_and(|max| total > max);
            let why = if policy.remove_expired && expired {
                Evicted::Expired
            } else if over {
                Evicted::SizeLimit
            } else {
                continue;
            };
            // A reader may have opened it since the candidates were taken.
            if self.is_held(&c.digest) {
                continue;
            }
            if let Some(refs) = self.delete(&c.digest)? {
                total = total.saturating_sub(c.size);
                report.removed.push((c.digest, c.size, why, refs));
            }
        }
        report.over_limit = policy.max_bytes.is_some_and(|max| total > max);
        report.bytes_after = total;
        self.prune_documents()?;
        Ok(report)
    }

    /// Drops kept manifests that no reference leads through any more.
    fn prune_documents(&self) -> Result<(), StoreError> {
        let keep: HashSet<Sha256> = self
            .index
            .refs()?
            .into_iter()
            .flat_map(|(_, r)| [r.manifest_digest, r.index_digest])
            .flatten()
            .collect();
        let pruned = self.index.prune_documents(&keep)?;
        if pruned > 0 {
            tracing::debug!(pruned, "dropped manifests no reference leads through");
        }
        Ok(())
    }

    /// Re-hashes every blob, whatever was verified before; a blob that no longer matches its name is
    /// quarantined with its index entries. Returns how many were checked and the digests quarantined.
    pub fn verify_all(&self) -> Result<(usize, Vec<Sha256>), StoreError> {
        let digests: Vec<Sha256> = self.sizes.lock().unwrap().keys().copied().collect();
        let mut bad = Vec::new();
        for d in &digests {
            let (file, _, path) = match self.open_file(d) {
                Ok(opened) => opened,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let (actual, _) = digest::hash_reader(file).map_err(StoreError::io(&path))?;
            if actual != *d {
                self.quarantine(d);
                bad.push(*d);
            }
        }
        Ok((digests.len(), bad))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn put(store: &Store, bytes: &[u8]) -> Sha256 {
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(bytes).unwrap();
        store.commit(ingest, None).unwrap().digest
    }

    fn age(store: &Store, digest: &Sha256, ago_ms: u64) {
        store.last_used.lock().unwrap().insert(*digest, now_ms() - ago_ms);
        let mut r = store.index.get_blob(digest).unwrap().unwrap();
        r.last_used_ms = now_ms() - ago_ms;
        r.created_ms = r.last_used_ms;
        store.index.put_blob(digest, &r).unwrap();
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn size_limit_evicts_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = (put(&store, &[1; 100]), put(&store, &[2; 100]), put(&store, &[3; 100]));
        age(&store, &a, 3 * 3_600_000);
        age(&store, &b, 5 * 3_600_000);
        age(&store, &c, 4 * 3_600_000);
        let policy = SweepPolicy {
            max_bytes: Some(150),
            expiry: 24 * HOUR,
            ..Default::default()
        };
        let report = store.sweep(&policy).unwrap();
        let removed: Vec<Sha256> = report.removed.iter().map(|r| r.0).collect();
        assert_eq!(removed, vec![b, c]);
        assert!(store.contains(&a) && !report.over_limit);
    }

    #[test]
    fn recent_use_alone_does_not_keep_a_module_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (older, newer) = (put(&store, &[1; 100]), put(&store, &[2; 100]));
        age(&store, &older, 1_000);
        let report = store
            .sweep(&SweepPolicy {
                max_bytes: Some(150),
                expiry: 24 * HOUR,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(report.removed.len(), 1);
        assert_eq!((report.removed[0].0, report.removed[0].2), (older, Evicted::SizeLimit));
        assert!(store.contains(&newer) && !report.over_limit);
    }

    #[test]
    fn held_pinned_leased_and_kept_modules_survive_the_limit_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (held, pinned, leased, kept) = (
            put(&store, &[1; 100]),
            put(&store, &[2; 100]),
            put(&store, &[3; 100]),
            put(&store, &[4; 100]),
        );
        for d in [held, pinned, leased, kept] {
            age(&store, &d, 5 * 3_600_000);
        }
        store.set_pinned(&pinned, true).unwrap();
        store.lease(&leased, now_ms() + 60_000).unwrap();
        let _reading = store.hold(held);
        let report = store
            .sweep(&SweepPolicy {
                max_bytes: Some(1),
                expiry: HOUR,
                remove_expired: true,
                keep: [kept].into_iter().collect(),
            })
            .unwrap();
        assert!(report.removed.is_empty());
        assert!(report.over_limit);
        assert_eq!(store.usage().0, 4);
    }

    #[test]
    fn an_ended_lease_no_longer_keeps_a_module() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let leased = put(&store, &[1; 100]);
        store.lease(&leased, now_ms() - 1).unwrap();
        let report = store
            .sweep(&SweepPolicy {
                max_bytes: Some(1),
                expiry: HOUR,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(report.removed.len(), 1);
    }

    #[test]
    fn expiry_deletes_only_unused_modules_with_their_references() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (old, fresh) = (put(&store, b"old"), put(&store, b"fresh"));
        let record = super::super::tests::record(old);
        store.index.put_ref("oci://r/old:v1", &record).unwrap();
        age(&store, &old, 2 * 3_600_000);
        let report = store
            .sweep(&SweepPolicy {
                max_bytes: None,
                expiry: HOUR,
                remove_expired: true,
                keep: HashSet::new(),
            })
            .unwrap();
        assert_eq!(report.removed.len(), 1);
        assert_eq!(report.removed[0].0, old);
        assert_eq!(report.removed[0].3, vec!["oci://r/old:v1".to_string()]);
        assert!(store.index.get_ref("oci://r/old:v1").unwrap().is_none());
        assert!(store.contains(&fresh));
        assert_eq!(store.usage(), (1, 5));
    }

    #[test]
    fn verify_all_quarantines_altered_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (good, bad) = (put(&store, b"good"), put(&store, b"bad"));
        std::fs::write(store.blob_path(&bad), b"tampered").unwrap();
        let (checked, quarantined) = store.verify_all().unwrap();
        assert_eq!((checked, quarantined), (2, vec![bad]));
        assert!(store.contains(&good) && !store.contains(&bad));
    }
}
