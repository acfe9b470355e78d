//! Test support shared by every integration test file: the real daemon, a counting HTTP(S) origin, and
//! builders for Wasm modules and archives.
//!
//! `Daemon` runs the `wasmcache` binary itself (not the library) on a fresh temp dir and talks to it over its
//! Unix socket, so the tests see exactly what an Envoy agent or the CLI would. `Origin` is a real HTTP/1.1
//! server on `127.0.0.1:0` whose routes are set at runtime and which counts every request per path, so each
//! test can assert how often upstream was contacted (Istio's `wantNumRequest`). `registry` runs the real OCI
//! registry (Debian's `docker-registry`) behind a counting proxy, with pushers for every image format.

// Every test file compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod kube;
pub mod registry;
pub mod sigstore;
pub mod token;
pub mod warm;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::net::{TcpListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

pub use wasmcache::proto::fetch_response::Msg;
pub use wasmcache::proto::module_cache_client::ModuleCacheClient;
pub use wasmcache::proto::remove_request::Target;
pub use wasmcache::proto::{CachedModule, FetchRequest, ListRequest, ModuleInfo, Outcome, PullPolicy, RemoveRequest};

/// The largest chunk the Fetch stream may carry (cache.proto: "at most 1 MiB").
pub const MAX_CHUNK: usize = 1024 * 1024;

/// How long a daemon gets to accept its first gRPC call, or to exit after SIGTERM.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub type Client = ModuleCacheClient<Channel>;

// ---------------------------------------------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------------------------------------------

/// A running `wasmcache serve` with its own temp dir: `cache/` (the cache dir), `wasmcache.sock` and `daemon.log`
/// (stderr of every run, appended). Dropping it kills the process; a panicking test prints the log.
pub struct Daemon {
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts the daemon with `args` after `serve --cache-dir .. --socket ..` and waits until it serves gRPC.
    pub async fn start(args: &[&str]) -> Daemon {
        Daemon::start_prepared(args, |_| {}).await
    }

    /// `start`, after `prepare` has been given the (empty, existing) cache dir to put files in.
    pub async fn start_prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Daemon {
        let mut daemon = Daemon::new(args);
        prepare(&daemon.cache_dir());
        let child = daemon.spawn();
        daemon.child = Some(child);
        daemon.wait_ready().await;
        daemon
    }

    /// Starts an origin and a daemon that share a network namespace of their own, with only a loopback
    /// interface: a test that checks that the daemon refuses a non-loopback address (such as the metadata
    /// endpoint 169.254.169.254) then cannot send a single packet off this machine even if the daemon has a bug.
    pub async fn start_isolated(args: &[&str]) -> (Daemon, Origin) {
        let mut daemon = Daemon::new(args);
        let command = daemon.command();
        let (listener, child) = std::thread::spawn(move || {
            enter_new_netns_with_loopback();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin in the new netns");
            listener.set_nonblocking(true).expect("nonblocking origin listener");
            let child = spawn_command(command);
            (listener, child)
        })
        .join()
        .expect("netns thread panicked");
        daemon.child = Some(child);
        let origin = Origin::from_std_listener(listener, None);
        daemon.wait_ready().await;
        (daemon, origin)
    }

    fn new(args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("wasmcache-test")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("cache")).expect("create cache dir");
        Daemon {
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        }
    }

    fn command(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmcache"));
        command
            .arg("serve")
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .arg("--socket")
            .arg(self.socket())
            // Many daemons run at once: none takes the default admin port unless a test asks for it.
            .args(if self.args.iter().any(|a| a == "--admin-listen") {
                &[][..]
            } else {
                &["--admin-listen", "off"][..]
            })
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,wasmcache=debug".into()),
            )
            .env_remove("WASMCACHE_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    fn spawn(&self) -> Child {
        spawn_command(self.command())
    }

