//! Finding the signatures of an image in its registry, the two ways cosign publishes them:
//! - the tag `sha256-<hex>.sig`: an image manifest whose layers are simple-signing payloads, each with its
//!   signature (and certificate, chain, Rekor bundle) in annotations;
//! - the OCI 1.1 referrers of the manifest (`/v2/<name>/referrers/<digest>`, or, where the registry has no
//!   such API, the index at the fallback tag `sha256-<hex>`): artifacts holding sigstore bundles, or
//!   cosign's simple-signing artifacts.
//!
//! Only the material is gathered here, bounded in count and size; judging it is [`crate::signature`]'s job.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::registry::{RegistryClient, Session};
use crate::digest::Sha256;
use crate::fetch::{FetchError, MemorySink};
use crate::signature::{Evidence, FoundBundle, SimpleSignature};

/// Signatures (layers or bundles) gathered per image at most: a registry can't make us judge without end.
pub(crate) const MAX_SIGNATURES: usize = 32;
/// Largest signature payload or bundle read.
pub(crate) const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// cosign's artifact type for simple-signing signatures attached as referrers.
const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Sigstore bundle media types start with this (`…bundle+json;version=0.3`, `…bundle.v0.3+json`).
const BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
const REKOR_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// The parts of a manifest or index read here; everything else is ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Document {
    /// An artifact's type: `artifactType`, else its config's media type (the OCI 1.1 rule).
    fn artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }
}

/// Gathers the signatures published for each of `digests` (cosign tag and referrers) in one session.
pub(crate) async fn gather(
    client: &RegistryClient,
    s: &Session<'_>,
    digests: &[Sha256],
    max_manifest: u64,
) -> Result<Evidence, FetchError> {
    let mut evidence = Evidence::default();
    for &digest in digests {
        cosign_tag(client, s, digest, max_manifest, &mut evidence).await?;
        referrers(client, s, digest, max_manifest, &mut evidence).await?;
    }
    Ok(evidence)
}

fn full(evidence: &Evidence) -> bool {
    evidence.simple.len() + evidence.bundles.len() >= MAX_SIGNATURES
}

/// The tag `sha256-<hex>.sig`, when present.
async fn cosign_tag(
    client: &RegistryClient,
    s: &Session<'_>,
    digest: Sha256,
    max_manifest: u64,
    evidence: &mut Evidence,
) -> Result<(), FetchError> {
    let Some(manifest) = absent_is_none(client.manifest(s, &format!("sha256-{digest}.sig"), max_manifest).await)?
    else {
        return Ok(());
    };
    let document = parse(s, &manifest.body)?;
    simple_signatures(client, s, digest, &document, evidence).await
}

/// The simple-signing layers of a signature manifest.
async fn simple_signatures(
    client: &RegistryClient,
    s: &Session<'_>,
    digest: Sha256,
    document: &Document,
    evidence: &mut Evidence,
) -> Result<(), FetchError> {
    for layer in document.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING) {
        if full(evidence) {
            break;
        }
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        let payload = blob(client, s, layer).await?;
        evidence.simple.push(SimpleSignature {
            found_for: digest,
            payload,
            signature: signature.clone(),
            certificate: layer.annotations.get(CERTIFICATE_ANNOTATION).cloned(),
            chain: layer.annotations.get(CHAIN_ANNOTATION).cloned(),
            rekor_bundle: layer.annotations.get(REKOR_ANNOTATION).cloned(),
        });
    }
    Ok(())
}

/// The referrers of `digest` (API, else the fallback tag `sha256-<hex>`) that hold signatures.
async fn referrers(
    client: &RegistryClient,
    s: &Session<'_>,
    digest: Sha256,
    max_manifest: u64,
    evidence: &mut Evidence,
) -> Result<(), FetchError> {
    let index = match client.referrers(s, digest, max_manifest).await {
        Ok(index) => Some(index),
        // No referrers API here: the tag schema stands in for it.
        Err(FetchError::NotFound { .. } | FetchError::Status { .. }) => {
            absent_is_none(client.manifest(s, &format!("sha256-{digest}"), max_manifest).await)?
        }
        Err(e) => return Err(e),
    };
    let Some(index) = index else {
        return Ok(());
    };
    let index = parse(s, &index.body)?;
    let wanted = |t: Option<&str>| t.is_some_and(|t| t.starts_with(BUNDLE_PREFIX) || t == COSIGN_SIG_ARTIFACT);
    for entry in index.manifests.iter().filter(|m| wanted(m.artifact_type.as_deref())) {
        if full(evidence) {
            break;
        }
        let entry_digest = descriptor_digest(s, &entry.digest)?;
        let Some(manifest) = absent_is_none(client.manifest(s, &entry_digest.prefixed(), max_manifest).await)? else {
            continue;
        };
        let document = parse(s, &manifest.body)?;
        if document.artifact_type() == Some(COSIGN_SIG_ARTIFACT) {
            simple_signatures(client, s, digest, &document, evidence).await?;
            continue;
        }
        for layer in document
            .layers
            .iter()
            .filter(|l| l.media_type.starts_with(BUNDLE_PREFIX))
        {
            if full(evidence) {
                break;
            }
            let json = blob(client, s, layer).await?;
            evidence.bundles.push(FoundBundle {
                found_for: digest,
                json,
            });
        }
    }
    Ok(())
}

/// A signature blob, checked against its descriptor and bounded.
async fn blob(client: &RegistryClient, s: &Session<'_>, layer: &Descriptor) -> Result<Vec<u8>, FetchError> {
    let digest = descriptor_digest(s, &layer.digest)?;
    let size = u64::try_from(layer.size).ok().filter(|&n| n > 0);
    let mut bytes = MemorySink::default();
    client
        .blob(s, (digest, size), (MAX_SIGNATURE_BYTES, "signature"), &mut bytes)
        .await?;
    Ok(bytes.0)
}

fn descriptor_digest(s: &Session<'_>, digest: &str) -> Result<Sha256, FetchError> {
    super::parse_descriptor_digest(s.url, digest)
}

fn parse(s: &Session<'_>, body: &[u8]) -> Result<Document, FetchError> {
    serde_json::from_slice(body).map_err(|e| FetchError::Format {
        url: s.url.to_string(),
        reason: format!("signature manifest is not valid JSON: {e}"),
    })
}

/// A missing document (404) is no signature, not a failure.
fn absent_is_none<T>(result: Result<T, FetchError>) -> Result<Option<T>, FetchError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(FetchError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
