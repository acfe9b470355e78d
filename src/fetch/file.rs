//! The file:// fetcher: reads modules only below the configured roots, judged after `..` and symlinks
//! are resolved, so neither a crafted path nor a planted link reaches outside them.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::{FetchError, Fetched, Meta, Settings, Sink};
use crate::source::ModuleUrl;

pub struct FileFetcher {
    /// Canonical root directories.
    roots: Vec<PathBuf>,
    max_bytes: u64,
}

impl FileFetcher {
    pub fn new(settings: &Settings) -> Result<Self, FetchError> {
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
        })
    }

    fn within_roots(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }

    pub async fn fetch(&self, url: &ModuleUrl, path: &Path, sink: &mut dyn Sink) -> Result<Fetched, FetchError> {
        let shown = url.to_string();
        if self.roots.is_empty() {
            return Err(FetchError::NoFileRoots { url: shown });
        }
        // Judge the lexical path first, so that nothing outside the roots is even looked up.
        if !self.within_roots(&normalize(path)) {
            return Err(FetchError::OutsideRoots { url: shown });
        }
        let real = match tokio::fs::canonicalize(path).await {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FetchError::NotFound {
                    url: shown,
                    detail: "no such file".into(),
                })
            }
            Err(e) => return Err(FetchError::Read { url: shown, source: e }),
        };
        if !self.within_roots(&real) {
            return Err(FetchError::OutsideRoots { url: shown });
        }
        let mut file = tokio::fs::File::open(&real).await.map_err(|e| FetchError::Read {
            url: shown.clone(),
            source: e,
        })?;
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
        let meta = file.metadata().await.map_err(|e| FetchError::Read {
            url: shown.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(FetchError::NotAFile { url: shown });
        }
        if meta.len() > self.max_bytes {
            return Err(FetchError::TooLarge {
                url: shown,
                what: "module",
                limit: self.max_bytes,
            });
        }
        sink.reset().map_err(FetchError::sink(&shown))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(|e| FetchError::Read {
                url: shown.clone(),
                source: e,
            })?;
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
