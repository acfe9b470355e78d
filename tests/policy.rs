//! Pull policies: when a cached URL is served as is, re-checked upstream, or served stale.

use crate::support;

use support::*;
use tonic::Code;

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms"];

/// Serves one module at `/m.wasm` and starts a daemon with `args`.
async fn setup(args: &[&str]) -> (Origin, Daemon, Client, String, Vec<u8>) {
    let origin = Origin::start().await;
    let module = wasm_module("policy");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(args).await;
    let client = daemon.client().await;
    let url = origin.url("/m.wasm");
    (origin, daemon, client, url, module)
}

/// The whole life of one URL across policies, with the exact upstream count after every step.
#[tokio::test]
async fn policy_sequence_counts_upstream_requests() {
    let (origin, _daemon, mut client, url, module) = setup(&[]).await;
    use PullPolicy::{Always, IfNotPresent, UnspecifiedPolicy};
    let steps: &[(PullPolicy, &str, &str, Outcome, usize)] = &[
        (UnspecifiedPolicy, "", "", Outcome::Fetched, 1),
        (UnspecifiedPolicy, "", "", Outcome::Hit, 1),
        (IfNotPresent, "", "", Outcome::Hit, 1),
        (IfNotPresent, "ns/plugin", "1", Outcome::Hit, 1),
        // The pair recorded at the last fetch was ("", ""): it differs.
        (Always, "ns/plugin", "1", Outcome::Refreshed, 2),
        (Always, "ns/plugin", "1", Outcome::Hit, 2),
        (Always, "ns/plugin", "2", Outcome::Refreshed, 3),
        (Always, "ns/plugin", "2", Outcome::Hit, 3),
        (Always, "ns/other", "2", Outcome::Refreshed, 4),
        (Always, "ns/other", "", Outcome::Refreshed, 5),
        (Always, "ns/other", "", Outcome::Refreshed, 6),
        (IfNotPresent, "ns/other", "", Outcome::Hit, 6),
        (UnspecifiedPolicy, "", "", Outcome::Hit, 6),
    ];
    for (step, &(policy, resource, version, outcome, hits)) in steps.iter().enumerate() {
        let (info, bytes) = fetch_ok(&mut client, req_policy(&url, policy, resource, version)).await;
        assert_eq!(
            (info.outcome(), origin.hits("/m.wasm")),
            (outcome, hits),
            "step {step}: {policy:?} ({resource:?}, {version:?})"
        );
        assert_eq!(bytes, module, "step {step}");
    }
}

#[tokio::test]
async fn default_policy_serves_cached_url_without_contacting_origin() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req(&url)).await;

    let (info, _) = fetch_ok(
        &mut client,
        req_policy(&url, PullPolicy::UnspecifiedPolicy, "ns/p", "9"),
    )
    .await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn if_not_present_fetches_uncached_url() {
    let (origin, _daemon, mut client, url, module) = setup(&[]).await;

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::IfNotPresent, "ns/p", "1")).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn if_not_present_serves_cached_url_without_contacting_origin() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::IfNotPresent, "ns/p", "1")).await;

    let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::IfNotPresent, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn always_fetches_uncached_url() {
    let (origin, _daemon, mut client, url, module) = setup(&[]).await;

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn always_with_same_resource_version_is_hit() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;

    let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn always_with_changed_resource_version_refreshes() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;

    let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn always_with_other_resource_name_refreshes() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/a", "1")).await;

    let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/b", "1")).await;
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn always_with_empty_resource_version_rechecks_every_time() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "")).await;

    for expected_hits in 2..=4 {
        let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "")).await;
        assert_eq!(info.outcome(), Outcome::Refreshed);
        assert_eq!(origin.hits("/m.wasm"), expected_hits);
    }
}

