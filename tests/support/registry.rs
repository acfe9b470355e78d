//! A real OCI registry for the OCI tests: Debian's `docker-registry` (distribution 2.8) on a free loopback port,
//! a counting reverse proxy that the daemon talks to, and builders that push every image format the daemon
//! reads through the registry's own HTTP API.
//!
//! The registry is started once per test binary (`Registry::shared_plain`, `Registry::shared_tls_auth`) and
//! each test pushes to repositories named after itself. Each test puts its own [`Proxy`] in front of it, so the
//! request counts a test asserts are its own (Istio's `wantNumRequest`). Pushes go to the registry directly and
//! are never counted.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::{sha256_hex, tar_gz, wasm_module, Daemon};

/// Where Debian's package `docker-registry` installs the binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const REGISTRY_STARTUP: Duration = Duration::from_secs(20);

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const CNCF_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const CNCF_WASM_LAYER: &str = "application/wasm";
pub const WASM_TO_OCI_CONFIG: &str = "application/vnd.wasm.config.v1+json";
pub const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub const SOLO_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
pub const SOLO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// The htpasswd users of a registry with auth: (user, password).
pub const USER_A: (&str, &str) = ("alice", "pw-alice-5f1c9e");
pub const USER_B: (&str, &str) = ("bob", "pw-bob-72d4a0");

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

// ---------------------------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------------------------

/// A running `docker-registry serve` with its own temp dir (config, storage root, TLS files, htpasswd, log).
///
/// The process runs under a small `sh` guard that reads its stdin until EOF, then stops the registry and
/// removes the temp dir. Dropping the `Registry` closes that stdin; so does the end of the test process, which
/// is what stops a shared registry that lives in a `static` and is never dropped.
pub struct Registry {
    dir: PathBuf,
    addr: SocketAddr,
    tls: Option<RegistryTls>,
    users: Vec<(String, String)>,
    guard: Mutex<Option<(Child, ChildStdin)>>,
}

/// Where a token-auth registry sends clients for tokens, and what it checks in them: the `aud` claim (`service`),
/// the `iss` claim, and the signature against the certificates in `root_cert_pem`.
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_pem: String,
}

/// The TLS material of an HTTPS registry: a fresh test CA (unknown to every trust store) and a leaf for the IP
/// 127.0.0.1, which the counting proxy presents too.
struct RegistryTls {
    ca_file: PathBuf,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
}

