//! http:// fetching: caching, retries, verification, unwrapping and the size cap.

use crate::support;

use std::time::{Duration, Instant};

use support::*;
use tonic::Code;

/// Short backoff so that five attempts take milliseconds.
const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms"];

#[tokio::test]
async fn cache_miss_then_hit_contacts_origin_once() {
    let origin = Origin::start().await;
    let module = wasm_module("miss-then-hit");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (first, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(first.outcome(), Outcome::Fetched);
    assert_eq!(bytes, module);
    assert_eq!(first.sha256, sha256_hex(&module));
    assert_eq!(first.size, module.len() as u64);
    assert_eq!(first.source_url, origin.url("/m.wasm"));
    assert!(first.manifest_digest.is_empty(), "http modules have no manifest digest");
    assert!(first.fetched_at.is_some(), "fetched_at is set");

    let (second, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(second.outcome(), Outcome::Hit);
    assert_eq!(bytes, module);
    assert_eq!(second.sha256, first.sha256);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn server_error_is_retried_five_times_then_unavailable() {
    let origin = Origin::start().await;
    origin.always("/down.wasm", 500);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/down.wasm"))).await;
    assert_code(&status, Code::Unavailable);
    assert_eq!(origin.hits("/down.wasm"), 5);
}

#[tokio::test]
async fn fetch_attempts_flag_sets_number_of_attempts() {
    let origin = Origin::start().await;
    origin.always("/down.wasm", 503);
    let daemon = Daemon::start(&["--retry-backoff", "10ms", "--fetch-attempts", "2"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/down.wasm"))).await;
    assert_code(&status, Code::Unavailable);
    assert_eq!(origin.hits("/down.wasm"), 2);
}

#[tokio::test]
async fn three_server_errors_then_success_takes_four_requests() {
    let origin = Origin::start().await;
    let module = wasm_module("flaky");
    origin.serve("/flaky.wasm", module.clone());
    origin.fail_first("/flaky.wasm", &[500, 500, 500]);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/flaky.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/flaky.wasm"), 4);
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let origin = Origin::start().await;
    let module = wasm_module("throttled");
    origin.serve("/m.wasm", module.clone());
    origin.fail_first("/m.wasm", &[429]);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let origin = Origin::start().await;
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/missing.wasm"))).await;
    assert_code(&status, Code::NotFound);
    assert_eq!(origin.hits("/missing.wasm"), 1);
}

#[tokio::test]
async fn forbidden_is_not_retried() {
    let origin = Origin::start().await;
    origin.always("/secret.wasm", 403);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&origin.url("/secret.wasm"))).await;
    assert_eq!(origin.hits("/secret.wasm"), 1);
}

#[tokio::test]
async fn not_implemented_is_not_retried() {
    let origin = Origin::start().await;
    origin.always("/m.wasm", 501);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn http_version_not_supported_is_not_retried() {
    let origin = Origin::start().await;
    origin.always("/m.wasm", 505);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn network_authentication_required_is_not_retried() {
    let origin = Origin::start().await;
    origin.always("/m.wasm", 511);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn unreachable_origin_is_unavailable() {
    let mut origin = Origin::start().await;
    let url = origin.url("/m.wasm");
    origin.stop().await;
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&url)).await;
    assert_code(&status, Code::Unavailable);
}

/// A failed fetch is not cached: the next request goes upstream again and can succeed.
#[tokio::test]
async fn failed_fetch_is_not_cached() {
    let origin = Origin::start().await;
    origin.always("/m.wasm", 404);
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;

    let module = wasm_module("later");
    origin.serve("/m.wasm", module.clone());
    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(bytes, module);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn slow_origin_past_fetch_timeout_is_deadline_exceeded() {
    let origin = Origin::start().await;
    origin.serve("/slow.wasm", wasm_module("slow"));
    origin.delay("/slow.wasm", Duration::from_secs(10));
    let daemon = Daemon::start(&[
        "--fetch-timeout",
        "200ms",
        "--fetch-attempts",
        "1",
        "--retry-backoff",
        "10ms",
    ])
    .await;
    let mut client = daemon.client().await;

    let started = Instant::now();
    let status = fetch_err(&mut client, req(&origin.url("/slow.wasm"))).await;
    assert_code(&status, Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn matching_checksum_is_accepted() {
    let origin = Origin::start().await;
    let module = wasm_module("checked");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req_sha(&origin.url("/m.wasm"), &sha256_hex(&module))).await;
    assert_eq!(info.sha256, sha256_hex(&module));
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn checksum_with_sha256_prefix_is_accepted() {
    let origin = Origin::start().await;
    let module = wasm_module("prefixed");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let digest = format!("sha256:{}", sha256_hex(&module));
    let (info, bytes) = fetch_ok(&mut client, req_sha(&origin.url("/m.wasm"), &digest)).await;
    assert_eq!(info.sha256, sha256_hex(&module));
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn wrong_checksum_is_data_loss_naming_both_digests() {
    let origin = Origin::start().await;
    let module = wasm_module("actual");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let expected = sha256_hex(b"something else");
    let status = fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), &expected)).await;
    assert_code(&status, Code::DataLoss);
    assert!(
        status.message().contains(&expected),
        "message names the expected digest: {}",
        status.message()
    );
    assert!(
        status.message().contains(&sha256_hex(&module)),
        "message names the actual digest: {}",
        status.message()
    );
}

#[tokio::test]
async fn wrong_checksum_stores_nothing() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("actual"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), &sha256_hex(b"other"))).await;
    assert!(list(&mut client).await.is_empty(), "nothing listed");
    assert_eq!(daemon.blob_files(), Vec::<std::path::PathBuf>::new(), "no blob files");
}

/// A checksum mismatch is not cached as a success: fetching again without the checksum goes upstream again.
#[tokio::test]
async fn wrong_checksum_does_not_cache_url() {
    let origin = Origin::start().await;
    let module = wasm_module("actual");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req_sha(&origin.url("/m.wasm"), &sha256_hex(b"other"))).await;
    let (info, _) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn non_wasm_payload_is_failed_precondition() {
    let origin = Origin::start().await;
    origin.serve_with_type("/index.html", "<html>not wasm</html>", "text/html");
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/index.html"))).await;
    assert_code(&status, Code::FailedPrecondition);
    assert!(list(&mut client).await.is_empty(), "nothing listed");
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

/// The magic alone is not enough: the version after `\0asm` must be 1.
#[tokio::test]
async fn wasm_magic_with_wrong_version_is_failed_precondition() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", b"\0asm\x02\0\0\0rest".to_vec());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_code(&status, Code::FailedPrecondition);
}

#[tokio::test]
async fn empty_body_is_failed_precondition() {
    let origin = Origin::start().await;
    origin.serve("/empty.wasm", Vec::new());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/empty.wasm"))).await;
    assert_code(&status, Code::FailedPrecondition);
}

#[tokio::test]
async fn gzip_payload_is_unwrapped() {
    let origin = Origin::start().await;
    let module = wasm_module("gzipped");
    origin.serve_with_type("/m.wasm.gz", gzip(&module), "application/gzip");
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm.gz"))).await;
    assert_eq!(bytes, module);
    assert_eq!(info.sha256, sha256_hex(&module));
}

/// Unwrapping goes by content, not by name or content type.
#[tokio::test]
async fn gzip_payload_without_hint_is_unwrapped() {
    let origin = Origin::start().await;
    let module = wasm_module("gzipped-quietly");
    origin.serve_with_type("/plugin", gzip(&module), "application/octet-stream");
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/plugin"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn tar_payload_with_plugin_wasm_among_other_files_is_unwrapped() {
    let origin = Origin::start().await;
    let module = wasm_module("plugin-in-tar");
    let other = wasm_module("other-in-tar");
    let archive = tar(&[
        ("README.md", b"# a plugin".as_slice()),
        ("other.wasm", other.as_slice()),
        ("plugin.wasm", module.as_slice()),
        ("LICENSE", b"Apache-2.0".as_slice()),
    ]);
    origin.serve_with_type("/plugin.tar", archive, "application/x-tar");
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/plugin.tar"))).await;
    assert_eq!(bytes, module);
    assert_eq!(info.sha256, sha256_hex(&module));
}

#[tokio::test]
async fn tar_payload_with_single_wasm_entry_is_unwrapped() {
    let origin = Origin::start().await;
    let module = wasm_module("only-wasm-in-tar");
    let archive = tar(&[
        ("README.md", b"# a plugin".as_slice()),
        ("filter.wasm", module.as_slice()),
    ]);
    origin.serve("/filter.tar", archive);
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/filter.tar"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn tar_gz_payload_is_unwrapped() {
    let origin = Origin::start().await;
    let module = wasm_module("plugin-in-tar-gz");
    let archive = tar_gz(&[("notes.txt", b"hello".as_slice()), ("plugin.wasm", module.as_slice())]);
    origin.serve_with_type("/plugin.tar.gz", archive, "application/gzip");
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/plugin.tar.gz"))).await;
    assert_eq!(bytes, module);
    assert_eq!(info.sha256, sha256_hex(&module));
}

#[tokio::test]
async fn tar_with_two_wasm_and_no_plugin_wasm_is_refused() {
    let origin = Origin::start().await;
    let one = wasm_module("one");
    let two = wasm_module("two");
    origin.serve(
        "/ambiguous.tar",
        tar(&[("one.wasm", one.as_slice()), ("two.wasm", two.as_slice())]),
    );
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/ambiguous.tar"))).await;
    assert_ne!(
        status.code(),
        Code::Unavailable,
        "an ambiguous archive is not an upstream outage"
    );
    assert!(list(&mut client).await.is_empty(), "nothing listed");
    assert!(daemon.blob_files().is_empty(), "no blob files");
    assert_eq!(origin.hits("/ambiguous.tar"), 1, "a bad archive is not retried");
}

#[tokio::test]
async fn tar_without_wasm_is_refused() {
    let origin = Origin::start().await;
    origin.serve("/empty.tar", tar(&[("README.md", b"nothing here".as_slice())]));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&origin.url("/empty.tar"))).await;
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn body_over_max_module_bytes_is_resource_exhausted() {
    let origin = Origin::start().await;
    origin.serve("/big.wasm", wasm_module_of_size("big", 128 * 1024));
    let daemon = Daemon::start(&["--max-module-bytes", "65536"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/big.wasm"))).await;
    assert_code(&status, Code::ResourceExhausted);
    assert!(daemon.blob_files().is_empty(), "no blob files");
    assert_eq!(origin.hits("/big.wasm"), 1, "an oversized module is not retried");
}

#[tokio::test]
async fn body_at_max_module_bytes_is_accepted() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("exact", 65536);
    origin.serve("/exact.wasm", module.clone());
    let daemon = Daemon::start(&["--max-module-bytes", "65536"]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/exact.wasm"))).await;
    assert_eq!(bytes, module);
}

/// A small gzip body that inflates past the cap is refused too (the cap applies after decompression).
#[tokio::test]
async fn gzip_bomb_over_max_module_bytes_is_resource_exhausted() {
    let origin = Origin::start().await;
    let mut zeros = wasm_module("bomb");
    zeros.resize(8 * 1024 * 1024, 0);
    let bomb = gzip(&zeros);
    assert!(
        bomb.len() < 65536,
        "the compressed body itself is under the cap ({} bytes)",
        bomb.len()
    );
    origin.serve("/bomb.wasm.gz", bomb);
    let daemon = Daemon::start(&["--max-module-bytes", "65536"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/bomb.wasm.gz"))).await;
    assert_code(&status, Code::ResourceExhausted);
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn tar_gz_bomb_over_max_module_bytes_is_resource_exhausted() {
    let origin = Origin::start().await;
    let mut zeros = wasm_module("tar-bomb");
    zeros.resize(8 * 1024 * 1024, 0);
    let bomb = tar_gz(&[("plugin.wasm", zeros.as_slice())]);
    assert!(
        bomb.len() < 65536,
        "the compressed body itself is under the cap ({} bytes)",
        bomb.len()
    );
    origin.serve("/bomb.tar.gz", bomb);
    let daemon = Daemon::start(&["--max-module-bytes", "65536"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/bomb.tar.gz"))).await;
    assert_code(&status, Code::ResourceExhausted);
}

#[tokio::test]
async fn redirect_within_origin_is_followed() {
    let origin = Origin::start().await;
    let module = wasm_module("redirected");
    origin.serve("/real.wasm", module.clone());
    origin.redirect("/old.wasm", 302, &origin.url("/real.wasm"));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/old.wasm"))).await;
    assert_eq!(bytes, module);
    assert_eq!(
        info.source_url,
        origin.url("/old.wasm"),
        "source_url is the requested URL"
    );
    assert_eq!(origin.hits("/real.wasm"), 1);
}

#[tokio::test]
async fn credentials_in_url_are_not_reported() {
    let origin = Origin::start().await;
    let module = wasm_module("with-credentials");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let url = format!("http://user:hunter2@{}/m.wasm", origin.addr());
    let (info, _) = fetch_ok(&mut client, req(&url)).await;
    assert!(
        !info.source_url.contains("hunter2"),
        "source_url leaks the password: {}",
        info.source_url
    );
    let listed = list(&mut client).await;
    assert!(
        listed.iter().flat_map(|m| &m.urls).all(|u| !u.contains("hunter2")),
        "list leaks the password: {listed:?}"
    );
    assert!(!daemon.log().contains("hunter2"), "the log leaks the password");
}

/// The cap is enforced while streaming, also when the origin sends no Content-Length (chunked encoding).
#[tokio::test]
async fn chunked_body_over_max_module_bytes_is_resource_exhausted() {
    let origin = Origin::start().await;
    origin.serve("/big.wasm", wasm_module_of_size("chunked-big", 512 * 1024));
    origin.throttle("/big.wasm", Duration::from_millis(1));
    let daemon = Daemon::start(&["--max-module-bytes", "65536"]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&origin.url("/big.wasm"))).await;
    assert_code(&status, Code::ResourceExhausted);
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

/// A chunked body under the cap is fetched whole.
#[tokio::test]
async fn chunked_body_is_fetched_whole() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("chunked", 300 * 1024);
    origin.serve("/m.wasm", module.clone());
    origin.throttle("/m.wasm", Duration::from_millis(1));
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn redirect_loop_fails_after_bounded_requests() {
    let origin = Origin::start().await;
    origin.redirect("/a.wasm", 302, &origin.url("/b.wasm"));
    origin.redirect("/b.wasm", 302, &origin.url("/a.wasm"));
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;

    fetch_err(&mut client, req(&origin.url("/a.wasm"))).await;
    assert!(
        origin.total_hits() <= 5 * 12,
        "{} requests for a redirect loop",
        origin.total_hits()
    );
}

/// Two URLs that serve the same module, fetched at the same time, both succeed (the second commit of a digest
/// that is already present counts as success).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_module_from_two_urls_at_once_both_succeed() {
    let origin = Origin::start().await;
    let module = wasm_module_of_size("twins", 256 * 1024);
    origin.serve("/a.wasm", module.clone());
    origin.serve("/b.wasm", module.clone());
    origin.delay("/a.wasm", Duration::from_millis(200));
    origin.delay("/b.wasm", Duration::from_millis(200));
    let daemon = Daemon::start(&[]).await;
    let client = daemon.client().await;

    let calls = ["/a.wasm", "/b.wasm"].map(|path| {
        let mut client = client.clone();
        let url = origin.url(path);
        tokio::spawn(async move { fetch(&mut client, req(&url)).await })
    });
    for result in futures_util::future::join_all(calls).await {
        let (_, bytes) = result.expect("task").expect("fetch");
        assert_eq!(bytes, module);
    }
    let mut client = daemon.client().await;
    let modules = list(&mut client).await;
    assert_eq!(modules.len(), 1, "{modules:?}");
    assert_eq!(modules[0].urls.len(), 2, "{modules:?}");
}
