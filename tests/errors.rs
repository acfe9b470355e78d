//! Requests refused before anything is fetched: bad URLs, unsupported schemes, bad digests.

use crate::support;

use support::*;
use tonic::Code;

#[tokio::test]
async fn unsupported_scheme_is_invalid_argument() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("ftp://127.0.0.1/m.wasm")).await;
    assert_code(&status, Code::InvalidArgument);
}

#[tokio::test]
async fn malformed_url_is_invalid_argument() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("not a url")).await;
    assert_code(&status, Code::InvalidArgument);
}

#[tokio::test]
async fn empty_url_is_invalid_argument() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("")).await;
    assert_code(&status, Code::InvalidArgument);
}

#[tokio::test]
async fn http_url_without_host_is_invalid_argument() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("http://")).await;
    assert_code(&status, Code::InvalidArgument);
}

#[tokio::test]
async fn short_sha256_is_invalid_argument_without_contacting_origin() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("short-sha"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), "abc123")).await;
    assert_code(&status, Code::InvalidArgument);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn non_hex_sha256_is_invalid_argument() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("non-hex-sha"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), &"z".repeat(64))).await;
    assert_code(&status, Code::InvalidArgument);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn other_digest_algorithm_is_invalid_argument() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("sha512"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let digest = format!("sha512:{}", "a".repeat(64));
    let status = fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), &digest)).await;
    assert_code(&status, Code::InvalidArgument);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn unsupported_scheme_is_invalid_argument_on_resolve() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = client
        .resolve(req("gopher://127.0.0.1/m.wasm"))
        .await
        .expect_err("unsupported scheme");
    assert_code(&status, Code::InvalidArgument);
}

/// The daemon keeps serving after refusing bad requests.
#[tokio::test]
async fn daemon_serves_after_bad_requests() {
    let origin = Origin::start().await;
    let module = wasm_module("after-errors");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    for bad in ["", "ftp://x/y", "::::", "http://"] {
        fetch_err(&mut client, req(bad)).await;
    }

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

/// README (OCI registries): a malformed reference is INVALID_ARGUMENT naming the offending part and the rule.
#[tokio::test]
async fn malformed_oci_reference_names_the_part_and_the_rule() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req("oci://r.io/Team/x:v1")).await;

    assert_code(&status, Code::InvalidArgument);
    assert_eq!(
        status.message(),
        r#"oci reference "oci://r.io/Team/x:v1" is malformed: repository "Team/x" must be lowercase"#
    );
}
