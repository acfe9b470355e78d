//! oci:// fetching against a real registry (plain HTTP, no auth): every image format, indexes and manifest
//! lists, digest references, the pull policy with counted registry requests, expected digests and errors.
//!
//! One registry serves the whole file; each test pushes to repositories of its own and counts requests on a
//! proxy of its own, so tests running in parallel do not see each other's traffic.

use crate::support;

use support::registry::*;
use support::*;
use tonic::Code;

/// A daemon that may reach `proxy` over plain HTTP, with short retries.
async fn daemon_for(proxy: &Proxy, extra: &[&str]) -> (Daemon, Client) {
    let daemon = proxy.daemon(extra).await;
    let client = daemon.client().await;
    (daemon, client)
}

/// The shared registry, a fresh proxy in front of it and a daemon that talks to the proxy.
async fn setup() -> (&'static Registry, Proxy, Daemon, Client) {
    setup_with(&[]).await
}

async fn setup_with(extra: &[&str]) -> (&'static Registry, Proxy, Daemon, Client) {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let (daemon, client) = daemon_for(&proxy, extra).await;
    (registry, proxy, daemon, client)
}

/// The module bytes, digests and outcome of a first fetch of `image`.
#[track_caller]
fn assert_fetched(info: &ModuleInfo, bytes: &[u8], image: &Image) {
    assert!(
        bytes == image.module.as_slice(),
        "served bytes differ from the pushed module"
    );
    assert_eq!(info.sha256, image.module_digest, "ModuleInfo.sha256");
    assert_eq!(
        info.manifest_digest, image.manifest_digest,
        "ModuleInfo.manifest_digest"
    );
    assert_eq!(info.size, image.module.len() as u64);
    assert_eq!(info.outcome(), Outcome::Fetched);
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

// ---------------------------------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------------------------------

/// Pushes the module for `repo` in the format `build` makes as `repo:v1`, fetches it through a fresh daemon
/// and checks that the pushed module was served and cached with its digests.
async fn assert_served_as_pushed(repo: &str, build: impl FnOnce(&[u8]) -> BuiltImage) {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push(repo, Some("v1"), build(&wasm_module(repo))).await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci(&format!("{repo}:v1")))).await;

    assert_fetched(&info, &bytes, &image);
}

