//! The cache lifecycle: least-recently-used eviction under `--max-cache-bytes`, expiry of unused modules every
//! `--purge-interval`, what is never deleted (a module being streamed, used within `--module-expiry`, or
//! pinned), evicted modules taking their index entries with them, and the `Pin`/`Unpin`, `Gc` and `Verify` RPCs
//! with their CLI commands.
//!
//! Durations are short: size-limit tests use a 1 s expiry (so that waiting 1.2 s makes modules unused) and a 1 h
//! purge interval (so that the periodic sweep stays out of the way); expiry tests use a purge interval of 300 ms.

use crate::support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::registry::*;
use support::*;
use tonic::Code;
use wasmcache::proto::{pin_request, GcRequest, PinRequest, VerifyRequest};

/// Every module of these tests has this size, so that limits can be written in modules.
const SIZE: usize = 10_000;

/// Room for two modules, not three; the periodic sweep out of the way.
const LIMIT_TWO: &[&str] = &[
    "--max-cache-bytes",
    "25000",
    "--module-expiry",
    "1s",
    "--purge-interval",
    "1h",
];
/// Modules unused for 2 s expire, looked for every 300 ms.
const EXPIRY: &[&str] = &["--module-expiry", "2s", "--purge-interval", "300ms"];

/// Longer than the 1 s expiry of `LIMIT_TWO`: afterwards, modules not read since are unused.
const PAST_EXPIRY: Duration = Duration::from_millis(1200);

/// An origin serving modules `a`, `b`, `c` (each `SIZE` bytes) at `/a.wasm`, `/b.wasm`, `/c.wasm`.
struct Modules {
    origin: Origin,
}

impl Modules {
    async fn start() -> Modules {
        let origin = Origin::start().await;
        for name in ["a", "b", "c"] {
            origin.serve(&format!("/{name}.wasm"), Modules::bytes(name));
        }
        Modules { origin }
    }

    fn bytes(name: &str) -> Vec<u8> {
        wasm_module_of_size(&format!("lifecycle-{name}"), SIZE)
    }

    fn url(&self, name: &str) -> String {
        self.origin.url(&format!("/{name}.wasm"))
    }

    fn hex(&self, name: &str) -> String {
        sha256_hex(&Modules::bytes(name))
    }

    /// Fetches module `name`, which must succeed; returns its outcome.
    async fn fetch(&self, client: &mut Client, name: &str) -> Outcome {
        let (info, bytes) = fetch_ok(client, req(&self.url(name))).await;
        assert!(
            bytes == Modules::bytes(name),
            "module {name} came back with other bytes"
        );
        info.outcome()
    }
}

/// The sha256 of every cached module, sorted.
async fn cached(client: &mut Client) -> Vec<String> {
    let mut digests: Vec<String> = list(client).await.into_iter().map(|m| m.sha256).collect();
    digests.sort();
    digests
}

fn sorted(mut digests: Vec<String>) -> Vec<String> {
    digests.sort();
    digests
}

