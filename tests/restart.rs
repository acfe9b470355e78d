//! What survives a restart, what does not (corrupted blobs, stale ingests), and signal handling.

use crate::support;

use std::time::{Duration, Instant};

use support::*;
use tonic::Code;

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms"];

#[tokio::test]
async fn cached_module_is_served_after_restart_with_origin_stopped() {
    let mut origin = Origin::start().await;
    let module = wasm_module("survivor");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;

    daemon.restart().await;
    origin.stop().await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn resolve_after_restart_with_origin_stopped_returns_blob() {
    let mut origin = Origin::start().await;
    let module = wasm_module("resolve-survivor");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;

    daemon.restart().await;
    origin.stop().await;

    let info = daemon
        .client()
        .await
        .resolve(req(&url))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(std::fs::read(&info.path).unwrap(), module);
}

#[tokio::test]
async fn list_survives_restart() {
    let origin = Origin::start().await;
    let module = wasm_module("listed-survivor");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(&[]).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;

    daemon.restart().await;

    let modules = list(&mut daemon.client().await).await;
    assert_eq!(modules.len(), 1, "{modules:?}");
    assert_eq!(modules[0].sha256, sha256_hex(&module));
    assert_eq!(modules[0].urls, vec![origin.url("/m.wasm")]);
}

/// After a restart too, a digest cached from one URL does not answer a request for another URL that names it:
/// only bytes fetched from a URL bind it, so with that URL's origin gone the request fails.
#[tokio::test]
async fn cached_digest_does_not_answer_for_another_url_after_restart() {
    let mut origin = Origin::start().await;
    let module = wasm_module("digest-survivor");
    origin.serve("/a.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/a.wasm"))).await;

    daemon.restart().await;
    origin.stop().await;

    let request = req_sha(&origin.url("/b.wasm"), &sha256_hex(&module));
    let status = fetch_err(&mut daemon.client().await, request).await;
    assert_code(&status, Code::Unavailable);
}

/// The (resource, version) pair of the last fetch is persisted: Always with the same pair is a hit after restart.
#[tokio::test]
async fn resource_version_survives_restart() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("versioned"));
    let mut daemon = Daemon::start(&[]).await;
    let url = origin.url("/m.wasm");
    fetch_ok(
        &mut daemon.client().await,
        req_policy(&url, PullPolicy::Always, "ns/p", "7"),
    )
    .await;

    daemon.restart().await;

    let (info, _) = fetch_ok(
        &mut daemon.client().await,
        req_policy(&url, PullPolicy::Always, "ns/p", "7"),
    )
    .await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn corrupted_blob_is_refetched_after_restart() {
    let origin = Origin::start().await;
    let module = wasm_module("to-corrupt");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(&[]).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;
    daemon.stop().await;
    alter_blob(&daemon.blob_path(&sha256_hex(&module)));

    daemon.start_again().await;
    let (info, bytes) = fetch_ok(&mut daemon.client().await, req(&url)).await;

    assert_eq!(bytes, module);
    assert_eq!(info.sha256, sha256_hex(&module));
    assert_eq!(origin.hits("/m.wasm"), 2, "the corrupted blob was fetched again");
    assert_eq!(
        std::fs::read(daemon.blob_path(&sha256_hex(&module))).unwrap(),
        module,
        "blob repaired on disk"
    );
}

#[tokio::test]
async fn corrupted_blob_is_data_loss_after_restart_with_origin_down() {
    let mut origin = Origin::start().await;
    let module = wasm_module("to-corrupt-offline");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;
    daemon.stop().await;
    alter_blob(&daemon.blob_path(&sha256_hex(&module)));
    origin.stop().await;

    daemon.start_again().await;
    let status = fetch_err(&mut daemon.client().await, req(&url)).await;

    assert_code(&status, Code::DataLoss);
}

