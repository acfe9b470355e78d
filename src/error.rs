//! The crate error over the layer errors, and the one place where errors become gRPC statuses (and, for the
//! OCI registry endpoint, HTTP statuses with the distribution spec's error codes).

use tonic::{Code, Status};

use crate::digest::{DigestError, Sha256};
use crate::fetch::unbox::UnboxError;
use crate::fetch::FetchError;
use crate::metrics::FailureReason;
use crate::source::UrlError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("invalid sha256: {0}")]
    Digest(#[from] DigestError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// `found` names what the download hashed to: the module's digest, and for OCI also the image
    /// manifest's and index's, any of which the request could have named.
    #[error("{url}: checksum mismatch: expected sha256:{expected}, got {found}; nothing was stored")]
    ChecksumMismatch {
        url: String,
        expected: Sha256,
        found: Box<Found>,
    },
    #[error("{url}: cached module sha256:{digest} was corrupt on disk and fetching it again failed: {cause}")]
    CorruptNotRefetched {
        url: String,
        digest: Sha256,
        #[source]
        cause: Box<Error>,
    },
    #[error("{0} is not cached")]
    NotCached(String),
    /// A `--verify-policy` rule in `enforce` mode refused the module; nothing was stored.
    #[error("{url}: signature check failed: {refused}; nothing was stored")]
    SignatureRefused {
        url: String,
        refused: crate::signature::Refused,
    },
    /// The module kept being removed (rm, eviction) before it could be served; the call may be retried.
    #[error("{0}: module was removed while it was being fetched; try again")]
    Removed(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error that several requests share (a single-flight fetch), reduced to what each needs.
    #[error("{message}")]
    Shared {
        code: Code,
        reason: FailureReason,
        message: String,
    },
}

/// What a download hashed to: the module, and for OCI also the image manifest and index the request could
/// have named instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub module: Sha256,
    pub manifest: Option<Sha256>,
    pub index: Option<Sha256>,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.manifest.is_none() && self.index.is_none() {
            return write!(f, "{}", self.module.prefixed());
        }
        write!(f, "module {}", self.module.prefixed())?;
        if let Some(m) = self.manifest {
            write!(f, ", image manifest {}", m.prefixed())?;
        }
        if let Some(i) = self.index {
            write!(f, ", index {}", i.prefixed())?;
        }
        Ok(())
    }
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Url(_) | Error::Digest(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Fetch(e) => fetch_code(e),
            Error::Store(e) => store_code(e),
            Error::ChecksumMismatch { .. } | Error::CorruptNotRefetched { .. } => Code::DataLoss,
            Error::NotCached(_) => Code::NotFound,
            Error::Removed(_) => Code::Unavailable,
            Error::SignatureRefused { .. } => Code::PermissionDenied,
            Error::Internal(_) => Code::Internal,
            Error::Shared { code, .. } => *code,
        }
    }

    /// A short label for logs and metrics ([`FailureReason::label`]).
    pub fn reason(&self) -> &'static str {
        self.failure().label()
    }

    /// Which failure this is, for metrics and logs.
    pub fn failure(&self) -> FailureReason {
        match self {
            Error::Url(_) | Error::Digest(_) | Error::InvalidArgument(_) => FailureReason::InvalidArgument,
            Error::ChecksumMismatch { .. } => FailureReason::ChecksumMismatch,
            Error::CorruptNotRefetched { .. } => FailureReason::CorruptBlob,
            Error::Fetch(FetchError::TooLarge { .. })
            | Error::Fetch(FetchError::Unbox {
                source: UnboxError::TooLarge { .. },
                ..
            }) => FailureReason::SizeLimit,
            Error::Fetch(FetchError::Unbox {
                source: UnboxError::NotWasm(_) | UnboxError::Archive(_),
                ..
            }) => FailureReason::InvalidModule,
            Error::Fetch(FetchError::DigestMismatch { .. } | FetchError::SizeMismatch { .. }) => {
                FailureReason::ChecksumMismatch
            }
            Error::Fetch(FetchError::Format { .. }) => FailureReason::ManifestFailure,
            Error::Fetch(FetchError::Sink { .. }) => FailureReason::StoreFailure,
            Error::Fetch(FetchError::Unauthenticated { .. } | FetchError::Forbidden { .. }) => {
                FailureReason::Unauthorized
            }
            Error::Fetch(FetchError::CredentialProvider { .. }) => FailureReason::CredentialProvider,
            Error::Fetch(_) => FailureReason::DownloadFailure,
            Error::Store(_) => FailureReason::StoreFailure,
            Error::NotCached(_) => FailureReason::NotCached,
            Error::Removed(_) => FailureReason::Removed,
            Error::SignatureRefused { .. } => FailureReason::SignatureRefused,
            Error::Internal(_) => FailureReason::Internal,
            Error::Shared { reason, .. } => *reason,
        }
    }
}