/// Polls List until `hex` is no longer cached; panics after `within`.
async fn wait_until_gone(client: &mut Client, hex: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while cached(client).await.iter().any(|d| d == hex) {
        assert!(Instant::now() < deadline, "sha256:{hex} still cached after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pin_url(url: &str) -> PinRequest {
    PinRequest {
        target: Some(pin_request::Target::Url(url.to_string())),
    }
}

fn pin_digest(hex: &str) -> PinRequest {
    PinRequest {
        target: Some(pin_request::Target::Sha256(hex.to_string())),
    }
}

async fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    let socket = daemon.socket().to_str().unwrap().to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--socket", socket.as_str()]);
    run_cli(&all, &[]).await
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Size limit
// ---------------------------------------------------------------------------------------------------------------

/// A, then B, both unused since; committing C needs room for one: A, the least recently used, goes.
#[tokio::test]
async fn size_limit_evicts_the_least_recently_used_module() {
    let m = Modules::start().await;
    let daemon = Daemon::start(LIMIT_TWO).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    tokio::time::sleep(PAST_EXPIRY).await;

    m.fetch(&mut client, "c").await;

    assert_eq!(cached(&mut client).await, sorted(vec![m.hex("b"), m.hex("c")]));
}

/// The evicted module's blob and its URL are gone: List names neither.
#[tokio::test]
async fn evicted_module_leaves_no_blob_and_no_url() {
    let m = Modules::start().await;
    let daemon = Daemon::start(LIMIT_TWO).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    tokio::time::sleep(PAST_EXPIRY).await;

    m.fetch(&mut client, "c").await;

    assert!(!daemon.blob_path(&m.hex("a")).exists(), "blob of A still on disk");
    let urls: Vec<String> = list(&mut client).await.into_iter().flat_map(|m| m.urls).collect();
    assert!(!urls.contains(&m.url("a")), "List still names A's URL: {urls:?}");
}

/// A request for an evicted module's URL (even with its digest) fetches it again: no stale mapping, no checksum
/// error.
#[tokio::test]
async fn evicted_module_is_fetched_again_by_its_url() {
    let m = Modules::start().await;
    let daemon = Daemon::start(LIMIT_TWO).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    tokio::time::sleep(PAST_EXPIRY).await;
    m.fetch(&mut client, "c").await;
    assert!(
        !cached(&mut client).await.contains(&m.hex("a")),
        "precondition: A was evicted"
    );

    let (info, bytes) = fetch_ok(&mut client, req_sha(&m.url("a"), &m.hex("a"))).await;

    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == Modules::bytes("a"));
    assert_eq!(m.origin.hits("/a.wasm"), 2);
}

/// The same for a module pulled from a registry by tag: no manifest or tag mapping outlives the module.
#[tokio::test]
async fn evicted_oci_module_is_fetched_again_by_its_reference() {
    let m = Modules::start().await;
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let module = wasm_module_of_size("lifecycle-oci", SIZE);
    let image = registry
        .push("lifecycle/evicted", Some("v1"), cncf_image(&module))
        .await;
    let host = proxy.host();
    let mut args = vec!["--insecure-registry", host.as_str(), "--retry-backoff", "10ms"];
    args.extend_from_slice(LIMIT_TWO);
    let daemon = Daemon::start(&args).await;
    let mut client = daemon.client().await;
    let reference = proxy.oci("lifecycle/evicted:v1");
    fetch_ok(&mut client, req(&reference)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    tokio::time::sleep(PAST_EXPIRY).await;
    m.fetch(&mut client, "c").await;
    assert!(
        !cached(&mut client).await.contains(&image.module_digest),
        "precondition: the image was evicted"
    );

    let (info, bytes) = fetch_ok(&mut client, req_sha(&reference, &image.manifest_digest)).await;

    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == module);
    assert_eq!(info.manifest_digest, image.manifest_digest);
}

/// A Fetch stream of A is open and not fully read; B was used after A was opened. Both are unused past the
/// expiry, and committing C needs room: B goes, not A, and A's stream still completes.
#[tokio::test]
async fn module_being_streamed_is_not_evicted() {
    let m = Modules::start().await;
    let big = wasm_module_of_size("lifecycle-streamed", 8 * 1024 * 1024);
    m.origin.serve("/big.wasm", big.clone());
    let limit = (big.len() + SIZE + SIZE / 2).to_string();
    let daemon = Daemon::start(&[
        "--max-cache-bytes",
        &limit,
        "--module-expiry",
        "1s",
        "--purge-interval",
        "1h",
    ])
    .await;
    let mut streaming = daemon.client().await;
    let mut stream = streaming
        .fetch(req(&m.origin.url("/big.wasm")))
        .await
        .expect("fetch")
        .into_inner();
    let Some(Msg::Info(info)) = stream.message().await.expect("info").and_then(|r| r.msg) else {
        panic!("first message is not Info");
    };
    let mut received = Vec::new();
    let Some(Msg::Chunk(chunk)) = stream.message().await.expect("chunk").and_then(|r| r.msg) else {
        panic!("second message is not a chunk");
    };
    received.extend_from_slice(&chunk);
    let mut client = daemon.client().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    tokio::time::sleep(PAST_EXPIRY).await;

    m.fetch(&mut client, "c").await;

    assert_eq!(cached(&mut client).await, sorted(vec![info.sha256.clone(), m.hex("c")]));
    while let Some(message) = stream.message().await.expect("rest of the stream") {
        let Some(Msg::Chunk(chunk)) = message.msg else {
            panic!("not a chunk")
        };
        received.extend_from_slice(&chunk);
    }
    assert!(received == big, "the streamed module is complete and intact");
}

/// A resolved module is leased (a proxy reads its path): though A is the least recently used, committing C
/// evicts B.
#[tokio::test]
async fn resolved_module_is_kept_for_its_lease_though_least_recently_used() {
    let m = Modules::start().await;
    let daemon = Daemon::start(LIMIT_TWO).await;
    let mut client = daemon.client().await;
    client.resolve(req(&m.url("a"))).await.expect("resolve A");
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;

    m.fetch(&mut client, "c").await;

    assert_eq!(cached(&mut client).await, sorted(vec![m.hex("a"), m.hex("c")]));
}

/// Once its lease has ended, a resolved module is evictable like any other.
#[tokio::test]
async fn resolved_module_is_evictable_once_its_lease_ends() {
    let m = Modules::start().await;
    let mut args = LIMIT_TWO.to_vec();
    args.extend_from_slice(&["--resolve-lease", "1s"]);
    let daemon = Daemon::start(&args).await;
    let mut client = daemon.client().await;
    client.resolve(req(&m.url("a"))).await.expect("resolve A");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    m.fetch(&mut client, "b").await;

    m.fetch(&mut client, "c").await;

    assert_eq!(cached(&mut client).await, sorted(vec![m.hex("b"), m.hex("c")]));
}

/// Resolve's answer says until when the module is leased: `--resolve-lease` from the call.
#[tokio::test]
async fn resolve_answer_says_until_when_the_module_is_leased() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&["--resolve-lease", "10m"]).await;
    let mut client = daemon.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let info = client.resolve(req(&m.url("a"))).await.expect("resolve").into_inner();

    let until = info.lease_expires_at.expect("lease_expires_at").seconds;
    assert!(
        (before + 599..=before + 602).contains(&until),
        "lease until {until}, called at {before}"
    );
    let (fetched, _) = fetch_ok(&mut client, req(&m.url("a"))).await;
    assert!(fetched.lease_expires_at.is_none(), "Fetch hands out no path to keep");
}

