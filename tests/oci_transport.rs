//! How the daemon reaches registries: plain HTTP only for `--insecure-registry` hosts, and
//! `--registry-mirror` endpoints tried in order before the origin registry.
//!
//! Two plain-HTTP registries serve the file: the origin and a mirror. Proxies in front of them count what
//! each one was asked.

use crate::support;

use support::registry::*;
use support::*;
use tonic::Code;

const FAST_RETRY: [&str; 2] = ["--retry-backoff", "10ms"];

async fn start_daemon(args: &[&str]) -> (Daemon, Client) {
    let mut all = FAST_RETRY.to_vec();
    all.extend_from_slice(args);
    let daemon = Daemon::start(&all).await;
    let client = daemon.client().await;
    (daemon, client)
}

/// Pushes a CNCF Wasm artifact of its own to `repo:v1` on `registry`.
async fn push(registry: &Registry, repo: &str) -> Image {
    registry.push_module(repo, "v1").await
}

// ---------------------------------------------------------------------------------------------------------------
// --insecure-registry
// ---------------------------------------------------------------------------------------------------------------

/// Without `--insecure-registry`, not one HTTP request is sent in clear text, even on 127.0.0.1.
#[tokio::test]
async fn plain_http_registry_is_refused_without_insecure_registry() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    push(registry, "insecure/refused").await;
    let (daemon, mut client) = start_daemon(&[]).await;

    let status = fetch_err(&mut client, req(&proxy.oci("insecure/refused:v1"))).await;

    assert_ne!(status.code(), Code::Ok);
    assert_eq!(
        proxy.total(),
        0,
        "no plain-HTTP request reached the registry:\n{}",
        proxy.describe()
    );
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn insecure_registry_host_and_port_allows_plain_http() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let image = push(registry, "insecure/host-port").await;
    let (_daemon, mut client) = start_daemon(&["--insecure-registry", &proxy.host()]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("insecure/host-port:v1"))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
    assert_eq!(info.manifest_digest, image.manifest_digest);
}

#[tokio::test]
async fn insecure_registry_host_without_port_allows_plain_http_on_any_port() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let image = push(registry, "insecure/host-only").await;
    let (_daemon, mut client) = start_daemon(&["--insecure-registry", "127.0.0.1"]).await;

    let (_, bytes) = fetch_ok(&mut client, req(&proxy.oci("insecure/host-only:v1"))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
}

#[tokio::test]
async fn insecure_registry_star_allows_plain_http() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let image = push(registry, "insecure/star").await;
    let (_daemon, mut client) = start_daemon(&["--insecure-registry", "*"]).await;

    let (_, bytes) = fetch_ok(&mut client, req(&proxy.oci("insecure/star:v1"))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
}

/// An insecure entry for another port of the same host does not allow this one.
#[tokio::test]
async fn insecure_registry_for_another_port_does_not_allow_plain_http() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    push(registry, "insecure/other-port").await;
    let other = format!("127.0.0.1:{}", proxy_port(&proxy).wrapping_add(1).max(1));
    let (_daemon, mut client) = start_daemon(&["--insecure-registry", &other]).await;

    fetch_err(&mut client, req(&proxy.oci("insecure/other-port:v1"))).await;

    assert_eq!(
        proxy.total(),
        0,
        "no plain-HTTP request reached the registry:\n{}",
        proxy.describe()
    );
}

fn proxy_port(proxy: &Proxy) -> u16 {
    proxy
        .host()
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("proxy port")
}

// ---------------------------------------------------------------------------------------------------------------
// --registry-mirror
// ---------------------------------------------------------------------------------------------------------------