/// What a registry endpoint request asked for: a missing one is `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN` or (for
/// referrers, whose API answers 200 for any digest of a known repository) `NAME_UNKNOWN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryObject {
    Manifest,
    Blob,
    Referrers,
}

impl Error {
    /// The HTTP status and OCI distribution error code the registry endpoint answers this error with.
    ///
    /// It is read from the gRPC code and the metric reason only, never from the variant alone, so that an
    /// error shared by a single flight ([`Error::Shared`]) maps as the original does. 4xx codes are the
    /// spec's; 5xx use `UNAVAILABLE` (retry may help) and `UNKNOWN`, as CNCF distribution does.
    pub fn registry_status(&self, object: RegistryObject) -> (u16, &'static str) {
        match (self.code(), self.failure()) {
            (Code::InvalidArgument, _) if matches!(self, Error::Digest(_)) => (400, "DIGEST_INVALID"),
            (Code::InvalidArgument, _) => (400, "NAME_INVALID"),
            (Code::NotFound, _) => match object {
                RegistryObject::Manifest => (404, "MANIFEST_UNKNOWN"),
                RegistryObject::Blob => (404, "BLOB_UNKNOWN"),
                RegistryObject::Referrers => (404, "NAME_UNKNOWN"),
            },
            (Code::Unauthenticated, _) => (401, "UNAUTHORIZED"),
            (Code::PermissionDenied, _) => (403, "DENIED"),
            // Over --max-module-bytes or --max-manifest-bytes: this cache's policy refuses it, and asking
            // again will not help (429 would invite retries).
            (Code::ResourceExhausted, FailureReason::SizeLimit) => (403, "DENIED"),
            // Not a Wasm module, or an image in no layout the cache reads: not served here.
            (Code::FailedPrecondition, FailureReason::InvalidModule | FailureReason::ManifestFailure) => {
                (400, "UNSUPPORTED")
            }
            // Upstream answered a status that is not retried, or sent content that did not match its digest.
            (Code::FailedPrecondition, _) | (Code::DataLoss, FailureReason::ChecksumMismatch) => (502, "UNKNOWN"),
            (Code::DeadlineExceeded, _) => (504, "UNAVAILABLE"),
            // Upstream down, 5xx or 429 after every attempt, TLS, a failed credential provider.
            (Code::Unavailable, FailureReason::DownloadFailure | FailureReason::CredentialProvider) => {
                (502, "UNAVAILABLE")
            }
            // The cache itself: index down, disk full, the module removed while waiting (retry).
            (Code::Unavailable | Code::ResourceExhausted, _) => (503, "UNAVAILABLE"),
            _ => (500, "UNKNOWN"),
        }
    }
}

