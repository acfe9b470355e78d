//! Durability details of POSIX filesystems.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes a rename or unlink in `dir` durable: on POSIX, a directory entry survives a crash only once the
/// directory itself is fsynced.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
