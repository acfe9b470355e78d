//! Fetchers: a URL in, the module's bytes written to a [`Sink`] and what was learned about them out.
//! Fetchers know nothing of the cache: no disk layout, no index. Each is built once, with its clients.
//!
//! A fetcher writes into a sink rather than returning a stream so that it can retry a download that
//! broke halfway: it resets the sink and starts again, and the caller only sees a complete body.

pub(crate) mod file;
pub(crate) mod guard;
pub(crate) mod http;
pub(crate) mod net;
pub mod oci;
pub(crate) mod retry;
pub mod unbox;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::digest::{Mismatch, Sha256};
use crate::source::ModuleUrl;

/// Where a fetcher writes the bytes it downloads.
pub(crate) trait Sink: Send {
    /// Drops everything written so far (before a retry).
    fn reset(&mut self) -> io::Result<()>;
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// The sha256 of what was written since the last reset, from sinks that hash as they write (the
    /// store's ingest does), so that a fetcher checking a digest does not hash every byte a second time.
    fn sha256(&self) -> Option<Sha256> {
        None
    }
}

/// A sink into memory, for small documents (signatures, bundles) whose size the fetcher bounds.
#[derive(Default)]
pub(crate) struct MemorySink(pub Vec<u8>);

impl Sink for MemorySink {
    fn reset(&mut self) -> io::Result<()> {
        self.0.clear();
        Ok(())
    }

    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(chunk);
        Ok(())
    }
}

/// What the caller already has, for a conditional re-check upstream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Conditions {
    /// The validator (HTTP ETag) recorded at the last fetch.
    pub etag: Option<String>,
    /// The digest an OCI tag resolved to at the last fetch (the index digest when there was one).
    pub known_digest: Option<Sha256>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// The sink holds the whole payload.
    Complete(Meta),
    /// Upstream confirmed that the content the conditions describe is still current; nothing was written.
    NotModified(Meta),
    /// Upstream named content the caller already holds (an OCI manifest, index or layer by digest), so
    /// nothing was downloaded; `module` is the held module it leads to.
    Held { meta: Meta, module: Sha256 },
}

/// What the caller already holds, so that an OCI fetch can stop as soon as the registry names it: a
/// manifest is content-addressed, so the module it leads to is known once its digest is. Fetchers only
/// ask; the cache decides (it also applies its access rules here).
pub(crate) trait Held: Send + Sync {
    /// The held module that an image manifest or index with this digest led to, with the image
    /// manifest's digest (the platform manifest's, for an index).
    fn image(&self, digest: &Sha256) -> Option<HeldImage>;
    /// True when the module with this digest is held: an image layer that is the module itself.
    fn module(&self, digest: &Sha256) -> bool;
}

/// A held module and the image manifest it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldImage {
    pub module: Sha256,
    pub manifest: Sha256,
}

/// Holds nothing: every fetch downloads.
pub(crate) struct NothingHeld;

impl Held for NothingHeld {
    fn image(&self, _: &Sha256) -> Option<HeldImage> {
        None
    }

    fn module(&self, _: &Sha256) -> bool {
        false
    }
}

/// What a fetch learned besides the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Digest of the image manifest the module came from (OCI only).
    pub manifest_digest: Option<Sha256>,
    /// Digest of the index the image manifest was chosen from (OCI only).
    pub index_digest: Option<Sha256>,
    pub etag: Option<String>,
    /// Credentials were sent upstream: the module may be private.
    pub authenticated: bool,
    /// Which entry to take when the payload is an archive.
    pub pick: unbox::Pick,
    /// The manifests and index read on the way (OCI), as the registry served them: the registry endpoint
    /// serves them again unchanged.
    pub documents: Vec<ManifestDoc>,
}

/// A manifest or index as a registry served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ManifestDoc {
    pub digest: Sha256,
    pub media_type: String,
    pub body: bytes::Bytes,
}

/// How fetchers behave; filled in and validated by [`crate::config`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Bound on connecting, and on each wait for the next bytes of a response.
    pub timeout: Duration,
    /// Bound on one whole attempt: connecting, the response and its whole body (or a whole file read).
    /// At least `timeout`.
    pub deadline: Duration,
    pub backoff: retry::Backoff,
    /// Cap on the downloaded payload and, separately, on the unwrapped module.
    pub max_bytes: u64,
    pub blocked_cidrs: Vec<IpNet>,
    /// PEM bundle of extra trusted roots.
    pub ca_file: Option<PathBuf>,
    /// `host` or `host:port` (or `*`) whose TLS certificates are not verified.
    pub insecure_hosts: Vec<String>,
    /// Directories `file://` URLs may read below; empty refuses every `file://` URL.
    pub file_roots: Vec<PathBuf>,
    pub oci: oci::OciSettings,
}