fn fetch_code(e: &FetchError) -> Code {
    match e {
        FetchError::NotFound { .. } => Code::NotFound,
        FetchError::Unauthenticated { .. } => Code::Unauthenticated,
        FetchError::Forbidden { .. }
        | FetchError::Blocked { .. }
        | FetchError::NoFileRoots { .. }
        | FetchError::OutsideRoots { .. } => Code::PermissionDenied,
        FetchError::Status { .. } | FetchError::NotAFile { .. } => Code::FailedPrecondition,
        FetchError::TooLarge { .. } => Code::ResourceExhausted,
        FetchError::Unbox { source, .. } => match source {
            UnboxError::TooLarge { .. } => Code::ResourceExhausted,
            UnboxError::NotWasm(_) | UnboxError::Archive(_) => Code::FailedPrecondition,
            UnboxError::Read(io) | UnboxError::Write(io) => io_code(io),
        },
        FetchError::Tls { .. } | FetchError::Unavailable { .. } => Code::Unavailable,
        FetchError::Timeout { .. } => Code::DeadlineExceeded,
        FetchError::Read { source, .. } => match source.kind() {
            std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
            _ => io_code(source),
        },
        FetchError::Sink { source, .. } => io_code(source),
        FetchError::DigestMismatch { .. } | FetchError::SizeMismatch { .. } => Code::DataLoss,
        FetchError::Format { .. } => Code::FailedPrecondition,
        FetchError::BadSecret(_) => Code::InvalidArgument,
        FetchError::Config(_) => Code::Internal,
        // The plugin's failure, not the request's: it may well succeed when asked again.
        FetchError::CredentialProvider { .. } => Code::Unavailable,
    }
}

fn store_code(e: &StoreError) -> Code {
    match e {
        StoreError::DigestMismatch(_) | StoreError::Corrupt(_) => Code::DataLoss,
        StoreError::NotFound(_) => Code::NotFound,
        _ if e.is_no_space() => Code::ResourceExhausted,
        StoreError::IndexUnavailable(_) => Code::Unavailable,
        _ => Code::Internal,
    }
}

fn io_code(e: &std::io::Error) -> Code {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

/// The status of a call whose `grpc-timeout` passed before the module was ready (the client's deadline, not
/// an error of the cache's).
pub fn call_deadline_status(timeout: std::time::Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call's deadline ({}) passed before the module was ready",
        humantime::format_duration(timeout)
    ))
}

impl From<&Error> for Status {
    fn from(e: &Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Mismatch;

    #[test]
    fn checksum_mismatch_is_data_loss_naming_both_digests() {
        let e = Error::ChecksumMismatch {
            url: "http://o/m.wasm".into(),
            expected: Sha256::of(b"a"),
            found: Box::new(Found {
                module: Sha256::of(b"b"),
                manifest: None,
                index: None,
            }),
        };
        let status = Status::from(&e);
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().contains(&Sha256::of(b"a").to_string()));
        assert!(status.message().contains(&Sha256::of(b"b").to_string()));
    }

