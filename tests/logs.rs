//! Logs with `--log-format json`: every stderr line is a JSON object; every request ends with exactly one event
//! (`module served` or `request failed`) with the documented fields; credentials never appear, neither those in
//! URLs nor pull secrets.

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::registry::*;
use support::*;
use tonic::Code;

const JSON: &[&str] = &[
    "--log-format",
    "json",
    "--retry-backoff",
    "10ms",
    "--fetch-attempts",
    "2",
];

/// An origin serving `module` at `/m.wasm` and a daemon logging JSON.
async fn setup(module: &[u8]) -> (Origin, Daemon, Client) {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module.to_vec());
    let daemon = Daemon::start(JSON).await;
    let client = daemon.client().await;
    (origin, daemon, client)
}

/// The events with `message` whose `url` field is `url`.
fn request_events<'a>(log: &'a [Value], message: &str, url: &str) -> Vec<&'a Value> {
    events(log, message)
        .into_iter()
        .filter(|e| event_field(e, "url").and_then(Value::as_str) == Some(url))
        .collect()
}

#[track_caller]
fn field<'a>(event: &'a Value, name: &str) -> &'a Value {
    event_field(event, name).unwrap_or_else(|| panic!("event has no field {name:?}: {event}"))
}

/// A string unlikely to appear anywhere by chance.
fn unique_secret(tag: &str) -> String {
    format!("{tag}-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[track_caller]
fn assert_log_lacks(daemon: &Daemon, needles: &[String]) {
    let log = daemon.log();
    assert!(!log.trim().is_empty(), "the daemon logged nothing");
    for needle in needles {
        assert!(
            !log.contains(needle.as_str()),
            "the daemon log contains secret material {needle:?}:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The format
// ---------------------------------------------------------------------------------------------------------------

/// Startup, a miss, a hit, a failure and shutdown: every line on stderr is a JSON object.
#[tokio::test]
async fn json_format_makes_every_line_a_json_object() {
    let (origin, mut daemon, mut client) = setup(&wasm_module("json-lines")).await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req(&url)).await;
    fetch_ok(&mut client, req(&url)).await;
    fetch_err(&mut client, req(&origin.url("/missing.wasm"))).await;

    daemon.stop().await;

    let log = json_log(&daemon);
    assert!(
        log.len() >= 4,
        "expected startup, request and shutdown events, got {log:?}"
    );
}

/// A failure after logging is set up (the admin port is taken) is reported as a JSON event too, not as text.
#[tokio::test]
async fn startup_failure_is_a_json_event() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(env!("CARGO_BIN_EXE_wasmcache"))
        .args(["serve", "--log-format", "json", "--admin-listen", &port, "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--socket")
        .arg(dir.path().join("wasmcache.sock"))
        .env_remove("RUST_LOG")
        .env_remove("WASMCACHE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmcache");
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the daemon did not exit on a taken admin port")
    .expect("wait thread")
    .expect("wait");

    assert!(!output.status.success(), "exit status {}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.trim().is_empty(), "nothing on stderr");
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}"));
        assert!(value.is_object(), "not a JSON object: {line:?}");
    }
    drop(taken);
}

/// A configuration that fails validation (not a command line that fails to parse) with `--log-format json` given:
/// the one line that reports it is JSON too.
#[tokio::test]
async fn invalid_configuration_is_reported_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_wasmcache"))
                .args([
                    "serve",
                    "--log-format",
                    "json",
                    "--admin-listen",
                    "off",
                    "--purge-interval",
                    "0s",
                ])
                .arg("--cache-dir")
                .arg(dir.join("cache"))
                .arg("--socket")
                .arg(dir.join("wasmcache.sock"))
                .env_remove("RUST_LOG")
                .env_remove("WASMCACHE_SOCKET")
                .stdin(Stdio::null())
                .output()
                .expect("run wasmcache")
        }
    })
    .await
    .expect("wait thread");

    assert_eq!(output.status.code(), Some(78), "a bad configuration exits 78");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.trim().is_empty(), "nothing on stderr");
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}"));
        assert!(value.is_object(), "not a JSON object: {line:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// One event per request
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn served_request_logs_one_event_with_its_fields() {
    let module = wasm_module_of_size("served-event", 5000);
    let (origin, daemon, mut client) = setup(&module).await;
    let url = origin.url("/m.wasm");

    fetch_ok(
        &mut client,
        req_policy(&url, PullPolicy::IfNotPresent, "istio-system/filter", "42"),
    )
    .await;

    let log = json_log(&daemon);
    let served = request_events(&log, "module served", &url);
    assert_eq!(served.len(), 1, "one `module served` event for the request: {served:?}");
    let event = served[0];
    assert_eq!(field(event, "sha256"), &Value::from(sha256_hex(&module)));
    assert_eq!(field(event, "bytes"), &Value::from(5000));
    assert!(field(event, "duration_ms").is_u64(), "duration_ms is a number: {event}");
    assert!(
        field(event, "outcome")
            .as_str()
            .is_some_and(|o| o.eq_ignore_ascii_case("fetched")),
        "outcome: {event}"
    );
    assert_eq!(field(event, "resource"), &Value::from("istio-system/filter"));
    assert_eq!(field(event, "resource_version"), &Value::from("42"));
    assert!(
        request_events(&log, "request failed", &url).is_empty(),
        "no failure event: {log:?}"
    );
}

/// A miss, a hit and a Resolve: three requests, three events, each with its outcome.
#[tokio::test]
async fn every_request_logs_exactly_one_event() {
    let (origin, daemon, mut client) = setup(&wasm_module("three-requests")).await;
    let url = origin.url("/m.wasm");

    fetch_ok(&mut client, req(&url)).await;
    fetch_ok(&mut client, req(&url)).await;
    client.resolve(req(&url)).await.expect("resolve");

    let log = json_log(&daemon);
    let outcomes: Vec<String> = request_events(&log, "module served", &url)
        .iter()
        .map(|e| field(e, "outcome").as_str().unwrap_or_default().to_ascii_lowercase())
        .collect();
    assert_eq!(outcomes, ["fetched", "hit", "hit"]);
}

#[tokio::test]
async fn failed_request_logs_one_event_with_its_cause() {
    let (origin, daemon, mut client) = setup(&wasm_module("failed-event")).await;
    let url = origin.url("/m.wasm");
    let wrong = "ab".repeat(32);

    let status = fetch_err(
        &mut client,
        FetchRequest {
            sha256: wrong.clone(),
            ..req_policy(&url, PullPolicy::IfNotPresent, "ns/failing", "3")
        },
    )
    .await;

    assert_code(&status, Code::DataLoss);
    let log = json_log(&daemon);
    let failed = request_events(&log, "request failed", &url);
    assert_eq!(
        failed.len(),
        1,
        "one `request failed` event for the request: {failed:?}"
    );
    let event = failed[0];
    assert_eq!(field(event, "reason"), &Value::from("checksum_mismatch"));
    assert!(
        field(event, "code").as_str().is_some_and(|c| c.contains("DataLoss")),
        "code: {event}"
    );
    assert!(
        field(event, "cause").as_str().is_some_and(|c| c.contains(&wrong)),
        "cause names the digest: {event}"
    );
    assert!(field(event, "duration_ms").is_u64(), "duration_ms is a number: {event}");
    assert_eq!(field(event, "resource"), &Value::from("ns/failing"));
    assert_eq!(field(event, "resource_version"), &Value::from("3"));
    assert!(
        request_events(&log, "module served", &url).is_empty(),
        "no served event: {log:?}"
    );
}

/// The README: every request ends with one event with the URL, `sha256`, `manifest_digest`, `outcome`, `bytes`,
/// `duration_ms`, `resource` and `resource_version`, and "failures add" `code`, `reason` and `cause`.
#[tokio::test]
async fn failed_request_event_has_every_request_field() {
    let (origin, daemon, mut client) = setup(&wasm_module("failed-fields")).await;
    let url = origin.url("/m.wasm");

    fetch_err(&mut client, req_sha(&url, &"cd".repeat(32))).await;

    let log = json_log(&daemon);
    let failed = request_events(&log, "request failed", &url);
    assert_eq!(failed.len(), 1, "{failed:?}");
    for name in [
        "url",
        "sha256",
        "manifest_digest",
        "outcome",
        "bytes",
        "duration_ms",
        "resource",
        "resource_version",
    ] {
        assert!(event_field(failed[0], name).is_some(), "no {name:?} in {}", failed[0]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Credentials stay out
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn served_event_names_the_url_without_credentials() {
    let module = wasm_module("userinfo-served");
    let (origin, daemon, mut client) = setup(&module).await;
    let password = unique_secret("pw");
    let with_credentials = origin
        .url("/m.wasm")
        .replacen("://", &format!("://user:{password}@"), 1);

    fetch_ok(&mut client, req(&with_credentials)).await;

    let log = json_log(&daemon);
    let served = request_events(&log, "module served", &origin.url("/m.wasm"));
    assert_eq!(served.len(), 1, "one event, under the URL without credentials: {log:?}");
}

#[tokio::test]
async fn url_credentials_never_appear_in_the_log() {
    let (origin, daemon, mut client) = setup(&wasm_module("userinfo")).await;
    let user = unique_secret("user");
    let password = unique_secret("pw");
    let with_credentials = |path: &str| origin.url(path).replacen("://", &format!("://{user}:{password}@"), 1);

    fetch_ok(&mut client, req(&with_credentials("/m.wasm"))).await;
    fetch_err(&mut client, req(&with_credentials("/missing.wasm"))).await;
    fetch_err(&mut client, req_sha(&with_credentials("/m.wasm"), &"ef".repeat(32))).await;
    // Nothing listens there: the transport error must not carry the URL as given either.
    let refused = format!("http://{user}:{password}@{}/m.wasm", free_local_addr());
    fetch_err(&mut client, req(&refused)).await;

    assert_log_lacks(
        &daemon,
        &[
            password.clone(),
            base64(format!("{user}:{password}").as_bytes()),
            format!("{user}:{password}"),
        ],
    );
}

/// A pull secret whose password is unique to this test, sent to the registry with htpasswd auth (which refuses it):
/// neither the password, nor the `auth` value, nor the secret itself is ever logged.
#[tokio::test]
async fn pull_secret_never_appears_in_the_log() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    registry.push_module("logs/secret", "v1").await;
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let mut args = vec!["--ca-file", ca.as_str()];
    args.extend_from_slice(JSON);
    let daemon = Daemon::start(&args).await;
    let mut client = daemon.client().await;
    let password = unique_secret("pw");
    let secret = docker_config_json(&proxy.host(), USER_A.0, &password);

    let status = fetch_err(
        &mut client,
        FetchRequest {
            pull_secret: secret.clone(),
            ..req(&proxy.oci("logs/secret:v1"))
        },
    )
    .await;

    assert_code(&status, Code::Unauthenticated);
    let deadline = Instant::now() + Duration::from_secs(5);
    while events(&json_log(&daemon), "request failed").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no `request failed` event:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_log_lacks(
        &daemon,
        &[
            password.clone(),
            base64(format!("{}:{password}", USER_A.0).as_bytes()),
            String::from_utf8(secret.clone()).unwrap(),
            base64(&secret),
        ],
    );
}
