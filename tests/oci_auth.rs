//! oci:// against an HTTPS registry with htpasswd basic auth: pull secrets, default credentials from
//! `--docker-config`, the access check on cached private modules, certificate trust, and secrets kept out of the
//! log.
//!
//! The registry's certificate is signed by a CA made for the test; daemons trust it with `--ca-file` unless a
//! test is about trust. Users `USER_A` and `USER_B` are both valid, and every authenticated user may pull every
//! repository: what the access check decides is whether a request's credentials were proven, not who they name.

use crate::support;

use support::registry::*;
use support::*;
use tonic::Code;

/// A daemon that trusts the registry's CA, with short retries and `extra` flags.
async fn start_daemon(registry: &Registry, extra: &[&str]) -> (Daemon, Client) {
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let mut args = vec!["--ca-file", &ca, "--retry-backoff", "10ms"];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&args).await;
    let client = daemon.client().await;
    (daemon, client)
}

/// The shared HTTPS+auth registry, a fresh proxy in front of it, and a daemon that trusts its CA.
async fn setup() -> (&'static Registry, Proxy, Daemon, Client) {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let (daemon, client) = start_daemon(registry, &[]).await;
    (registry, proxy, daemon, client)
}

/// Pushes a CNCF Wasm artifact of its own to `repo:v1`.
async fn push_private(registry: &Registry, repo: &str) -> Image {
    registry.push_module(repo, "v1").await
}

/// A request for `url` (a `:v1` tag, so IfNotPresent under UNSPECIFIED) with `pull_secret`.
fn req_secret(url: &str, pull_secret: Vec<u8>) -> FetchRequest {
    FetchRequest {
        pull_secret,
        ..req(url)
    }
}

/// A `.dockerconfigjson` for the proxy's host.
fn secret(proxy: &Proxy, (user, password): (&str, &str)) -> Vec<u8> {
    docker_config_json(&proxy.host(), user, password)
}

const WRONG_PASSWORD: &str = "wrong-pw-3e9a41";

#[track_caller]
fn assert_module(info: &ModuleInfo, bytes: &[u8], image: &Image) {
    assert!(
        bytes == image.module.as_slice(),
        "served bytes differ from the pushed module"
    );
    assert_eq!(info.sha256, image.module_digest);
    assert_eq!(info.manifest_digest, image.manifest_digest);
}

// ---------------------------------------------------------------------------------------------------------------
// Pull secrets and default credentials
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn private_repository_without_secret_is_unauthenticated() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    push_private(registry, "auth/no-secret").await;

    let status = fetch_err(&mut client, req(&proxy.oci("auth/no-secret:v1"))).await;

    assert_code(&status, Code::Unauthenticated);
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

#[tokio::test]
async fn private_repository_with_secret_is_fetched() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = push_private(registry, "auth/with-secret").await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(&proxy.oci("auth/with-secret:v1"), secret(&proxy, USER_A)),
    )
    .await;

    assert_module(&info, &bytes, &image);
    assert_eq!(info.outcome(), Outcome::Fetched);
}

#[tokio::test]
async fn private_repository_with_wrong_password_is_unauthenticated() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    push_private(registry, "auth/wrong-password").await;

    let status = fetch_err(
        &mut client,
        req_secret(
            &proxy.oci("auth/wrong-password:v1"),
            secret(&proxy, (USER_A.0, WRONG_PASSWORD)),
        ),
    )
    .await;

    assert_code(&status, Code::Unauthenticated);
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

/// A secret for another registry host is not sent to this one.
#[tokio::test]
async fn secret_for_another_host_is_unauthenticated() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    push_private(registry, "auth/other-host").await;

    let status = fetch_err(
        &mut client,
        req_secret(
            &proxy.oci("auth/other-host:v1"),
            docker_config_json("registry.example.invalid", USER_A.0, USER_A.1),
        ),
    )
    .await;

    assert_code(&status, Code::Unauthenticated);
}

/// Credentials come from `--docker-config` when a request brings no pull secret.
#[tokio::test]
async fn docker_config_supplies_default_credentials() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.json");
    std::fs::write(&config, secret(&proxy, USER_A)).expect("write docker config");
    let (_daemon, mut client) = start_daemon(registry, &["--docker-config", config.to_str().unwrap()]).await;
    let image = push_private(registry, "auth/docker-config").await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("auth/docker-config:v1"))).await;

    assert_module(&info, &bytes, &image);
}