    /// Polls until the socket answers a List call; panics (with the log) if the daemon exits or takes too long.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("daemon child").try_wait().expect("try_wait") {
                panic!("daemon exited during startup with {status}; log:\n{}", self.log());
            }
            if self.socket().exists() {
                if let Ok(channel) = unix_channel(&self.socket()).await {
                    if ModuleCacheClient::new(channel).list(ListRequest {}).await.is_ok() {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("daemon not ready after {STARTUP_TIMEOUT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("wasmcache.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `<cache-dir>/blobs/sha256/<hex>`.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.cache_dir().join("blobs").join("sha256").join(hex)
    }

    /// Every regular file under `<cache-dir>/blobs/` (none when the directory does not exist).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        files_under(&self.cache_dir().join("blobs"))
    }

    /// Every file under `<cache-dir>/ingest/` (none when the directory does not exist).
    pub fn ingest_files(&self) -> Vec<PathBuf> {
        files_under(&self.cache_dir().join("ingest"))
    }

    /// A new client on a new connection to the daemon's socket.
    pub async fn client(&self) -> Client {
        let channel = unix_channel(&self.socket())
            .await
            .expect("connect to the daemon socket");
        ModuleCacheClient::new(channel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit().await
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) without waiting.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.pid(), signal);
    }

    /// Waits (bounded) for the process to exit after a signal sent with `signal`.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit within {STOP_TIMEOUT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `limit` for the process to exit after a signal: its status, or `None` when it was still
    /// running (it is then killed, so a test that expected an exit can report the failure and go on).
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, wait, then start again on the same cache dir and socket path with the same arguments.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts the daemon again after `stop` or `kill`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "daemon is still running");
        self.child = Some(self.spawn());
        self.wait_ready().await;
    }

    /// SIGKILL, as a crash would, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- daemon log ({}) ----\n{}", self.log_path().display(), self.log());
        }
    }
}

fn spawn_command(mut command: Command) -> Child {
    command.spawn().expect("spawn the wasmcache binary")
}

fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Moves the calling thread (only) into a new network namespace and brings its loopback interface up. A process
/// spawned from this thread inherits the namespace, and so does a socket created on it.
pub fn enter_new_netns_with_loopback() {
    // SAFETY: unshare(2) with a flag constant; it affects only the calling thread, which we own.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) (needs root): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: ifreq is a plain C struct for which all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid, NUL-terminated ifreq that outlives both ioctl calls; `fd` is open. Reading and
    // writing `ifru_flags` is what SIOCGIFFLAGS/SIOCSIFFLAGS define.
    unsafe {
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0, "SIOCGIFFLAGS lo");
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), 0, "SIOCSIFFLAGS lo");
        libc::close(fd);
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A tonic channel over a Unix socket, built here rather than with the crate's own helper so that a bug in the
/// client code cannot hide a server behaviour.
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://wasmcache.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

// ---------------------------------------------------------------------------------------------------------------
// gRPC helpers
// ---------------------------------------------------------------------------------------------------------------

/// A FetchRequest for `url` with every other field at its default.
pub fn req(url: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        ..Default::default()
    }
}

/// A FetchRequest for `url` that expects `sha256`.
pub fn req_sha(url: &str, sha256: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        sha256: sha256.to_string(),
        ..Default::default()
    }
}

/// A FetchRequest with the given pull policy and resource identity.
pub fn req_policy(url: &str, policy: PullPolicy, resource: &str, version: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        pull_policy: policy as i32,
        resource_name: resource.to_string(),
        resource_version: version.to_string(),
        ..Default::default()
    }
}

/// Runs a Fetch and collects the stream, checking the stream contract on the way: the first message is Info,
/// every later one a chunk of at most 1 MiB, and the bytes match the info's size and sha256.
pub async fn fetch(client: &mut Client, request: FetchRequest) -> Result<(ModuleInfo, Vec<u8>), Status> {
    let mut stream = client.fetch(request).await?.into_inner();
    let first = stream.message().await?.expect("fetch stream ended without any message");
    let info = match first.msg {
        Some(Msg::Info(info)) => info,
        other => panic!("first fetch message must be Info, got {other:?}"),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(512 << 20));
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(Msg::Chunk(chunk)) => {
                assert!(chunk.len() <= MAX_CHUNK, "chunk of {} bytes exceeds 1 MiB", chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            Some(Msg::Info(_)) => panic!("Info after the first fetch message"),
            None => panic!("empty fetch message"),
        }
    }
    assert_eq!(
        bytes.len() as u64,
        info.size,
        "streamed byte count differs from info.size"
    );
    assert_eq!(
        sha256_hex(&bytes),
        info.sha256,
        "streamed bytes do not hash to info.sha256"
    );
    Ok((info, bytes))
}

/// `fetch` that must succeed.
pub async fn fetch_ok(client: &mut Client, request: FetchRequest) -> (ModuleInfo, Vec<u8>) {
    let url = request.url.clone();
    match fetch(client, request).await {
        Ok(ok) => ok,
        Err(status) => panic!("fetch {url} failed: {:?} {}", status.code(), status.message()),
    }
}