    #[test]
    fn every_failure_counts_one_documented_reason() {
        let url = || "oci://r/x:v1".to_string();
        let cases = [
            (
                Error::Fetch(FetchError::Format {
                    url: url(),
                    reason: "no layout".into(),
                }),
                "manifest_failure",
            ),
            (
                Error::Fetch(FetchError::DigestMismatch {
                    url: url(),
                    what: "blob".into(),
                    mismatch: Mismatch {
                        expected: Sha256::of(b"a"),
                        actual: Sha256::of(b"b"),
                    },
                }),
                "checksum_mismatch",
            ),
            (
                Error::Fetch(FetchError::Unauthenticated {
                    url: url(),
                    status: 401,
                }),
                "unauthorized",
            ),
            (
                Error::Fetch(FetchError::TooLarge {
                    url: url(),
                    what: "module",
                    limit: 1,
                }),
                "size_limit",
            ),
            (
                Error::Fetch(FetchError::NotFound {
                    url: url(),
                    detail: "404".into(),
                }),
                "download_failure",
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
        }
    }

    /// Each row: the error, and what the registry endpoint answers for a manifest and for a blob.
    #[test]
    fn registry_statuses_follow_the_error() {
        let url = || "oci://r/x:v1".to_string();
        let shared = |code, reason| Error::Shared {
            code,
            reason,
            message: "shared".into(),
        };
        type Answer = (u16, &'static str);
        let cases: Vec<(Error, Answer, Answer)> = vec![
            (
                Error::Fetch(FetchError::NotFound {
                    url: url(),
                    detail: "404".into(),
                }),
                (404, "MANIFEST_UNKNOWN"),
                (404, "BLOB_UNKNOWN"),
            ),
            (
                Error::Store(StoreError::NotFound(Sha256::of(b"x"))),
                (404, "MANIFEST_UNKNOWN"),
                (404, "BLOB_UNKNOWN"),
            ),
            (
                Error::Fetch(FetchError::Unauthenticated {
                    url: url(),
                    status: 401,
                }),
                (401, "UNAUTHORIZED"),
                (401, "UNAUTHORIZED"),
            ),
            (
                Error::Fetch(FetchError::Forbidden {
                    url: url(),
                    status: 403,
                }),
                (403, "DENIED"),
                (403, "DENIED"),
            ),
            (
                Error::Digest(crate::digest::DigestError::NotHex),
                (400, "DIGEST_INVALID"),
                (400, "DIGEST_INVALID"),
            ),
            (
                Error::InvalidArgument("bad".into()),
                (400, "NAME_INVALID"),
                (400, "NAME_INVALID"),
            ),
            (
                Error::Fetch(FetchError::TooLarge {
                    url: url(),
                    what: "module",
                    limit: 1,
                }),
                (403, "DENIED"),
                (403, "DENIED"),
            ),
            (
                Error::Fetch(FetchError::Format {
                    url: url(),
                    reason: "no layout".into(),
                }),
                (400, "UNSUPPORTED"),
                (400, "UNSUPPORTED"),
            ),
            (
                Error::Fetch(FetchError::Status {
                    url: url(),
                    status: 418,
                }),
                (502, "UNKNOWN"),
                (502, "UNKNOWN"),
            ),
            (
                Error::Fetch(FetchError::Unavailable {
                    url: url(),
                    attempts: 5,
                    cause: "503".into(),
                }),
                (502, "UNAVAILABLE"),
                (502, "UNAVAILABLE"),
            ),
            (
                Error::Fetch(FetchError::Timeout {
                    url: url(),
                    attempts: 5,
                    cause: "slow".into(),
                }),
                (504, "UNAVAILABLE"),
                (504, "UNAVAILABLE"),
            ),
            (Error::Removed(url()), (503, "UNAVAILABLE"), (503, "UNAVAILABLE")),
            (
                Error::Fetch(FetchError::sink("oci://r/x")(std::io::Error::from_raw_os_error(
                    libc::ENOSPC,
                ))),
                (503, "UNAVAILABLE"),
                (503, "UNAVAILABLE"),
            ),
            (Error::Internal("bug".into()), (500, "UNKNOWN"), (500, "UNKNOWN")),
            // A single flight's shared error keeps the mapping of the error it stands for.
            (
                shared(Code::NotFound, FailureReason::DownloadFailure),
                (404, "MANIFEST_UNKNOWN"),
                (404, "BLOB_UNKNOWN"),
            ),
            (
                shared(Code::Unauthenticated, FailureReason::Unauthorized),
                (401, "UNAUTHORIZED"),
                (401, "UNAUTHORIZED"),
            ),
            (
                shared(Code::ResourceExhausted, FailureReason::SizeLimit),
                (403, "DENIED"),
                (403, "DENIED"),
            ),
            (
                shared(Code::Unavailable, FailureReason::DownloadFailure),
                (502, "UNAVAILABLE"),
                (502, "UNAVAILABLE"),
            ),
        ];
        for (error, manifest, blob) in cases {
            assert_eq!(error.registry_status(RegistryObject::Manifest), manifest, "{error}");
            assert_eq!(error.registry_status(RegistryObject::Blob), blob, "{error}");
        }
        let missing = Error::NotCached("x".into());
        assert_eq!(
            missing.registry_status(RegistryObject::Referrers),
            (404, "NAME_UNKNOWN")
        );
    }

    #[test]
    fn full_disk_is_resource_exhausted() {
        let e = Error::Fetch(FetchError::sink("http://o/m.wasm")(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
        assert_eq!(e.code(), Code::ResourceExhausted);
    }
}
