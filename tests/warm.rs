//! `wasmcache warm -f FILE|DIR|-` and the `Warm` RPC behind it: WasmPlugin files (YAML, JSON, lists) turned into one
//! warm-up request, the summary table and exit status, pull secrets from `--pull-secret-dir`, and the RPC's event
//! stream (start, progress, end per item; the concurrency bound).
//!
//! Upstreams are real: a counting `Origin` for http modules, a `--file-root` directory for file modules, and
//! Debian's `docker-registry` behind a counting proxy for oci modules (plain HTTP, or HTTPS with htpasswd auth for
//! the pull-secret tests). Every test asserts how many upstream requests it caused.

use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::registry::*;
use support::warm::Warmed;
use support::*;
use tempfile::TempDir;
use tonic::Code;
use wasmcache::proto::warm_event::Event;
use wasmcache::proto::{WarmEvent, WarmItem, WarmRequest};

// ---------------------------------------------------------------------------------------------------------------
// Running the CLI and reading its summary
// ---------------------------------------------------------------------------------------------------------------

fn socket_arg(daemon: &Daemon) -> String {
    daemon.socket().to_str().unwrap().to_string()
}

/// `wasmcache warm --socket <daemon> ARGS`.
async fn warm(daemon: &Daemon, args: &[&str]) -> Warmed {
    let socket = socket_arg(daemon);
    let mut all = vec!["warm", "--socket", socket.as_str()];
    all.extend_from_slice(args);
    Warmed {
        output: run_cli(&all, &[]).await,
    }
}

/// `wasmcache warm --socket <daemon> ARGS` with `input` on stdin.
async fn warm_stdin(daemon: &Daemon, args: &[&str], input: String) -> Warmed {
    let mut all: Vec<String> = vec!["warm".into(), "--socket".into(), socket_arg(daemon)];
    all.extend(args.iter().map(|a| a.to_string()));
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmcache"))
            .args(&all)
            .env_remove("WASMCACHE_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmcache warm");
        let mut stdin = child.stdin.take().expect("child stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait for wasmcache warm")
    })
    .await
    .expect("cli thread");
    Warmed { output }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------------------------------------------
// Upstreams: one http, one file and one oci module
// ---------------------------------------------------------------------------------------------------------------

/// An origin serving `/filters/http.wasm`, a file root holding `file.wasm`, and a plain registry (behind a counting
/// proxy) holding `warm/<test>:v1`.
struct Upstreams {
    origin: Origin,
    proxy: Proxy,
    files: TempDir,
    http_module: Vec<u8>,
    file_module: Vec<u8>,
    oci: Image,
    repo: String,
}

const HTTP_PATH: &str = "/filters/http.wasm";

async fn upstreams(test: &str) -> Upstreams {
    let origin = Origin::start().await;
    let http_module = wasm_module(&format!("{test}-http"));
    origin.serve(HTTP_PATH, http_module.clone());

    let files = tempfile::tempdir().expect("file root");
    let file_module = wasm_module(&format!("{test}-file"));
    std::fs::write(files.path().join("file.wasm"), &file_module).expect("write file module");

    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let repo = format!("warm/{test}");
    let oci = registry
        .push(&repo, Some("v1"), cncf_image(&wasm_module(&format!("{test}-oci"))))
        .await;
    Upstreams {
        origin,
        proxy,
        files,
        http_module,
        file_module,
        oci,
        repo,
    }
}

impl Upstreams {
    fn http_url(&self) -> String {
        self.origin.url(HTTP_PATH)
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.files.path().join("file.wasm").display())
    }

    fn oci_url(&self) -> String {
        self.proxy.oci(&format!("{}:v1", self.repo))
    }

    /// A daemon that may read the file root and reach the plain registry through the proxy.
    async fn daemon(&self) -> Daemon {
        let root = path_str(self.files.path()).to_string();
        let host = self.proxy.host();
        Daemon::start(&[
            "--file-root",
            &root,
            "--insecure-registry",
            &host,
            "--retry-backoff",
            "10ms",
        ])
        .await
    }

    /// Requests that reached the origin or the registry.
    fn upstream_requests(&self) -> usize {
        self.origin.total_hits() + self.proxy.total()
    }

    /// Three WasmPlugin documents: `default/http-filter` (no namespace), `team-a/file-filter` and
    /// `team-b/oci-filter`.
    fn three_plugins_yaml(&self) -> String {
        format!(
            "# three plugins, one per scheme\n\
             apiVersion: extensions.istio.io/v1alpha1\n\
             kind: WasmPlugin\n\
             metadata:\n  name: http-filter\n\
             spec:\n  url: {http}\n  phase: AUTHN\n\
             ---\n\
             apiVersion: extensions.istio.io/v1alpha1\n\
             kind: WasmPlugin\n\
             metadata:\n  name: file-filter\n  namespace: team-a\n\
             spec:\n  url: {file}\n  imagePullPolicy: IfNotPresent\n\
             ---\n\
             apiVersion: extensions.istio.io/v1alpha1\n\
             kind: WasmPlugin\n\
             metadata:\n  name: oci-filter\n  namespace: team-b\n  resourceVersion: \"42\"\n\
             spec:\n  url: {oci}\n  pluginConfig:\n    header: x-test\n",
            http = self.http_url(),
            file = self.file_url(),
            oci = self.oci_url(),
        )
    }

    /// The expected summary of `three_plugins_yaml`: (plugin, url, module sha256).
    fn expected(&self) -> Vec<(&'static str, String, String)> {
        vec![
            ("default/http-filter", self.http_url(), sha256_hex(&self.http_module)),
            ("team-a/file-filter", self.file_url(), sha256_hex(&self.file_module)),
            ("team-b/oci-filter", self.oci_url(), self.oci.module_digest.clone()),
        ]
    }
}