impl Registry {
    /// The plain-HTTP registry without auth shared by the tests of this binary, started on first use.
    pub fn shared_plain() -> &'static Registry {
        static PLAIN: OnceLock<Registry> = OnceLock::new();
        PLAIN.get_or_init(|| Registry::start(false))
    }

    /// A second plain-HTTP registry of this binary (e.g. a mirror), independent of `shared_plain`.
    pub fn shared_plain_second() -> &'static Registry {
        static SECOND: OnceLock<Registry> = OnceLock::new();
        SECOND.get_or_init(|| Registry::start(false))
    }

    /// The HTTPS registry with htpasswd auth (users `USER_A` and `USER_B`) shared by the tests of this binary.
    pub fn shared_tls_auth() -> &'static Registry {
        static TLS_AUTH: OnceLock<Registry> = OnceLock::new();
        TLS_AUTH.get_or_init(|| Registry::start(true))
    }

    /// Starts a registry of its own: plain HTTP without auth, or (`tls_auth`) HTTPS with htpasswd basic auth.
    /// Fails the test, never skips it, when the binary is missing.
    pub fn start(tls_auth: bool) -> Registry {
        Registry::start_with(tls_auth, None)
    }

    /// Starts a plain-HTTP registry that serves `storage` (another registry's storage root, where the fixtures
    /// were pushed without auth) and takes only bearer tokens from `token` (distribution's `auth.token`).
    pub fn start_token_auth(storage: &Path, token: &TokenAuth) -> Registry {
        Registry::start_with(false, Some((storage, token)))
    }

    fn start_with(tls_auth: bool, token: Option<(&Path, &TokenAuth)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: the OCI tests drive the real registry; install the Debian package \
             docker-registry (apt-get install docker-registry), as .ci/run does"
        );
        let dir = tempfile::Builder::new()
            .prefix("wasmcache-registry")
            .tempdir()
            .expect("registry temp dir")
            .keep();
        let root = dir.join("root");
        std::fs::create_dir(&root).expect("registry storage root");

        let tls = tls_auth.then(|| write_tls_files(&dir));
        let users: Vec<(String, String)> = if tls_auth || token.is_some() {
            [USER_A, USER_B]
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect()
        } else {
            Vec::new()
        };
        if tls_auth {
            let mut htpasswd = String::new();
            for (user, password) in &users {
                // bcrypt is the only scheme the registry accepts; the lowest cost keeps each login fast.
                let hash = bcrypt::hash(password, 4).expect("bcrypt");
                htpasswd.push_str(&format!("{user}:{hash}\n"));
            }
            std::fs::write(dir.join("htpasswd"), htpasswd).expect("write htpasswd");
        }

        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let served_root = token.map_or(root.clone(), |(storage, _)| storage.to_path_buf());
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: wasmcache-test-secret\n",
            root = served_root.display(),
        );
        if let Some((_, token)) = token {
            std::fs::write(dir.join("token-root.pem"), &token.root_cert_pem).expect("write token-root.pem");
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}/token-root.pem\n",
                token.realm,
                token.service,
                token.issuer,
                dir.display()
            ));
        }
        if tls_auth {
            config.push_str(&format!(
                "  tls:\n    certificate: {dir}/cert.pem\n    key: {dir}/key.pem\n\
                 auth:\n  htpasswd:\n    realm: wasmcache-test\n    path: {dir}/htpasswd\n",
                dir = dir.display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");

        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                r#""$1" serve "$2" </dev/null >>"$3/registry.log" 2>&1 & pid=$!
                   cat >/dev/null
                   kill "$pid" 2>/dev/null; wait "$pid"; rm -rf "$3""#,
            )
            .arg("sh")
            .arg(REGISTRY_BIN)
            .arg(&config_path)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh for docker-registry");
        let stdin = child.stdin.take().expect("guard stdin");
        let registry = Registry {
            dir,
            addr,
            tls,
            users,
            guard: Mutex::new(Some((child, stdin))),
        };
        registry.wait_ready();
        registry
    }

    /// Polls `GET /v2/` (bounded) until the registry answers; panics with its log otherwise.
    fn wait_ready(&self) {
        let deadline = Instant::now() + REGISTRY_STARTUP;
        loop {
            match self.ping_blocking() {
                Ok(status) if status == 200 || (status == 401 && !self.users.is_empty()) => return,
                _ => {}
            }
            if let Some((child, _)) = self.guard.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("docker-registry guard exited with {status}; log:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "docker-registry on {} did not answer GET /v2/ within {REGISTRY_STARTUP:?}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One blocking `GET /v2/` over plain TCP or TLS; the status code.
    fn ping_blocking(&self) -> std::io::Result<u16> {
        let mut tcp = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
        tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
        let request = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        let mut response = Vec::new();
        match &self.tls {
            None => {
                tcp.write_all(request.as_bytes())?;
                let _ = tcp.read_to_end(&mut response);
            }
            Some(tls) => {
                let config = client_tls_config(&tls.ca_der);
                let connection = rustls::ClientConnection::new(config, server_name()).map_err(std::io::Error::other)?;
                let mut stream = rustls::StreamOwned::new(connection, tcp);
                stream.write_all(request.as_bytes())?;
                let _ = stream.read_to_end(&mut response);
            }
        }
        let head = String::from_utf8_lossy(&response);
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))
    }

    /// `127.0.0.1:PORT` of the registry itself (pushes go here; the daemon should talk to a [`Proxy`]).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The test CA as a PEM file, for `--ca-file` (HTTPS registries only).
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("not an HTTPS registry").ca_file
    }

    /// The htpasswd users and their passwords (empty without auth).
    pub fn users(&self) -> &[(String, String)] {
        &self.users
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips the last byte of blob `digest` on disk: same size, other bytes, so only a digest check notices.
    pub fn tamper_blob(&self, digest: &str) {
        let path = self.blob_data_path(digest);
        let mut bytes = std::fs::read(&path).expect("read blob data to tamper");
        *bytes.last_mut().expect("non-empty blob") ^= 0x01;
        std::fs::write(&path, bytes).expect("write tampered blob");
    }

    /// A counting proxy in front of this registry, on the current test's runtime.
    pub async fn proxy(&self) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Proxy::start(self, listener).await
    }

    /// A counting proxy in front of this registry on `listener`, already bound (for an address other than
    /// `127.0.0.1:0`, such as port 80 or 443 of another loopback address).
    pub async fn proxy_on(&self, listener: std::net::TcpListener) -> Proxy {
        listener.set_nonblocking(true).expect("nonblocking proxy listener");
        let listener = TcpListener::from_std(listener).expect("proxy listener on the runtime");
        Proxy::start(self, listener).await
    }

    // --- the registry HTTP API -------------------------------------------------------------------------------

    /// One request to the registry itself (as the first user when it has auth), on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(HOST, self.host())
            .header("content-length", body.len());
        if let Some((user, password)) = self.users.first() {
            builder = builder.header(AUTHORIZATION, basic_auth(user, password));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
            .expect("registry request");
        let response = send_upstream(self.addr, self.tls_connector(), request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path_and_query} to the registry: {e}"));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (parts.status, parts.headers, body)
    }

    fn tls_connector(&self) -> Option<tokio_rustls::TlsConnector> {
        self.tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsConnector::from(client_tls_config(&tls.ca_der)))
    }

    /// Uploads `bytes` as a blob of `repo` (POST an upload, PUT its location with the digest); the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let (status, headers, body) = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], Vec::new())
            .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "start upload to {repo}: {}",
            String::from_utf8_lossy(&body)
        );
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location");
        let location: Uri = location.parse().expect("upload location is a URI");
        let path_and_query = location.path_and_query().expect("location path").as_str().to_string();
        let separator = if path_and_query.contains('?') { '&' } else { '?' };
        let (status, _, body) = self
            .request(
                Method::PUT,
                &format!("{path_and_query}{separator}digest={digest}"),
                &[("content-type", "application/octet-stream")],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "finish upload of {digest} to {repo}: {}",
            String::from_utf8_lossy(&body)
        );
        digest
    }

    /// PUTs a manifest (image, index or list) under `reference` (a tag or its own digest); its digest.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, manifest: &[u8]) -> String {
        let digest = digest_of(manifest);
        let (status, headers, body) = self
            .request(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", media_type)],
                manifest.to_vec(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "push manifest {repo}:{reference} ({media_type}): {}\nmanifest: {}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(manifest)
        );
        let returned = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(returned, digest, "registry digest of the pushed manifest");
        digest
    }

    /// Publishes cosign simple-signing signatures of `signed` (a `sha256:<hex>` manifest digest) in `repo` the way
    /// cosign does: an image manifest at tag `sha256-<hex>.sig` whose layers are the payloads, each with its
    /// annotations (`dev.cosignproject.cosign/signature`, and optionally certificate, chain, Rekor bundle).
    pub async fn push_cosign_signatures(&self, repo: &str, signed: &str, layers: &[SignatureLayer<'_>]) -> String {
        let config = br#"{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        self.push_blob(repo, &config).await;
        let mut descriptors = Vec::new();
        for (payload, annotations) in layers {
            self.push_blob(repo, payload).await;
            let annotations: serde_json::Map<String, Value> = annotations
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect();
            descriptors.push(json!({
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": digest_of(payload),
                "size": payload.len(),
                "annotations": annotations,
            }));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": descriptors,
        }))
        .unwrap();
        let tag = format!("{}.sig", signed.replace(':', "-"));
        self.push_manifest(repo, &tag, OCI_MANIFEST, &manifest).await
    }

    /// Attaches a sigstore bundle to manifest `subject` (its `sha256:<hex>` digest, media type and size) in `repo` as an
    /// OCI 1.1 referrer, as cosign v3 does: an artifact manifest (artifactType = the bundle's media type, an empty
    /// config, the bundle as its one layer, `subject` set), pushed by digest. Returns the referrer's descriptor
    /// (for a referrers index: the registry has no referrers API, so the tests serve or tag the index).
    pub async fn push_bundle_referrer(&self, repo: &str, subject: (&str, &str, usize), bundle: &[u8]) -> Value {
        const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
        let empty = b"{}".to_vec();
        self.push_blob(repo, &empty).await;
        self.push_blob(repo, bundle).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE,
            "config": descriptor("application/vnd.oci.empty.v1+json", &empty),
            "layers": [descriptor(BUNDLE, bundle)],
            "subject": {"mediaType": subject.1, "digest": subject.0, "size": subject.2},
        }))
        .unwrap();
        let digest = digest_of(&manifest);
        self.push_manifest(repo, &digest, OCI_MANIFEST, &manifest).await;
        json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(), "artifactType": BUNDLE})
    }

    /// The referrers index listing `referrers` (what `/v2/<repo>/referrers/<digest>` answers).
    pub fn referrers_index(referrers: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": referrers})).unwrap()
    }

    /// Tags the referrers index of `signed` at `sha256-<hex>` (the OCI 1.1 tag-schema fallback cosign writes on
    /// registries without the referrers API).
    pub async fn push_referrers_tag(&self, repo: &str, signed: &str, referrers: &[Value]) -> String {
        let tag = signed.replace(':', "-");
        self.push_manifest(repo, &tag, OCI_INDEX, &Registry::referrers_index(referrers))
            .await
    }

    /// Deletes blob `digest` from `repo` (the registry unlinks it: GETs of it in `repo` answer 404).
    pub async fn delete_blob(&self, repo: &str, digest: &str) {
        let (status, _, body) = self
            .request(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}"), &[], Vec::new())
            .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "delete blob {digest} from {repo}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Pushes the blobs of `image`, then its manifest under `tag` (or under its own digest when `tag` is None).
    pub async fn push(&self, repo: &str, tag: Option<&str>, image: BuiltImage) -> Image {
        for blob in &image.blobs {
            self.push_blob(repo, blob).await;
        }
        let manifest_digest = digest_of(&image.manifest);
        let reference = tag.unwrap_or(&manifest_digest).to_string();
        self.push_manifest(repo, &reference, image.media_type, &image.manifest)
            .await;
        Image {
            module_digest: sha256_hex(&image.module),
            module: image.module,
            manifest_digest,
            manifest: image.manifest,
            media_type: image.media_type,
            module_blob_digest: image.module_blob_digest,
        }
    }

    /// Pushes a CNCF Wasm artifact of the module made for `repo` ([`wasm_module`]) as `repo:tag`: the
    /// everyday fixture.
    pub async fn push_module(&self, repo: &str, tag: &str) -> Image {
        self.push(repo, Some(tag), cncf_image(&wasm_module(repo))).await
    }

    /// Pushes an index (`OCI_INDEX`) or manifest list (`DOCKER_MANIFEST_LIST`) of `entries` under `tag`. Each
    /// entry's image must already be in `repo` (the registry checks).
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        media_type: &'static str,
        entries: &[(&Image, Platform)],
    ) -> Index {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(image, platform)| {
                json!({
                    "mediaType": image.media_type,
                    "digest": image.manifest_digest,
                    "size": image.manifest.len(),
                    "platform": {"architecture": platform.arch, "os": platform.os},
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        }))
        .unwrap();
        let digest = self.push_manifest(repo, tag, media_type, &manifest).await;
        Index {
            digest,
            manifest,
            media_type,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guard.lock().unwrap().take() {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind for a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

fn client_tls_config(ca_der: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).expect("add test CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A fresh CA and a leaf for IP 127.0.0.1 signed by it, written as `ca.pem`, `cert.pem` and `key.pem` in `dir`.
fn write_tls_files(dir: &Path) -> RegistryTls {
    let super::TestPki {
        ca_cert,
        leaf_cert,
        leaf_key,
    } = super::TestPki::new("wasmcache test registry CA");

    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write key.pem");
    RegistryTls {
        ca_file,
        ca_der: ca_cert.der().clone(),
        leaf_der: leaf_cert.der().clone(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Sends `request` (origin-form URI) on a new HTTP/1.1 connection to `addr`, over TLS when `tls` is given.
async fn send_upstream(
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    request: Request<ProxyBody>,
) -> Result<Response<Incoming>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    match tls {
        None => send_on(TokioIo::new(tcp), request).await,
        Some(connector) => {
            let stream = connector
                .connect(server_name(), tcp)
                .await
                .map_err(|e| format!("tls to {addr}: {e}"))?;
            send_on(TokioIo::new(stream), request).await
        }
    }
}

async fn send_on<T>(io: T, request: Request<ProxyBody>) -> Result<Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(|e| format!("send: {e}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Counting proxy
// ---------------------------------------------------------------------------------------------------------------

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// The status the client got.
    pub status: u16,
    /// The request carried an `Authorization` header.
    pub authorized: bool,
}

/// What the proxy does to blob downloads that the registry answered with 200.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum BlobFault {
    #[default]
    Pass,
    /// Blob bodies go out in 64 KiB frames with this pause between frames.
    Throttle(Duration),
    /// One byte in the middle of every blob body is flipped (same length, so only a digest check notices).
    Corrupt,
    /// Blob bodies go out one byte at a time with this pause between bytes (a slowloris registry).
    Drip(Duration),
}

#[derive(Default)]
struct ProxyState {
    fault: Mutex<BlobFault>,
    /// Every request from now on is accepted and never answered.
    hang: AtomicBool,
    /// Blob body bytes sent to the client so far by a throttled or dripping blob.
    blob_bytes_sent: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// Repositories whose every request is answered with this status instead of being forwarded.
    fail: Mutex<HashMap<String, u16>>,
    /// Paths answered by the proxy itself: `(content type, body)` with 200 (an API the registry lacks).
    canned: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

/// A reverse proxy on 127.0.0.1:0 in front of one registry, speaking the registry's scheme (HTTPS with the
/// registry's certificate), that records every request it forwards. The daemon talks to it; `host()` is what
/// goes into `oci://` URLs, pull secrets and daemon flags.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(registry: &Registry, listener: TcpListener) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let acceptor = registry.tls.as_ref().map(|tls| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("tls versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![tls.leaf_der.clone()],
                    PrivateKeyDer::from(PrivatePkcs8KeyDer::from(tls.leaf_key_der.clone())),
                )
                .expect("proxy tls config");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let upstream = Upstream {
            addr: registry.addr,
            tls: registry.tls_connector(),
        };
        let shared = state.clone();
        let task = tokio::spawn(super::serve::accept_loop(listener, acceptor, move |request| {
            proxy_handle(shared.clone(), upstream.clone(), request)
        }));
        Proxy {
            addr,
            state,
            task: Some(task),
        }
    }

    /// `IP:PORT` of the proxy (`127.0.0.1:PORT` unless it was started with [`Registry::proxy_on`]).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `oci://127.0.0.1:PORT/<reference>`, e.g. `oci("repo:v1")`.
    pub fn oci(&self, reference: &str) -> String {
        format!("oci://{}/{reference}", self.addr)
    }

    /// Every request to `repo` from now on is answered with `status`, without reaching the registry.
    pub fn fail_repo(&self, repo: &str, status: u16) {
        self.state.fail.lock().unwrap().insert(repo.to_string(), status);
    }

    /// GETs of `path` are answered with 200, `content_type` and `body` by the proxy itself, as a registry
    /// with that API would (Debian's docker-registry 2.8 has no OCI 1.1 referrers API).
    pub fn answer(&self, path: &str, content_type: &str, body: Vec<u8>) {
        self.state
            .canned
            .lock()
            .unwrap()
            .insert(path.to_string(), (content_type.to_string(), body));
    }

    /// A daemon that reaches this proxy as an insecure registry (plain HTTP, or HTTPS unverified) with
    /// 10 ms retry backoffs, and `extra` flags.
    pub async fn daemon(&self, extra: &[&str]) -> Daemon {
        let host = self.host();
        let mut args = vec!["--insecure-registry", &host, "--retry-backoff", "10ms"];
        args.extend_from_slice(extra);
        Daemon::start(&args).await
    }

    /// What happens to blob downloads from now on.
    pub fn set_fault(&self, fault: BlobFault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Every request from now on is accepted and never answered (a registry that stopped answering).
    pub fn hang(&self) {
        self.state.hang.store(true, Ordering::SeqCst);
    }

    /// Blob body bytes sent so far under [`BlobFault::Throttle`] or [`BlobFault::Drip`].
    pub fn blob_bytes_sent(&self) -> u64 {
        self.state.blob_bytes_sent.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection, mid-body or not: from now on connecting is refused.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Forgets what was seen so far.
    pub fn reset(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Every request seen, including `/v2/` pings.
    pub fn total(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.state.seen.lock().unwrap().iter().filter(|s| f(s)).count()
    }

    /// Manifest requests (any method) for `repo`.
    pub fn manifest_requests(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.count(|s| s.path.starts_with(&prefix))
    }

    /// Manifest requests for `repo` that the registry answered with 200.
    pub fn manifest_requests_ok(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.count(|s| s.path.starts_with(&prefix) && s.status == 200)
    }

    pub fn manifest_gets(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.count(|s| s.method == Method::GET && s.path.starts_with(&prefix))
    }

    pub fn manifest_heads(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.count(|s| s.method == Method::HEAD && s.path.starts_with(&prefix))
    }

    /// Blob GETs for `repo` (HEADs are not downloads and are not counted).
    pub fn blob_gets(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/blobs/");
        self.count(|s| s.method == Method::GET && s.path.starts_with(&prefix))
    }

    /// Blob GETs for `repo` that the registry answered with 200.
    pub fn blob_gets_ok(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/blobs/");
        self.count(|s| s.method == Method::GET && s.path.starts_with(&prefix) && s.status == 200)
    }

    /// Requests that got a 2xx answer.
    pub fn successful(&self) -> usize {
        self.count(|s| (200..300).contains(&s.status))
    }

    /// The requests seen, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        self.seen()
            .iter()
            .map(|s| {
                format!(
                    "{} {} -> {}{}",
                    s.method,
                    s.path,
                    s.status,
                    if s.authorized { " (authorized)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if std::thread::panicking() {
            eprintln!("---- registry proxy {} saw ----\n{}", self.addr, self.describe());
        }
    }
}

#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
}

async fn proxy_handle(
    state: Arc<ProxyState>,
    upstream: Upstream,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    if state.hang.load(Ordering::SeqCst) {
        return std::future::pending().await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let authorized = request.headers().contains_key(AUTHORIZATION);
    let record = |status: u16| {
        state.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            status,
            authorized,
        })
    };

    let failing = state
        .fail
        .lock()
        .unwrap()
        .iter()
        .find(|(repo, _)| path.starts_with(&format!("/v2/{repo}/")))
        .map(|(_, status)| *status);
    let canned = state.canned.lock().unwrap().get(&path).cloned();
    if let (Some((content_type, body)), &Method::GET) = (canned, &method) {
        record(200);
        let response = Response::builder()
            .status(200)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
            .unwrap();
        return Ok(response);
    }
    if let Some(status) = failing {
        record(status);
        let body = format!(r#"{{"errors":[{{"code":"DENIED","message":"proxy answers {status}"}}]}}"#);
        let response = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
            .unwrap();
        return Ok(response);
    }

    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path_and_query.parse().expect("origin-form uri");
    parts.version = hyper::Version::HTTP_11;
    if !parts.headers.contains_key(HOST) {
        parts
            .headers
            .insert(HOST, HeaderValue::from_str(&upstream.addr.to_string()).unwrap());
    }
    let request = Request::from_parts(parts, body.boxed());
    match send_upstream(upstream.addr, upstream.tls.clone(), request).await {
        Ok(response) => {
            record(response.status().as_u16());
            let fault = *state.fault.lock().unwrap();
            if method == Method::GET && path.contains("/blobs/") && response.status() == 200 && fault != BlobFault::Pass
            {
                return Ok(with_fault(&state, fault, response).await);
            }
            Ok(response.map(|b| b.boxed()))
        }
        Err(e) => {
            record(502);
            let response = Response::builder()
                .status(502)
                .body(
                    Full::new(Bytes::from(format!("proxy: {e}\n")))
                        .map_err(|e| match e {})
                        .boxed(),
                )
                .unwrap();
            Ok(response)
        }
    }
}

/// The blob response with `fault` applied to its body.
async fn with_fault(state: &Arc<ProxyState>, fault: BlobFault, response: Response<Incoming>) -> Response<ProxyBody> {
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        let empty = Full::new(Bytes::new()).map_err(|e| match e {}).boxed();
        return Response::builder().status(502).body(empty).unwrap();
    };
    let mut bytes = collected.to_bytes().to_vec();
    let (frame_len, pause) = match fault {
        BlobFault::Pass => unreachable!("passed responses are not altered"),
        BlobFault::Corrupt => {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            let body = Full::new(Bytes::from(bytes)).map_err(|e| match e {}).boxed();
            return Response::from_parts(parts, body);
        }
        BlobFault::Drip(pause) => (1, pause),
        BlobFault::Throttle(pause) => (64 * 1024, pause),
    };
    let state = state.clone();
    let frames = futures_util::stream::unfold((Bytes::from(bytes), true), move |(mut rest, first)| {
        let state = state.clone();
        async move {
            if rest.is_empty() {
                return None;
            }
            if !first {
                tokio::time::sleep(pause).await;
            }
            let frame = rest.split_to(rest.len().min(frame_len));
            state.blob_bytes_sent.fetch_add(frame.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, hyper::Error>(Frame::data(frame)), (rest, false)))
        }
    });
    Response::from_parts(parts, StreamBody::new(frames).boxed())
}

// ---------------------------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------------------------

/// A `.dockerconfigjson` with one `auths` entry for `host` (`127.0.0.1:PORT`).
pub fn docker_config_json(host: &str, user: &str, password: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "auths": { host: { "auth": base64(format!("{user}:{password}").as_bytes()) } }
    }))
    .unwrap()
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648), enough for credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Image fixtures
// ---------------------------------------------------------------------------------------------------------------

/// An image manifest and its blobs, built but not pushed.
pub struct BuiltImage {
    pub module: Vec<u8>,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
    /// Config first, then layers.
    pub blobs: Vec<Vec<u8>>,
    /// The blob that carries the module (raw or inside a tar.gz).
    pub module_blob_digest: String,
}

/// One layer of a cosign signature manifest: the simple-signing payload and its annotations.
pub type SignatureLayer<'a> = (Vec<u8>, Vec<(&'a str, String)>);

/// A pushed image.
#[derive(Clone, Debug)]
pub struct Image {
    pub module: Vec<u8>,
    /// Hex sha256 of the module bytes (as ModuleInfo.sha256).
    pub module_digest: String,
    /// `sha256:<hex>` of the manifest (as ModuleInfo.manifest_digest).
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
    pub module_blob_digest: String,
}

/// A pushed index or manifest list.
#[derive(Clone, Debug)]
pub struct Index {
    /// `sha256:<hex>` of the index.
    pub digest: String,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
}

pub const LINUX_AMD64: Platform = Platform {
    os: "linux",
    arch: "amd64",
};
pub const LINUX_ARM64: Platform = Platform {
    os: "linux",
    arch: "arm64",
};
pub const WINDOWS_AMD64: Platform = Platform {
    os: "windows",
    arch: "amd64",
};
pub const WASM_WASIP1: Platform = Platform {
    os: "wasip1",
    arch: "wasm",
};
pub const WASM_WASIP2: Platform = Platform {
    os: "wasip2",
    arch: "wasm",
};
pub const WASM_WASI: Platform = Platform {
    os: "wasi",
    arch: "wasm",
};

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest_of(blob), "size": blob.len()})
}

