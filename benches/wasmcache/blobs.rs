//! Targets 8 and 9: blob `GET` throughput of a cached 4 MiB module from the daemon's OCI registry endpoint
//! (`--registry-listen`, plain HTTP, so bodies go out with `sendfile`) against nginx serving the same file (8)
//! and against Debian's `docker-registry` serving the same blob (9), at 1, 16 and 64 concurrent clients.
//!
//! The three servers are measured in one loop, the order rotating from one repetition to the next, by the
//! same HTTP/1.1 load client as the hit-throughput comparison (`load::Target::Http`). The daemon's upstream is
//! that very `docker-registry`: the endpoint's path names it (`/v2/127.0.0.1:PORT/REPO/blobs/DIGEST`), and the
//! module is pulled through once, untimed, before the clock starts.

use std::fmt::Write as _;
use std::path::Path;

use tokio::runtime::Runtime;

use crate::load::{self, Target};
use crate::procs::{cpu_seconds, free_port, http_status, loopback, reset_peak_rss, status_bytes, Daemon, Nginx};
use crate::pull::module;
use crate::registry::Registry;
use crate::report::{ratio, Row, Section};
use crate::stats::{list, median, mib, MIB};
use crate::Opts;

const MODULE_BYTES: u64 = 4 * MIB;
const LEVELS: [usize; 3] = [1, 16, 64];
const REPO: &str = "bench/blob";
/// Target 8: the endpoint against nginx, at every level.
const NGINX_GOAL: f64 = 0.9;
/// Target 9: the endpoint against docker-registry, at every level.
const REGISTRY_GOAL: f64 = 1.5;

/// Requests per client at a level: about 512 MiB per run, and at least 2 per client so that every client
/// reuses its connection (as comparison 2).
fn per_client(clients: usize) -> usize {
    (128 / clients).max(2)
}

/// One server under load: what the load client asks of it and the processes whose CPU time it costs.
struct Side {
    name: &'static str,
    target: Target,
    pids: Box<dyn Fn() -> Vec<u32>>,
    /// The one process whose peak RSS is measured at the highest level (the daemon), and the peaks.
    rss_of: Option<u32>,
    peaks: Vec<f64>,
    /// MB/s, server CPU s/GB and load-client CPU s/GB of each repetition at the current level.
    rates: Vec<f64>,
    cpu: Vec<f64>,
    client_cpu: Vec<f64>,
}

impl Side {
    fn new(name: &'static str, target: Target, pids: Box<dyn Fn() -> Vec<u32>>) -> Side {
        Side {
            name,
            target,
            pids,
            rss_of: None,
            peaks: Vec::new(),
            rates: Vec::new(),
            cpu: Vec::new(),
            client_cpu: Vec::new(),
        }
    }

    fn measure(&mut self, rt: &Runtime, clients: usize) {
        let rss = self.rss_of.filter(|_| clients == *LEVELS.last().unwrap());
        if let Some(pid) = rss {
            reset_peak_rss(pid);
        }
        let cpu = || (self.pids)().into_iter().map(cpu_seconds).sum::<f64>();
        let before = (cpu(), cpu_seconds(std::process::id()));
        let run = rt.block_on(load::throughput(
            &self.target,
            clients,
            per_client(clients),
            MODULE_BYTES,
        ));
        if let Some(pid) = rss {
            self.peaks.push(status_bytes(pid, "VmHWM") as f64);
        }
        let gb = run.bytes as f64 / 1e9;
        self.cpu.push((cpu() - before.0) / gb);
        self.client_cpu.push((cpu_seconds(std::process::id()) - before.1) / gb);
        self.rates.push(run.mb_per_s());
    }

    fn clear(&mut self) {
        self.rates.clear();
        self.cpu.clear();
        self.client_cpu.clear();
    }
}