/// Resolve hands out a path, so it must not hand out the path of a corrupted blob either.
#[tokio::test]
async fn corrupted_blob_is_not_resolved_after_restart_with_origin_down() {
    let mut origin = Origin::start().await;
    let module = wasm_module("to-corrupt-resolve");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;
    daemon.stop().await;
    alter_blob(&daemon.blob_path(&sha256_hex(&module)));
    origin.stop().await;

    daemon.start_again().await;
    let status = daemon
        .client()
        .await
        .resolve(req(&url))
        .await
        .expect_err("corrupted blob resolved");

    assert_code(&status, Code::DataLoss);
}

/// A request by digest (from another URL) does not get the corrupted blob either.
#[tokio::test]
async fn corrupted_blob_is_not_served_by_digest_after_restart() {
    let mut origin = Origin::start().await;
    let module = wasm_module("to-corrupt-digest");
    origin.serve("/a.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/a.wasm"))).await;
    daemon.stop().await;
    alter_blob(&daemon.blob_path(&sha256_hex(&module)));
    origin.stop().await;

    daemon.start_again().await;
    let request = req_sha(&origin.url("/b.wasm"), &sha256_hex(&module));
    let result = fetch(&mut daemon.client().await, request).await;

    // `fetch` already checks that whatever is streamed hashes to info.sha256; an error is the other option.
    if let Ok((_, bytes)) = result {
        assert_eq!(bytes, module, "corrupted bytes served");
    }
}

#[tokio::test]
async fn truncated_blob_is_data_loss_after_restart_with_origin_down() {
    let mut origin = Origin::start().await;
    let module = wasm_module_of_size("to-truncate", 3 * 1024 * 1024);
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(FAST_RETRY).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut daemon.client().await, req(&url)).await;
    daemon.stop().await;
    let blob = daemon.blob_path(&sha256_hex(&module));
    std::fs::write(&blob, &module[..module.len() / 2]).expect("truncate blob");
    origin.stop().await;

    daemon.start_again().await;
    let status = fetch_err(&mut daemon.client().await, req(&url)).await;

    assert_code(&status, Code::DataLoss);
}

#[tokio::test]
async fn sigterm_removes_socket_and_exits_zero() {
    let mut daemon = Daemon::start(&[]).await;
    assert!(daemon.socket().exists());

    let status = daemon.stop().await;

    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!daemon.socket().exists(), "socket removed on SIGTERM");
}

#[tokio::test]
async fn sigint_removes_socket_and_exits_zero() {
    let mut daemon = Daemon::start(&[]).await;

    daemon.signal(libc::SIGINT);
    let status = daemon.wait_exit().await;

    assert!(status.success(), "exit status after SIGINT: {status}");
    assert!(!daemon.socket().exists(), "socket removed on SIGINT");
}

/// SIGTERM lets an in-flight Fetch finish (drain), then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_fetch() {
    let origin = Origin::start().await;
    let module = wasm_module("in-flight");
    origin.serve("/m.wasm", module.clone());
    origin.delay("/m.wasm", Duration::from_millis(800));
    let mut daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    let in_flight = tokio::spawn(async move { fetch(&mut client, req(&url)).await });
    wait_for(|| origin.hits("/m.wasm") == 1, "the fetch reaches the origin").await;

    daemon.signal(libc::SIGTERM);
    let (_, bytes) = in_flight
        .await
        .expect("task")
        .expect("in-flight fetch completes during drain");
    let status = daemon.wait_exit().await;

    assert_eq!(bytes, module);
    assert!(status.success(), "exit status: {status}");
    assert!(!daemon.socket().exists());
}

/// A drain that outlasts --shutdown-grace is cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_drain() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("endless"));
    origin.delay("/m.wasm", Duration::from_secs(30));
    let mut daemon = Daemon::start(&["--shutdown-grace", "300ms"]).await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    let _in_flight = tokio::spawn(async move { fetch(&mut client, req(&url)).await });
    wait_for(|| origin.hits("/m.wasm") == 1, "the fetch reaches the origin").await;

    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit().await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        started.elapsed()
    );
    assert!(!daemon.socket().exists(), "socket removed after the grace period");
}

