//! The only place that turns digests into paths. Every path below the cache root is built here from a
//! validated [`Sha256`] or from a name this module generates, never from a string taken off the wire.

use std::path::{Path, PathBuf};

use crate::digest::Sha256;

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Committed blobs: `blobs/sha256/<hex>`. Their presence is the commit point.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn blob(&self, digest: &Sha256) -> PathBuf {
        self.blobs_dir().join(digest.to_string())
    }

    /// In-progress writes; on the same filesystem as `blobs/` so that commit is a rename.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub fn ingest(&self, id: &str) -> PathBuf {
        self.ingest_dir().join(id)
    }

    /// Blobs whose bytes no longer match their name, kept for inspection instead of being served.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub fn quarantine(&self, digest: &Sha256, unix_ms: u64) -> PathBuf {
        self.quarantine_dir().join(format!("{digest}.{unix_ms}"))
    }

    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// Locked by the daemon that uses the directory; holds its pid.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
}
