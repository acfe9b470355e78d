//! The configuration file, its environment variables and `wasmcache config check`, through the real binary.
//! Environment variables are set on the child process only.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tempfile::TempDir;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary, with none of the test runner's `WASMCACHE_*` or `RUST_LOG` variables.
fn wasmcache() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmcache"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WASMCACHE_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

fn config_check(file: &Path, envs: &[(&str, &str)]) -> Output {
    wasmcache()
        .args(["config", "check"])
        .arg(file)
        .envs(envs.iter().copied())
        .output()
        .expect("run wasmcache config check")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A temp dir with `wasmcache.toml` holding `text`.
fn config_file(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wasmcache.toml");
    std::fs::write(&path, text).expect("write the config file");
    (dir, path)
}

fn toml_str(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("utf-8 temp path"))
}

/// A `wasmcache serve` started with exactly the given arguments and environment, its stderr in `log`.
struct Serve {
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    fn spawn(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let log = dir.join("daemon.log");
        let stderr = std::fs::File::create(&log).expect("create the daemon log");
        let child = wasmcache()
            .arg("serve")
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn wasmcache serve");
        Serve {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `socket` answers a List call.
    async fn wait_serving(&mut self, socket: &Path) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("daemon exited during startup with {status}; log:\n{}", self.log());
            }
            if let Ok(channel) = unix_channel(socket).await {
                if ModuleCacheClient::new(channel).list(ListRequest {}).await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not serving on {}; log:\n{}",
                socket.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for the daemon to exit by itself.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        self.wait_exit().await
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A file that puts the cache and the socket in `dir` (admin listener off, so tests can run side by side).
fn serve_file(dir: &Path, extra: &str) -> String {
    format!(
        "cache-dir = {}\nsocket = {}\nadmin-listen = \"off\"\n{extra}",
        toml_str(&dir.join("cache")),
        toml_str(&dir.join("file.sock"))
    )
}

// config check

#[test]
fn check_prints_the_effective_configuration_and_exits_zero() {
    let (_dir, path) = config_file(
        r#"
socket = "/run/test/wasmcache.sock"
fetch-timeout = "3s"
admin-listen = "off"

[registry.mirrors]
"docker.io" = ["https://m1.local", "https://m2.local"]

[log]
format = "json"
"#,
    );
    let output = config_check(&path, &[]);
    assert!(
        output.status.success(),
        "exit {}; stderr: {}",
        output.status,
        stderr(&output)
    );
    let printed = stdout(&output);
    for line in [
        "socket = \"/run/test/wasmcache.sock\"",
        "fetch-timeout = \"3s\"",
        "fetch-attempts = 5",
        "admin-listen = \"off\"",
        "[registry.mirrors]",
        "\"docker.io\" = [\"https://m1.local/\", \"https://m2.local/\"]",
        "module-expiry = \"24h\"",
        "format = \"json\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} missing from:\n{printed}");
    }
    toml::from_str::<toml::Table>(&printed).expect("the output is TOML");
}

#[test]
fn check_output_is_a_valid_configuration_file() {
    let (dir, path) = config_file("fetch-attempts = 2\n[lifecycle]\nmax-cache-bytes = \"1G\"\n");
    let first = stdout(&config_check(&path, &[]));
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &first).unwrap();
    let second = config_check(&again, &[]);
    assert!(second.status.success(), "stderr: {}", stderr(&second));
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&stdout(&second)), body(&first));
}

#[test]
fn check_applies_environment_variables_over_the_file() {
    let (_dir, path) = config_file("fetch-timeout = \"3s\"\n");
    let output = config_check(
        &path,
        &[
            ("WASMCACHE_FETCH_TIMEOUT", "7s"),
            ("WASMCACHE_BLOCKED_CIDR", "10.0.0.0/8,192.168.0.0/16"),
        ],
    );
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("fetch-timeout = \"7s\""), "{printed}");
    assert!(
        printed.contains("blocked-cidr = [\"10.0.0.0/8\", \"192.168.0.0/16\"]"),
        "{printed}"
    );
}

