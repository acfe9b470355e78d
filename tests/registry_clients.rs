//! Registry clients that no one here wrote, against the real daemon's `--registry-listen` endpoint in front of
//! the real docker-registry: skopeo (containers/image, Go), the Python ORAS SDK (`oras` on PyPI, requests) and
//! curl following the distribution spec by hand. Each pulls a CNCF Wasm image and the test compares what it got
//! with what was pushed, byte for byte.
//!
//! **Naming the upstream.** The test registries listen on `127.0.0.1:PORT`, and neither skopeo nor ORAS can put
//! that in the path: a Docker reference path component is `[a-z0-9]+([._-]+[a-z0-9]+)*` (no `:`; skopeo refuses
//! `docker://127.0.0.1:5000/127.0.0.1:5001/repo`), ORAS's parser allows no `:` in its namespace either, and
//! neither sends containerd's `?ns=` query. So for them the upstream gets a name without a port: a counting
//! proxy on port 80 (plain HTTP) or 443 (HTTPS) of a loopback address of its own (`127.77.0.N`, all of
//! 127.0.0.0/8 is loopback on Linux), and the clients ask for `ENDPOINT/127.77.0.N/repo:tag`, the
//! host-in-the-path form. Binding those ports needs root, as the network-namespace tests do. curl can send
//! `?ns=`, so its test uses the containerd mirror form with the proxy's `127.0.0.1:PORT`.
//!
//! A machine without `skopeo` or the Python `oras` package fails these tests, naming what to install
//! (`apt-get install skopeo`, `pip install oras`); `.ci/run` installs both.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Output, Stdio};

use tokio::process::Command;

use support::registry::*;
use support::*;

// ---------------------------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------------------------

/// A counting registry proxy on port 80 (plain HTTP) or 443 (HTTPS) of a loopback address of its own, so
/// that the upstream has a name without a port: `127.77.0.N`. The other of the two ports is bound without
/// listening, which keeps it for this test: a daemon that tries HTTPS first on a plain-HTTP upstream is
/// refused there at once, never answered by another test's HTTPS proxy.
struct PortlessUpstream {
    proxy: Proxy,
    _reserved: tokio::net::TcpSocket,
}

impl PortlessUpstream {
    async fn start(registry: &Registry) -> PortlessUpstream {
        let (port, other) = if registry.is_tls() { (443, 80) } else { (80, 443) };
        for n in 2..=254u8 {
            let ip = Ipv4Addr::new(127, 77, 0, n);
            let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
            if reserved.bind(SocketAddr::from((ip, other))).is_err() {
                continue;
            }
            if let Ok(listener) = std::net::TcpListener::bind(SocketAddr::from((ip, port))) {
                return PortlessUpstream {
                    proxy: registry.proxy_on(listener).await,
                    _reserved: reserved,
                };
            }
        }
        panic!("no 127.77.0.N had ports 80 and 443 free (binding a port below 1024 needs root)");
    }

    /// The proxy's IP, which the clients put in the path as the upstream registry.
    fn name(&self) -> String {
        let host = self.proxy.host();
        let (ip, _) = host.rsplit_once(':').expect("ip:port");
        ip.to_string()
    }
}

/// A daemon serving the registry endpoint on a free loopback port, with `args` for the upstream.
async fn daemon_with_endpoint(args: &[&str]) -> (Daemon, SocketAddr) {
    let endpoint = free_local_addr();
    let listen = endpoint.to_string();
    let mut all = vec!["--registry-listen", listen.as_str(), "--retry-backoff", "10ms"];
    all.extend_from_slice(args);
    (Daemon::start(&all).await, endpoint)
}

/// A daemon whose endpoint reaches the plain-HTTP `upstream` on port 80 (`--insecure-registry`: HTTPS on 443
/// is refused, so it falls back to plain HTTP).
async fn daemon_for_plain(upstream: &PortlessUpstream) -> (Daemon, SocketAddr) {
    daemon_with_endpoint(&["--insecure-registry", &upstream.name()]).await
}

// ---------------------------------------------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------------------------------------------