/// A module served (a hit) recently is the more recently used: committing C evicts B.
#[tokio::test]
async fn served_module_is_the_more_recently_used() {
    let m = Modules::start().await;
    let daemon = Daemon::start(LIMIT_TWO).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(m.fetch(&mut client, "a").await, Outcome::Hit);

    m.fetch(&mut client, "c").await;

    assert_eq!(cached(&mut client).await, sorted(vec![m.hex("a"), m.hex("c")]));
}

/// Recent use alone does not keep a module: with a 1 h expiry, two modules used a moment ago do not fit
/// under a limit for one, and the older goes.
#[tokio::test]
async fn recently_used_modules_are_evicted_by_the_size_limit() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&["--max-cache-bytes", "15000", "--module-expiry", "1h"]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;

    m.fetch(&mut client, "b").await;

    assert_eq!(cached(&mut client).await, vec![m.hex("b")]);
}

/// The case: two 4 MiB modules under a 6 MB limit, both served within the expiry: one goes.
#[tokio::test]
async fn two_4_mib_modules_do_not_both_stay_under_a_6_mb_limit() {
    let origin = Origin::start().await;
    let (x, y) = (
        wasm_module_of_size("limit-x", 4 << 20),
        wasm_module_of_size("limit-y", 4 << 20),
    );
    origin.serve("/x.wasm", x.clone());
    origin.serve("/y.wasm", y.clone());
    let daemon = Daemon::start(&["--max-cache-bytes", "6000000"]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;

    fetch_ok(&mut client, req(&origin.url("/y.wasm"))).await;

    assert_eq!(cached(&mut client).await, vec![sha256_hex(&y)]);
}

#[tokio::test]
async fn unmet_size_limit_logs_a_warning() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[
        "--max-cache-bytes",
        "15000",
        "--module-expiry",
        "1h",
        "--log-format",
        "json",
    ])
    .await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    client.pin(pin_url(&m.url("a"))).await.expect("pin A");

    m.fetch(&mut client, "b").await;

    let log = json_log(&daemon);
    let warnings: Vec<_> = log
        .iter()
        .filter(|e| event_field(e, "level").and_then(|l| l.as_str()) == Some("WARN"))
        .filter(|e| {
            event_field(e, "message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m.contains("limit"))
        })
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning about the size limit; log:\n{}",
        daemon.log()
    );
}