#[test]
fn check_of_an_unknown_key_exits_78_naming_the_key_and_line() {
    let (_dir, path) = config_file("socket = \"/s\"\n\n# the timeout\nfetch-timout = \"3s\"\n");
    let output = config_check(&path, &[]);
    assert_eq!(output.status.code(), Some(78), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("line 4") && err.contains("\"fetch-timout\""), "{err}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn check_of_a_bad_value_exits_78_naming_the_key_and_line() {
    let (_dir, path) = config_file("socket = \"/s\"\nfetch-attempts = 0\n");
    let output = config_check(&path, &[]);
    assert_eq!(output.status.code(), Some(78), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("line 2") && err.contains("fetch-attempts"), "{err}");
}

#[test]
fn check_prints_the_fetch_deadline_of_the_file() {
    let (_dir, path) = config_file("fetch-deadline = \"2m\"\n");
    let output = config_check(&path, &[]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.lines().any(|l| l == "fetch-deadline = \"2m\""), "{printed}");
}

#[test]
fn check_prints_the_default_fetch_deadline_of_five_minutes() {
    let (_dir, path) = config_file("");
    let output = config_check(&path, &[]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.lines().any(|l| l == "fetch-deadline = \"5m\""), "{printed}");
}

#[test]
fn check_of_a_fetch_deadline_shorter_than_the_fetch_timeout_exits_78_naming_both_keys() {
    let (_dir, path) = config_file("socket = \"/s\"\nfetch-timeout = \"30s\"\nfetch-deadline = \"10s\"\n");
    let output = config_check(&path, &[]);
    assert_eq!(output.status.code(), Some(78), "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("line 3") && err.contains("fetch-deadline") && err.contains("at least fetch-timeout (30s)"),
        "{err}"
    );
}

#[test]
fn check_never_prints_the_docker_config_contents() {
    let (dir, path) = config_file("");
    let creds = dir.path().join("docker.json");
    std::fs::write(
        &creds,
        r#"{"auths":{"r.local":{"username":"u","password":"s3cret-pw"}}}"#,
    )
    .unwrap();
    std::fs::write(&path, format!("[registry]\ndocker-config = {}\n", toml_str(&creds))).unwrap();
    let output = config_check(&path, &[]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed = stdout(&output);
    assert!(
        printed.contains(&format!("docker-config = {}", toml_str(&creds))),
        "{printed}"
    );
    assert!(
        !printed.contains("s3cret-pw") && !printed.contains("r.local"),
        "{printed}"
    );
}

// [watch] pull-secrets (--watch-pull-secrets, WASMCACHE_WATCH_PULL_SECRETS)

/// `pull-secrets` in the `[watch]` table of `config check FILE`'s output, with `envs`; `None` when it is absent.
fn printed_pull_secrets(file: &str, envs: &[(&str, &str)]) -> Option<bool> {
    let (_dir, path) = config_file(file);
    let output = config_check(&path, envs);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed: toml::Table = toml::from_str(&stdout(&output)).expect("the output is TOML");
    let watch = printed["watch"].as_table().expect("a [watch] table");
    watch.get("pull-secrets").map(|v| v.as_bool().expect("a boolean"))
}

#[test]
fn check_shows_watch_pull_secrets_off_by_default() {
    assert_eq!(printed_pull_secrets("[watch]\nenabled = true\n", &[]), Some(false));
}

#[test]
fn check_reads_watch_pull_secrets_from_the_file() {
    let file = "[watch]\nenabled = true\npull-secrets = true\n";
    assert_eq!(printed_pull_secrets(file, &[]), Some(true));
}

#[test]
fn check_applies_watch_pull_secrets_from_the_environment_over_the_file() {
    let on = [("WASMCACHE_WATCH_PULL_SECRETS", "true")];
    assert_eq!(printed_pull_secrets("[watch]\nenabled = true\n", &on), Some(true));
    let off = [("WASMCACHE_WATCH_PULL_SECRETS", "false")];
    let file = "[watch]\nenabled = true\npull-secrets = true\n";
    assert_eq!(printed_pull_secrets(file, &off), Some(false));
}

// serve --config

#[tokio::test]
async fn serve_uses_the_socket_and_cache_dir_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_file_dir, path) = config_file(&serve_file(dir.path(), ""));
    let mut serve = Serve::spawn(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    serve.wait_serving(&dir.path().join("file.sock")).await;
    assert!(dir.path().join("cache").is_dir(), "the cache dir of the file is used");
    assert!(serve.stop().await.success(), "log:\n{}", serve.log());
}

#[tokio::test]
async fn serve_flag_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_file_dir, path) = config_file(&serve_file(dir.path(), ""));
    let flag_socket = dir.path().join("flag.sock");
    let mut serve = Serve::spawn(
        dir.path(),
        &[
            "--config",
            path.to_str().unwrap(),
            "--socket",
            flag_socket.to_str().unwrap(),
        ],
        &[],
    );
    serve.wait_serving(&flag_socket).await;
    assert!(!dir.path().join("file.sock").exists(), "the file's socket is not used");
}