/// Runs `skopeo ARGS` with a home and auth file of its own (no credentials unless the arguments give some) and
/// `--insecure-policy` (skopeo's own signature policy is not under test). Panics when skopeo is missing.
async fn skopeo(home: &Path, args: &[&str]) -> Output {
    let output = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("XDG_CONFIG_HOME", home)
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run skopeo ({e}): these tests drive the real client; install the Debian package skopeo \
                 (apt-get install skopeo), as .ci/run does"
            )
        });
    output
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `skopeo inspect --raw` through the endpoint gets upstream's manifest, and `skopeo manifest-digest` over it
/// reports upstream's manifest digest: the endpoint answers the manifest byte for byte. (A plain `skopeo
/// inspect` of a CNCF Wasm artifact fails in skopeo itself, before any request, with "unsupported
/// image-specific operation on artifact with type application/vnd.wasm.config.v0+json": skopeo 1.9 reads only
/// container image configs.)
#[tokio::test]
async fn skopeo_inspect_reports_the_upstream_manifest_digest() {
    let registry = Registry::shared_plain();
    let upstream = PortlessUpstream::start(registry).await;
    let proxy = &upstream.proxy;
    let image = registry.push_module("clients/inspect", "v1").await;
    let (_daemon, endpoint) = daemon_for_plain(&upstream).await;
    let home = tempfile::tempdir().unwrap();
    let reference = format!("docker://{endpoint}/{}/clients/inspect:v1", upstream.name());

    let raw = skopeo(home.path(), &["inspect", "--raw", "--tls-verify=false", &reference]).await;
    assert!(
        raw.status.success(),
        "skopeo inspect --raw {reference}: {}",
        describe(&raw)
    );
    let saved = home.path().join("manifest.json");
    std::fs::write(&saved, &raw.stdout).unwrap();
    let digest = skopeo(home.path(), &["manifest-digest", saved.to_str().unwrap()]).await;

    assert!(raw.stdout == image.manifest, "upstream's manifest, byte for byte");
    assert!(digest.status.success(), "skopeo manifest-digest: {}", describe(&digest));
    assert_eq!(String::from_utf8_lossy(&digest.stdout).trim(), image.manifest_digest);
    assert_eq!(
        proxy.manifest_requests("clients/inspect"),
        1,
        "upstream was asked once: {}",
        proxy.describe()
    );
}

/// `skopeo copy` to a `dir:` destination writes the module layer as a file named by its digest, with the
/// pushed bytes, and the manifest as upstream served it.
#[tokio::test]
async fn skopeo_copy_writes_the_module_blob_with_the_pushed_bytes() {
    let registry = Registry::shared_plain();
    let upstream = PortlessUpstream::start(registry).await;
    let proxy = &upstream.proxy;
    let image = registry.push_module("clients/copy", "v1").await;
    let (_daemon, endpoint) = daemon_for_plain(&upstream).await;
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let source = format!("docker://{endpoint}/{}/clients/copy:v1", upstream.name());
    let destination = format!("dir:{}", out.display());

    let output = skopeo(home.path(), &["copy", "--src-tls-verify=false", &source, &destination]).await;

    assert!(output.status.success(), "skopeo copy {source}: {}", describe(&output));
    let hex = image.module_blob_digest.trim_start_matches("sha256:");
    let module = std::fs::read(out.join(hex))
        .unwrap_or_else(|e| panic!("skopeo wrote no {hex} ({e}); it wrote {:?}", files_under(&out)));
    assert!(
        module == image.module,
        "the module blob skopeo wrote is the pushed module"
    );
    let manifest = std::fs::read(out.join("manifest.json")).expect("manifest.json");
    assert!(
        manifest == image.manifest,
        "skopeo kept upstream's manifest byte for byte"
    );
    assert_eq!(
        proxy.blob_gets("clients/copy"),
        2,
        "the module and the config, each pulled through once: {}",
        proxy.describe()
    );
}

