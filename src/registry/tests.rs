//! Protocol tests of the registry endpoint over real TCP (and TLS), with an in-memory backend: a raw HTTP
//! client that sees every byte, and the real `curl` for the basic requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::*;
use crate::cache::registry::{Document, ManifestRef, RegistryBackend, Upstream};
use crate::fetch::FetchError;
use crate::store::Store;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const SIG_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM_TYPE: &str = "application/spdx+json";

// ---------------------------------------------------------------------------------------------------------------
// The in-memory backend
// ---------------------------------------------------------------------------------------------------------------

/// What the backend was asked: the repository, and the credentials the pull secret held for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Asked {
    registry: String,
    repository: String,
    credentials: Option<(String, String)>,
}

/// A backend over maps: documents by repository and reference, blobs as files, referrers by subject. Some
/// repositories need credentials (wrong or none: Unauthenticated, as upstream's 401) and one is forbidden.
struct Memory {
    dir: tempfile::TempDir,
    /// Holds for the opened blobs; the store itself is empty.
    store: Store,
    manifests: HashMap<(String, String), Document>,
    blobs: HashMap<Sha256, PathBuf>,
    /// Subject → `(artifactType, digest)` of each referrer.
    referrers: HashMap<Sha256, Vec<(String, Sha256)>>,
    private: HashMap<String, (String, String)>,
    forbidden: Vec<String>,
    asked: Mutex<Vec<Asked>>,
}

