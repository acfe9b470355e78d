//! The cache's side of the OCI Distribution pull-through endpoint (`--registry-listen`): manifests, blobs and
//! referrers of upstream images, answered through the same cache, single flight, pull policy, signature
//! checks and access rules as the gRPC API. No HTTP here: the endpoint (`crate::registry`) only translates.
//!
//! - A manifest by tag or digest makes sure the module it leads to is cached (as a gRPC Fetch of
//!   `oci://REGISTRY/REPOSITORY:TAG` would), then answers the manifest (or index) exactly as upstream served it,
//!   so its digest is upstream's.
//! - A blob by digest is the module from the store when it is one; any other blob of the repository (an image
//!   config, a tar+gzip layer) is fetched from upstream once, checked against its digest, and kept.
//! - Referrers are asked of upstream with the client's credentials and answered as upstream sent them.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};

use crate::access::{self, Verdict};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::oci::auth::DockerConfig;
use crate::fetch::Fetchers;
use crate::policy::PullPolicy;
use crate::signature::{Mode, Target};
use crate::source::{ImageRef, ModuleUrl};
use crate::store::{OpenBlob, Store, StoreError};

/// What one endpoint request names: an image repository in an upstream registry, and the credentials the
/// client sent with it (never stored).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `host[:port]` as in an `oci://` reference (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path (`org/plugin`; Docker Hub's one-segment names become `library/x`).
    pub repository: String,
    /// The client's Basic (or Bearer) credentials, as a pull secret for `registry`.
    pub secret: Option<DockerConfig>,
}

/// A manifest reference: a tag, or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Sha256),
}

/// A manifest, index or other JSON document as upstream served it.
#[derive(Clone, Debug)]
pub struct Document {
    pub digest: Sha256,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What the registry endpoint asks of the cache; [`super::Cache`] answers it. A trait so that the endpoint's
/// HTTP handling is tested with a backend of its own.
pub trait RegistryBackend: Send + Sync + 'static {
    /// The manifest (or index) `reference` names in `upstream`, exactly as upstream serves it, once the module
    /// it leads to is cached, its signatures judged and the caller admitted.
    fn manifest<'a>(
        &'a self,
        upstream: &'a Upstream,
        reference: &'a ManifestRef,
    ) -> BoxFuture<'a, Result<Document, Error>>;

    /// A blob of the repository, opened for reading (the hold keeps it from eviction while it is sent).
    fn blob<'a>(&'a self, upstream: &'a Upstream, digest: Sha256) -> BoxFuture<'a, Result<OpenBlob, Error>>;

    /// The referrers index of `digest` in the repository, filtered by `artifact_type` when given.
    fn referrers<'a>(
        &'a self,
        upstream: &'a Upstream,
        digest: Sha256,
        artifact_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Document, Error>>;
}

/// Blob fetches through the endpoint started again when the blob keeps vanishing before it is opened.
const BLOB_RETRIES: usize = 3;

impl super::Cache {
    /// The core request for a manifest of the endpoint: what a gRPC Fetch of `oci://REGISTRY/REPO:TAG` (or
    /// `@sha256:…`) with the client's credentials would ask, under the default pull policy.
    fn upstream_request(upstream: &Upstream, reference: &ManifestRef) -> Result<super::Request, Error> {
        let raw = match reference {
            ManifestRef::Tag(tag) => format!("{}/{}:{tag}", upstream.registry, upstream.repository),
            ManifestRef::Digest(digest) => {
                format!("{}/{}@{}", upstream.registry, upstream.repository, digest.prefixed())
            }
        };
        Ok(super::Request {
            url: ModuleUrl::Oci(ImageRef::parse(&raw)?),
            expected: None,
            policy: PullPolicy::Unspecified,
            resource_name: String::new(),
            resource_version: String::new(),
            pull_secret: upstream.secret.clone(),
        })
    }

    /// The document the reference names, kept when its module was fetched.
    fn document_for(&self, key: &str, reference: &ManifestRef) -> Result<Option<Document>, Error> {
        let digest = match reference {
            ManifestRef::Digest(digest) => Some(*digest),
            ManifestRef::Tag(_) => self
                .store
                .index()
                .get_ref(key)?
                .and_then(|r| r.index_digest.or(r.manifest_digest)),
        };
        let Some(digest) = digest else {
            return Ok(None);
        };
        Ok(self
            .store
            .index()
            .get_document(&digest)?
            .map(|(media_type, bytes)| Document {
                digest,
                media_type,
                bytes: Bytes::from(bytes),
            }))
    }

