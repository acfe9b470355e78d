//! Target 4: single flight. 1000 concurrent cold `Fetch` requests for one OCI module must cause exactly one
//! manifest download and one download of the module's blob, counted by a proxy in front of the registry.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hyper::Method;
use tokio::runtime::Runtime;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wasmcache::proto::fetch_response::Msg;
use wasmcache::proto::module_cache_client::ModuleCacheClient;
use wasmcache::proto::remove_request::Target;
use wasmcache::proto::{FetchRequest, Outcome, RemoveRequest};

use crate::procs::Daemon;
use crate::pull::module;
use crate::registry::{CountingProxy, Registry};
use crate::report::{Row, Section};
use crate::stats::{list, median, MIB};
use crate::Opts;

const REQUESTS: usize = 1000;
/// The requests share this many connections (a Unix socket connection each), at most 200 streams apiece
/// (the server's default limit of concurrent streams per connection).
const CONNECTIONS: usize = 20;
const MODULE_BYTES: usize = MIB as usize;
const REPO: &str = "bench/flight";

/// What one burst saw upstream.
struct Burst {
    manifest_gets: usize,
    manifest_heads: usize,
    layer_gets: usize,
    config_gets: usize,
    other: usize,
    fetched: usize,
    ms: f64,
}

pub fn run(rt: &Runtime, work: &Path, opts: &Opts) -> Section {
    let reps = opts.reps(3);
    let dir = work.join("flight");
    std::fs::create_dir_all(&dir).expect("flight dir");
    let registry = Registry::start(&dir.join("registry"));
    let bytes = module(MODULE_BYTES, 400);
    let pushed = rt.block_on(registry.push_cncf(REPO, "v1", &bytes));
    let proxy = rt.block_on(CountingProxy::start(registry.addr));
    let daemon = rt.block_on(Daemon::start(
        &dir,
        &dir.join("cache"),
        &["--insecure-registry".into(), proxy.addr.to_string()],
    ));
    let url = format!("oci://{}/{REPO}:v1", proxy.addr);
    let layer = format!("/v2/{REPO}/blobs/sha256:{}", pushed.module_hex);
    let config = format!("/v2/{REPO}/blobs/{}", pushed.config_digest);
    let manifests = format!("/v2/{REPO}/manifests/");

    let channels: Vec<_> = (0..CONNECTIONS).map(|_| rt.block_on(daemon.channel())).collect();
    let mut bursts = Vec::new();
    for rep in 0..reps {
        rt.block_on(async {
            let _ = ModuleCacheClient::new(channels[0].clone())
                .remove(RemoveRequest {
                    target: Some(Target::Sha256(pushed.module_hex.clone())),
                })
                .await;
        });
        proxy.reset();
        let (fetched, ms) = rt.block_on(burst(&channels, &url, &pushed.module_hex));
        let seen = proxy.seen();
        let count = |f: &dyn Fn(&crate::registry::Seen) -> bool| seen.iter().filter(|s| f(s)).count();
        let manifest_gets = count(&|s| s.method == Method::GET && s.path.starts_with(&manifests));
        let manifest_heads = count(&|s| s.method == Method::HEAD && s.path.starts_with(&manifests));
        let layer_gets = count(&|s| s.method == Method::GET && s.path == layer);
        let config_gets = count(&|s| s.method == Method::GET && s.path == config);
        let burst = Burst {
            manifest_gets,
            manifest_heads,
            layer_gets,
            config_gets,
            other: seen.len() - manifest_gets - manifest_heads - layer_gets - config_gets,
            fetched,
            ms,
        };
        eprintln!(
            "bench: single flight rep {}: {} manifest GET, {} manifest HEAD, {} module blob GET, {} config GET, \
             {} other; {} of {REQUESTS} answers FETCHED; {:.0} ms",
            rep + 1,
            burst.manifest_gets,
            burst.manifest_heads,
            burst.layer_gets,
            burst.config_gets,
            burst.other,
            burst.fetched,
            burst.ms
        );
        bursts.push(burst);
    }
    drop(channels);
    drop(daemon);
    drop(proxy);

    let met = bursts.iter().all(|b| b.manifest_gets == 1 && b.layer_gets == 1);
    let column = |f: &dyn Fn(&Burst) -> usize| bursts.iter().map(|b| f(b).to_string()).collect::<Vec<_>>().join(", ");
    let times: Vec<f64> = bursts.iter().map(|b| b.ms).collect();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A 1 MiB CNCF Wasm artifact in the local registry, behind a counting reverse proxy that the daemon \
         talks to (`--insecure-registry` names the proxy). Each repetition removes the module from the cache, \
         then sends {REQUESTS} `Fetch` requests at once over {CONNECTIONS} connections to the daemon's socket \
         (all connected first, released together), reads every stream to its end and checks its bytes, and \
         counts what reached the registry. {reps} repetitions.\n"
    );
    let _ = writeln!(body, "| per repetition | |\n|---|---|");
    let _ = writeln!(body, "| manifest GETs | {} |", column(&|b| b.manifest_gets));
    let _ = writeln!(body, "| manifest HEADs | {} |", column(&|b| b.manifest_heads));
    let _ = writeln!(body, "| module blob GETs | {} |", column(&|b| b.layer_gets));
    let _ = writeln!(body, "| config blob GETs | {} |", column(&|b| b.config_gets));
    let _ = writeln!(
        body,
        "| other registry requests (`/v2/` pings) | {} |",
        column(&|b| b.other)
    );
    let _ = writeln!(
        body,
        "| answers with outcome `FETCHED` (joined the download) | {} |",
        column(&|b| b.fetched)
    );
    let _ = writeln!(body, "| wall time of the burst (ms) | {} |", list(&times, 0));
    let worst = |f: &dyn Fn(&Burst) -> usize| bursts.iter().map(f).max().unwrap_or(0);
    Section {
        title: "4. Single flight".into(),
        rows: vec![Row {
            what: format!("4. Single flight, {REQUESTS} cold requests"),
            goal: "1 manifest + 1 blob download".into(),
            ours: format!(
                "{} manifest GET, {} blob GET (most in a repetition)",
                worst(&|b| b.manifest_gets),
                worst(&|b| b.layer_gets)
            ),
            peer: format!("burst {:.0} ms (median)", median(&times)),
            ratio: "—".into(),
            met: Some(met),
        }],
        body,
    }
}