impl Memory {
    fn new() -> Memory {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        Memory {
            dir,
            store,
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            referrers: HashMap::new(),
            private: HashMap::new(),
            forbidden: Vec::new(),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// Adds a manifest under `repo` (`registry/repository`) by tag and by digest.
    fn add_manifest(&mut self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) -> Document {
        let document = Document {
            digest: Sha256::of(bytes),
            media_type: media_type.into(),
            bytes: Bytes::copy_from_slice(bytes),
        };
        self.manifests.insert((repo.into(), tag.into()), document.clone());
        self.manifests
            .insert((repo.into(), document.digest.prefixed()), document.clone());
        document
    }

    fn add_blob(&mut self, bytes: &[u8]) -> Sha256 {
        let digest = Sha256::of(bytes);
        let path = self.dir.path().join(digest.to_string());
        std::fs::write(&path, bytes).unwrap();
        self.blobs.insert(digest, path);
        digest
    }

    fn log(&self, upstream: &Upstream) {
        let credentials = upstream.secret.as_ref().and_then(|secret| {
            secret
                .lookup(&upstream.registry, &upstream.repository)
                .first()
                .map(|c| (c.username().to_string(), c.password().to_string()))
        });
        self.asked.lock().unwrap().push(Asked {
            registry: upstream.registry.clone(),
            repository: upstream.repository.clone(),
            credentials,
        });
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// Upstream's access rules.
    fn admit(&self, upstream: &Upstream) -> Result<String, Error> {
        self.log(upstream);
        let repo = format!("{}/{}", upstream.registry, upstream.repository);
        let url = format!("oci://{repo}");
        if self.forbidden.contains(&repo) {
            return Err(Error::Fetch(FetchError::Forbidden { url, status: 403 }));
        }
        if let Some(wanted) = self.private.get(&repo) {
            let given = self.asked().last().and_then(|a| a.credentials.clone());
            if given.as_ref() != Some(wanted) {
                return Err(Error::Fetch(FetchError::Unauthenticated { url, status: 401 }));
            }
        }
        Ok(repo)
    }
}

fn not_found(what: &str) -> Error {
    Error::Fetch(FetchError::NotFound {
        url: format!("oci://{what}"),
        detail: "404".into(),
    })
}

impl RegistryBackend for Memory {
    fn manifest<'a>(
        &'a self,
        upstream: &'a Upstream,
        reference: &'a ManifestRef,
    ) -> BoxFuture<'a, Result<Document, Error>> {
        Box::pin(async move {
            let repo = self.admit(upstream)?;
            let key = match reference {
                ManifestRef::Tag(tag) => tag.clone(),
                ManifestRef::Digest(digest) => digest.prefixed(),
            };
            self.manifests
                .get(&(repo.clone(), key.clone()))
                .cloned()
                .ok_or_else(|| not_found(&format!("{repo}:{key}")))
        })
    }

    fn blob<'a>(&'a self, upstream: &'a Upstream, digest: Sha256) -> BoxFuture<'a, Result<OpenBlob, Error>> {
        Box::pin(async move {
            let repo = self.admit(upstream)?;
            let path = self
                .blobs
                .get(&digest)
                .ok_or_else(|| not_found(&format!("{repo}@{}", digest.prefixed())))?;
            let file = std::fs::File::open(path).unwrap();
            Ok(OpenBlob {
                size: file.metadata().unwrap().len(),
                file,
                path: path.clone(),
                hold: self.store.hold(digest),
            })
        })
    }

    fn referrers<'a>(
        &'a self,
        upstream: &'a Upstream,
        digest: Sha256,
        artifact_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Document, Error>> {
        Box::pin(async move {
            self.admit(upstream)?;
            let manifests: Vec<serde_json::Value> = self
                .referrers
                .get(&digest)
                .into_iter()
                .flatten()
                .filter(|(t, _)| artifact_type.is_none_or(|wanted| wanted == t))
                .map(|(t, d)| {
                    serde_json::json!({
                        "mediaType": MANIFEST_TYPE, "digest": d.prefixed(), "size": 1, "artifactType": t
                    })
                })
                .collect();
            let bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests
            }))
            .unwrap();
            Ok(Document {
                digest: Sha256::of(&bytes),
                media_type: OCI_INDEX.into(),
                bytes: bytes.into(),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A running endpoint with known content
// ---------------------------------------------------------------------------------------------------------------

const REPO: &str = "registry.test/org/plugin";

struct Fixture {
    addr: SocketAddr,
    backend: Arc<Memory>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    manifest: Document,
    small: Blob,
    large: Blob,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A backend with a manifest (`v1`) in [`REPO`], a small and a 5 MiB blob, referrers of the manifest, a
/// private repository (`registry.test/private/plugin`, user `alice`) and a forbidden one.
/// A blob's digest and bytes.
type Blob = (Sha256, Vec<u8>);

fn backend() -> (Memory, Document, Blob, Blob) {
    let mut memory = Memory::new();
    let small = b"a small blob".to_vec();
    let large = content(5 << 20, 7);
    let small = (memory.add_blob(&small), small);
    let large = (memory.add_blob(&large), large);
    let manifest_bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "layers": [{"mediaType": "application/vnd.wasm.content.layer.v1+wasm", "digest": large.0.prefixed(), "size": large.1.len()}]
    }))
    .unwrap();
    let manifest = memory.add_manifest(REPO, "v1", MANIFEST_TYPE, &manifest_bytes);
    memory.add_manifest("docker.io/library/nginx", "latest", MANIFEST_TYPE, b"{\"hub\":1}");
    memory.add_manifest("registry.test/private/plugin", "v1", MANIFEST_TYPE, b"{\"private\":1}");
    memory.add_manifest("registry.test/forbidden/plugin", "v1", MANIFEST_TYPE, b"{}");
    memory.private.insert(
        "registry.test/private/plugin".into(),
        ("alice".into(), "pa:ss w0rd".into()),
    );
    memory.forbidden.push("registry.test/forbidden/plugin".into());
    memory.referrers.insert(
        manifest.digest,
        vec![
            (SIG_TYPE.into(), Sha256::of(b"sig")),
            (SBOM_TYPE.into(), Sha256::of(b"sbom")),
        ],
    );
    (memory, manifest, small, large)
}

fn test_limits() -> Limits {
    Limits {
        idle_timeout: Duration::from_secs(5),
        head_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(5),
        max_head_bytes: 16 * 1024,
        copy_only: false,
    }
}

async fn start_with(limits: Limits, tls: Option<Arc<tls::CertReloader>>) -> Fixture {
    start_custom(limits, tls, |_| {}).await
}

/// [`start_with`], with more content added to the backend first.
async fn start_custom(limits: Limits, tls: Option<Arc<tls::CertReloader>>, more: impl FnOnce(&mut Memory)) -> Fixture {
    let (mut memory, manifest, small, large) = backend();
    more(&mut memory);
    let backend = Arc::new(memory);
    let metrics = Arc::new(Metrics::new());
    let mut endpoint = Endpoint::new(backend.clone(), metrics.clone()).with_limits(limits);
    if let Some(certs) = tls {
        endpoint = endpoint.with_tls(certs);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, Arc::new(endpoint), stop.clone()));
    Fixture {
        addr,
        backend,
        metrics,
        stop,
        task: Some(task),
        manifest,
        small,
        large,
    }
}

async fn start() -> Fixture {
    start_with(test_limits(), None).await
}

// ---------------------------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The OCI error code of an error body.
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn message(&self) -> String {
        self.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    async fn connect(addr: SocketAddr) -> Client<TcpStream> {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).await.unwrap();
    }