/// An image manifest (`manifest_type`) with this config and these layers (media type, bytes), in order.
fn build(
    manifest_type: &'static str,
    module: &[u8],
    config: (&str, Vec<u8>),
    layers: Vec<(&str, Vec<u8>)>,
    module_blob: &[u8],
    annotations: Option<Value>,
) -> BuiltImage {
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(config.0, &config.1),
        "layers": layers.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
    });
    if let Some(annotations) = annotations {
        manifest["annotations"] = annotations;
    }
    let mut blobs = vec![config.1];
    blobs.extend(layers.into_iter().map(|(_, b)| b));
    BuiltImage {
        module: module.to_vec(),
        manifest: serde_json::to_vec_pretty(&manifest).unwrap(),
        media_type: manifest_type,
        blobs,
        module_blob_digest: digest_of(module_blob),
    }
}

/// CNCF Wasm artifact: config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer.
pub fn cncf_image(module: &[u8]) -> BuiltImage {
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip1",
        "layerDigests": [digest_of(module)],
    }))
    .unwrap();
    build(
        OCI_MANIFEST,
        module,
        (CNCF_WASM_CONFIG, config),
        vec![(CNCF_WASM_LAYER, module.to_vec())],
        module,
        None,
    )
}

/// `image` with a manifest annotation `key=value` added (a large value makes a large manifest).
pub fn with_annotation(mut image: BuiltImage, key: &str, value: &str) -> BuiltImage {
    let mut manifest: Value = serde_json::from_slice(&image.manifest).expect("manifest json");
    manifest["annotations"][key] = Value::String(value.to_string());
    image.manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    image
}