#[tokio::test]
async fn pinned_module_survives_the_size_limit() {
    let m = Modules::start().await;
    let daemon = Daemon::start(LIMIT_TWO).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.fetch(&mut client, "b").await;
    client.pin(pin_url(&m.url("a"))).await.expect("pin A");
    tokio::time::sleep(PAST_EXPIRY).await;

    m.fetch(&mut client, "c").await;

    assert_eq!(cached(&mut client).await, sorted(vec![m.hex("a"), m.hex("c")]));
}

// ---------------------------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------------------------

/// A is fetched every 200 ms and stays; B, untouched, disappears from List.
#[tokio::test]
async fn expiry_deletes_only_unused_modules() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    m.fetch(&mut client, "b").await;

    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        m.fetch(&mut client, "a").await;
        let now = cached(&mut client).await;
        assert!(now.contains(&m.hex("a")), "A, used every 200 ms, was deleted");
        if !now.contains(&m.hex("b")) {
            break;
        }
        assert!(Instant::now() < deadline, "B, unused, still cached after 8 s");
    }
    assert_eq!(m.origin.hits("/a.wasm"), 1, "A was served from the cache throughout");
}

/// A Fetch stream of a large module is open and not fully read for longer than the expiry, across several
/// sweeps: the module stays, and the stream completes.
#[tokio::test]
async fn module_being_streamed_does_not_expire() {
    let m = Modules::start().await;
    let big = wasm_module_of_size("lifecycle-streamed-expiry", 8 * 1024 * 1024);
    m.origin.serve("/big.wasm", big.clone());
    let daemon = Daemon::start(&["--module-expiry", "1s", "--purge-interval", "300ms"]).await;
    let mut streaming = daemon.client().await;
    let mut stream = streaming
        .fetch(req(&m.origin.url("/big.wasm")))
        .await
        .expect("fetch")
        .into_inner();
    let Some(Msg::Info(info)) = stream.message().await.expect("info").and_then(|r| r.msg) else {
        panic!("first message is not Info");
    };
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;

    wait_until_gone(&mut client, &m.hex("a"), Duration::from_secs(8)).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // two more sweeps

    assert_eq!(cached(&mut client).await, vec![info.sha256.clone()]);
    let mut received = Vec::new();
    while let Some(message) = stream.message().await.expect("rest of the stream") {
        let Some(Msg::Chunk(chunk)) = message.msg else {
            panic!("not a chunk")
        };
        received.extend_from_slice(&chunk);
    }
    assert!(received == big, "the streamed module is complete and intact");
}

/// A stream the client abandons half-way no longer protects its module: it expires like any unused one.
#[tokio::test]
async fn abandoned_stream_stops_protecting_the_module() {
    let m = Modules::start().await;
    let big = wasm_module_of_size("lifecycle-abandoned", 8 * 1024 * 1024);
    m.origin.serve("/big.wasm", big);
    let daemon = Daemon::start(&["--module-expiry", "1s", "--purge-interval", "300ms"]).await;
    let mut streaming = daemon.client().await;
    let mut stream = streaming
        .fetch(req(&m.origin.url("/big.wasm")))
        .await
        .expect("fetch")
        .into_inner();
    let Some(Msg::Info(info)) = stream.message().await.expect("info").and_then(|r| r.msg) else {
        panic!("first message is not Info");
    };

    drop(stream);

    let mut client = daemon.client().await;
    wait_until_gone(&mut client, &info.sha256, Duration::from_secs(8)).await;
}