    /// Reads one response; `head_request`: no body follows, whatever `Content-Length` says.
    async fn response(&mut self, head_request: bool) -> Reply {
        let (status, headers, consumed) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(n) = response.parse(&self.buf).unwrap() {
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8(h.value.to_vec()).unwrap()))
                    .collect();
                break (response.code.unwrap(), headers, n);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("a response within 10s")
                .unwrap();
            assert!(
                n > 0,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        };
        self.buf.drain(..consumed);
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let length = if head_request || status == 304 { 0 } else { length };
        while self.buf.len() < length {
            let mut chunk = vec![0u8; 1 << 16];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("the body within 10s")
                .unwrap();
            assert!(n > 0, "connection closed in the body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf.drain(..length).collect();
        Reply { status, headers, body }
    }

    async fn request(&mut self, method: &str, target: &str, extra: &str) -> Reply {
        self.send(&format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n"))
            .await;
        self.response(method == "HEAD").await
    }

    async fn get(&mut self, target: &str) -> Reply {
        self.request("GET", target, "").await
    }

    /// True when the server closed the connection (after any bytes still in flight).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    Client::connect(addr).await.get(target).await
}

fn manifest_path(reference: &str) -> String {
    format!("/v2/{REPO}/manifests/{reference}")
}

fn blob_path(digest: &Sha256) -> String {
    format!("/v2/{REPO}/blobs/{}", digest.prefixed())
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Ping and manifests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn ping_answers_the_api_version_with_a_basic_challenge() {
    let f = start().await;
    let reply = get(f.addr, "/v2/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"{}");
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    assert_eq!(reply.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
    assert_eq!(reply.header("WWW-Authenticate"), Some("Basic realm=\"wasmcache\""));
    assert!(reply.header("Date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(get(f.addr, "/v2").await.status, 200);
}

#[tokio::test]
async fn manifest_by_tag_and_by_digest_with_every_header() {
    let f = start().await;
    let digest = f.manifest.digest.prefixed();
    let mut client = Client::connect(f.addr).await;
    for reference in ["v1", digest.as_str()] {
        let reply = client.get(&manifest_path(reference)).await;
        assert_eq!(reply.status, 200, "{reference}");
        assert_eq!(reply.body, f.manifest.bytes.as_ref());
        assert_eq!(reply.header("Content-Type"), Some(MANIFEST_TYPE));
        assert_eq!(reply.header("Docker-Content-Digest"), Some(digest.as_str()));
        assert_eq!(
            reply.header("Content-Length"),
            Some(f.manifest.bytes.len().to_string().as_str())
        );
        assert_eq!(reply.header("ETag"), Some(format!("\"{digest}\"").as_str()));

        let head = client.request("HEAD", &manifest_path(reference), "").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(head.header("Content-Type"), Some(MANIFEST_TYPE));
        assert_eq!(head.header("Docker-Content-Digest"), Some(digest.as_str()));
        assert_eq!(
            head.header("Content-Length"),
            Some(f.manifest.bytes.len().to_string().as_str())
        );
    }
    // The HEADs sent no body: the connection is still in step.
    assert_eq!(client.get("/v2/").await.status, 200);
    let asked = f.backend.asked();
    assert!(asked
        .iter()
        .all(|a| a.registry == "registry.test" && a.repository == "org/plugin"));
}

#[tokio::test]
async fn manifest_etag_answers_if_none_match_with_304() {
    let f = start().await;
    let etag = format!("\"{}\"", f.manifest.digest.prefixed());
    let mut client = Client::connect(f.addr).await;
    let reply = client
        .request("GET", &manifest_path("v1"), &format!("If-None-Match: W/{etag}\r\n"))
        .await;
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("ETag"), Some(etag.as_str()));
    let reply = client
        .request("GET", &manifest_path("v1"), "If-None-Match: \"other\"\r\n")
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn mirror_form_names_the_registry_with_ns_and_echoes_it() {
    let f = start().await;
    let reply = get(f.addr, "/v2/org/plugin/manifests/v1?ns=registry.test").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("OCI-Namespace"), Some("registry.test"));
    assert_eq!(reply.body, f.manifest.bytes.as_ref());
    let reply = get(f.addr, "/v2/nginx/manifests/latest?ns=docker.io").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"{\"hub\":1}".as_slice()));
    let reply = get(f.addr, "/v2/index.docker.io/nginx/manifests/latest").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("OCI-Namespace").is_none());
    let asked = f.backend.asked();
    assert_eq!(asked[1].registry, "docker.io");
    assert_eq!(asked[1].repository, "library/nginx");
    assert_eq!(asked[2], asked[1]);
}

#[tokio::test]
async fn unknown_names_and_references_get_the_spec_codes() {
    let f = start().await;
    let reply = get(f.addr, &manifest_path("v2")).await;
    assert_eq!((reply.status, reply.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    assert_eq!(reply.json()["errors"][0]["detail"]["reason"], "download_failure");
    let reply = get(f.addr, &blob_path(&Sha256::of(b"missing"))).await;
    assert_eq!((reply.status, reply.code().as_str()), (404, "BLOB_UNKNOWN"));
    let reply = get(f.addr, "/v2/org/plugin/manifests/v1").await;
    assert_eq!((reply.status, reply.code().as_str()), (404, "NAME_UNKNOWN"));
    assert!(reply.message().contains("ns="), "{}", reply.message());
    let reply = get(f.addr, &format!("/v2/{REPO}/manifests/sha256:1234")).await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "DIGEST_INVALID"));
    let reply = get(f.addr, &format!("/v2/{REPO}/blobs/sha512:{}", "a".repeat(128))).await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "DIGEST_INVALID"));
    let reply = get(f.addr, "/v2/registry.test/%2e%2e/x/manifests/v1").await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "NAME_INVALID"));
    let reply = get(f.addr, "/v2/registry.test/../x/manifests/v1").await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "NAME_INVALID"));
    let reply = get(f.addr, &format!("/v2/{REPO}/tags/list")).await;
    assert_eq!((reply.status, reply.code().as_str()), (404, "UNSUPPORTED"));
    let reply = get(f.addr, "/metrics").await;
    assert_eq!(reply.status, 404);
    assert_eq!(f.backend.asked().len(), 2, "only valid names reach the backend");
}

