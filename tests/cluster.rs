//! WasmPlugins from the Kubernetes API: `wasmcache warm --from-cluster` (paginated lists, label selectors,
//! namespaces, bearer-token auth, pull secrets read from Secrets) and `wasmcache serve --watch-wasmplugins` (an
//! initial list, then a watch; plugins prefetched as they appear or change; a re-list after `410 Gone`).
//!
//! No Kubernetes API server can run on the test machines, so `support::kube::KubeStub`, a loopback HTTP stub,
//! stands in for it: it serves the exact API paths and JSON the real server would (`WasmPluginList`, watch events,
//! `v1` Secret, `v1` Status errors), checks the bearer token, and records every request with its query, so each
//! test can assert what was asked and how often. The modules themselves come from a counting `Origin` and from
//! the real HTTPS+auth registry.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::kube::*;
use support::registry::*;
use support::warm::Warmed;
use support::*;

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `wasmcache warm --socket <daemon> --from-cluster --kubeconfig <kubeconfig> ARGS`.
async fn warm_from_cluster(daemon: &Daemon, kubeconfig: &Path, args: &[&str]) -> Warmed {
    let socket = path_str(&daemon.socket()).to_string();
    let mut all = vec![
        "warm",
        "--socket",
        &socket,
        "--from-cluster",
        "--kubeconfig",
        path_str(kubeconfig),
    ];
    all.extend_from_slice(args);
    Warmed {
        output: run_cli(&all, &[]).await,
    }
}

/// An origin serving one distinct module at each of `paths`.
async fn origin_with(paths: &[&str]) -> Origin {
    let origin = Origin::start().await;
    for path in paths {
        origin.serve(path, wasm_module(path));
    }
    origin
}

/// A WasmPlugin fetching `url`, without labels or extra spec fields.
fn plugin(namespace: &str, name: &str, url: &str) -> Value {
    wasmplugin(namespace, name, &[], url, json!({}))
}

