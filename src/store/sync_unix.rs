//! Durability details of POSIX filesystems.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes a rename or unlink in `dir` durable: on POSIX, a directory entry survives a crash only once the
/// directory itself is fsynced.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes written between two requests to start writing them back to disk.
const WRITEBACK_STEP: u64 = 4 << 20;

/// Follows a file written front to back and hands its bytes to the kernel's writeback every
/// [`WRITEBACK_STEP`], so the fsync that ends the write finds most of them already on disk. Only a hint:
/// the fsync stays what makes the bytes durable.
#[derive(Debug, Default)]
pub struct Writeback {
    written: u64,
    /// Where the bytes not yet handed to writeback start.
    from: u64,
}

impl Writeback {
    /// Notes that `n` more bytes were written to `file`.
    pub fn wrote(&mut self, file: &File, n: u64) {
        self.written += n;
        if self.written - self.from >= WRITEBACK_STEP {
            let _ = start_writeback(file, self.from, self.written - self.from);
            self.from = self.written;
        }
    }
}

/// Starts writing back a range of `file` to disk without waiting for it (Linux `sync_file_range`); other
/// systems do nothing.
fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
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
