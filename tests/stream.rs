//! The Fetch stream: its shape, large modules, and many concurrent callers.

use crate::support;

use std::time::Duration;

use futures_util::future::join_all;
use support::*;

#[tokio::test]
async fn fetch_stream_starts_with_info_then_chunks_of_at_most_one_mib() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("three-mib", 3 * 1024 * 1024 + 17);
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let mut stream = client
        .fetch(req(&origin.url("/m.wasm")))
        .await
        .expect("fetch")
        .into_inner();
    let first = stream.message().await.expect("first message").expect("a first message");
    let Some(Msg::Info(info)) = first.msg else {
        panic!("first message is not Info: {first:?}")
    };
    assert_eq!(info.size, module.len() as u64);
    let mut chunks = Vec::new();
    while let Some(message) = stream.message().await.expect("chunk") {
        let Some(Msg::Chunk(chunk)) = message.msg else {
            panic!("later message is not a chunk")
        };
        chunks.push(chunk);
    }
    assert!(
        chunks.iter().all(|c| c.len() <= MAX_CHUNK),
        "chunk sizes: {:?}",
        sizes(&chunks)
    );
    assert!(
        chunks.len() >= 4,
        "3 MiB + 17 bytes need at least 4 chunks: {:?}",
        sizes(&chunks)
    );
    assert_eq!(chunks.concat(), module);
}

fn sizes<C: AsRef<[u8]>>(chunks: &[C]) -> Vec<usize> {
    chunks.iter().map(|c| c.as_ref().len()).collect()
}

/// A cache hit streams the same way as a fresh fetch.
#[tokio::test]
async fn cache_hit_streams_same_bytes() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("hit-stream", 2 * 1024 * 1024 + 1);
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
}

/// 100 MiB pass through a client that keeps tonic's default 4 MiB receive limit, because chunks are 1 MiB at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_module_streams_through_default_receive_limit() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("hundred-mib", 100 * 1024 * 1024);
    origin.serve("/big.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/big.wasm"))).await;
    assert_eq!(info.size, module.len() as u64);
    assert!(bytes == module, "100 MiB differ from the module");
    assert_eq!(origin.hits("/big.wasm"), 1);
}

/// 200 simultaneous Fetch calls for one uncached URL share a single upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_uncached_url_share_one_upstream_request() {
    let origin = Origin::start().await;
    let module = wasm_module("popular");
    origin.serve("/popular.wasm", module.clone());
    origin.delay("/popular.wasm", Duration::from_millis(300));
    let daemon = Daemon::start(&[]).await;
    let client = daemon.client().await;
    let url = origin.url("/popular.wasm");

    let calls = (0..200).map(|_| {
        let mut client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { fetch(&mut client, req(&url)).await })
    });
    let results = join_all(calls).await;

    for result in results {
        let (info, bytes) = result.expect("task").expect("fetch");
        assert_eq!(bytes, module);
        assert_eq!(info.sha256, sha256_hex(&module));
    }
    assert_eq!(origin.hits("/popular.wasm"), 1);
}

/// Concurrent callers on separate connections share the fetch too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_from_separate_connections_share_one_upstream_request() {
    let origin = Origin::start().await;
    let module = wasm_module("popular-many-conns");
    origin.serve("/popular.wasm", module.clone());
    origin.delay("/popular.wasm", Duration::from_millis(300));
    let daemon = Daemon::start(&[]).await;
    let url = origin.url("/popular.wasm");

    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(daemon.client().await);
    }
    let calls = clients.into_iter().map(|mut client| {
        let url = url.clone();
        tokio::spawn(async move { fetch(&mut client, req(&url)).await })
    });
    for result in join_all(calls).await {
        let (_, bytes) = result.expect("task").expect("fetch");
        assert_eq!(bytes, module);
    }
    assert_eq!(origin.hits("/popular.wasm"), 1);
}

/// When the shared fetch fails, every waiter gets the error, and nobody retries it on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_share_one_failure() {
    let origin = Origin::start().await;
    origin.always("/gone.wasm", 404);
    origin.delay("/gone.wasm", Duration::from_millis(300));
    let daemon = Daemon::start(&[]).await;
    let client = daemon.client().await;
    let url = origin.url("/gone.wasm");

    let calls = (0..50).map(|_| {
        let mut client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { fetch(&mut client, req(&url)).await })
    });
    for result in join_all(calls).await {
        let status = result.expect("task").expect_err("fetch of a 404 fails");
        assert_code(&status, tonic::Code::NotFound);
    }
    assert_eq!(origin.hits("/gone.wasm"), 1);
}

/// A client that goes away mid-fetch does not cancel the fetch for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_caller_does_not_cancel_shared_fetch() {
    let origin = Origin::start().await;
    let module = wasm_module("cancel");
    origin.serve("/m.wasm", module.clone());
    origin.delay("/m.wasm", Duration::from_millis(500));
    let daemon = Daemon::start(&[]).await;
    let url = origin.url("/m.wasm");

    let mut quitter = daemon.client().await;
    let quit_url = url.clone();
    let quitting = tokio::spawn(async move { fetch(&mut quitter, req(&quit_url)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stayer = daemon.client().await;
    let staying = tokio::spawn({
        let url = url.clone();
        async move { fetch(&mut stayer, req(&url)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    quitting.abort();

    let (_, bytes) = staying.await.expect("task").expect("fetch");
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}
