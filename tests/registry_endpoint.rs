//! The OCI Distribution pull-through endpoint (`--registry-listen`) against the real registry behind it.

use crate::support;

use support::registry::*;
use support::*;

async fn daemon_with_endpoint(proxy: &Proxy) -> (Daemon, std::net::SocketAddr) {
    let endpoint = free_local_addr();
    let host = proxy.host();
    let listen = endpoint.to_string();
    let daemon = Daemon::start(&["--insecure-registry", &host, "--registry-listen", &listen]).await;
    (daemon, endpoint)
}

#[tokio::test]
async fn manifest_and_module_blob_are_upstreams_in_the_containerd_mirror_form() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let image = registry.push_module("endpoint/basic", "v1").await;
    let (_daemon, endpoint) = daemon_with_endpoint(&proxy).await;
    let ns = proxy.host();

    let manifest = http_get(endpoint, &format!("/v2/endpoint/basic/manifests/v1?ns={ns}")).await;
    let blob = http_get(
        endpoint,
        &format!("/v2/endpoint/basic/blobs/{}?ns={ns}", image.module_blob_digest),
    )
    .await;

    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(image.manifest_digest.as_str())
    );
    assert!(
        manifest.body == image.manifest,
        "the manifest is upstream's, byte for byte"
    );
    assert_eq!(blob.status, 200);
    assert!(blob.body == image.module);
}