/// Polls `check` every 20 ms until it holds, for at most `WAIT`; panics naming `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        if Instant::now() > deadline {
            panic!("waited {WAIT:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the daemon's List until `url` is cached, for at most `WAIT`.
async fn wait_cached(daemon: &Daemon, url: &str) {
    let mut client = daemon.client().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let cached: Vec<String> = list(&mut client).await.into_iter().flat_map(|m| m.urls).collect();
        if cached.iter().any(|u| u == url) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{url} was not cached within {WAIT:?}; cached: {cached:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cached_urls(daemon: &Daemon) -> Vec<String> {
    let mut client = daemon.client().await;
    list(&mut client).await.into_iter().flat_map(|m| m.urls).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// warm --from-cluster
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn from_cluster_follows_the_continue_token_and_warms_every_page() {
    let origin = origin_with(&["/p1.wasm", "/p2.wasm", "/p3.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.set_page_cap(2);
    for i in 1..=3 {
        stub.put_plugin(plugin("team-a", &format!("p{i}"), &origin.url(&format!("/p{i}.wasm"))));
    }
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_success();
    for i in 1..=3 {
        assert_eq!(run.outcome(&format!("team-a/p{i}")), "FETCHED", "{}", run.describe());
        assert_eq!(origin.hits(&format!("/p{i}.wasm")), 1);
    }
    let lists = stub.plugin_lists();
    assert_eq!(lists.len(), 2, "two pages, two list requests:\n{}", stub.describe());
    assert!(
        lists[0].param("limit").is_some(),
        "the first request sets limit: {:?}",
        lists[0]
    );
    assert_eq!(lists[0].param("continue"), None, "{:?}", lists[0]);
    assert_eq!(
        lists[1].param("continue"),
        Some("stub-continue-2"),
        "the second request carries the first page's continue token: {:?}",
        lists[1]
    );
    assert!(lists.iter().all(|r| r.authorized), "{}", stub.describe());
}

#[tokio::test]
async fn from_cluster_passes_the_label_selector_and_warms_only_matching_plugins() {
    let origin = origin_with(&["/gw.wasm", "/other.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(wasmplugin(
        "team-a",
        "gw",
        &[("app", "gateway")],
        &origin.url("/gw.wasm"),
        json!({}),
    ));
    stub.put_plugin(wasmplugin(
        "team-a",
        "other",
        &[("app", "backend")],
        &origin.url("/other.wasm"),
        json!({}),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &["--selector", "app=gateway"]).await;

    run.assert_success();
    assert_eq!(run.plugins(), ["team-a/gw"], "{}", run.describe());
    let lists = stub.plugin_lists();
    assert!(!lists.is_empty(), "{}", stub.describe());
    assert!(
        lists.iter().all(|r| r.param("labelSelector") == Some("app=gateway")),
        "every list carries labelSelector=app=gateway:\n{}",
        stub.describe()
    );
    assert_eq!(origin.hits("/gw.wasm"), 1);
    assert_eq!(origin.hits("/other.wasm"), 0);
}

#[tokio::test]
async fn from_cluster_lists_the_kubeconfig_context_namespace_by_default() {
    let origin = origin_with(&["/mine.wasm", "/theirs.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "mine", &origin.url("/mine.wasm")));
    stub.put_plugin(plugin("team-b", "theirs", &origin.url("/theirs.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_success();
    assert_eq!(run.plugins(), ["team-a/mine"], "{}", run.describe());
    let lists = stub.plugin_lists();
    assert!(
        lists
            .iter()
            .all(|r| r.path == "/apis/extensions.istio.io/v1alpha1/namespaces/team-a/wasmplugins"),
        "{}",
        stub.describe()
    );
    assert_eq!(origin.hits("/theirs.wasm"), 0);
}

#[tokio::test]
async fn namespace_flag_overrides_the_kubeconfig_namespace() {
    let origin = origin_with(&["/mine.wasm", "/theirs.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "mine", &origin.url("/mine.wasm")));
    stub.put_plugin(plugin("team-b", "theirs", &origin.url("/theirs.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &["--namespace", "team-b"]).await;

    run.assert_success();
    assert_eq!(run.plugins(), ["team-b/theirs"], "{}", run.describe());
    assert!(
        stub.plugin_lists()
            .iter()
            .all(|r| r.path == "/apis/extensions.istio.io/v1alpha1/namespaces/team-b/wasmplugins"),
        "{}",
        stub.describe()
    );
    assert_eq!(origin.hits("/mine.wasm"), 0);
}

#[tokio::test]
async fn all_namespaces_lists_the_cluster_wide_path() {
    let origin = origin_with(&["/a.wasm", "/b.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "a", &origin.url("/a.wasm")));
    stub.put_plugin(plugin("team-b", "b", &origin.url("/b.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &["--all-namespaces"]).await;

    run.assert_success();
    assert_eq!(run.outcome("team-a/a"), "FETCHED", "{}", run.describe());
    assert_eq!(run.outcome("team-b/b"), "FETCHED", "{}", run.describe());
    let lists = stub.plugin_lists();
    assert!(!lists.is_empty(), "{}", stub.describe());
    assert!(
        lists
            .iter()
            .all(|r| r.path == "/apis/extensions.istio.io/v1alpha1/wasmplugins"),
        "--all-namespaces lists the cluster-wide path:\n{}",
        stub.describe()
    );
}

#[tokio::test]
async fn from_cluster_without_a_token_fails_with_unauthorized_naming_wasmplugins() {
    let origin = origin_with(&["/a.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "a", &origin.url("/a.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", None);
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_failure();
    let all = run.all();
    assert!(
        all.contains("wasmplugins") && (all.contains("401") || all.contains("Unauthorized")),
        "the error names wasmplugins and the refusal:\n{}",
        run.describe()
    );
    assert_eq!(origin.total_hits(), 0);
    assert!(!stub.plugin_lists().is_empty(), "{}", stub.describe());
}

#[tokio::test]
async fn from_cluster_with_a_wrong_token_fails_with_unauthorized_naming_wasmplugins() {
    let origin = origin_with(&["/a.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "a", &origin.url("/a.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some("not-the-token"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_failure();
    let all = run.all();
    assert!(
        all.contains("wasmplugins") && (all.contains("401") || all.contains("Unauthorized")),
        "the error names wasmplugins and the refusal:\n{}",
        run.describe()
    );
    assert!(
        !all.contains("not-the-token"),
        "the token is never printed:\n{}",
        run.describe()
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn from_cluster_forbidden_fails_naming_wasmplugins() {
    let origin = origin_with(&["/a.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "a", &origin.url("/a.wasm")));
    stub.deny_wasmplugins(403);
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_failure();
    let all = run.all();
    assert!(
        all.contains("wasmplugins") && (all.contains("403") || all.to_lowercase().contains("forbidden")),
        "the error names wasmplugins and the refusal:\n{}",
        run.describe()
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn from_cluster_reads_the_pull_secret_from_the_cluster_and_pulls_a_private_image() {
    let repo = "cluster/private";
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let image = registry.push_module(repo, "v1").await;
    let stub = KubeStub::start().await;
    stub.put_secret(
        "team-a",
        "regcred",
        "kubernetes.io/dockerconfigjson",
        &[(
            ".dockerconfigjson",
            &docker_config_json(&proxy.host(), USER_A.0, USER_A.1),
        )],
    );
    stub.put_plugin(wasmplugin(
        "team-a",
        "private",
        &[],
        &proxy.oci(&format!("{repo}:v1")),
        json!({"imagePullSecret": "regcred"}),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let ca = path_str(registry.ca_file()).to_string();
    let daemon = Daemon::start(&["--ca-file", &ca, "--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_success();
    assert_eq!(run.outcome("team-a/private"), "FETCHED", "{}", run.describe());
    assert!(
        run.row("team-a/private").contains(&image.module_digest),
        "{}",
        run.describe()
    );
    let gets = stub.secret_gets("team-a", "regcred");
    assert_eq!(gets.len(), 1, "{}", stub.describe());
    assert!(gets[0].authorized && gets[0].status == 200, "{:?}", gets[0]);
    assert_eq!(proxy.blob_gets_ok(repo), 1, "{}", proxy.describe());
}

/// The plugin's `namespace/name` and the cluster's `metadata.resourceVersion` are the request's resource identity: a
/// proxy's agent asking for the same pair with `Always` afterwards gets a hit.
#[tokio::test]
async fn from_cluster_records_plugins_at_their_cluster_resource_version() {
    let origin = origin_with(&["/always.wasm"]).await;
    let stub = KubeStub::start().await;
    let url = origin.url("/always.wasm");
    let stored = stub.put_plugin(wasmplugin(
        "team-a",
        "always",
        &[],
        &url,
        json!({"imagePullPolicy": "Always"}),
    ));
    let version = stored["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    warm_from_cluster(&daemon, &kubeconfig, &[]).await.assert_success();
    let mut client = daemon.client().await;

    let (info, _) = fetch_ok(
        &mut client,
        req_policy(&url, PullPolicy::Always, "team-a/always", &version),
    )
    .await;

    assert_eq!(info.outcome, Outcome::Hit as i32, "{info:?}");
    assert_eq!(origin.hits("/always.wasm"), 1);
}

#[tokio::test]
async fn from_cluster_missing_secret_fails_that_plugin_naming_the_secret() {
    let origin = origin_with(&["/public.wasm"]).await;
    let stub = KubeStub::start().await;
    // The secrets exist: only the flag keeps the daemon from reading them and prefetching.
    put_regcred(&stub, "team-a", &origin.addr().to_string(), USER_A);
    put_regcred(&stub, "team-b", &origin.addr().to_string(), USER_A);
    stub.put_plugin(plugin("team-a", "public", &origin.url("/public.wasm")));
    stub.put_plugin(wasmplugin(
        "team-a",
        "private",
        &[],
        "oci://127.0.0.1:1/never/pulled:v1",
        json!({"imagePullSecret": "absent"}),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let run = warm_from_cluster(&daemon, &kubeconfig, &[]).await;

    run.assert_failure();
    assert_eq!(run.outcome("team-a/public"), "FETCHED", "{}", run.describe());
    let row = run.row("team-a/private");
    assert!(
        row.contains("FAILED") && row.contains("team-a/absent"),
        "the failed row names the secret: {row}"
    );
    assert_eq!(stub.secret_gets("team-a", "absent").len(), 1, "{}", stub.describe());
}

/// What the daemon would refuse is found by the dry run without any daemon, and named at the plugin and field as
/// file errors are.
#[tokio::test]
async fn from_cluster_dry_run_refuses_a_short_sha256_naming_the_plugin_and_field() {
    let stub = KubeStub::start().await;
    stub.put_plugin(wasmplugin(
        "team-a",
        "short-sha",
        &[],
        "http://127.0.0.1:9/m.wasm",
        json!({"sha256": "abc123"}),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");

    let run = Warmed {
        output: run_cli(
            &[
                "warm",
                "--socket",
                path_str(&socket),
                "--from-cluster",
                "--kubeconfig",
                path_str(&kubeconfig),
                "--dry-run",
            ],
            &[],
        )
        .await,
    };

    run.assert_failure();
    let expected = "cluster team-a/short-sha: spec.sha256: sha256 digest must be 64 hex characters, got 6 characters";
    assert!(
        run.row("team-a/short-sha").contains(expected),
        "the row says {expected:?}:\n{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// serve --watch-wasmplugins
// ---------------------------------------------------------------------------------------------------------------

/// A daemon that watches the stub's WasmPlugins (all namespaces unless `extra` says otherwise).
async fn watching_daemon(kubeconfig: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--watch-wasmplugins",
        "--kubeconfig",
        path_str(kubeconfig),
        "--retry-backoff",
        "10ms",
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args).await
}

/// Waits until the daemon has `n` watch requests open (or made) at the stub.
async fn wait_watches(stub: &KubeStub, n: usize) {
    stub.wait_for(&format!("{n} watch request(s)"), |requests| {
        requests
            .iter()
            .filter(|r| r.is_plugin_watch() && r.status == 200)
            .count()
            >= n
    })
    .await;
}

#[tokio::test]
async fn watch_prefetches_a_plugin_present_at_list_time() {
    let origin = origin_with(&["/listed.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "listed", &origin.url("/listed.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));

    let daemon = watching_daemon(&kubeconfig, &[]).await;

    let counter = origin.counter("/listed.wasm");
    eventually("the origin to see the prefetch", || {
        counter.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    wait_cached(&daemon, &origin.url("/listed.wasm")).await;
    let ls = run_cli(&["ls", "--socket", path_str(&daemon.socket())], &[]).await;
    let ls_out = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success() && ls_out.contains(&origin.url("/listed.wasm")),
        "wasmcache ls shows the prefetched module: {ls_out}"
    );
    assert_eq!(origin.hits("/listed.wasm"), 1);
}

#[tokio::test]
async fn watch_lists_with_limit_then_watches_from_the_list_resource_version() {
    let origin = origin_with(&["/a.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "a", &origin.url("/a.wasm")));
    let list_version = stub.resource_version();
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));

    let _daemon = watching_daemon(&kubeconfig, &[]).await;

    wait_watches(&stub, 1).await;
    let list = &stub.plugin_lists()[0];
    assert!(list.authorized, "{list:?}");
    assert!(list.param("limit").is_some(), "the initial list is paginated: {list:?}");
    let watch = &stub.plugin_watches()[0];
    assert!(watch.authorized, "{watch:?}");
    assert_eq!(watch.param("resourceVersion"), Some(list_version.as_str()), "{watch:?}");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"), "{watch:?}");
    assert!(watch.param("timeoutSeconds").is_some(), "{watch:?}");
    assert_eq!(
        watch.path, "/apis/extensions.istio.io/v1alpha1/wasmplugins",
        "without --watch-namespace every namespace is watched"
    );
}

#[tokio::test]
async fn watch_initial_list_follows_continue_tokens() {
    let origin = origin_with(&["/one.wasm", "/two.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.set_page_cap(1);
    stub.put_plugin(plugin("team-a", "one", &origin.url("/one.wasm")));
    stub.put_plugin(plugin("team-b", "two", &origin.url("/two.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));

    let daemon = watching_daemon(&kubeconfig, &[]).await;

    wait_cached(&daemon, &origin.url("/one.wasm")).await;
    wait_cached(&daemon, &origin.url("/two.wasm")).await;
    let lists = stub.plugin_lists();
    assert!(lists.len() >= 2, "{}", stub.describe());
    assert_eq!(
        lists[1].param("continue"),
        Some("stub-continue-1"),
        "{}",
        stub.describe()
    );
}

#[tokio::test]
async fn watch_prefetches_an_added_plugin() {
    let origin = origin_with(&["/added.wasm"]).await;
    let stub = KubeStub::start().await;
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_watches(&stub, 1).await;

    let added = stub.put_plugin(plugin("team-a", "added", &origin.url("/added.wasm")));
    stub.send_event("ADDED", &added);

    wait_cached(&daemon, &origin.url("/added.wasm")).await;
    assert_eq!(origin.hits("/added.wasm"), 1);
}

#[tokio::test]
async fn watch_modified_always_plugin_with_a_new_version_is_fetched_again() {
    let origin = origin_with(&["/always.wasm"]).await;
    let stub = KubeStub::start().await;
    let spec = json!({"imagePullPolicy": "Always"});
    stub.put_plugin(wasmplugin(
        "team-a",
        "always",
        &[],
        &origin.url("/always.wasm"),
        spec.clone(),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_cached(&daemon, &origin.url("/always.wasm")).await;
    wait_watches(&stub, 1).await;
    assert_eq!(origin.hits("/always.wasm"), 1);

    let modified = stub.put_plugin(wasmplugin("team-a", "always", &[], &origin.url("/always.wasm"), spec));
    stub.send_event("MODIFIED", &modified);

    let counter = origin.counter("/always.wasm");
    eventually("a second fetch of /always.wasm", || {
        counter.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    // Settle, then check that it was exactly one more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.hits("/always.wasm"), 2);
}

#[tokio::test]
async fn watch_modified_if_not_present_plugin_is_not_fetched_again() {
    let origin = origin_with(&["/steady.wasm", "/marker.wasm"]).await;
    let stub = KubeStub::start().await;
    let spec = json!({"imagePullPolicy": "IfNotPresent"});
    stub.put_plugin(wasmplugin(
        "team-a",
        "steady",
        &[],
        &origin.url("/steady.wasm"),
        spec.clone(),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_cached(&daemon, &origin.url("/steady.wasm")).await;
    wait_watches(&stub, 1).await;

    let modified = stub.put_plugin(wasmplugin("team-a", "steady", &[], &origin.url("/steady.wasm"), spec));
    stub.send_event("MODIFIED", &modified);
    // A later event whose prefetch shows that the watch has handled the one before it.
    let marker = stub.put_plugin(plugin("team-a", "marker", &origin.url("/marker.wasm")));
    stub.send_event("ADDED", &marker);
    wait_cached(&daemon, &origin.url("/marker.wasm")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(origin.hits("/steady.wasm"), 1, "IfNotPresent is not fetched again");
}

#[tokio::test]
async fn watch_relists_after_a_410_error_event_and_keeps_working() {
    let origin = origin_with(&["/first.wasm", "/missed.wasm", "/after.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "first", &origin.url("/first.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_watches(&stub, 1).await;
    // A change the watch never reports: only a re-list can find it.
    stub.put_plugin(plugin("team-a", "missed", &origin.url("/missed.wasm")));

    stub.send_error_event(410);

    stub.wait_for("a second list after 410 Gone", |requests| {
        requests.iter().filter(|r| r.is_plugin_list()).count() >= 2
    })
    .await;
    wait_cached(&daemon, &origin.url("/missed.wasm")).await;
    wait_watches(&stub, 2).await;
    let after = stub.put_plugin(plugin("team-a", "after", &origin.url("/after.wasm")));
    stub.send_event("ADDED", &after);
    wait_cached(&daemon, &origin.url("/after.wasm")).await;
    assert_eq!(
        origin.hits("/first.wasm"),
        1,
        "the re-listed plugin is a cache hit, not a new fetch"
    );
}

#[tokio::test]
async fn watch_relists_after_an_http_410_response_to_the_watch() {
    let origin = origin_with(&["/first.wasm", "/missed.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "first", &origin.url("/first.wasm")));
    stub.gone_next_watches(1);
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    stub.wait_for("a watch answered 410", |requests| {
        requests.iter().any(|r| r.is_plugin_watch() && r.status == 410)
    })
    .await;
    stub.put_plugin(plugin("team-a", "missed", &origin.url("/missed.wasm")));

    stub.wait_for("a second list after the 410", |requests| {
        requests.iter().filter(|r| r.is_plugin_list()).count() >= 2
    })
    .await;

    wait_cached(&daemon, &origin.url("/missed.wasm")).await;
}

#[tokio::test]
async fn watch_namespace_and_selector_limit_what_is_prefetched() {
    let origin = origin_with(&[
        "/gw.wasm",
        "/backend.wasm",
        "/elsewhere.wasm",
        "/later-gw.wasm",
        "/later-other.wasm",
    ])
    .await;
    let stub = KubeStub::start().await;
    stub.put_plugin(wasmplugin(
        "team-a",
        "gw",
        &[("app", "gateway")],
        &origin.url("/gw.wasm"),
        json!({}),
    ));
    stub.put_plugin(wasmplugin(
        "team-a",
        "backend",
        &[("app", "backend")],
        &origin.url("/backend.wasm"),
        json!({}),
    ));
    stub.put_plugin(wasmplugin(
        "team-b",
        "gw",
        &[("app", "gateway")],
        &origin.url("/elsewhere.wasm"),
        json!({}),
    ));
    let kubeconfig = stub.kubeconfig("default", Some(TOKEN));
    let daemon = watching_daemon(
        &kubeconfig,
        &["--watch-namespace", "team-a", "--watch-selector", "app=gateway"],
    )
    .await;
    wait_cached(&daemon, &origin.url("/gw.wasm")).await;
    wait_watches(&stub, 1).await;

    let later_gw = stub.put_plugin(wasmplugin(
        "team-a",
        "later-gw",
        &[("app", "gateway")],
        &origin.url("/later-gw.wasm"),
        json!({}),
    ));
    stub.send_event("ADDED", &later_gw);
    wait_cached(&daemon, &origin.url("/later-gw.wasm")).await;

    let path = "/apis/extensions.istio.io/v1alpha1/namespaces/team-a/wasmplugins";
    for request in stub.requests().iter().filter(|r| r.path.contains("wasmplugins")) {
        assert_eq!(request.path, path, "{}", stub.describe());
        assert_eq!(
            request.param("labelSelector"),
            Some("app=gateway"),
            "{}",
            stub.describe()
        );
    }
    assert_eq!(origin.hits("/backend.wasm"), 0);
    assert_eq!(origin.hits("/elsewhere.wasm"), 0);
    assert_eq!(cached_urls(&daemon).await.len(), 2);
}

// Pull secrets in the watch: read only with --watch-pull-secrets.

/// The reason the daemon logs for a plugin it skips because it names a pull secret.
const PULL_SECRET_SKIP: &str = "has imagePullSecret; reading pull secrets needs --watch-pull-secrets";
/// The debug event for a skipped plugin seen again at a generation already warned about.
const PULL_SECRET_SKIP_AGAIN: &str = "wasmplugin still skipped";
const WATCH_SKIPPED: &str = "wasmcache_watch_skipped_total";

/// The daemon's log lines that name `plugin` (`namespace/name`) and contain `text`.
fn log_lines_about(daemon: &Daemon, plugin: &str, text: &str) -> Vec<String> {
    let field = format!("plugin={plugin}");
    daemon
        .log()
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == field) && l.contains(text))
        .map(str::to_string)
        .collect()
}

/// Waits until the watch has handled `plugin` (`namespace/name`) once more than `before` times: every way the
/// watch can end with a plugin (prefetched, failed, skipped, skipped again) logs one event naming it.
async fn wait_handled(daemon: &Daemon, plugin: &str, before: usize) -> usize {
    let field = format!("plugin={plugin}");
    let handled = || {
        daemon
            .log()
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == field))
            .count()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let n = handled();
        if n > before {
            return n;
        }
        if Instant::now() > deadline {
            panic!(
                "the watch did not handle {plugin} within {WAIT:?}; log:\n{}",
                daemon.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WasmPlugin in `namespace` that names pull secret `secret`.
fn private_plugin(namespace: &str, name: &str, url: &str, secret: &str) -> Value {
    wasmplugin(namespace, name, &[], url, json!({ "imagePullSecret": secret }))
}

/// Stores secret `namespace/regcred` holding registry credentials for `host`.
fn put_regcred(stub: &KubeStub, namespace: &str, host: &str, user: (&str, &str)) {
    stub.put_secret(
        namespace,
        "regcred",
        "kubernetes.io/dockerconfigjson",
        &[(".dockerconfigjson", &docker_config_json(host, user.0, user.1))],
    );
}

#[tokio::test]
async fn watch_without_pull_secrets_flag_never_requests_a_secret() {
    let origin = origin_with(&["/listed.wasm", "/added.wasm"]).await;
    let stub = KubeStub::start().await;
    put_regcred(&stub, "team-a", &origin.addr().to_string(), USER_A);
    stub.put_plugin(private_plugin(
        "team-a",
        "listed",
        &origin.url("/listed.wasm"),
        "regcred",
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_handled(&daemon, "team-a/listed", 0).await;
    wait_watches(&stub, 1).await;

    let added = stub.put_plugin(private_plugin("team-a", "added", &origin.url("/added.wasm"), "regcred"));
    stub.send_event("ADDED", &added);
    wait_handled(&daemon, "team-a/added", 0).await;
    // Anything still in flight for either plugin has long reached the stub by now.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        stub.secret_requests().is_empty(),
        "without --watch-pull-secrets no Secret may be requested:\n{}",
        stub.describe()
    );
}

#[tokio::test]
async fn watch_without_pull_secrets_flag_does_not_prefetch_a_plugin_with_an_image_pull_secret() {
    let repo = "watch/skipped";
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    registry.push_module(repo, "v1").await;
    let stub = KubeStub::start().await;
    put_regcred(&stub, "team-a", &proxy.host(), USER_B);
    let url = proxy.oci(&format!("{repo}:v1"));
    stub.put_plugin(private_plugin("team-a", "private", &url, "regcred"));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let ca = path_str(registry.ca_file()).to_string();

    let daemon = watching_daemon(&kubeconfig, &["--ca-file", &ca]).await;

    wait_handled(&daemon, "team-a/private", 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !cached_urls(&daemon).await.contains(&url),
        "a plugin naming a pull secret is not prefetched without --watch-pull-secrets"
    );
    assert_eq!(proxy.blob_gets_ok(repo), 0, "{}", proxy.describe());
}

#[tokio::test]
async fn watch_without_pull_secrets_flag_prefetches_only_plugins_without_a_pull_secret() {
    let origin = origin_with(&[
        "/public.wasm",
        "/private.wasm",
        "/later-public.wasm",
        "/later-private.wasm",
    ])
    .await;
    let stub = KubeStub::start().await;
    // The secrets exist: only the flag keeps the daemon from reading them and prefetching.
    put_regcred(&stub, "team-a", &origin.addr().to_string(), USER_A);
    put_regcred(&stub, "team-b", &origin.addr().to_string(), USER_A);
    stub.put_plugin(plugin("team-a", "public", &origin.url("/public.wasm")));
    stub.put_plugin(private_plugin(
        "team-a",
        "private",
        &origin.url("/private.wasm"),
        "regcred",
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_cached(&daemon, &origin.url("/public.wasm")).await;
    wait_watches(&stub, 1).await;

    let later_private = stub.put_plugin(private_plugin(
        "team-b",
        "later-private",
        &origin.url("/later-private.wasm"),
        "regcred",
    ));
    stub.send_event("ADDED", &later_private);
    let later_public = stub.put_plugin(plugin("team-b", "later-public", &origin.url("/later-public.wasm")));
    stub.send_event("ADDED", &later_public);

    wait_cached(&daemon, &origin.url("/later-public.wasm")).await;
    wait_handled(&daemon, "team-a/private", 0).await;
    wait_handled(&daemon, "team-b/later-private", 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.hits("/public.wasm"), 1);
    assert_eq!(origin.hits("/later-public.wasm"), 1);
    assert_eq!(
        origin.hits("/private.wasm"),
        0,
        "a plugin naming a pull secret is skipped"
    );
    assert_eq!(
        origin.hits("/later-private.wasm"),
        0,
        "a plugin naming a pull secret is skipped"
    );
    let mut cached = cached_urls(&daemon).await;
    cached.sort();
    assert_eq!(cached, [origin.url("/later-public.wasm"), origin.url("/public.wasm")]);
}

#[tokio::test]
async fn watch_without_pull_secrets_flag_warns_naming_the_plugin_and_the_reason() {
    let origin = origin_with(&["/private.wasm"]).await;
    let stub = KubeStub::start().await;
    put_regcred(&stub, "team-a", &origin.addr().to_string(), USER_A);
    stub.put_plugin(private_plugin(
        "team-a",
        "private",
        &origin.url("/private.wasm"),
        "regcred",
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));

    let daemon = watching_daemon(&kubeconfig, &[]).await;

    wait_handled(&daemon, "team-a/private", 0).await;
    let warnings = log_lines_about(&daemon, "team-a/private", PULL_SECRET_SKIP);
    assert_eq!(
        warnings.len(),
        1,
        "one warning naming the plugin and the reason; log:\n{}",
        daemon.log()
    );
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(
        !daemon.log().contains(USER_A.1),
        "no credential may reach the log:\n{}",
        daemon.log()
    );
}

#[tokio::test]
async fn watch_warns_once_per_plugin_generation_not_on_every_resync() {
    let origin = origin_with(&["/private.wasm", "/private-v2.wasm", "/marker.wasm"]).await;
    let stub = KubeStub::start().await;
    put_regcred(&stub, "team-a", &origin.addr().to_string(), USER_A);
    let spec = |url: &str| json!({ "imagePullSecret": "regcred", "url": url });
    stub.put_plugin(wasmplugin(
        "team-a",
        "private",
        &[],
        "",
        spec(&origin.url("/private.wasm")),
    ));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    let mut handled = wait_handled(&daemon, "team-a/private", 0).await;
    wait_watches(&stub, 1).await;
    let warnings = || log_lines_about(&daemon, "team-a/private", PULL_SECRET_SKIP).len();
    assert_eq!(warnings(), 1, "log:\n{}", daemon.log());

    // A change outside the spec: a new resourceVersion, the same generation.
    let relabelled = stub.put_plugin(wasmplugin(
        "team-a",
        "private",
        &[("tier", "edge")],
        "",
        spec(&origin.url("/private.wasm")),
    ));
    stub.send_event("MODIFIED", &relabelled);
    handled = wait_handled(&daemon, "team-a/private", handled).await;
    assert_eq!(warnings(), 1, "same generation, no new warning; log:\n{}", daemon.log());

    // A re-list after 410 Gone hands the watch every plugin again.
    stub.send_error_event(410);
    handled = wait_handled(&daemon, "team-a/private", handled).await;
    assert_eq!(warnings(), 1, "a re-list is no new generation; log:\n{}", daemon.log());
    assert_eq!(
        log_lines_about(&daemon, "team-a/private", PULL_SECRET_SKIP_AGAIN).len(),
        2,
        "the two repeats are logged at debug level only; log:\n{}",
        daemon.log()
    );

    // A spec change is a new generation: warned about again.
    wait_watches(&stub, 2).await;
    let changed = stub.put_plugin(wasmplugin(
        "team-a",
        "private",
        &[],
        "",
        spec(&origin.url("/private-v2.wasm")),
    ));
    stub.send_event("MODIFIED", &changed);
    wait_handled(&daemon, "team-a/private", handled).await;
    assert_eq!(warnings(), 2, "a new generation warns again; log:\n{}", daemon.log());
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn watch_without_pull_secrets_flag_counts_skipped_plugins_in_a_metric() {
    let origin = origin_with(&["/one.wasm", "/two.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(private_plugin("team-a", "one", &origin.url("/one.wasm"), "regcred"));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let admin = free_local_addr().to_string();
    let daemon = watching_daemon(&kubeconfig, &["--admin-listen", &admin]).await;
    let admin = admin.parse().unwrap();
    let labels = [("reason", "pull_secret_not_allowed")];
    let handled = wait_handled(&daemon, "team-a/one", 0).await;
    wait_watches(&stub, 1).await;
    assert_eq!(scrape(admin).await.get(WATCH_SKIPPED, &labels), Some(1.0));

    let again = stub.put_plugin(wasmplugin(
        "team-a",
        "one",
        &[("tier", "edge")],
        &origin.url("/one.wasm"),
        json!({ "imagePullSecret": "regcred" }),
    ));
    stub.send_event("MODIFIED", &again);
    wait_handled(&daemon, "team-a/one", handled).await;
    let two = stub.put_plugin(private_plugin("team-b", "two", &origin.url("/two.wasm"), "other"));
    stub.send_event("ADDED", &two);
    wait_handled(&daemon, "team-b/two", 0).await;

    let scrape = scrape(admin).await;
    assert_eq!(
        scrape.get(WATCH_SKIPPED, &labels),
        Some(2.0),
        "two plugins skipped, each counted once per generation; exposition:\n{}",
        scrape.text
    );
}

#[tokio::test]
async fn watch_with_pull_secrets_flag_reads_the_secret_from_the_plugins_namespace_and_pulls() {
    let repo = "watch/private";
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    registry.push_module(repo, "v1").await;
    let stub = KubeStub::start().await;
    put_regcred(&stub, "team-a", &proxy.host(), USER_B);
    let url = proxy.oci(&format!("{repo}:v1"));
    stub.put_plugin(private_plugin("team-a", "private", &url, "regcred"));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let ca = path_str(registry.ca_file()).to_string();

    let daemon = watching_daemon(&kubeconfig, &["--ca-file", &ca, "--watch-pull-secrets"]).await;

    wait_cached(&daemon, &url).await;
    assert_eq!(stub.secret_gets("team-a", "regcred").len(), 1, "{}", stub.describe());
    assert_eq!(stub.secret_requests().len(), 1, "{}", stub.describe());
    assert_eq!(proxy.blob_gets_ok(repo), 1, "{}", proxy.describe());
    assert!(
        log_lines_about(&daemon, "team-a/private", PULL_SECRET_SKIP).is_empty(),
        "{}",
        daemon.log()
    );
    assert!(!daemon.log().contains(USER_B.1), "no credential may reach the log");
}

#[tokio::test]
async fn watch_deleted_plugin_keeps_its_module_cached() {
    let origin = origin_with(&["/doomed.wasm", "/marker.wasm"]).await;
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "doomed", &origin.url("/doomed.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &[]).await;
    wait_cached(&daemon, &origin.url("/doomed.wasm")).await;
    wait_watches(&stub, 1).await;

    let deleted = stub.delete_plugin("team-a", "doomed").expect("plugin exists");
    stub.send_event("DELETED", &deleted);
    let marker = stub.put_plugin(plugin("team-a", "marker", &origin.url("/marker.wasm")));
    stub.send_event("ADDED", &marker);
    wait_cached(&daemon, &origin.url("/marker.wasm")).await;

    assert!(
        cached_urls(&daemon).await.contains(&origin.url("/doomed.wasm")),
        "a deleted plugin's module stays: a proxy may still use it"
    );
}

/// A module named by a watched WasmPlugin is in use: the size limit evicts the others, though the watched one
/// is the least recently used. Once the plugin is deleted, it is evictable again.
#[tokio::test]
async fn module_of_a_watched_plugin_is_kept_by_the_size_limit_until_the_plugin_goes() {
    let origin = Origin::start().await;
    for name in ["watched", "other1", "other2", "other3"] {
        origin.serve(&format!("/{name}.wasm"), wasm_module_of_size(name, 1000));
    }
    let stub = KubeStub::start().await;
    stub.put_plugin(plugin("team-a", "kept", &origin.url("/watched.wasm")));
    let kubeconfig = stub.kubeconfig("team-a", Some(TOKEN));
    let daemon = watching_daemon(&kubeconfig, &["--max-cache-bytes", "2500"]).await;
    wait_cached(&daemon, &origin.url("/watched.wasm")).await;
    let mut client = daemon.client().await;
    let watched = sha256_hex(&wasm_module_of_size("watched", 1000));
    let cached = |modules: Vec<CachedModule>| modules.into_iter().map(|m| m.sha256).collect::<Vec<_>>();

    fetch_ok(&mut client, req(&origin.url("/other1.wasm"))).await;
    fetch_ok(&mut client, req(&origin.url("/other2.wasm"))).await;

    let now = cached(list(&mut client).await);
    assert!(now.contains(&watched), "the watched plugin's module stays: {now:?}");
    assert!(
        !now.contains(&sha256_hex(&wasm_module_of_size("other1", 1000))),
        "{now:?}"
    );

    wait_watches(&stub, 1).await;
    let deleted = stub.delete_plugin("team-a", "kept").expect("plugin exists");
    stub.send_event("DELETED", &deleted);
    // A plugin added after the deletion: once its module is cached, the deletion has been seen too.
    let marker = stub.put_plugin(plugin("team-a", "marker", &origin.url("/other3.wasm")));
    stub.send_event("ADDED", &marker);
    wait_cached(&daemon, &origin.url("/other3.wasm")).await;
    fetch_ok(&mut client, req(&origin.url("/other1.wasm"))).await;

    let now = cached(list(&mut client).await);
    assert!(
        !now.contains(&watched),
        "the deleted plugin's module was evicted: {now:?}"
    );
}
