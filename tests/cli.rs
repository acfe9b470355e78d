//! The client commands of the binary: fetch, ls, rm, and WASMCACHE_SOCKET.

use crate::support;

use std::process::Output;

use support::*;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {}; stdout: {}; stderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Exits non-zero with exactly one non-empty line on stderr.
#[track_caller]
fn assert_failure_with_one_line(output: &Output) {
    assert!(!output.status.success(), "expected failure; stdout: {}", stdout(output));
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr must be one line, got: {err:?}");
}

async fn setup() -> (Origin, Daemon, String, Vec<u8>) {
    let origin = Origin::start().await;
    let module = wasm_module("cli");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let url = origin.url("/m.wasm");
    (origin, daemon, url, module)
}

fn sock(daemon: &Daemon) -> String {
    daemon.socket().to_str().unwrap().to_string()
}

#[tokio::test]
async fn fetch_with_output_file_writes_module_and_exits_zero() {
    let (origin, daemon, url, module) = setup().await;
    let out = daemon.dir().join("out.wasm");

    let output = run_cli(
        &["fetch", "--socket", &sock(&daemon), "-o", out.to_str().unwrap(), &url],
        &[],
    )
    .await;

    assert_success(&output);
    assert_eq!(std::fs::read(&out).expect("output file"), module);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

/// On the daemon's host, with its cache directory readable, `-o` copies the cached file: nothing is streamed.
#[tokio::test]
async fn fetch_with_output_copies_the_cached_file_when_it_is_visible() {
    let origin = Origin::start().await;
    let module = wasm_module("cli-copy");
    origin.serve("/m.wasm", module.clone());
    let (daemon, admin) = start_with_admin(&[]).await;
    let out = daemon.dir().join("out.wasm");

    let output = run_cli(
        &[
            "fetch",
            "--socket",
            &sock(&daemon),
            "-o",
            out.to_str().unwrap(),
            &origin.url("/m.wasm"),
        ],
        &[],
    )
    .await;

    assert_success(&output);
    assert_eq!(std::fs::read(&out).expect("output file"), module);
    assert_eq!(scrape(admin).await.value("wasmcache_served_bytes_total", &[]), 0.0);
}

/// Where the cache directory is not visible (here: hidden under an empty tmpfs in the CLI's own mount
/// namespace, as in a container that shares only the socket), `-o` streams the module over the socket: the
/// bytes Resolve named, without asking upstream a second time even under `--pull-policy always`, and the
/// info printed is Resolve's.
#[tokio::test]
async fn fetch_with_output_streams_when_the_cache_is_not_visible() {
    let origin = Origin::start().await;
    let module = wasm_module("cli-stream");
    origin.serve("/m.wasm", module.clone());
    let (daemon, admin) = start_with_admin(&[]).await;
    let out = daemon.dir().join("out.wasm");
    let script = format!(
        "mount -t tmpfs tmpfs '{}' && exec '{}' fetch --socket '{}' --pull-policy always --json -o '{}' '{}'",
        daemon.cache_dir().display(),
        env!("CARGO_BIN_EXE_wasmcache"),
        sock(&daemon),
        out.display(),
        origin.url("/m.wasm")
    );

    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .expect("run unshare (util-linux)")
    })
    .await
    .expect("cli thread");

    assert_success(&output);
    assert_eq!(std::fs::read(&out).expect("output file"), module);
    assert_eq!(
        scrape(admin).await.value("wasmcache_served_bytes_total", &[]),
        module.len() as f64
    );
    let info: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    assert_eq!(info["outcome"], "FETCHED");
    assert_eq!(origin.hits("/m.wasm"), 1, "upstream was asked again for the stream");
}

#[tokio::test]
async fn fetch_prints_module_digest() {
    let (_origin, daemon, url, module) = setup().await;

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), &url], &[]).await;

    assert_success(&output);
    assert!(
        stdout(&output).contains(&sha256_hex(&module)),
        "stdout: {}",
        stdout(&output)
    );
}

