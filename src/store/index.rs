//! The sled index: what each reference resolves to, and what is known of each blob.
//!
//! Trees: `refs` maps an opaque reference (the cache uses credential-free URLs) to a [`RefRecord`];
//! `blobs` maps a hex digest to a [`BlobRecord`]; `access` maps a hex digest to an [`AccessRecord`];
//! `meta` holds the index's own settings (the fingerprint salt). Records are JSON so that later fields can be added
//! without a migration. The blob files are the truth: a record without a file is ignored and repaired.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::digest::Sha256;

/// What a reference resolved to at its last successful fetch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefRecord {
    /// Hex sha256 of the module.
    pub digest: String,
    /// `sha256:<hex>` of the manifest the module came from, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// `sha256:<hex>` of the index the manifest was chosen from, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// `(resource_name, resource_version)` of the request that last fetched it, for the Always policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<(String, String)>,
    /// Upstream validator (HTTP ETag) for conditional re-checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub fetched_at_ms: u64,
}

impl RefRecord {
    pub fn digest(&self) -> Option<Sha256> {
        self.digest.parse().ok()
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

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    refs: sled::Tree,
    blobs: sled::Tree,
    access: sled::Tree,
    meta: sled::Tree,
}

impl Index {
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let refs = db.open_tree("refs")?;
        let blobs = db.open_tree("blobs")?;
        let access = db.open_tree("access")?;
        let meta = db.open_tree("meta")?;
        Ok(Index {
            db,
            refs,
            blobs,
            access,
            meta,
        })
    }

    /// Waits until every earlier write is on disk. Runs sled's blocking flush on the blocking pool:
    /// sled 0.34's `flush_async` can hang forever under concurrent callers (sled#1308), which wedged
    /// every later fetch.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::IndexRecord(format!("index flush task failed: {e}")))??;
        Ok(())
    }

    pub fn get_ref(&self, reference: &str) -> Result<Option<RefRecord>, StoreError> {
        decode(self.refs.get(reference)?)
    }

    pub fn put_ref(&self, reference: &str, record: &RefRecord) -> Result<(), StoreError> {
        self.refs.insert(reference, encode(record))?;
        Ok(())
    }

    pub fn remove_ref(&self, reference: &str) -> Result<Option<RefRecord>, StoreError> {
        decode(self.refs.remove(reference)?)
    }

    /// Every reference with its record; unreadable records are skipped (and logged).
    pub fn refs(&self) -> Result<Vec<(String, RefRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.refs.iter() {
            let (key, value) = item?;
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
        let hex = digest.to_string();
        Ok(self
            .refs()?
            .into_iter()
            .filter(|(_, r)| r.digest == hex)
            .map(|(k, _)| k)
            .collect())
    }

    pub fn get_blob(&self, digest: &Sha256) -> Result<Option<BlobRecord>, StoreError> {
        decode(self.blobs.get(digest.to_string())?)
    }

    pub fn put_blob(&self, digest: &Sha256, record: &BlobRecord) -> Result<(), StoreError> {
        self.blobs.insert(digest.to_string(), encode(record))?;
        Ok(())
    }

    pub fn remove_blob(&self, digest: &Sha256) -> Result<(), StoreError> {
        self.blobs.remove(digest.to_string())?;
        Ok(())
    }

    pub fn get_access(&self, digest: &Sha256) -> Result<Option<AccessRecord>, StoreError> {
        decode(self.access.get(digest.to_string())?)
    }

    pub fn put_access(&self, digest: &Sha256, record: &AccessRecord) -> Result<(), StoreError> {
        self.access.insert(digest.to_string(), encode(record))?;
        Ok(())
    }

    pub fn remove_access(&self, digest: &Sha256) -> Result<(), StoreError> {
        self.access.remove(digest.to_string())?;
        Ok(())
    }

    /// A random salt for credential fingerprints, made once per cache and kept in the index.
    pub fn salt(&self) -> Result<[u8; 32], StoreError> {
        const KEY: &str = "fingerprint-salt";
        let mut fresh = [0u8; 32];
        fresh.iter_mut().for_each(|b| *b = fastrand::u8(..));
        // Compare-and-swap from "absent": of two racing first calls, both end up with the winner's salt.
        let _ = self
            .meta
            .compare_and_swap(KEY, None as Option<&[u8]>, Some(&fresh[..]))?;
        let stored = self
            .meta
            .get(KEY)?
            .ok_or_else(|| StoreError::IndexRecord("salt vanished".into()))?;
        stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::IndexRecord("salt has the wrong length".into()))
    }

    pub fn blobs(&self) -> Result<Vec<(Sha256, BlobRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.blobs.iter() {
            let (key, value) = item?;
            let digest = std::str::from_utf8(&key).ok().and_then(|k| k.parse().ok());
            match (digest, serde_json::from_slice(&value)) {
                (Some(d), Ok(record)) => out.push((d, record)),
                _ => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping unreadable blob record")
                }
            }
        }
        Ok(out)
    }
}

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
