//! Who may be served what: the caller worked out from its credentials, and the access check applied to a
//! cached module or to content a fetcher asks about.

use super::*;
use crate::access::{self, Verdict};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::http::has_credentials;
use crate::fetch::oci::auth::Credentials;
use crate::fetch::oci::Keyring;
use crate::fetch::{Held, HeldImage};
use crate::source::ModuleUrl;
use crate::store::Store;

/// Who is asking, for the access check: the repository of an OCI request, and the salted fingerprint
/// of the credentials it would use there, with the credentials themselves for the fetch.
#[derive(Clone, Debug)]
pub(super) struct Caller {
    pub(super) repository: Option<String>,
    pub(super) fingerprint: String,
    pub(super) keyring: Keyring,
}

/// The caller, worked out when first needed: a hit on a public module needs no credentials, so a credential
/// provider that fails or hangs does not stand between a request and a public cached module.
pub(super) struct LazyCaller<'a> {
    pub(super) cache: &'a Cache,
    pub(super) req: &'a Request,
    pub(super) cell: tokio::sync::OnceCell<Caller>,
}

impl LazyCaller<'_> {
    pub(super) async fn get(&self) -> Result<&Caller, Error> {
        self.cell.get_or_try_init(|| self.cache.caller(self.req)).await
    }
}

/// Whether a cached module may be served to a caller.
pub(super) enum Admission {
    Serve,
    /// Act as if it were not cached.
    Refetch,
}

impl Cache {
    /// The caller's repository and credential fingerprint (`anonymous` without credentials). For an OCI
    /// request this runs the credential providers that match the image, when its pull secret has nothing for
    /// the registry.
    pub(super) async fn caller(&self, req: &Request) -> Result<Caller, Error> {
        Ok(match &req.url {
            ModuleUrl::Oci(image) => {
                let oci = self.fetchers.oci();
                let keyring = oci
                    .keyring(&req.url.to_string(), image, req.pull_secret.as_ref())
                    .await?;
                Caller {
                    repository: Some(image.repository_key()),
                    fingerprint: oci.credentials(image, &keyring).map_or_else(
                        || access::ANONYMOUS.to_string(),
                        |c| hex::encode(c.fingerprint(&self.salt)),
                    ),
                    keyring,
                }
            }
            // An http(s) URL is its own scope: what its userinfo credentials fetched is private to them.
            ModuleUrl::Http(url) => Caller {
                repository: Some(req.url.to_string()),
                fingerprint: if has_credentials(url) {
                    let credentials = Credentials::new(url.username(), url.password().unwrap_or(""));
                    hex::encode(credentials.fingerprint(&self.salt))
                } else {
                    access::ANONYMOUS.to_string()
                },
                keyring: Keyring::default(),
            },
            ModuleUrl::File(_) => Caller {
                repository: None,
                fingerprint: access::ANONYMOUS.to_string(),
                keyring: Keyring::default(),
            },
        })
    }

    /// Applies the access check to a cached module; asks the registry when the caller's credentials
    /// are not proven yet, and returns its verdict as the error when it says no.
    pub(super) async fn admit(
        &self,
        req: &Request,
        key: &str,
        caller: &LazyCaller<'_>,
        digest: Sha256,
    ) -> Result<Admission, Error> {
        let record = self.store.index().get_access(&digest)?;
        if access::is_public(record.as_ref()) {
            return Ok(Admission::Serve);
        }
        let caller = caller.get().await?;
        match access::judge(record.as_ref(), caller.repository.as_deref(), &caller.fingerprint) {
            Verdict::Allowed => Ok(Admission::Serve),
            Verdict::NotVisible => Ok(Admission::Refetch),
            Verdict::CheckRegistry => {
                let ModuleUrl::Oci(image) = &req.url else {
                    return Ok(Admission::Refetch);
                };
                self.fetchers.oci().check_access(key, image, &caller.keyring).await?;
                tracing::info!(url = %key, "credentials proven at the registry for a cached private module");
                let anonymous = caller.fingerprint == access::ANONYMOUS;
                let updated = access::prove(record, caller.repository.as_deref(), &caller.fingerprint, anonymous);
                if let Err(e) = self.store.index().put_access(&digest, &updated) {
                    tracing::warn!(cause = %e, "could not record proven credentials");
                }
                Ok(Admission::Serve)
            }
        }
    }
}

/// The cache's answer to an OCI fetcher asking what it need not download: modules on disk that the
/// caller may be served (see [`access::judge`]). A private module is not offered to a caller whose
/// credentials are unproven for this repository, however its manifest names it: knowing a digest is
/// not access to the bytes, so such a caller downloads them from its own registry.
pub(super) struct HeldContent<'a> {
    pub(super) store: &'a Store,
    pub(super) caller: &'a Caller,
}

impl HeldContent<'_> {
    pub(super) fn servable(&self, digest: &Sha256) -> bool {
        self.store.contains(digest)
            && matches!(
                self.store.index().get_access(digest),
                Ok(record) if access::judge(record.as_ref(), self.caller.repository.as_deref(), &self.caller.fingerprint)
                    == Verdict::Allowed
            )
    }
}

impl Held for HeldContent<'_> {
    fn image(&self, digest: &Sha256) -> Option<HeldImage> {
        let refs = match self.store.index().refs() {
            Ok(refs) => refs,
            Err(e) => {
                tracing::warn!(cause = %e, "could not read the index; downloading");
                return None;
            }
        };
        refs.into_iter()
            .filter(|(_, r)| r.manifest_digest == Some(*digest) || r.index_digest == Some(*digest))
            .filter_map(|(_, r)| {
                Some(HeldImage {
                    module: r.digest,
                    manifest: r.manifest_digest?,
                })
            })
            .find(|h| self.servable(&h.module))
    }

    fn module(&self, digest: &Sha256) -> bool {
        self.servable(digest)
    }
}
