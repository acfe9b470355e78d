//! The sled index: what each reference resolves to, and what is known of each blob.
//!
//! Trees: `refs` maps an opaque reference (the cache uses credential-free URLs) to a [`RefRecord`];
//! `blobs` maps a hex digest to a [`BlobRecord`]; `access` maps a hex digest to an [`AccessRecord`];
//! `meta` holds the index's own settings (the fingerprint salt). Records are JSON so that later fields can be added
//! without a migration. The blob files are the truth: a record without a file is ignored and repaired.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::digest::Sha256;

/// What a reference resolved to at its last successful fetch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefRecord {
    /// The module (kept as bare hex).
    #[serde(with = "crate::digest::serde_form::hex")]
    pub digest: Sha256,
    /// The manifest the module came from, when there was one (kept as `sha256:<hex>`).
    #[serde(
        default,
        with = "crate::digest::serde_form::prefixed_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub manifest_digest: Option<Sha256>,
    /// The index the manifest was chosen from, when there was one (kept as `sha256:<hex>`).
    #[serde(
        default,
        with = "crate::digest::serde_form::prefixed_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub index_digest: Option<Sha256>,
    /// `(resource_name, resource_version)` of the request that last fetched it, for the Always policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<(String, String)>,
    /// Upstream validator (HTTP ETag) for conditional re-checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub fetched_at_ms: u64,
    /// How a signature policy judged the binding, when a rule applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// A signature policy's verdict on a URL's module, recorded with the binding.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    /// Fingerprint of the policy that judged it: another one judges again.
    pub policy: String,
    pub rule: String,
    /// False when the rule only warns and the module did not verify.
    pub verified: bool,
    /// Who signed it (verified), or why it did not verify (warned).
    pub detail: String,
}

impl Verification {
    /// `rule NAME: DETAIL`, or `rule NAME (warn): not verified: DETAIL`, for ModuleInfo, `ls` and logs.
    pub fn describe(&self) -> String {
        if self.verified {
            format!("rule {}: {}", self.rule, self.detail)
        } else {
            format!("rule {} (warn): not verified: {}", self.rule, self.detail)
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: u64,
    pub created_ms: u64,
    pub last_used_ms: u64,
    /// Never evicted while pinned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// In use until then (unix ms): Resolve handed out the blob's path, and a proxy may be reading it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leased_until_ms: u64,
    /// Not a module: another blob of an image (a config, an archive layer) kept for the registry endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub artifact: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Who may be served a blob: anyone (it was pulled anonymously), or the holders of credentials proven
/// per repository. Only salted fingerprints are kept, never a credential.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessRecord {
    pub public: bool,
    /// `registry/repository` -> hex fingerprints of credentials that pulled or were checked there.
    #[serde(default)]
    pub proven: std::collections::BTreeMap<String, Vec<String>>,
}

/// The sled trees of one open database.
struct Trees {
    db: sled::Db,
    refs: sled::Tree,
    blobs: sled::Tree,
    access: sled::Tree,
    meta: sled::Tree,
    documents: sled::Tree,
}

impl Trees {
    fn open(dir: &Path) -> sled::Result<Trees> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Trees {
            refs: db.open_tree("refs")?,
            blobs: db.open_tree("blobs")?,
            access: db.open_tree("access")?,
            meta: db.open_tree("meta")?,
            documents: db.open_tree("documents")?,
            db,
        })
    }
}

/// Why the index stopped working.
#[derive(Clone, Debug)]
pub struct Failure {
    pub cause: String,
    /// The disk (or a quota) is full: the index comes back once space does.
    pub no_space: bool,
}

/// The index, reopened after a failure. sled stops for good after an I/O error (a full disk, say): every
/// later operation returns the same error. So the first I/O error marks the index failed; operations then
/// fail at once with [`StoreError::IndexUnavailable`] until [`Index::reopen`] succeeds, which it does once the
/// disk has room again.
pub struct Index {
    dir: PathBuf,
    trees: RwLock<Option<Arc<Trees>>>,
    failure: Mutex<Option<Failure>>,
}

