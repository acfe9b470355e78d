//! The `oci://` fetcher. Two phases, as Istio does it: resolve the tag to a manifest digest first (so a
//! re-check that finds the same digest downloads nothing), then fetch the manifest (through an index
//! when there is one) and the one blob that holds the module. Every manifest and blob is verified
//! against its digest before it is handed on.

pub mod auth;
mod challenge;
pub mod formats;
pub(crate) mod provider;
pub(crate) mod registry;
pub(crate) mod signatures;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use url::Url;

use self::auth::{Credentials, DockerConfig};
use self::formats::Document;
use self::provider::{CredentialProviders, ProviderConfig};
use self::registry::{Endpoint, RegistryClient, Session};
use super::guard::Guard;
use super::net::host_matches;
use super::{Conditions, FetchError, Fetched, Held, ManifestDoc, Meta, Sink};
use crate::digest::Sha256;
use crate::metrics::Metrics;
use crate::source::ImageRef;

/// Registry settings, filled in by [`crate::config`].
#[derive(Clone, Debug)]
pub(crate) struct OciSettings {
    /// `host[:port]` (or `*`) reachable over plain HTTP or HTTPS without verification.
    pub insecure_registries: Vec<String>,
    /// Mirrors per registry, in the order they are tried; the registry itself comes last.
    pub mirrors: Vec<(String, Url)>,
    /// Credentials for requests that bring no pull secret (the `--docker-config` file).
    pub default_credentials: DockerConfig,
    /// Kubelet credential providers (`--image-credential-provider-config`), asked when a request's pull
    /// secret has nothing for the registry.
    pub credential_providers: ProviderConfig,
    /// How long a credential provider plugin may run.
    pub provider_timeout: Duration,
    /// `os/arch[/variant]` chosen from an index when it has no Wasm platform.
    pub platform: String,
    pub max_manifest_bytes: u64,
    /// Mirrors (`host[:port]`) sent the request's credentials for the registry they stand in for (a wasmcache
    /// cluster tier checks them upstream per client); other mirrors get their own credentials only.
    pub forward_credentials: Vec<String>,
}

pub(crate) struct OciFetcher {
    client: RegistryClient,
    settings: OciSettings,
    providers: CredentialProviders,
    max_bytes: u64,
}

/// The credentials one request may use, in the kubelet's order: the request's pull secret; then, when it has
/// no entry for the image's registry, what the credential providers answered for the image; then the
/// `--docker-config` file. Made once per request by [`OciFetcher::keyring`], so that the access check and
/// the fetch use the same credentials.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keyring {
    secret: Option<DockerConfig>,
    provided: Option<DockerConfig>,
}

/// Docker Hub's registry API host; references name it `docker.io`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