/// wasm-to-oci: config `application/vnd.wasm.config.v1+json`, layer `application/vnd.wasm.content.layer.v1+wasm`.
pub fn wasm_to_oci_image(module: &[u8]) -> BuiltImage {
    build(
        OCI_MANIFEST,
        module,
        (WASM_TO_OCI_CONFIG, b"{}".to_vec()),
        vec![(WASM_TO_OCI_LAYER, module.to_vec())],
        module,
        None,
    )
}

/// Solo (wasme): config `application/vnd.module.wasm.config.v1+json`, one wasm content layer.
pub fn solo_image(module: &[u8]) -> BuiltImage {
    build(
        OCI_MANIFEST,
        module,
        (SOLO_CONFIG, solo_config()),
        vec![(SOLO_LAYER, module.to_vec())],
        module,
        None,
    )
}

/// Solo with unrelated layers around the wasm content layer (three layers in all, the module in the middle).
pub fn solo_image_with_extra_layers(module: &[u8]) -> BuiltImage {
    build(
        OCI_MANIFEST,
        module,
        (SOLO_CONFIG, solo_config()),
        vec![
            ("text/plain", b"README: a filter for the wasmcache tests\n".to_vec()),
            (SOLO_LAYER, module.to_vec()),
            (
                "application/vnd.module.wasm.descriptor.v1+json",
                br#"{"description":"unrelated metadata"}"#.to_vec(),
            ),
        ],
        module,
        None,
    )
}

