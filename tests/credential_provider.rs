//! Kubelet credential providers (`--image-credential-provider-config`) against the HTTPS registry with htpasswd:
//! which plugins run, the order of credentials, caching by key type and duration, plugins that hang, fail, print
//! garbage or too much, and provider credentials in the access check.
//!
//! The plugins are shell scripts that each test writes into a bin dir of its own. Every script first appends the
//! request it read on stdin, as one line, to the file named by its `RUNS_FILE` variable (set through the config's
//! `env`), so a test counts runs and reads requests there. Each test has its own registry proxy, so its own
//! registry host as the plugins see it.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::registry::*;
use support::*;
use tonic::Code;

const V1: &str = "credentialprovider.kubelet.k8s.io/v1";
const WRONG_PASSWORD: &str = "wrong-pw-provider-81c2";
/// In every plugin's environment (through the config's `env`): it must never reach the log.
const ENV_SECRET: &str = "env-secret-4471fa";
/// What misbehaving plugins print on stderr or stdout: it must never reach an error or the log.
const OUTPUT_SECRET: &str = "plugin-output-secret-9d03e2";

/// A provider as the config file lists it.
struct ProviderDef {
    name: String,
    match_images: Vec<String>,
    default_cache_duration: String,
    body: String,
}

/// A bin dir with plugin scripts and the `CredentialProviderConfig` that names them.
struct Providers {
    dir: tempfile::TempDir,
    defs: Vec<ProviderDef>,
}

impl Providers {
    fn new() -> Providers {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        Providers { dir, defs: Vec::new() }
    }

    /// Adds the plugin `name`, matching `match_images`, whose script runs `body` after logging its request.
    fn add(mut self, name: &str, match_images: &[&str], body: &str) -> Providers {
        self.defs.push(ProviderDef {
            name: name.into(),
            match_images: match_images.iter().map(|m| m.to_string()).collect(),
            default_cache_duration: "1m".into(),
            body: body.into(),
        });
        self
    }

    fn default_cache_duration(mut self, duration: &str) -> Providers {
        self.defs.last_mut().expect("a provider").default_cache_duration = duration.into();
        self
    }

    fn runs_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.runs"))
    }

    /// Writes the scripts and the config file; returns the daemon flags that use them, with `timeout`.
    fn flags(&self, timeout: &str) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = self.dir.path().join("bin");
        let mut yaml =
            String::from("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n");
        for def in &self.defs {
            let script = bin.join(&def.name);
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\ncat >> \"$RUNS_FILE\"\necho >> \"$RUNS_FILE\"\n{}\n",
                    def.body
                ),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            let patterns: Vec<String> = def.match_images.iter().map(|m| format!("{m:?}")).collect();
            yaml.push_str(&format!(
                "  - name: {}\n    matchImages: [{}]\n    defaultCacheDuration: {:?}\n    apiVersion: {V1}\n    \
                 args: [\"--mode\", \"test\"]\n    env:\n      - name: RUNS_FILE\n        value: {:?}\n      \
                 - name: PROVIDER_SECRET\n        value: {ENV_SECRET}\n",
                def.name,
                patterns.join(", "),
                def.default_cache_duration,
                self.runs_file(&def.name).display().to_string(),
            ));
        }
        let config = self.dir.path().join("providers.yaml");
        std::fs::write(&config, yaml).unwrap();
        vec![
            "--image-credential-provider-config".into(),
            config.display().to_string(),
            "--image-credential-provider-bin-dir".into(),
            bin.display().to_string(),
            "--image-credential-provider-timeout".into(),
            timeout.into(),
        ]
    }

    /// The requests the plugin `name` was sent, one per run.
    fn requests(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.runs_file(name))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("the request is one line of JSON"))
            .collect()
    }

    fn runs(&self, name: &str) -> usize {
        self.requests(name).len()
    }
}