/// `fetch` that must fail; returns the status.
pub async fn fetch_err(client: &mut Client, request: FetchRequest) -> Status {
    let url = request.url.clone();
    match fetch(client, request).await {
        Ok((info, _)) => panic!("fetch {url} succeeded ({info:?}), expected an error"),
        Err(status) => status,
    }
}

/// `fetch` without its panics, for tests that judge the answer themselves (under load a wrong answer is counted,
/// not a panic inside a task; after a crash a short stream is expected): the info and the bytes as streamed. A
/// broken stream contract (no Info first, a second Info, a chunk over 1 MiB) comes back as an `INTERNAL` status.
pub async fn fetch_unchecked(client: &mut Client, request: FetchRequest) -> Result<(ModuleInfo, Vec<u8>), Status> {
    let mut stream = client.fetch(request).await?.into_inner();
    let info = match stream.message().await?.and_then(|m| m.msg) {
        Some(Msg::Info(info)) => info,
        other => return Err(Status::internal(format!("first fetch message is not Info: {other:?}"))),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(512 << 20));
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(Msg::Chunk(chunk)) if chunk.len() <= MAX_CHUNK => bytes.extend_from_slice(&chunk),
            Some(Msg::Chunk(chunk)) => {
                return Err(Status::internal(format!(
                    "chunk of {} bytes exceeds 1 MiB",
                    chunk.len()
                )))
            }
            Some(Msg::Info(_)) => return Err(Status::internal("Info after the first fetch message")),
            None => return Err(Status::internal("empty fetch message")),
        }
    }
    Ok((info, bytes))
}

/// Asserts the status code, showing the message when it differs.
#[track_caller]
pub fn assert_code(status: &Status, code: Code) {
    assert_eq!(
        status.code(),
        code,
        "unexpected status, message: {:?}",
        status.message()
    );
}

pub async fn list(client: &mut Client) -> Vec<CachedModule> {
    client.list(ListRequest {}).await.expect("list").into_inner().modules
}

// ---------------------------------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------------------------------

/// What one path of the origin answers.
#[derive(Clone, Default)]
struct Route {
    /// Statuses returned, one per request, before the route answers normally.
    queue: VecDeque<u16>,
    /// When set, every request gets this status (after the queue is empty).
    always: Option<u16>,
    /// Served with 200 when set.
    body: Option<Bytes>,
    content_type: Option<String>,
    /// Redirect target, served with `redirect_status`.
    location: Option<String>,
    redirect_status: u16,
    /// Wait this long before answering.
    delay: Duration,
    /// Send the body in 64 KiB frames with this pause between frames.
    throttle: Option<Duration>,
    /// Sent as `ETag`; a request whose `If-None-Match` names it gets 304.
    etag: Option<String>,
    /// Answer 200 at once, then send one byte of body after each pause, without end (a slowloris origin).
    drip: Option<Duration>,
}

#[derive(Default)]
struct OriginState {
    routes: Mutex<HashMap<String, Route>>,
    counters: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl OriginState {
    fn counter(&self, path: &str) -> Arc<AtomicUsize> {
        self.counters
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .clone()
    }

    fn with_route(&self, path: &str, f: impl FnOnce(&mut Route)) {
        f(self.routes.lock().unwrap().entry(path.to_string()).or_default());
    }
}

/// A real HTTP/1.1 (and h2) server on 127.0.0.1:0, plain or TLS, with runtime routes and per-path request counts.
/// `stop` (or drop) closes the listener and every open connection, so upstream becomes unreachable.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    task: Option<JoinHandle<()>>,
    tls: Option<TlsFiles>,
}

/// The TLS material of an origin: the CA that signed its certificate, as a PEM file for `--ca-file`.
struct TlsFiles {
    _dir: TempDir,
    ca_file: PathBuf,
}

impl Origin {
    /// A plain-HTTP origin on 127.0.0.1.
    pub async fn start() -> Origin {
        Origin::start_on("127.0.0.1").await
    }

    /// A plain-HTTP origin on another loopback address, such as 127.0.0.2.
    pub async fn start_on(ip: &str) -> Origin {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind origin");
        listener.set_nonblocking(true).expect("nonblocking");
        Origin::from_std_listener(listener, None)
    }