// ---------------------------------------------------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn blob_get_and_head_with_every_header() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    for (digest, bytes) in [&f.small, &f.large] {
        let reply = client.get(&blob_path(digest)).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body == *bytes, "blob bytes differ");
        assert_eq!(reply.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(reply.header("Docker-Content-Digest"), Some(digest.prefixed().as_str()));
        assert_eq!(reply.header("Accept-Ranges"), Some("bytes"));
        assert_eq!(reply.header("Content-Length"), Some(bytes.len().to_string().as_str()));
        assert_eq!(
            reply.header("ETag"),
            Some(format!("\"{}\"", digest.prefixed()).as_str())
        );
        let head = client.request("HEAD", &blob_path(digest), "").await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("Content-Length"), Some(bytes.len().to_string().as_str()));
        assert_eq!(head.header("Docker-Content-Digest"), Some(digest.prefixed().as_str()));
    }
    assert_eq!(client.get("/v2/").await.status, 200, "the connection is still in step");
    let text = f.metrics.encode();
    let sent = crate::metrics::sample(&text, "wasmcache_registry_sent_bytes_total", "").unwrap();
    assert!(sent >= (f.small.1.len() + f.large.1.len()) as f64, "{sent}");
    assert_eq!(
        crate::metrics::sample(
            &text,
            "wasmcache_registry_requests_total",
            "route=\"blob\",method=\"HEAD\",code=\"200\""
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn blob_ranges_are_served_and_unsatisfiable_ones_are_416() {
    let f = start().await;
    let (digest, bytes) = &f.large;
    let size = bytes.len();
    let mut client = Client::connect(f.addr).await;
    let cases = [
        ("bytes=0-9", 0, 9),
        ("bytes=1048576-", 1 << 20, size - 1),
        ("bytes=-100", size - 100, size - 1),
        ("bytes=100-99999999", 100, size - 1),
    ];
    for (range, first, last) in cases {
        let reply = client
            .request("GET", &blob_path(digest), &format!("Range: {range}\r\n"))
            .await;
        assert_eq!(reply.status, 206, "{range}");
        assert_eq!(
            reply.header("Content-Range"),
            Some(format!("bytes {first}-{last}/{size}").as_str())
        );
        assert_eq!(
            reply.header("Content-Length"),
            Some((last - first + 1).to_string().as_str())
        );
        assert!(reply.body == bytes[first..=last], "{range}: bytes differ");
    }
    let reply = client
        .request("GET", &blob_path(digest), &format!("Range: bytes={size}-\r\n"))
        .await;
    assert_eq!(reply.status, 416);
    assert_eq!(reply.header("Content-Range"), Some(format!("bytes */{size}").as_str()));
    assert!(reply.body.is_empty());
    // Several ranges: the whole blob, as RFC 9110 allows.
    let reply = client
        .request("GET", &blob_path(digest), "Range: bytes=0-1,5-6\r\n")
        .await;
    assert_eq!((reply.status, reply.body.len()), (200, size));
}

// ---------------------------------------------------------------------------------------------------------------
// Referrers
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn referrers_with_and_without_an_artifact_type_filter() {
    let f = start().await;
    let path = format!("/v2/{REPO}/referrers/{}", f.manifest.digest.prefixed());
    let reply = get(f.addr, &path).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some(OCI_INDEX));
    assert!(reply.header("OCI-Filters-Applied").is_none());
    assert_eq!(reply.json()["manifests"].as_array().unwrap().len(), 2);

    let filtered = format!("{path}?artifactType=application%2Fvnd.dev.cosign.artifact.sig.v1%2Bjson");
    let reply = get(f.addr, &filtered).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("OCI-Filters-Applied"), Some("artifactType"));
    let manifests = reply.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["artifactType"], SIG_TYPE);

    let reply = get(f.addr, &format!("/v2/{REPO}/referrers/v1")).await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "DIGEST_INVALID"));
}

// ---------------------------------------------------------------------------------------------------------------
// Methods that would change something
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn mutating_methods_are_405_unsupported_and_close_unread() {
    let f = start().await;
    let targets = [
        format!("/v2/{REPO}/blobs/uploads/"),
        manifest_path("v1"),
        blob_path(&f.small.0),
        "/v2/".to_string(),
    ];
    for (method, target) in ["POST", "PUT", "PATCH", "DELETE"].iter().zip(targets.iter()) {
        let mut client = Client::connect(f.addr).await;
        // A body the server must not wait for, and another request after it that must not be answered.
        client
            .send(&format!(
                "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n\r\nhello worldGET /v2/ HTTP/1.1\r\nHost: test\r\n\r\n"
            ))
            .await;
        let reply = client.response(false).await;
        assert_eq!(reply.status, 405, "{method} {target}");
        assert_eq!(reply.code(), "UNSUPPORTED");
        assert_eq!(reply.header("Allow"), Some("GET, HEAD"));
        assert_eq!(reply.header("Connection"), Some("close"));
        assert!(client.closed().await, "{method}: the connection is closed");
    }
    assert!(f.backend.asked().is_empty());
    assert_eq!(
        crate::metrics::sample(
            &f.metrics.encode(),
            "wasmcache_registry_requests_total",
            "route=\"manifest\",method=\"PUT\",code=\"405\""
        ),
        Some(1.0)
    );
}