pub fn run(rt: &Runtime, work: &Path, opts: &Opts) -> Vec<Section> {
    let reps = opts.reps(5);
    let dir = work.join("blobs");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www dir");
    let registry = Registry::start(&dir.join("registry"));
    let bytes = module(MODULE_BYTES as usize, 800);
    let pushed = rt.block_on(registry.push_cncf(REPO, "v1", &bytes));
    let digest = format!("sha256:{}", pushed.module_hex);
    std::fs::write(www.join("m4.wasm"), &bytes).expect("write module");
    drop(bytes);

    let endpoint = loopback(free_port());
    let daemon = rt.block_on(Daemon::start(
        &dir,
        &dir.join("cache"),
        &[
            "--insecure-registry".into(),
            registry.addr.to_string(),
            "--registry-listen".into(),
            endpoint.to_string(),
        ],
    ));
    // The endpoint listens once the daemon is healthy; the manifest request pulls the module through.
    let manifest = format!("/v2/{}/{REPO}/manifests/v1", registry.addr);
    assert_eq!(
        http_status(endpoint, &manifest).ok(),
        Some(200),
        "GET {manifest} from the daemon's registry endpoint; log:\n{}",
        daemon.proc.log_tail()
    );
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    let nginx = Nginx::start(&nginx_dir, &www, "/m4.wasm");

    let daemon_pid = daemon.pid();
    let registry_pid = registry.pid();
    let idle_rss = status_bytes(daemon_pid, "VmRSS");
    let mut ours = Side::new(
        "wasmcache",
        Target::Http {
            addr: endpoint,
            path: format!("/v2/{}/{REPO}/blobs/{digest}", registry.addr),
        },
        Box::new(move || vec![daemon_pid]),
    );
    ours.rss_of = Some(daemon_pid);
    let mut sides = vec![ours];
    if opts.runs(8) {
        let nginx_pids = nginx.pids();
        sides.push(Side::new(
            "nginx",
            Target::Http {
                addr: nginx.addr,
                path: "/m4.wasm".into(),
            },
            Box::new(move || nginx_pids.clone()),
        ));
    }
    if opts.runs(9) {
        sides.push(Side::new(
            "docker-registry",
            Target::Http {
                addr: registry.addr,
                path: format!("/v2/{REPO}/blobs/{digest}"),
            },
            Box::new(move || vec![registry_pid]),
        ));
    }
    // Every server must serve exactly the module's bytes; then one untimed warm-up of each.
    for side in &sides {
        rt.block_on(load::verify(&side.target, MODULE_BYTES, &pushed.module_hex));
    }
    for side in &sides {
        rt.block_on(load::throughput(&side.target, 16, 2, MODULE_BYTES));
    }

    // Per peer (nginx, docker-registry): the summary rows and the table rows.
    let mut rows: Vec<Vec<Row>> = sides.iter().map(|_| Vec::new()).collect();
    let mut table = String::new();
    for &clients in &LEVELS {
        sides.iter_mut().for_each(Side::clear);
        for rep in 0..reps {
            let first = rep % sides.len();
            for i in (first..sides.len()).chain(0..first) {
                sides[i].measure(rt, clients);
            }
            let line: Vec<String> = sides
                .iter()
                .map(|s| format!("{} {:.0} MB/s", s.name, s.rates.last().unwrap()))
                .collect();
            eprintln!(
                "bench: registry blob throughput {clients} clients rep {}: {}",
                rep + 1,
                line.join(", ")
            );
        }
        let ours = &sides[0];
        let m_ours = median(&ours.rates);
        for (peer_index, peer) in sides.iter().enumerate().skip(1) {
            let m_peer = median(&peer.rates);
            let r = m_ours / m_peer;
            let (number, goal) = match peer.name {
                "nginx" => (8, NGINX_GOAL),
                _ => (9, REGISTRY_GOAL),
            };
            rows[peer_index].push(Row {
                what: format!("{number}. Registry blob GET, 4 MiB, {clients} clients"),
                goal: format!("≥ {goal}× {}", peer.name),
                ours: format!("{m_ours:.0} MB/s"),
                peer: format!("{} {m_peer:.0} MB/s", peer.name),
                ratio: ratio(r),
                met: Some(r >= goal),
            });
        }
        for side in &sides {
            let _ = writeln!(
                table,
                "| {clients} | {} | {} | {:.0} | {} | {:.2} | {:.2} |",
                per_client(clients),
                side.name,
                median(&side.rates),
                list(&side.rates, 0),
                median(&side.cpu),
                median(&side.client_cpu),
            );
        }
    }

    let mut body = String::new();
    let _ = writeln!(
        body,
        "A 4 MiB CNCF Wasm module pushed to Debian's `docker-registry` on loopback. wasmcache: the daemon \
         started with `--registry-listen` (plain HTTP, so a blob body goes from the cached file to the socket \
         with `sendfile`) and `--insecure-registry` naming that registry as its upstream; one untimed \
         `GET /v2/127.0.0.1:PORT/{REPO}/manifests/v1` pulls the module through before anything is measured, \
         and the load asks for `GET /v2/127.0.0.1:PORT/{REPO}/blobs/sha256:…`, a cache hit. docker-registry: \
         `GET /v2/{REPO}/blobs/sha256:…` of the same blob from its filesystem storage (access log off). nginx: \
         `GET /m4.wasm`, the same bytes, configured as in comparison 2 (`sendfile`, `tcp_nopush`, \
         `worker_processes auto`, no access log). One load client drives all three: comparison 2's HTTP/1.1 \
         client (one hyper connection per client, keep-alive, opened before the clock starts; requests one \
         after another; bodies counted, and checked against the module's sha256 once per server, untimed). \
         Aggregate throughput = all bytes / wall time; MB/s are 10^6 bytes per second. The CPU columns give \
         the CPU time (user + system, `/proc/PID/stat`) of the server's processes and of the load client per \
         GB served; all share the machine's two cores. One untimed warm-up of each server, then {reps} \
         repetitions per level, the order of the servers rotating from one repetition to the next. Goals, at \
         every level: at least {NGINX_GOAL}× nginx (8) and at least {REGISTRY_GOAL}× docker-registry (9).\n"
    );
    let _ = writeln!(
        body,
        "| clients | requests per client | server | median MB/s | per repetition | server CPU s/GB | load-client CPU s/GB |"
    );
    let _ = writeln!(body, "|---|---|---|---|---|---|---|");
    body.push_str(&table);
    let _ = writeln!(body, "\n| clients | {} |", ratio_header(&sides));
    let _ = writeln!(body, "|---|{}", "---|".repeat(sides.len() - 1));
    for (level, &clients) in LEVELS.iter().enumerate() {
        let cells: Vec<&str> = rows.iter().skip(1).map(|r| r[level].ratio.as_str()).collect();
        let _ = writeln!(body, "| {clients} | {} |", cells.join(" | "));
    }
    let peaks = &sides[0].peaks;
    let _ = writeln!(
        body,
        "\nThe daemon's peak resident set (`VmHWM`, reset before each run) over the {}-client runs: {} median \
         (per repetition, MiB: {}); {} before any load.",
        LEVELS.last().unwrap(),
        mib(median(peaks) as u64),
        list(&peaks.iter().map(|b| b / MIB as f64).collect::<Vec<_>>(), 1),
        mib(idle_rss)
    );

    // One section per peer; the first carries the method and the raw figures of all three.
    let mut sections = Vec::new();
    for (peer_index, peer) in sides.iter().enumerate().skip(1) {
        let (title, text) = match peer.name {
            "nginx" => ("8. Registry endpoint blob throughput vs nginx", body.clone()),
            _ if sides.len() == 3 => (
                "9. Registry endpoint blob throughput vs docker-registry",
                "Measured in the same runs as comparison 8; its section gives the method and every figure.\n".into(),
            ),
            _ => ("9. Registry endpoint blob throughput vs docker-registry", body.clone()),
        };
        sections.push(Section {
            title: title.into(),
            rows: std::mem::take(&mut rows[peer_index]),
            body: text,
        });
    }
    sections
}

fn ratio_header(sides: &[Side]) -> String {
    sides
        .iter()
        .skip(1)
        .map(|s| format!("wasmcache / {}", s.name))
        .collect::<Vec<_>>()
        .join(" | ")
}