    /// An HTTPS origin whose certificate (for IP 127.0.0.1 only, not `localhost`) is signed by a fresh test CA that no
    /// system trust store knows; `ca_file()` holds that CA.
    pub async fn start_tls() -> Origin {
        let TestPki {
            ca_cert,
            leaf_cert,
            leaf_key,
        } = TestPki::new("wasmcache test CA");

        let dir = tempfile::tempdir().expect("tls temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write ca.pem");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            )
            .expect("server tls config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut origin = Origin::from_std_listener(listener, Some(acceptor));
        origin.tls = Some(TlsFiles { _dir: dir, ca_file });
        origin
    }

    fn from_std_listener(listener: std::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(OriginState::default());
        let task = tokio::spawn(accept_loop(listener, tls, state.clone()));
        Origin {
            addr,
            state,
            task: Some(task),
            tls: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (or `https://`); `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The CA PEM to pass as `--ca-file` (TLS origins only).
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("not a TLS origin").ca_file
    }

    /// Serves `body` with 200 at `path` (replacing whatever the route did before, but not its counter).
    pub fn serve(&self, path: &str, body: impl Into<Bytes>) {
        let body = body.into();
        self.state.with_route(path, |r| {
            *r = Route {
                body: Some(body),
                delay: r.delay,
                throttle: r.throttle,
                ..Default::default()
            }
        });
    }

    /// Serves `body` with an `ETag`, answering 304 to a request that names it in `If-None-Match`.
    pub fn serve_with_etag(&self, path: &str, body: impl Into<Bytes>, etag: &str) {
        self.serve(path, body);
        self.state.with_route(path, |r| r.etag = Some(etag.to_string()));
    }

    pub fn serve_with_type(&self, path: &str, body: impl Into<Bytes>, content_type: &str) {
        self.serve(path, body);
        self.state
            .with_route(path, |r| r.content_type = Some(content_type.to_string()));
    }

    /// The next requests to `path` get these statuses, one each, before the route answers normally.
    pub fn fail_first(&self, path: &str, statuses: &[u16]) {
        self.state
            .with_route(path, |r| r.queue.extend(statuses.iter().copied()));
    }

    /// Every request to `path` gets `status` from now on.
    pub fn always(&self, path: &str, status: u16) {
        self.state.with_route(path, |r| r.always = Some(status));
    }

    /// Requests to `path` are redirected to `location` with `status` (301, 302, 307, 308).
    pub fn redirect(&self, path: &str, status: u16, location: &str) {
        self.state.with_route(path, |r| {
            r.location = Some(location.to_string());
            r.redirect_status = status;
        });
    }

    /// Every response on `path` waits `delay` first.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.state.with_route(path, |r| r.delay = delay);
    }

    /// The body of `path` is sent in 64 KiB frames with `pause` between frames.
    pub fn throttle(&self, path: &str, pause: Duration) {
        self.state.with_route(path, |r| r.throttle = Some(pause));
    }

    /// `path` answers 200 with headers at once, then one byte per `pause`, forever: every wait for the next byte
    /// is short, the body never ends.
    pub fn drip(&self, path: &str, pause: Duration) {
        self.state.with_route(path, |r| r.drip = Some(pause));
    }

    /// The request counter of `path`, shared with the server.
    pub fn counter(&self, path: &str) -> Arc<AtomicUsize> {
        self.state.counter(path)
    }

    /// How many requests reached `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state.counter(path).load(Ordering::SeqCst)
    }

    /// How many requests reached any path.
    pub fn total_hits(&self) -> usize {
        self.state
            .counters
            .lock()
            .unwrap()
            .values()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    /// Closes the listener and every open connection: from now on, connecting is refused.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the JoinSet and with it every connection task.
async fn accept_loop(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, state: Arc<OriginState>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    // A client that rejects our certificate aborts the handshake: nothing to serve then.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(state: Arc<OriginState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let if_none_match = request
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.counter(&path).fetch_add(1, Ordering::SeqCst);
    let route = {
        let mut routes = state.routes.lock().unwrap();
        let route = routes.entry(path.clone()).or_default();
        let queued = route.queue.pop_front();
        (queued, route.clone())
    };
    let (queued, route) = route;
    if !route.delay.is_zero() {
        tokio::time::sleep(route.delay).await;
    }
    if let Some(status) = queued.or(route.always) {
        return Ok(status_response(status));
    }
    if let Some(location) = route.location {
        let response = Response::builder()
            .status(route.redirect_status)
            .header("location", location)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        return Ok(response);
    }
    if let Some(pause) = route.drip {
        let bytes = futures_util::stream::unfold(true, move |first| async move {
            if !first {
                tokio::time::sleep(pause).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0"))), false))
        });
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/wasm")
            .body(StreamBody::new(bytes).boxed())
            .unwrap();
        return Ok(response);
    }
    let Some(body) = route.body else {
        return Ok(status_response(404));
    };
    if route.etag.is_some() && route.etag == if_none_match {
        return Ok(status_response(304));
    }
    let mut response = Response::builder().status(StatusCode::OK).header(
        "content-type",
        route.content_type.as_deref().unwrap_or("application/wasm"),
    );
    if let Some(etag) = &route.etag {
        response = response.header("etag", etag);
    }
    let body = match route.throttle {
        None => {
            response = response.header("content-length", body.len());
            Full::new(body).boxed()
        }
        Some(pause) => {
            let frames = futures_util::stream::unfold((body, true), move |(mut rest, first)| async move {
                if rest.is_empty() {
                    return None;
                }
                if !first {
                    tokio::time::sleep(pause).await;
                }
                let frame = rest.split_to(rest.len().min(64 * 1024));
                Some((Ok::<_, Infallible>(Frame::data(frame)), (rest, false)))
            });
            StreamBody::new(frames).boxed()
        }
    };
    Ok(response.body(body).unwrap())
}

fn status_response(status: u16) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(format!("origin says {status}\n"))).boxed())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Modules, digests, archives
// ---------------------------------------------------------------------------------------------------------------

const WASM_HEADER: &[u8] = b"\0asm\x01\0\0\0";

/// A small valid Wasm module: the header and one custom section named `wasmcache-test` holding `tag`, so that
/// different tags give different modules (and digests).
pub fn wasm_module(tag: &str) -> Vec<u8> {
    let mut section = Vec::new();
    let name = b"wasmcache-test";
    section.push(name.len() as u8);
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    let mut module = WASM_HEADER.to_vec();
    module.push(0); // custom section id
    module.extend_from_slice(&leb128_padded(section.len() as u32));
    module.extend_from_slice(&section);
    module
}

/// A valid Wasm module of exactly `size` bytes whose custom-section payload is pseudo-random (seeded by `tag`)
/// and numbered every 64 KiB, so that a lost, doubled or reordered chunk changes the bytes.
pub fn wasm_module_of_size(tag: &str, size: usize) -> Vec<u8> {
    let name = b"wasmcache-test";
    let overhead = WASM_HEADER.len() + 1 + 5 + 1 + name.len();
    assert!(size >= overhead, "module too small");
    let payload_len = size - overhead;
    let mut module = Vec::with_capacity(size);
    module.extend_from_slice(WASM_HEADER);
    module.push(0);
    module.extend_from_slice(&leb128_padded((1 + name.len() + payload_len) as u32));
    module.push(name.len() as u8);
    module.extend_from_slice(name);

    let mut block = vec![0u8; 64 * 1024];
    let mut x = u64::from_le_bytes(Sha256::digest(tag.as_bytes())[..8].try_into().unwrap()) | 1;
    for byte in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let mut index: u64 = 0;
    while module.len() < size {
        block[..8].copy_from_slice(&index.to_le_bytes());
        let n = (size - module.len()).min(block.len());
        module.extend_from_slice(&block[..n]);
        index += 1;
    }
    module
}

/// LEB128 of `value` in the 5-byte form Wasm allows for u32, so section sizes have a fixed width.
fn leb128_padded(mut value: u32) -> [u8; 5] {
    let mut out = [0u8; 5];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (value & 0x7f) as u8;
        value >>= 7;
        if i < 4 {
            *byte |= 0x80;
        }
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip finish")
}

/// A ustar archive with these regular files, in order.
pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).expect("tar entry");
    }
    builder.into_inner().expect("tar finish")
}

pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    gzip(&tar(entries))
}

/// Runs the `wasmcache` binary with `args` (a client command) on a blocking thread, so the origin, which runs
/// on the test's runtime, keeps serving meanwhile.
pub async fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wasmcache"))
            .args(&args)
            .env_remove("WASMCACHE_SOCKET")
            .env_remove("RUST_LOG")
            .envs(envs)
            .stdin(Stdio::null())
            .output()
            .expect("run the wasmcache binary")
    })
    .await
    .expect("cli thread")
}

/// Runs `wasmcache serve` on a fresh temp dir (`cache/`, `wasmcache.sock`) with `args` and waits up to 10 s for it
/// to exit by itself, as it must on a bad configuration. `None`: it was still running (and has been killed).
pub async fn serve_until_exit(args: &[&str]) -> (Option<ExitStatus>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcache"))
        .arg("serve")
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--socket")
        .arg(dir.path().join("wasmcache.sock"))
        .args(["--admin-listen", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wasmcache");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (Some(status), dir);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, dir);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Admin HTTP listener: a free port, plain HTTP/1.1 requests, the metrics exposition, JSON logs
// ---------------------------------------------------------------------------------------------------------------

/// A loopback address with a port that was free a moment ago (bound on port 0, then released), for
/// `--admin-listen` or `--listen`.
pub fn free_local_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// An HTTP response read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The header's value as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is text"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection to `addr`; `Err` when the connection or the exchange fails.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {path} body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(HttpResponse { status, headers, body })
}

/// `GET path` that must get a response (any status).
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The samples of a Prometheus/OpenMetrics text exposition: `name{labels} value` lines; `#` lines (HELP, TYPE,
/// `# EOF`) are skipped.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

/// A metric name, its labels (sorted), and its value.
type Sample = (String, Vec<(String, String)>, f64);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("metrics line without a value: {line:?}"),
            };
            let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
                parse_labels(body, line)
            } else {
                (Vec::new(), rest)
            };
            let value = rest
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The sample `name` with exactly these labels (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        wanted.sort();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    /// `get`, with an absent sample (a labelled counter not yet incremented) read as 0.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample named `name`, with its labels.
    pub fn all(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

/// Parses `a="x",b="y"}` (after the `{`); returns the sorted labels and the rest of the line.
fn parse_labels<'a>(mut body: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    loop {
        body = body.trim_start_matches([',', ' ']);
        if let Some(rest) = body.strip_prefix('}') {
            labels.sort();
            return (labels, rest);
        }
        let (key, rest) = body
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label set in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad label value in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((key.trim().to_string(), value));
        body = &rest[end + 1..];
    }
}

/// `GET /metrics`, which must answer 200, parsed.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let response = http_get(admin, "/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    Scrape::parse(&response.text())
}