/// Writes `text` to `<dir>/<name>` and returns the path.
fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write input file");
    path
}

/// Every URL the daemon lists as cached.
async fn cached_urls(daemon: &Daemon) -> Vec<String> {
    let mut client = daemon.client().await;
    list(&mut client).await.into_iter().flat_map(|m| m.urls).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn multi_document_file_warms_http_file_and_oci_plugins() {
    let up = upstreams("multi-doc").await;
    let daemon = up.daemon().await;
    let input = write_file(daemon.dir(), "plugins.yaml", &up.three_plugins_yaml());

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_success();
    run.assert_header();
    for (plugin, url, sha) in up.expected() {
        let row = run.row(plugin);
        assert!(row.contains(&url), "row of {plugin} names {url}: {row}");
        assert!(row.contains(&sha), "row of {plugin} shows sha256 {sha}: {row}");
        assert_eq!(run.outcome(plugin), "FETCHED", "{}", run.describe());
    }
    assert_eq!(run.rows().len(), 3, "one row per plugin:\n{}", run.describe());
    let cached = cached_urls(&daemon).await;
    for (_, url, _) in up.expected() {
        assert!(cached.contains(&url), "{url} is cached; ls shows {cached:?}");
    }
    assert_eq!(up.origin.hits(HTTP_PATH), 1);
    assert_eq!(up.proxy.blob_gets(&up.repo), 1, "{}", up.proxy.describe());
}

#[tokio::test]
async fn second_warm_is_all_hits_without_upstream_requests() {
    let up = upstreams("second-run").await;
    let daemon = up.daemon().await;
    let input = write_file(daemon.dir(), "plugins.yaml", &up.three_plugins_yaml());
    warm(&daemon, &["-f", path_str(&input)]).await.assert_success();
    let upstream_before = up.upstream_requests();

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_success();
    for (plugin, _, sha) in up.expected() {
        assert_eq!(run.outcome(plugin), "HIT", "{}", run.describe());
        assert!(run.row(plugin).contains(&sha), "{}", run.describe());
    }
    assert_eq!(
        up.upstream_requests(),
        upstream_before,
        "the second run contacted upstream; registry saw:\n{}",
        up.proxy.describe()
    );
}

#[tokio::test]
async fn invalid_document_fails_clearly_while_the_others_warm() {
    let up = upstreams("bad-doc").await;
    let daemon = up.daemon().await;
    let text = format!(
        "apiVersion: extensions.istio.io/v1alpha1\n\
         kind: WasmPlugin\n\
         metadata:\n  name: good-http\n\
         spec:\n  url: {http}\n\
         ---\n\
         apiVersion: extensions.istio.io/v1alpha1\n\
         kind: WasmPlugin\n\
         metadata:\n  name: bad-policy\n\
         spec:\n  url: {http}?never\n  imagePullPolicy: always\n\
         ---\n\
         apiVersion: extensions.istio.io/v1alpha1\n\
         kind: WasmPlugin\n\
         metadata:\n  name: good-oci\n\
         spec:\n  url: {oci}\n",
        http = up.http_url(),
        oci = up.oci_url(),
    );
    let input = write_file(daemon.dir(), "plugins.yaml", &text);

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_failure();
    let all = format!("{}{}", run.stdout(), run.stderr());
    let expected =
        r#"plugins.yaml doc 2: spec.imagePullPolicy: "always" is not one of UNSPECIFIED_POLICY, IfNotPresent, Always"#;
    assert!(
        all.contains(expected),
        "output names the problem ({expected}):\n{}",
        run.describe()
    );
    assert_eq!(run.outcome("default/good-http"), "FETCHED", "{}", run.describe());
    assert_eq!(run.outcome("default/good-oci"), "FETCHED", "{}", run.describe());
    assert_eq!(up.origin.hits(HTTP_PATH), 1, "only the good http plugin was fetched");
    assert_eq!(cached_urls(&daemon).await.len(), 2);
}

#[tokio::test]
async fn dry_run_fetches_nothing() {
    let up = upstreams("dry-run").await;
    let daemon = up.daemon().await;
    let input = write_file(daemon.dir(), "plugins.yaml", &up.three_plugins_yaml());

    let run = warm(&daemon, &["-f", path_str(&input), "--dry-run"]).await;

    run.assert_success();
    for (plugin, url, _) in up.expected() {
        assert!(run.row(plugin).contains(&url), "{}", run.describe());
    }
    assert_eq!(up.upstream_requests(), 0, "registry saw:\n{}", up.proxy.describe());
    assert!(cached_urls(&daemon).await.is_empty(), "nothing is cached");
}

#[tokio::test]
async fn dry_run_reports_an_invalid_document_and_exits_non_zero() {
    let up = upstreams("dry-run-bad").await;
    let daemon = up.daemon().await;
    let text = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: ok\nspec:\n  url: {}\n\
         ---\n\
         apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: no-url\nspec:\n  phase: AUTHN\n",
        up.http_url()
    );
    let input = write_file(daemon.dir(), "plugins.yaml", &text);

    let run = warm(&daemon, &["-f", path_str(&input), "--dry-run"]).await;

    run.assert_failure();
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(all.contains("plugins.yaml doc 2: spec.url"), "{}", run.describe());
    assert_eq!(up.upstream_requests(), 0);
}

