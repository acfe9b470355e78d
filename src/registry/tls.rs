//! The registry endpoint's TLS certificate, reloaded when its files change (cert-manager and kubelet rotate
//! mounted secrets in place, by swapping a symlink).
//!
//! [`CertReloader`] is a rustls [`ResolvesServerCert`]: each handshake takes the current `CertifiedKey`, and at
//! most every [`CHECK_EVERY`] one of them also stats both files. When either changed (device, inode, size,
//! modification or change time), the pair is loaded again; a pair that does not load (a half-written rotation,
//! a key that does not match) is logged once and the certificate in use stays. A failed check never fails a
//! handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often a handshake looks at the files.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Which of the two files an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
}

/// Why a certificate or key file was not usable. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TlsError {
    pub file: TlsFile,
    pub path: PathBuf,
    pub reason: String,
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1), and checks
/// that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let error = |file, reason: String| TlsError {
        file,
        path: match file {
            TlsFile::Cert => cert.to_path_buf(),
            TlsFile::Key => key.to_path_buf(),
        },
        reason,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| error(TlsFile::Cert, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(TlsFile::Cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(error(TlsFile::Cert, "no PEM certificate in it".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| error(TlsFile::Key, e.to_string()))?;
    // The parser's own error may quote a line of the file: not repeated for a key.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| error(TlsFile::Key, "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it".into()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => error(
            TlsFile::Key,
            format!("does not match the certificate in {}", cert.display()),
        ),
        other => error(TlsFile::Key, other.to_string()),
    })
}

/// What a file looked like when it was loaded; another look tells whether it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // metadata() follows symlinks: a swapped `..data` link shows as another inode.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    })
}

type Stamps = (Option<Stamp>, Option<Stamp>);

/// The certificate in use, and the certificate and key files it is reloaded from.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    check_every: Duration,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    /// The files as they were when `current` was loaded.
    loaded: Stamps,
    /// The files as they were when they last failed to load: not tried (or logged) again until they change.
    rejected: Option<Stamps>,
    checked: Instant,
}

impl CertReloader {
    /// Loads the pair; an error here is a configuration error.
    pub fn load(cert: &Path, key: &Path) -> Result<CertReloader, TlsError> {
        let loaded = (stamp(cert), stamp(key));
        let current = load_pair(cert, key)?;
        Ok(CertReloader {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            check_every: CHECK_EVERY,
            state: Mutex::new(State {
                current: Arc::new(current),
                loaded,
                rejected: None,
                checked: Instant::now(),
            }),
        })
    }

    #[cfg(test)]
    /// Looks at the files at most this often (tests use zero).
    pub fn check_every(mut self, every: Duration) -> CertReloader {
        self.check_every = every;
        self
    }

    /// A rustls server configuration that takes its certificate from here: ring, TLS 1.2 and 1.3, no client
    /// certificates, and ALPN `http/1.1` only (so Go clients do not try HTTP/2).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The certificate to present now, reloaded first when the files changed and a check is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = (stamp(&self.cert), stamp(&self.key));
            if now != state.loaded && state.rejected != Some(now) {
                match load_pair(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(
                            cert = %self.cert.display(),
                            key = %self.key.display(),
                            "registry TLS certificate reloaded"
                        );
                        state.current = Arc::new(key);
                        state.loaded = now;
                        state.rejected = None;
                    }
                    Err(e) => {
                        tracing::error!(cause = %e, "registry TLS certificate not reloaded; the previous one stays in use");
                        state.rejected = Some(now);
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
