//! Load: 1000 concurrent clients over 20 gRPC connections on the Unix socket for 60 s (`WASMCACHE_LOAD_SECS`
//! changes the duration for local runs), mixing hits, misses and failures. Every answer must be the one its URL
//! calls for, and the daemon's resident memory at the end must stay close to what it was after warm-up.
//!
//! The mix, per request: a cached module (Fetch, or Resolve), a URL the daemon has not seen (each from a pool,
//! used once; when the pool runs out, that URL again, now a hit), a URL the origin answers with 404, and a served
//! URL asked for with a sha256 it does not have. Every client loop is bounded in time and in count, and every
//! request has a deadline.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;

const DEFAULT_LOAD_SECS: u64 = 60;
const CLIENTS: usize = 1000;
const CHANNELS: usize = 20;
const HIT_MODULES: usize = 40;
const HIT_SIZES: [usize; 5] = [256, 2 * 1024, 16 * 1024, 64 * 1024, 256 * 1024];
const MISS_POOL: usize = 5000;
const NOT_FOUND_PATHS: usize = 50;
const BAD_SUM_PATHS: usize = 50;
/// No single request may take longer, however loaded the machine.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Requests per client at most, whatever the duration.
const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;
/// The end-of-run RSS may be this factor of the warm-up RSS, plus `RSS_MARGIN`.
const RSS_FACTOR: f64 = 1.5;
const RSS_MARGIN: u64 = 16 << 20;

fn load_duration() -> Duration {
    let secs = match std::env::var("WASMCACHE_LOAD_SECS") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or_else(|| panic!("WASMCACHE_LOAD_SECS={v:?} is not a positive number of seconds")),
        Err(_) => DEFAULT_LOAD_SECS,
    };
    Duration::from_secs(secs)
}

/// Raises this process's open-file limit to its hard limit (the daemon inherits it).
fn raise_nofile_limit() -> u64 {
    // SAFETY: rlimit is plain data; getrlimit/setrlimit get a valid pointer to it.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
        limit.rlim_cur as u64
    }
}

/// VmRSS of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// What the URLs of the mix are and what each must answer.
struct Plan {
    /// (URL, sha256, bytes) of each cached module. Answers are compared byte for byte with the module whose
    /// digest is known (hashing every answer again would make SHA-256 of a debug build the bottleneck).
    hits: Vec<(String, String, bytes::Bytes)>,
    misses: Vec<(String, String, bytes::Bytes)>,
    not_found: Vec<String>,
    bad_sums: Vec<String>,
    /// A sha256 that none of the bad-sum URLs has.
    wrong_sha: String,
    next_miss: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hit,
    Resolve,
    Miss,
    NotFound,
    BadSum,
    List,
}

const KINDS: [Kind; 6] = [
    Kind::Hit,
    Kind::Resolve,
    Kind::Miss,
    Kind::NotFound,
    Kind::BadSum,
    Kind::List,
];

#[derive(Default)]
struct Tally {
    by_kind: [AtomicU64; 6],
    /// Sum and maximum of the answer times, in microseconds, per kind.
    micros: [AtomicU64; 6],
    max_micros: [AtomicU64; 6],
    /// Misses that were a first request for their URL.
    first_misses: AtomicU64,
    unexpected: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn count(&self, kind: Kind, took: Duration) {
        let i = KINDS.iter().position(|k| *k == kind).unwrap();
        self.by_kind[i].fetch_add(1, Ordering::Relaxed);
        let micros = took.as_micros() as u64;
        self.micros[i].fetch_add(micros, Ordering::Relaxed);
        self.max_micros[i].fetch_max(micros, Ordering::Relaxed);
    }

    fn unexpected(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 20 {
            examples.push(what);
        }
    }