#[tokio::test]
async fn directory_input_reads_every_yaml_and_json_file() {
    let up = upstreams("dir-input").await;
    let daemon = up.daemon().await;
    let dir = daemon.dir().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    write_file(
        &dir,
        "a-http.yaml",
        &format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: http-filter\nspec:\n  url: {}\n",
            up.http_url()
        ),
    );
    write_file(
        &dir,
        "b-file.yml",
        &format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: file-filter\n  namespace: team-a\nspec:\n  url: {}\n",
            up.file_url()
        ),
    );
    // What the API server returns: a WasmPluginList whose items leave out apiVersion and kind.
    let list = serde_json::json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPluginList",
        "metadata": {"resourceVersion": "900"},
        "items": [{"metadata": {"name": "oci-filter", "namespace": "team-b", "resourceVersion": "899"},
                   "spec": {"url": up.oci_url()}}],
    });
    write_file(&dir, "c-oci.json", &serde_json::to_string_pretty(&list).unwrap());
    // Not a plugin file: --help says only *.yaml, *.yml and *.json are read.
    write_file(&dir, "README.md", "# plugins of team a\n\nnot: [valid yaml\n");

    let run = warm(&daemon, &["-f", path_str(&dir)]).await;

    run.assert_success();
    for (plugin, _, sha) in up.expected() {
        assert_eq!(run.outcome(plugin), "FETCHED", "{}", run.describe());
        assert!(run.row(plugin).contains(&sha), "{}", run.describe());
    }
    assert_eq!(run.rows().len(), 3, "{}", run.describe());
}

#[tokio::test]
async fn dash_reads_plugins_from_stdin() {
    let up = upstreams("stdin").await;
    let daemon = up.daemon().await;
    // What `kubectl get wasmplugins -o json` prints: a v1 List whose items say what they are.
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
             "metadata": {"name": "http-filter", "namespace": "default", "resourceVersion": "5"},
             "spec": {"url": up.http_url()}},
            {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
             "metadata": {"name": "oci-filter", "namespace": "team-b", "resourceVersion": "6"},
             "spec": {"url": up.oci_url(), "imagePullPolicy": "IfNotPresent"}},
        ],
    });

    let run = warm_stdin(&daemon, &["-f", "-"], serde_json::to_string(&list).unwrap()).await;

    run.assert_success();
    assert_eq!(run.outcome("default/http-filter"), "FETCHED", "{}", run.describe());
    assert_eq!(run.outcome("team-b/oci-filter"), "FETCHED", "{}", run.describe());
    assert_eq!(up.origin.hits(HTTP_PATH), 1);
}

#[tokio::test]
async fn progress_lines_go_to_stderr_when_it_is_not_a_terminal() {
    let up = upstreams("progress-lines").await;
    let daemon = up.daemon().await;
    let input = write_file(daemon.dir(), "plugins.yaml", &up.three_plugins_yaml());

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_success();
    let stderr = run.stderr();
    for (plugin, url, _) in up.expected() {
        assert!(
            stderr.lines().any(|l| l.contains(plugin) && l.contains(&url)),
            "stderr has a progress line naming {plugin} and {url}:\n{}",
            run.describe()
        );
    }
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "plain lines only (no carriage returns or escape sequences) when stderr is not a terminal: {stderr:?}"
    );
}