#[tokio::test]
async fn fetch_json_prints_module_info() {
    let (_origin, daemon, url, module) = setup().await;

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), "--json", &url], &[]).await;

    assert_success(&output);
    let info: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    assert_eq!(info["sha256"], sha256_hex(&module));
    assert_eq!(info["size"], module.len() as u64);
    assert_eq!(info["source_url"], url.as_str());
    assert_eq!(info["manifest_digest"], "");
    assert_eq!(info["outcome"], "FETCHED");
    let path = info["path"].as_str().expect("path is a string");
    assert_eq!(std::fs::read(path).expect("blob at path"), module);
    assert!(!info["fetched_at"].is_null(), "fetched_at present: {info}");
}

#[tokio::test]
async fn fetch_json_reports_hit_the_second_time() {
    let (origin, daemon, url, _) = setup().await;
    run_cli(&["fetch", "--socket", &sock(&daemon), "--json", &url], &[]).await;

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), "--json", &url], &[]).await;

    assert_success(&output);
    let info: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    assert_eq!(info["outcome"], "HIT");
    assert_eq!(origin.hits("/m.wasm"), 1);
}

#[tokio::test]
async fn fetch_with_pull_policy_always_and_resource_refreshes() {
    let (origin, daemon, url, _) = setup().await;
    let args = |version: &'static str| {
        vec![
            "fetch".to_string(),
            "--socket".into(),
            sock(&daemon),
            "--json".into(),
            "--pull-policy".into(),
            "always".into(),
            "--resource".into(),
            "ns/plugin".into(),
            "--resource-version".into(),
            version.into(),
            url.clone(),
        ]
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_cli(&args, &[]).await;
        assert_success(&output);
        let info: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("JSON");
        info["outcome"].as_str().unwrap().to_string()
    };

    assert_eq!(run(args("1")).await, "FETCHED");
    assert_eq!(run(args("1")).await, "HIT");
    assert_eq!(run(args("2")).await, "REFRESHED");
    assert_eq!(origin.hits("/m.wasm"), 2);
}

#[tokio::test]
async fn fetch_with_wrong_sha256_fails_with_one_line() {
    let (_origin, daemon, url, _) = setup().await;
    let wrong = sha256_hex(b"wrong");

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), "--sha256", &wrong, &url], &[]).await;

    assert_failure_with_one_line(&output);
    assert!(
        stderr(&output).contains(&wrong),
        "stderr names the expected digest: {}",
        stderr(&output)
    );
}

#[tokio::test]
async fn fetch_of_bad_url_exits_nonzero_with_one_stderr_line() {
    let (_origin, daemon, _, _) = setup().await;

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), "ftp://127.0.0.1/m.wasm"], &[]).await;

    assert_failure_with_one_line(&output);
}

#[tokio::test]
async fn fetch_of_missing_module_exits_nonzero_with_one_stderr_line() {
    let (origin, daemon, _, _) = setup().await;

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), &origin.url("/absent.wasm")], &[]).await;

    assert_failure_with_one_line(&output);
}

#[tokio::test]
async fn fetch_without_daemon_exits_nonzero_with_one_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");

    let output = run_cli(
        &[
            "fetch",
            "--socket",
            socket.to_str().unwrap(),
            "http://127.0.0.1:9/m.wasm",
        ],
        &[],
    )
    .await;

    assert_failure_with_one_line(&output);
}

#[tokio::test]
async fn fetch_uses_socket_from_environment() {
    let (_origin, daemon, url, module) = setup().await;
    let out = daemon.dir().join("env.wasm");

    let output = run_cli(
        &["fetch", "-o", out.to_str().unwrap(), &url],
        &[("WASMCACHE_SOCKET", &sock(&daemon))],
    )
    .await;

    assert_success(&output);
    assert_eq!(std::fs::read(&out).expect("output file"), module);
}

