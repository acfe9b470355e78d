//! The destination guard: link-local and metadata addresses, --blocked-cidr, and redirects to either.
//!
//! Tests that name a non-loopback address run the daemon in a network namespace of its own that has only a
//! loopback interface (`Daemon::start_isolated`): if the guard had a bug, the connection attempt would fail
//! inside that namespace instead of leaving the machine.

use crate::support;

use support::*;
use tonic::Code;

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms"];

#[tokio::test]
async fn metadata_address_is_permission_denied() {
    let (daemon, _origin) = Daemon::start_isolated(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("http://169.254.169.254/latest/meta-data/plugin.wasm")).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn link_local_address_is_permission_denied() {
    let (daemon, _origin) = Daemon::start_isolated(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("http://169.254.1.1:8080/m.wasm")).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn ipv6_link_local_address_is_permission_denied() {
    let (daemon, _origin) = Daemon::start_isolated(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("http://[fe80::1]/m.wasm")).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn ipv4_mapped_metadata_address_is_permission_denied() {
    let (daemon, _origin) = Daemon::start_isolated(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("http://[::ffff:169.254.169.254]/m.wasm")).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn redirect_to_metadata_address_is_refused() {
    let (daemon, origin) = Daemon::start_isolated(FAST_RETRY).await;
    origin.redirect("/m.wasm", 302, "http://169.254.169.254/latest/meta-data/");
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_code(&status, Code::PermissionDenied);
    assert_eq!(origin.hits("/m.wasm"), 1, "a refused redirect is not retried");
    assert!(list(&mut client).await.is_empty());
}

/// The isolation itself works: the daemon runs in another network namespace, and still reaches its origin there.
#[tokio::test]
async fn isolated_daemon_reaches_loopback_origin() {
    let (daemon, origin) = Daemon::start_isolated(&[]).await;
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    let its = std::fs::read_link(format!("/proc/{}/ns/net", daemon.pid())).expect("daemon netns");
    assert_ne!(ours, its, "the daemon runs in a network namespace of its own");
    let module = wasm_module("isolated");
    origin.serve("/m.wasm", module.clone());
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn blocked_cidr_refuses_origin_without_contacting_it() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("blocked"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms", "--blocked-cidr", "127.0.0.0/8"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_code(&status, Code::PermissionDenied);
    assert_eq!(origin.total_hits(), 0);
}

/// The guard checks resolved addresses, not only literal ones in the URL.
#[tokio::test]
async fn blocked_cidr_applies_to_resolved_hostname() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("blocked-by-name"));
    let daemon = Daemon::start(&[
        "--retry-backoff",
        "10ms",
        "--blocked-cidr",
        "127.0.0.0/8",
        "--blocked-cidr",
        "::1/128",
    ])
    .await;
    let mut client = daemon.client().await;

    let url = format!("http://localhost:{}/m.wasm", origin.addr().port());
    let status = fetch_err(&mut client, req(&url)).await;
    assert_code(&status, Code::PermissionDenied);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn blocked_cidr_leaves_other_addresses_reachable() {
    let origin = Origin::start().await;
    let module = wasm_module("not-blocked");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&["--blocked-cidr", "127.0.0.2/32"]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn redirect_to_blocked_cidr_is_refused() {
    let front = Origin::start().await;
    let back = Origin::start_on("127.0.0.2").await;
    back.serve("/m.wasm", wasm_module("behind-redirect"));
    front.redirect("/m.wasm", 307, &back.url("/m.wasm"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms", "--blocked-cidr", "127.0.0.2/32"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&front.url("/m.wasm"))).await;
    assert_code(&status, Code::PermissionDenied);
    assert_eq!(back.total_hits(), 0, "the blocked origin is never contacted");
}

#[tokio::test]
async fn invalid_blocked_cidr_fails_startup() {
    let (status, dir) = serve_until_exit(&["--blocked-cidr", "not-a-cidr"]).await;
    let status = status.expect("serve with a bad CIDR must exit, not serve");
    assert!(!status.success(), "serve with a bad CIDR must exit non-zero");
    assert!(
        !dir.path().join("wasmcache.sock").exists(),
        "no socket for a bad config"
    );
}

/// A TCP listener on `ip` that counts the connections it accepts (and closes them).
async fn counting_listener(ip: &str) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, accepted)
}

/// A registry named by a blocked IP literal is refused before any TCP connection to it.
#[tokio::test]
async fn registry_given_as_a_blocked_ip_literal_is_refused_before_connecting() {
    let (addr, accepted) = counting_listener("127.0.0.3").await;
    let host = addr.to_string();
    let daemon = Daemon::start(&[
        "--blocked-cidr",
        "127.0.0.3/32",
        "--insecure-registry",
        &host,
        "--retry-backoff",
        "10ms",
    ])
    .await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&format!("oci://{host}/team/plugin:v1"))).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("127.0.0.3"), "{}", status.message());
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

/// A mirror named by a blocked IP literal is skipped without a connection; the registry itself is tried.
#[tokio::test]
async fn mirror_given_as_a_blocked_ip_literal_is_never_connected_to() {
    let (mirror, accepted) = counting_listener("127.0.0.3").await;
    let (registry, _) = counting_listener("127.0.0.1").await;
    let registry_host = registry.to_string();
    let mirror_arg = format!("{registry_host}=http://{mirror}");
    let daemon = Daemon::start(&[
        "--blocked-cidr",
        "127.0.0.3/32",
        "--registry-mirror",
        &mirror_arg,
        "--insecure-registry",
        "*",
        "--retry-backoff",
        "10ms",
        "--fetch-attempts",
        "1",
    ])
    .await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&format!("oci://{registry_host}/team/plugin:v1"))).await;

    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection to the blocked mirror"
    );
}

#[tokio::test]
async fn registry_at_the_metadata_address_is_permission_denied() {
    let (daemon, _origin) = Daemon::start_isolated(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("oci://169.254.169.254/team/plugin:v1")).await;
    assert_code(&status, Code::PermissionDenied);
}
