//! The Prometheus metrics on the admin listener (`GET /metrics`): every metric name of the README, and how each
//! moves across a miss, a hit, each kind of failed fetch and each kind of eviction.
//!
//! Every test runs its own daemon (with its own admin port), so counters start at zero; tests still compare a
//! scrape before and after the step they are about, so that what the daemon did earlier cannot pass for it.

use crate::support;

use std::time::{Duration, Instant};

use support::registry::*;
use support::*;
use tonic::Code;
use wasmcache::proto::VerifyRequest;

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms", "--fetch-attempts", "2"];

const REMOTE_FETCH: &str = "wasmcache_remote_fetch_total";
const LOOKUPS: &str = "wasmcache_cache_lookups_total";
const EVICTIONS: &str = "wasmcache_evictions_total";

/// An origin serving `module` at `/m.wasm`, and a daemon with an admin listener and `args`.
async fn setup(module: &[u8], args: &[&str]) -> (Origin, Daemon, std::net::SocketAddr, Client) {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module.to_vec());
    let mut all = FAST_RETRY.to_vec();
    all.extend_from_slice(args);
    let (daemon, admin) = start_with_admin(&all).await;
    let client = daemon.client().await;
    (origin, daemon, admin, client)
}

/// The sum of every `wasmcache_remote_fetch_total` sample, whatever its labels.
fn all_remote_fetches(scrape: &Scrape) -> f64 {
    scrape.all(REMOTE_FETCH).iter().map(|(_, v)| v).sum()
}

