//! What binds a URL to a module: only bytes fetched from that URL (http: downloaded and hashed; oci: its
//! manifest resolves to the module). A caller's `sha256` never does: a pinned request for a URL that is not
//! yet bound to that digest goes to the URL's origin, and fails DATA_LOSS when the origin serves something
//! else, binding nothing (issue 9, item 1: cross-tenant cache poisoning).

use crate::support;

use support::registry::*;
use support::*;
use tonic::Code;

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms", "--fetch-attempts", "2"];

/// The URLs `list` shows for the module with `hex`.
async fn urls_of(client: &mut Client, hex: &str) -> Vec<String> {
    list(client)
        .await
        .into_iter()
        .find(|m| m.sha256 == hex)
        .map(|m| m.urls)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------------
// http
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn pinned_request_for_another_url_is_checked_at_that_url() {
    let origin = Origin::start().await;
    let (a, b) = (wasm_module("binding/a"), wasm_module("binding/b"));
    origin.serve("/x.wasm", a.clone());
    origin.serve("/y.wasm", b.clone());
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;

    let status = fetch_err(&mut client, req_sha(&origin.url("/y.wasm"), &sha256_hex(&a))).await;

    assert_code(&status, Code::DataLoss);
    assert!(status.message().contains(&sha256_hex(&b)), "{}", status.message());
    assert_eq!(origin.hits("/y.wasm"), 1, "the pinned request went to the URL's origin");
    assert_eq!(urls_of(&mut client, &sha256_hex(&a)).await, vec![origin.url("/x.wasm")]);
}

#[tokio::test]
async fn refused_pinned_request_binds_nothing_for_later_callers() {
    let origin = Origin::start().await;
    let (a, b) = (wasm_module("binding/later-a"), wasm_module("binding/later-b"));
    origin.serve("/x.wasm", a.clone());
    origin.serve("/y.wasm", b.clone());
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;
    fetch_err(&mut client, req_sha(&origin.url("/y.wasm"), &sha256_hex(&a))).await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/y.wasm"))).await;

    assert_eq!(bytes, b, "a plain request for the URL gets the URL's own content");
    assert_eq!(info.outcome(), Outcome::Fetched);
}

#[tokio::test]
async fn refused_pinned_request_binds_nothing_across_a_restart() {
    let origin = Origin::start().await;
    let (a, b) = (wasm_module("binding/restart-a"), wasm_module("binding/restart-b"));
    origin.serve("/x.wasm", a.clone());
    origin.serve("/y.wasm", b.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/x.wasm"))).await;
    fetch_err(
        &mut daemon.client().await,
        req_sha(&origin.url("/y.wasm"), &sha256_hex(&a)),
    )
    .await;

    daemon.restart().await;
    let (_, bytes) = fetch_ok(&mut daemon.client().await, req(&origin.url("/y.wasm"))).await;

    assert_eq!(bytes, b);
}

#[tokio::test]
async fn pinned_request_for_another_url_with_the_same_bytes_binds_it_to_one_copy() {
    let origin = Origin::start().await;
    let a = wasm_module("binding/same");
    origin.serve("/x.wasm", a.clone());
    origin.serve("/y.wasm", a.clone());
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&origin.url("/y.wasm"), &sha256_hex(&a))).await;

    assert_eq!(bytes, a);
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(origin.hits("/y.wasm"), 1);
    assert_eq!(daemon.blob_files().len(), 1, "identical bytes are kept once");
    let mut urls = urls_of(&mut client, &sha256_hex(&a)).await;
    urls.sort();
    assert_eq!(urls, vec![origin.url("/x.wasm"), origin.url("/y.wasm")]);
}

/// Istio's "same checksum, different URL" case: with the other URL's origin down, the pinned request fails
/// instead of being answered from the cache.
#[tokio::test]
async fn pinned_request_for_an_unreachable_url_is_not_answered_from_another_url() {
    let origin = Origin::start().await;
    let a = wasm_module("binding/down");
    origin.serve("/x.wasm", a.clone());
    origin.always("/y.wasm", 503);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;

    let status = fetch_err(&mut client, req_sha(&origin.url("/y.wasm"), &sha256_hex(&a))).await;

    assert_code(&status, Code::Unavailable);
    assert_eq!(urls_of(&mut client, &sha256_hex(&a)).await, vec![origin.url("/x.wasm")]);
}