#[tokio::test]
async fn expired_module_is_fetched_again_by_its_url() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    wait_until_gone(&mut client, &m.hex("a"), Duration::from_secs(8)).await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&m.url("a"), &m.hex("a"))).await;

    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == Modules::bytes("a"));
    assert_eq!(m.origin.hits("/a.wasm"), 2);
}

#[tokio::test]
async fn pinned_module_survives_expiry() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    m.fetch(&mut client, "b").await;
    client.pin(pin_digest(&m.hex("a"))).await.expect("pin A");

    wait_until_gone(&mut client, &m.hex("b"), Duration::from_secs(8)).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // two more sweeps

    assert_eq!(cached(&mut client).await, vec![m.hex("a")]);
}

#[tokio::test]
async fn unpinned_module_expires_again() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    client.pin(pin_url(&m.url("a"))).await.expect("pin A");

    client.unpin(pin_url(&m.url("a"))).await.expect("unpin A");

    wait_until_gone(&mut client, &m.hex("a"), Duration::from_secs(8)).await;
}

#[tokio::test]
async fn pin_answers_with_the_module_digest() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;

    let by_url = client.pin(pin_url(&m.url("a"))).await.expect("pin by url").into_inner();
    let by_digest = client
        .unpin(pin_digest(&format!("sha256:{}", m.hex("a"))))
        .await
        .expect("unpin")
        .into_inner();

    assert_eq!(by_url.sha256, m.hex("a"));
    assert_eq!(by_digest.sha256, m.hex("a"));
}

#[tokio::test]
async fn pin_of_an_uncached_module_is_not_found() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let by_url = client
        .pin(pin_url(&m.url("a")))
        .await
        .expect_err("pin of an uncached URL");
    let by_digest = client
        .pin(pin_digest(&m.hex("a")))
        .await
        .expect_err("pin of an uncached digest");

    assert_code(&by_url, Code::NotFound);
    assert_code(&by_digest, Code::NotFound);
    assert_eq!(m.origin.total_hits(), 0, "pin never fetches");
}

// ---------------------------------------------------------------------------------------------------------------
// Gc
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn gc_removes_unused_modules_and_reports_them() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&["--module-expiry", "1s", "--purge-interval", "1h"]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(PAST_EXPIRY).await;

    let report = client.gc(GcRequest {}).await.expect("gc").into_inner();

    assert_eq!(report.removed.len(), 1, "{report:?}");
    let removed = &report.removed[0];
    assert_eq!(removed.sha256, m.hex("a"));
    assert_eq!(removed.size, SIZE as u64);
    assert_eq!(removed.reason, "expired");
    assert_eq!(removed.urls, vec![m.url("a")]);
    assert_eq!(report.bytes_after, 0);
    assert!(!report.over_limit);
    assert!(cached(&mut client).await.is_empty(), "List is empty after gc");
}

#[tokio::test]
async fn gc_keeps_modules_used_within_the_expiry() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&["--module-expiry", "1h"]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;

    let report = client.gc(GcRequest {}).await.expect("gc").into_inner();

    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.bytes_after, SIZE as u64);
    assert_eq!(cached(&mut client).await, vec![m.hex("a")]);
}

#[tokio::test]
async fn gc_reports_over_limit_when_every_module_is_in_use() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&["--max-cache-bytes", "15000", "--module-expiry", "1h"]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    client.pin(pin_url(&m.url("a"))).await.expect("pin A");
    client.resolve(req(&m.url("b"))).await.expect("resolve B");

    let report = client.gc(GcRequest {}).await.expect("gc").into_inner();

    assert!(report.removed.is_empty(), "{report:?}");
    assert!(report.over_limit, "{report:?}");
    assert_eq!(report.bytes_after, 2 * SIZE as u64);
}

