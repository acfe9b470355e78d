//! The daemon's wiring of the OCI registry endpoint (`--registry-listen`): bound beside the other listeners,
//! plain or TLS, refused before binding when its TLS files are wrong, and closed on shutdown. What the endpoint
//! answers is tested in `src/registry/tests.rs`; pulls through the real cache are tested elsewhere.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// Requests that do not reach the cache: the answers depend on the endpoint only.
async fn check_answers(addr: std::net::SocketAddr) {
    let ping = http_get(addr, "/v2/").await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("docker-distribution-api-version"), Some("registry/2.0"));
    assert_eq!(ping.body, b"{}");
    let unnamed = http_get(addr, "/v2/org/plugin/manifests/v1").await;
    assert_eq!(unnamed.status, 404);
    assert!(unnamed.text().contains("NAME_UNKNOWN"), "{}", unnamed.text());
    let put = http_request(addr, "PUT", "/v2/ghcr.io/org/plugin/manifests/v1", &[])
        .await
        .unwrap();
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn registry_endpoint_serves_beside_grpc_and_closes_on_shutdown() {
    let addr = free_local_addr();
    let mut daemon = Daemon::start(&["--registry-listen", &addr.to_string()]).await;
    check_answers(addr).await;
    let mut client = daemon.client().await;
    assert!(list(&mut client).await.is_empty(), "gRPC serves too");
    assert!(daemon.log().contains("registry endpoint up"), "{}", daemon.log());

    // An idle keep-alive connection does not hold the shutdown back.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .exit_within(Duration::from_secs(5))
        .await
        .expect("exits promptly");
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn registry_endpoint_serves_tls_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let addr = free_local_addr();
    let _daemon = Daemon::start(&[
        "--registry-listen",
        &addr.to_string(),
        "--registry-tls-cert",
        cert.to_str().unwrap(),
        "--registry-tls-key",
        key.to_str().unwrap(),
    ])
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS with the configured certificate");
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\n{}"), "{response}");
}

#[tokio::test]
async fn bad_registry_tls_files_exit_78_before_anything_binds() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "not a certificate").unwrap();
    let addr = free_local_addr();
    let socket = dir.path().join("wasmcache.sock");
    for extra in [
        vec!["--registry-tls-cert", cert.to_str().unwrap()],
        vec![
            "--registry-tls-cert",
            cert.to_str().unwrap(),
            "--registry-tls-key",
            cert.to_str().unwrap(),
        ],
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmcache"))
            .args(["serve", "--admin-listen", "off", "--registry-listen", &addr.to_string()])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--socket")
            .arg(&socket)
            .args(&extra)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains("registry-tls-"), "{stderr}");
        assert!(!socket.exists(), "nothing was bound");
    }
}
