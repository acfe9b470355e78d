//! The content-addressed store: blobs named by their sha256, and an index of references to them. It knows
//! digests and bytes, never URLs (references are opaque strings to it).
//!
//! # Lifecycle of a blob
//! 1. [`Store::ingest`] opens a temp file under `ingest/`; the caller writes (and may [`Ingest::reset`]).
//! 2. [`Store::commit`] fsyncs it, checks its digest against the expected one, renames it to
//!    `blobs/sha256/<hex>` and fsyncs the directory. The rename is the only step that makes a blob
//!    visible: nothing is readable before it, and a crash leaves either no blob or a complete one.
//!    `commit` consumes the ingest even when it fails; an already-present digest counts as success.
//! 3. [`Store::open_blob`] hands out a verified file: the first read of a blob by this process (and any
//!    read after its size or mtime changed) re-hashes it, and a blob that no longer matches its name is
//!    moved to `quarantine/` and reported as [`StoreError::Corrupt`], never served.
//!
//! One process uses a cache directory at a time: [`Store::open`] first takes an exclusive lock on `lock`
//! (held for the store's lifetime) and fails with [`StoreError::InUse`] when another process holds it.
//! Only then does it empty `ingest/`, so temp files never outlive a restart and never vanish under a
//! running daemon.
//!
//! Long: the ingest -> verify -> commit protocol and its crash-safety rules, kept together so that the invariants read in one place.

mod gc;
mod index;
mod ingest;
mod layout;
mod sync_unix;

pub use gc::{Evicted, SweepPolicy, SweepReport};
pub use sync_unix::Writeback;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use index::{AccessRecord, BlobRecord, Index, RefRecord, Verification};
pub use ingest::Ingest;
pub use layout::Layout;

use crate::digest::{self, Mismatch, Sha256};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache index: {0}")]
    Index(#[from] sled::Error),
    #[error("cache index record is unreadable: {0}")]
    IndexRecord(String),
    #[error("cache index is unavailable until it can be reopened: {}", .0.cause)]
    IndexUnavailable(index::Failure),
    #[error("content digest mismatch: {0}")]
    DigestMismatch(Mismatch),
    #[error("cached blob sha256:{} is corrupt on disk (its bytes hash to sha256:{}); it was quarantined", .0.expected, .0.actual)]
    Corrupt(Mismatch),
    #[error("module sha256:{0} is not cached")]
    NotFound(Sha256),
    #[error("cache directory {} is in use by another wasmcache (pid {})", dir.display(), pid.map_or("unknown".to_string(), |p| p.to_string()))]
    InUse { dir: PathBuf, pid: Option<u32> },
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the disk (or a quota) is full, for the store's files or for its index.
    pub fn is_no_space(&self) -> bool {
        let full = |e: &io::Error| {
            matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || e.kind() == io::ErrorKind::StorageFull
        };
        match self {
            StoreError::Io { source, .. } => full(source),
            StoreError::Index(sled::Error::Io(e)) => full(e),
            StoreError::IndexUnavailable(failure) => failure.no_space,
            _ => false,
        }
    }
}

/// A committed blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub digest: Sha256,
    pub size: u64,
    /// This commit made the blob visible (it was not stored already).
    pub created: bool,
}

/// A verified blob opened for reading, positioned at its start. While it (its `hold`) lives, the blob is
/// never evicted.
#[derive(Debug)]
pub struct OpenBlob {
    pub file: File,
    pub size: u64,
    pub path: PathBuf,
    pub hold: Hold,
}

/// A listed blob with the references that resolve to it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub digest: Sha256,
    pub size: u64,
    pub path: PathBuf,
    pub record: Option<BlobRecord>,
    pub refs: Vec<(String, RefRecord)>,
}

/// What a verified file looked like; a different stamp means it must be hashed again. The change time is
/// in it because a writer can put the modification time back, but not the change time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            ino: meta.ino(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// How long a blob's `last_used` in the index may lag before a read writes it again; keeps hits from
/// writing the index. The exact time is kept in memory.
const LAST_USED_GRANULARITY_MS: u64 = 10_000;