#[tokio::test]
async fn ls_lists_url_and_digest() {
    let (_origin, daemon, url, module) = setup().await;
    fetch_ok(&mut daemon.client().await, req(&url)).await;

    let output = run_cli(&["ls", "--socket", &sock(&daemon)], &[]).await;

    assert_success(&output);
    let text = stdout(&output);
    assert!(text.contains(&sha256_hex(&module)), "ls shows the digest: {text}");
    assert!(text.contains(&url), "ls shows the URL: {text}");
}

#[tokio::test]
async fn ls_json_lists_url_and_digest() {
    let (_origin, daemon, url, module) = setup().await;
    fetch_ok(&mut daemon.client().await, req(&url)).await;

    let output = run_cli(&["ls", "--socket", &sock(&daemon), "--json"], &[]).await;

    assert_success(&output);
    let text = stdout(&output);
    // One JSON document, or one JSON object per line.
    let values: Vec<serde_json::Value> = match serde_json::from_str(text.trim()) {
        Ok(value) => vec![value],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect(),
    };
    let all = serde_json::Value::Array(values).to_string();
    assert!(all.contains(&sha256_hex(&module)), "ls --json shows the digest: {text}");
    assert!(all.contains(&url), "ls --json shows the URL: {text}");
}

#[tokio::test]
async fn ls_uses_socket_from_environment() {
    let (_origin, daemon, url, module) = setup().await;
    fetch_ok(&mut daemon.client().await, req(&url)).await;

    let output = run_cli(&["ls"], &[("WASMCACHE_SOCKET", &sock(&daemon))]).await;

    assert_success(&output);
    assert!(stdout(&output).contains(&sha256_hex(&module)));
}

#[tokio::test]
async fn rm_by_url_removes_module() {
    let (_origin, daemon, url, _) = setup().await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&url)).await;

    let output = run_cli(&["rm", "--socket", &sock(&daemon), &url], &[]).await;

    assert_success(&output);
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test]
async fn rm_by_digest_removes_module() {
    let (_origin, daemon, url, module) = setup().await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&url)).await;

    let output = run_cli(&["rm", "--socket", &sock(&daemon), &sha256_hex(&module)], &[]).await;

    assert_success(&output);
    assert!(list(&mut client).await.is_empty());
    assert!(!daemon.blob_path(&sha256_hex(&module)).exists());
}

#[tokio::test]
async fn rm_by_prefixed_digest_removes_module() {
    let (_origin, daemon, url, module) = setup().await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&url)).await;

    let digest = format!("sha256:{}", sha256_hex(&module));
    let output = run_cli(&["rm", "--socket", &sock(&daemon), &digest], &[]).await;

    assert_success(&output);
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test]
async fn unknown_subcommand_fails() {
    let output = run_cli(&["frobnicate"], &[]).await;
    assert!(!output.status.success());
}

/// A socket path nothing listens on: for what must be decided before any daemon is contacted.
fn no_daemon() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock").to_str().unwrap().to_string();
    (dir, socket)
}

#[tokio::test]
async fn fetch_with_resource_but_no_resource_version_is_a_usage_error() {
    let (_dir, socket) = no_daemon();

    let output = run_cli(
        &[
            "fetch",
            "--socket",
            &socket,
            "--resource",
            "ns/plugin",
            "http://127.0.0.1:9/m.wasm",
        ],
        &[],
    )
    .await;

    assert_eq!(output.status.code(), Some(64), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("--resource <NAME>") && err.contains("--resource-version <V>"),
        "the message names both flags: {err}"
    );
}

/// Held before `--resource` required `--resource-version` too: the other half of the pair.
#[tokio::test]
async fn fetch_with_resource_version_but_no_resource_is_a_usage_error() {
    let (_dir, socket) = no_daemon();

    let output = run_cli(
        &[
            "fetch",
            "--socket",
            &socket,
            "--resource-version",
            "7",
            "http://127.0.0.1:9/m.wasm",
        ],
        &[],
    )
    .await;

    assert_eq!(output.status.code(), Some(64), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("--resource <NAME>") && err.contains("--resource-version <V>"),
        "the message names both flags: {err}"
    );
}