    async fn endpoint_manifest(&self, upstream: &Upstream, reference: &ManifestRef) -> Result<Document, Error> {
        let req = Self::upstream_request(upstream, reference)?;
        let key = req.url.to_string();
        // Cached, judged and admitted as for any other caller; the bytes are not needed here.
        let (_module, blob) = self.get(&req).await?;
        drop(blob);
        if let Some(document) = self.document_for(&key, reference)? {
            return Ok(document);
        }
        // Cached before its manifest was kept: read the manifest again (the module is not downloaded again).
        let caller = super::LazyCaller {
            cache: self,
            req: &req,
            cell: Default::default(),
        };
        self.fetch_and_open(
            &req,
            &key,
            &caller,
            super::Revalidation::default(),
            super::Outcome::Refreshed,
        )
        .await?;
        self.document_for(&key, reference)?
            .ok_or_else(|| Error::Internal(format!("{key}: the manifest was fetched but not kept")))
    }

    /// A blob of the repository: from the store when the caller may have it, else from upstream with the
    /// caller's credentials (and then kept, as an artifact when it is not a module).
    async fn endpoint_blob(&self, upstream: &Upstream, digest: Sha256) -> Result<OpenBlob, Error> {
        let req = Self::upstream_request(upstream, &ManifestRef::Digest(digest))?;
        let ModuleUrl::Oci(image) = &req.url else {
            unreachable!("an endpoint request is an OCI reference")
        };
        let caller = self.caller(&req).await?;
        let key = format!("blob:{}/{}@{}", image.registry(), image.repository(), digest.prefixed());
        self.judge_blob(image, digest)?;
        for _ in 0..BLOB_RETRIES {
            if self.store.contains(&digest) {
                let record = self.store.index().get_access(&digest)?;
                match access::judge(record.as_ref(), caller.repository.as_deref(), &caller.fingerprint) {
                    Verdict::Allowed => match self.open(digest).await {
                        Ok(blob) => return Ok(blob),
                        Err(Error::Store(StoreError::NotFound(_))) => continue,
                        Err(e) => return Err(e),
                    },
                    // Private to these credentials' repository, or to another one: upstream decides.
                    Verdict::CheckRegistry | Verdict::NotVisible => {}
                }
            }
            self.blob_flight(&key, image, &caller, digest)
                .await
                .map_err(super::unshare)?;
            match self.open(digest).await {
                Ok(blob) => return Ok(blob),
                Err(Error::Store(StoreError::NotFound(_))) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Removed(key))
    }

    /// Under an `enforce` signature rule, a blob is served only when a verified manifest of the repository
    /// names it: a client must not get past the check by asking for blobs by digest.
    fn judge_blob(&self, image: &ImageRef, digest: Sha256) -> Result<(), Error> {
        let Some(policy) = self.policy() else {
            return Ok(());
        };
        let target = Target::Image {
            registry: image.registry(),
            repository: image.repository(),
        };
        if !policy.rule_for(&target).is_some_and(|r| r.mode() == Mode::Enforce) {
            return Ok(());
        }
        let prefix = format!("oci://{}/{}", image.registry(), image.repository());
        for (url, record) in self.store.index().refs()? {
            let in_repository = url
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'));
            let verified = record
                .verification
                .as_ref()
                .is_some_and(|v| v.verified && v.policy == policy.fingerprint());
            if !in_repository || !verified {
                continue;
            }
            for document in [&record.index_digest, &record.manifest_digest].into_iter().flatten() {
                if *document == digest {
                    return Ok(());
                }
                if let Some((_, body)) = self.store.index().get_document(document)? {
                    if names_blob(&body, digest) {
                        return Ok(());
                    }
                }
            }
        }
        Err(Error::InvalidArgument(format!(
            "{prefix}: blob {} belongs to no verified manifest of the repository; ask for the manifest first (a signature rule enforces it)",
            digest.prefixed()
        )))
    }

    /// Joins the running fetch of this blob for these credentials, or starts one.
    fn blob_flight(&self, key: &str, image: &ImageRef, caller: &super::Caller, digest: Sha256) -> super::Flight {
        let flight_key = format!("{key}\n{}", caller.fingerprint);
        let mut flights = self.flights.lock().unwrap();
        if let Some((running, _)) = flights.get(&flight_key) {
            return running.clone();
        }
        let job = BlobJob {
            store: self.store.clone(),
            fetchers: self.fetchers.clone(),
            key: key.to_string(),
            image: image.clone(),
            caller: caller.clone(),
            digest,
        };
        let registry = self.flights.clone();
        let cleanup_key = flight_key.clone();
        let handle = self.tasks.spawn(async move {
            let result = job.run().await.map_err(Arc::new);
            registry.lock().unwrap().remove(&cleanup_key);
            result
        });
        let flight = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(Arc::new(Error::Internal(format!("blob task failed: {e}")))))
        }
        .boxed()
        .shared();
        flights.insert(flight_key, (flight.clone(), Default::default()));
        flight
    }
}