/// Pushes an image that holds no module `build` as `repo:v1`: fetching it is FAILED_PRECONDITION and caches
/// nothing.
async fn assert_refused_without_module(repo: &str, build: impl FnOnce(&[u8]) -> BuiltImage) {
    let (registry, proxy, _daemon, mut client) = setup().await;
    registry.push(repo, Some("v1"), build(&wasm_module(repo))).await;

    let status = fetch_err(&mut client, req(&proxy.oci(&format!("{repo}:v1")))).await;

    assert_code(&status, Code::FailedPrecondition);
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

#[tokio::test]
async fn cncf_wasm_artifact_is_served() {
    assert_served_as_pushed("formats/cncf", cncf_image).await;
}

#[tokio::test]
async fn wasm_to_oci_artifact_is_served() {
    assert_served_as_pushed("formats/wasm-to-oci", wasm_to_oci_image).await;
}

#[tokio::test]
async fn solo_image_is_served() {
    assert_served_as_pushed("formats/solo", solo_image).await;
}

/// The Solo content layer is found among unrelated layers (three layers, the module in the middle).
#[tokio::test]
async fn solo_image_with_extra_layers_is_served() {
    assert_served_as_pushed("formats/solo-extra", solo_image_with_extra_layers).await;
}

#[tokio::test]
async fn compat_image_with_variant_annotation_serves_plugin_wasm() {
    assert_served_as_pushed("formats/compat-annotated", |m| compat_image(m, true, LINUX_AMD64)).await;
}

/// Without the annotation, an OCI image config with tar+gzip layers is still read as compat: `plugin.wasm`
/// comes from the last layer.
#[tokio::test]
async fn compat_image_without_annotation_serves_plugin_wasm_from_last_layer() {
    assert_served_as_pushed("formats/compat-plain", |m| compat_image(m, false, LINUX_AMD64)).await;
}

#[tokio::test]
async fn docker_schema2_image_serves_plugin_wasm_from_last_layer() {
    assert_served_as_pushed("formats/docker", |m| docker_image(m, LINUX_AMD64)).await;
}

#[tokio::test]
async fn image_with_tar_layer_lacking_plugin_wasm_is_failed_precondition() {
    assert_refused_without_module("formats/no-plugin", image_without_plugin_wasm).await;
}

#[tokio::test]
async fn image_with_unknown_layer_type_is_failed_precondition() {
    assert_refused_without_module("formats/unknown-layer", image_with_unknown_layer).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Indexes and manifest lists
// ---------------------------------------------------------------------------------------------------------------

/// Pushes linux/amd64 and linux/arm64 compat images and a Wasm artifact for `wasm_platform` into `repo`,
/// listed in that order (Linux first, so order alone cannot pick the Wasm entry), as an OCI index at `tag`.
async fn push_index_with_wasm_entry(
    registry: &Registry,
    repo: &str,
    tag: &str,
    wasm_platform: Platform,
) -> (Image, Index) {
    let amd64 = registry
        .push(
            repo,
            None,
            compat_image(&wasm_module(&format!("{repo}/amd64")), false, LINUX_AMD64),
        )
        .await;
    let arm64 = registry
        .push(
            repo,
            None,
            compat_image(&wasm_module(&format!("{repo}/arm64")), false, LINUX_ARM64),
        )
        .await;
    let wasm = registry
        .push(repo, None, cncf_image(&wasm_module(&format!("{repo}/wasm"))))
        .await;
    let index = registry
        .push_index(
            repo,
            tag,
            OCI_INDEX,
            &[(&amd64, LINUX_AMD64), (&arm64, LINUX_ARM64), (&wasm, wasm_platform)],
        )
        .await;
    (wasm, index)
}

/// An index with a Wasm entry for `platform` among Linux ones, at `repo:v1`: the Wasm entry is served.
async fn assert_index_serves_wasm_entry(repo: &str, platform: Platform) {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let (wasm, _) = push_index_with_wasm_entry(registry, repo, "v1", platform).await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci(&format!("{repo}:v1")))).await;

    assert_fetched(&info, &bytes, &wasm);
}

/// Pushes one compat image per platform into `repo` (by digest) and an index of them at `tag`.
async fn push_linux_index(registry: &Registry, repo: &str, tag: &str, platforms: &[Platform]) -> (Vec<Image>, Index) {
    let mut images = Vec::new();
    for platform in platforms {
        let module = wasm_module(&format!("{repo}/{}/{}", platform.os, platform.arch));
        images.push(registry.push(repo, None, compat_image(&module, false, *platform)).await);
    }
    let entries: Vec<(&Image, Platform)> = images.iter().zip(platforms.iter().copied()).collect();
    let index = registry.push_index(repo, tag, OCI_INDEX, &entries).await;
    (images, index)
}

/// ModuleInfo.manifest_digest is the platform manifest's, not the index's.
#[tokio::test]
async fn index_with_wasip1_platform_serves_the_wasm_entry() {
    assert_index_serves_wasm_entry("index/wasip1", WASM_WASIP1).await;
}

#[tokio::test]
async fn index_with_wasip2_platform_serves_the_wasm_entry() {
    assert_index_serves_wasm_entry("index/wasip2", WASM_WASIP2).await;
}

#[tokio::test]
async fn index_with_wasi_platform_serves_the_wasm_entry() {
    assert_index_serves_wasm_entry("index/wasi", WASM_WASI).await;
}

/// No Wasm entry: the default fallback platform linux/amd64 is chosen, even when it is not listed first.
#[tokio::test]
async fn index_without_wasm_platform_serves_linux_amd64() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let (images, _) = push_linux_index(registry, "index/linux-only", "v1", &[LINUX_ARM64, LINUX_AMD64]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("index/linux-only:v1"))).await;

    assert_fetched(&info, &bytes, &images[1]);
}

#[tokio::test]
async fn platform_flag_sets_the_fallback_platform() {
    let (registry, proxy, _daemon, mut client) = setup_with(&["--platform", "linux/arm64"]).await;
    let (images, _) = push_linux_index(registry, "index/platform-flag", "v1", &[LINUX_AMD64, LINUX_ARM64]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("index/platform-flag:v1"))).await;

    assert_fetched(&info, &bytes, &images[1]);
}

