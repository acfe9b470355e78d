//! Targets 2, 3 and 5, on one daemon with a warm cache:
//! - 2: cache-hit throughput of a 4 MiB module to 1, 16, 64 and 256 concurrent clients, gRPC Fetch over the
//!   Unix socket against nginx serving the same file over loopback HTTP, driven by the same load client;
//! - 5: the daemon's peak RSS (VmHWM) during the 256-client runs;
//! - 3: hit latency of a module under 1 KiB against `grpc.health.v1.Health/Check` on the same server.

use std::fmt::Write as _;
use std::path::Path;

use tokio::runtime::Runtime;
use tonic_health::pb::health_client::HealthClient;

use crate::load::{self, Probe, Target};
use crate::procs::{cpu_seconds, reset_peak_rss, status_bytes, Daemon, Nginx};
use crate::pull::module;
use crate::report::{ratio, Row, Section};
use crate::stats::{list, median, mib, percentile, us, MIB};
use crate::Opts;

const MODULE_BYTES: u64 = 4 * MIB;
const SMALL_BYTES: usize = 700;
const LEVELS: [usize; 4] = [1, 16, 64, 256];
/// The level with a throughput goal.
const GOAL_CLIENTS: usize = 64;
const THROUGHPUT_GOAL: f64 = 1.0;
const RSS_CLIENTS: usize = 256;
const RSS_LIMIT: u64 = 64 * MIB;
const LATENCY_GOAL: f64 = 1.5;
/// Calls per latency block, and untimed warm-up calls of each kind.
const LATENCY_CALLS: usize = 2000;
const LATENCY_WARMUP: usize = 300;

/// Requests per client at a level: about 512 MiB per run, and at least 2 requests per client, so every
/// client reuses its connection.
fn per_client(clients: usize) -> usize {
    (128 / clients).max(2)
}

pub fn run(rt: &Runtime, work: &Path, opts: &Opts) -> Vec<Section> {
    let dir = work.join("serving");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www dir");
    let big = module(MODULE_BYTES as usize, 200);
    let small = module(SMALL_BYTES, 201);
    std::fs::write(www.join("m4.wasm"), &big).expect("write module");
    std::fs::write(www.join("small.wasm"), &small).expect("write small module");
    let big_hex = wasmcache::digest::Sha256::of(&big).to_string();
    let small_hex = wasmcache::digest::Sha256::of(&small).to_string();

    let daemon = rt.block_on(Daemon::start(
        &dir,
        &dir.join("cache"),
        &["--file-root".into(), www.display().to_string()],
    ));
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    let nginx = Nginx::start(&nginx_dir, &www, "/m4.wasm");
    let grpc = Target::Grpc {
        socket: daemon.socket.clone(),
        url: format!("file://{}", www.join("m4.wasm").display()),
        window: load::GENEROUS_WINDOW,
    };
    let http = Target::Http {
        addr: nginx.addr,
        path: "/m4.wasm".into(),
    };
    // The first Fetch caches the module; both servers must then serve exactly its bytes.
    rt.block_on(load::verify(&grpc, MODULE_BYTES, &big_hex));
    rt.block_on(load::verify(&grpc, MODULE_BYTES, &big_hex));
    rt.block_on(load::verify(&http, MODULE_BYTES, &big_hex));

    let mut sections = Vec::new();
    if opts.runs(2) || opts.runs(5) {
        let levels: Vec<usize> = if opts.runs(2) {
            LEVELS.to_vec()
        } else {
            vec![RSS_CLIENTS]
        };
        let (throughput, rss) = throughput(rt, &daemon, &nginx, &grpc, &http, &levels, opts);
        if opts.runs(2) {
            sections.push(throughput);
        }
        if opts.runs(5) {
            sections.push(rss);
        }
    }
    if opts.runs(3) {
        let small_url = format!("file://{}", www.join("small.wasm").display());
        let target = Target::Grpc {
            socket: daemon.socket.clone(),
            url: small_url.clone(),
            window: load::GENEROUS_WINDOW,
        };
        rt.block_on(load::verify(&target, SMALL_BYTES as u64, &small_hex));
        sections.push(latency(rt, &daemon, &small_url, opts));
    }
    sections
}