#[tokio::test]
async fn serve_environment_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_file_dir, path) = config_file(&serve_file(dir.path(), ""));
    let env_socket = dir.path().join("env.sock");
    let mut serve = Serve::spawn(
        dir.path(),
        &[],
        &[
            ("WASMCACHE_CONFIG", path.to_str().unwrap()),
            ("WASMCACHE_SOCKET", env_socket.to_str().unwrap()),
        ],
    );
    serve.wait_serving(&env_socket).await;
    assert!(!dir.path().join("file.sock").exists(), "the file's socket is not used");
}

#[tokio::test]
async fn serve_with_a_bad_file_exits_78_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (_file_dir, path) = config_file(&serve_file(dir.path(), "[lifecycle]\npurge-interval = \"soon\"\n"));
    let mut serve = Serve::spawn(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    let status = serve.wait_exit().await;
    assert_eq!(status.code(), Some(78), "log:\n{}", serve.log());
    let log = serve.log();
    assert!(
        log.contains("line 5") && log.contains("lifecycle.purge-interval"),
        "{log}"
    );
    assert!(!dir.path().join("file.sock").exists());
}

#[tokio::test]
async fn serve_with_a_fetch_deadline_shorter_than_the_fetch_timeout_exits_78_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("flags.sock");
    let mut serve = Serve::spawn(
        dir.path(),
        &[
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--admin-listen",
            "off",
            "--fetch-timeout",
            "30s",
            "--fetch-deadline",
            "10s",
        ],
        &[],
    );
    let status = serve.wait_exit().await;
    assert_eq!(status.code(), Some(78), "log:\n{}", serve.log());
    let log = serve.log();
    assert!(
        log.contains("fetch-deadline") && log.contains("at least fetch-timeout (30s)"),
        "{log}"
    );
    assert!(!socket.exists());
}

#[tokio::test]
async fn serve_log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("json.sock");
    let mut serve = Serve::spawn(
        dir.path(),
        &[
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--admin-listen",
            "off",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "debug")],
    );
    serve.wait_serving(&socket).await;
    assert!(serve.stop().await.success(), "log:\n{}", serve.log());
    let log = serve.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(value.is_object() && value.get("level").is_some(), "{line}");
    }
}

/// The file's level filters the daemon's log, and `--log-level` wins over it.
#[tokio::test]
async fn serve_log_level_comes_from_the_file_unless_a_flag_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (_file_dir, path) = config_file(&serve_file(dir.path(), "[log]\nlevel = \"error\"\n"));
    let socket = dir.path().join("file.sock");

    let mut quiet = Serve::spawn(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    quiet.wait_serving(&socket).await;
    assert!(quiet.stop().await.success());
    let log = quiet.log();
    assert!(!log.contains("INFO"), "level = error filters out info lines:\n{log}");

    let mut chatty = Serve::spawn(
        dir.path(),
        &["--config", path.to_str().unwrap(), "--log-level", "info"],
        &[],
    );
    chatty.wait_serving(&socket).await;
    assert!(chatty.stop().await.success());
    let log = chatty.log();
    assert!(log.contains("INFO"), "--log-level info wins over the file:\n{log}");
}