/// A URL bound to the digest by its own fetch is served from the cache, whatever the policy.
#[tokio::test]
async fn pinned_request_for_the_url_that_fetched_it_is_a_hit() {
    let origin = Origin::start().await;
    let a = wasm_module("binding/own");
    origin.serve("/x.wasm", a.clone());
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/x.wasm"))).await;

    let mut pinned = req_sha(&origin.url("/x.wasm"), &sha256_hex(&a));
    pinned.pull_policy = PullPolicy::Always as i32;
    let (info, _) = fetch_ok(&mut client, pinned).await;

    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(origin.hits("/x.wasm"), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// oci
// ---------------------------------------------------------------------------------------------------------------

async fn oci_daemon(proxy: &Proxy) -> (Daemon, Client) {
    let daemon = proxy.daemon(&[]).await;
    let client = daemon.client().await;
    (daemon, client)
}

#[tokio::test]
async fn pinned_request_for_another_repository_is_checked_at_the_registry() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let a = registry.push_module("bind/oci-a", "v1").await;
    let b = registry.push_module("bind/oci-b", "v1").await;
    let (_daemon, mut client) = oci_daemon(&proxy).await;
    fetch_ok(&mut client, req(&proxy.oci("bind/oci-a:v1"))).await;

    let status = fetch_err(&mut client, req_sha(&proxy.oci("bind/oci-b:v1"), &a.module_digest)).await;

    assert_code(&status, Code::DataLoss);
    assert!(proxy.manifest_requests("bind/oci-b") >= 1, "{}", proxy.describe());
    let (_, bytes) = fetch_ok(&mut client, req(&proxy.oci("bind/oci-b:v1"))).await;
    assert_eq!(bytes, b.module, "the plain request gets the repository's own module");
}

#[tokio::test]
async fn pinned_manifest_digest_of_another_repository_is_checked_at_the_registry() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let a = registry.push_module("bind/man-a", "v1").await;
    registry.push_module("bind/man-b", "v1").await;
    let (_daemon, mut client) = oci_daemon(&proxy).await;
    fetch_ok(&mut client, req(&proxy.oci("bind/man-a:v1"))).await;

    let status = fetch_err(
        &mut client,
        req_sha(
            &proxy.oci("bind/man-b:v1"),
            a.manifest_digest.trim_start_matches("sha256:"),
        ),
    )
    .await;

    assert_code(&status, Code::DataLoss);
    assert!(proxy.manifest_requests("bind/man-b") >= 1, "{}", proxy.describe());
}

/// The same image in another repository: its manifest names the cached module, so the manifest is all
/// that is asked for.
#[tokio::test]
async fn pinned_request_for_the_same_image_elsewhere_needs_only_its_manifest() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let module = wasm_module("bind/same-image");
    let a = registry.push("bind/same-a", Some("v1"), cncf_image(&module)).await;
    registry.push("bind/same-b", Some("v1"), cncf_image(&module)).await;
    let (daemon, mut client) = oci_daemon(&proxy).await;
    fetch_ok(&mut client, req(&proxy.oci("bind/same-a:v1"))).await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&proxy.oci("bind/same-b:v1"), &a.module_digest)).await;

    assert_eq!(bytes, module);
    assert_eq!(info.manifest_digest, a.manifest_digest);
    assert_eq!(proxy.manifest_requests("bind/same-b"), 1, "{}", proxy.describe());
    assert_eq!(proxy.blob_gets("bind/same-b"), 0, "{}", proxy.describe());
    assert_eq!(daemon.blob_files().len(), 1);
}

/// Another manifest (other annotations) naming the cached module as its layer: no blob download either.
#[tokio::test]
async fn pinned_request_for_a_manifest_naming_the_cached_layer_downloads_no_blob() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let module = wasm_module("bind/same-layer");
    let a = registry.push("bind/layer-a", Some("v1"), cncf_image(&module)).await;
    let b = registry
        .push(
            "bind/layer-b",
            Some("v1"),
            with_annotation(cncf_image(&module), "org.example.build", "2"),
        )
        .await;
    let (_daemon, mut client) = oci_daemon(&proxy).await;
    fetch_ok(&mut client, req(&proxy.oci("bind/layer-a:v1"))).await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&proxy.oci("bind/layer-b:v1"), &a.module_digest)).await;

    assert_eq!(bytes, module);
    assert_eq!(
        info.manifest_digest, b.manifest_digest,
        "the URL's own manifest is recorded"
    );
    assert_eq!(proxy.blob_gets("bind/layer-b"), 0, "{}", proxy.describe());
}
