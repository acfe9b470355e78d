//! Target 1: cold pull of a 4 MiB and a 32 MiB module from the local registry into a verified file on
//! disk, `wasmcache fetch -o FILE oci://...` (through a running daemon whose cache never has the module)
//! against `skopeo copy docker://... dir:DIR`. Both are whole commands, timed from spawn to exit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tokio::runtime::Runtime;
use wasmcache::proto::module_cache_client::ModuleCacheClient;
use wasmcache::proto::remove_request::Target;
use wasmcache::proto::RemoveRequest;

use crate::procs::{Daemon, WASMCACHE};
use crate::registry::Registry;
use crate::report::{ratio, Row, Section};
use crate::stats::{list, median, MIB};
use crate::Opts;

const GOAL: f64 = 0.5;

/// A module of `size` bytes: the Wasm header, then random bytes (nothing compresses or dedupes them).
pub fn module(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes[..8].copy_from_slice(b"\0asm\x01\0\0\0");
    bytes
}

/// The sha256 of a file, in hex.
pub fn file_sha256(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    wasmcache::digest::hash_reader(file).expect("hash file").0.to_string()
}

pub fn run(rt: &Runtime, work: &Path, opts: &Opts) -> Section {
    let reps = opts.reps(7);
    let dir = work.join("pull");
    std::fs::create_dir_all(&dir).expect("pull dir");
    let registry = Registry::start(&dir.join("registry"));
    let registry_host = registry.addr.to_string();
    let daemon = rt.block_on(Daemon::start(
        &dir,
        &dir.join("cache"),
        &["--insecure-registry".into(), registry_host.clone()],
    ));
    let mut client = ModuleCacheClient::new(rt.block_on(daemon.channel()));

    let mut rows = Vec::new();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A CNCF Wasm artifact (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer of \
         random bytes) is pushed to Debian's `docker-registry` on loopback (plain HTTP). wasmcache: `wasmcache \
         fetch --json -o FILE oci://{registry_host}/REPO:v1` against a running daemon started with \
         `--insecure-registry`; the module is removed from its cache (`Remove` by digest) before every \
         repetition and the answer must say `FETCHED`. skopeo: `skopeo copy --insecure-policy \
         --src-tls-verify=false docker://{registry_host}/REPO:v1 dir:DIR` into a new directory. Each command \
         is timed from spawn to exit, and its file is checked against the module's sha256 afterwards \
         (untimed). One untimed warm-up of each, then {reps} repetitions alternating which goes first. \
         \"The daemon's fetch\" is the `duration_ms` of the daemon's own `module served` log line: from the \
         request's arrival to the module being committed and opened (download, hashing, fsync, rename); \
         the rest of wasmcache's time is the CLI's start and its copy of the cached file to FILE (the CLI runs \
         on the daemon's host and can read its cache, so it copies the file the daemon names instead of \
         streaming it over the socket), with an fsync of FILE.\n"
    );
    let _ = writeln!(
        body,
        "| module | wasmcache median | skopeo median | ratio | of which the daemon's fetch, median | wasmcache per repetition (ms) | skopeo per repetition (ms) |"
    );
    let _ = writeln!(body, "|---|---|---|---|---|---|---|");
    for (index, size) in [4 * MIB as usize, 32 * MIB as usize].into_iter().enumerate() {
        let label = format!("{} MiB", size as u64 / MIB);
        let bytes = module(size, 100 + index as u64);
        let repo = format!("bench/pull-{}m", size as u64 / MIB);
        let pushed = rt.block_on(registry.push_cncf(&repo, "v1", &bytes));
        let url = format!("oci://{}", pushed.reference);
        drop(bytes);
        let (mut ours, mut skopeo, mut daemon_ms) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..=reps {
            let mut run_ours = || {
                rt.block_on(async {
                    // The digest is not cached before the first run: NotFound is fine.
                    let _ = client
                        .remove(RemoveRequest {
                            target: Some(Target::Sha256(pushed.module_hex.clone())),
                        })
                        .await;
                });
                let out = dir.join(format!("out-{rep}.wasm"));
                let ms = wasmcache_fetch(&daemon, &url, &out, &pushed.module_hex);
                let _ = std::fs::remove_file(&out);
                (ms, daemon_duration_ms(&daemon))
            };
            let run_skopeo = || {
                let dest = dir.join(format!("skopeo-{rep}"));
                let ms = skopeo_copy(&pushed.reference, &dest, &pushed.module_hex);
                let _ = std::fs::remove_dir_all(&dest);
                ms
            };
            let ((a, inside), b) = if rep % 2 == 0 {
                let a = run_ours();
                (a, run_skopeo())
            } else {
                let b = run_skopeo();
                (run_ours(), b)
            };
            // Repetition 0 is the warm-up.
            if rep > 0 {
                ours.push(a);
                skopeo.push(b);
                daemon_ms.push(inside);
                eprintln!("bench: cold pull {label} rep {rep}: wasmcache {a:.1} ms, skopeo {b:.1} ms");
            }
        }
        let (m_ours, m_skopeo) = (median(&ours), median(&skopeo));
        let r = m_ours / m_skopeo;
        rows.push(Row {
            what: format!("1. Cold pull, {label}"),
            goal: format!("≤ {GOAL}× skopeo"),
            ours: format!("{m_ours:.1} ms"),
            peer: format!("skopeo {m_skopeo:.1} ms"),
            ratio: ratio(r),
            met: Some(r <= GOAL),
        });
        let _ = writeln!(
            body,
            "| {label} | {m_ours:.1} ms | {m_skopeo:.1} ms | {} | {:.0} ms | {} | {} |",
            ratio(r),
            median(&daemon_ms),
            list(&ours, 1),
            list(&skopeo, 1)
        );
    }
    Section {
        title: "1. Cold pull from a registry".into(),
        rows,
        body,
    }
}