#[tokio::test]
async fn module_that_fails_to_fetch_makes_warm_exit_non_zero_and_is_named() {
    let up = upstreams("fetch-fails").await;
    let daemon = up.daemon().await;
    let missing = up.origin.url("/filters/missing.wasm");
    let text = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: ok\nspec:\n  url: {}\n\
         ---\n\
         apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: gone\n  namespace: team-c\nspec:\n  url: {missing}\n",
        up.http_url()
    );
    let input = write_file(daemon.dir(), "plugins.yaml", &text);

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_failure();
    assert_eq!(run.outcome("default/ok"), "FETCHED", "{}", run.describe());
    let row = run.row("team-c/gone");
    assert!(
        row.contains(&missing) && row.contains("FAILED") && row.contains("NotFound"),
        "the failed row names the URL and the code: {row}"
    );
    assert_eq!(up.origin.hits("/filters/missing.wasm"), 1, "a 404 is not retried");
}

#[tokio::test]
async fn concurrency_flag_limits_how_many_plugins_are_fetched_at_once() {
    let origin = Origin::start().await;
    let mut text = String::new();
    for i in 0..3 {
        let path = format!("/slow-{i}.wasm");
        origin.serve(&path, wasm_module(&format!("cli-slow-{i}")));
        origin.delay(&path, Duration::from_millis(200));
        text.push_str(&format!(
            "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: slow-{i}\nspec:\n  url: {}\n",
            origin.url(&path)
        ));
    }
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let input = write_file(daemon.dir(), "plugins.yaml", &text);

    let run = warm(&daemon, &["-f", path_str(&input), "--concurrency", "1"]).await;

    run.assert_success();
    // The progress lines say when each plugin starts and ends; with one at a time they never overlap.
    let mut running = 0;
    let mut most = 0;
    for line in run.stderr().lines() {
        if !line.contains("default/slow-") {
            continue;
        }
        if line.contains("warming") {
            running += 1;
        } else if line.contains("FETCHED") {
            running -= 1;
        }
        most = most.max(running);
    }
    assert_eq!(most, 1, "one plugin at a time:\n{}", run.describe());
    for i in 0..3 {
        assert_eq!(
            run.outcome(&format!("default/slow-{i}")),
            "FETCHED",
            "{}",
            run.describe()
        );
    }
}

/// The plugin's `namespace/name` and `metadata.resourceVersion` are the request's resource identity: a proxy's
/// agent asking for the same pair with `Always` afterwards gets a hit.
#[tokio::test]
async fn warm_records_the_plugin_as_namespace_name_at_its_resource_version() {
    let up = upstreams("identity").await;
    let daemon = up.daemon().await;
    let text = format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n\
         metadata:\n  name: pinned\n  namespace: team-a\n  resourceVersion: \"7\"\n\
         spec:\n  url: {}\n  imagePullPolicy: Always\n",
        up.http_url()
    );
    let input = write_file(daemon.dir(), "plugins.yaml", &text);
    warm(&daemon, &["-f", path_str(&input)]).await.assert_success();
    let mut client = daemon.client().await;

    let (info, _) = fetch_ok(
        &mut client,
        req_policy(&up.http_url(), PullPolicy::Always, "team-a/pinned", "7"),
    )
    .await;

    assert_eq!(info.outcome, Outcome::Hit as i32, "{info:?}");
    assert_eq!(up.origin.hits(HTTP_PATH), 1);
}

/// An `Always` plugin is fetched again when its resourceVersion changes, and only then.
#[tokio::test]
async fn always_plugin_is_refetched_when_its_resource_version_changes() {
    let up = upstreams("new-version").await;
    let daemon = up.daemon().await;
    let plugin = |version: &str| {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n\
             metadata:\n  name: moving\n  resourceVersion: \"{version}\"\n\
             spec:\n  url: {}\n  imagePullPolicy: Always\n",
            up.http_url()
        )
    };
    let v7 = write_file(daemon.dir(), "v7.yaml", &plugin("7"));
    let v8 = write_file(daemon.dir(), "v8.yaml", &plugin("8"));
    warm(&daemon, &["-f", path_str(&v7)]).await.assert_success();
    let same = warm(&daemon, &["-f", path_str(&v7)]).await;
    assert_eq!(same.outcome("default/moving"), "HIT", "{}", same.describe());
    assert_eq!(up.origin.hits(HTTP_PATH), 1);

    let run = warm(&daemon, &["-f", path_str(&v8)]).await;

    run.assert_success();
    assert_eq!(run.outcome("default/moving"), "REFRESHED", "{}", run.describe());
    assert_eq!(up.origin.hits(HTTP_PATH), 2);
}

