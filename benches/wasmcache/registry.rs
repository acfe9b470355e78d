//! A real OCI registry on loopback (Debian's `docker-registry`, plain HTTP, no auth), pushes of CNCF Wasm
//! artifacts through its HTTP API, and a counting reverse proxy in front of it. The same approach as
//! `tests/support/registry.rs`, cut down to what the bench needs (a bench cannot import test support).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::procs::{free_port, http_status, loopback, Proc, REGISTRY_BIN};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CNCF_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const CNCF_WASM_LAYER: &str = "application/wasm";

type Body = BoxBody<Bytes, hyper::Error>;

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    wasmcache::digest::Sha256::of(bytes).prefixed()
}

/// A running `docker-registry serve` storing under `dir/root`.
pub struct Registry {
    proc: Proc,
    pub addr: SocketAddr,
}

/// A pushed CNCF Wasm artifact.
pub struct Pushed {
    /// `HOST:PORT/repo:tag`, without scheme.
    pub reference: String,
    /// Hex sha256 of the module (as `ModuleInfo.sha256`).
    pub module_hex: String,
    /// `sha256:<hex>` of the config blob.
    pub config_digest: String,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: bench/run installs Debian's docker-registry"
        );
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("registry storage root");
        let addr = loopback(free_port());
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: wasmcache-bench-secret\n",
            root = root.display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut command = Command::new(REGISTRY_BIN);
        command.arg("serve").arg(&config_path);
        let mut proc = Proc::spawn("docker-registry", command, &dir.join("registry.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(addr, "/v2/").ok() != Some(200) {
            proc.assert_running();
            assert!(Instant::now() < deadline, "docker-registry not answering on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry { proc, addr }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Pushes `module` as a CNCF Wasm artifact (config `application/vnd.wasm.config.v0+json`, one
    /// `application/wasm` layer) to `repo:tag`.
    pub async fn push_cncf(&self, repo: &str, tag: &str, module: &[u8]) -> Pushed {
        let config = serde_json::to_vec(&json!({
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [digest_of(module)],
        }))
        .expect("config json");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CNCF_WASM_CONFIG, "digest": digest_of(&config), "size": config.len()},
            "layers": [{"mediaType": CNCF_WASM_LAYER, "digest": digest_of(module), "size": module.len()}],
        }))
        .expect("manifest json");
        self.push_blob(repo, &config).await;
        self.push_blob(repo, module).await;
        let (status, _, body) = self
            .request(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("content-type", OCI_MANIFEST)],
                manifest,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "push manifest: {}",
            String::from_utf8_lossy(&body)
        );
        Pushed {
            reference: format!("{}/{repo}:{tag}", self.addr),
            module_hex: wasmcache::digest::Sha256::of(module).to_string(),
            config_digest: digest_of(&config),
        }
    }

    /// Monolithic upload: POST an upload, PUT its location with the digest.
    async fn push_blob(&self, repo: &str, bytes: &[u8]) {
        let digest = digest_of(bytes);
        let (status, headers, body) = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], Vec::new())
            .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "start upload: {}",
            String::from_utf8_lossy(&body)
        );
        let location: Uri = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("upload location");
        let path = location.path_and_query().expect("location path").as_str().to_string();
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, _, body) = self
            .request(
                Method::PUT,
                &format!("{path}{separator}digest={digest}"),
                &[("content-type", "application/octet-stream")],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "finish upload: {}",
            String::from_utf8_lossy(&body)
        );
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header("content-length", body.len());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
            .expect("registry request");
        let response = send(self.addr, request).await.expect("registry request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (parts.status, parts.headers, body)
    }
}

/// Sends `request` (origin-form URI) on a new HTTP/1.1 connection to `addr`.
async fn send(addr: SocketAddr, request: Request<Body>) -> Result<Response<Incoming>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(|e| format!("send: {e}"))
}

/// One request the proxy forwarded.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
}

/// A reverse proxy on a loopback port in front of the registry that records every request it forwards:
/// the single-flight comparison counts the daemon's manifest and blob requests with it.
pub struct CountingProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(listener, upstream, seen.clone()));
        CountingProxy { addr, seen, task }
    }

    pub fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, seen: Arc<Mutex<Vec<Seen>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| forward(seen.clone(), upstream, request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    seen: Arc<Mutex<Vec<Seen>>>,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path_and_query.parse().expect("origin-form uri");
    parts.version = hyper::Version::HTTP_11;
    parts
        .headers
        .insert(HOST, HeaderValue::from_str(&upstream.to_string()).expect("host header"));
    let response = match send(upstream, Request::from_parts(parts, body.boxed())).await {
        Ok(response) => response.map(|b| b.boxed()),
        Err(e) => Response::builder()
            .status(502)
            .body(
                Full::new(Bytes::from(format!("proxy: {e}\n")))
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .expect("502 response"),
    };
    seen.lock().unwrap().push(Seen { method, path });
    Ok(response)
}