/// The `duration_ms` of the daemon's last `module served` log line.
fn daemon_duration_ms(daemon: &Daemon) -> f64 {
    let log = daemon.proc.log_tail();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("module served"))
        .expect("a module served line in the daemon log");
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("duration_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no duration_ms in {line:?}"))
}

/// Times `wasmcache fetch -o out URL`; checks the answer (`FETCHED`, the digest) and the file.
fn wasmcache_fetch(daemon: &Daemon, url: &str, out: &Path, module_hex: &str) -> f64 {
    let mut command = Command::new(WASMCACHE);
    command
        .env_clear()
        .arg("fetch")
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("--json")
        .arg("-o")
        .arg(out)
        .arg(url);
    let started = Instant::now();
    let output = command.output().expect("run wasmcache fetch");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wasmcache fetch failed: {}{}\ndaemon log:\n{}",
        stdout,
        String::from_utf8_lossy(&output.stderr),
        daemon.proc.log_tail()
    );
    let info: serde_json::Value = serde_json::from_str(stdout.trim()).expect("fetch --json output");
    assert_eq!(info["outcome"], "FETCHED", "not a cold pull: {info}");
    assert_eq!(info["sha256"], module_hex, "fetched another module: {info}");
    assert_eq!(file_sha256(out), module_hex, "{} has other bytes", out.display());
    ms
}

/// Times `skopeo copy docker://reference dir:dest`; checks the layer file it wrote.
fn skopeo_copy(reference: &str, dest: &Path, module_hex: &str) -> f64 {
    let mut command = Command::new("skopeo");
    command
        .arg("copy")
        .arg("--insecure-policy")
        .arg("--src-tls-verify=false")
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dest.display()));
    let started = Instant::now();
    let output = command.output().expect("run skopeo");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(
        output.status.success(),
        "skopeo copy failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let layer: PathBuf = dest.join(module_hex);
    assert_eq!(file_sha256(&layer), module_hex, "skopeo wrote other bytes");
    ms
}