    fn total(&self) -> u64 {
        self.by_kind.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

fn pick(rng: &mut fastrand::Rng) -> Kind {
    match rng.u32(0..1000) {
        0..600 => Kind::Hit,
        600..700 => Kind::Resolve,
        700..800 => Kind::Miss,
        800..900 => Kind::NotFound,
        900..999 => Kind::BadSum,
        _ => Kind::List,
    }
}

/// One request of `kind`; `Err` describes an answer that its URL does not call for.
async fn one_request(
    client: &mut Client,
    plan: &Plan,
    tally: &Tally,
    kind: Kind,
    rng: &mut fastrand::Rng,
) -> Result<(), String> {
    let expect_module =
        |result: Result<(ModuleInfo, Vec<u8>), tonic::Status>, url: &str, hex: &str, module: &[u8]| match result {
            Ok((info, bytes)) if info.sha256 == hex && bytes == module => Ok(info),
            Ok((info, bytes)) => Err(format!(
                "{url}: served sha256:{} ({} bytes hashing to {}), expected {hex}",
                info.sha256,
                bytes.len(),
                sha256_hex(&bytes)
            )),
            Err(s) => Err(format!("{url}: {:?} {}", s.code(), s.message())),
        };
    let expect_code = |result: Result<(ModuleInfo, Vec<u8>), tonic::Status>, url: &str, code: Code| match result {
        Err(s) if s.code() == code => Ok(()),
        Err(s) => Err(format!("{url}: {:?} {} (expected {code:?})", s.code(), s.message())),
        Ok((info, _)) => Err(format!("{url}: served {:?} (expected {code:?})", info.outcome())),
    };
    match kind {
        Kind::Hit => {
            let (url, hex, module) = &plan.hits[rng.usize(..plan.hits.len())];
            let info = expect_module(fetch_unchecked(client, req(url)).await, url, hex, module)?;
            if info.outcome() != Outcome::Hit {
                return Err(format!("{url}: outcome {:?} for a cached module", info.outcome()));
            }
            Ok(())
        }
        Kind::Resolve => {
            let (url, hex, _) = &plan.hits[rng.usize(..plan.hits.len())];
            match client.resolve(req(url)).await {
                Ok(info) => {
                    let info = info.into_inner();
                    if info.sha256 != *hex
                        || info.outcome() != Outcome::Hit
                        || !std::path::Path::new(&info.path).is_file()
                    {
                        return Err(format!("{url}: resolved to {info:?}, expected a hit on {hex}"));
                    }
                    Ok(())
                }
                Err(s) => Err(format!("{url}: Resolve: {:?} {}", s.code(), s.message())),
            }
        }
        Kind::Miss => {
            let n = plan.next_miss.fetch_add(1, Ordering::Relaxed);
            if n < plan.misses.len() {
                tally.first_misses.fetch_add(1, Ordering::Relaxed);
            }
            let (url, hex, module) = &plan.misses[n % plan.misses.len()];
            expect_module(fetch_unchecked(client, req(url)).await, url, hex, module).map(|_| ())
        }
        Kind::NotFound => {
            let url = &plan.not_found[rng.usize(..plan.not_found.len())];
            expect_code(fetch_unchecked(client, req(url)).await, url, Code::NotFound)
        }
        Kind::BadSum => {
            let url = &plan.bad_sums[rng.usize(..plan.bad_sums.len())];
            expect_code(
                fetch_unchecked(client, req_sha(url, &plan.wrong_sha)).await,
                url,
                Code::DataLoss,
            )
        }
        Kind::List => match client.list(ListRequest {}).await {
            Ok(_) => Ok(()),
            Err(s) => Err(format!("List: {:?} {}", s.code(), s.message())),
        },
    }
}

async fn client_loop(channel: Channel, plan: Arc<Plan>, tally: Arc<Tally>, end: Instant, seed: u64) {
    let mut client = ModuleCacheClient::new(channel);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sent = 0u64;
    while Instant::now() < end && sent < MAX_REQUESTS_PER_CLIENT {
        sent += 1;
        let kind = pick(&mut rng);
        let asked = Instant::now();
        match tokio::time::timeout(
            REQUEST_DEADLINE,
            one_request(&mut client, &plan, &tally, kind, &mut rng),
        )
        .await
        {
            Ok(Ok(())) => tally.count(kind, asked.elapsed()),
            Ok(Err(what)) => tally.unexpected(format!("{kind:?}: {what}")),
            Err(_) => tally.unexpected(format!("{kind:?}: no answer within {REQUEST_DEADLINE:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_get_only_expected_answers_and_the_daemon_memory_stays_flat() {
    let duration = load_duration();
    let warm_up = (duration / 6).min(Duration::from_secs(10));
    let nofile = raise_nofile_limit();
    assert!(nofile >= 4096, "open-file limit {nofile} is too low for the load test");

    let origin = Origin::start().await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let pid = daemon.pid();
    let mut setup = daemon.client().await;
    let mut hits = Vec::new();
    for i in 0..HIT_MODULES {
        let module = wasm_module_of_size(&format!("load-hit-{i}"), HIT_SIZES[i % HIT_SIZES.len()]);
        let path = format!("/hit/{i}.wasm");
        origin.serve(&path, module.clone());
        fetch_ok(&mut setup, req(&origin.url(&path))).await;
        hits.push((origin.url(&path), sha256_hex(&module), module.into()));
    }
    let mut misses = Vec::new();
    for i in 0..MISS_POOL {
        let module = wasm_module(&format!("load-miss-{i}"));
        let path = format!("/miss/{i}.wasm");
        misses.push((origin.url(&path), sha256_hex(&module), module.clone().into()));
        origin.serve(&path, module);
    }
    let not_found = (0..NOT_FOUND_PATHS)
        .map(|i| origin.url(&format!("/missing/{i}.wasm")))
        .collect();
    let bad_sums = (0..BAD_SUM_PATHS)
        .map(|i| {
            let path = format!("/badsum/{i}.wasm");
            origin.serve(&path, wasm_module(&format!("load-badsum-{i}")));
            origin.url(&path)
        })
        .collect();
    let plan = Arc::new(Plan {
        hits,
        misses,
        not_found,
        bad_sums,
        wrong_sha: sha256_hex(b"no module has this digest"),
        next_miss: AtomicUsize::new(0),
    });

    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(unix_channel(&daemon.socket()).await.expect("connect to the daemon"));
    }
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + duration;
    let mut clients = JoinSet::new();
    for i in 0..CLIENTS {
        clients.spawn(client_loop(
            channels[i % CHANNELS].clone(),
            plan.clone(),
            tally.clone(),
            end,
            i as u64,
        ));
    }

    // RSS and descriptors after warm-up, and the peak while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warm_up).await;
            let warm = (rss_bytes(pid), open_fds(pid), Instant::now());
            let mut peak = warm.0;
            while sampling.load(Ordering::SeqCst) {
                peak = peak.max(rss_bytes(pid));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (warm, peak)
        })
    };
    let requests_at_warm_up = {
        tokio::time::sleep(warm_up).await;
        tally.total()
    };

    while let Some(joined) = clients.join_next().await {
        joined.expect("client task");
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    let ((warm_rss, warm_fds, warm_at), peak_rss) = sampler.await.expect("sampler");
    // Let in-flight work finish (fetches go on after their clients) before the final reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end_rss = rss_bytes(pid);
    let end_fds = open_fds(pid);

    let counts: Vec<String> = KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let n = tally.by_kind[i].load(Ordering::Relaxed);
            let mean = tally.micros[i].load(Ordering::Relaxed) / n.max(1);
            let max = tally.max_micros[i].load(Ordering::Relaxed);
            format!(
                "{k:?} {n} (mean {:.1} ms, max {:.1} ms)",
                mean as f64 / 1e3,
                max as f64 / 1e3
            )
        })
        .collect();
    let total = tally.total();
    let log_bytes = std::fs::metadata(daemon.log_path()).map_or(0, |m| m.len());
    eprintln!(
        "load: {CLIENTS} clients over {CHANNELS} connections for {elapsed:.1?}: {total} answered as expected \
         ({:.0}/s; {}), {} new URLs fetched, {} unexpected; {requests_at_warm_up} requests in the {warm_up:?} \
         warm-up; daemon RSS {:.1} MiB after warm-up ({:.1?} in), {:.1} MiB peak, {:.1} MiB at the end; open fds \
         {warm_fds} after warm-up, {end_fds} at the end; daemon log {:.1} MiB",
        total as f64 / elapsed.as_secs_f64(),
        counts.join(", "),
        tally.first_misses.load(Ordering::Relaxed),
        tally.unexpected.load(Ordering::Relaxed),
        mib(warm_rss),
        warm_at.duration_since(started),
        mib(peak_rss),
        mib(end_rss),
        mib(log_bytes),
    );

    let examples = tally.examples.lock().unwrap().clone();
    assert_eq!(
        tally.unexpected.load(Ordering::Relaxed),
        0,
        "unexpected answers under load, e.g.:\n{}",
        examples.join("\n")
    );
    for (kind, count) in KINDS.iter().zip(&tally.by_kind) {
        assert!(count.load(Ordering::Relaxed) > 0, "no {kind:?} request completed");
    }
    assert!(tally.first_misses.load(Ordering::Relaxed) > 0, "no new URL was fetched");
    let bound = (warm_rss as f64 * RSS_FACTOR) as u64 + RSS_MARGIN;
    assert!(
        end_rss <= bound,
        "daemon RSS grew from {:.1} MiB after warm-up to {:.1} MiB at the end (bound {:.1} MiB)",
        mib(warm_rss),
        mib(end_rss),
        mib(bound)
    );

    // Still serving, nothing left in ingest/, and every cached module whole.
    let mut client = daemon.client().await;
    let (url, hex, _) = &plan.hits[0];
    let (info, _) = fetch_ok(&mut client, req(url)).await;
    assert_eq!(&info.sha256, hex);
    assert_eq!(
        daemon.ingest_files(),
        Vec::<std::path::PathBuf>::new(),
        "files left in ingest/"
    );
    let listed = list(&mut client).await;
    let first_misses = tally.first_misses.load(Ordering::Relaxed) as usize;
    assert_eq!(
        listed.len(),
        HIT_MODULES + first_misses.min(MISS_POOL),
        "List shows the hit modules and every fetched miss, and nothing of the failures"
    );
}

/// A burst of first fetches: 300 new URLs at once over 10 connections, each answered within 20 s. Every new
/// module makes the daemon flush its index; concurrent flushes must not wedge it (a daemon that stops finishing
/// new fetches still serves hits, so only a burst of misses shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_300_new_urls_is_fetched_whole() {
    const BURST: usize = 300;
    let origin = Origin::start().await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let mut modules = Vec::new();
    for i in 0..BURST {
        let module = wasm_module(&format!("burst-{i}"));
        let path = format!("/burst/{i}.wasm");
        origin.serve(&path, module.clone());
        modules.push((origin.url(&path), module));
    }
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(unix_channel(&daemon.socket()).await.expect("connect to the daemon"));
    }

    let started = Instant::now();
    let mut requests = JoinSet::new();
    for (i, (url, module)) in modules.into_iter().enumerate() {
        let mut client = ModuleCacheClient::new(channels[i % channels.len()].clone());
        requests.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(20), fetch_unchecked(&mut client, req(&url))).await {
                Ok(Ok((_, bytes))) if bytes == module => Ok(()),
                Ok(Ok(_)) => Err(format!("{url}: other bytes")),
                Ok(Err(s)) => Err(format!("{url}: {:?} {}", s.code(), s.message())),
                Err(_) => Err(format!("{url}: no answer within 20 s")),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = requests.join_next().await {
        if let Err(e) = joined.expect("request task") {
            failures.push(e);
        }
    }
    let elapsed = started.elapsed();

    let fetched = origin.total_hits();
    eprintln!(
        "burst: {BURST} new URLs in {elapsed:.1?}; origin answered {fetched}; {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {BURST} first fetches failed, e.g.:\n{}",
        failures.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    let listed = list(&mut daemon.client().await).await;
    assert_eq!(listed.len(), BURST, "every module of the burst is cached");
}