/// Between `before` and `after`, exactly one upstream fetch was counted, with `scheme` and `result`.
#[track_caller]
fn assert_one_fetch_counted(before: &Scrape, after: &Scrape, scheme: &str, result: &str) {
    let labels = [("scheme", scheme), ("result", result)];
    assert_eq!(
        after.value(REMOTE_FETCH, &labels) - before.value(REMOTE_FETCH, &labels),
        1.0,
        "{REMOTE_FETCH}{{scheme={scheme:?},result={result:?}}} must grow by 1; exposition:\n{}",
        after.text
    );
    assert_eq!(
        all_remote_fetches(after) - all_remote_fetches(before),
        1.0,
        "exactly one {REMOTE_FETCH} sample may move; exposition:\n{}",
        after.text
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The exposition
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn build_info_names_the_package_version() {
    let (_daemon, admin) = start_with_admin(&[]).await;

    let scrape = scrape(admin).await;

    assert_eq!(
        scrape.get("wasmcache_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0),
        "exposition:\n{}",
        scrape.text
    );
}

/// Gauges and unlabelled counters are exported from the start, at zero on an empty cache.
#[tokio::test]
async fn fresh_daemon_exports_zero_gauges_and_counters() {
    let (_daemon, admin) = start_with_admin(&[]).await;

    let scrape = scrape(admin).await;

    for name in [
        "wasmcache_cache_entries",
        "wasmcache_cache_bytes",
        "wasmcache_served_bytes_total",
        "wasmcache_inflight_fetches",
        "wasmcache_cache_over_limit_total",
    ] {
        assert_eq!(scrape.get(name, &[]), Some(0.0), "{name}; exposition:\n{}", scrape.text);
    }
}

/// After a miss, a hit, a failure and an eviction, every metric of the README has samples under its name.
#[tokio::test]
async fn every_documented_metric_is_exported() {
    let module = wasm_module_of_size("names", 4096);
    let (origin, _daemon, admin, mut client) =
        setup(&module, &["--max-cache-bytes", "6000", "--module-expiry", "1s"]).await;
    origin.serve("/other.wasm", wasm_module_of_size("names-other", 4096));
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req(&url)).await;
    fetch_ok(&mut client, req(&url)).await;
    fetch_err(&mut client, req_sha(&url, &"0".repeat(64))).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fetch_ok(&mut client, req(&origin.url("/other.wasm"))).await;

    let scrape = scrape(admin).await;

    for name in [
        "wasmcache_cache_entries",
        "wasmcache_cache_bytes",
        "wasmcache_cache_lookups_total",
        "wasmcache_remote_fetch_total",
        "wasmcache_fetch_duration_seconds_bucket",
        "wasmcache_fetch_duration_seconds_sum",
        "wasmcache_fetch_duration_seconds_count",
        "wasmcache_served_bytes_total",
        "wasmcache_inflight_fetches",
        "wasmcache_evictions_total",
        "wasmcache_cache_over_limit_total",
        "wasmcache_watch_skipped_total",
        "wasmcache_build_info",
    ] {
        assert!(
            !scrape.all(name).is_empty(),
            "{name} has no sample; exposition:\n{}",
            scrape.text
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Miss and hit
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn miss_counts_a_lookup_miss_and_a_successful_fetch() {
    let module = wasm_module("miss");
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    let before = scrape(admin).await;

    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let after = scrape(admin).await;
    assert_eq!(
        after.value(LOOKUPS, &[("result", "miss")]) - before.value(LOOKUPS, &[("result", "miss")]),
        1.0
    );
    assert_eq!(
        after.value(LOOKUPS, &[("result", "hit")]),
        before.value(LOOKUPS, &[("result", "hit")])
    );
    assert_one_fetch_counted(&before, &after, "http", "success");
}

#[tokio::test]
async fn miss_raises_cache_entries_and_bytes() {
    let module = wasm_module_of_size("entries", 12_345);
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    let before = scrape(admin).await;

    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let after = scrape(admin).await;
    assert_eq!(
        after.value("wasmcache_cache_entries", &[]) - before.value("wasmcache_cache_entries", &[]),
        1.0
    );
    assert_eq!(
        after.value("wasmcache_cache_bytes", &[]) - before.value("wasmcache_cache_bytes", &[]),
        module.len() as f64
    );
}

/// The gauges describe the cache on disk, not what this process fetched: after a restart they still count it.
#[tokio::test]
async fn cache_gauges_count_modules_kept_across_a_restart() {
    let module = wasm_module_of_size("restart", 7777);
    let (origin, mut daemon, admin, mut client) = setup(&module, &[]).await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    daemon.restart().await;

    let scrape = scrape(admin).await;
    assert_eq!(scrape.value("wasmcache_cache_entries", &[]), 1.0, "{}", scrape.text);
    assert_eq!(scrape.value("wasmcache_cache_bytes", &[]), 7777.0, "{}", scrape.text);
}

#[tokio::test]
async fn hit_counts_a_lookup_hit_and_no_fetch() {
    let module = wasm_module("hit");
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req(&url)).await;
    let before = scrape(admin).await;

    let (info, _) = fetch_ok(&mut client, req(&url)).await;

    assert_eq!(info.outcome(), Outcome::Hit);
    let after = scrape(admin).await;
    assert_eq!(
        after.value(LOOKUPS, &[("result", "hit")]) - before.value(LOOKUPS, &[("result", "hit")]),
        1.0
    );
    assert_eq!(
        after.value(LOOKUPS, &[("result", "miss")]),
        before.value(LOOKUPS, &[("result", "miss")])
    );
    assert_eq!(
        all_remote_fetches(&after),
        all_remote_fetches(&before),
        "a hit fetches nothing"
    );
}

/// Two requests that share one upstream fetch (single flight): two misses, one fetch.
#[tokio::test]
async fn concurrent_misses_count_one_upstream_fetch() {
    let module = wasm_module("single-flight");
    let (origin, _daemon, admin, client) = setup(&module, &[]).await;
    origin.delay("/m.wasm", Duration::from_millis(300));
    let url = origin.url("/m.wasm");
    let before = scrape(admin).await;

    let (mut first, mut second) = (client.clone(), client.clone());
    tokio::join!(fetch_ok(&mut first, req(&url)), fetch_ok(&mut second, req(&url)));

    assert_eq!(origin.hits("/m.wasm"), 1, "precondition: one upstream request");
    let after = scrape(admin).await;
    assert_eq!(
        after.value(LOOKUPS, &[("result", "miss")]) - before.value(LOOKUPS, &[("result", "miss")]),
        2.0
    );
    assert_one_fetch_counted(&before, &after, "http", "success");
}

/// Every byte sent over a Fetch stream counts, the hit's as much as the miss's.
#[tokio::test]
async fn fetch_stream_counts_served_bytes() {
    let module = wasm_module_of_size("served", 3 * MAX_CHUNK + 17);
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    let url = origin.url("/m.wasm");
    let before = scrape(admin).await;
    fetch_ok(&mut client, req(&url)).await;
    let after_miss = scrape(admin).await;

    fetch_ok(&mut client, req(&url)).await;

    let after_hit = scrape(admin).await;
    let served = |s: &Scrape| s.value("wasmcache_served_bytes_total", &[]);
    assert_eq!(served(&after_miss) - served(&before), module.len() as f64, "miss");
    assert_eq!(served(&after_hit) - served(&after_miss), module.len() as f64, "hit");
}

/// Resolve sends no module bytes: nothing is counted as served.
#[tokio::test]
async fn resolve_counts_no_served_bytes() {
    let module = wasm_module_of_size("resolve", 50_000);
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req(&url)).await;
    let before = scrape(admin).await;

    client.resolve(req(&url)).await.expect("resolve");

    let after = scrape(admin).await;
    assert_eq!(
        after.value("wasmcache_served_bytes_total", &[]),
        before.value("wasmcache_served_bytes_total", &[])
    );
}

/// One observation per upstream fetch, of at least the time upstream took.
#[tokio::test]
async fn fetch_duration_histogram_observes_each_upstream_fetch() {
    let module = wasm_module("duration");
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    origin.delay("/m.wasm", Duration::from_millis(300));
    let url = origin.url("/m.wasm");

    fetch_ok(&mut client, req(&url)).await;
    fetch_ok(&mut client, req(&url)).await; // a hit: not an upstream fetch

    let scrape = scrape(admin).await;
    let http = [("scheme", "http")];
    assert_eq!(
        scrape.get("wasmcache_fetch_duration_seconds_count", &http),
        Some(1.0),
        "{}",
        scrape.text
    );
    let sum = scrape.value("wasmcache_fetch_duration_seconds_sum", &http);
    assert!((0.3..60.0).contains(&sum), "duration sum {sum} s for a 300 ms upstream");
    assert_eq!(
        scrape.get(
            "wasmcache_fetch_duration_seconds_bucket",
            &[("scheme", "http"), ("le", "+Inf")]
        ),
        Some(1.0),
        "{}",
        scrape.text
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Failures: each counts exactly one reason
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn checksum_mismatch_counts_its_reason() {
    let module = wasm_module("mismatch");
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    let before = scrape(admin).await;

    let status = fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), &"ab".repeat(32))).await;

    assert_code(&status, Code::DataLoss);
    let after = scrape(admin).await;
    assert_one_fetch_counted(&before, &after, "http", "checksum_mismatch");
    assert_eq!(after.value("wasmcache_cache_entries", &[]), 0.0, "nothing was stored");
}

#[tokio::test]
async fn payload_that_is_not_wasm_counts_invalid_module() {
    let (origin, _daemon, admin, mut client) = setup(b"<html>not wasm</html>", &[]).await;
    let before = scrape(admin).await;

    fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;

    assert_one_fetch_counted(&before, &scrape(admin).await, "http", "invalid_module");
}

#[tokio::test]
async fn module_over_max_module_bytes_counts_size_limit() {
    let module = wasm_module_of_size("too-big", 64 * 1024);
    let (origin, _daemon, admin, mut client) = setup(&module, &["--max-module-bytes", "16K"]).await;
    let before = scrape(admin).await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;

    assert_code(&status, Code::ResourceExhausted);
    assert_one_fetch_counted(&before, &scrape(admin).await, "http", "size_limit");
}

#[tokio::test]
async fn upstream_not_found_counts_download_failure() {
    let (origin, _daemon, admin, mut client) = setup(&wasm_module("404"), &[]).await;
    let before = scrape(admin).await;

    fetch_err(&mut client, req(&origin.url("/missing.wasm"))).await;

    assert_one_fetch_counted(&before, &scrape(admin).await, "http", "download_failure");
}

#[tokio::test]
async fn upstream_unauthorized_counts_unauthorized() {
    let (origin, _daemon, admin, mut client) = setup(&wasm_module("401"), &[]).await;
    origin.always("/m.wasm", 401);
    let before = scrape(admin).await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;

    assert_code(&status, Code::Unauthenticated);
    assert_one_fetch_counted(&before, &scrape(admin).await, "http", "unauthorized");
}

/// An image whose manifest is in no known Wasm layout fails at the manifest (Istio's `manifest_failure`), not
/// while downloading the module.
#[tokio::test]
async fn oci_manifest_in_no_known_layout_counts_manifest_failure() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    registry
        .push(
            "metrics/unknown-layout",
            Some("v1"),
            image_with_unknown_layer(&wasm_module("metrics/unknown-layout")),
        )
        .await;
    let host = proxy.host();
    let mut args = vec!["--insecure-registry", host.as_str()];
    args.extend_from_slice(FAST_RETRY);
    let (daemon, admin) = start_with_admin(&args).await;
    let mut client = daemon.client().await;
    let before = scrape(admin).await;

    let status = fetch_err(&mut client, req(&proxy.oci("metrics/unknown-layout:v1"))).await;

    assert_code(&status, Code::FailedPrecondition);
    assert_one_fetch_counted(&before, &scrape(admin).await, "oci", "manifest_failure");
}

// ---------------------------------------------------------------------------------------------------------------
// In flight
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn inflight_fetches_counts_a_running_fetch() {
    let module = wasm_module_of_size("inflight", 2 * 1024 * 1024);
    let (origin, _daemon, admin, client) = setup(&module, &[]).await;
    // 32 frames of 64 KiB, 50 ms apart: about 1.6 s upstream.
    origin.throttle("/m.wasm", Duration::from_millis(50));
    let url = origin.url("/m.wasm");
    let mut fetching = client.clone();
    let task = tokio::spawn(async move { fetch_ok(&mut fetching, req(&url)).await });

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = scrape(admin).await;
        if scrape.value("wasmcache_inflight_fetches", &[]) == 1.0 {
            break;
        }
        assert!(
            !task.is_finished(),
            "the fetch ended before inflight_fetches showed it:\n{}",
            scrape.text
        );
        assert!(
            Instant::now() < deadline,
            "inflight_fetches never reached 1:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.await.expect("fetch task");

    assert_eq!(
        scrape(admin).await.value("wasmcache_inflight_fetches", &[]),
        0.0,
        "back to 0 once done"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Evictions
// ---------------------------------------------------------------------------------------------------------------

/// Committing a module that takes the cache over `--max-cache-bytes` evicts the least recently used one.
#[tokio::test]
async fn size_limit_eviction_counts_and_lowers_entries() {
    let old = wasm_module_of_size("evict-old", 10_000);
    let (origin, _daemon, admin, mut client) = setup(
        &old,
        &[
            "--max-cache-bytes",
            "15000",
            "--module-expiry",
            "1s",
            "--purge-interval",
            "1h",
        ],
    )
    .await;
    origin.serve("/new.wasm", wasm_module_of_size("evict-new", 10_000));
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = scrape(admin).await;

    fetch_ok(&mut client, req(&origin.url("/new.wasm"))).await;

    let after = scrape(admin).await;
    let size_limit = [("reason", "size_limit")];
    assert_eq!(
        after.value(EVICTIONS, &size_limit) - before.value(EVICTIONS, &size_limit),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(after.value("wasmcache_cache_entries", &[]), 1.0, "{}", after.text);
    assert_eq!(after.value("wasmcache_cache_bytes", &[]), 10_000.0, "{}", after.text);
}

#[tokio::test]
async fn expiry_counts_expired_evictions() {
    let module = wasm_module("expire");
    let (origin, _daemon, admin, mut client) =
        setup(&module, &["--module-expiry", "1s", "--purge-interval", "300ms"]).await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let scrape = scrape(admin).await;
        if scrape.value(EVICTIONS, &[("reason", "expired")]) == 1.0 {
            assert_eq!(scrape.value("wasmcache_cache_entries", &[]), 0.0, "{}", scrape.text);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no expired eviction counted:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn remove_counts_removed_evictions() {
    let module = wasm_module("remove");
    let (origin, _daemon, admin, mut client) = setup(&module, &[]).await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    let before = scrape(admin).await;

    client
        .remove(RemoveRequest {
            target: Some(Target::Sha256(sha256_hex(&module))),
        })
        .await
        .expect("remove");

    let after = scrape(admin).await;
    let removed = [("reason", "removed")];
    assert_eq!(
        after.value(EVICTIONS, &removed) - before.value(EVICTIONS, &removed),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(after.value("wasmcache_cache_entries", &[]), 0.0);
}

#[tokio::test]
async fn verify_counts_corrupt_evictions() {
    let module = wasm_module_of_size("corrupt", 5000);
    let (origin, daemon, admin, mut client) = setup(&module, &[]).await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    alter_blob(&daemon.blob_path(&sha256_hex(&module)));
    let before = scrape(admin).await;

    client.verify(VerifyRequest {}).await.expect("verify");

    let after = scrape(admin).await;
    let corrupt = [("reason", "corrupt")];
    assert_eq!(
        after.value(EVICTIONS, &corrupt) - before.value(EVICTIONS, &corrupt),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(after.value("wasmcache_cache_entries", &[]), 0.0, "{}", after.text);
}

/// A limit that only a module in use could meet: the module stays, and the sweep is counted.
#[tokio::test]
async fn unmet_size_limit_counts_over_limit() {
    let module = wasm_module_of_size("over", 20_000);
    let (origin, _daemon, admin, mut client) =
        setup(&module, &["--max-cache-bytes", "10000", "--purge-interval", "1h"]).await;
    let before = scrape(admin).await;

    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let after = scrape(admin).await;
    assert_eq!(
        after.value("wasmcache_cache_over_limit_total", &[]) - before.value("wasmcache_cache_over_limit_total", &[]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.value("wasmcache_cache_entries", &[]),
        1.0,
        "the module in use stays"
    );
    assert_eq!(after.value(EVICTIONS, &[("reason", "size_limit")]), 0.0);
}