/// Without `--pull-policy` the request's policy is unspecified, which the daemon reads as `Always` for an OCI
/// `latest` tag (or no tag) and `IfNotPresent` otherwise (src/policy.rs): the help says so.
#[tokio::test]
async fn fetch_help_states_the_default_pull_policy() {
    let output = run_cli(&["fetch", "--help"], &[]).await;

    assert_success(&output);
    let help = stdout(&output);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("--pull-policy"))
        .unwrap_or_else(|| panic!("no --pull-policy line in:\n{help}"));
    assert!(
        line.contains("always for an OCI reference tagged latest or untagged, if-not-present otherwise"),
        "the default is stated as the daemon applies it: {line}"
    );
}

/// Exited 64 (a wrong command line), saying what a digest needs rather than taking `5f3c` for a URL.
#[track_caller]
fn assert_short_digest_refused(output: &Output) {
    assert_eq!(output.status.code(), Some(64), "stderr: {}", stderr(output));
    let err = stderr(output);
    assert!(
        err.contains("5f3c") && err.contains("64 hex characters, got 4"),
        "the message names the argument and what a digest needs: {err}"
    );
}

#[tokio::test]
async fn rm_of_a_short_digest_says_a_digest_needs_64_hex_characters() {
    let (_origin, daemon, url, _) = setup().await;
    fetch_ok(&mut daemon.client().await, req(&url)).await;

    let output = run_cli(&["rm", "--socket", &sock(&daemon), "5f3c"], &[]).await;

    assert_short_digest_refused(&output);
}

#[tokio::test]
async fn pin_of_a_short_digest_says_a_digest_needs_64_hex_characters() {
    let (_dir, socket) = no_daemon();

    let output = run_cli(&["pin", "--socket", &socket, "sha256:5f3c"], &[]).await;

    assert_short_digest_refused(&output);
}

#[tokio::test]
async fn unpin_of_a_short_digest_says_a_digest_needs_64_hex_characters() {
    let (_dir, socket) = no_daemon();

    let output = run_cli(&["unpin", "--socket", &socket, "5f3c"], &[]).await;

    assert_short_digest_refused(&output);
}

#[tokio::test]
async fn ls_shows_which_modules_are_pinned() {
    let (_origin, daemon, url, module) = setup().await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&url)).await;
    let pin = wasmcache::proto::PinRequest {
        target: Some(wasmcache::proto::pin_request::Target::Url(url.clone())),
    };
    client.pin(pin).await.expect("pin");

    let text = run_cli(&["ls", "--socket", &sock(&daemon)], &[]).await;
    let json = run_cli(&["ls", "--socket", &sock(&daemon), "--json"], &[]).await;

    assert_success(&text);
    let lines = stdout(&text);
    assert!(lines.lines().next().unwrap_or_default().contains("PINNED"), "{lines}");
    let row = lines
        .lines()
        .find(|l| l.contains(&sha256_hex(&module)))
        .expect("the module's row");
    assert!(row.split_whitespace().any(|w| w == "yes"), "{row}");
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("ls --json");
    assert_eq!(rows[0]["pinned"], serde_json::Value::Bool(true), "{rows}");
}

#[tokio::test]
async fn fetch_with_output_dash_writes_only_the_module_to_stdout() {
    let (_origin, daemon, url, module) = setup().await;

    let output = run_cli(&["fetch", "--socket", &sock(&daemon), "-o", "-", &url], &[]).await;

    assert_success(&output);
    assert!(output.stdout == module, "stdout is exactly the module's bytes");
    assert!(!std::path::Path::new("-").exists(), "no file named - was written");
}

/// A failing `serve` reports its error once on stderr, not as a log line and again as a plain line.
#[tokio::test]
async fn serve_failure_is_reported_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("s.sock");
    let cache = dir.path().join("cache");

    let output = run_cli(
        &[
            "serve",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--admin-listen",
            &addr,
        ],
        &[],
    )
    .await;

    assert!(!output.status.success());
    let err = stderr(&output);
    assert_eq!(err.matches(&addr).count(), 1, "the failure once: {err}");
}
