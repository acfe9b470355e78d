//! The registry endpoint keeps the cache's rules: a signature rule in `enforce` mode refuses an unsigned image's
//! manifest and its blobs by digest, a private module is not served to a client without credentials, and an
//! image config (not a module) is pulled through once and then served from the cache.

use crate::support;

use support::registry::*;
use support::sigstore::*;
use support::*;

struct Endpoint {
    addr: std::net::SocketAddr,
    ns: String,
}

impl Endpoint {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let sep = if path.contains('?') { '&' } else { '?' };
        http_request(self.addr, "GET", &format!("{path}{sep}ns={}", self.ns), headers)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

async fn start(host: &str, extra: &[&str]) -> (Daemon, Endpoint) {
    let addr = free_local_addr();
    let listen = addr.to_string();
    let mut args = vec!["--registry-listen", &listen, "--retry-backoff", "10ms"];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&args).await;
    (
        daemon,
        Endpoint {
            addr,
            ns: host.to_string(),
        },
    )
}

#[tokio::test]
async fn enforce_rule_refuses_an_unsigned_manifest_and_its_blobs_by_digest() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let image = registry.push_module("rules/unsigned", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::generate(KeyKind::P256).write_public(dir.path());
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\nname = \"team\"\nimages = [\"{}/rules/**\"]\nkeys = [{:?}]\n",
            proxy.host(),
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let host = proxy.host();
    let (daemon, endpoint) = start(
        &host,
        &[
            "--insecure-registry",
            &host,
            "--verify-policy",
            policy.to_str().unwrap(),
        ],
    )
    .await;

    let manifest = endpoint.get("/v2/rules/unsigned/manifests/v1", &[]).await;
    let blob = endpoint
        .get(&format!("/v2/rules/unsigned/blobs/{}", image.module_blob_digest), &[])
        .await;

    assert_eq!(manifest.status, 403, "{}", manifest.text());
    assert!(manifest.text().contains("rule team"), "{}", manifest.text());
    assert_ne!(
        blob.status, 200,
        "a blob of an unverified image is not handed out by digest"
    );
    assert!(
        daemon.blob_files().is_empty(),
        "nothing stored: {:?}",
        daemon.blob_files()
    );
}

#[tokio::test]
async fn private_module_needs_the_clients_credentials_at_the_endpoint() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let image = registry.push_module("rules/private", "v1").await;
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let (_daemon, endpoint) = start(&proxy.host(), &["--ca-file", &ca]).await;
    let (user, password) = USER_A;
    let authorization = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    let path = "/v2/rules/private/manifests/v1";

    let with = endpoint.get(path, &[("authorization", &authorization)]).await;
    let without = endpoint.get(path, &[]).await;
    let blob_without = endpoint
        .get(&format!("/v2/rules/private/blobs/{}", image.module_blob_digest), &[])
        .await;

    assert_eq!(with.status, 200, "{}", with.text());
    assert!(with.body == image.manifest);
    assert_eq!(without.status, 401, "{}", without.text());
    assert!(
        without
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic")),
        "{:?}",
        without.header("www-authenticate")
    );
    assert_eq!(blob_without.status, 401, "{}", blob_without.text());
}

#[tokio::test]
async fn image_config_is_pulled_through_once_then_served_from_the_cache() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let built = cncf_image(&wasm_module("rules/config"));
    let config = built.blobs[0].clone();
    registry.push("rules/config", Some("v1"), built).await;
    let host = proxy.host();
    let (daemon, endpoint) = start(&host, &["--insecure-registry", &host]).await;
    let path = format!("/v2/rules/config/blobs/{}", digest_of(&config));

    endpoint.get("/v2/rules/config/manifests/v1", &[]).await;
    let first = endpoint.get(&path, &[]).await;
    let second = endpoint.get(&path, &[]).await;

    assert!(first.status == 200 && first.body == config, "{}", first.text());
    assert!(second.body == config);
    let config_gets = proxy
        .seen()
        .iter()
        .filter(|s| s.path.ends_with(&digest_of(&config)))
        .count();
    assert_eq!(config_gets, 1, "{}", proxy.describe());
    let listed = list(&mut daemon.client().await).await;
    assert_eq!(listed.len(), 1, "ls shows the module, not the config: {listed:?}");
}