#[tokio::test]
async fn index_without_matching_platform_is_failed_precondition_listing_platforms() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    push_linux_index(registry, "index/no-match", "v1", &[LINUX_ARM64, WINDOWS_AMD64]).await;

    let status = fetch_err(&mut client, req(&proxy.oci("index/no-match:v1"))).await;

    assert_code(&status, Code::FailedPrecondition);
    for platform in ["linux/arm64", "windows/amd64"] {
        assert!(
            status.message().contains(platform),
            "message lists {platform}: {:?}",
            status.message()
        );
    }
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

#[tokio::test]
async fn docker_manifest_list_serves_linux_amd64() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "index/docker-list";
    let arm64 = registry
        .push(
            repo,
            None,
            docker_image(&wasm_module("index/docker-list/arm64"), LINUX_ARM64),
        )
        .await;
    let amd64 = registry
        .push(
            repo,
            None,
            docker_image(&wasm_module("index/docker-list/amd64"), LINUX_AMD64),
        )
        .await;
    registry
        .push_index(
            repo,
            "v1",
            DOCKER_MANIFEST_LIST,
            &[(&arm64, LINUX_ARM64), (&amd64, LINUX_AMD64)],
        )
        .await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("index/docker-list:v1"))).await;

    assert_fetched(&info, &bytes, &amd64);
}

// ---------------------------------------------------------------------------------------------------------------
// Digest references
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn digest_reference_is_served() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry
        .push("digest/plain", None, cncf_image(&wasm_module("digest/plain")))
        .await;

    let url = proxy.oci(&format!("digest/plain@{}", image.manifest_digest));
    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_fetched(&info, &bytes, &image);
}

/// `repo:tag@sha256:...` pulls the digest, even after the tag moved elsewhere.
#[tokio::test]
async fn tag_and_digest_reference_pulls_the_digest() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let first = registry
        .push(
            "digest/tag-and-digest",
            Some("v1"),
            cncf_image(&wasm_module("digest/tag-and-digest/1")),
        )
        .await;
    registry
        .push(
            "digest/tag-and-digest",
            Some("v1"),
            cncf_image(&wasm_module("digest/tag-and-digest/2")),
        )
        .await;

    let url = proxy.oci(&format!("digest/tag-and-digest:v1@{}", first.manifest_digest));
    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_fetched(&info, &bytes, &first);
}

/// A digest cannot move: once cached, even Always serves it without contacting the registry.
#[tokio::test]
async fn cached_digest_reference_is_never_rechecked() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry
        .push(
            "digest/never-rechecked",
            None,
            cncf_image(&wasm_module("digest/never-rechecked")),
        )
        .await;
    let url = proxy.oci(&format!("digest/never-rechecked@{}", image.manifest_digest));
    fetch_ok(&mut client, req(&url)).await;
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "", "")).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(proxy.total(), 0, "registry requests:\n{}", proxy.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// Pull policy
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn if_not_present_on_known_tag_makes_no_registry_request() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push_module("policy/if-not-present", "v1").await;
    let url = proxy.oci("policy/if-not-present:v1");
    fetch_ok(&mut client, req_policy(&url, PullPolicy::IfNotPresent, "", "")).await;
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::IfNotPresent, "", "")).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(info.manifest_digest, image.manifest_digest);
    assert_eq!(proxy.total(), 0, "registry requests:\n{}", proxy.describe());
}

/// Always with an unchanged tag: one manifest request (HEAD or GET), no blob download, REFRESHED.
#[tokio::test]
async fn always_with_unchanged_digest_requests_the_manifest_only() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "policy/always-unchanged";
    let image = registry.push_module(repo, "v1").await;
    let url = proxy.oci(&format!("{repo}:v1"));
    fetch_ok(&mut client, req(&url)).await;
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "", "")).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(info.manifest_digest, image.manifest_digest);
    assert_eq!(
        (proxy.manifest_requests(repo), proxy.blob_gets(repo)),
        (1, 0),
        "(manifest requests, blob GETs); registry requests:\n{}",
        proxy.describe()
    );
}