// ---------------------------------------------------------------------------------------------------------------
// The command line: what is refused before any daemon is contacted
// ---------------------------------------------------------------------------------------------------------------

/// `wasmcache warm ARGS` with no daemon behind `--socket`.
async fn warm_without_daemon(args: &[&str]) -> Warmed {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("nobody.sock");
    let mut all = vec!["warm", "--socket", path_str(&socket)];
    all.extend_from_slice(args);
    Warmed {
        output: run_cli(&all, &[]).await,
    }
}

/// A file of one valid plugin, whose URL nothing listens on.
fn one_plugin_file(dir: &Path) -> PathBuf {
    write_file(
        dir,
        "plugins.yaml",
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: ok\n\
         spec:\n  url: http://127.0.0.1:9/m.wasm\n",
    )
}

#[tokio::test]
async fn warm_without_files_or_cluster_is_a_usage_error() {
    let run = warm_without_daemon(&[]).await;

    assert_eq!(run.output.status.code(), Some(64), "{}", run.describe());
    let stderr = run.stderr();
    assert!(
        stderr.contains("--filename") && stderr.contains("--from-cluster") && stderr.contains("Usage:"),
        "a usage message naming -f and --from-cluster:\n{}",
        run.describe()
    );
}

#[tokio::test]
async fn concurrency_outside_1_to_64_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = one_plugin_file(dir.path());

    for n in ["0", "65"] {
        let run = warm_without_daemon(&["-f", path_str(&input), "--dry-run", "--concurrency", n]).await;

        assert_eq!(
            run.output.status.code(),
            Some(64),
            "--concurrency {n}:\n{}",
            run.describe()
        );
        assert!(
            run.stderr().contains("--concurrency") && run.stderr().contains("64"),
            "--concurrency {n}: the message names the flag and its bound:\n{}",
            run.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What the daemon would refuse, found before sending: by the dry run without any daemon, and by a real run
// before the request goes out. Reported at the file, document and field, as invalid documents are.
// ---------------------------------------------------------------------------------------------------------------

/// A WasmPlugin document named `name` whose spec is `spec` (lines of `  key: value`).
fn plugin_doc(name: &str, spec: &str) -> String {
    format!("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\n  namespace: team-a\nspec:\n{spec}")
}

/// An http URL nothing listens on: the dry run must not need it.
const NOWHERE: &str = "http://127.0.0.1:9/m.wasm";

#[tokio::test]
async fn dry_run_refuses_a_short_sha256_naming_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}---\n{}",
        plugin_doc("ok", &format!("  url: {NOWHERE}\n")),
        plugin_doc("short-sha", &format!("  url: {NOWHERE}\n  sha256: abc123\n"))
    );
    let input = write_file(dir.path(), "plugins.yaml", &text);

    let run = warm_without_daemon(&["-f", path_str(&input), "--dry-run"]).await;

    assert_eq!(run.output.status.code(), Some(1), "{}", run.describe());
    let expected = "plugins.yaml doc 2: spec.sha256: sha256 digest must be 64 hex characters, got 6 characters";
    assert!(
        run.row("team-a/short-sha").contains(expected),
        "the row says {expected:?}:\n{}",
        run.describe()
    );
    assert_eq!(run.outcome("team-a/ok"), "VALID", "{}", run.describe());
}

#[tokio::test]
async fn dry_run_accepts_a_sha256_with_its_prefix_as_the_daemon_does() {
    let dir = tempfile::tempdir().unwrap();
    let sha = format!("sha256:{}", "AB".repeat(32));
    let input = write_file(
        dir.path(),
        "plugins.yaml",
        &plugin_doc("prefixed", &format!("  url: {NOWHERE}\n  sha256: \"{sha}\"\n")),
    );

    let run = warm_without_daemon(&["-f", path_str(&input), "--dry-run"]).await;

    run.assert_success();
    assert_eq!(run.outcome("team-a/prefixed"), "VALID", "{}", run.describe());
}

#[tokio::test]
async fn dry_run_refuses_a_malformed_oci_reference_naming_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(
        dir.path(),
        "plugins.yaml",
        &plugin_doc("upper", "  url: oci://r.io/Team/x:v1\n"),
    );

    let run = warm_without_daemon(&["-f", path_str(&input), "--dry-run"]).await;

    run.assert_failure();
    let expected = r#"plugins.yaml doc 1: spec.url: oci reference "oci://r.io/Team/x:v1" is malformed: repository "Team/x" must be lowercase"#;
    assert!(
        run.row("team-a/upper").contains(expected),
        "the row says {expected:?}:\n{}",
        run.describe()
    );
}