/// A script body that answers with `cacheKeyType` `key_type`, `cacheDuration` `duration` (none when `None`),
/// and one `auth` entry per `(key, (user, password))`.
fn answer(key_type: &str, duration: Option<&str>, auth: &[(&str, (&str, &str))]) -> String {
    let auth: Vec<String> = auth
        .iter()
        .map(|(key, (user, password))| format!(r#""{key}": {{"username": "{user}", "password": "{password}"}}"#))
        .collect();
    let duration = duration
        .map(|d| format!(r#""cacheDuration": "{d}", "#))
        .unwrap_or_default();
    format!(
        "cat <<'JSON'\n{{\"apiVersion\": \"{V1}\", \"kind\": \"CredentialProviderResponse\", \
         \"cacheKeyType\": \"{key_type}\", {duration}\"auth\": {{{}}}}}\nJSON",
        auth.join(", ")
    )
}

/// A daemon that trusts the registry's CA, with the providers' flags and `extra`.
async fn start_daemon(registry: &Registry, flags: &[String], extra: &[&str]) -> (Daemon, Client) {
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let mut args = vec!["--ca-file", ca.as_str(), "--retry-backoff", "10ms"];
    args.extend(flags.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&args).await;
    let client = daemon.client().await;
    (daemon, client)
}

/// Pushes a CNCF Wasm artifact of its own to `repo:v1`.
async fn push_private(registry: &Registry, repo: &str) -> Image {
    registry.push_module(repo, "v1").await
}

fn req_secret(url: &str, pull_secret: Vec<u8>) -> FetchRequest {
    FetchRequest {
        pull_secret,
        ..req(url)
    }
}

#[track_caller]
fn assert_module(info: &ModuleInfo, bytes: &[u8], image: &Image) {
    assert!(
        bytes == image.module.as_slice(),
        "served bytes differ from the pushed module"
    );
    assert_eq!(info.sha256, image.module_digest);
}

/// No password, provider env value or plugin output in `text`.
#[track_caller]
fn assert_no_secrets(text: &str, what: &str) {
    for needle in [
        USER_A.1,
        USER_B.1,
        WRONG_PASSWORD,
        ENV_SECRET,
        OUTPUT_SECRET,
        &base64(format!("{}:{}", USER_A.0, USER_A.1).as_bytes()),
    ] {
        assert!(
            !text.contains(needle),
            "{what} contains secret material {needle:?}:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Which plugin runs, and whose credentials win
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_matching_provider_supplies_the_credentials_and_others_do_not_run() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let providers = Providers::new()
        .add("elsewhere", &["registry.example.com", "*.127.0.0.1"], "exit 1")
        .add("team", &[&host], &answer("Registry", None, &[(&host, USER_A)]));
    let (daemon, mut client) = start_daemon(registry, &providers.flags("10s"), &[]).await;
    let image = push_private(registry, "prov/match").await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("prov/match:v1"))).await;

    assert_module(&info, &bytes, &image);
    assert_eq!(
        providers.runs("elsewhere"),
        0,
        "a provider whose patterns do not match ran"
    );
    assert_eq!(
        providers.requests("team"),
        [
            serde_json::json!({"apiVersion": V1, "kind": "CredentialProviderRequest", "image": format!("{host}/prov/match")})
        ]
    );
    assert_no_secrets(&daemon.log(), "the daemon log");
}

/// Without a provider for the image, the pull is anonymous, as before: a private repository is refused.
#[tokio::test]
async fn without_a_matching_provider_a_private_pull_is_unauthenticated() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let providers = Providers::new().add("elsewhere", &["registry.example.com"], "exit 1");
    let (_daemon, mut client) = start_daemon(registry, &providers.flags("10s"), &[]).await;
    push_private(registry, "prov/no-match").await;

    let status = fetch_err(&mut client, req(&proxy.oci("prov/no-match:v1"))).await;

    assert_code(&status, Code::Unauthenticated);
    assert_eq!(providers.runs("elsewhere"), 0);
}

/// The kubelet's order: a pull secret with an entry for the registry wins, and the plugin is not even run; a
/// secret for another registry leaves the image to the provider.
#[tokio::test]
async fn a_pull_secret_for_the_registry_wins_over_the_provider() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let providers = Providers::new().add(
        "team",
        &[&host],
        &answer("Image", Some("0s"), &[(&host, (USER_A.0, WRONG_PASSWORD))]),
    );
    let (_daemon, mut client) = start_daemon(registry, &providers.flags("10s"), &[]).await;
    let image = push_private(registry, "prov/secret-wins").await;
    let url = proxy.oci("prov/secret-wins:v1");

    let (info, bytes) = fetch_ok(
        &mut client,
        req_secret(&url, docker_config_json(&host, USER_B.0, USER_B.1)),
    )
    .await;
    assert_module(&info, &bytes, &image);
    assert_eq!(
        providers.runs("team"),
        0,
        "the provider ran although the secret had the registry"
    );

    let status = fetch_err(
        &mut client,
        req_secret(&url, docker_config_json("registry.example.com", USER_B.0, USER_B.1)),
    )
    .await;
    assert_code(&status, Code::Unauthenticated);
    assert_eq!(
        providers.runs("team"),
        1,
        "a secret without the registry leaves it to the provider"
    );
}

/// Concurrent requests for one image run the plugin once.
#[tokio::test]
async fn concurrent_requests_run_the_plugin_once() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let body = format!("sleep 1\n{}", answer("Image", Some("0s"), &[(&host, USER_A)]));
    let providers = Providers::new().add("slow", &[&host], &body);
    let (daemon, _client) = start_daemon(registry, &providers.flags("10s"), &[]).await;
    let image = push_private(registry, "prov/single-flight").await;
    let url = proxy.oci("prov/single-flight:v1");

    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut client = daemon.client().await;
        let url = url.clone();
        tasks.push(tokio::spawn(async move { fetch_ok(&mut client, req(&url)).await }));
    }
    for task in tasks {
        let (info, _) = task.await.expect("fetch task");
        assert_eq!(info.sha256, image.module_digest);
    }

    assert_eq!(providers.runs("slow"), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Caching by key type and duration
// ---------------------------------------------------------------------------------------------------------------

/// Pulls two repositories through `first` and one through `second` (another registry host as the plugin sees
/// it), and returns the plugin's runs after each pull.
async fn runs_per_pull(key_type: &str) -> Vec<usize> {
    let registry = Registry::shared_tls_auth();
    let (first, second) = (registry.proxy().await, registry.proxy().await);
    let (h1, h2) = (first.host(), second.host());
    let providers = Providers::new().add(
        "p",
        &[&h1, &h2],
        &answer(key_type, Some("1m"), &[(&h1, USER_A), (&h2, USER_A)]),
    );
    let (_daemon, mut client) = start_daemon(registry, &providers.flags("10s"), &[]).await;
    let prefix = format!("prov/key-{}", key_type.to_lowercase());
    for repo in ["a", "b"] {
        push_private(registry, &format!("{prefix}/{repo}")).await;
    }
    let mut runs = Vec::new();
    for url in [
        first.oci(&format!("{prefix}/a:v1")),
        first.oci(&format!("{prefix}/a:v1")),
        first.oci(&format!("{prefix}/b:v1")),
        second.oci(&format!("{prefix}/a:v1")),
    ] {
        fetch_ok(&mut client, req(&url)).await;
        runs.push(providers.runs("p"));
    }
    runs
}

/// `Image` answers serve the same image (the repository, as the kubelet asks), `Registry` answers every image of
/// the registry, `Global` every image. The second pull of the same image is a cached private module: it still
/// needs the caller's credentials, and gets them from the cached answer.
#[tokio::test]
async fn answers_are_cached_by_their_key_type() {
    assert_eq!(runs_per_pull("Image").await, [1, 1, 2, 3], "Image");
    assert_eq!(runs_per_pull("Registry").await, [1, 1, 1, 2], "Registry");
    assert_eq!(runs_per_pull("Global").await, [1, 1, 1, 1], "Global");
}

/// An answer is reused within its cacheDuration and asked for again after it; without a cacheDuration the
/// provider's defaultCacheDuration applies, and zero caches nothing. Cache hits are counted.
#[tokio::test]
async fn answers_expire_after_their_duration() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let providers = Providers::new()
        .add("short", &[&host], &answer("Registry", Some("2s"), &[(&host, USER_A)]))
        .add("never", &[&host], &answer("Registry", None, &[]))
        .default_cache_duration("0s");
    let flags = providers.flags("10s");
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ca = registry.ca_file().to_str().unwrap().to_string();
    args.extend(["--ca-file", ca.as_str(), "--retry-backoff", "10ms"]);
    let (daemon, admin) = start_with_admin(&args).await;
    let mut client = daemon.client().await;
    for repo in ["a", "b", "c"] {
        push_private(registry, &format!("prov/expiry/{repo}")).await;
    }

    fetch_ok(&mut client, req(&proxy.oci("prov/expiry/a:v1"))).await;
    fetch_ok(&mut client, req(&proxy.oci("prov/expiry/b:v1"))).await;
    assert_eq!(providers.runs("short"), 1, "within its cacheDuration");
    assert_eq!(providers.runs("never"), 2, "defaultCacheDuration 0 caches nothing");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    fetch_ok(&mut client, req(&proxy.oci("prov/expiry/c:v1"))).await;
    assert_eq!(providers.runs("short"), 2, "after its cacheDuration");

    let metrics = scrape(admin).await;
    let value =
        |name: &str, provider: &str, result: &str| metrics.value(name, &[("provider", provider), ("result", result)]);
    assert_eq!(
        value("wasmcache_credential_provider_runs_total", "short", "success"),
        2.0
    );
    assert_eq!(
        value("wasmcache_credential_provider_runs_total", "never", "success"),
        3.0
    );
    assert_eq!(
        value("wasmcache_credential_provider_runs_total", "short", "timeout"),
        0.0
    );
    assert_eq!(
        value("wasmcache_credential_provider_cache_lookups_total", "short", "hit"),
        1.0
    );
    assert_eq!(
        value("wasmcache_credential_provider_cache_lookups_total", "short", "miss"),
        2.0
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Plugins that misbehave
// ---------------------------------------------------------------------------------------------------------------

/// Each misbehaving plugin fails the request with UNAVAILABLE, naming the provider and the cause within the
/// bound; nothing is cached (the next request runs it again); no secret reaches an error or the log.
#[tokio::test]
async fn misbehaving_plugins_fail_clearly_and_store_nothing() {
    let registry = Registry::shared_tls_auth();
    let cases = [
        (
            "hangs",
            "sleep 60 &\nsleep 60".to_string(),
            "no answer within 1s; killed",
        ),
        (
            "fails",
            format!("echo 'password {OUTPUT_SECRET}' >&2\nexit 3"),
            "exit status: 3 (its stderr, 37 bytes, is not shown: it may hold credentials)",
        ),
        (
            "garbage",
            format!("echo 'password: {OUTPUT_SECRET}'"),
            "bad CredentialProviderResponse: not valid JSON",
        ),
        (
            "huge",
            format!("echo '{OUTPUT_SECRET}'\nhead -c 2000000 /dev/zero | tr '\\0' x"),
            "answer larger than 1048576 bytes; killed",
        ),
        (
            "wrong-version",
            answer("Image", None, &[]).replace(V1, "credentialprovider.kubelet.k8s.io/v1beta1"),
            "apiVersion is not \"credentialprovider.kubelet.k8s.io/v1\"",
        ),
    ];
    for (name, body, cause) in cases {
        let proxy = registry.proxy().await;
        let providers = Providers::new().add(name, &[&proxy.host()], &body);
        let (daemon, mut client) = start_daemon(registry, &providers.flags("1s"), &[]).await;
        push_private(registry, &format!("prov/bad/{name}")).await;
        let url = proxy.oci(&format!("prov/bad/{name}:v1"));

        for run in 1..=2 {
            let started = Instant::now();
            let status = fetch_err(&mut client, req(&url)).await;
            let took = started.elapsed();

            assert_code(&status, Code::Unavailable);
            let message = status.message();
            assert!(
                message.contains(&format!("credential provider \"{name}\"")) && message.contains(cause),
                "{name}: {message}"
            );
            assert!(
                message.contains(&format!("prov/bad/{name}")),
                "{name}: the URL is named: {message}"
            );
            assert!(took < Duration::from_secs(8), "{name}: took {took:?}");
            assert_no_secrets(message, &format!("{name}'s error"));
            assert_eq!(providers.runs(name), run, "{name}: nothing was cached");
        }
        assert!(list(&mut client).await.is_empty(), "{name}: nothing is cached");
        assert_eq!(
            proxy.total(),
            0,
            "{name}: the registry was not asked without credentials"
        );
        let log = daemon.log();
        assert!(
            log.contains("credential provider failed") && log.contains(cause),
            "{name}: the failure is logged:\n{log}"
        );
        assert_no_secrets(&log, &format!("{name}'s daemon log"));
    }
}

/// As in the kubelet, a failed provider leaves the pull to the other credentials: here `--docker-config`'s.
#[tokio::test]
async fn a_failed_provider_falls_back_to_the_docker_config() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let providers = Providers::new().add("fails", &[&host], "exit 1");
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("config.json");
    std::fs::write(&docker_config, docker_config_json(&host, USER_B.0, USER_B.1)).unwrap();
    let docker_config = docker_config.display().to_string();
    let (daemon, mut client) =
        start_daemon(registry, &providers.flags("10s"), &["--docker-config", &docker_config]).await;
    let image = push_private(registry, "prov/fallback").await;

    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("prov/fallback:v1"))).await;

    assert_module(&info, &bytes, &image);
    assert_eq!(providers.runs("fails"), 1);
    let log = daemon.log();
    assert!(log.contains("instead of the failed credential provider"), "{log}");
    assert_no_secrets(&log, "the daemon log");
}