/// Sends `REQUESTS` Fetches of `url` at once; how many answered `FETCHED`, and the wall time.
async fn burst(channels: &[tonic::transport::Channel], url: &str, module_hex: &str) -> (usize, f64) {
    let barrier = Arc::new(Barrier::new(REQUESTS + 1));
    let mut tasks = JoinSet::new();
    for i in 0..REQUESTS {
        let mut client = ModuleCacheClient::new(channels[i % channels.len()].clone());
        let barrier = barrier.clone();
        let request = FetchRequest {
            url: url.to_string(),
            ..Default::default()
        };
        let module_hex = module_hex.to_string();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut stream = client.fetch(request).await.expect("Fetch").into_inner();
            let mut outcome = None;
            let mut hasher = wasmcache::digest::HashingWriter::new(std::io::sink());
            while let Some(message) = stream.message().await.expect("Fetch stream") {
                match message.msg {
                    Some(Msg::Info(info)) => outcome = Some(info.outcome),
                    Some(Msg::Chunk(chunk)) => std::io::Write::write_all(&mut hasher, &chunk).expect("hash"),
                    None => {}
                }
            }
            let (_, digest) = hasher.finish();
            assert_eq!(digest.to_string(), module_hex, "a Fetch got other bytes");
            outcome == Some(Outcome::Fetched as i32)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut fetched = 0;
    while let Some(result) = tasks.join_next().await {
        fetched += usize::from(result.expect("fetch task"));
    }
    (fetched, started.elapsed().as_secs_f64() * 1e3)
}
