//! The one load client that drives both servers: gRPC `Fetch` streams over the daemon's Unix socket, or
//! HTTP/1.1 GETs over loopback TCP. Every client has its own connection, opened before the clock starts,
//! and makes its requests one after another; the bodies are counted, not copied or hashed, so the client
//! costs the same per byte in both modes. A separate, untimed request checks the bytes themselves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use wasmcache::proto::fetch_response::Msg;
use wasmcache::proto::module_cache_client::ModuleCacheClient;
use wasmcache::proto::FetchRequest;

use crate::procs::unix_channel_with_window;

/// The stream window of the load client's gRPC connections: generous, so the client never holds a 4 MiB
/// module back.
pub const GENEROUS_WINDOW: u32 = 8 << 20;
/// HTTP/2's initial stream window (RFC 9113), for comparison.
pub const DEFAULT_WINDOW: u32 = 65_535;

/// What the load client asks for, and from whom.
#[derive(Clone, Debug)]
pub enum Target {
    /// `Fetch(url)` on the daemon's socket, with this HTTP/2 stream window on every client connection.
    Grpc { socket: PathBuf, url: String, window: u32 },
    /// `GET path` from an HTTP server.
    Http { addr: SocketAddr, path: String },
}

/// One timed load run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Run {
    /// Aggregate throughput in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

#[allow(clippy::large_enum_variant)] // one per connection, made once: boxing would buy nothing
enum Conn {
    Grpc(Box<ModuleCacheClient<Channel>>, FetchRequest),
    Http(SendRequest<Empty<Bytes>>, String, String),
}

impl Conn {
    async fn open(target: &Target) -> Conn {
        match target {
            Target::Grpc { socket, url, window } => {
                let channel = unix_channel_with_window(socket, *window)
                    .await
                    .expect("connect to the daemon");
                let request = FetchRequest {
                    url: url.clone(),
                    ..Default::default()
                };
                Conn::Grpc(Box::new(ModuleCacheClient::new(channel)), request)
            }
            Target::Http { addr, path } => {
                let tcp = TcpStream::connect(addr).await.expect("connect to the HTTP server");
                tcp.set_nodelay(true).expect("nodelay");
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("http handshake");
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Conn::Http(sender, path.clone(), addr.to_string())
            }
        }
    }

    /// One request; hands every piece of the body to `sink` and returns the body length.
    async fn get(&mut self, mut sink: impl FnMut(&[u8])) -> u64 {
        let mut total = 0u64;
        match self {
            Conn::Grpc(client, request) => {
                let mut stream = client.fetch(request.clone()).await.expect("Fetch").into_inner();
                while let Some(message) = stream.message().await.expect("Fetch stream") {
                    if let Some(Msg::Chunk(chunk)) = message.msg {
                        total += chunk.len() as u64;
                        sink(&chunk);
                    }
                }
            }
            Conn::Http(sender, path, host) => {
                sender.ready().await.expect("http connection ready");
                let request = Request::get(path.as_str())
                    .header(HOST, host.as_str())
                    .body(Empty::new())
                    .expect("http request");
                let response = sender.send_request(request).await.expect("http request");
                assert_eq!(response.status(), StatusCode::OK, "GET {path}");
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("http body").into_data() {
                        total += data.len() as u64;
                        sink(&data);
                    }
                }
            }
        }
        total
    }
}

/// Fetches the module once and checks its length and sha256 (untimed).
pub async fn verify(target: &Target, size: u64, sha256_hex: &str) {
    let mut conn = Conn::open(target).await;
    let mut hasher = wasmcache::digest::HashingWriter::new(std::io::sink());
    let n = conn
        .get(|bytes| std::io::Write::write_all(&mut hasher, bytes).expect("hash"))
        .await;
    let (_, digest) = hasher.finish();
    assert_eq!(n, size, "{target:?} served {n} bytes, want {size}");
    assert_eq!(digest.to_string(), sha256_hex, "{target:?} served other bytes");
}

/// `clients` clients, each on its own connection, make `per_client` requests one after another; the clock
/// runs from the moment all are connected until the last body is read. Every body must be `size` bytes.
pub async fn throughput(target: &Target, clients: usize, per_client: usize, size: u64) -> Run {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let mut conn = Conn::open(target).await;
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut total = 0;
            for _ in 0..per_client {
                let n = conn.get(|_| {}).await;
                assert_eq!(n, size, "short body");
                total += n;
            }
            total
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut bytes = 0;
    while let Some(result) = tasks.join_next().await {
        bytes += result.expect("load client task");
    }
    Run {
        bytes,
        elapsed: started.elapsed(),
    }
}

/// What a latency probe calls.
pub enum Probe {
    /// A Fetch of a (small) module, stream read to its end.
    Fetch(ModuleCacheClient<Channel>, FetchRequest),
    /// `grpc.health.v1.Health/Check` for the server as a whole: the floor of a call on that server.
    Health(HealthClient<Channel>),
}

impl Probe {
    pub async fn fetch(channel: Channel, url: &str) -> Probe {
        Probe::Fetch(
            ModuleCacheClient::new(channel),
            FetchRequest {
                url: url.to_string(),
                ..Default::default()
            },
        )
    }

    /// Makes `n` calls one after another; the duration of each.
    pub async fn latencies(&mut self, n: usize) -> Vec<Duration> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            match self {
                Probe::Fetch(client, request) => {
                    let mut stream = client.fetch(request.clone()).await.expect("Fetch").into_inner();
                    while stream.message().await.expect("Fetch stream").is_some() {}
                }
                Probe::Health(client) => {
                    client
                        .check(HealthCheckRequest { service: String::new() })
                        .await
                        .expect("Health/Check");
                }
            }
            out.push(started.elapsed());
        }
        out
    }
}
