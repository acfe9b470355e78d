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

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::oci::auth::DockerConfig;
use crate::store::OpenBlob;

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