/// A client still sending a large upload gets the 405 rather than a reset: the unread body is drained for a
/// while after the answer (a lingering close).
#[tokio::test]
async fn a_large_upload_gets_its_405_before_the_close() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    client
        .send(&format!(
            "PUT {} HTTP/1.1\r\nHost: test\r\nContent-Length: 4000000\r\n\r\n",
            manifest_path("v1")
        ))
        .await;
    let body = vec![b'x'; 256 * 1024];
    client.stream.write_all(&body).await.unwrap();
    let reply = client.response(false).await;
    assert_eq!(reply.status, 405);
    let _ = client.stream.write_all(&body).await;
    assert!(client.closed().await);
}

#[tokio::test]
async fn get_with_a_body_is_refused_and_closed() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    let reply = client.request("GET", "/v2/", "Content-Length: 5\r\n").await;
    assert_eq!(reply.status, 400);
    assert!(client.closed().await);
    let mut client = Client::connect(f.addr).await;
    let reply = client.request("GET", "/v2/", "Transfer-Encoding: chunked\r\n").await;
    assert_eq!(reply.status, 400);
    let mut client = Client::connect(f.addr).await;
    client.send("GET /v2/ HTTP/1.1\r\n\r\n").await;
    assert_eq!(client.response(false).await.status, 400, "HTTP/1.1 without Host");
}

// ---------------------------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_needing_credentials_gets_a_basic_challenge_and_the_retry_passes() {
    let f = start().await;
    let path = "/v2/registry.test/private/plugin/manifests/v1";
    let mut client = Client::connect(f.addr).await;
    let reply = client.get(path).await;
    assert_eq!((reply.status, reply.code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(reply.header("WWW-Authenticate"), Some("Basic realm=\"wasmcache\""));
    let reply = client.request("GET", path, &basic("alice", "wrong")).await;
    assert_eq!(reply.status, 401);
    let reply = client.request("GET", path, &basic("alice", "pa:ss w0rd")).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, b"{\"private\":1}".as_slice())
    );
    let asked = f.backend.asked();
    assert_eq!(asked[0].credentials, None);
    assert_eq!(asked[2].credentials, Some(("alice".into(), "pa:ss w0rd".into())));
    // Credentials are for that request only: the next one without them is anonymous again.
    assert_eq!(client.get(path).await.status, 401);
}

#[tokio::test]
async fn bearer_tokens_go_upstream_as_the_password_and_empty_basic_is_anonymous() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    let reply = client
        .request(
            "GET",
            &manifest_path("v1"),
            "Authorization: Bearer abc.DEF-ghi_~+/=\r\n",
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = client
        .request("GET", &manifest_path("v1"), "Authorization: Basic Og==\r\n")
        .await;
    assert_eq!(reply.status, 200);
    let asked = f.backend.asked();
    assert_eq!(
        asked[0].credentials,
        Some((BEARER_USER.into(), "abc.DEF-ghi_~+/=".into()))
    );
    assert_eq!(asked[1].credentials, None);
}

#[tokio::test]
async fn malformed_credentials_are_401_without_echo_and_forbidden_is_403() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    for header in [
        "Authorization: Basic !!notbase64!!\r\n",
        "Authorization: Basic bm9jb2xvbg==\r\n",
        "Authorization: Negotiate c2VjcmV0\r\n",
        "Authorization: Bearer\r\n",
        "Authorization: Basic YTpi\r\nAuthorization: Basic YTpi\r\n",
    ] {
        let reply = client.request("GET", &manifest_path("v1"), header).await;
        assert_eq!((reply.status, reply.code().as_str()), (401, "UNAUTHORIZED"), "{header}");
        let text = String::from_utf8_lossy(&reply.body);
        for secret in ["notbase64", "bm9jb2xvbg", "c2VjcmV0", "YTpi"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    assert!(f.backend.asked().is_empty());
    let reply = client.get("/v2/registry.test/forbidden/plugin/manifests/v1").await;
    assert_eq!((reply.status, reply.code().as_str()), (403, "DENIED"));
    assert!(reply.header("WWW-Authenticate").is_none());
}

#[test]
fn client_credentials_table() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let one = |v: String| Authorization::One(v);
    let ok = |user: &str, password: &str| Ok(Some((user.to_string(), password.to_string())));
    type UserPassword = Option<(String, String)>;
    let cases: Vec<(Authorization, Result<UserPassword, ()>)> = vec![
        (Authorization::None, Ok(None)),
        (one(format!("Basic {}", b64("u:p"))), ok("u", "p")),
        (one(format!("basic {}", b64("u:p:q"))), ok("u", "p:q")),
        (one(format!("Basic {}", b64("u:p").trim_end_matches('='))), ok("u", "p")),
        (one(format!("Basic {}", b64("u:"))), ok("u", "")),
        (one(format!("Basic {}", b64(":"))), Ok(None)),
        (one("Bearer t0k.en".into()), ok(BEARER_USER, "t0k.en")),
        (one("BEARER t0k.en==".into()), ok(BEARER_USER, "t0k.en==")),
        (one(format!("Basic {}", b64("nocolon"))), Err(())),
        (one("Basic %%%".into()), Err(())),
        (one("Bearer a b".into()), Err(())),
        (one("Bearer =abc".into()), Err(())),
        (one("Digest x".into()), Err(())),
        (Authorization::Malformed, Err(())),
    ];
    for (header, want) in cases {
        let got = client_credentials(&header)
            .map(|c| c.map(|c| (c.username().to_string(), c.password().to_string())))
            .map_err(|_| ());
        assert_eq!(got, want, "{header:?}");
    }
}