impl Index {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Index {
            dir: dir.to_path_buf(),
            trees: RwLock::new(Some(Arc::new(Trees::open(dir)?))),
            failure: Mutex::new(None),
        })
    }

    /// Why the index is not usable now, if it is not.
    pub fn failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap().clone()
    }

    /// Reopens a failed index; `Ok(false)` when it was not failed. sled's recovery replays its log up to
    /// the last write that reached the disk.
    pub fn reopen(&self) -> Result<bool, StoreError> {
        if self.failure().is_none() {
            return Ok(false);
        }
        // Let go of the failed database first: sled holds a lock on its directory until the last handle is
        // gone, and releases it from a background thread shortly after.
        drop(self.trees.write().unwrap().take());
        let deadline = std::time::Instant::now() + REOPEN_LOCK_WAIT;
        let trees = loop {
            match Trees::open(&self.dir) {
                Ok(trees) => break trees,
                // sled reports its held lock as an `Other` I/O error with this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {}
                Err(e) => return Err(StoreError::Index(e)),
            }
            if std::time::Instant::now() > deadline {
                return Err(StoreError::IndexUnavailable(Failure {
                    cause: "the failed index is still locked".into(),
                    no_space: false,
                }));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // sled opens a full disk without writing: only a write that reaches the disk shows the index works.
        let probe = trees
            .meta
            .insert("last-reopen-ms", &super::now_ms().to_be_bytes()[..])
            .and_then(|_| trees.db.flush());
        if let Err(e) = probe {
            return Err(StoreError::Index(e));
        }
        *self.trees.write().unwrap() = Some(Arc::new(trees));
        *self.failure.lock().unwrap() = None;
        Ok(true)
    }

    /// Runs `op` on the open trees, marking the index failed on an I/O error.
    fn with<T>(&self, op: impl FnOnce(&Trees) -> sled::Result<T>) -> Result<T, StoreError> {
        let trees = self.trees.read().unwrap().clone();
        let Some(trees) = trees.filter(|_| self.failure().is_none()) else {
            return Err(self.unavailable());
        };
        op(&trees).map_err(|e| self.fail(e))
    }

    fn unavailable(&self) -> StoreError {
        StoreError::IndexUnavailable(self.failure().unwrap_or_else(|| Failure {
            cause: "being reopened".into(),
            no_space: false,
        }))
    }

    /// Records an I/O error as the index's failure (sled will not recover from it by itself).
    fn fail(&self, e: sled::Error) -> StoreError {
        if let sled::Error::Io(io) = &e {
            let no_space = matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || io.kind() == std::io::ErrorKind::StorageFull;
            let mut failure = self.failure.lock().unwrap();
            if failure.is_none() {
                tracing::error!(cause = %io, "cache index failed; it is reopened once that is possible");
                *failure = Some(Failure {
                    cause: io.to_string(),
                    no_space,
                });
            }
        }
        StoreError::Index(e)
    }

    /// Waits until every earlier write is on disk. Runs sled's blocking flush on the blocking pool:
    /// sled 0.34's `flush_async` can hang forever under concurrent callers (sled#1308), which wedged
    /// every later fetch.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.with(|t| Ok(t.db.clone()))?;
        let flushed = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::IndexRecord(format!("index flush task failed: {e}")))?;
        flushed.map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn get_ref(&self, reference: &str) -> Result<Option<RefRecord>, StoreError> {
        decode(self.with(|t| t.refs.get(reference))?)
    }

    pub fn put_ref(&self, reference: &str, record: &RefRecord) -> Result<(), StoreError> {
        self.with(|t| t.refs.insert(reference, encode(record)))?;
        Ok(())
    }

    pub fn remove_ref(&self, reference: &str) -> Result<Option<RefRecord>, StoreError> {
        decode(self.with(|t| t.refs.remove(reference))?)
    }

    /// Every reference with its record; unreadable records are skipped (and logged).
    pub fn refs(&self) -> Result<Vec<(String, RefRecord)>, StoreError> {
        let items = self.with(|t| t.refs.iter().collect::<sled::Result<Vec<_>>>())?;
        let mut out = Vec::new();
        for (key, value) in items {
            let key = String::from_utf8_lossy(&key).into_owned();
            match serde_json::from_slice(&value) {
                Ok(record) => out.push((key, record)),
                Err(e) => {
                    tracing::warn!(reference = %key, cause = %e, "skipping unreadable index record")
                }
            }
        }
        Ok(out)
    }

    /// References that currently resolve to `digest`.
    pub fn refs_to(&self, digest: &Sha256) -> Result<Vec<String>, StoreError> {
        Ok(self
            .refs()?
            .into_iter()
            .filter(|(_, r)| r.digest == *digest)
            .map(|(k, _)| k)
            .collect())
    }

    pub fn get_blob(&self, digest: &Sha256) -> Result<Option<BlobRecord>, StoreError> {
        decode(self.with(|t| t.blobs.get(digest.to_string()))?)
    }

    pub fn put_blob(&self, digest: &Sha256, record: &BlobRecord) -> Result<(), StoreError> {
        self.with(|t| t.blobs.insert(digest.to_string(), encode(record)))?;
        Ok(())
    }

    pub fn remove_blob(&self, digest: &Sha256) -> Result<(), StoreError> {
        self.with(|t| t.blobs.remove(digest.to_string()))?;
        Ok(())
    }

    pub fn get_access(&self, digest: &Sha256) -> Result<Option<AccessRecord>, StoreError> {
        decode(self.with(|t| t.access.get(digest.to_string()))?)
    }

    pub fn put_access(&self, digest: &Sha256, record: &AccessRecord) -> Result<(), StoreError> {
        self.with(|t| t.access.insert(digest.to_string(), encode(record)))?;
        Ok(())
    }

    pub fn remove_access(&self, digest: &Sha256) -> Result<(), StoreError> {
        self.with(|t| t.access.remove(digest.to_string()))?;
        Ok(())
    }

    /// Keeps a manifest or index by its digest: its media type and its bytes as the registry served them.
    pub fn put_document(&self, digest: &Sha256, media_type: &str, body: &[u8]) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(media_type.len() + 1 + body.len());
        value.extend_from_slice(media_type.as_bytes());
        value.push(b'\n');
        value.extend_from_slice(body);
        self.with(|t| t.documents.insert(digest.to_string(), value))?;
        Ok(())
    }

    /// A kept document: `(media type, bytes)`.
    pub fn get_document(&self, digest: &Sha256) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let Some(value) = self.with(|t| t.documents.get(digest.to_string()))? else {
            return Ok(None);
        };
        let split = value.iter().position(|&b| b == b'\n').unwrap_or(value.len());
        let media_type = String::from_utf8_lossy(&value[..split]).into_owned();
        let body = value.get(split + 1..).unwrap_or_default().to_vec();
        Ok(Some((media_type, body)))
    }

    /// Drops the documents whose digest is not in `keep` (those no reference leads through any more);
    /// returns how many.
    pub fn prune_documents(&self, keep: &std::collections::HashSet<Sha256>) -> Result<usize, StoreError> {
        let keys = self.with(|t| t.documents.iter().keys().collect::<sled::Result<Vec<_>>>())?;
        let mut pruned = 0;
        for key in keys {
            let digest = std::str::from_utf8(&key).ok().and_then(|k| k.parse::<Sha256>().ok());
            if digest.is_none_or(|d| !keep.contains(&d)) {
                self.with(|t| t.documents.remove(&key))?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// A random salt for credential fingerprints, made once per cache and kept in the index.
    pub fn salt(&self) -> Result<[u8; 32], StoreError> {
        const KEY: &str = "fingerprint-salt";
        let mut fresh = [0u8; 32];
        fresh.iter_mut().for_each(|b| *b = fastrand::u8(..));
        // Compare-and-swap from "absent": of two racing first calls, both end up with the winner's salt.
        let stored = self.with(|t| {
            let _ = t.meta.compare_and_swap(KEY, None as Option<&[u8]>, Some(&fresh[..]))?;
            t.meta.get(KEY)
        })?;
        let stored = stored.ok_or_else(|| StoreError::IndexRecord("salt vanished".into()))?;
        stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::IndexRecord("salt has the wrong length".into()))
    }
}

/// How long a reopen waits for sled to release the lock of the failed database.
const REOPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("index records always serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(raw: Option<sled::IVec>) -> Result<Option<T>, StoreError> {
    match raw {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::IndexRecord(e.to_string())),
    }
}