/// A private module behind the HTTPS registry with htpasswd auth: skopeo's `--src-creds` reach upstream through
/// the endpoint (skopeo takes the Basic scheme from the challenge on `GET /v2/`), and without credentials skopeo
/// fails with the endpoint's 401.
///
/// The daemon reaches the registry at `127.77.0.N:443` with `--insecure-registry`, that is without verifying
/// its certificate: the test CA's certificate names 127.0.0.1 only (`--ca-file` alone suffices when the
/// registry is reached by that address, as tests/registry_endpoint_rules.rs does).
#[tokio::test]
async fn skopeo_pulls_a_private_module_with_its_credentials_and_fails_without() {
    let registry = Registry::shared_tls_auth();
    let upstream = PortlessUpstream::start(registry).await;
    let proxy = &upstream.proxy;
    let image = registry.push_module("clients/private", "v1").await;
    let name = upstream.name();
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let (_daemon, endpoint) = daemon_with_endpoint(&["--insecure-registry", &name, "--ca-file", &ca]).await;
    let (user, password) = USER_A;
    let creds = format!("{user}:{password}");
    let home = tempfile::tempdir().unwrap();
    let source = format!("docker://{endpoint}/{name}/clients/private:v1");
    let with_dir = home.path().join("with");
    let without_dir = home.path().join("without");

    let without = skopeo(
        home.path(),
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-no-creds",
            &source,
            &format!("dir:{}", without_dir.display()),
        ],
    )
    .await;
    let with = skopeo(
        home.path(),
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &source,
            &format!("dir:{}", with_dir.display()),
        ],
    )
    .await;

    assert!(with.status.success(), "skopeo copy --src-creds: {}", describe(&with));
    let hex = image.module_blob_digest.trim_start_matches("sha256:");
    assert!(std::fs::read(with_dir.join(hex)).unwrap() == image.module);
    assert!(
        !without.status.success(),
        "anonymous copy succeeded: {}",
        describe(&without)
    );
    let stderr = String::from_utf8_lossy(&without.stderr).to_lowercase();
    assert!(
        stderr.contains("401") || stderr.contains("unauthorized"),
        "skopeo names the 401: {}",
        describe(&without)
    );
    assert!(!without_dir.join(hex).exists(), "no module written without credentials");
    assert!(
        proxy.seen().iter().any(|s| s.authorized && s.status == 200),
        "upstream saw the credentials: {}",
        proxy.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// oras (Python SDK)
// ---------------------------------------------------------------------------------------------------------------

/// Pulls `TARGET` with `oras.client.OrasClient(insecure=True)` (plain HTTP) into `OUTDIR` and prints the files
/// it wrote as JSON. Exits 3 when the package is missing.
const ORAS_PULL: &str = r#"
import json, sys
try:
    import oras.client
except ImportError:
    sys.stderr.write("the Python oras package is missing: pip install oras\n")
    sys.exit(3)
target, outdir = sys.argv[1], sys.argv[2]
client = oras.client.OrasClient(insecure=True)
files = client.pull(target=target, outdir=outdir)
print(json.dumps({"version": oras.__version__, "files": files}))
"#;

/// The ORAS Python SDK pulls the CNCF Wasm artifact over plain HTTP: the manifest with its default `Accept`
/// list, then the module layer, which it writes under the layer's digest (the layer has no title annotation).
#[tokio::test]
async fn oras_python_sdk_pulls_the_module_over_plain_http() {
    let registry = Registry::shared_plain();
    let upstream = PortlessUpstream::start(registry).await;
    let proxy = &upstream.proxy;
    let image = registry.push_module("clients/oras", "v1").await;
    let (_daemon, endpoint) = daemon_for_plain(&upstream).await;
    let home = tempfile::tempdir().unwrap();
    let outdir = home.path().join("out");
    let target = format!("{endpoint}/{}/clients/oras:v1", upstream.name());

    let output = Command::new("python3")
        .arg("-c")
        .arg(ORAS_PULL)
        .arg(&target)
        .arg(&outdir)
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path().join("docker"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run python3");

    assert!(
        output.status.code() != Some(3),
        "the Python oras package is missing: pip install oras (.ci/run installs it)"
    );
    assert!(output.status.success(), "oras pull {target}: {}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    let files: Vec<&str> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f.as_str().expect("a path"))
        .collect();
    assert_eq!(files.len(), 1, "one layer, one file: {report}");
    assert!(
        files[0].ends_with(&image.module_blob_digest),
        "named by the layer digest: {report}"
    );
    assert!(
        std::fs::read(files[0]).unwrap() == image.module,
        "oras wrote the pushed module"
    );
    assert_eq!(
        proxy.blob_gets("clients/oras"),
        1,
        "the module is pulled upstream once, with the manifest: {}",
        proxy.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------------------------

/// What curl got: the status and headers of the last response (`-D`), the body (`-o`; with `-I` curl writes the
/// headers there too) and the body bytes it read (`%{size_download}`).
struct Curled {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    downloaded: u64,
}

impl Curled {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -sS ARGS URL`, headers and body written to files and parsed. Panics when curl is missing or fails to
/// get a response at all.
async fn curl(args: &[&str], url: &str) -> Curled {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "%{size_download}", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run curl ({e}): apt-get install curl, as .ci/run does"));
    assert!(output.status.success(), "curl {args:?} {url}: {}", describe(&output));
    let text = std::fs::read_to_string(&headers).expect("curl wrote the headers");
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let downloaded = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("size_download in {:?}", output.stdout));
    Curled {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        downloaded,
    }
}

/// curl, by the distribution spec: the version check, a manifest GET and HEAD with `Accept`, a ranged blob
/// GET, and a PUT refused with 405.
#[tokio::test]
async fn curl_follows_the_distribution_spec_against_the_endpoint() {
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let module = wasm_module_of_size("clients/curl", 300_000);
    let image = registry.push("clients/curl", Some("v1"), cncf_image(&module)).await;
    let host = proxy.host();
    let (_daemon, endpoint) = daemon_with_endpoint(&["--insecure-registry", &host]).await;
    let base = format!("http://{endpoint}");
    let accept = format!("Accept: {OCI_MANIFEST}");
    let manifest_url = format!("{base}/v2/clients/curl/manifests/v1?ns={host}");
    let blob_url = format!("{base}/v2/clients/curl/blobs/{}?ns={host}", image.module_blob_digest);

    let version = curl(&[], &format!("{base}/v2/")).await;
    let manifest = curl(&["-H", &accept], &manifest_url).await;
    let head = curl(&["-I", "-H", &accept], &manifest_url).await;
    let ranged = curl(&["-H", "Range: bytes=1000-1999"], &blob_url).await;
    let put = curl(
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {OCI_MANIFEST}"),
            "--data-binary",
            "{}",
        ],
        &format!("{base}/v2/clients/curl/manifests/v2?ns={host}"),
    )
    .await;

    assert_eq!(version.status, 200);
    assert_eq!(version.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
    assert_eq!(manifest.status, 200, "{}", String::from_utf8_lossy(&manifest.body));
    assert_eq!(manifest.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(
        manifest.header("Docker-Content-Digest"),
        Some(image.manifest_digest.as_str())
    );
    assert!(manifest.body == image.manifest, "upstream's manifest, byte for byte");
    assert_eq!(head.status, 200);
    assert_eq!(head.downloaded, 0, "HEAD has no body");
    assert_eq!(
        head.header("Content-Length"),
        Some(image.manifest.len().to_string().as_str())
    );
    assert_eq!(
        head.header("Docker-Content-Digest"),
        Some(image.manifest_digest.as_str())
    );
    assert_eq!(ranged.status, 206);
    assert_eq!(
        ranged.header("Content-Range"),
        Some(format!("bytes 1000-1999/{}", module.len()).as_str())
    );
    assert!(ranged.body == module[1000..2000], "the range's bytes");
    assert_eq!(put.status, 405);
    assert_eq!(put.header("Allow"), Some("GET, HEAD"));
    assert_eq!(
        proxy.blob_gets("clients/curl"),
        1,
        "the module is pulled once, with the manifest; the range comes from the cache: {}",
        proxy.describe()
    );
}
