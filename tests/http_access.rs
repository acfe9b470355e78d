//! Modules fetched with credentials in an http(s) URL (`https://user:password@host/m.wasm`) are private to
//! those credentials, under the same rule as registry credentials: served from the cache only to a request
//! with the same credentials; any other request goes to the origin, which decides. They are never served
//! on the admin listener. A fetch that succeeds without credentials makes the module public.

use crate::support;

use support::*;
use tonic::Code;

/// `http://user:password@127.0.0.1:port/path`.
fn with_credentials(origin: &Origin, user: &str, password: &str, path: &str) -> String {
    origin
        .url(path)
        .replacen("http://", &format!("http://{user}:{password}@"), 1)
}

#[tokio::test]
async fn module_fetched_with_url_credentials_is_not_served_to_a_request_without_them() {
    let origin = Origin::start().await;
    origin.serve("/private.wasm", wasm_module("http-private"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;
    fetch_ok(
        &mut client,
        req(&with_credentials(&origin, "alice", "s3cret", "/private.wasm")),
    )
    .await;
    origin.always("/private.wasm", 401);

    let status = fetch_err(&mut client, req(&origin.url("/private.wasm"))).await;

    assert_code(&status, Code::Unauthenticated);
    assert_eq!(origin.hits("/private.wasm"), 2, "the origin decided");
}

#[tokio::test]
async fn module_fetched_with_url_credentials_is_not_served_on_the_admin_listener() {
    let origin = Origin::start().await;
    let module = wasm_module("http-private-admin");
    origin.serve("/private.wasm", module.clone());
    let (daemon, admin) = start_with_admin(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(
        &mut client,
        req(&with_credentials(&origin, "alice", "s3cret", "/private.wasm")),
    )
    .await;

    let response = http_get(admin, &format!("/v1/modules/sha256/{}", sha256_hex(&module))).await;

    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn the_same_url_credentials_are_served_from_the_cache() {
    let origin = Origin::start().await;
    origin.serve("/private.wasm", wasm_module("http-private-same"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let url = with_credentials(&origin, "alice", "s3cret", "/private.wasm");
    fetch_ok(&mut client, req(&url)).await;

    let (info, _) = fetch_ok(&mut client, req(&url)).await;

    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(origin.hits("/private.wasm"), 1);
}

#[tokio::test]
async fn other_url_credentials_are_checked_at_the_origin() {
    let origin = Origin::start().await;
    origin.serve("/private.wasm", wasm_module("http-private-other"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;
    fetch_ok(
        &mut client,
        req(&with_credentials(&origin, "alice", "s3cret", "/private.wasm")),
    )
    .await;
    origin.always("/private.wasm", 403);

    let status = fetch_err(
        &mut client,
        req(&with_credentials(&origin, "mallory", "guess", "/private.wasm")),
    )
    .await;

    assert_code(&status, Code::PermissionDenied);
    assert_eq!(origin.hits("/private.wasm"), 2);
}

#[tokio::test]
async fn anonymous_success_at_the_origin_makes_the_module_public() {
    let origin = Origin::start().await;
    let module = wasm_module("http-becomes-public");
    origin.serve("/m.wasm", module.clone());
    let (daemon, admin) = start_with_admin(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(
        &mut client,
        req(&with_credentials(&origin, "alice", "s3cret", "/m.wasm")),
    )
    .await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    let response = http_get(admin, &format!("/v1/modules/sha256/{}", sha256_hex(&module))).await;

    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 2);
    assert_eq!(
        response.status, 200,
        "public once the origin served it without credentials"
    );
}