#[tokio::test]
async fn dry_run_names_the_list_item_of_a_refused_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let list = serde_json::json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPluginList",
        "items": [
            {"metadata": {"name": "ok", "namespace": "team-a"}, "spec": {"url": NOWHERE}},
            {"metadata": {"name": "no-scheme", "namespace": "team-a"}, "spec": {"url": "ghcr.io/Team/filter:v1"}},
        ],
    });
    let input = write_file(dir.path(), "plugins.json", &list.to_string());

    let run = warm_without_daemon(&["-f", path_str(&input), "--dry-run"]).await;

    run.assert_failure();
    // Without a scheme the url is an OCI reference, as in Istio; this one breaks the reference grammar.
    let expected = "plugins.json doc 1: items[1].spec.url: oci reference \"oci://ghcr.io/Team/filter:v1\" is malformed";
    assert!(
        run.row("team-a/no-scheme").contains(expected),
        "the row says {expected:?}:\n{}",
        run.describe()
    );
    assert_eq!(run.outcome("team-a/ok"), "VALID", "{}", run.describe());
}

#[tokio::test]
async fn dry_run_refuses_a_malformed_pull_secret_naming_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("team-a")).unwrap();
    std::fs::write(secrets.join("team-a").join("regcred"), r#"{"auths": "not an object"}"#).unwrap();
    let input = write_file(
        dir.path(),
        "plugins.yaml",
        &plugin_doc("private", "  url: oci://r.io/team/x:v1\n  imagePullSecret: regcred\n"),
    );

    let run = warm_without_daemon(&[
        "-f",
        path_str(&input),
        "--pull-secret-dir",
        path_str(&secrets),
        "--dry-run",
    ])
    .await;

    run.assert_failure();
    let expected = "plugins.yaml doc 1: spec.imagePullSecret: pull secret: ";
    assert!(
        run.row("team-a/private").contains(expected),
        "the row says {expected:?}...:\n{}",
        run.describe()
    );
}

#[tokio::test]
async fn dry_run_names_file_document_and_field_of_a_pull_secret_it_cannot_find() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(
        dir.path(),
        "plugins.yaml",
        &plugin_doc("private", "  url: oci://r.io/team/x:v1\n  imagePullSecret: regcred\n"),
    );

    let run = warm_without_daemon(&["-f", path_str(&input), "--dry-run"]).await;

    run.assert_failure();
    let expected = "plugins.yaml doc 1: spec.imagePullSecret: image pull secret \"regcred\" is named, but no \
                    --pull-secret-dir or --from-cluster says where secrets are";
    assert!(
        run.row("team-a/private").contains(expected),
        "the row says {expected:?}:\n{}",
        run.describe()
    );
}