#[tokio::test]
async fn gc_cli_json_reports_the_sweep() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&["--module-expiry", "1s", "--purge-interval", "1h"]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    tokio::time::sleep(PAST_EXPIRY).await;

    let output = cli(&daemon, &["gc", "--json"]).await;

    assert_success(&output);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {output:?}"));
    assert_eq!(
        report,
        serde_json::json!({
            "removed": [{"sha256": m.hex("a"), "size": SIZE, "reason": "expired", "urls": [m.url("a")]}],
            "bytes_after": 0,
            "over_limit": false,
        })
    );
    assert!(cached(&mut client).await.is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Pin and unpin from the CLI
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn cli_pin_by_url_keeps_the_module_past_expiry() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    m.fetch(&mut client, "b").await;

    assert_success(&cli(&daemon, &["pin", &m.url("a")]).await);

    wait_until_gone(&mut client, &m.hex("b"), Duration::from_secs(8)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cached(&mut client).await, vec![m.hex("a")]);
}

#[tokio::test]
async fn cli_pin_by_digest_keeps_the_module_past_expiry() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    m.fetch(&mut client, "b").await;

    assert_success(&cli(&daemon, &["pin", &format!("sha256:{}", m.hex("a"))]).await);

    wait_until_gone(&mut client, &m.hex("b"), Duration::from_secs(8)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cached(&mut client).await, vec![m.hex("a")]);
}

#[tokio::test]
async fn cli_unpin_lets_the_module_expire() {
    let m = Modules::start().await;
    let daemon = Daemon::start(EXPIRY).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    client.pin(pin_url(&m.url("a"))).await.expect("pin A");

    assert_success(&cli(&daemon, &["unpin", &m.hex("a")]).await);

    wait_until_gone(&mut client, &m.hex("a"), Duration::from_secs(8)).await;
}

#[tokio::test]
async fn cli_pin_of_an_uncached_module_fails() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;

    let output = cli(&daemon, &["pin", &m.url("a")]).await;

    assert!(!output.status.success(), "pin of an uncached URL succeeded: {output:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn verify_cli_json_reports_what_it_checked_and_quarantined() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    m.fetch(&mut client, "b").await;
    alter_blob(&daemon.blob_path(&m.hex("a")));

    let output = cli(&daemon, &["verify", "--json"]).await;

    assert!(!output.status.success(), "a quarantine still exits non-zero");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report, serde_json::json!({"checked": 2, "quarantined": [m.hex("a")]}));
}

#[tokio::test]
async fn verify_quarantines_an_altered_blob() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    m.fetch(&mut client, "b").await;
    alter_blob(&daemon.blob_path(&m.hex("a")));

    let report = client.verify(VerifyRequest {}).await.expect("verify").into_inner();

    assert_eq!(report.checked, 2);
    assert_eq!(report.quarantined_sha256, vec![m.hex("a")]);
    assert_eq!(cached(&mut client).await, vec![m.hex("b")]);
    assert!(!daemon.blob_path(&m.hex("a")).exists(), "the altered blob left blobs/");
}

#[tokio::test]
async fn quarantined_module_is_fetched_again_by_its_url() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    alter_blob(&daemon.blob_path(&m.hex("a")));
    client.verify(VerifyRequest {}).await.expect("verify");

    let (info, bytes) = fetch_ok(&mut client, req(&m.url("a"))).await;

    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == Modules::bytes("a"));
}

#[tokio::test]
async fn verify_cli_exits_non_zero_when_it_quarantined() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;
    alter_blob(&daemon.blob_path(&m.hex("a")));

    let output = cli(&daemon, &["verify"]).await;

    assert!(
        !output.status.success(),
        "verify exited 0 after quarantining: {output:?}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&m.hex("a")),
        "stdout names the quarantined digest: {output:?}"
    );
    assert!(cached(&mut client).await.is_empty());
}

#[tokio::test]
async fn verify_cli_exits_zero_when_every_blob_matches() {
    let m = Modules::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    m.fetch(&mut client, "a").await;

    let output = cli(&daemon, &["verify"]).await;

    assert_success(&output);
    assert_eq!(cached(&mut client).await, vec![m.hex("a")]);
}
