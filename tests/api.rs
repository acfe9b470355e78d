//! The Resolve, List and Remove calls.

use crate::support;

use std::path::Path;

use support::*;
use tonic::Code;

async fn resolve(client: &mut Client, request: FetchRequest) -> Result<ModuleInfo, tonic::Status> {
    client.resolve(request).await.map(|r| r.into_inner())
}

async fn remove(client: &mut Client, target: Target) -> Result<(Vec<String>, Vec<String>), tonic::Status> {
    let response = client
        .remove(RemoveRequest { target: Some(target) })
        .await?
        .into_inner();
    Ok((response.removed_sha256, response.removed_urls))
}

#[tokio::test]
async fn resolve_returns_absolute_path_whose_bytes_equal_module() {
    let origin = Origin::start().await;
    let module = wasm_module("resolve");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let info = resolve(&mut client, req(&origin.url("/m.wasm")))
        .await
        .expect("resolve");
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(info.sha256, sha256_hex(&module));
    assert_eq!(info.size, module.len() as u64);
    assert!(Path::new(&info.path).is_absolute(), "path is absolute: {}", info.path);
    assert_eq!(std::fs::read(&info.path).expect("read the blob"), module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn resolve_path_is_the_content_addressed_blob() {
    let origin = Origin::start().await;
    let module = wasm_module("resolve-layout");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let info = resolve(&mut client, req(&origin.url("/m.wasm")))
        .await
        .expect("resolve");
    let expected = daemon.blob_path(&sha256_hex(&module));
    assert_eq!(
        std::fs::canonicalize(&info.path).expect("canonical path"),
        std::fs::canonicalize(&expected).expect("blob exists at blobs/sha256/<hex>")
    );
}

#[tokio::test]
async fn resolve_then_fetch_is_hit() {
    let origin = Origin::start().await;
    let module = wasm_module("resolve-then-fetch");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    resolve(&mut client, req(&origin.url("/m.wasm")))
        .await
        .expect("resolve");

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn resolve_reports_errors_like_fetch() {
    let origin = Origin::start().await;
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = resolve(&mut client, req(&origin.url("/missing.wasm")))
        .await
        .expect_err("404");
    assert_code(&status, Code::NotFound);
}

#[tokio::test]
async fn fetch_info_path_is_absolute_and_holds_module() {
    let origin = Origin::start().await;
    let module = wasm_module("fetch-path");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, _) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert!(Path::new(&info.path).is_absolute(), "path is absolute: {}", info.path);
    assert_eq!(std::fs::read(&info.path).expect("read the blob"), module);
}

#[tokio::test]
async fn list_is_empty_on_fresh_cache() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test]
async fn list_shows_url_and_digest() {
    let origin = Origin::start().await;
    let module = wasm_module("listed");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let modules = list(&mut client).await;
    assert_eq!(modules.len(), 1, "{modules:?}");
    let listed = &modules[0];
    assert_eq!(listed.sha256, sha256_hex(&module));
    assert_eq!(listed.size, module.len() as u64);
    assert_eq!(listed.urls, vec![origin.url("/m.wasm")]);
    assert_eq!(std::fs::read(&listed.path).expect("listed path"), module);
    assert!(listed.fetched_at.is_some(), "fetched_at is set");
}

#[tokio::test]
async fn list_groups_urls_of_same_module() {
    let origin = Origin::start().await;
    let module = wasm_module("two-urls");
    origin.serve("/a.wasm", module.clone());
    origin.serve("/b.wasm", module.clone());
    origin.serve("/c.wasm", wasm_module("another"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    for path in ["/a.wasm", "/b.wasm", "/c.wasm"] {
        fetch_ok(&mut client, req(&origin.url(path))).await;
    }

    let modules = list(&mut client).await;
    assert_eq!(modules.len(), 2, "{modules:?}");
    let shared = modules
        .iter()
        .find(|m| m.sha256 == sha256_hex(&module))
        .expect("shared module listed");
    let mut urls = shared.urls.clone();
    urls.sort();
    assert_eq!(urls, vec![origin.url("/a.wasm"), origin.url("/b.wasm")]);
}

#[tokio::test]
async fn remove_by_url_deletes_module_and_next_fetch_goes_upstream() {
    let origin = Origin::start().await;
    let module = wasm_module("remove-url");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req(&url)).await;

    let (removed_sha256, removed_urls) = remove(&mut client, Target::Url(url.clone())).await.expect("remove");
    assert_eq!(removed_urls, vec![url.clone()]);
    assert_eq!(
        removed_sha256,
        vec![sha256_hex(&module)],
        "no other URL leads to it: module deleted"
    );
    assert!(list(&mut client).await.is_empty());
    assert!(!daemon.blob_path(&sha256_hex(&module)).exists(), "blob deleted");

    let (info, _) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn remove_by_url_keeps_module_another_url_leads_to() {
    let origin = Origin::start().await;
    let module = wasm_module("remove-one-of-two");
    origin.serve("/a.wasm", module.clone());
    origin.serve("/b.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/a.wasm"))).await;
    fetch_ok(&mut client, req(&origin.url("/b.wasm"))).await;

    let (removed_sha256, removed_urls) = remove(&mut client, Target::Url(origin.url("/a.wasm")))
        .await
        .expect("remove");
    assert_eq!(removed_urls, vec![origin.url("/a.wasm")]);
    assert!(removed_sha256.is_empty(), "module still reachable: {removed_sha256:?}");
    let modules = list(&mut client).await;
    assert_eq!(modules.len(), 1);
    assert_eq!(modules[0].urls, vec![origin.url("/b.wasm")]);
    assert!(daemon.blob_path(&sha256_hex(&module)).exists(), "blob kept");

    let (info, _) = fetch_ok(&mut client, req(&origin.url("/b.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Hit);
}

#[tokio::test]
async fn remove_by_digest_deletes_module_and_every_url() {
    let origin = Origin::start().await;
    let module = wasm_module("remove-digest");
    origin.serve("/a.wasm", module.clone());
    origin.serve("/b.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/a.wasm"))).await;
    fetch_ok(&mut client, req(&origin.url("/b.wasm"))).await;
    let digest = sha256_hex(&module);

    let (removed_sha256, mut removed_urls) = remove(&mut client, Target::Sha256(digest.clone()))
        .await
        .expect("remove");
    removed_urls.sort();
    assert_eq!(removed_sha256, vec![digest.clone()]);
    assert_eq!(removed_urls, vec![origin.url("/a.wasm"), origin.url("/b.wasm")]);
    assert!(list(&mut client).await.is_empty());
    assert!(!daemon.blob_path(&digest).exists(), "blob deleted");

    let (info, _) = fetch_ok(&mut client, req(&origin.url("/b.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(origin.hits("/b.wasm"), 2);
}

#[tokio::test]
async fn remove_by_prefixed_digest_deletes_module() {
    let origin = Origin::start().await;
    let module = wasm_module("remove-prefixed");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let target = Target::Sha256(format!("sha256:{}", sha256_hex(&module)));
    let (removed_sha256, _) = remove(&mut client, target).await.expect("remove");
    assert_eq!(removed_sha256, vec![sha256_hex(&module)]);
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test]
async fn remove_of_bad_digest_is_invalid_argument() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = remove(&mut client, Target::Sha256("../../etc/passwd".into()))
        .await
        .expect_err("bad digest");
    assert_code(&status, Code::InvalidArgument);
}

#[tokio::test]
async fn remove_of_unknown_url_removes_nothing() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    match remove(&mut client, Target::Url("http://127.0.0.1:9/never.wasm".into())).await {
        Ok((sha256, urls)) => assert!(sha256.is_empty() && urls.is_empty(), "{sha256:?} {urls:?}"),
        Err(status) => assert_code(&status, Code::NotFound),
    }
}

/// With --listen the same service is served on TCP as well as on the Unix socket.
#[tokio::test]
async fn listen_address_serves_the_same_cache() {
    let origin = Origin::start().await;
    let module = wasm_module("over-tcp");
    origin.serve("/m.wasm", module.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start(&["--listen", &listen]).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect()
        .await
        .expect("connect over TCP");
    let mut tcp_client = ModuleCacheClient::new(channel);
    let (info, bytes) = fetch_ok(&mut tcp_client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
}

/// A pull secret sent with a request is neither logged nor written anywhere in the cache directory.
#[tokio::test]
async fn pull_secret_is_never_logged_or_stored() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("with-secret"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    // base64("robot:pa55-marker-7q") = cm9ib3Q6cGE1NS1tYXJrZXItN3E=
    let secret = format!(
        r#"{{"auths":{{"{}":{{"auth":"cm9ib3Q6cGE1NS1tYXJrZXItN3E=","password":"pa55-marker-7q"}}}}}}"#,
        origin.addr()
    );
    let request = FetchRequest {
        pull_secret: secret.into_bytes(),
        ..req(&origin.url("/m.wasm"))
    };
    fetch_ok(&mut client, request).await;

    for marker in ["pa55-marker-7q", "cm9ib3Q6cGE1NS1tYXJrZXItN3E="] {
        assert!(!daemon.log().contains(marker), "log holds the secret");
        for file in files_under(&daemon.cache_dir()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{} holds the secret",
                file.display()
            );
        }
    }
}

/// `rm` of the URL while a shared refresh of it waits on upstream (which then answers 304): every caller
/// waiting on that refresh still gets the module (fetched again), never INTERNAL.
#[tokio::test]
async fn remove_of_the_url_during_a_shared_refresh_still_serves_the_waiting_callers() {
    removal_during_a_shared_refresh(|url, _| Target::Url(url.to_string())).await;
}

/// The same with `rm` of the module's digest.
#[tokio::test]
async fn remove_of_the_digest_during_a_shared_refresh_still_serves_the_waiting_callers() {
    removal_during_a_shared_refresh(|_, hex| Target::Sha256(hex.to_string())).await;
}

async fn removal_during_a_shared_refresh(target: impl Fn(&str, &str) -> Target) {
    let origin = Origin::start().await;
    let module = wasm_module("rm-during-refresh");
    origin.serve_with_etag("/m.wasm", module.clone(), "\"v1\"");
    let daemon = Daemon::start(&[]).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;
    origin.delay("/m.wasm", std::time::Duration::from_millis(800));

    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut client = daemon.client().await;
        let request = req_policy(&url, PullPolicy::Always, "ns/p", "2");
        waiting.spawn(async move { fetch(&mut client, request).await });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    remove(&mut daemon.client().await, target(&url, &sha256_hex(&module)))
        .await
        .expect("rm");

    while let Some(answer) = waiting.join_next().await {
        match answer.expect("caller task") {
            Ok((_, bytes)) => assert_eq!(bytes, module),
            Err(status) => panic!("waiting caller got {:?}: {}", status.code(), status.message()),
        }
    }
}