/// The kubelet's union of keyrings: a pull secret with no entry for the registry leaves it to the `--docker-config`
/// entry, which a request without a secret would get too.
#[tokio::test]
async fn secret_without_the_registry_falls_back_to_docker_config() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.json");
    std::fs::write(&config, secret(&proxy, USER_A)).expect("write docker config");
    let (_daemon, mut client) = start_daemon(registry, &["--docker-config", config.to_str().unwrap()]).await;
    let image = push_private(registry, "auth/secret-elsewhere").await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(
            &proxy.oci("auth/secret-elsewhere:v1"),
            docker_config_json("registry.example.invalid", USER_B.0, USER_B.1),
        ),
    )
    .await;

    assert_module(&info, &bytes, &image);
}

// ---------------------------------------------------------------------------------------------------------------
// Access check on cached private modules
// ---------------------------------------------------------------------------------------------------------------

/// Pulls `repo:v1` with USER_A's secret and forgets the requests that took.
async fn cached_private(registry: &Registry, proxy: &Proxy, client: &mut Client, repo: &str) -> Image {
    let image = push_private(registry, repo).await;
    fetch_ok(
        client,
        req_secret(&proxy.oci(&format!("{repo}:v1")), secret(proxy, USER_A)),
    )
    .await;
    proxy.reset();
    image
}

#[tokio::test]
async fn cached_private_module_without_secret_is_unauthenticated() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    cached_private(registry, &proxy, &mut client, "access/no-secret").await;

    let status = fetch_err(&mut client, req(&proxy.oci("access/no-secret:v1"))).await;

    assert_code(&status, Code::Unauthenticated);
}

#[tokio::test]
async fn cached_private_module_with_wrong_password_is_unauthenticated() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    cached_private(registry, &proxy, &mut client, "access/wrong-password").await;

    let status = fetch_err(
        &mut client,
        req_secret(
            &proxy.oci("access/wrong-password:v1"),
            secret(&proxy, (USER_A.0, WRONG_PASSWORD)),
        ),
    )
    .await;

    assert_code(&status, Code::Unauthenticated);
}

/// The credentials that pulled the module were proven for the repository: no registry contact.
#[tokio::test]
async fn cached_private_module_is_served_to_its_puller_without_registry_contact() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = cached_private(registry, &proxy, &mut client, "access/puller").await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(&proxy.oci("access/puller:v1"), secret(&proxy, USER_A)),
    )
    .await;

    assert_module(&info, &bytes, &image);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(proxy.total(), 0, "registry requests:\n{}", proxy.describe());
}

/// Other valid credentials pass one manifest check at the registry (any 401 challenge before it aside), and
/// the cached bytes are served without a blob download.
#[tokio::test]
async fn cached_private_module_is_served_to_other_valid_credentials_after_one_manifest_check() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "access/other-user";
    let image = cached_private(registry, &proxy, &mut client, repo).await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(&proxy.oci(&format!("{repo}:v1")), secret(&proxy, USER_B)),
    )
    .await;

    assert_module(&info, &bytes, &image);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(
        (proxy.manifest_requests_ok(repo), proxy.blob_gets(repo)),
        (1, 0),
        "(successful manifest requests, blob GETs); registry requests:\n{}",
        proxy.describe()
    );
}

/// Once other credentials passed the check for the repository, they are served without registry contact.
#[tokio::test]
async fn credentials_proven_for_repository_are_not_checked_again() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let repo = "access/proven";
    let image = cached_private(registry, &proxy, &mut client, repo).await;
    let url = proxy.oci(&format!("{repo}:v1"));
    fetch_ok(&mut client, req_secret(&url, secret(&proxy, USER_B))).await;
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req_secret(&url, secret(&proxy, USER_B))).await;

    assert_module(&info, &bytes, &image);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(proxy.total(), 0, "registry requests:\n{}", proxy.describe());
}

/// Naming a private module by its sha256 on an http:// URL does not get its bytes from the cache: the request
/// goes to that URL (here a 404).
#[tokio::test]
async fn private_module_named_by_sha256_on_http_url_is_fetched_from_that_url() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = cached_private(registry, &proxy, &mut client, "access/by-sha").await;
    let origin = Origin::start().await;
    origin.always("/copy.wasm", 404);

    let status = fetch_err(&mut client, req_sha(&origin.url("/copy.wasm"), &image.module_digest)).await;

    assert_code(&status, Code::NotFound);
    assert!(origin.hits("/copy.wasm") >= 1, "the http URL was requested");
}

