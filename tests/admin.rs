//! The admin HTTP listener (`--admin-listen`): liveness, readiness through startup and shutdown, the listener
//! switched off, and cached modules by digest (`/v1/modules/sha256/<hex>`) with ETags and ranges.
//!
//! Each test runs its own daemon on a free loopback port for the admin listener.

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::registry::*;
use support::*;

/// An origin serving `module` at `/m.wasm`, and a daemon with an admin listener that has cached it.
async fn cached(module: &[u8]) -> (Origin, Daemon, SocketAddr, Client) {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module.to_vec());
    let (daemon, admin) = start_with_admin(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;
    (origin, daemon, admin, client)
}

fn module_path(module: &[u8]) -> String {
    format!("/v1/modules/sha256/{}", sha256_hex(module))
}

async fn request(admin: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(admin, method, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The inodes of the TCP sockets in LISTEN state on this machine's network namespace, by local port.
fn tcp_listeners() -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let port = u16::from_str_radix(cols[1].rsplit(':').next().unwrap(), 16).unwrap();
            out.push((port, cols[9].parse().unwrap()));
        }
    }
    out
}

/// The ports of the TCP listeners the process `pid` holds.
fn listening_ports_of(pid: u32) -> Vec<u16> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the daemon's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_string();
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    tcp_listeners()
        .into_iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(port, _)| port)
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The listener, liveness and readiness
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_listener_binds_the_given_address() {
    let (daemon, admin) = start_with_admin(&[]).await;

    assert_eq!(listening_ports_of(daemon.pid()), vec![admin.port()]);
}

/// `--admin-listen off`, with no gRPC `--listen` either: the daemon holds no TCP listener at all.
#[tokio::test]
async fn admin_listen_off_opens_no_tcp_listener() {
    let daemon = Daemon::start(&["--admin-listen", "off"]).await;

    assert_eq!(listening_ports_of(daemon.pid()), Vec::<u16>::new());
}

