//! The file:// fetcher: reads modules only below the configured roots, judged after `..` and symlinks
//! are resolved, so neither a crafted path nor a planted link reaches outside them. Only regular files
//! are read, judged without blocking (a FIFO would wait for a writer forever, a device has no end);
//! every wait on the filesystem is bounded by the fetch timeout, and the whole read by the fetch deadline.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::retry::past_deadline;
use super::{FetchError, Fetched, Meta, Settings, Sink};
use crate::source::ModuleUrl;

pub(crate) struct FileFetcher {
    /// Canonical root directories.
    roots: Vec<PathBuf>,
    max_bytes: u64,
    /// Bound on each wait on the filesystem (a lookup, the open, each read).
    timeout: Duration,
    /// Bound on the whole read, from the lookup to the last byte.
    deadline: Duration,
}

impl FileFetcher {
    pub(crate) fn new(settings: &Settings) -> Result<Self, FetchError> {
        let roots = settings
            .file_roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|e| FetchError::Config(format!("--file-root {}: {e}", r.display())))
            })
            .collect::<Result<_, _>>()?;
        Ok(FileFetcher {
            roots,
            max_bytes: settings.max_bytes,
            timeout: settings.timeout,
            deadline: settings.deadline,
        })
    }

    fn within_roots(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }

    /// `op` bounded by the fetch timeout; its I/O error as a read error of `shown`.
    async fn wait<T>(&self, shown: &str, what: &str, op: impl Future<Output = io::Result<T>>) -> Result<T, FetchError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(|source| FetchError::Read {
                url: shown.to_string(),
                source,
            }),
            Err(_) => Err(FetchError::Timeout {
                url: shown.to_string(),
                attempts: 1,
                cause: format!(
                    "{what} did not finish within the --fetch-timeout of {}",
                    humantime::format_duration(self.timeout)
                ),
            }),
        }
    }

    pub(crate) async fn fetch(&self, url: &ModuleUrl, path: &Path, sink: &mut dyn Sink) -> Result<Fetched, FetchError> {
        let shown = url.to_string();
        if self.roots.is_empty() {
            return Err(FetchError::NoFileRoots { url: shown });
        }
        // Judge the lexical path first, so that nothing outside the roots is even looked up.
        if !self.within_roots(&normalize(path)) {
            return Err(FetchError::OutsideRoots { url: shown });
        }
        match tokio::time::timeout(self.deadline, self.read(&shown, path, sink)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                url: shown,
                attempts: 1,
                cause: past_deadline(self.deadline),
            }),
        }
    }

    /// Reads the file at `path` (within the roots lexically) into `sink`.
    async fn read(&self, shown: &str, path: &Path, sink: &mut dyn Sink) -> Result<Fetched, FetchError> {
        let shown = shown.to_string();
        let real = match self
            .wait(&shown, "resolving the path", tokio::fs::canonicalize(path))
            .await
        {
            Ok(p) => p,
            Err(FetchError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(FetchError::NotFound {
                    url: shown,
                    detail: "no such file".into(),
                })
            }
            Err(e) => return Err(e),
        };
        if !self.within_roots(&real) {
            return Err(FetchError::OutsideRoots { url: shown });
        }
        // Judge what the path is before opening it: opening a FIFO waits for a writer, and opening a device
        // may have effects of its own. `real` has no symlinks left, so this is what open(2) will find.
        let meta = self
            .wait(&shown, "looking up the file", tokio::fs::metadata(&real))
            .await?;
        self.check_regular(&shown, &meta)?;
        // O_NONBLOCK: should the path have been swapped for a FIFO since, the open still returns at once.
        let mut file = self
            .wait(
                &shown,
                "opening the file",
                tokio::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(&real),
            )
            .await?;
        // A directory on the path may have been swapped for a symlink between the check above and the
        // open: judge the file actually opened, by the path the kernel has for it.
        let opened =
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| FetchError::Read {
                url: shown.clone(),
                source: e,
            })?;
        if !self.within_roots(&opened) {
            return Err(FetchError::OutsideRoots { url: shown });
        }
        let meta = self.wait(&shown, "looking up the file", file.metadata()).await?;
        self.check_regular(&shown, &meta)?;
        clear_nonblocking(&file).map_err(|e| FetchError::Read {
            url: shown.clone(),
            source: e,
        })?;
        sink.reset().map_err(FetchError::sink(&shown))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = self.wait(&shown, "a read", file.read(&mut buf)).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            // The file may grow while it is read.
            if total > self.max_bytes {
                return Err(FetchError::TooLarge {
                    url: shown,
                    what: "module",
                    limit: self.max_bytes,
                });
            }
            sink.write_chunk(&buf[..n]).map_err(FetchError::sink(&shown))?;
        }
        Ok(Fetched::Complete(Meta::default()))
    }

    /// Only regular files are read, and only those within the size cap.
    fn check_regular(&self, shown: &str, meta: &std::fs::Metadata) -> Result<(), FetchError> {
        if !meta.is_file() {
            return Err(FetchError::NotAFile {
                url: shown.to_string(),
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.len() > self.max_bytes {
            return Err(FetchError::TooLarge {
                url: shown.to_string(),
                what: "module",
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// What a file that is not a regular one is, for the error message.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "a file of unknown type"
    }
}

/// Puts the descriptor back in blocking mode (the open was non-blocking only so that it could not hang).
fn clear_nonblocking(file: &tokio::fs::File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(2) F_GETFL on a descriptor that `file` owns and keeps open for the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL only changes the status flags of that descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resolves `.` and `..` without touching the filesystem (`..` at the root stays at the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_parent_components() {
        assert_eq!(
            normalize(Path::new("/srv/wasm/../../etc/passwd")),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(normalize(Path::new("/../../a/./b")), PathBuf::from("/a/b"));
    }
}