/// The pull secret built from a client's credentials is found again by the fetchers' lookup, for every
/// kind of registry name.
#[test]
fn client_credentials_become_a_pull_secret_for_the_named_registry() {
    for (registry, repository) in [
        ("docker.io", "library/nginx"),
        ("ghcr.io", "org/plugin"),
        ("localhost:5000", "a"),
        ("10.0.0.1:5000", "team/x"),
        ("registry.example.com:8443", "a/b/c"),
    ] {
        let name = Name {
            registry: registry.into(),
            repository: repository.into(),
            namespace: None,
        };
        let upstream = upstream(&name, Some(Credentials::new("u", "p")));
        let secret = upstream.secret.expect("a secret");
        let found = secret.lookup(registry, repository);
        assert_eq!(found.len(), 1, "{registry}");
        assert_eq!((found[0].username(), found[0].password()), ("u", "p"));
        assert!(secret.lookup("other.example", repository).is_empty());
    }
}

/// Credentials in requests reach no log line, whatever the request's fate.
#[test]
fn credentials_never_reach_the_logs() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let f = start().await;
        let mut client = Client::connect(f.addr).await;
        for (path, header) in [
            (
                "/v2/registry.test/private/plugin/manifests/v1",
                basic("alice", "hunter2-basic"),
            ),
            (
                "/v2/registry.test/private/plugin/manifests/v1",
                "Authorization: Bearer hunter2-bearer\r\n".into(),
            ),
            (&manifest_path("v1") as &str, basic("bob", "hunter2-ok")),
            (&manifest_path("nope") as &str, basic("bob", "hunter2-404")),
            (
                "/v2/registry.test/forbidden/plugin/manifests/v1",
                basic("bob", "hunter2-403"),
            ),
            (
                &manifest_path("v1") as &str,
                "Authorization: Basic aHVudGVyMi1iYWQ\r\n".into(),
            ),
        ] {
            client.request("GET", path, &header).await;
        }
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("registry request"), "{logs}");
    for secret in ["hunter2", "aHVudGVy"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_serves_several_requests_and_pipelined_ones_in_order() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    for _ in 0..3 {
        assert_eq!(client.get(&manifest_path("v1")).await.status, 200);
        assert_eq!(client.get(&blob_path(&f.small.0)).await.body, f.small.1);
    }
    // Four requests in one write; the answers come back in order.
    let head = |method: &str, target: &str| format!("{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n");
    let pipelined = [
        head("GET", &blob_path(&f.large.0)),
        head("HEAD", &manifest_path("v1")),
        head("GET", &manifest_path("missing")),
        head("GET", "/v2/"),
    ]
    .concat();
    client.send(&pipelined).await;
    let first = client.response(false).await;
    assert!(first.status == 200 && first.body == f.large.1);
    let second = client.response(true).await;
    assert_eq!(
        second.header("Docker-Content-Digest"),
        Some(f.manifest.digest.prefixed().as_str())
    );
    assert_eq!(client.response(false).await.status, 404);
    assert_eq!(client.response(false).await.body, b"{}");
}

#[tokio::test]
async fn http10_closes_unless_it_asks_for_keep_alive() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    client.send("GET /v2/ HTTP/1.0\r\n\r\n").await;
    let reply = client.response(false).await;
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(client.closed().await);
    let mut client = Client::connect(f.addr).await;
    client.send("GET /v2/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    assert_eq!(client.response(false).await.header("Connection"), Some("keep-alive"));
    client
        .send("GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(client.response(false).await.header("Connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let f = start().await;
    let mut client = Client::connect(f.addr).await;
    let reply = client
        .request("GET", "/v2/", &format!("X-Big: {}\r\n", "a".repeat(20 * 1024)))
        .await;
    assert_eq!(reply.status, 431);
    assert!(client.closed().await);
    let mut client = Client::connect(f.addr).await;
    client
        .send(&format!("GET /v2/{} HTTP/1.1\r\n", "a".repeat(20 * 1024)))
        .await;
    assert_eq!(client.response(false).await.status, 414);
    let mut client = Client::connect(f.addr).await;
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(client.request("GET", "/v2/", &many).await.status, 431);
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_timed_out() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        head_timeout: Duration::from_millis(300),
        ..test_limits()
    };
    let f = start_with(limits, None).await;
    let mut client = Client::connect(f.addr).await;
    client.send("GET /v2/ HTTP/1.1\r\nHost:").await;
    assert_eq!(client.response(false).await.status, 408);
    assert!(client.closed().await);
    let mut client = Client::connect(f.addr).await;
    assert_eq!(client.get("/v2/").await.status, 200);
    let idle = std::time::Instant::now();
    assert!(client.closed().await);
    assert!(idle.elapsed() < Duration::from_secs(3), "{:?}", idle.elapsed());
}