#[tokio::test]
async fn healthz_answers_ok() {
    let (_daemon, admin) = start_with_admin(&[]).await;

    let response = http_get(admin, "/healthz").await;

    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn readyz_answers_ok_while_serving() {
    let (_daemon, admin) = start_with_admin(&[]).await;

    let response = http_get(admin, "/readyz").await;

    assert_eq!(response.status, 200, "{}", response.text());
}

/// While the cache opens (here slowed down by thousands of stale temp files to clear first), `/readyz` is 503;
/// it turns 200 once the daemon serves, and stays so.
#[tokio::test]
async fn readyz_is_unavailable_until_the_cache_is_open() {
    let admin = free_local_addr();
    let seen: Arc<Mutex<Vec<u16>>> = Arc::default();
    let poller = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(response) = http_request(admin, "GET", "/readyz", &[]).await {
                    seen.lock().unwrap().push(response.status);
                    if response.status == 200 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let admin_arg = admin.to_string();

    let daemon = Daemon::start_prepared(&["--admin-listen", &admin_arg], |cache_dir| {
        let ingest = cache_dir.join("ingest");
        std::fs::create_dir(&ingest).expect("create ingest dir");
        for i in 0..10_000 {
            std::fs::write(ingest.join(format!("stale-{i}")), b"").expect("stale temp file");
        }
    })
    .await;
    tokio::time::timeout(Duration::from_secs(20), poller)
        .await
        .expect("readyz never answered 200")
        .expect("poller");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.last(), Some(&200), "statuses seen: {seen:?}");
    assert!(seen.contains(&503), "no 503 before ready; statuses seen: {seen:?}");
    assert!(
        seen[..seen.len() - 1].iter().all(|&s| s == 503),
        "only 503 before the first 200; statuses seen: {seen:?}"
    );
    assert_eq!(http_get(admin, "/readyz").await.status, 200, "ready stays ready");
    drop(daemon);
}

/// From SIGTERM on, while a stream still drains, `/readyz` says 503 (and the listener still answers).
#[tokio::test]
async fn readyz_is_unavailable_once_shutdown_begins() {
    let module = wasm_module_of_size("draining", 8 * 1024 * 1024);
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module.clone());
    let (mut daemon, admin) = start_with_admin(&["--shutdown-grace", "10s"]).await;
    let mut client = daemon.client().await;
    let mut stream = client
        .fetch(req(&origin.url("/m.wasm")))
        .await
        .expect("fetch")
        .into_inner();
    stream.message().await.expect("first message").expect("info");
    assert_eq!(http_get(admin, "/readyz").await.status, 200, "ready before the signal");

    daemon.signal(libc::SIGTERM);

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        match http_request(admin, "GET", "/readyz", &[]).await {
            Ok(response) if response.status == 503 => break,
            Ok(response) => seen.push(response.status.to_string()),
            Err(e) => seen.push(e),
        }
        assert!(Instant::now() < deadline, "no 503 after SIGTERM; seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
    daemon.wait_exit().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Modules by digest
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn cached_module_is_served_by_digest() {
    let module = wasm_module_of_size("by-digest", 2 * 1024 * 1024 + 100);
    let (_origin, _daemon, admin, _client) = cached(&module).await;

    let response = http_get(admin, &module_path(&module)).await;

    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.body == module, "body differs from the module");
    assert_eq!(
        response.header("etag"),
        Some(format!("\"{}\"", sha256_hex(&module)).as_str())
    );
    assert_eq!(
        response.header("content-length"),
        Some(module.len().to_string().as_str())
    );
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert_eq!(response.header("content-type"), Some("application/wasm"));
}

#[tokio::test]
async fn head_gets_the_headers_without_a_body() {
    let module = wasm_module_of_size("head", 70_000);
    let (_origin, _daemon, admin, _client) = cached(&module).await;

    let response = request(admin, "HEAD", &module_path(&module), &[]).await;

    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    assert_eq!(
        response.header("etag"),
        Some(format!("\"{}\"", sha256_hex(&module)).as_str())
    );
    assert_eq!(response.header("content-length"), Some("70000"));
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert_eq!(response.header("content-type"), Some("application/wasm"));
}

#[tokio::test]
async fn byte_range_gets_partial_content() {
    let module = wasm_module_of_size("range", 100_000);
    let (_origin, _daemon, admin, _client) = cached(&module).await;

    let response = request(admin, "GET", &module_path(&module), &[("range", "bytes=1000-1999")]).await;

    assert_eq!(response.status, 206, "{}", response.text());
    assert_eq!(response.header("content-range"), Some("bytes 1000-1999/100000"));
    assert_eq!(response.header("content-length"), Some("1000"));
    assert!(response.body == module[1000..2000], "body is not bytes 1000-1999");
}

#[tokio::test]
async fn open_ended_range_gets_the_rest_of_the_module() {
    let module = wasm_module_of_size("open-range", 100_000);
    let (_origin, _daemon, admin, _client) = cached(&module).await;

    let response = request(admin, "GET", &module_path(&module), &[("range", "bytes=99000-")]).await;

    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), Some("bytes 99000-99999/100000"));
    assert!(response.body == module[99_000..], "body is not the last 1000 bytes");
}

#[tokio::test]
async fn suffix_range_gets_the_last_bytes() {
    let module = wasm_module_of_size("suffix-range", 100_000);
    let (_origin, _daemon, admin, _client) = cached(&module).await;

    let response = request(admin, "GET", &module_path(&module), &[("range", "bytes=-10")]).await;

    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), Some("bytes 99990-99999/100000"));
    assert!(response.body == module[99_990..], "body is not the last 10 bytes");
}

#[tokio::test]
async fn range_past_the_end_is_unsatisfiable() {
    let module = wasm_module_of_size("bad-range", 100_000);
    let (_origin, _daemon, admin, _client) = cached(&module).await;

    let response = request(admin, "GET", &module_path(&module), &[("range", "bytes=100000-100010")]).await;

    assert_eq!(response.status, 416, "{}", response.text());
}

#[tokio::test]
async fn if_none_match_with_the_etag_is_not_modified() {
    let module = wasm_module("etag");
    let (_origin, _daemon, admin, _client) = cached(&module).await;
    let etag = format!("\"{}\"", sha256_hex(&module));

    let response = request(admin, "GET", &module_path(&module), &[("if-none-match", &etag)]).await;

    assert_eq!(response.status, 304);
    assert!(response.body.is_empty());
}

/// If-None-Match compares weakly (RFC 9110, 13.1.2): a cache that stored the tag as weak still gets 304.
#[tokio::test]
async fn if_none_match_with_the_weak_etag_is_not_modified() {
    let module = wasm_module("weak-etag");
    let (_origin, _daemon, admin, _client) = cached(&module).await;
    let list = format!("\"{}\", W/\"{}\"", "0".repeat(64), sha256_hex(&module));

    let response = request(admin, "GET", &module_path(&module), &[("if-none-match", &list)]).await;

    assert_eq!(response.status, 304);
}

