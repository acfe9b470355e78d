//! https:// origins: certificate verification, --ca-file and --insecure-skip-verify.
//!
//! The origin's certificate is signed by a CA made for the test, which no system trust store knows.

use crate::support;

use support::*;
use tonic::Code;

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms"];

async fn tls_origin() -> (Origin, Vec<u8>) {
    let origin = Origin::start_tls().await;
    let module = wasm_module("over-tls");
    origin.serve("/m.wasm", module.clone());
    (origin, module)
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let (origin, _) = tls_origin().await;
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_code(&status, Code::Unavailable);
    assert_eq!(origin.total_hits(), 0, "no request went over the untrusted connection");
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test]
async fn ca_file_makes_certificate_trusted() {
    let (origin, module) = tls_origin().await;
    let daemon = Daemon::start(&["--ca-file", origin.ca_file().to_str().unwrap()]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

/// The CA is trusted for the names in the certificate only: the same server reached by another name is refused.
#[tokio::test]
async fn ca_file_does_not_trust_certificate_for_other_name() {
    let origin = Origin::start_tls().await;
    origin.serve("/m.wasm", wasm_module("wrong-name"));
    let daemon = Daemon::start(&[
        "--retry-backoff",
        "10ms",
        "--ca-file",
        origin.ca_file().to_str().unwrap(),
    ])
    .await;
    let mut client = daemon.client().await;

    // The certificate names 127.0.0.1 only; `localhost` reaches the same listener (from /etc/hosts, no DNS).
    let url = format!("https://localhost:{}/m.wasm", origin.addr().port());
    fetch_err(&mut client, req(&url)).await;
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn insecure_skip_verify_host_accepts_untrusted_certificate() {
    let (origin, module) = tls_origin().await;
    let daemon = Daemon::start(&["--insecure-skip-verify", "127.0.0.1"]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn insecure_skip_verify_host_and_port_accepts_untrusted_certificate() {
    let (origin, module) = tls_origin().await;
    let host_port = format!("127.0.0.1:{}", origin.addr().port());
    let daemon = Daemon::start(&["--insecure-skip-verify", &host_port]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn insecure_skip_verify_wildcard_accepts_untrusted_certificate() {
    let (origin, module) = tls_origin().await;
    let daemon = Daemon::start(&["--insecure-skip-verify", "*"]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn insecure_skip_verify_for_other_host_still_refuses() {
    let (origin, _) = tls_origin().await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms", "--insecure-skip-verify", "example.invalid"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_code(&status, Code::Unavailable);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn insecure_skip_verify_for_other_port_still_refuses() {
    let (origin, _) = tls_origin().await;
    let other_port = if origin.addr().port() == 1 {
        2
    } else {
        origin.addr().port() - 1
    };
    let host_port = format!("127.0.0.1:{other_port}");
    let daemon = Daemon::start(&["--retry-backoff", "10ms", "--insecure-skip-verify", &host_port]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_code(&status, Code::Unavailable);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn unreadable_ca_file_fails_startup() {
    let (status, _dir) = serve_until_exit(&["--ca-file", "/nonexistent/ca.pem"]).await;
    let status = status.expect("serve with a missing CA file must exit, not serve");
    assert!(!status.success());
}