/// A client that asks for a large blob and never reads is given up on after the send timeout: the
/// connection ends before the blob is through, and the blob's hold with it.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_after_the_send_timeout() {
    let limits = Limits {
        send_timeout: Duration::from_millis(300),
        ..test_limits()
    };
    // Larger than the 4 MiB a loopback socket's send buffer can grow to, plus what the client buffers.
    let huge = content(24 << 20, 9);
    let mut digest = None;
    let f = start_custom(limits, None, |memory| digest = Some(memory.add_blob(&huge))).await;
    let digest = digest.unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(f.addr).await.unwrap();
    let request = format!("GET {} HTTP/1.1\r\nHost: test\r\n\r\n", blob_path(&digest));
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server kept the connection");
    assert!(received < huge.len(), "received {received} bytes: the whole blob");
    let text = f.metrics.encode();
    assert!(
        text.contains("route=\"blob\",method=\"GET\",code=\"200\""),
        "the request is counted once it ended"
    );
}

#[tokio::test]
async fn stop_closes_idle_connections_and_ends_serving() {
    let mut f = start().await;
    let mut client = Client::connect(f.addr).await;
    assert_eq!(client.get("/v2/").await.status, 200);
    f.stop.cancel();
    assert!(client.closed().await);
    tokio::time::timeout(Duration::from_secs(5), f.task.take().unwrap())
        .await
        .expect("serve returns after stop")
        .unwrap();
    assert!(TcpStream::connect(f.addr).await.is_err(), "the listener is closed");
}

// ---------------------------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------------------------

/// Runs the real `curl`; a missing curl fails the test (install it: `apt-get install curl`).
async fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--dump-header", "/dev/stderr"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl is needed by this test (apt-get install curl): {e}"));
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (String::from_utf8_lossy(&output.stderr).to_string(), output.stdout)
}

#[tokio::test]
async fn curl_reads_manifests_blobs_and_ranges() {
    let f = start().await;
    let base = format!("http://{}", f.addr);
    let (headers, body) = curl(&[&format!("{base}{}", manifest_path("v1"))]).await;
    assert!(headers.starts_with("HTTP/1.1 200 OK"), "{headers}");
    assert!(headers.contains(&format!("Docker-Content-Digest: {}", f.manifest.digest.prefixed())));
    assert_eq!(body, f.manifest.bytes.as_ref());
    let (headers, body) = curl(&["--head", &format!("{base}{}", blob_path(&f.large.0))]).await;
    assert!(
        headers.contains(&format!("Content-Length: {}", f.large.1.len())),
        "{headers}"
    );
    assert!(body.is_empty() || String::from_utf8_lossy(&body).starts_with("HTTP/1.1 200"));
    // Two URLs on one connection: the blob (sendfile), then a range of it.
    let url = format!("{base}{}", blob_path(&f.large.0));
    let (_, body) = curl(&[&url]).await;
    assert!(body == f.large.1, "curl got other bytes");
    let (headers, body) = curl(&["--range", "10-19", &url]).await;
    assert!(headers.contains("HTTP/1.1 206"), "{headers}");
    assert_eq!(body, f.large.1[10..20]);
    let (headers, _) = curl(&["--range", "10-19", &url, &url]).await;
    assert_eq!(headers.matches("HTTP/1.1 206").count(), 2, "{headers}");
    let output = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--write-out",
            "%{http_code}",
            "--output",
            "/dev/null",
            "-X",
            "PUT",
        ])
        .args(["--data-binary", "x", &format!("{base}{}", manifest_path("v1"))])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "405");
}

// ---------------------------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------------------------

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn pair() -> Pair {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        der: generated.cert.der().clone(),
    }
}