fn is_docker_hub(registry: &str) -> bool {
    matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

impl OciFetcher {
    /// A fetcher with the registry settings of `settings.oci`, and its retries, deadline and size cap.
    pub(crate) fn new(
        settings: &super::Settings,
        verified: Client,
        unverified: Client,
        guard: Guard,
        metrics: Arc<Metrics>,
    ) -> Self {
        let oci = &settings.oci;
        OciFetcher {
            client: RegistryClient::new(verified, unverified, guard, settings.backoff.clone(), settings.deadline),
            providers: CredentialProviders::new(&oci.credential_providers, oci.provider_timeout, metrics),
            settings: oci.clone(),
            max_bytes: settings.max_bytes,
        }
    }

    /// The credentials a request with `secret` may use for `image` (see [`Keyring`]). Runs the credential
    /// providers that match the image when the secret has no entry for its registry.
    ///
    /// A provider that fails is logged, as the kubelet logs it, and the pull goes on with the other
    /// credentials: another provider's, or the `--docker-config` file's. When none of those has an entry for
    /// the registry either, the request fails with the provider's error rather than pulling anonymously
    /// without saying why.
    pub(crate) async fn keyring(
        &self,
        url: &str,
        image: &ImageRef,
        secret: Option<&DockerConfig>,
    ) -> Result<Keyring, FetchError> {
        let secret = secret.filter(|s| !s.is_empty()).cloned();
        let (registry, repository) = (image.registry(), image.repository());
        let has_entry = |config: &DockerConfig| !config.lookup(registry, repository).is_empty();
        if self.providers.is_empty() || secret.as_ref().is_some_and(has_entry) {
            return Ok(Keyring { secret, provided: None });
        }
        let provided = self.providers.provide(&image.repository_key()).await;
        for failure in &provided.failures {
            tracing::warn!(
                url,
                provider = failure.provider(),
                cause = %failure,
                "credential provider failed"
            );
        }
        if let Some(first) = provided.failures.first() {
            if !has_entry(&provided.keyring) {
                if !has_entry(&self.settings.default_credentials) {
                    return Err(FetchError::CredentialProvider {
                        url: url.to_string(),
                        source: first.clone(),
                    });
                }
                tracing::warn!(
                    url,
                    "using the --docker-config credentials instead of the failed credential provider's"
                );
            }
        }
        Ok(Keyring {
            secret,
            provided: Some(provided.keyring),
        })
    }

    /// The credentials used for `image` at its registry; `None` pulls anonymously.
    pub(crate) fn credentials(&self, image: &ImageRef, keyring: &Keyring) -> Option<Credentials> {
        self.credentials_for_host(image.registry(), image.repository(), keyring)
    }

    /// The first of: the pull secret's entry for `host`, the providers', the `--docker-config` file's.
    fn credentials_for_host(&self, host: &str, repository: &str, keyring: &Keyring) -> Option<Credentials> {
        [
            keyring.secret.as_ref(),
            keyring.provided.as_ref(),
            Some(&self.settings.default_credentials),
        ]
        .into_iter()
        .flatten()
        .find_map(|config| config.lookup(host, repository).into_iter().next().cloned())
    }

    /// The endpoints to try for a registry: its mirrors in order, then the registry itself.
    fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>, FetchError> {
        let mut out = Vec::new();
        for (name, mirror) in &self.settings.mirrors {
            let same = name.eq_ignore_ascii_case(registry) || (is_docker_hub(name) && is_docker_hub(registry));
            if same {
                out.push(Endpoint {
                    host: host_port(mirror),
                    insecure: host_matches(&self.settings.insecure_registries, mirror),
                    base: mirror.clone(),
                    ns: Some(registry.to_string()),
                });
            }
        }
        let host = if is_docker_hub(registry) {
            DOCKER_HUB_API
        } else {
            registry
        };
        let base = Url::parse(&format!("https://{host}"))
            .map_err(|e| FetchError::Config(format!("registry {host:?} is not a host name: {e}")))?;
        out.push(Endpoint {
            insecure: host_matches(&self.settings.insecure_registries, &base)
                || self.settings.insecure_registries.iter().any(|h| h.trim() == registry),
            host: registry.to_string(),
            base,
            ns: None,
        });
        Ok(out)
    }

    /// Fetches the module `image` names into `sink`, trying mirrors before the registry. With a
    /// `known_digest` in the conditions, a tag that still resolves to it downloads nothing; nor does a
    /// manifest, index or layer that `held` already has.
    pub(crate) async fn fetch(
        &self,
        url: &str,
        image: &ImageRef,
        conditions: &Conditions,
        keyring: &Keyring,
        held: &dyn Held,
        sink: &mut dyn Sink,
    ) -> Result<Fetched, FetchError> {
        let hosts = self.hosts(image, keyring)?;
        let last = hosts.len() - 1;
        for (i, (endpoint, credentials)) in hosts.iter().enumerate() {
            let session = Session::new(endpoint, image.repository(), credentials.as_ref(), url);
            match self.fetch_from(&session, image, conditions, held, sink).await {
                Ok(fetched) => return Ok(fetched),
                Err(e) if i < last => log_mirror_failure(url, endpoint, &e),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the registry itself is always the last endpoint")
    }

    async fn fetch_from(
        &self,
        s: &Session<'_>,
        image: &ImageRef,
        conditions: &Conditions,
        held: &dyn Held,
        sink: &mut dyn Sink,
    ) -> Result<Fetched, FetchError> {
        let max_manifest = self.settings.max_manifest_bytes;
        let reference = image.manifest_reference();
        if let (Some(known), None) = (conditions.known_digest, image.digest()) {
            if self.client.manifest_digest(s, &reference, max_manifest).await? == known {
                return Ok(Fetched::NotModified(Meta {
                    authenticated: s.authenticated(),
                    ..Meta::default()
                }));
            }
        }
        let top = self.client.manifest(s, &reference, max_manifest).await?;
        if let Some(wanted) = image.digest() {
            wanted
                .check(top.digest)
                .map_err(|mismatch| FetchError::DigestMismatch {
                    url: s.url.to_string(),
                    what: "manifest".into(),
                    mismatch,
                })?;
        }
        if conditions.known_digest == Some(top.digest) {
            return Ok(Fetched::NotModified(Meta {
                authenticated: s.authenticated(),
                ..Meta::default()
            }));
        }
        let mut documents = vec![document(&top)];
        let held_image = |digest: Sha256, index: Option<Sha256>, documents: &Vec<ManifestDoc>| {
            held.image(&digest).map(|h| Fetched::Held {
                meta: Meta {
                    manifest_digest: Some(h.manifest),
                    // A held index leads to the platform manifest recorded with it.
                    index_digest: index.or((h.manifest != digest).then_some(digest)),
                    authenticated: s.authenticated(),
                    documents: documents.clone(),
                    ..Meta::default()
                },
                module: h.module,
            })
        };
        if let Some(fetched) = held_image(top.digest, None, &documents) {
            return Ok(fetched);
        }
        let format_err = |e: formats::FormatError| FetchError::Format {
            url: s.url.to_string(),
            reason: e.to_string(),
        };
        let (manifest, manifest_digest, index_digest) =
            match formats::parse(top.content_type.as_deref(), &top.body).map_err(format_err)? {
                Document::Image(m) => (m, top.digest, None),
                Document::Index(index) => {
                    let entry = formats::select_platform(&index, &self.settings.platform).map_err(format_err)?;
                    let digest = parse_descriptor_digest(s.url, entry.digest().as_ref())?;
                    let inner = self.client.manifest(s, &digest.prefixed(), max_manifest).await?;
                    digest
                        .check(inner.digest)
                        .map_err(|mismatch| FetchError::DigestMismatch {
                            url: s.url.to_string(),
                            what: "platform manifest".into(),
                            mismatch,
                        })?;
                    documents.push(document(&inner));
                    if let Some(fetched) = held_image(digest, Some(top.digest), &documents) {
                        return Ok(fetched);
                    }
                    match formats::parse(inner.content_type.as_deref(), &inner.body).map_err(format_err)? {
                        Document::Image(m) => (m, digest, Some(top.digest)),
                        Document::Index(_) => {
                            return Err(FetchError::Format {
                                url: s.url.to_string(),
                                reason: "an index inside an index is not supported".into(),
                            })
                        }
                    }
                }
            };
        let selected = formats::select_layer(&manifest).map_err(format_err)?;
        let layer_digest = parse_descriptor_digest(s.url, selected.layer.digest().as_ref())?;
        let size = Some(selected.layer.size()).filter(|&n| n > 0);
        tracing::debug!(url = s.url, format = selected.format, layer = %layer_digest, "module layer selected");
        let meta = Meta {
            manifest_digest: Some(manifest_digest),
            index_digest,
            etag: None,
            authenticated: s.authenticated(),
            pick: selected.pick,
            documents,
        };
        if held.module(&layer_digest) {
            // The layer is the module itself, and it is held.
            return Ok(Fetched::Held {
                meta,
                module: layer_digest,
            });
        }
        self.client
            .blob(s, (layer_digest, size), (self.max_bytes, "module"), sink)
            .await?;
        Ok(Fetched::Complete(Meta {
            authenticated: s.authenticated(),
            ..meta
        }))
    }

    /// The signatures published for `digests` (the image's manifest digests), from the first host that
    /// answers, mirrors first, as the module itself is fetched.
    pub(crate) async fn signatures(
        &self,
        url: &str,
        image: &ImageRef,
        keyring: &Keyring,
        digests: &[Sha256],
    ) -> Result<crate::signature::Evidence, FetchError> {
        let hosts = self.hosts(image, keyring)?;
        let last = hosts.len() - 1;
        for (i, (endpoint, credentials)) in hosts.iter().enumerate() {
            let session = Session::new(endpoint, image.repository(), credentials.as_ref(), url);
            match signatures::gather(&self.client, &session, digests, self.settings.max_manifest_bytes).await {
                Ok(evidence) => return Ok(evidence),
                Err(e) if i < last => log_mirror_failure(url, endpoint, &e),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the registry itself is always the last endpoint")
    }

    /// Any blob of `image`'s repository by digest (an image config, a layer), checked against the digest as it
    /// streams into `sink`; mirrors first, as a module is fetched. For the registry endpoint.
    pub(crate) async fn blob(
        &self,
        url: &str,
        image: &ImageRef,
        keyring: &Keyring,
        digest: Sha256,
        sink: &mut dyn Sink,
    ) -> Result<Meta, FetchError> {
        let hosts = self.hosts(image, keyring)?;
        let last = hosts.len() - 1;
        for (i, (endpoint, credentials)) in hosts.iter().enumerate() {
            let session = Session::new(endpoint, image.repository(), credentials.as_ref(), url);
            let result = self
                .client
                .blob(&session, (digest, None), (self.max_bytes, "blob"), sink)
                .await;
            match result {
                Ok(()) => {
                    return Ok(Meta {
                        authenticated: session.authenticated(),
                        ..Meta::default()
                    })
                }
                Err(e) if i < last => log_mirror_failure(url, endpoint, &e),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the registry itself is always the last endpoint")
    }

    /// The referrers index of `digest` in `image`'s repository (the API, else the `sha256-<hex>` tag), as the
    /// registry serves it; `Ok(None)` when there is neither.
    pub(crate) async fn referrers(
        &self,
        url: &str,
        image: &ImageRef,
        keyring: &Keyring,
        digest: Sha256,
    ) -> Result<Option<ManifestDoc>, FetchError> {
        let max = self.settings.max_manifest_bytes;
        let hosts = self.hosts(image, keyring)?;
        let last = hosts.len() - 1;
        for (i, (endpoint, credentials)) in hosts.iter().enumerate() {
            let session = Session::new(endpoint, image.repository(), credentials.as_ref(), url);
            let found = match self.client.referrers(&session, digest, max).await {
                Err(FetchError::NotFound { .. } | FetchError::Status { .. }) => {
                    match self.client.manifest(&session, &format!("sha256-{digest}"), max).await {
                        Err(FetchError::NotFound { .. }) => Ok(None),
                        other => other.map(Some),
                    }
                }
                other => other.map(Some),
            };
            match found {
                Ok(index) => return Ok(index.map(|index| document(&index))),
                Err(e) if i < last => log_mirror_failure(url, endpoint, &e),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the registry itself is always the last endpoint")
    }

    /// The hosts to try for `image`, mirrors first, each with the credentials to send it.
    fn hosts(&self, image: &ImageRef, keyring: &Keyring) -> Result<Vec<(Endpoint, Option<Credentials>)>, FetchError> {
        Ok(self
            .endpoints(image.registry())?
            .into_iter()
            .map(|endpoint| {
                // A mirror that is a wasmcache tier gets the request's credentials for the registry itself:
                // it passes them upstream and checks them per client, as the registry would.
                let credentials_host = match &endpoint.ns {
                    Some(registry) if host_matches(&self.settings.forward_credentials, &endpoint.base) => registry,
                    _ => &endpoint.host,
                };
                let credentials = self.credentials_for_host(credentials_host, image.repository(), keyring);
                (endpoint, credentials)
            })
            .collect())
    }

    /// Asks the registry (never a mirror: mirrors may not enforce the registry's permissions) whether
    /// these credentials may pull `image`. `Ok` when they may.
    pub(crate) async fn check_access(&self, url: &str, image: &ImageRef, keyring: &Keyring) -> Result<(), FetchError> {
        let endpoints = self.endpoints(image.registry())?;
        let origin = endpoints.last().expect("the registry itself is always an endpoint");
        let credentials = self.credentials_for_host(&origin.host, image.repository(), keyring);
        let session = Session::new(origin, image.repository(), credentials.as_ref(), url);
        self.client
            .manifest_digest(&session, &image.manifest_reference(), self.settings.max_manifest_bytes)
            .await
            .map(|_| ())
    }
}

fn parse_descriptor_digest(url: &str, digest: &str) -> Result<Sha256, FetchError> {
    if !digest.starts_with("sha256:") {
        return Err(FetchError::Format {
            url: url.to_string(),
            reason: format!(
                "descriptor digest {:?} is not sha256",
                digest.chars().take(80).collect::<String>()
            ),
        });
    }
    digest.parse().map_err(|e| FetchError::Format {
        url: url.to_string(),
        reason: format!("descriptor digest: {e}"),
    })
}

/// A fetched manifest as the registry endpoint will serve it again.
fn document(manifest: &registry::Manifest) -> ManifestDoc {
    ManifestDoc {
        digest: manifest.digest,
        media_type: formats::media_type(manifest.content_type.as_deref(), &manifest.body),
        body: bytes::Bytes::from(manifest.body.clone()),
    }
}

fn log_mirror_failure(url: &str, endpoint: &Endpoint, cause: &FetchError) {
    tracing::info!(url, mirror = %endpoint.host, %cause, "mirror failed; trying the next host");
}

fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}