/// True when a manifest or index names `digest` among its descriptors (config, layers, manifests).
fn names_blob(body: &[u8], digest: Sha256) -> bool {
    #[derive(serde::Deserialize, Default)]
    struct Descriptor {
        #[serde(default)]
        digest: String,
    }
    #[derive(serde::Deserialize, Default)]
    struct Manifest {
        #[serde(default)]
        config: Descriptor,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let Ok(manifest) = serde_json::from_slice::<Manifest>(body) else {
        return false;
    };
    let wanted = digest.prefixed();
    std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .chain(&manifest.manifests)
        .any(|d| d.digest == wanted)
}

/// One upstream fetch of a blob for the endpoint, run as an owned task.
struct BlobJob {
    store: Arc<Store>,
    fetchers: Arc<Fetchers>,
    key: String,
    image: ImageRef,
    caller: super::Caller,
    digest: Sha256,
}

impl BlobJob {
    async fn run(self) -> Result<super::Landed, Error> {
        let mut ingest = self.store.ingest()?;
        let downloaded = std::sync::atomic::AtomicU64::new(0);
        let mut sink = super::Counted {
            ingest: &mut ingest,
            bytes: &downloaded,
        };
        let meta = self
            .fetchers
            .oci()
            .blob(&self.key, &self.image, &self.caller.keyring, self.digest, &mut sink)
            .await?;
        let store = self.store.clone();
        let committed = tokio::task::spawn_blocking(move || store.commit(ingest, Some(self.digest)))
            .await
            .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
        let hold = Arc::new(self.store.hold(committed.digest));
        let recorded = (|| {
            if committed.created {
                self.store.mark_artifact(&committed.digest)?;
            }
            let existing = self.store.index().get_access(&committed.digest)?;
            if existing.is_some() || meta.authenticated {
                let updated = access::prove(
                    existing,
                    self.caller.repository.as_deref(),
                    &self.caller.fingerprint,
                    !meta.authenticated,
                );
                self.store.index().put_access(&committed.digest, &updated)?;
            }
            Ok::<_, StoreError>(())
        })();
        if let Err(e) = recorded {
            if committed.created {
                self.store.discard(&committed.digest);
            }
            return Err(e.into());
        }
        tracing::info!(blob = %self.key, "blob fetched for the registry endpoint");
        Ok(super::Landed {
            digest: committed.digest,
            manifest_digest: None,
            fetched_at_ms: crate::store::now_ms(),
            _hold: hold,
            verification: None,
        })
    }
}

impl RegistryBackend for super::Cache {
    fn manifest<'a>(
        &'a self,
        upstream: &'a Upstream,
        reference: &'a ManifestRef,
    ) -> BoxFuture<'a, Result<Document, Error>> {
        self.endpoint_manifest(upstream, reference).boxed()
    }

    fn blob<'a>(&'a self, upstream: &'a Upstream, digest: Sha256) -> BoxFuture<'a, Result<OpenBlob, Error>> {
        self.endpoint_blob(upstream, digest).boxed()
    }

    fn referrers<'a>(
        &'a self,
        upstream: &'a Upstream,
        digest: Sha256,
        artifact_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Document, Error>> {
        async move {
            let req = Self::upstream_request(upstream, &ManifestRef::Digest(digest))?;
            let ModuleUrl::Oci(image) = &req.url else {
                unreachable!("an endpoint request is an OCI reference")
            };
            let caller = self.caller(&req).await?;
            let key = req.url.to_string();
            let found = self
                .fetchers
                .oci()
                .referrers(&key, image, &caller.keyring, digest)
                .await?;
            let index = match found {
                Some(index) => filtered(index.body.to_vec(), artifact_type),
                // No referrers is an empty index, as the spec answers.
                None => serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": crate::fetch::oci::formats::OCI_INDEX,
                    "manifests": [],
                }))
                .expect("a JSON value serializes"),
            };
            Ok(Document {
                digest: Sha256::of(&index),
                media_type: crate::fetch::oci::formats::OCI_INDEX.to_string(),
                bytes: Bytes::from(index),
            })
        }
        .boxed()
    }
}

/// The referrers index with only the manifests of `artifact_type` (all when `None`); unreadable JSON is
/// answered as it came.
fn filtered(index: Vec<u8>, artifact_type: Option<&str>) -> Vec<u8> {
    let Some(wanted) = artifact_type else {
        return index;
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&index) else {
        return index;
    };
    if let Some(manifests) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        manifests.retain(|m| m.get("artifactType").and_then(|t| t.as_str()) == Some(wanted));
    }
    serde_json::to_vec(&value).unwrap_or(index)
}