#[tokio::test]
async fn always_after_tag_moved_serves_the_new_module() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "policy/always-moved";
    registry
        .push(repo, Some("v1"), cncf_image(&wasm_module("policy/always-moved/1")))
        .await;
    let url = proxy.oci(&format!("{repo}:v1"));
    fetch_ok(&mut client, req(&url)).await;
    let moved = registry
        .push(repo, Some("v1"), cncf_image(&wasm_module("policy/always-moved/2")))
        .await;

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "", "")).await;

    assert!(bytes == moved.module, "the module the tag points to now");
    assert_eq!(info.sha256, moved.module_digest);
    assert_eq!(info.manifest_digest, moved.manifest_digest);
    assert_eq!(info.outcome(), Outcome::Refreshed);
}

/// UNSPECIFIED means Always for `:latest`: re-checked with one manifest request, no blob download.
#[tokio::test]
async fn unspecified_policy_on_latest_rechecks_the_manifest() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "policy/unspecified-latest";
    let image = registry.push_module(repo, "latest").await;
    let url = proxy.oci(&format!("{repo}:latest"));
    fetch_ok(&mut client, req(&url)).await;
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(
        (proxy.manifest_requests(repo), proxy.blob_gets(repo)),
        (1, 0),
        "(manifest requests, blob GETs); registry requests:\n{}",
        proxy.describe()
    );
}

/// No tag means `latest`, and so Always under UNSPECIFIED.
#[tokio::test]
async fn unspecified_policy_without_tag_rechecks_latest() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "policy/unspecified-no-tag";
    let image = registry.push_module(repo, "latest").await;
    let url = proxy.oci(repo);
    let (first, _) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(first.manifest_digest, image.manifest_digest);
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Refreshed);
    assert_eq!(
        (proxy.manifest_requests(repo), proxy.blob_gets(repo)),
        (1, 0),
        "(manifest requests, blob GETs); registry requests:\n{}",
        proxy.describe()
    );
}

/// UNSPECIFIED means IfNotPresent for a tag other than `latest`.
#[tokio::test]
async fn unspecified_policy_on_other_tag_makes_no_registry_request() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push_module("policy/unspecified-v1", "v1").await;
    let url = proxy.oci("policy/unspecified-v1:v1");
    fetch_ok(&mut client, req(&url)).await;
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(proxy.total(), 0, "registry requests:\n{}", proxy.describe());
}

/// A module pulled without credentials is public: a later request with some pull secret gets it from the
/// cache like any other.
#[tokio::test]
async fn anonymously_pulled_module_is_served_to_a_request_with_a_secret() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push_module("policy/public", "v1").await;
    let url = proxy.oci("policy/public:v1");
    fetch_ok(&mut client, req(&url)).await;
    proxy.reset();

    let mut request = req_policy(&url, PullPolicy::IfNotPresent, "", "");
    request.pull_secret = docker_config_json(&proxy.host(), "someone", "anything");
    let (info, bytes) = fetch_ok(&mut client, request).await;

    assert_eq!(bytes, image.module);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(proxy.total(), 0, "registry requests:\n{}", proxy.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// Expected sha256
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn sha256_may_name_the_manifest_digest() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push_module("sha/manifest", "v1").await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_sha(&proxy.oci("sha/manifest:v1"), &image.manifest_digest),
    )
    .await;

    assert_fetched(&info, &bytes, &image);
}

#[tokio::test]
async fn sha256_may_name_the_module_digest() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push_module("sha/module", "v1").await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&proxy.oci("sha/module:v1"), &image.module_digest)).await;

    assert_fetched(&info, &bytes, &image);
}

#[tokio::test]
async fn sha256_may_name_the_index_digest() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let (wasm, index) = push_index_with_wasm_entry(registry, "sha/index", "v1", WASM_WASIP1).await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&proxy.oci("sha/index:v1"), hex(&index.digest))).await;

    assert_fetched(&info, &bytes, &wasm);
}