pub struct Store {
    /// Locked while this store is open: one process per cache directory.
    _lock: File,
    layout: Layout,
    index: Index,
    verified: Mutex<HashMap<Sha256, Stamp>>,
    /// Serialises the hashing of one blob, so a burst of first reads after a restart hashes it once.
    verify_locks: [Mutex<()>; 16],
    /// Size of every committed blob: what the cache holds, without walking the disk.
    sizes: Mutex<HashMap<Sha256, u64>>,
    /// Exact time of each blob's last read by this process (the index has it to within a few seconds).
    last_used: Mutex<HashMap<Sha256, u64>>,
    /// Readers holding a blob open (a stream in progress): such a blob is never evicted.
    held: Arc<Mutex<HashMap<Sha256, usize>>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (creating) the store under `root`, removing temp files left by an earlier process.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let layout = Layout::new(root.to_path_buf());
        std::fs::create_dir_all(root).map_err(StoreError::io(root))?;
        let lock = lock_directory(&layout)?;
        for dir in [layout.blobs_dir(), layout.ingest_dir(), layout.quarantine_dir()] {
            std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        }
        let swept = sweep_dir(&layout.ingest_dir())?;
        if swept > 0 {
            tracing::info!(count = swept, "removed temp files of an interrupted earlier run");
        }
        let index_dir = layout.index_dir();
        let index = Index::open(&index_dir)?;
        let sizes = blob_sizes(&layout.blobs_dir())?;
        Ok(Store {
            _lock: lock,
            layout,
            index,
            verified: Mutex::new(HashMap::new()),
            verify_locks: Default::default(),
            sizes: Mutex::new(sizes),
            last_used: Mutex::default(),
            held: Arc::default(),
        })
    }

    /// Modules and bytes in the cache.
    pub fn usage(&self) -> (u64, u64) {
        let sizes = self.sizes.lock().unwrap();
        (sizes.len() as u64, sizes.values().sum())
    }

    /// Marks a blob as being read until the returned guard drops; a held blob is never evicted.
    pub fn hold(&self, digest: Sha256) -> Hold {
        *self.held.lock().unwrap().entry(digest).or_insert(0) += 1;
        Hold {
            digest,
            held: self.held.clone(),
        }
    }

    fn is_held(&self, digest: &Sha256) -> bool {
        self.held.lock().unwrap().get(digest).is_some_and(|&n| n > 0)
    }

    /// When the blob was last read (or written): the later of this process's record and the index's.
    pub fn last_used_ms(&self, digest: &Sha256) -> u64 {
        let in_memory = self.last_used.lock().unwrap().get(digest).copied().unwrap_or(0);
        let recorded = match self.index.get_blob(digest) {
            Ok(Some(r)) => r.last_used_ms.max(r.created_ms),
            // No record (a crash before the index was flushed): the file's own time stands in.
            _ => std::fs::metadata(self.layout.blob(digest))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64),
        };
        in_memory.max(recorded)
    }

    /// Pins or unpins a blob; `Ok(false)` when no such blob is cached.
    pub fn set_pinned(&self, digest: &Sha256, pinned: bool) -> Result<bool, StoreError> {
        if !self.contains(digest) {
            return Ok(false);
        }
        let now = now_ms();
        let record = match self.index.get_blob(digest)? {
            Some(r) => BlobRecord { pinned, ..r },
            None => BlobRecord {
                size: self.sizes.lock().unwrap().get(digest).copied().unwrap_or(0),
                created_ms: now,
                last_used_ms: now,
                pinned,
                leased_until_ms: 0,
                artifact: false,
            },
        };
        self.index.put_blob(digest, &record)?;
        Ok(true)
    }

    /// Keeps a blob in use until `until_ms` (unix ms) at least: its path was handed out. A later lease
    /// extends it; an earlier one changes nothing. Written only when it extends the lease by more than
    /// the index's time granularity, so a burst of resolves does not write the index each time.
    pub fn lease(&self, digest: &Sha256, until_ms: u64) -> Result<(), StoreError> {
        let now = now_ms();
        let record = match self.index.get_blob(digest)? {
            Some(r) if r.leased_until_ms.saturating_add(LAST_USED_GRANULARITY_MS) >= until_ms => return Ok(()),
            Some(r) => BlobRecord {
                leased_until_ms: until_ms,
                ..r
            },
            None => BlobRecord {
                size: self.sizes.lock().unwrap().get(digest).copied().unwrap_or(0),
                created_ms: now,
                last_used_ms: now,
                pinned: false,
                leased_until_ms: until_ms,
                artifact: false,
            },
        };
        self.index.put_blob(digest, &record)
    }

    /// Marks a blob as an artifact (not a module: an image config or layer kept for the registry endpoint);
    /// List leaves artifacts out.
    pub fn mark_artifact(&self, digest: &Sha256) -> Result<(), StoreError> {
        let now = now_ms();
        let record = match self.index.get_blob(digest)? {
            Some(r) => BlobRecord { artifact: true, ..r },
            None => BlobRecord {
                size: self.sizes.lock().unwrap().get(digest).copied().unwrap_or(0),
                created_ms: now,
                last_used_ms: now,
                pinned: false,
                leased_until_ms: 0,
                artifact: true,
            },
        };
        self.index.put_blob(digest, &record)
    }

    #[cfg(test)]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Starts a new blob write.
    pub fn ingest(&self) -> Result<Ingest, StoreError> {
        let id = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        let path = self.layout.ingest(&id);
        Ingest::create(path.clone()).map_err(StoreError::io(&path))
    }

    /// Makes an ingest visible as `blobs/sha256/<hex>` when its digest equals `expected` (if given).
    /// Consumes the ingest whatever happens; a blob that is already present counts as success.
    pub fn commit(&self, ingest: Ingest, expected: Option<Sha256>) -> Result<Committed, StoreError> {
        let ingest_path = ingest.path().to_path_buf();
        let (tmp, digest, size) = ingest.finish().map_err(StoreError::io(&ingest_path))?;
        let remove_tmp = || {
            let _ = std::fs::remove_file(&tmp);
        };
        if let Some(Err(mismatch)) = expected.map(|e| e.check(digest)) {
            remove_tmp();
            return Err(StoreError::DigestMismatch(mismatch));
        }
        let target = self.layout.blob(&digest);
        let created = !target.exists();
        if !created {
            remove_tmp();
        } else {
            if let Err(e) = std::fs::rename(&tmp, &target) {
                remove_tmp();
                return Err(StoreError::Io {
                    path: target,
                    source: e,
                });
            }
            let blobs_dir = self.layout.blobs_dir();
            sync_unix::fsync_dir(&blobs_dir).map_err(StoreError::io(&blobs_dir))?;
        }
        // The blob is committed. What follows is bookkeeping: failures are logged, not returned, since
        // the blob is already visible and correct.
        if let Ok(meta) = std::fs::metadata(&target) {
            self.verified.lock().unwrap().insert(digest, Stamp::of(&meta));
        }
        self.sizes.lock().unwrap().insert(digest, size);
        self.record_use(&digest, size, 0);
        Ok(Committed { digest, size, created })
    }

    /// True when a committed blob with this digest is on disk (not yet verified).
    pub fn contains(&self, digest: &Sha256) -> bool {
        self.layout.blob(digest).is_file()
    }

    #[cfg(test)]
    pub fn blob_path(&self, digest: &Sha256) -> PathBuf {
        self.layout.blob(digest)
    }

    /// Opens a blob this process has already verified and that has not changed since (same size, mtime
    /// and ctime), without hashing; `Ok(None)` when it needs [`Store::open_blob`]'s check first. Only an
    /// open and an fstat, so a cache hit can run it on an async worker instead of a blocking thread.
    pub fn open_verified_blob(&self, digest: &Sha256) -> Result<Option<OpenBlob>, StoreError> {
        let (file, stamp, path) = self.open_file(digest)?;
        if !self.is_verified(digest, &stamp) {
            return Ok(None);
        }
        Ok(Some(self.hand_out(digest, file, stamp.len, path)))
    }

    /// Opens a blob for reading after making sure its bytes still hash to its name. A corrupt blob is
    /// quarantined, its index entries are dropped, and [`StoreError::Corrupt`] is returned.
    pub fn open_blob(&self, digest: &Sha256) -> Result<OpenBlob, StoreError> {
        let (mut file, stamp, path) = self.open_file(digest)?;
        if !self.is_verified(digest, &stamp) {
            let _serial = self.verify_locks[digest_stripe(digest)].lock().unwrap();
            // Another reader may have verified it while this one waited.
            if !self.is_verified(digest, &stamp) {
                let (actual, _) = digest::hash_reader(&file).map_err(StoreError::io(&path))?;
                if let Err(mismatch) = digest.check(actual) {
                    self.quarantine(digest);
                    return Err(StoreError::Corrupt(mismatch));
                }
                self.verified.lock().unwrap().insert(*digest, stamp);
            }
            file.seek(SeekFrom::Start(0)).map_err(StoreError::io(&path))?;
        }
        Ok(self.hand_out(digest, file, stamp.len, path))
    }

    /// Opens a blob's file, with the stamp it has now.
    fn open_file(&self, digest: &Sha256) -> Result<(File, Stamp, PathBuf), StoreError> {
        let path = self.layout.blob(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(*digest)),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let meta = file.metadata().map_err(StoreError::io(&path))?;
        Ok((file, Stamp::of(&meta), path))
    }

    /// This process hashed the blob when it looked exactly like `stamp`.
    fn is_verified(&self, digest: &Sha256, stamp: &Stamp) -> bool {
        self.verified.lock().unwrap().get(digest) == Some(stamp)
    }

    /// An opened, verified blob for a reader: the read is recorded and the blob held against eviction.
    fn hand_out(&self, digest: &Sha256, file: File, size: u64, path: PathBuf) -> OpenBlob {
        self.record_use(digest, size, LAST_USED_GRANULARITY_MS);
        OpenBlob {
            file,
            size,
            path,
            hold: self.hold(*digest),
        }
    }

    /// Records a use of the blob now: exactly in memory, and in the index unless its record there is
    /// younger than `lag_ms` (so hits do not write the index each time).
    fn record_use(&self, digest: &Sha256, size: u64, lag_ms: u64) {
        let now = now_ms();
        self.last_used.lock().unwrap().insert(*digest, now);
        let record = match self.index.get_blob(digest) {
            Ok(Some(r)) if now.saturating_sub(r.last_used_ms) < lag_ms => return,
            Ok(Some(r)) => BlobRecord { last_used_ms: now, ..r },
            _ => BlobRecord {
                size,
                created_ms: now,
                last_used_ms: now,
                pinned: false,
                leased_until_ms: 0,
                artifact: false,
            },
        };
        if let Err(e) = self.index.put_blob(digest, &record) {
            tracing::warn!(%digest, cause = %e, "could not record the use of a blob in the index");
        }
    }

    /// Moves a blob that failed verification out of the way and forgets every reference to it.
    fn quarantine(&self, digest: &Sha256) {
        let from = self.layout.blob(digest);
        let to = self.layout.quarantine(digest, now_ms());
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                tracing::error!(%digest, quarantined = %to.display(), "cached blob is corrupt")
            }
            Err(e) => {
                tracing::error!(%digest, cause = %e, "cached blob is corrupt and could not be moved; deleting it");
                let _ = std::fs::remove_file(&from);
            }
        }
        self.verified.lock().unwrap().remove(digest);
        self.sizes.lock().unwrap().remove(digest);
        if let Err(e) = self.forget(digest) {
            tracing::warn!(%digest, cause = %e, "could not drop index entries of a corrupt blob");
        }
    }

    /// Drops the blob record and every reference to the digest; returns the references dropped.
    fn forget(&self, digest: &Sha256) -> Result<Vec<String>, StoreError> {
        let refs = self.index.refs_to(digest)?;
        for r in &refs {
            self.index.remove_ref(r)?;
        }
        self.index.remove_blob(digest)?;
        self.index.remove_access(digest)?;
        Ok(refs)
    }

    /// Deletes a blob and every reference to it. Readers that already opened it keep reading it.
    /// Returns `None` when no such blob exists, else the references dropped.
    pub fn delete(&self, digest: &Sha256) -> Result<Option<Vec<String>>, StoreError> {
        let path = self.layout.blob(digest);
        let existed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        self.verified.lock().unwrap().remove(digest);
        self.sizes.lock().unwrap().remove(digest);
        self.last_used.lock().unwrap().remove(digest);
        let refs = self.forget(digest)?;
        Ok((existed || !refs.is_empty()).then_some(refs))
    }

    /// Deletes a blob that a failed fetch has just created, so no blob is left that no URL leads to. The
    /// index may be failing (that may be why the fetch failed): its entries are dropped when it can be.
    pub fn discard(&self, digest: &Sha256) {
        let path = self.layout.blob(digest);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(%digest, cause = %e, "could not delete the blob of a failed fetch");
                return;
            }
        }
        self.verified.lock().unwrap().remove(digest);
        self.sizes.lock().unwrap().remove(digest);
        self.last_used.lock().unwrap().remove(digest);
        let _ = self.forget(digest);
    }

    /// Reopens the index after it failed (see [`Index::reopen`]); `Ok(false)` when it had not. Blobs
    /// whose index entries were lost with the writes that never reached the disk (no reference, no
    /// record) are deleted then: nothing could lead to them.
    pub fn recover_index(&self) -> Result<bool, StoreError> {
        if !self.index.reopen()? {
            return Ok(false);
        }
        let referenced: std::collections::HashSet<Sha256> =
            self.index.refs()?.into_iter().map(|(_, r)| r.digest).collect();
        let digests: Vec<Sha256> = self.sizes.lock().unwrap().keys().copied().collect();
        for digest in digests {
            if referenced.contains(&digest) || self.is_held(&digest) || self.index.get_blob(&digest)?.is_some() {
                continue;
            }
            tracing::info!(%digest, "deleting a blob whose index entries were lost with the failed index");
            self.discard(&digest);
        }
        tracing::info!("cache index reopened");
        Ok(true)
    }

    /// Every blob on disk with its record and the references to it, ordered by digest.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let dir = self.layout.blobs_dir();
        let mut by_digest: HashMap<Sha256, Vec<(String, RefRecord)>> = HashMap::new();
        for (reference, record) in self.index.refs()? {
            by_digest.entry(record.digest).or_default().push((reference, record));
        }
        let mut out = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let item = item.map_err(StoreError::io(&dir))?;
            let Some(digest) = item.file_name().to_str().and_then(|n| n.parse::<Sha256>().ok()) else {
                continue;
            };
            let Ok(meta) = item.metadata() else { continue };
            let record = self.index.get_blob(&digest)?;
            if record.as_ref().is_some_and(|r| r.artifact) {
                continue;
            }
            out.push(Entry {
                digest,
                size: meta.len(),
                path: item.path(),
                record,
                refs: by_digest.remove(&digest).unwrap_or_default(),
            });
        }
        out.sort_by_key(|e| e.digest);
        Ok(out)
    }
}