/// Starts a daemon with its admin listener on a free loopback port, and `args`.
pub async fn start_with_admin(args: &[&str]) -> (Daemon, SocketAddr) {
    let admin = free_local_addr();
    let admin_arg = admin.to_string();
    let mut all = vec!["--admin-listen", admin_arg.as_str()];
    all.extend_from_slice(args);
    (Daemon::start(&all).await, admin)
}

/// Every line of the daemon's stderr, each parsed as a JSON object (panics, naming the line, on one that is not).
pub fn json_log(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("log line is not a JSON object: {line:?}"),
        })
        .collect()
}

/// The log events whose message is `message`.
pub fn events<'a>(log: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    log.iter()
        .filter(|e| event_field(e, "message").and_then(|m| m.as_str()) == Some(message))
        .collect()
}

/// A field of a JSON log event: at the top level, or under `fields` when events are not flattened.
pub fn event_field<'a>(event: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    event
        .get(name)
        .or_else(|| event.get("fields").and_then(|f| f.get(name)))
}

/// A fresh CA that no trust store knows, and a server certificate for IP 127.0.0.1 (not `localhost`) signed by it.
pub struct TestPki {
    pub ca_cert: rcgen::Certificate,
    pub leaf_cert: rcgen::Certificate,
    pub leaf_key: rcgen::KeyPair,
}

impl TestPki {
    pub fn new(ca_name: &str) -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf cert");
        TestPki {
            ca_cert,
            leaf_cert,
            leaf_key,
        }
    }
}

/// Rewrites a cached blob file with other bytes of the same length: its last byte flipped, inside a custom
/// section, so the bytes still look like Wasm. The store makes blobs read-only; the test owns the file.
pub fn alter_blob(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let mut permissions = std::fs::metadata(path).expect("blob metadata").permissions();
    #[allow(clippy::permissions_set_readonly_false)] // the test owns this file and must write it
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions).expect("make blob writable");
    std::fs::write(path, bytes).expect("alter blob");
}