#[tokio::test]
async fn restart_after_crash_replaces_stale_socket() {
    let origin = Origin::start().await;
    let module = wasm_module("after-crash");
    origin.serve("/m.wasm", module.clone());
    let mut daemon = Daemon::start(&[]).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;
    daemon.kill();
    assert!(daemon.socket().exists(), "SIGKILL leaves the socket file behind");

    daemon.start_again().await;

    let (info, bytes) = fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn stale_ingest_files_are_removed_on_start() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("ingest-sweep"));
    let mut daemon = Daemon::start(&[]).await;
    fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;
    daemon.stop().await;
    let ingest = daemon.cache_dir().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(ingest.join("left-by-a-crash"), b"\0asm\x01\0\0\0partial").unwrap();

    daemon.start_again().await;

    assert_eq!(daemon.ingest_files(), Vec::<std::path::PathBuf>::new());
}

/// A download killed halfway (SIGKILL) leaves nothing in ingest/ once the daemon is back, and the module is fetched
/// whole on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_leaves_no_ingest_files_after_restart() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("interrupted", 4 * 1024 * 1024);
    origin.serve("/m.wasm", module.clone());
    origin.throttle("/m.wasm", Duration::from_millis(30));
    let mut daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    let in_flight = tokio::spawn(async move { fetch(&mut client, req(&url)).await });
    wait_for(|| origin.hits("/m.wasm") == 1, "the download starts").await;
    // Downloads go to a temp file under ingest/ (the spec's layout); kill while it is there.
    wait_for(
        || !daemon.ingest_files().is_empty(),
        "a partial download shows in ingest/",
    )
    .await;

    daemon.kill();
    let _ = in_flight.await;
    daemon.start_again().await;

    assert_eq!(daemon.ingest_files(), Vec::<std::path::PathBuf>::new());
    assert!(
        list(&mut daemon.client().await).await.is_empty(),
        "a partial download is not listed"
    );
    let (info, bytes) = fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == module, "module fetched whole after the crash");
}

/// No temp files stay behind in ingest/ after successful and failed fetches and a restart.
#[tokio::test]
async fn ingest_is_empty_after_fetches_and_restart() {
    let origin = Origin::start().await;
    origin.serve("/ok.wasm", wasm_module("ok"));
    origin.serve("/bad.wasm", wasm_module("bad-sum"));
    origin.serve("/not-wasm", "text");
    let mut daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/ok.wasm"))).await;
    fetch_err(&mut client, req_sha(&origin.url("/bad.wasm"), &sha256_hex(b"x"))).await;
    fetch_err(&mut client, req(&origin.url("/not-wasm"))).await;
    assert_eq!(
        daemon.ingest_files(),
        Vec::<std::path::PathBuf>::new(),
        "before restart"
    );

    daemon.restart().await;

    assert_eq!(daemon.ingest_files(), Vec::<std::path::PathBuf>::new(), "after restart");
}

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A second `serve` on a cache directory in use exits at once, naming the directory and the first daemon's
/// pid, and touches nothing: the first daemon's download in progress completes and is served.
#[tokio::test]
async fn second_serve_on_a_cache_dir_in_use_exits_and_leaves_the_first_untouched() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("in-use", 4 * 1024 * 1024);
    origin.serve("/slow.wasm", module.clone());
    origin.throttle("/slow.wasm", Duration::from_millis(40));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let url = origin.url("/slow.wasm");
    let download = tokio::spawn(async move { fetch(&mut client, req(&url)).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.ingest_files().is_empty() {
        assert!(Instant::now() < deadline, "the download never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_wasmcache"));
    second
        .arg("serve")
        .arg("--cache-dir")
        .arg(daemon.cache_dir())
        .arg("--socket")
        .arg(daemon.dir().join("second.sock"))
        .args(["--admin-listen", "off"]);
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || second.output()),
    )
    .await
    .expect("the second serve exits")
    .unwrap()
    .expect("run the second serve");

    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    let expected = format!(
        "cache directory {} is in use by another wasmcache (pid {})",
        daemon.cache_dir().display(),
        daemon.pid()
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    assert!(
        !daemon.ingest_files().is_empty(),
        "the first daemon's download is still there"
    );
    let (_, bytes) = download.await.unwrap().expect("the first daemon's download completes");
    assert_eq!(bytes, module);
}