/// A real run checks each request as the daemon would before sending it: the refused plugin is reported as the
/// dry run reports it, never reaches the daemon, and the others warm.
#[tokio::test]
async fn warm_refuses_what_the_daemon_would_before_sending_it() {
    let origin = Origin::start().await;
    origin.serve("/good.wasm", wasm_module("warm-checked-good"));
    origin.serve("/bad.wasm", wasm_module("warm-checked-bad"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let text = format!(
        "{}---\n{}",
        plugin_doc("good", &format!("  url: {}\n", origin.url("/good.wasm"))),
        plugin_doc(
            "bad",
            &format!("  url: {}\n  sha256: abc123\n", origin.url("/bad.wasm"))
        )
    );
    let input = write_file(daemon.dir(), "plugins.yaml", &text);

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_failure();
    let expected = "plugins.yaml doc 2: spec.sha256: sha256 digest must be 64 hex characters, got 6 characters";
    assert!(
        run.row("team-a/bad").contains(expected),
        "the row says {expected:?}:\n{}",
        run.describe()
    );
    assert_eq!(run.outcome("team-a/good"), "FETCHED", "{}", run.describe());
    assert_eq!(origin.hits("/bad.wasm"), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Pull secrets
// ---------------------------------------------------------------------------------------------------------------

/// A plugin in `team-a` pulling `repo:v1` from `proxy` with secret `regcred`.
fn private_plugin_yaml(proxy: &Proxy, repo: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n\
         metadata:\n  name: private\n  namespace: team-a\n\
         spec:\n  url: {}\n  imagePullSecret: regcred\n",
        proxy.oci(&format!("{repo}:v1"))
    )
}

/// The HTTPS+auth registry with `repo:v1` pushed, a proxy, and a daemon that trusts the registry's CA.
async fn private_setup(repo: &str) -> (Proxy, Image, Daemon) {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let image = registry.push_module(repo, "v1").await;
    let ca = path_str(registry.ca_file()).to_string();
    let daemon = Daemon::start(&["--ca-file", &ca, "--retry-backoff", "10ms"]).await;
    (proxy, image, daemon)
}

#[tokio::test]
async fn pull_secret_dir_docker_config_json_pulls_a_private_image() {
    let repo = "warm/secret-raw";
    let (proxy, image, daemon) = private_setup(repo).await;
    let secrets = daemon.dir().join("secrets");
    std::fs::create_dir_all(secrets.join("team-a")).unwrap();
    std::fs::write(
        secrets.join("team-a").join("regcred"),
        docker_config_json(&proxy.host(), USER_A.0, USER_A.1),
    )
    .unwrap();
    let input = write_file(daemon.dir(), "plugins.yaml", &private_plugin_yaml(&proxy, repo));

    let run = warm(
        &daemon,
        &["-f", path_str(&input), "--pull-secret-dir", path_str(&secrets)],
    )
    .await;

    run.assert_success();
    assert_eq!(run.outcome("team-a/private"), "FETCHED", "{}", run.describe());
    assert!(
        run.row("team-a/private").contains(&image.module_digest),
        "{}",
        run.describe()
    );
    assert_eq!(proxy.blob_gets_ok(repo), 1, "{}", proxy.describe());
}

#[tokio::test]
async fn pull_secret_dir_secret_manifest_pulls_a_private_image() {
    let repo = "warm/secret-manifest";
    let (proxy, image, daemon) = private_setup(repo).await;
    let secrets = daemon.dir().join("secrets");
    std::fs::create_dir_all(secrets.join("team-a")).unwrap();
    let config = docker_config_json(&proxy.host(), USER_B.0, USER_B.1);
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: team-a\n\
         type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        base64(&config)
    );
    std::fs::write(secrets.join("team-a").join("regcred"), manifest).unwrap();
    let input = write_file(daemon.dir(), "plugins.yaml", &private_plugin_yaml(&proxy, repo));

    let run = warm(
        &daemon,
        &["-f", path_str(&input), "--pull-secret-dir", path_str(&secrets)],
    )
    .await;

    run.assert_success();
    assert_eq!(run.outcome("team-a/private"), "FETCHED", "{}", run.describe());
    assert!(
        run.row("team-a/private").contains(&image.module_digest),
        "{}",
        run.describe()
    );
    assert_eq!(proxy.blob_gets_ok(repo), 1, "{}", proxy.describe());
}

#[tokio::test]
async fn plugin_naming_a_secret_without_a_secret_source_fails_clearly() {
    let repo = "warm/secret-nowhere";
    let (proxy, _image, daemon) = private_setup(repo).await;
    let input = write_file(daemon.dir(), "plugins.yaml", &private_plugin_yaml(&proxy, repo));

    let run = warm(&daemon, &["-f", path_str(&input)]).await;

    run.assert_failure();
    let row = run.row("team-a/private");
    assert!(row.contains("FAILED"), "{}", run.describe());
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        all.contains("regcred") && all.contains("--pull-secret-dir"),
        "the failure names the secret and where secrets could come from:\n{}",
        run.describe()
    );
    assert_eq!(
        proxy.total(),
        0,
        "nothing was asked of the registry:\n{}",
        proxy.describe()
    );
}

#[tokio::test]
async fn missing_secret_file_fails_naming_its_path() {
    let repo = "warm/secret-missing";
    let (proxy, _image, daemon) = private_setup(repo).await;
    let secrets = daemon.dir().join("secrets");
    std::fs::create_dir_all(secrets.join("team-a")).unwrap();
    let input = write_file(daemon.dir(), "plugins.yaml", &private_plugin_yaml(&proxy, repo));

    let run = warm(
        &daemon,
        &["-f", path_str(&input), "--pull-secret-dir", path_str(&secrets)],
    )
    .await;

    run.assert_failure();
    let expected_path = secrets.join("team-a").join("regcred");
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        all.contains(path_str(&expected_path)),
        "the failure names {}:\n{}",
        expected_path.display(),
        run.describe()
    );
    assert_eq!(proxy.total(), 0, "{}", proxy.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// The Warm RPC
// ---------------------------------------------------------------------------------------------------------------

fn item(id: &str, request: FetchRequest) -> WarmItem {
    WarmItem {
        id: id.to_string(),
        request: Some(request),
    }
}

/// Sends a Warm request and collects every event until the stream ends (bounded: 30 s).
async fn warm_rpc(daemon: &Daemon, request: WarmRequest) -> Vec<WarmEvent> {
    let mut client = daemon.client().await;
    let collect = async {
        let mut stream = client.warm(request).await.expect("warm call").into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.expect("warm stream") {
            events.push(event);
        }
        events
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("the warm stream ended within 30 s")
}

fn events_of<'a>(events: &'a [WarmEvent], id: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.id == id)
        .map(|e| e.event.as_ref().expect("every event has a body"))
        .collect()
}

#[tokio::test]
async fn warm_rpc_sends_started_first_and_done_or_failed_last_for_each_item() {
    let origin = Origin::start().await;
    origin.serve("/a.wasm", wasm_module("rpc-a"));
    origin.serve("/b.wasm", wasm_module("rpc-b"));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let ids = ["ns/a", "ns/b", "ns/missing"];

    let events = warm_rpc(
        &daemon,
        WarmRequest {
            items: vec![
                item(ids[0], req(&origin.url("/a.wasm"))),
                item(ids[1], req(&origin.url("/b.wasm"))),
                item(ids[2], req(&origin.url("/missing.wasm"))),
            ],
            concurrency: 0,
        },
    )
    .await;

    for event in &events {
        assert!(ids.contains(&event.id.as_str()), "unknown id in {event:?}");
    }
    for id in ids {
        let mine = events_of(&events, id);
        assert!(
            matches!(mine.first(), Some(Event::Started(_))),
            "{id}: first event is Started: {mine:?}"
        );
        let last_is_end = matches!(mine.last(), Some(Event::Done(_) | Event::Failed(_)));
        assert!(last_is_end, "{id}: last event is Done or Failed: {mine:?}");
        let ends = mine
            .iter()
            .filter(|e| matches!(e, Event::Done(_) | Event::Failed(_)))
            .count();
        assert_eq!(ends, 1, "{id}: exactly one end event: {mine:?}");
    }
    let done_a = events_of(&events, "ns/a");
    match done_a.last() {
        Some(Event::Done(info)) => assert_eq!(info.sha256, sha256_hex(&wasm_module("rpc-a"))),
        other => panic!("ns/a ends with Done, got {other:?}"),
    }
    assert!(matches!(
        events_of(&events, "ns/missing").last(),
        Some(Event::Failed(_))
    ));
}

#[tokio::test]
async fn warm_rpc_failure_carries_the_code_fetch_would_return() {
    let origin = Origin::start().await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let url = origin.url("/missing.wasm");

    let events = warm_rpc(
        &daemon,
        WarmRequest {
            items: vec![item("ns/missing", req(&url))],
            concurrency: 0,
        },
    )
    .await;

    let mut client = daemon.client().await;
    let status = fetch_err(&mut client, req(&url)).await;
    assert_code(&status, Code::NotFound);
    match events_of(&events, "ns/missing").last() {
        Some(Event::Failed(failed)) => {
            assert_eq!(failed.code, Code::NotFound as i32, "{failed:?}");
            assert!(failed.message.contains(&url), "the message names the URL: {failed:?}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn warm_rpc_reports_progress_during_a_slow_large_download() {
    let origin = Origin::start().await;
    let size = 3 * 1024 * 1024;
    let module = wasm_module_of_size("rpc-progress", size);
    origin.serve("/big.wasm", module.clone());
    // 48 frames of 64 KiB, 40 ms apart: about 2 s of download.
    origin.throttle("/big.wasm", Duration::from_millis(40));
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let events = warm_rpc(
        &daemon,
        WarmRequest {
            items: vec![item("ns/big", req(&origin.url("/big.wasm")))],
            concurrency: 0,
        },
    )
    .await;

    let mine = events_of(&events, "ns/big");
    let progress: Vec<u64> = mine
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(p.bytes),
            _ => None,
        })
        .collect();
    assert!(
        progress.len() >= 2,
        "several progress events during a ~2 s download: {progress:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress only grows: {progress:?}"
    );
    assert!(
        progress.iter().all(|&b| b <= size as u64),
        "progress never exceeds the module size: {progress:?}"
    );
    match mine.last() {
        Some(Event::Done(info)) => assert_eq!(info.size, size as u64),
        other => panic!("ends with Done, got {other:?}"),
    }
    assert_eq!(origin.hits("/big.wasm"), 1);
}

#[tokio::test]
async fn warm_rpc_runs_at_most_concurrency_items_at_once() {
    let origin = Origin::start().await;
    let mut items = Vec::new();
    for i in 0..5 {
        let path = format!("/slow-{i}.wasm");
        origin.serve(&path, wasm_module(&format!("slow-{i}")));
        origin.delay(&path, Duration::from_millis(250));
        items.push(item(&format!("ns/slow-{i}"), req(&origin.url(&path))));
    }
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;

    let events = warm_rpc(&daemon, WarmRequest { items, concurrency: 2 }).await;

    let mut running: HashMap<String, bool> = HashMap::new();
    let mut most = 0;
    for event in &events {
        match event.event {
            Some(Event::Started(_)) => {
                running.insert(event.id.clone(), true);
            }
            Some(Event::Done(_) | Event::Failed(_)) => {
                running.insert(event.id.clone(), false);
            }
            _ => {}
        }
        most = most.max(running.values().filter(|r| **r).count());
    }
    assert!(most <= 2, "at most 2 items ran at once, saw {most}: {events:?}");
    let done = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::Done(_))))
        .count();
    assert_eq!(done, 5, "every item was warmed: {events:?}");
}
