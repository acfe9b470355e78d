//! Checking what a fetch brought before it is committed: archives unwrapped, the Wasm header, the digest
//! a request expects; and the digests a signature may cover.

use std::io::Write;

use super::*;
use crate::digest::Sha256;
use crate::error::{Error, Found};
use crate::fetch::unbox::{self, Kind};
use crate::fetch::{FetchError, Meta};
use crate::store::{Committed, Ingest, Store, StoreError};

/// The digests an image's signatures may be for: the index the reference named, and the platform manifest.
pub(super) fn image_digests(meta: &Meta) -> Vec<Sha256> {
    meta.index_digest.into_iter().chain(meta.manifest_digest).collect()
}

/// The sha256 and sha512 of a downloaded payload as it came (before any unwrapping): what a detached
/// signature of an http(s) file covers.
pub(super) async fn payload_digests(raw: &Ingest) -> Result<judge::Signed, Error> {
    let sha256 = raw.sha256();
    let path = raw.path().to_path_buf();
    let sha512 = tokio::task::spawn_blocking(move || crate::digest::sha512_of_file(&path))
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
        .map_err(|e| Error::Internal(format!("hashing the downloaded payload: {e}")))?;
    Ok(judge::Signed::Blob { sha256, sha512 })
}

/// What a download hashed to, for a checksum mismatch: the module, and for OCI also the image manifest and
/// index, any of which the request could have named.
pub(super) fn candidates(module: Sha256, meta: &Meta) -> Box<Found> {
    Box::new(Found {
        module,
        manifest: meta.manifest_digest,
        index: meta.index_digest,
    })
}

/// Unwraps the downloaded payload when it is an archive, checks the Wasm header, and commits.
pub(super) fn finish_ingest(
    store: &Store,
    raw: Ingest,
    url: &str,
    expected: Option<Sha256>,
    max_bytes: u64,
    pick: unbox::Pick,
    (manifest, index): (Option<Sha256>, Option<Sha256>),
) -> Result<Committed, Error> {
    let unbox_err = |source| {
        Error::Fetch(FetchError::Unbox {
            url: url.to_string(),
            source,
        })
    };
    let head = unbox::read_head(raw.path()).map_err(unbox_err)?;
    let module = match unbox::sniff(&head) {
        Kind::Wasm => raw,
        Kind::Gzip | Kind::Tar => {
            let mut out = store.ingest()?;
            unbox::unwrap(raw.path(), &mut out, max_bytes, pick).map_err(unbox_err)?;
            out.flush().map_err(|e| Error::Fetch(FetchError::sink(url)(e)))?;
            out
        }
        Kind::Unknown => {
            // Neither Wasm nor an archive: this names what the payload starts with.
            unbox::check_wasm(&head).map_err(unbox_err)?;
            raw
        }
    };
    unbox::check_wasm(&unbox::read_head(module.path()).map_err(unbox_err)?).map_err(unbox_err)?;
    match store.commit(module, expected) {
        Ok(c) => Ok(c),
        Err(StoreError::DigestMismatch(mismatch)) => Err(Error::ChecksumMismatch {
            url: url.to_string(),
            expected: mismatch.expected,
            found: Box::new(Found {
                module: mismatch.actual,
                manifest,
                index,
            }),
        }),
        Err(e) => Err(e.into()),
    }
}