#[tokio::test]
async fn wrong_sha256_is_data_loss_naming_the_candidates() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = registry.push_module("sha/wrong", "v1").await;
    let wrong = sha256_hex(b"not any digest of this image");

    let status = fetch_err(&mut client, req_sha(&proxy.oci("sha/wrong:v1"), &wrong)).await;

    assert_code(&status, Code::DataLoss);
    for candidate in [hex(&image.manifest_digest), image.module_digest.as_str()] {
        assert!(
            status.message().contains(candidate),
            "message names {candidate}: {:?}",
            status.message()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Registry errors
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_blob_is_data_loss_and_nothing_is_stored() {
    let (registry, proxy, daemon, mut client) = setup().await;
    let image = registry.push_module("errors/tampered", "v1").await;
    registry.tamper_blob(&image.module_blob_digest);

    let status = fetch_err(&mut client, req(&proxy.oci("errors/tampered:v1"))).await;

    assert_code(&status, Code::DataLoss);
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn missing_tag_is_not_found() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    registry.push_module("errors/missing-tag", "v1").await;

    let status = fetch_err(&mut client, req(&proxy.oci("errors/missing-tag:v2"))).await;

    assert_code(&status, Code::NotFound);
}

#[tokio::test]
async fn missing_repository_is_not_found() {
    let (_registry, proxy, _daemon, mut client) = setup().await;

    let status = fetch_err(&mut client, req(&proxy.oci("errors/no-such-repo:v1"))).await;

    assert_code(&status, Code::NotFound);
}

#[tokio::test]
async fn missing_blob_is_not_found_and_nothing_is_stored() {
    let (registry, proxy, daemon, mut client) = setup().await;
    let repo = "errors/missing-blob";
    let image = registry.push_module(repo, "v1").await;
    registry.delete_blob(repo, &image.module_blob_digest).await;

    let status = fetch_err(&mut client, req(&proxy.oci(&format!("{repo}:v1")))).await;

    assert_code(&status, Code::NotFound);
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn registry_forbidden_is_permission_denied() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "errors/forbidden";
    registry.push_module(repo, "v1").await;
    proxy.fail_repo(repo, 403);

    let status = fetch_err(&mut client, req(&proxy.oci(&format!("{repo}:v1")))).await;

    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn module_over_max_module_bytes_is_resource_exhausted() {
    let (registry, proxy, daemon, mut client) = setup_with(&["--max-module-bytes", "65536"]).await;
    registry
        .push(
            "errors/big-module",
            Some("v1"),
            cncf_image(&wasm_module_of_size("errors/big-module", 128 * 1024)),
        )
        .await;

    let status = fetch_err(&mut client, req(&proxy.oci("errors/big-module:v1"))).await;

    assert_code(&status, Code::ResourceExhausted);
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn manifest_over_max_manifest_bytes_is_resource_exhausted() {
    let (registry, proxy, _daemon, mut client) = setup_with(&["--max-manifest-bytes", "4096"]).await;
    let image = registry
        .push(
            "errors/big-manifest",
            Some("v1"),
            with_annotation(
                cncf_image(&wasm_module("errors/big-manifest")),
                "org.example.padding",
                &"x".repeat(8192),
            ),
        )
        .await;
    assert!(image.manifest.len() > 8192);

    let status = fetch_err(&mut client, req(&proxy.oci("errors/big-manifest:v1"))).await;

    assert_code(&status, Code::ResourceExhausted);
    assert!(
        status.message().contains("manifest is larger than the 4096-byte limit"),
        "the message names the manifest and its limit: {}",
        status.message()
    );
    assert_eq!(
        proxy.blob_gets("errors/big-manifest"),
        0,
        "no blob is downloaded for a refused manifest"
    );
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

// ---------------------------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn cli_fetch_of_oci_url_prints_the_module_sha256() {
    let (registry, proxy, daemon, _client) = setup().await;
    let image = registry.push_module("cli/fetch", "v1").await;
    let socket = daemon.socket().to_str().unwrap().to_string();

    let output = run_cli(&["fetch", "--socket", &socket, &proxy.oci("cli/fetch:v1")], &[]).await;

    assert!(
        output.status.success(),
        "wasmcache fetch failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&image.module_digest),
        "stdout names the module sha256: {stdout}"
    );
}