/// Origin and mirror proxies, and a daemon that may use both over plain HTTP with `mirrors` (proxies of the
/// mirror registry, in order) configured for the origin.
async fn with_mirrors(origin: &Proxy, mirrors: &[String]) -> (Daemon, Client) {
    let origin_host = origin.host();
    let mut args = vec!["--insecure-registry".to_string(), origin_host.clone()];
    for mirror in mirrors {
        args.push("--insecure-registry".into());
        args.push(mirror.trim_start_matches("http://").to_string());
        args.push("--registry-mirror".into());
        args.push(format!("{origin_host}={mirror}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_daemon(&args).await
}

#[tokio::test]
async fn mirror_with_the_image_serves_it_without_contacting_the_origin() {
    let repo = "mirror/has-image";
    let origin = Registry::shared_plain().proxy().await;
    let mirror = Registry::shared_plain_second().proxy().await;
    let image = push(Registry::shared_plain(), repo).await;
    let mirrored = push(Registry::shared_plain_second(), repo).await;
    assert_eq!(image.manifest_digest, mirrored.manifest_digest);
    let (_daemon, mut client) = with_mirrors(&origin, &[format!("http://{}", mirror.host())]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.oci(&format!("{repo}:v1")))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
    assert_eq!(info.manifest_digest, image.manifest_digest);
    assert!(
        mirror.blob_gets_ok(repo) >= 1,
        "the mirror served the blob:\n{}",
        mirror.describe()
    );
    assert_eq!(
        origin.total(),
        0,
        "the origin was not contacted:\n{}",
        origin.describe()
    );
}

#[tokio::test]
async fn mirror_without_the_image_falls_back_to_the_origin() {
    let repo = "mirror/lacks-image";
    let origin = Registry::shared_plain().proxy().await;
    let mirror = Registry::shared_plain_second().proxy().await;
    let image = push(Registry::shared_plain(), repo).await;
    let (_daemon, mut client) = with_mirrors(&origin, &[format!("http://{}", mirror.host())]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.oci(&format!("{repo}:v1")))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
    assert_eq!(info.manifest_digest, image.manifest_digest);
    assert!(
        mirror.manifest_requests(repo) >= 1,
        "the mirror was asked first:\n{}",
        mirror.describe()
    );
    assert!(
        origin.blob_gets_ok(repo) >= 1,
        "the origin served the blob:\n{}",
        origin.describe()
    );
}

/// Mirrors are tried in the order given: the first lacks the image (404 for the repository), the second has
/// it, and the origin is never contacted.
#[tokio::test]
async fn mirrors_are_tried_in_order_before_the_origin() {
    let repo = "mirror/in-order";
    let origin = Registry::shared_plain().proxy().await;
    let first = Registry::shared_plain_second().proxy().await;
    first.fail_repo(repo, 404);
    let second = Registry::shared_plain_second().proxy().await;
    let image = push(Registry::shared_plain(), repo).await;
    push(Registry::shared_plain_second(), repo).await;
    let (_daemon, mut client) = with_mirrors(
        &origin,
        &[format!("http://{}", first.host()), format!("http://{}", second.host())],
    )
    .await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.oci(&format!("{repo}:v1")))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
    assert!(
        first.manifest_requests(repo) >= 1,
        "the first mirror was asked:\n{}",
        first.describe()
    );
    assert!(
        second.blob_gets_ok(repo) >= 1,
        "the second mirror served the blob:\n{}",
        second.describe()
    );
    assert_eq!(
        origin.total(),
        0,
        "the origin was not contacted:\n{}",
        origin.describe()
    );
}

/// A mirror that refuses connections does not fail the request: the origin serves it.
#[tokio::test]
async fn unreachable_mirror_falls_back_to_the_origin() {
    let repo = "mirror/unreachable";
    let origin = Registry::shared_plain().proxy().await;
    let image = push(Registry::shared_plain(), repo).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().unwrap()
    };
    let (_daemon, mut client) = with_mirrors(&origin, &[format!("http://{closed}")]).await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.oci(&format!("{repo}:v1")))).await;

    assert!(bytes == image.module, "served bytes are the pushed module");
    assert!(origin.blob_gets_ok(repo) >= 1, "the origin served the blob");
}