fn throughput(
    rt: &Runtime,
    daemon: &Daemon,
    nginx: &Nginx,
    grpc: &Target,
    http: &Target,
    levels: &[usize],
    opts: &Opts,
) -> (Section, Section) {
    let reps = opts.reps(5);
    let idle_rss = status_bytes(daemon.pid(), "VmRSS");
    // Warm-up, untimed: connection set-up paths, page cache, allocator pools on both sides.
    rt.block_on(load::throughput(grpc, 16, 2, MODULE_BYTES));
    rt.block_on(load::throughput(http, 16, 2, MODULE_BYTES));

    let mut rows = Vec::new();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A 4 MiB module, cached by the daemon (a `file://` URL under `--file-root`) and in nginx's root (the \
         same bytes). One load client of ours (tokio, in the bench process) drives both: gRPC `Fetch` over \
         the daemon's Unix socket (one tonic channel per client, 8 MiB stream and 16 MiB connection \
         windows), or HTTP/1.1 `GET` over loopback TCP to nginx (one hyper connection per client, \
         keep-alive; nginx with `sendfile`, `worker_processes auto`, no access log). Each client has its own \
         connection, opened before the clock starts, and makes its requests one after another; bodies are \
         counted, not hashed (one untimed request per server checks the bytes). Aggregate throughput = all \
         bytes / wall time. The CPU columns give the CPU time (user + system, from `/proc/PID/stat`) the server's \
         processes and the load client used per GB served: the two sides share the machine's two cores. One untimed warm-up of each, then {reps} repetitions alternating which goes \
         first; MB/s are 10^6 bytes per second.\n"
    );
    let _ = writeln!(
        body,
        "| clients | requests per client | wasmcache median MB/s | nginx median MB/s | ratio | wasmcache per repetition | nginx per repetition | server CPU s/GB, wasmcache / nginx | load-client CPU s/GB, gRPC / HTTP |"
    );
    let _ = writeln!(body, "|---|---|---|---|---|---|---|---|---|");
    let (mut rss_ours, mut rss_nginx) = (Vec::new(), Vec::new());
    for &clients in levels {
        let n = per_client(clients);
        let measure_rss = clients == RSS_CLIENTS;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut cpu_ours, mut cpu_nginx, mut client_ours, mut client_nginx) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let mut run_ours = || {
                if measure_rss {
                    reset_peak_rss(daemon.pid());
                }
                let cpu = (cpu_seconds(daemon.pid()), cpu_seconds(std::process::id()));
                let run = rt.block_on(load::throughput(grpc, clients, n, MODULE_BYTES));
                if measure_rss {
                    rss_ours.push(status_bytes(daemon.pid(), "VmHWM") as f64);
                }
                ours.push(run.mb_per_s());
                let gb = run.bytes as f64 / 1e9;
                cpu_ours.push((cpu_seconds(daemon.pid()) - cpu.0) / gb);
                client_ours.push((cpu_seconds(std::process::id()) - cpu.1) / gb);
            };
            let mut run_nginx = || {
                if measure_rss {
                    nginx.pids().into_iter().for_each(reset_peak_rss);
                }
                let nginx_cpu = || nginx.pids().into_iter().map(cpu_seconds).sum::<f64>();
                let cpu = (nginx_cpu(), cpu_seconds(std::process::id()));
                let run = rt.block_on(load::throughput(http, clients, n, MODULE_BYTES));
                if measure_rss {
                    let total: u64 = nginx.pids().into_iter().map(|p| status_bytes(p, "VmHWM")).sum();
                    rss_nginx.push(total as f64);
                }
                theirs.push(run.mb_per_s());
                let gb = run.bytes as f64 / 1e9;
                cpu_nginx.push((nginx_cpu() - cpu.0) / gb);
                client_nginx.push((cpu_seconds(std::process::id()) - cpu.1) / gb);
            };
            if rep % 2 == 0 {
                run_ours();
                run_nginx();
            } else {
                run_nginx();
                run_ours();
            }
            eprintln!(
                "bench: hit throughput {clients} clients rep {}: wasmcache {:.0} MB/s, nginx {:.0} MB/s",
                rep + 1,
                ours.last().unwrap(),
                theirs.last().unwrap()
            );
        }
        let (m_ours, m_theirs) = (median(&ours), median(&theirs));
        let r = m_ours / m_theirs;
        rows.push(Row {
            what: format!("2. Hit throughput, 4 MiB, {clients} clients"),
            goal: if clients == GOAL_CLIENTS {
                format!("≥ {THROUGHPUT_GOAL}× nginx")
            } else {
                "—".into()
            },
            ours: format!("{m_ours:.0} MB/s"),
            peer: format!("nginx {m_theirs:.0} MB/s"),
            ratio: ratio(r),
            met: (clients == GOAL_CLIENTS).then_some(r >= THROUGHPUT_GOAL),
        });
        let _ = writeln!(
            body,
            "| {clients} | {n} | {m_ours:.0} | {m_theirs:.0} | {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} |",
            ratio(r),
            list(&ours, 0),
            list(&theirs, 0),
            median(&cpu_ours),
            median(&cpu_nginx),
            median(&client_ours),
            median(&client_nginx)
        );
    }
    // For scale, not the target: the same 256 streams from clients that advertise HTTP/2's default 64 KiB
    // stream window, which bounds what the server may queue per stream.
    let mut rss_small_window = Vec::new();
    let mut small_window_rates = Vec::new();
    if levels.contains(&RSS_CLIENTS) {
        let Target::Grpc { socket, url, .. } = grpc else {
            unreachable!("the gRPC target")
        };
        let small = Target::Grpc {
            socket: socket.clone(),
            url: url.clone(),
            window: load::DEFAULT_WINDOW,
        };
        for _ in 0..reps.min(3) {
            reset_peak_rss(daemon.pid());
            let run = rt.block_on(load::throughput(
                &small,
                RSS_CLIENTS,
                per_client(RSS_CLIENTS),
                MODULE_BYTES,
            ));
            rss_small_window.push(status_bytes(daemon.pid(), "VmHWM") as f64);
            small_window_rates.push(run.mb_per_s());
        }
    }
    let throughput = Section {
        title: "2. Cache-hit throughput".into(),
        rows,
        body,
    };

    let peak = median(&rss_ours);
    let peer = median(&rss_nginx);
    let mut body = String::new();
    let _ = writeln!(
        body,
        "The daemon's `VmHWM` (peak resident set, from `/proc/PID/status`) over each {RSS_CLIENTS}-client run of \
         the throughput comparison above ({RSS_CLIENTS} concurrent `Fetch` streams of the 4 MiB module, {} \
         requests per client); the peak is reset (`/proc/PID/clear_refs` = 5) before each run. nginx's figure \
         is the sum over its master and workers under the same load, for scale. The daemon's resident set \
         before any load was {}. {} repetitions.\n",
        per_client(RSS_CLIENTS),
        mib(idle_rss),
        rss_ours.len()
    );
    let _ = writeln!(body, "| | median peak RSS | per repetition (MiB) |\n|---|---|---|");
    let per_rep = |v: &[f64]| list(&v.iter().map(|b| b / MIB as f64).collect::<Vec<_>>(), 1);
    let _ = writeln!(body, "| wasmcache | {} | {} |", mib(peak as u64), per_rep(&rss_ours));
    let _ = writeln!(
        body,
        "| nginx (all processes) | {} | {} |",
        mib(peer as u64),
        per_rep(&rss_nginx)
    );
    if !rss_small_window.is_empty() {
        let _ = writeln!(
            body,
            "| wasmcache, clients with HTTP/2's default 64 KiB stream window (not the target's client) | {} | {} |",
            mib(median(&rss_small_window) as u64),
            per_rep(&rss_small_window)
        );
        let _ = writeln!(
            body,
            "\nWith the default window the same 256 streams ran at {:.0} MB/s (median; {}). The server may queue \
             up to the client's window, and at most its HTTP/2 send buffer ({} KiB per stream, \
             `wasmcache::transport::SEND_BUFFER`), of encoded chunks per stream.",
            median(&small_window_rates),
            list(&small_window_rates, 0),
            wasmcache::transport::SEND_BUFFER >> 10
        );
    }
    let rss = Section {
        title: "5. Peak RSS while serving 256 streams".into(),
        rows: vec![Row {
            what: format!("5. Peak RSS, {RSS_CLIENTS} streams of 4 MiB"),
            goal: format!("≤ {}", mib(RSS_LIMIT)),
            ours: mib(peak as u64),
            peer: format!("nginx {}", mib(peer as u64)),
            ratio: ratio(peak / peer),
            met: Some(peak <= RSS_LIMIT as f64),
        }],
        body,
    };
    (throughput, rss)
}