#[tokio::test]
async fn if_none_match_with_another_etag_gets_the_module() {
    let module = wasm_module("other-etag");
    let (_origin, _daemon, admin, _client) = cached(&module).await;
    let other = format!("\"{}\"", "0".repeat(64));

    let response = request(admin, "GET", &module_path(&module), &[("if-none-match", &other)]).await;

    assert_eq!(response.status, 200);
    assert!(response.body == module);
}

#[tokio::test]
async fn digest_never_cached_is_not_found() {
    let (_daemon, admin) = start_with_admin(&[]).await;

    let response = http_get(admin, &module_path(b"never cached")).await;

    assert_eq!(response.status, 404, "{}", response.text());
}

/// A module removed from the cache is 404, and asking for it does not fetch it again from the URL it came from.
#[tokio::test]
async fn removed_module_is_not_found_and_not_fetched() {
    let module = wasm_module("removed");
    let (origin, _daemon, admin, mut client) = cached(&module).await;
    client
        .remove(RemoveRequest {
            target: Some(Target::Sha256(sha256_hex(&module))),
        })
        .await
        .expect("remove");

    let response = http_get(admin, &module_path(&module)).await;

    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(origin.hits("/m.wasm"), 1, "only the first fetch reached upstream");
    assert!(list(&mut client).await.is_empty(), "nothing was cached again");
}

/// The bytes are verified before they are sent: a blob altered on disk is never served, and is quarantined.
#[tokio::test]
async fn altered_blob_is_not_served() {
    let module = wasm_module_of_size("altered", 50_000);
    let (_origin, daemon, admin, mut client) = cached(&module).await;
    let path = daemon.blob_path(&sha256_hex(&module));
    alter_blob(&path);
    let altered = std::fs::read(&path).expect("read blob");

    let response = http_get(admin, &module_path(&module)).await;

    assert_eq!(response.status, 404, "{}", response.text());
    assert!(response.body != altered, "the altered bytes were served");
    assert!(list(&mut client).await.is_empty(), "the altered blob was quarantined");
}

#[tokio::test]
async fn malformed_digest_is_bad_request() {
    let (_daemon, admin) = start_with_admin(&[]).await;
    let hex = sha256_hex(b"x");

    for bad in [
        "xyz".to_string(),
        hex[..63].to_string(),
        format!("{hex}0"),
        format!("sha256:{hex}"),
        "g".repeat(64),
    ] {
        let response = http_get(admin, &format!("/v1/modules/sha256/{bad}")).await;
        assert_eq!(response.status, 400, "{bad:?}: {}", response.text());
    }
}

/// A module pulled with registry credentials is served only over gRPC, to proven credentials: over plain HTTP it
/// does not exist.
#[tokio::test]
async fn module_pulled_with_credentials_is_not_found() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let image = registry.push_module("admin/private", "v1").await;
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let (daemon, admin) = start_with_admin(&["--ca-file", &ca, "--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;
    fetch_ok(
        &mut client,
        FetchRequest {
            pull_secret: docker_config_json(&proxy.host(), USER_A.0, USER_A.1),
            ..req(&proxy.oci("admin/private:v1"))
        },
    )
    .await;

    let response = http_get(admin, &format!("/v1/modules/sha256/{}", image.module_digest)).await;

    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.body.windows(4).all(|w| w != b"\0asm"),
        "no module bytes in the body"
    );
}

#[tokio::test]
async fn module_download_counts_served_bytes() {
    let module = wasm_module_of_size("served-http", 300_000);
    let (_origin, _daemon, admin, _client) = cached(&module).await;
    let before = scrape(admin).await.value("wasmcache_served_bytes_total", &[]);

    let response = http_get(admin, &module_path(&module)).await;

    assert_eq!(response.status, 200);
    let after = scrape(admin).await.value("wasmcache_served_bytes_total", &[]);
    assert_eq!(after - before, module.len() as f64);
}

#[tokio::test]
async fn unknown_path_is_not_found() {
    let (_daemon, admin) = start_with_admin(&[]).await;

    assert_eq!(http_get(admin, "/v1/nothing-here").await.status, 404);
}