/// A failing provider does not stand between a request and a public cached module: serving it needs no
/// credentials, so the plugin is not even run.
#[tokio::test]
async fn a_failed_provider_does_not_stop_hits_on_public_modules() {
    let registry = Registry::shared_plain();
    let host = registry.host();
    // An empty answer on the first run (so the pull is anonymous and the module public), a failure after.
    let body = format!(
        "if [ \"$(wc -l < \"$RUNS_FILE\")\" -le 1 ]; then\n{}\nelse\nexit 1\nfi",
        answer("Image", Some("0s"), &[])
    );
    let providers = Providers::new().add("flaky", &[&host], &body);
    let flags = providers.flags("10s");
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--insecure-registry", host.as_str(), "--retry-backoff", "10ms"]);
    let daemon = Daemon::start(&args).await;
    let mut client = daemon.client().await;
    let image = registry.push_module("prov/public-hit", "v1").await;
    let url = format!("oci://{host}/prov/public-hit:v1");
    let (info, _) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(info.outcome(), Outcome::Fetched);

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_module(&info, &bytes, &image);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(providers.runs("flaky"), 1, "the plugin ran for a public hit");
    // A module not cached yet does need it, and the failure is the answer.
    registry.push_module("prov/public-miss", "v1").await;
    let status = fetch_err(&mut client, req(&format!("oci://{host}/prov/public-miss:v1"))).await;
    assert_code(&status, Code::Unavailable);
    assert!(
        status
            .message()
            .contains("credential provider \"flaky\": exit status: 1"),
        "{}",
        status.message()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The access check
// ---------------------------------------------------------------------------------------------------------------

/// Provider credentials prove access like pull secret credentials: their pull records the fingerprint, the same
/// credentials are served the cached private module without asking the registry (whether they come from the
/// provider or from a pull secret), and a caller without credentials (the provider answering nothing) is refused.
#[tokio::test]
async fn provider_credentials_take_part_in_the_access_check() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    // Credentials on the first two runs, none after: each request runs the plugin (cacheDuration 0s).
    let with_credentials = answer("Image", Some("0s"), &[(&host, USER_A)]);
    let without = answer("Image", Some("0s"), &[]);
    let body = format!("if [ \"$(wc -l < \"$RUNS_FILE\")\" -le 2 ]; then\n{with_credentials}\nelse\n{without}\nfi");
    let providers = Providers::new().add("team", &[&host], &body);
    let (daemon, mut client) = start_daemon(registry, &providers.flags("10s"), &[]).await;
    let image = push_private(registry, "prov/access").await;
    let url = proxy.oci("prov/access:v1");

    let (info, _) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    proxy.reset();

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;
    assert_module(&info, &bytes, &image);
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(
        proxy.total(),
        0,
        "proven credentials ask the registry nothing:\n{}",
        proxy.describe()
    );

    let status = fetch_err(&mut client, req(&url)).await;
    assert_code(&status, Code::Unauthenticated);
    assert_eq!(providers.runs("team"), 3);

    proxy.reset();
    let (info, _) = fetch_ok(
        &mut client,
        req_secret(&url, docker_config_json(&host, USER_A.0, USER_A.1)),
    )
    .await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(
        proxy.total(),
        0,
        "the same credentials from a pull secret are proven too:\n{}",
        proxy.describe()
    );
    assert_eq!(providers.runs("team"), 3, "the secret had the registry: no plugin run");
    assert_no_secrets(&daemon.log(), "the daemon log");
}

/// `serve` refuses a bad provider file before it binds: exit 78 naming the file and the field.
#[tokio::test]
async fn serve_with_a_bad_provider_file_exits_78() {
    let providers = Providers::new().add("team", &["registry.example.com"], "exit 1");
    let flags = providers.flags("10s");
    let config = PathBuf::from(&flags[1]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("registry.example.com", "registry.example.com:*")).unwrap();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();

    let (status, _dir) = serve_until_exit(&args).await;

    assert_eq!(status.and_then(|s| s.code()), Some(78));
}