fn solo_config() -> Vec<u8> {
    br#"{"type":"envoy_proxy","abiVersions":["v0-4689a30309abf31aee9ae36e73d34b1bb182685f"],"rootIds":["root"]}"#
        .to_vec()
}

fn image_config(platform: Platform, layers: &[&[u8]]) -> Vec<u8> {
    // diff_ids are digests of the uncompressed layers; good enough for a registry that never unpacks them.
    serde_json::to_vec(&json!({
        "architecture": platform.arch,
        "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest_of(l)).collect::<Vec<_>>()},
        "config": {},
    }))
    .unwrap()
}

/// The base layer of compat and Docker images: no plugin.wasm in it.
fn base_layer() -> Vec<u8> {
    tar_gz(&[("etc/os-release", b"ID=scratch\n" as &[u8])])
}

/// compat OCI image (Istio's variant): OCI image config, two tar+gzip layers, `plugin.wasm` in the last one;
/// `annotated` adds `module.wasm.image/variant=compat` to the manifest.
pub fn compat_image(module: &[u8], annotated: bool, platform: Platform) -> BuiltImage {
    let base = base_layer();
    let top = tar_gz(&[("plugin.wasm", module)]);
    build(
        OCI_MANIFEST,
        module,
        (OCI_IMAGE_CONFIG, image_config(platform, &[&base, &top])),
        vec![(OCI_LAYER_TAR_GZIP, base), (OCI_LAYER_TAR_GZIP, top.clone())],
        &top,
        annotated.then(|| json!({"module.wasm.image/variant": "compat"})),
    )
}