/// Writes a file as a rotation does: a new file renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Connects over TLS trusting `trusted`, and returns the stream and the certificate the server presented.
async fn tls_connect(
    addr: SocketAddr,
    trusted: &[&Pair],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    rustls::pki_types::CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for pair in trusted {
        roots.add(pair.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("a TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"http/1.1".as_slice()),
        "no HTTP/2 offered"
    );
    (tls, presented)
}

struct TlsFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_files(pair: &Pair) -> TlsFiles {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    TlsFiles { _dir: dir, cert, key }
}

#[tokio::test]
async fn tls_serves_manifests_and_blobs_by_copy() {
    let first = pair();
    let files = tls_files(&first);
    let certs = Arc::new(tls::CertReloader::load(&files.cert, &files.key).unwrap());
    let f = start_with(test_limits(), Some(certs)).await;
    let (stream, _) = tls_connect(f.addr, &[&first]).await;
    let mut client = Client {
        stream,
        buf: Vec::new(),
    };
    assert_eq!(client.get(&manifest_path("v1")).await.body, f.manifest.bytes.as_ref());
    let reply = client.get(&blob_path(&f.large.0)).await;
    assert!(reply.status == 200 && reply.body == f.large.1, "blob over TLS differs");
    let reply = client
        .request("GET", &blob_path(&f.large.0), "Range: bytes=-5\r\n")
        .await;
    assert_eq!(reply.body, f.large.1[f.large.1.len() - 5..]);

    let (_, body) = curl(&[
        "--cacert",
        files.cert.to_str().unwrap(),
        "--connect-to",
        &format!("localhost:443:{}", f.addr),
        &format!("https://localhost{}", blob_path(&f.small.0)),
    ])
    .await;
    assert_eq!(body, f.small.1);
}

#[tokio::test]
async fn rotated_certificate_files_are_served_to_new_connections() {
    let (first, second) = (pair(), pair());
    let files = tls_files(&first);
    let certs = Arc::new(
        tls::CertReloader::load(&files.cert, &files.key)
            .unwrap()
            .check_every(Duration::ZERO),
    );
    let f = start_with(test_limits(), Some(certs)).await;
    let trusted = [&first, &second];
    let (mut old, presented) = tls_connect(f.addr, &trusted).await;
    assert_eq!(presented, first.der);

    replace(&files.cert, &second.cert_pem);
    replace(&files.key, &second.key_pem);
    let (_, presented) = tls_connect(f.addr, &trusted).await;
    assert_eq!(presented, second.der, "a new connection gets the new certificate");

    // A bad pair (a key of another certificate, then garbage) is refused; the last good one stays.
    replace(&files.key, &first.key_pem);
    assert_eq!(tls_connect(f.addr, &trusted).await.1, second.der);
    replace(&files.cert, "not a certificate");
    assert_eq!(tls_connect(f.addr, &trusted).await.1, second.der);
    replace(&files.cert, &first.cert_pem);
    assert_eq!(
        tls_connect(f.addr, &trusted).await.1,
        first.der,
        "a good pair again is taken"
    );

    // The connection made before the rotation goes on with its certificate.
    old.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut client = Client {
        stream: old,
        buf: Vec::new(),
    };
    assert_eq!(client.response(false).await.status, 200);
}

#[test]
fn bad_certificate_files_are_refused_naming_the_file_only() {
    let (first, second) = (pair(), pair());
    let files = tls_files(&first);
    tls::load_pair(&files.cert, &files.key).unwrap();
    std::fs::write(&files.key, &second.key_pem).unwrap();
    let e = tls::load_pair(&files.cert, &files.key).unwrap_err().to_string();
    assert!(e.contains("does not match") && e.contains("tls.key"), "{e}");
    std::fs::write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = tls::load_pair(&files.cert, &files.key).unwrap_err().to_string();
    assert!(e.contains("tls.key") && !e.contains("c2VjcmV0"), "{e}");
    std::fs::write(&files.cert, "nothing").unwrap();
    let e = tls::load_pair(&files.cert, &files.key).unwrap_err().to_string();
    assert!(e.contains("tls.crt") && e.contains("no PEM certificate"), "{e}");
    let e = tls::load_pair(Path::new("/nonexistent/cert"), &files.key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/cert"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------------
// Throughput (run by hand: cargo test --lib registry::tests::throughput -- --ignored --nocapture)
// ---------------------------------------------------------------------------------------------------------------

/// GETs of a 4 MiB blob over loopback, on 1 and on 8 keep-alive connections, with `sendfile` and with the copy
/// path, the same client for both, alternating, five runs of 1.6 GiB each; prints the medians of MiB/s and of
/// the process's CPU seconds per GiB (client included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    let blob = content(4 << 20, 11);
    for connections in [1usize, 8] {
        let mut runs: HashMap<bool, Vec<(f64, f64)>> = HashMap::new();
        for _ in 0..5 {
            for copy_only in [false, true] {
                runs.entry(copy_only)
                    .or_default()
                    .push(measure(&blob, connections, copy_only).await);
            }
        }
        for (copy_only, mut results) in runs {
            let median = |values: &mut Vec<f64>| {
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            let mut speeds: Vec<f64> = results.iter().map(|r| r.0).collect();
            let mut cpus: Vec<f64> = results.drain(..).map(|r| r.1).collect();
            println!(
                "{connections} connection(s), {}: {:.0} MiB/s, {:.2} CPU-s/GiB",
                if copy_only { "copy" } else { "sendfile" },
                median(&mut speeds),
                median(&mut cpus)
            );
        }
    }
}

/// One run: MiB/s and CPU seconds per GiB.
async fn measure(blob: &[u8], connections: usize, copy_only: bool) -> (f64, f64) {
    fn cpu_seconds() -> f64 {
        // SAFETY: getrusage fills the struct it is given and has no other preconditions.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
    let mut digest = None;
    let limits = Limits {
        copy_only,
        ..test_limits()
    };
    let f = start_custom(limits, None, |m| digest = Some(m.add_blob(blob))).await;
    let path = Arc::new(blob_path(&digest.unwrap()));
    let size = blob.len();
    let rounds = 400 / connections;
    let (started, cpu) = (std::time::Instant::now(), cpu_seconds());
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let path = path.clone();
            let addr = f.addr;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
                let mut chunk = vec![0u8; 256 * 1024];
                for _ in 0..rounds {
                    stream.write_all(request.as_bytes()).await.unwrap();
                    // The head, then exactly the blob's bytes.
                    let (mut head, mut body) = (Vec::new(), None);
                    while body.is_none_or(|got| got < size) {
                        let n = stream.read(&mut chunk).await.unwrap();
                        assert!(n > 0);
                        match body {
                            Some(got) => body = Some(got + n),
                            None => {
                                head.extend_from_slice(&chunk[..n]);
                                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                                    body = Some(head.len() - (i + 4));
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let gib = (rounds * connections * size) as f64 / (1u64 << 30) as f64;
    (gib * 1024.0 / elapsed, (cpu_seconds() - cpu) / gib)
}