fn latency(rt: &Runtime, daemon: &Daemon, small_url: &str, opts: &Opts) -> Section {
    let reps = opts.reps(7);
    let channel = rt.block_on(daemon.channel());
    let mut fetch = rt.block_on(Probe::fetch(channel.clone(), small_url));
    let mut health = Probe::Health(HealthClient::new(channel));
    rt.block_on(fetch.latencies(LATENCY_WARMUP));
    rt.block_on(health.latencies(LATENCY_WARMUP));
    let (mut f50, mut f99, mut h50, mut h99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let block = |probe: &mut Probe, p50: &mut Vec<f64>, p99: &mut Vec<f64>| {
            let samples: Vec<f64> = rt
                .block_on(probe.latencies(LATENCY_CALLS))
                .into_iter()
                .map(us)
                .collect();
            p50.push(percentile(&samples, 50.0));
            p99.push(percentile(&samples, 99.0));
        };
        if rep % 2 == 0 {
            block(&mut fetch, &mut f50, &mut f99);
            block(&mut health, &mut h50, &mut h99);
        } else {
            block(&mut health, &mut h50, &mut h99);
            block(&mut fetch, &mut f50, &mut f99);
        }
        eprintln!(
            "bench: small hit latency rep {}: Fetch p50 {:.0} µs p99 {:.0} µs; Health p50 {:.0} µs p99 {:.0} µs",
            rep + 1,
            f50.last().unwrap(),
            f99.last().unwrap(),
            h50.last().unwrap(),
            h99.last().unwrap()
        );
    }
    let (mf50, mf99, mh50, mh99) = (median(&f50), median(&f99), median(&h50), median(&h99));
    let mut body = String::new();
    let _ = writeln!(
        body,
        "One client, one connection to the daemon's Unix socket, calls one after another: `Fetch` of a cached \
         {SMALL_BYTES}-byte module (the stream read to its end), and the floor, `grpc.health.v1.Health/Check` \
         on the same server and connection. {LATENCY_WARMUP} untimed calls of each, then {reps} blocks of \
         {LATENCY_CALLS} calls of each, alternating which goes first; p50 and p99 are taken per block and the \
         table gives their medians over the blocks.\n"
    );
    let _ = writeln!(
        body,
        "| | median p50 (µs) | median p99 (µs) | p50 per block | p99 per block |"
    );
    let _ = writeln!(body, "|---|---|---|---|---|");
    let _ = writeln!(
        body,
        "| Fetch ({SMALL_BYTES} B) | {mf50:.0} | {mf99:.0} | {} | {} |",
        list(&f50, 0),
        list(&f99, 0)
    );
    let _ = writeln!(
        body,
        "| Health/Check | {mh50:.0} | {mh99:.0} | {} | {} |",
        list(&h50, 0),
        list(&h99, 0)
    );
    Section {
        title: "3. Small-module hit latency".into(),
        rows: vec![
            Row {
                what: format!("3. Small hit latency p99 ({SMALL_BYTES} B)"),
                goal: format!("≤ {LATENCY_GOAL}× floor"),
                ours: format!("{mf99:.0} µs"),
                peer: format!("Health/Check {mh99:.0} µs"),
                ratio: ratio(mf99 / mh99),
                met: Some(mf99 / mh99 <= LATENCY_GOAL),
            },
            Row {
                what: format!("3. Small hit latency p50 ({SMALL_BYTES} B)"),
                goal: "—".into(),
                ours: format!("{mf50:.0} µs"),
                peer: format!("Health/Check {mh50:.0} µs"),
                ratio: ratio(mf50 / mh50),
                met: None,
            },
        ],
        body,
    }
}
