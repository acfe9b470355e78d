//! Target 6: start-up to ready with 10,000 cached modules in the index, from spawn to the socket
//! accepting and to `/readyz` answering 200 on the admin listener. The same daemon on an empty cache is
//! the reference.

use std::fmt::Write as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::runtime::Runtime;
use wasmcache::proto::module_cache_client::ModuleCacheClient;
use wasmcache::proto::warm_event::Event;
use wasmcache::proto::{FetchRequest, ListRequest, WarmItem, WarmRequest};

use crate::procs::{http_status, Daemon};
use crate::report::{ratio, Row, Section};
use crate::stats::{list, median};
use crate::Opts;

const MODULES: usize = 10_000;
const WARM_CONCURRENCY: u32 = 64;
const GOAL_MS: f64 = 200.0;
const POLL_EVERY: Duration = Duration::from_micros(250);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(rt: &Runtime, work: &Path, opts: &Opts) -> Section {
    let reps = opts.reps(7);
    let dir = work.join("startup");
    let mods = dir.join("mods");
    std::fs::create_dir_all(&mods).expect("modules dir");
    let full = dir.join("cache-full");
    let empty = dir.join("cache-empty");
    std::fs::create_dir_all(&empty).expect("empty cache dir");
    let flags = vec!["--file-root".to_string(), mods.display().to_string()];

    // 10,000 distinct tiny modules, cached through the daemon with one Warm call.
    let mut rng = fastrand::Rng::with_seed(600);
    let mut items = Vec::with_capacity(MODULES);
    for i in 0..MODULES {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(&(i as u64).to_le_bytes());
        bytes.extend((0..16).map(|_| rng.u8(..)));
        let path = mods.join(format!("m{i:05}.wasm"));
        std::fs::write(&path, bytes).expect("write module");
        items.push(WarmItem {
            id: i.to_string(),
            request: Some(FetchRequest {
                url: format!("file://{}", path.display()),
                ..Default::default()
            }),
        });
    }
    let warm_dir = dir.join("warm");
    std::fs::create_dir_all(&warm_dir).expect("warm dir");
    // Only the restart is measured: the daemon that fills the cache runs under eatmydata, which turns its
    // two fsyncs per module into no-ops (10,000 modules would otherwise take minutes on this disk), and
    // `sync` writes everything out before the first restart.
    let daemon = rt.block_on(Daemon::start_env(
        &warm_dir,
        &full,
        &flags,
        &[("LD_PRELOAD", "libeatmydata.so")],
    ));
    let started = Instant::now();
    let (done, failed) = rt.block_on(async {
        let mut client = ModuleCacheClient::new(daemon.channel().await);
        let mut events = client
            .warm(WarmRequest {
                items,
                concurrency: WARM_CONCURRENCY,
            })
            .await
            .expect("Warm")
            .into_inner();
        let (mut done, mut failed) = (0, Vec::new());
        while let Some(event) = events.next().await {
            match event.expect("Warm stream").event {
                Some(Event::Done(_)) => done += 1,
                Some(Event::Failed(f)) => failed.push(f.message),
                _ => {}
            }
        }
        (done, failed)
    });
    let warm_s = started.elapsed().as_secs_f64();
    assert!(
        failed.is_empty(),
        "{} warm items failed, first: {}",
        failed.len(),
        failed[0]
    );
    assert_eq!(done, MODULES, "warm finished {done} of {MODULES} modules");
    drop(daemon);
    crate::procs::output(&mut std::process::Command::new("sync"));
    eprintln!("bench: start-up: cached {MODULES} modules with Warm in {warm_s:.1} s (fsync off)");

    let (mut full_sock, mut full_ready, mut empty_sock, mut empty_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let full_dir = dir.join("run-full");
    let empty_dir = dir.join("run-empty");
    std::fs::create_dir_all(&full_dir).expect("run dir");
    std::fs::create_dir_all(&empty_dir).expect("run dir");
    for rep in 0..=reps {
        let mut run_full = || {
            let (sock, ready, daemon) = time_start(&full_dir, &full, &flags);
            if rep == 0 {
                let listed = rt.block_on(async {
                    let mut client = ModuleCacheClient::new(daemon.channel().await);
                    client
                        .list(ListRequest {})
                        .await
                        .expect("List")
                        .into_inner()
                        .modules
                        .len()
                });
                assert_eq!(listed, MODULES, "the restarted daemon lists {listed} modules");
            } else {
                full_sock.push(sock);
                full_ready.push(ready);
            }
        };
        let mut run_empty = || {
            let (sock, ready, _daemon) = time_start(&empty_dir, &empty, &flags);
            if rep > 0 {
                empty_sock.push(sock);
                empty_ready.push(ready);
            }
        };
        if rep % 2 == 0 {
            run_full();
            run_empty();
        } else {
            run_empty();
            run_full();
        }
        if rep > 0 {
            eprintln!(
                "bench: start-up rep {rep}: {MODULES} modules: socket {:.1} ms, ready {:.1} ms; empty: socket \
                 {:.1} ms, ready {:.1} ms",
                full_sock.last().unwrap(),
                full_ready.last().unwrap(),
                empty_sock.last().unwrap(),
                empty_ready.last().unwrap()
            );
        }
    }
    let (fs, fr, es, er) = (
        median(&full_sock),
        median(&full_ready),
        median(&empty_sock),
        median(&empty_ready),
    );
    let slowest = fs.max(fr);
    let mut body = String::new();
    let _ = writeln!(
        body,
        "{MODULES} distinct tiny `file://` modules are cached through the daemon with one `Warm` call \
         (concurrency {WARM_CONCURRENCY}; it took {warm_s:.1} s with the daemon's fsyncs turned off by \
         eatmydata, which only this step uses), then the daemon is stopped and `sync` run. Each repetition \
         spawns `wasmcache serve` on that cache and times, from spawn, the first successful `connect` to its \
         Unix socket and the first `GET /readyz` on `--admin-listen` answering 200 (polled every \
         {} µs), then stops it with SIGTERM. The reference is the same daemon on an empty cache. One \
         untimed warm-up of each (which also checks that `List` returns all {MODULES} modules), then {reps} \
         repetitions alternating which goes first.\n",
        POLL_EVERY.as_micros()
    );
    let _ = writeln!(body, "| cache | socket accepts, median | `/readyz` 200, median | socket per repetition (ms) | ready per repetition (ms) |");
    let _ = writeln!(body, "|---|---|---|---|---|");
    let _ = writeln!(
        body,
        "| {MODULES} modules | {fs:.1} ms | {fr:.1} ms | {} | {} |",
        list(&full_sock, 1),
        list(&full_ready, 1)
    );
    let _ = writeln!(
        body,
        "| empty | {es:.1} ms | {er:.1} ms | {} | {} |",
        list(&empty_sock, 1),
        list(&empty_ready, 1)
    );
    Section {
        title: "6. Start-up with 10,000 cached modules".into(),
        rows: vec![Row {
            what: format!("6. Start-up to ready, {MODULES} modules"),
            goal: format!("≤ {GOAL_MS:.0} ms"),
            ours: format!("socket {fs:.1} ms, /readyz {fr:.1} ms"),
            peer: format!("empty cache: /readyz {er:.1} ms"),
            ratio: ratio(fr / er),
            met: Some(slowest <= GOAL_MS),
        }],
        body,
    }
}

/// Spawns the daemon and polls until its socket accepts and `/readyz` answers 200; both times in ms from
/// spawn, and the daemon (stopped when dropped).
fn time_start(dir: &Path, cache: &Path, flags: &[String]) -> (f64, f64, Daemon) {
    let started = Instant::now();
    let mut daemon = Daemon::spawn(dir, cache, flags);
    let (mut sock, mut ready) = (None, None);
    while sock.is_none() || ready.is_none() {
        if sock.is_none() && UnixStream::connect(&daemon.socket).is_ok() {
            sock = Some(started.elapsed());
        }
        if ready.is_none() && http_status(daemon.admin, "/readyz").ok() == Some(200) {
            ready = Some(started.elapsed());
        }
        daemon.proc.assert_running();
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "daemon not ready after {READY_TIMEOUT:?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
    let ms = |d: Option<Duration>| d.expect("measured").as_secs_f64() * 1e3;
    (ms(sock), ms(ready), daemon)
}
