//! Durability details of POSIX filesystems.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes a rename or unlink in `dir` durable: on POSIX, a directory entry survives a crash only once the
/// directory itself is fsynced.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Starts writing back a range of `file` to disk without waiting for it (Linux `sync_file_range`), so the
/// fsync that commits a large blob finds most of it already written. Only a hint: other systems do
/// nothing, and the fsync stays what makes the bytes durable.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: the descriptor is borrowed from a live `File` for the duration of the call, and
        // sync_file_range reads no memory of ours.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
    Ok(())
}