// ---------------------------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn registry_with_untrusted_certificate_is_unavailable() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    push_private(registry, "tls/untrusted").await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(
        &mut client,
        req_secret(&proxy.oci("tls/untrusted:v1"), secret(&proxy, USER_A)),
    )
    .await;

    assert_code(&status, Code::Unavailable);
    assert_eq!(
        proxy.total(),
        0,
        "no request went over the untrusted connection:\n{}",
        proxy.describe()
    );
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

#[tokio::test]
async fn ca_file_makes_registry_certificate_trusted() {
    let (registry, proxy, _daemon, mut client) = setup().await;
    let image = push_private(registry, "tls/ca-file").await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(&proxy.oci("tls/ca-file:v1"), secret(&proxy, USER_A)),
    )
    .await;

    assert_module(&info, &bytes, &image);
    assert!(
        proxy.successful() >= 2,
        "manifest and blob went over TLS:\n{}",
        proxy.describe()
    );
}

/// `--insecure-registry` also means HTTPS without certificate verification.
#[tokio::test]
async fn insecure_registry_accepts_untrusted_certificate() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let image = push_private(registry, "tls/insecure").await;
    let daemon = Daemon::start(&["--insecure-registry", &proxy.host()]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(&proxy.oci("tls/insecure:v1"), secret(&proxy, USER_A)),
    )
    .await;

    assert_module(&info, &bytes, &image);
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets stay out of the log
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn pull_secret_never_appears_in_daemon_log() {
    let (registry, proxy, daemon, mut client) = setup().await;
    push_private(registry, "log/secret").await;
    let url = proxy.oci("log/secret:v1");
    let good = secret(&proxy, USER_A);
    let bad = secret(&proxy, (USER_A.0, WRONG_PASSWORD));
    fetch_ok(&mut client, req_secret(&url, good.clone())).await;
    fetch_err(&mut client, req_secret(&url, bad.clone())).await;
    fetch_ok(&mut client, req_secret(&url, secret(&proxy, USER_B))).await;

    let log = daemon.log();
    assert!(!log.is_empty(), "the daemon logged something");
    let needles = [
        USER_A.1.to_string(),
        USER_B.1.to_string(),
        WRONG_PASSWORD.to_string(),
        base64(format!("{}:{}", USER_A.0, USER_A.1).as_bytes()),
        base64(format!("{}:{}", USER_B.0, USER_B.1).as_bytes()),
        base64(format!("{}:{WRONG_PASSWORD}", USER_A.0).as_bytes()),
        base64(&good),
        String::from_utf8(good).unwrap(),
    ];
    for needle in &needles {
        assert!(
            !log.contains(needle.as_str()),
            "the daemon log contains secret material {needle:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Knowing a digest is not access
// ---------------------------------------------------------------------------------------------------------------

/// Another registry serves the private image's manifest (or one naming its layer) but not the blob: the cached
/// private module is not handed out because a manifest elsewhere names it; the caller's own registry must serve
/// the bytes, and here it cannot.
#[tokio::test]
async fn manifest_elsewhere_naming_a_private_module_does_not_unlock_it() {
    let (registry, proxy, _, _) = setup().await;
    let image = push_private(registry, "auth/named-elsewhere").await;
    let evil = Origin::start().await;
    let renamed = with_annotation(cncf_image(&image.module), "org.example.copy", "1");
    evil.serve_with_type("/v2/evil/same/manifests/v1", image.manifest.clone(), OCI_MANIFEST);
    evil.serve_with_type("/v2/evil/layer/manifests/v1", renamed.manifest.clone(), OCI_MANIFEST);
    let evil_host = evil.addr().to_string();
    let (_daemon, mut client) = start_daemon(registry, &["--insecure-registry", &evil_host]).await;
    fetch_ok(
        &mut client,
        req_secret(&proxy.oci("auth/named-elsewhere:v1"), secret(&proxy, USER_A)),
    )
    .await;

    for repo in ["evil/same", "evil/layer"] {
        let url = format!("oci://{evil_host}/{repo}:v1");
        let status = fetch_err(&mut client, req_sha(&url, &image.module_digest)).await;

        assert_code(&status, Code::NotFound);
        assert!(
            evil.hits(&format!("/v2/{repo}/blobs/{}", image.module_blob_digest)) >= 1,
            "the blob was asked for"
        );
    }
}