/// A refresh brings the new upstream bytes; until then the old ones are served without contacting upstream.
#[tokio::test]
async fn refresh_serves_new_upstream_module() {
    let (origin, _daemon, mut client, url, old) = setup(&[]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    let new = wasm_module("policy-v2");
    origin.serve("/m.wasm", new.clone());

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    assert_eq!((info.outcome(), bytes), (Outcome::Hit, old));

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(bytes, new);
    assert_eq!(info.sha256, sha256_hex(&new));
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn failed_refresh_serves_stale() {
    let (origin, _daemon, mut client, url, module) = setup(FAST_RETRY).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.always("/m.wasm", 500);

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Stale);
    assert_eq!(bytes, module);
    assert_eq!(info.sha256, sha256_hex(&module));
    assert_eq!(origin.hits("/m.wasm"), 1 + 5, "the refresh used all five attempts");
}

#[tokio::test]
async fn unreachable_upstream_on_refresh_serves_stale() {
    let (mut origin, _daemon, mut client, url, module) = setup(FAST_RETRY).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "")).await;
    origin.stop().await;

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "")).await;
    assert_eq!(info.outcome(), Outcome::Stale);
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn failed_refresh_with_no_serve_stale_is_error() {
    let (origin, _daemon, mut client, url, _) = setup(&["--retry-backoff", "10ms", "--no-serve-stale"]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.always("/m.wasm", 500);

    let status = fetch_err(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_code(&status, Code::Unavailable);
}

/// With --no-serve-stale a failed refresh does not delete the cached copy: IfNotPresent still serves it.
#[tokio::test]
async fn failed_refresh_with_no_serve_stale_keeps_cached_copy() {
    let (origin, _daemon, mut client, url, module) = setup(&["--retry-backoff", "10ms", "--no-serve-stale"]).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.always("/m.wasm", 500);
    fetch_err(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::IfNotPresent, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
}

/// A stale answer does not record the new resource version: once upstream is back, the same version refreshes.
#[tokio::test]
async fn stale_answer_does_not_record_resource_version() {
    let (origin, _daemon, mut client, url, module) = setup(FAST_RETRY).await;
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.always("/m.wasm", 500);
    let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Stale);
    origin.serve("/m.wasm", module.clone());
    let before = origin.hits("/m.wasm");

    let (info, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(origin.hits("/m.wasm"), before + 1);
}

/// A sha256 whose blob is cached answers Always without contacting upstream, even with an empty version.
#[tokio::test]
async fn cached_sha256_skips_upstream_even_with_always() {
    let (origin, _daemon, mut client, url, module) = setup(&[]).await;
    fetch_ok(&mut client, req(&url)).await;

    let request = FetchRequest {
        sha256: sha256_hex(&module),
        ..req_policy(&url, PullPolicy::Always, "ns/p", "")
    };
    let (info, bytes) = fetch_ok(&mut client, request).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

/// A request checksum that differs from the cached module of the URL is never answered with the cached module:
/// upstream is asked again and its new module returned.
#[tokio::test]
async fn request_checksum_differing_from_cached_url_refetches() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req(&url)).await;
    let new = wasm_module("policy-new");
    origin.serve("/m.wasm", new.clone());

    let (info, bytes) = fetch_ok(&mut client, req_sha(&url, &sha256_hex(&new))).await;
    assert_eq!(bytes, new);
    assert_eq!(info.sha256, sha256_hex(&new));
    assert_eq!(origin.hits("/m.wasm"), 2);
}

/// ... and when upstream still serves the old module, the answer is a checksum mismatch, not the old module.
#[tokio::test]
async fn request_checksum_differing_from_cached_url_and_upstream_is_data_loss() {
    let (origin, _daemon, mut client, url, _) = setup(&[]).await;
    fetch_ok(&mut client, req(&url)).await;

    let wanted = sha256_hex(&wasm_module("not-upstream"));
    let status = fetch_err(&mut client, req_sha(&url, &wanted)).await;
    assert_code(&status, Code::DataLoss);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

/// fetched_at is the time of the last upstream fetch: a hit keeps it, a refresh moves it forward.
#[tokio::test]
async fn fetched_at_moves_on_refresh_only() {
    let (_origin, _daemon, mut client, url, _) = setup(&[]).await;
    let (first, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (hit, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (refreshed, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;

    let at = |info: &ModuleInfo| {
        let t = info.fetched_at.expect("fetched_at");
        (t.seconds, t.nanos)
    };
    assert_eq!(hit.outcome(), Outcome::Hit);
    assert_eq!(at(&hit), at(&first), "a hit keeps fetched_at");
    assert_eq!(refreshed.outcome(), Outcome::Refreshed);
    assert!(at(&refreshed) > at(&first), "a refresh moves fetched_at forward");
}

/// Concurrent re-checks of one cached URL (Always, empty version) share a single upstream request too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_one_upstream_request() {
    let (origin, _daemon, client, url, module) = setup(&[]).await;
    fetch_ok(&mut client.clone(), req(&url)).await;
    origin.delay("/m.wasm", std::time::Duration::from_millis(300));

    let calls = (0..50).map(|_| {
        let mut client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { fetch(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "")).await })
    });
    for result in futures_util::future::join_all(calls).await {
        let (_, bytes) = result.expect("task").expect("fetch");
        assert_eq!(bytes, module);
    }
    assert_eq!(origin.hits("/m.wasm"), 2);
}