#[tokio::test]
async fn serve_watch_pull_secrets_without_watching_exits_78_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let mut serve = Serve::spawn(
        dir.path(),
        &[
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--admin-listen",
            "off",
            "--watch-pull-secrets",
        ],
        &[],
    );
    let status = serve.wait_exit().await;
    assert_eq!(status.code(), Some(78), "log:\n{}", serve.log());
    let log = serve.log();
    assert!(
        log.contains("watch-pull-secrets") && log.contains("--watch-wasmplugins"),
        "{log}"
    );
    assert!(!socket.exists());
}

// [registry] image-credential-provider-* (kubelet credential providers)

const PROVIDER_FILE: &str = "apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: team-registry
    matchImages: [\"*.registry.example.com\", \"registry.example.com:5000/team\"]
    defaultCacheDuration: 10m
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    env:
      - name: PROVIDER_TOKEN
        value: env-s3cret-value
";

/// A config file naming a credential provider file holding `providers` and a bin dir with an executable
/// `team-registry` (`bin` picks the bin dir as the file gives it).
fn provider_setup(providers: &str, bin: impl Fn(&Path) -> PathBuf) -> (TempDir, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, path) = config_file("");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let program = plugins.join("team-registry");
    std::fs::write(&program, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let providers_file = dir.path().join("providers.yaml");
    std::fs::write(&providers_file, providers).unwrap();
    std::fs::write(
        &path,
        format!(
            "[registry]\nimage-credential-provider-config = {}\nimage-credential-provider-bin-dir = {}\n",
            toml_str(&providers_file),
            toml_str(&bin(&plugins))
        ),
    )
    .unwrap();
    (dir, path, providers_file)
}

#[test]
fn check_accepts_a_credential_provider_file_and_prints_its_paths_only() {
    let (_dir, path, providers_file) = provider_setup(PROVIDER_FILE, Path::to_path_buf);
    let output = config_check(&path, &[]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let printed = stdout(&output);
    assert!(
        printed.contains(&format!(
            "image-credential-provider-config = {}",
            toml_str(&providers_file)
        )) && printed.contains("image-credential-provider-timeout = \"1m\""),
        "{printed}"
    );
    assert!(!printed.contains("env-s3cret-value"), "{printed}");
}

/// Where the bin dir is, given the directory that holds the plugin.
type BinDir = fn(&Path) -> PathBuf;

/// Each problem in the provider file (or its bin dir) is exit 78 naming the provider file and the field.
#[test]
fn check_of_a_bad_credential_provider_file_exits_78_naming_the_file_and_field() {
    let cases: [(String, BinDir, &str, &str); 5] = [
        (
            PROVIDER_FILE.replace("kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1"),
            Path::to_path_buf,
            "apiVersion",
            "not supported",
        ),
        (
            PROVIDER_FILE.to_string(),
            |plugins| plugins.join("missing"),
            "bin dir",
            "missing",
        ),
        (
            PROVIDER_FILE.replace("\"*.registry.example.com\"", "\"registry.example.com:*\""),
            Path::to_path_buf,
            "providers[0].matchImages[0]",
            "is not a host glob",
        ),
        (
            PROVIDER_FILE.replace("    env:", "    cacheKey: Image\n    env:"),
            Path::to_path_buf,
            "providers[0].cacheKey",
            "unknown field",
        ),
        (
            PROVIDER_FILE.replace("name: team-registry", "name: other"),
            Path::to_path_buf,
            "providers[0].name",
            "other",
        ),
    ];
    for (providers, bin, field, reason) in cases {
        let (_dir, path, providers_file) = provider_setup(&providers, bin);
        let output = config_check(&path, &[]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(78), "{field}: {err}");
        assert!(
            err.contains("registry.image-credential-provider-config")
                && err.contains(&format!("{}: {field}", providers_file.display()))
                && err.contains(reason),
            "{field}: {err}"
        );
        assert!(!err.contains("env-s3cret-value"), "{err}");
    }
}

#[test]
fn check_of_a_credential_provider_file_without_bin_dir_exits_78() {
    let (_dir, path) = config_file("[registry]\nimage-credential-provider-config = \"/etc/providers.yaml\"\n");
    let output = config_check(&path, &[]);
    assert_eq!(output.status.code(), Some(78));
    let err = stderr(&output);
    assert!(
        err.contains("image-credential-provider-config") && err.contains("needs image-credential-provider-bin-dir"),
        "{err}"
    );
}