/// Docker schema 2 image: Docker config, two rootfs tar.gzip layers, `plugin.wasm` in the last one.
pub fn docker_image(module: &[u8], platform: Platform) -> BuiltImage {
    let base = base_layer();
    let top = tar_gz(&[("plugin.wasm", module)]);
    build(
        DOCKER_MANIFEST,
        module,
        (DOCKER_IMAGE_CONFIG, image_config(platform, &[&base, &top])),
        vec![(DOCKER_LAYER_TAR_GZIP, base), (DOCKER_LAYER_TAR_GZIP, top.clone())],
        &top,
        None,
    )
}

/// An OCI image that fits no Wasm format: OCI image config and a single tar+gzip layer without plugin.wasm.
/// `module` is what the layer holds under another name.
pub fn image_without_plugin_wasm(module: &[u8]) -> BuiltImage {
    let layer = tar_gz(&[("bin/filter.wasm", module)]);
    build(
        OCI_MANIFEST,
        module,
        (OCI_IMAGE_CONFIG, image_config(LINUX_AMD64, &[&layer])),
        vec![(OCI_LAYER_TAR_GZIP, layer.clone())],
        &layer,
        None,
    )
}

/// An image whose only layer has a media type no format knows, holding the raw module bytes.
pub fn image_with_unknown_layer(module: &[u8]) -> BuiltImage {
    build(
        OCI_MANIFEST,
        module,
        ("application/vnd.example.config.v1+json", b"{}".to_vec()),
        vec![("application/vnd.example.blob.v1", module.to_vec())],
        module,
        None,
    )
}