/// A blob being read; see [`Store::hold`].
#[derive(Debug)]
pub struct Hold {
    digest: Sha256,
    held: Arc<Mutex<HashMap<Sha256, usize>>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap();
        if let Some(n) = held.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.digest);
            }
        }
    }
}

/// Takes the cache directory's exclusive lock and writes our pid into the lock file, or names the
/// process that holds it. The kernel drops the lock when the process exits, however it exits.
fn lock_directory(layout: &Layout) -> Result<File, StoreError> {
    let path = layout.lock_file();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = io::Read::read_to_string(&mut file, &mut holder);
            return Err(StoreError::InUse {
                dir: layout.root().to_path_buf(),
                pid: holder.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::Io { path, source: e }),
    }
    file.set_len(0).map_err(StoreError::io(&path))?;
    io::Write::write_all(&mut file, format!("{}\n", std::process::id()).as_bytes()).map_err(StoreError::io(&path))?;
    Ok(file)
}

/// The size of every blob file in `dir`.
fn blob_sizes(dir: &Path) -> Result<HashMap<Sha256, u64>, StoreError> {
    let mut sizes = HashMap::new();
    for item in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let item = item.map_err(StoreError::io(dir))?;
        if let (Some(digest), Ok(meta)) = (item.file_name().to_str().and_then(|n| n.parse().ok()), item.metadata()) {
            sizes.insert(digest, meta.len());
        }
    }
    Ok(sizes)
}

fn digest_stripe(digest: &Sha256) -> usize {
    digest.as_bytes()[0] as usize % 16
}

/// Removes every file in `dir`; returns how many.
fn sweep_dir(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for item in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = item.map_err(StoreError::io(dir))?.path();
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(StoreError::io(&path))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