impl FetchError {
    /// The cache could not take the bytes (a full disk, an I/O error), as opposed to upstream failing.
    pub(crate) fn sink(url: &str) -> impl FnOnce(io::Error) -> FetchError + '_ {
        move |source| FetchError::Sink {
            url: url.to_string(),
            source,
        }
    }
}

/// Errors of the fetch layer. `url` fields never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not found upstream ({detail})")]
    NotFound { url: String, detail: String },
    #[error("{url}: upstream refused the credentials (HTTP {status})")]
    Unauthenticated { url: String, status: u16 },
    #[error("{url}: upstream denied access (HTTP {status})")]
    Forbidden { url: String, status: u16 },
    #[error("{url}: upstream answered HTTP {status}, which is not retried")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Blocked {
        url: String,
        #[source]
        source: guard::Blocked,
    },
    #[error("{url}: file urls are refused: no --file-root is configured")]
    NoFileRoots { url: String },
    #[error("{url}: path is outside the allowed file roots")]
    OutsideRoots { url: String },
    /// `kind`: what the path is instead ("a FIFO", "a character device", ...).
    #[error("{url}: not a regular file but {kind}")]
    NotAFile { url: String, kind: &'static str },
    /// `what`: the module, or the manifest (which has its own, smaller limit).
    #[error("{url}: {what} is larger than the {limit}-byte limit")]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    #[error("{url}: {source}")]
    Unbox {
        url: String,
        #[source]
        source: unbox::UnboxError,
    },
    #[error("{url}: tls: {cause}")]
    Tls { url: String, cause: String },
    #[error("{url}: upstream unavailable after {attempts} attempt(s): {cause}")]
    Unavailable { url: String, attempts: u32, cause: String },
    #[error("{url}: timed out after {attempts} attempt(s): {cause}")]
    Timeout { url: String, attempts: u32, cause: String },
    #[error("{url}: reading: {source}")]
    Read {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{url}: writing to the cache: {source}")]
    Sink {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{url}: {what} digest mismatch: {mismatch}; nothing was stored")]
    DigestMismatch {
        url: String,
        what: String,
        mismatch: Mismatch,
    },
    #[error("{url}: {reason}")]
    Format { url: String, reason: String },
    #[error("{url}: {what} is {actual} bytes, its descriptor says {expected}; nothing was stored")]
    SizeMismatch {
        url: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("pull secret: {0}")]
    BadSecret(#[from] oci::auth::SecretError),
    #[error("fetcher configuration: {0}")]
    Config(String),
    #[error("{url}: {source}")]
    CredentialProvider {
        url: String,
        #[source]
        source: oci::provider::ProviderError,
    },
}

/// Every fetcher, chosen by URL scheme.
pub(crate) struct Fetchers {
    http: http::HttpFetcher,
    file: file::FileFetcher,
    oci: oci::OciFetcher,
    max_bytes: u64,
}

impl Fetchers {
    pub(crate) fn new(
        settings: &Settings,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Self, FetchError> {
        let clients = net::Clients::new(settings)?;
        Ok(Fetchers {
            oci: oci::OciFetcher::new(
                settings,
                clients.verified.clone(),
                clients.unverified.clone(),
                clients.guard.clone(),
                metrics,
            ),
            http: http::HttpFetcher::new(settings, clients),
            file: file::FileFetcher::new(settings)?,
            max_bytes: settings.max_bytes,
        })
    }

    pub(crate) fn oci(&self) -> &oci::OciFetcher {
        &self.oci
    }

    /// The cap on downloaded and on unwrapped sizes.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The detached signature bundle of an http(s) module at `bundle_url`; `Ok(None)` when there is none.
    pub(crate) async fn http_bundle(&self, bundle_url: &url::Url) -> Result<Option<Vec<u8>>, FetchError> {
        self.http
            .document(bundle_url, oci::signatures::MAX_SIGNATURE_BYTES, "signature bundle")
            .await
    }

    /// Fetches `url` into `sink`. `keyring` holds the request's registry credentials (OCI only); `held`
    /// says what need not be downloaded again (OCI only: http and file content is only known once read).
    pub(crate) async fn fetch(
        &self,
        url: &ModuleUrl,
        conditions: &Conditions,
        keyring: &oci::Keyring,
        held: &dyn Held,
        sink: &mut dyn Sink,
    ) -> Result<Fetched, FetchError> {
        match url {
            ModuleUrl::Http(u) => self.http.fetch(u, conditions, sink).await,
            ModuleUrl::File(p) => self.file.fetch(url, p, sink).await,
            ModuleUrl::Oci(image) => {
                self.oci
                    .fetch(&url.to_string(), image, conditions, keyring, held, sink)
                    .await
            }
        }
    }
}
