//! Fault injection: the daemon killed with SIGKILL mid-download, blobs altered on disk while it runs, a full
//! cache disk, and upstreams that stop, hang, cut bodies short or send bytes that do not match their digest.
//!
//! What every test here checks besides its status code: nothing half-written becomes visible. `ingest/` is empty
//! once a request has failed (or once the daemon is back after a crash), `List` shows only modules whose blob is
//! on disk and hashes to its name, and whatever is served hashes to the digest the test expects.
//!
//! The upstream faults are made by support servers: `RawServer` (a TCP listener that answers by hand: never, or
//! with half a body) and the registry's counting `Proxy` with a `BlobFault` (it throttles, corrupts or drips
//! blob bodies, stops answering, or stops). `Tmpfs` mounts a small tmpfs as the cache dir (the tests run as root; a failed mount fails
//! the test, it never skips it).

mod support;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::raw::{RawServer, Reply};
use support::registry::*;
use support::*;
use tokio::task::{JoinHandle, JoinSet};
use tonic::{Code, Status};

const FAST_RETRY: &[&str] = &["--retry-backoff", "10ms"];

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The size and sha256 of a file, hashed on a blocking thread; `Err` names what is wrong with it.
async fn file_digest(path: PathBuf) -> Result<(u64, String), String> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((bytes.len() as u64, sha256_hex(&bytes)))
    })
    .await
    .expect("hash task")
}

/// Every listed module: its blob is on disk at the listed path, has the listed size and hashes to the listed
/// sha256. Returns the listed modules.
async fn assert_list_consistent(client: &mut Client, when: &str) -> Vec<CachedModule> {
    let modules = list(client).await;
    for m in &modules {
        let (size, hex) = file_digest(PathBuf::from(&m.path))
            .await
            .unwrap_or_else(|e| panic!("{when}: listed module sha256:{} has no readable blob: {e}", m.sha256));
        assert_eq!(size, m.size, "{when}: listed size of sha256:{}", m.sha256);
        assert_eq!(
            hex, m.sha256,
            "{when}: listed blob {} does not hash to its name",
            m.path
        );
    }
    modules
}

/// Every file under `blobs/` hashes to its own name: a crash or a failure never leaves a partial blob there.
async fn assert_blob_files_whole(daemon: &Daemon, when: &str) {
    for path in daemon.blob_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (_, hex) = file_digest(path.clone())
            .await
            .unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_eq!(
            hex,
            name,
            "{when}: blob file {} does not hash to its name",
            path.display()
        );
    }
}

#[track_caller]
fn assert_ingest_empty(daemon: &Daemon, when: &str) {
    assert_eq!(
        daemon.ingest_files(),
        Vec::<PathBuf>::new(),
        "{when}: files left in ingest/"
    );
}

/// A valid Wasm module of exactly `size` bytes that is almost all zeros, so that it gzips to a few KiB.
fn compressible_module(size: usize) -> Vec<u8> {
    let name = b"zeros";
    let overhead = 8 + 1 + 5 + 1 + name.len();
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.push(0);
    let mut len = (1 + name.len() + size - overhead) as u32;
    for i in 0..5 {
        module.push((len & 0x7f) as u8 | if i < 4 { 0x80 } else { 0 });
        len >>= 7;
    }
    module.push(name.len() as u8);
    module.extend_from_slice(name);
    module.resize(size, 0);
    module
}

// ---------------------------------------------------------------------------------------------------------------
// 1. SIGKILL at random moments during concurrent large downloads
// ---------------------------------------------------------------------------------------------------------------

const KILL_ROUNDS: usize = 3;
const KILL_FETCHES: usize = 20;
/// Pause between the origin's 64 KiB frames, drawn per module: downloads finish at different times, so that a
/// kill finds some committed, some streaming, and some in between.
const KILL_THROTTLES_MS: [u64; 4] = [0, 2, 5, 10];

/// The modules of the SIGKILL test by hex digest. Checks compare bytes with these rather than hashing again:
/// SHA-256 in a debug build is slow enough to dominate the test otherwise.
type Pool = Arc<HashMap<String, Bytes>>;

/// `Err` unless the file at `path` holds exactly the pool's module `hex`.
async fn check_blob_file(pool: &Pool, path: PathBuf, hex: &str) -> Result<(), String> {
    let Some(module) = pool.get(hex).cloned() else {
        return Err(format!("{}: sha256:{hex} is not a module of the test", path.display()));
    };
    tokio::task::spawn_blocking(move || match std::fs::read(&path) {
        Ok(bytes) if bytes == module => Ok(()),
        Ok(bytes) => Err(format!(
            "{}: {} bytes that are not the module it is named after ({} bytes)",
            path.display(),
            bytes.len(),
            module.len()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    })
    .await
    .expect("read task")
}

/// Starts the round's fetches (over four connections) and a task that checks `List` every 50 ms while they run:
/// every listed blob holds its module, and every listed URL leads to the module it serves.
async fn concurrent_fetches(
    daemon: &Daemon,
    urls: &[String],
    expected: &HashMap<String, String>,
    pool: &Pool,
) -> (
    JoinSet<(String, Result<(ModuleInfo, Vec<u8>), Status>)>,
    Arc<AtomicBool>,
    JoinHandle<Vec<String>>,
) {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(daemon.client().await);
    }
    let mut fetches = JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let mut client = clients[i % clients.len()].clone();
        let url = url.clone();
        fetches.spawn(async move { (url.clone(), fetch_unchecked(&mut client, req(&url)).await) });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = daemon.client().await;
    let (stop_listing, expected, pool) = (stop.clone(), expected.clone(), pool.clone());
    let lister = tokio::spawn(async move {
        let mut checked = HashSet::new();
        let mut problems = Vec::new();
        while !stop_listing.load(Ordering::SeqCst) {
            // The daemon is killed at some point: a failed List ends the checks.
            let Ok(response) = client.list(ListRequest {}).await else {
                break;
            };
            for m in response.into_inner().modules {
                for url in &m.urls {
                    if expected.get(url) != Some(&m.sha256) {
                        problems.push(format!("List maps {url} to sha256:{}", m.sha256));
                    }
                }
                if checked.insert((m.sha256.clone(), m.path.clone())) {
                    if let Err(e) = check_blob_file(&pool, PathBuf::from(&m.path), &m.sha256).await {
                        problems.push(format!("listed sha256:{}: {e}", m.sha256));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        problems
    });
    (fetches, stop, lister)
}

/// The checks after a restart: nothing in ingest/, every blob file holds the module it is named after, and every
/// listed module is served from the cache with its own bytes. Returns how many modules are listed.
async fn check_after_restart(daemon: &Daemon, expected: &HashMap<String, String>, pool: &Pool, when: &str) -> usize {
    assert_ingest_empty(daemon, when);
    for path in daemon.blob_files() {
        let hex = path.file_name().unwrap().to_string_lossy().to_string();
        check_blob_file(pool, path, &hex)
            .await
            .unwrap_or_else(|e| panic!("{when}: blob file: {e}"));
    }
    let mut client = daemon.client().await;
    let listed = list(&mut client).await;
    for m in &listed {
        check_blob_file(pool, PathBuf::from(&m.path), &m.sha256)
            .await
            .unwrap_or_else(|e| panic!("{when}: listed module: {e}"));
        assert_eq!(
            m.size,
            pool[&m.sha256].len() as u64,
            "{when}: listed size of sha256:{}",
            m.sha256
        );
        for url in &m.urls {
            assert_eq!(
                expected.get(url),
                Some(&m.sha256),
                "{when}: List maps {url} to another module"
            );
            let (info, bytes) = fetch_unchecked(&mut client, req(url))
                .await
                .unwrap_or_else(|s| panic!("{when}: listed {url} not served: {:?} {}", s.code(), s.message()));
            assert_eq!(info.outcome(), Outcome::Hit, "{when}: {url}");
            assert_eq!(info.sha256, expected[url], "{when}: {url}");
            assert!(bytes == pool[&m.sha256], "{when}: {url} served other bytes");
        }
    }
    listed.len()
}

/// 20 concurrent fetches of large modules (ten of 8-16 MiB, ten of 1-4 MiB, so that some complete before the
/// kill) from a throttled origin; the daemon is killed with SIGKILL at a random moment and restarted, three
/// times, each round on new URLs with the cache emptied first; then the last round's URLs are fetched again with
/// nothing killing the daemon. Whatever is served is the expected module; after each restart ingest/ is empty,
/// every blob holds the module it is named after, and every listed module is served. The seed is printed;
/// `WASMCACHE_FAULT_SEED` replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_large_fetches_leaves_only_whole_verified_modules() {
    let seed = std::env::var("WASMCACHE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("sigkill test seed: {seed} (WASMCACHE_FAULT_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let test_started = Instant::now();
    let modules: Vec<Bytes> = tokio::task::spawn_blocking(move || {
        let mut sizes = fastrand::Rng::with_seed(seed);
        (0..KILL_FETCHES)
            .map(|i| {
                let size = if i % 2 == 0 {
                    sizes.usize((8 << 20)..=(16 << 20))
                } else {
                    sizes.usize((1 << 20)..=(4 << 20))
                };
                Bytes::from(wasm_module_of_size(&format!("kill9-{seed}-{i}"), size))
            })
            .collect()
    })
    .await
    .expect("module task");
    let digests: Vec<String> = {
        let modules = modules.clone();
        tokio::task::spawn_blocking(move || modules.iter().map(|m| sha256_hex(m)).collect())
            .await
            .expect("hash task")
    };
    let pool: Pool = Arc::new(digests.iter().cloned().zip(modules.iter().cloned()).collect());
    let origin = Origin::start().await;
    let mut daemon = Daemon::start(FAST_RETRY).await;
    // Every URL of the test, with the digest of its module.
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut urls: Vec<String> = Vec::new();
    let (mut completed_total, mut listed_total) = (0, 0);

    for round in 0..KILL_ROUNDS {
        // Each round commits afresh: the cache is emptied, and the old URLs answer 404.
        let mut client = daemon.client().await;
        for m in list(&mut client).await {
            client
                .remove(RemoveRequest {
                    target: Some(Target::Sha256(m.sha256.clone())),
                })
                .await
                .expect("remove");
        }
        for url in &urls {
            origin.always(url.trim_start_matches(&origin.url("")), 404);
        }
        urls.clear();
        for (i, module) in modules.iter().enumerate() {
            let path = format!("/round{round}/m{i}.wasm");
            expected.insert(origin.url(&path), digests[i].clone());
            origin.serve(&path, module.clone());
            origin.throttle(
                &path,
                Duration::from_millis(KILL_THROTTLES_MS[rng.usize(..KILL_THROTTLES_MS.len())]),
            );
            urls.push(origin.url(&path));
        }
        let (mut fetches, stop_listing, lister) = concurrent_fetches(&daemon, &urls, &expected, &pool).await;
        let kill_after = Duration::from_millis(rng.u64(200..=3500));
        tokio::time::sleep(kill_after).await;
        daemon.kill();

        let mut completed = 0;
        while let Some(joined) = fetches.join_next().await {
            let (url, result) = joined.expect("fetch task");
            // Failures are what a killed daemon gives; whatever was served must be right.
            if let Ok((info, bytes)) = result {
                completed += 1;
                assert_eq!(
                    info.sha256, expected[&url],
                    "round {round}: {url}: served another module"
                );
                assert!(
                    bytes == pool[&expected[&url]],
                    "round {round}: {url}: served other bytes"
                );
            }
        }
        stop_listing.store(true, Ordering::SeqCst);
        let problems = lister.await.expect("lister task");
        assert!(
            problems.is_empty(),
            "round {round}: List during the downloads: {problems:#?}"
        );

        daemon.start_again().await;
        let when = format!("after the SIGKILL of round {round} ({kill_after:?} in)");
        let listed = check_after_restart(&daemon, &expected, &pool, &when).await;
        eprintln!(
            "round {round}: SIGKILL {kill_after:?} in; {completed} of {KILL_FETCHES} fetches had completed; {listed} \
             modules listed after the restart ({:.1?} into the test)",
            test_started.elapsed()
        );
        completed_total += completed;
        listed_total += listed;
    }

    // The last round's URLs, whole or interrupted, all come through once nothing kills the daemon.
    for url in &urls {
        origin.throttle(url.trim_start_matches(&origin.url("")), Duration::ZERO);
    }
    let (mut fetches, stop_listing, lister) = concurrent_fetches(&daemon, &urls, &expected, &pool).await;
    while let Some(joined) = fetches.join_next().await {
        let (url, result) = joined.expect("fetch task");
        let (info, bytes) = result.unwrap_or_else(|s| panic!("after the kills: {url}: {:?} {}", s.code(), s.message()));
        assert_eq!(info.sha256, expected[&url], "after the kills: {url}");
        assert!(
            bytes == pool[&expected[&url]],
            "after the kills: {url} served other bytes"
        );
    }
    stop_listing.store(true, Ordering::SeqCst);
    let problems = lister.await.expect("lister task");
    assert!(problems.is_empty(), "List after the kills: {problems:#?}");
    daemon.restart().await;
    let listed = check_after_restart(&daemon, &expected, &pool, "after the final restart").await;
    assert_eq!(listed, KILL_FETCHES, "every module of the last round is listed");
    eprintln!(
        "{completed_total} fetches completed and {listed_total} modules were listed across the kills; the test \
         took {:.1?}",
        test_started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. A blob altered on disk while the daemon runs
// ---------------------------------------------------------------------------------------------------------------

/// How a test alters a committed blob.
#[derive(Clone, Copy, Debug)]
enum Alteration {
    /// One byte flipped in place: same size, same inode.
    SameSizeInPlace,
    /// Cut to half its size in place.
    Truncated,
    /// Bytes appended in place.
    Extended,
    /// Replaced by another file of the same size (a new inode) with a rename.
    ReplacedSameSize,
    /// One byte flipped in place, then the modification time set back, as bit rot (or a careless restore) leaves
    /// it: same size, same inode, same mtime.
    SameSizeMtimeRestored,
}

fn alter(path: &Path, how: Alteration) {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let original = std::fs::read(path).expect("read blob");
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).expect("blob mtime");
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open blob for writing (the tests run as root)")
    };
    match how {
        Alteration::SameSizeInPlace | Alteration::SameSizeMtimeRestored => {
            let mut file = open();
            let at = original.len() - 1;
            file.seek(SeekFrom::Start(at as u64)).unwrap();
            file.write_all(&[original[at] ^ 0xff]).unwrap();
            file.sync_all().unwrap();
            if matches!(how, Alteration::SameSizeMtimeRestored) {
                file.set_modified(mtime).expect("restore mtime");
            }
        }
        Alteration::Truncated => {
            let file = open();
            file.set_len(original.len() as u64 / 2).unwrap();
            file.sync_all().unwrap();
        }
        Alteration::Extended => {
            let mut file = open();
            file.seek(SeekFrom::End(0)).unwrap();
            file.write_all(b"appended").unwrap();
            file.sync_all().unwrap();
        }
        Alteration::ReplacedSameSize => {
            let mut bytes = original.clone();
            let at = bytes.len() - 1;
            bytes[at] ^= 0xff;
            let tmp = path.with_extension("replacement");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
    assert_ne!(std::fs::read(path).unwrap(), original, "the blob was altered");
}

/// Which request comes first after the alteration: the one that finds it.
#[derive(Clone, Copy, Debug)]
enum First {
    Fetch,
    Resolve,
    FetchBySha,
}

/// What one request after the alteration got: the module (bytes, or the file at the resolved path) or a status.
async fn ask(client: &mut Client, kind: First, url: &str, hex: &str) -> Result<(ModuleInfo, Vec<u8>), Status> {
    match kind {
        First::Fetch => fetch_unchecked(client, req(url)).await,
        First::FetchBySha => fetch_unchecked(client, req_sha(url, hex)).await,
        First::Resolve => {
            let info = client.resolve(req(url)).await?.into_inner();
            let bytes = std::fs::read(&info.path).unwrap_or_default();
            Ok((info, bytes))
        }
    }
}

/// A cached module is served (so this daemon has verified its blob), then its blob is altered. With the origin
/// up, the next request gets the true module, fetched again; with it down, the request that finds the
/// alteration gets DATA_LOSS. No request ever gets the altered bytes (or the path of an altered blob).
async fn altered_blob_while_running(how: Alteration, origin_up: bool, first: First) {
    let mut origin = Origin::start().await;
    let module = wasm_module_of_size(&format!("altered-{how:?}-{origin_up}-{first:?}"), 256 * 1024);
    let hex = sha256_hex(&module);
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req(&url)).await;
    let (info, _) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(
        info.outcome(),
        Outcome::Hit,
        "served from the cache before the alteration"
    );

    alter(&daemon.blob_path(&hex), how);
    if !origin_up {
        origin.stop().await;
    }

    let mut order = vec![first];
    order.extend(
        [First::Fetch, First::Resolve, First::FetchBySha]
            .into_iter()
            .filter(|k| std::mem::discriminant(k) != std::mem::discriminant(&first)),
    );
    for (n, kind) in order.into_iter().enumerate() {
        let what = format!(
            "{how:?}, origin {}: request {n} ({kind:?})",
            if origin_up { "up" } else { "down" }
        );
        match ask(&mut client, kind, &url, &hex).await {
            Ok((info, bytes)) => {
                assert!(
                    bytes == module,
                    "{what}: served altered bytes ({} bytes, {:?})",
                    bytes.len(),
                    info.outcome()
                );
                assert!(origin_up, "{what}: served {:?} with the origin down", info.outcome());
                assert_eq!(info.sha256, hex, "{what}");
            }
            Err(status) if n == 0 => {
                assert!(!origin_up, "{what}: failed with the origin up: {status:?}");
                assert_code(&status, Code::DataLoss);
            }
            // Once quarantined, the module is simply not cached: a miss with the origin down.
            Err(status) => {
                assert!(!origin_up, "{what}: failed with the origin up: {status:?}");
                assert!(
                    matches!(status.code(), Code::DataLoss | Code::Unavailable),
                    "{what}: unexpected status {status:?}"
                );
            }
        }
    }
    if origin_up {
        assert_eq!(origin.hits("/m.wasm"), 2, "{how:?}: fetched again once");
        assert!(
            std::fs::read(daemon.blob_path(&hex)).unwrap() == module,
            "blob repaired on disk"
        );
    } else {
        assert!(
            !daemon.blob_path(&hex).exists(),
            "{how:?}: the altered blob is not left under its name"
        );
    }
    assert!(
        !files_under(&daemon.cache_dir().join("quarantine")).is_empty(),
        "{how:?}: the altered blob is kept in quarantine/"
    );
    assert_list_consistent(&mut client, &format!("{how:?}")).await;
    assert_ingest_empty(&daemon, &format!("{how:?}"));
}

#[tokio::test]
async fn blob_altered_in_place_same_size_while_running_is_fetched_again() {
    altered_blob_while_running(Alteration::SameSizeInPlace, true, First::Fetch).await;
}

#[tokio::test]
async fn blob_altered_in_place_same_size_while_running_with_origin_down_is_data_loss() {
    altered_blob_while_running(Alteration::SameSizeInPlace, false, First::Fetch).await;
}

#[tokio::test]
async fn blob_altered_while_running_with_origin_down_is_not_resolved() {
    altered_blob_while_running(Alteration::SameSizeInPlace, false, First::Resolve).await;
}

#[tokio::test]
async fn blob_altered_while_running_is_fetched_again_for_a_request_by_sha256() {
    altered_blob_while_running(Alteration::SameSizeInPlace, true, First::FetchBySha).await;
}

#[tokio::test]
async fn blob_altered_while_running_with_origin_down_is_data_loss_for_a_request_by_sha256() {
    altered_blob_while_running(Alteration::SameSizeInPlace, false, First::FetchBySha).await;
}

#[tokio::test]
async fn blob_truncated_while_running_is_fetched_again() {
    altered_blob_while_running(Alteration::Truncated, true, First::Fetch).await;
}

#[tokio::test]
async fn blob_truncated_while_running_with_origin_down_is_data_loss() {
    altered_blob_while_running(Alteration::Truncated, false, First::Fetch).await;
}

#[tokio::test]
async fn blob_extended_while_running_with_origin_down_is_data_loss() {
    altered_blob_while_running(Alteration::Extended, false, First::Fetch).await;
}

#[tokio::test]
async fn blob_replaced_by_rename_while_running_is_fetched_again() {
    altered_blob_while_running(Alteration::ReplacedSameSize, true, First::Fetch).await;
}

#[tokio::test]
async fn blob_replaced_by_rename_while_running_with_origin_down_is_data_loss() {
    altered_blob_while_running(Alteration::ReplacedSameSize, false, First::Fetch).await;
}

/// Bit rot keeps size, inode and mtime: the bytes changed, nothing else did.
#[tokio::test]
async fn blob_altered_with_mtime_restored_while_running_is_fetched_again() {
    altered_blob_while_running(Alteration::SameSizeMtimeRestored, true, First::Fetch).await;
}

#[tokio::test]
async fn blob_altered_with_mtime_restored_while_running_with_origin_down_is_data_loss() {
    altered_blob_while_running(Alteration::SameSizeMtimeRestored, false, First::Fetch).await;
}

/// A second URL naming the altered module's digest is not served the altered bytes either.
#[tokio::test]
async fn blob_altered_while_running_is_not_served_to_another_url_by_digest() {
    let mut origin = Origin::start().await;
    let module = wasm_module_of_size("altered-by-digest", 128 * 1024);
    let hex = sha256_hex(&module);
    origin.serve("/a.wasm", module.clone());
    let daemon = Daemon::start(FAST_RETRY).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&origin.url("/a.wasm"))).await;
    fetch_ok(&mut client, req(&origin.url("/a.wasm"))).await;

    alter(&daemon.blob_path(&hex), Alteration::SameSizeInPlace);
    origin.stop().await;
    let result = fetch_unchecked(&mut client, req_sha(&origin.url("/b.wasm"), &hex)).await;

    match result {
        Ok((info, bytes)) => panic!(
            "served {} bytes ({:?}) for a corrupt digest with the origin down; altered: {}",
            bytes.len(),
            info.outcome(),
            bytes != module
        ),
        Err(status) => assert!(
            matches!(status.code(), Code::DataLoss | Code::Unavailable),
            "unexpected status {status:?}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Full disk: the cache dir on an 8 MiB tmpfs
// ---------------------------------------------------------------------------------------------------------------

/// A tmpfs mounted on a directory; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "mount -t tmpfs -o size={size} on {} failed ({}): {}\nThe full-disk tests need root and mount(8); \
                 they fail rather than skip.",
                path.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("running mount(8) for the full-disk tests: {e}"),
        }
        Tmpfs {
            path: path.to_path_buf(),
            mounted: true,
        }
    }

    fn unmount(&mut self) {
        if std::mem::take(&mut self.mounted) {
            let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: umount2(2) with a valid NUL-terminated path; MNT_DETACH never blocks on busy files.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }

    /// Bytes an unprivileged writer may still use.
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs is plain data, for which all zeros is valid.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid path and a pointer to a statvfs that outlives the call.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A daemon whose cache dir is an 8 MiB tmpfs. Dropping it kills the daemon before unmounting, so that the
/// daemon's temp dir can be removed whole.
struct FullDisk {
    daemon: Daemon,
    tmpfs: Tmpfs,
}

impl FullDisk {
    async fn start(args: &[&str]) -> FullDisk {
        let mut tmpfs = None;
        let daemon = Daemon::start_prepared(args, |cache| tmpfs = Some(Tmpfs::mount(cache, "8m"))).await;
        FullDisk {
            daemon,
            tmpfs: tmpfs.expect("mounted"),
        }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        self.daemon.kill();
        self.tmpfs.unmount();
    }
}

/// After a failure for lack of space: nothing in ingest/, List shows exactly `cached` (each blob whole), and each
/// of them is still served from the cache.
async fn assert_cache_intact(disk: &FullDisk, client: &mut Client, cached: &[(&str, &[u8])], when: &str) {
    assert_ingest_empty(&disk.daemon, when);
    assert_blob_files_whole(&disk.daemon, when).await;
    let listed = assert_list_consistent(client, when).await;
    let mut listed: Vec<String> = listed.into_iter().map(|m| m.sha256).collect();
    listed.sort();
    let mut wanted: Vec<String> = cached.iter().map(|(_, m)| sha256_hex(m)).collect();
    wanted.sort();
    assert_eq!(listed, wanted, "{when}: List shows exactly the complete modules");
    for (url, module) in cached {
        let (info, bytes) = fetch_unchecked(client, req(url))
            .await
            .unwrap_or_else(|s| panic!("{when}: cached {url} not served: {:?} {}", s.code(), s.message()));
        assert_eq!(info.outcome(), Outcome::Hit, "{when}: {url}");
        assert!(bytes == *module, "{when}: bytes of {url}");
    }
}

#[tokio::test]
async fn module_larger_than_free_space_is_resource_exhausted_and_the_cache_stays_consistent() {
    let origin = Origin::start().await;
    let disk = FullDisk::start(FAST_RETRY).await;
    let mut client = disk.daemon.client().await;
    let small = wasm_module_of_size("disk-small", 64 * 1024);
    let medium = wasm_module_of_size("disk-medium", 2 << 20);
    origin.serve("/small.wasm", small.clone());
    origin.serve("/medium.wasm", medium.clone());
    fetch_ok(&mut client, req(&origin.url("/small.wasm"))).await;
    fetch_ok(&mut client, req(&origin.url("/medium.wasm"))).await;
    let free = disk.tmpfs.free();
    // Larger than what is left, smaller than the whole disk: it would fit in an empty cache.
    let large = wasm_module_of_size("disk-large", free as usize + (512 << 10));
    origin.serve("/large.wasm", large);

    let status = fetch_err(&mut client, req(&origin.url("/large.wasm"))).await;

    assert_code(&status, Code::ResourceExhausted);
    let cached: [(&str, &[u8]); 2] = [
        (&origin.url("/small.wasm"), &small),
        (&origin.url("/medium.wasm"), &medium),
    ];
    assert_cache_intact(&disk, &mut client, &cached, "after the full-disk failure").await;
    let later = wasm_module("disk-later");
    origin.serve("/later.wasm", later.clone());
    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/later.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == later, "a small module fetched after the failure");
    // README, Errors: "Messages name the URL (without credentials) and the cause."
    assert!(
        status.message().contains(&origin.url("/large.wasm")),
        "the message names the URL: {}",
        status.message()
    );
}

#[tokio::test]
async fn module_larger_than_the_whole_disk_is_resource_exhausted_and_the_index_survives_a_restart() {
    let origin = Origin::start().await;
    let mut disk = FullDisk::start(FAST_RETRY).await;
    let mut client = disk.daemon.client().await;
    let small = wasm_module_of_size("whole-disk-small", 32 * 1024);
    origin.serve("/small.wasm", small.clone());
    fetch_ok(&mut client, req(&origin.url("/small.wasm"))).await;
    origin.serve("/huge.wasm", wasm_module_of_size("whole-disk-huge", 12 << 20));

    let status = fetch_err(&mut client, req(&origin.url("/huge.wasm"))).await;

    assert_code(&status, Code::ResourceExhausted);
    let small_url = origin.url("/small.wasm");
    assert_cache_intact(&disk, &mut client, &[(&small_url, &small)], "after the failure").await;
    disk.daemon.restart().await;
    let mut client = disk.daemon.client().await;
    assert_cache_intact(&disk, &mut client, &[(&small_url, &small)], "after a restart").await;
    let later = wasm_module("whole-disk-later");
    origin.serve("/later.wasm", later.clone());
    let (_, bytes) = fetch_ok(&mut client, req(&origin.url("/later.wasm"))).await;
    assert!(bytes == later);
}

/// A small download that unwraps (gzip) to more than the free space fails while unwrapping.
#[tokio::test]
async fn gzip_unwrapping_past_free_space_is_resource_exhausted_and_leaves_no_temp_file() {
    let origin = Origin::start().await;
    let disk = FullDisk::start(FAST_RETRY).await;
    let mut client = disk.daemon.client().await;
    let small = wasm_module("unwrap-small");
    origin.serve("/small.wasm", small.clone());
    fetch_ok(&mut client, req(&origin.url("/small.wasm"))).await;
    let bomb = gzip(&compressible_module(12 << 20));
    assert!(bomb.len() < 256 * 1024, "the download itself fits easily");
    origin.serve("/zeros.wasm.gz", bomb);

    let status = fetch_err(&mut client, req(&origin.url("/zeros.wasm.gz"))).await;

    assert_code(&status, Code::ResourceExhausted);
    let small_url = origin.url("/small.wasm");
    assert_cache_intact(&disk, &mut client, &[(&small_url, &small)], "after the unwrap failure").await;
}

/// A refresh that fails for lack of space serves the cached copy (STALE) and leaves nothing behind.
#[tokio::test]
async fn refresh_failing_on_a_full_disk_serves_the_cached_copy() {
    let origin = Origin::start().await;
    let disk = FullDisk::start(FAST_RETRY).await;
    let mut client = disk.daemon.client().await;
    let v1 = wasm_module_of_size("stale-disk-v1", 64 * 1024);
    origin.serve("/m.wasm", v1.clone());
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.serve("/m.wasm", wasm_module_of_size("stale-disk-v2", 12 << 20));

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1, "the cached copy is served");
    assert_cache_intact(&disk, &mut client, &[(&url, &v1)], "after the stale refresh").await;
}

// ---------------------------------------------------------------------------------------------------------------
// 4a. Upstream stopped mid-download
// ---------------------------------------------------------------------------------------------------------------

/// Waits until the daemon's ingest file of a running download holds at least `bytes` bytes.
async fn wait_for_partial_download(daemon: &Daemon, bytes: u64) {
    wait_for(
        || {
            daemon
                .ingest_files()
                .iter()
                .any(|f| std::fs::metadata(f).map(|m| m.len() >= bytes).unwrap_or(false))
        },
        "part of the body is in ingest/",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_stopped_mid_download_is_unavailable_after_retries() {
    let mut origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module_of_size("stopped-mid-download", 4 << 20));
    origin.throttle("/m.wasm", Duration::from_millis(20));
    let daemon = Daemon::start(&[
        "--fetch-attempts",
        "3",
        "--retry-backoff",
        "10ms",
        "--fetch-timeout",
        "2s",
    ])
    .await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    let started = Instant::now();
    let running = tokio::spawn(async move { fetch_unchecked(&mut client, req(&url)).await });
    wait_for_partial_download(&daemon, 256 * 1024).await;

    origin.stop().await;
    let result = running.await.expect("fetch task");

    let Err(status) = result else {
        panic!("a download cut off by a stopped origin succeeded");
    };
    assert_code(&status, Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(origin.hits("/m.wasm"), 1, "the retries found the origin gone");
    assert_ingest_empty(&daemon, "after the failure");
    assert!(list(&mut daemon.client().await).await.is_empty(), "nothing listed");
    assert!(daemon.blob_files().is_empty(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_stopped_mid_refresh_serves_the_cached_copy() {
    let mut origin = Origin::start().await;
    let v1 = wasm_module("stopped-refresh-v1");
    origin.serve("/m.wasm", v1.clone());
    let daemon = Daemon::start(&[
        "--fetch-attempts",
        "3",
        "--retry-backoff",
        "10ms",
        "--fetch-timeout",
        "2s",
    ])
    .await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.serve("/m.wasm", wasm_module_of_size("stopped-refresh-v2", 4 << 20));
    origin.throttle("/m.wasm", Duration::from_millis(20));
    let mut refresher = client.clone();
    let refresh_url = url.clone();
    let running = tokio::spawn(async move {
        fetch_unchecked(
            &mut refresher,
            req_policy(&refresh_url, PullPolicy::Always, "ns/p", "2"),
        )
        .await
    });
    wait_for_partial_download(&daemon, 256 * 1024).await;

    origin.stop().await;
    let (info, bytes) = running
        .await
        .expect("task")
        .expect("a failed refresh serves the cached copy");

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1, "the cached copy is served");
    // The failed refresh did not record version 2: asking again re-checks, fails, and is STALE again.
    let (again, _) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(again.outcome(), Outcome::Stale);
    assert_ingest_empty(&daemon, "after the stale refresh");
    let listed = assert_list_consistent(&mut client, "after the stale refresh").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sha256, sha256_hex(&v1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_stopped_mid_blob_download_is_unavailable_after_retries() {
    let registry = Registry::shared_plain();
    let image = registry
        .push(
            "faults/stopped",
            Some("v1"),
            cncf_image(&wasm_module_of_size("registry-stopped", 4 << 20)),
        )
        .await;
    let mut proxy = registry.proxy().await;
    proxy.set_fault(BlobFault::Throttle(Duration::from_millis(20)));
    let daemon = proxy.daemon(&["--fetch-attempts", "3", "--fetch-timeout", "2s"]).await;
    let mut client = daemon.client().await;
    let url = proxy.oci("faults/stopped:v1");
    let started = Instant::now();
    let running = tokio::spawn(async move { fetch_unchecked(&mut client, req(&url)).await });
    wait_for(|| proxy.blob_bytes_sent() >= 256 * 1024, "part of the blob is sent").await;

    proxy.stop().await;
    let result = running.await.expect("fetch task");

    let Err(status) = result else {
        panic!("a blob download cut off by a stopped registry succeeded");
    };
    assert_code(&status, Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.blob_gets("faults/stopped"), 1);
    assert_ingest_empty(&daemon, "after the failure");
    assert!(list(&mut daemon.client().await).await.is_empty(), "nothing listed");
    assert!(
        !daemon.blob_path(&image.module_digest).exists(),
        "the module is not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_stopped_mid_blob_download_on_refresh_serves_the_cached_copy() {
    let registry = Registry::shared_plain();
    let repo = "faults/stopped-refresh";
    let v1 = registry
        .push(repo, Some("v1"), cncf_image(&wasm_module("registry-refresh-v1")))
        .await;
    let mut proxy = registry.proxy().await;
    let daemon = proxy.daemon(&["--fetch-attempts", "3", "--fetch-timeout", "2s"]).await;
    let mut client = daemon.client().await;
    let url = proxy.oci(&format!("{repo}:v1"));
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    registry
        .push(
            repo,
            Some("v1"),
            cncf_image(&wasm_module_of_size("registry-refresh-v2", 4 << 20)),
        )
        .await;
    proxy.set_fault(BlobFault::Throttle(Duration::from_millis(20)));
    let mut refresher = client.clone();
    let refresh_url = url.clone();
    let running = tokio::spawn(async move {
        fetch_unchecked(
            &mut refresher,
            req_policy(&refresh_url, PullPolicy::Always, "ns/p", "2"),
        )
        .await
    });
    wait_for(|| proxy.blob_bytes_sent() >= 256 * 1024, "part of the new blob is sent").await;

    proxy.stop().await;
    let (info, bytes) = running
        .await
        .expect("task")
        .expect("a failed refresh serves the cached copy");

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1.module, "the cached copy is served");
    assert_eq!(info.sha256, v1.module_digest);
    assert_ingest_empty(&daemon, "after the stale refresh");
    let listed = assert_list_consistent(&mut client, "after the stale refresh").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// 4b. A server that accepts and never answers
// ---------------------------------------------------------------------------------------------------------------

const HANG_FLAGS: &[&str] = &[
    "--fetch-timeout",
    "300ms",
    "--fetch-attempts",
    "2",
    "--retry-backoff",
    "10ms",
];
/// attempts x --fetch-timeout.
const HANG_BUDGET: Duration = Duration::from_millis(600);
/// What the daemon may take beyond the budget: backoff, connection set-up, a loaded CI machine.
const HANG_SLACK: Duration = Duration::from_millis(1500);

#[track_caller]
fn assert_hang_bounded(elapsed: Duration) {
    assert!(
        elapsed >= HANG_BUDGET.mul_f64(0.9),
        "gave up after {elapsed:?}, before attempts x --fetch-timeout ({HANG_BUDGET:?})"
    );
    assert!(
        elapsed <= HANG_BUDGET + HANG_SLACK,
        "took {elapsed:?}; attempts x --fetch-timeout is {HANG_BUDGET:?}"
    );
}

#[tokio::test]
async fn origin_that_never_answers_is_deadline_exceeded_within_attempts_times_timeout() {
    let server = RawServer::start(|_| Reply::Hang).await;
    let daemon = Daemon::start(HANG_FLAGS).await;
    let mut client = daemon.client().await;

    let started = Instant::now();
    let status = fetch_err(&mut client, req(&server.url("/m.wasm"))).await;
    let elapsed = started.elapsed();

    assert_code(&status, Code::DeadlineExceeded);
    assert_hang_bounded(elapsed);
    assert_eq!(server.accepted(), 2, "one connection per attempt");
    assert_ingest_empty(&daemon, "after the timeout");
    assert!(list(&mut client).await.is_empty());
}

/// The caller's own deadline (its `grpc-timeout`) ends its call at that deadline, well before the daemon's fetch
/// budget. The call is made by hand over HTTP/2: a tonic client would start its own timer for that header and
/// answer first, proving nothing about the daemon.
#[tokio::test]
async fn call_deadline_ends_a_call_waiting_on_a_silent_origin() {
    let server = RawServer::start(|_| Reply::Hang).await;
    let daemon = Daemon::start(&["--fetch-timeout", "5s", "--fetch-attempts", "1"]).await;

    let started = Instant::now();
    let (status, message) = raw_grpc_call(
        &daemon.socket(),
        "/wasmcache.v1.ModuleCache/Resolve",
        &req(&server.url("/m.wasm")),
        "300m",
    )
    .await;
    let elapsed = started.elapsed();

    assert_eq!(
        status,
        Code::DeadlineExceeded as i32,
        "grpc-status; message {message:?}"
    );
    assert!(message.contains("deadline"), "{message}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}; the call's deadline was 300 ms and the fetch's 5 s"
    );
}

/// One unary gRPC call over the daemon's socket with a `grpc-timeout` header: its `grpc-status` and `grpc-message`
/// (from the trailers, or from the headers of a trailers-only answer).
async fn raw_grpc_call(socket: &Path, path: &str, message: &impl prost::Message, timeout: &str) -> (i32, String) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the daemon");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://wasmcache{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.expect("send the call");
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.expect("read the answer").trailers().cloned();
    let field = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .map(|v| v.to_str().unwrap().to_string())
    };
    let status = field("grpc-status").expect("a grpc-status").parse().unwrap();
    let message = field("grpc-message").unwrap_or_default();
    (status, message)
}

#[tokio::test]
async fn registry_that_never_answers_is_deadline_exceeded_within_attempts_times_timeout() {
    let server = RawServer::start(|_| Reply::Hang).await;
    let daemon = Daemon::start(HANG_FLAGS).await;
    let mut client = daemon.client().await;

    let started = Instant::now();
    let status = fetch_err(&mut client, req(&format!("oci://{}/faults/hang:v1", server.addr))).await;
    let elapsed = started.elapsed();

    assert_code(&status, Code::DeadlineExceeded);
    assert_hang_bounded(elapsed);
    assert_eq!(server.accepted(), 2, "one connection per attempt");
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test]
async fn origin_that_stops_answering_on_refresh_serves_the_cached_copy_within_the_bound() {
    let origin = Origin::start().await;
    let v1 = wasm_module("hang-refresh-v1");
    origin.serve("/m.wasm", v1.clone());
    let daemon = Daemon::start(HANG_FLAGS).await;
    let mut client = daemon.client().await;
    let url = origin.url("/m.wasm");
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    origin.delay("/m.wasm", Duration::from_secs(60));

    let started = Instant::now();
    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    let elapsed = started.elapsed();

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1);
    assert_hang_bounded(elapsed);
    assert_eq!(
        origin.hits("/m.wasm"),
        1 + 2,
        "the first fetch, then one request per attempt"
    );
}

#[tokio::test]
async fn registry_that_stops_answering_on_refresh_serves_the_cached_copy_within_the_bound() {
    let registry = Registry::shared_plain();
    let repo = "faults/hang-refresh";
    let v1 = registry
        .push(repo, Some("v1"), cncf_image(&wasm_module("registry-hang-v1")))
        .await;
    let proxy = registry.proxy().await;
    let daemon = proxy.daemon(&HANG_FLAGS[..4]).await;
    let mut client = daemon.client().await;
    let url = proxy.oci(&format!("{repo}:v1"));
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    proxy.hang();

    let started = Instant::now();
    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;
    let elapsed = started.elapsed();

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1.module);
    assert_hang_bounded(elapsed);
}

// ---------------------------------------------------------------------------------------------------------------
// 4b'. A slowloris upstream: every wait is short, the whole never ends (issue 9, item 9)
// ---------------------------------------------------------------------------------------------------------------

/// Each wait for a byte is 200 ms, well within --fetch-timeout; only --fetch-deadline ends the attempt.
const DRIP: Duration = Duration::from_millis(200);
/// How long a test waits for an answer, so that a daemon without a deadline fails the test instead of hanging it.
const DRIP_WAIT: Duration = Duration::from_secs(20);

/// A fetch bounded by `DRIP_WAIT`: its status (it must fail) and how long it took.
async fn drip_fetch(client: &mut Client, url: &str) -> (Status, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(DRIP_WAIT, fetch_unchecked(client, req(url))).await {
        Err(_) => panic!("{url}: no answer within {DRIP_WAIT:?}: the dripping download was not cut off"),
        Ok(Ok((info, _))) => panic!("{url}: served {info:?}"),
        Ok(Err(status)) => {
            let elapsed = started.elapsed();
            eprintln!("{url}: {:?} after {elapsed:?}: {}", status.code(), status.message());
            (status, elapsed)
        }
    }
}

#[tokio::test]
async fn slowloris_origin_is_deadline_exceeded_at_the_fetch_deadline() {
    let origin = Origin::start().await;
    origin.drip("/m.wasm", DRIP);
    let daemon = Daemon::start(&[
        "--fetch-timeout",
        "1s",
        "--fetch-deadline",
        "2s",
        "--fetch-attempts",
        "1",
    ])
    .await;
    let mut client = daemon.client().await;

    let (status, elapsed) = drip_fetch(&mut client, &origin.url("/m.wasm")).await;

    assert_code(&status, Code::DeadlineExceeded);
    assert!(
        status.message().contains("--fetch-deadline") && status.message().contains("2s"),
        "the message names the deadline: {}",
        status.message()
    );
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "answered after {elapsed:?}; the deadline is 2 s"
    );
    assert_eq!(origin.hits("/m.wasm"), 1);
    assert_ingest_empty(&daemon, "after the deadline");
    assert!(list(&mut client).await.is_empty(), "nothing listed");
}

/// An attempt cut off by the deadline is a timed-out attempt: retried like the others, each one bounded.
#[tokio::test]
async fn slowloris_attempts_are_each_cut_off_at_the_fetch_deadline_and_retried() {
    let origin = Origin::start().await;
    origin.drip("/m.wasm", DRIP);
    let daemon = Daemon::start(&[
        "--fetch-timeout",
        "1s",
        "--fetch-deadline",
        "1s",
        "--fetch-attempts",
        "3",
        "--retry-backoff",
        "10ms",
    ])
    .await;
    let mut client = daemon.client().await;

    let (status, elapsed) = drip_fetch(&mut client, &origin.url("/m.wasm")).await;

    assert_code(&status, Code::DeadlineExceeded);
    assert!(status.message().contains("3 attempt"), "{}", status.message());
    assert_eq!(origin.hits("/m.wasm"), 3, "every attempt was made");
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(8),
        "answered after {elapsed:?}; three attempts of 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_dripping_a_blob_is_deadline_exceeded_at_the_fetch_deadline() {
    let registry = Registry::shared_plain();
    let image = registry
        .push(
            "faults/drip",
            Some("v1"),
            cncf_image(&wasm_module_of_size("drip", 64 * 1024)),
        )
        .await;
    let proxy = registry.proxy().await;
    proxy.set_fault(BlobFault::Drip(DRIP));
    let daemon = proxy
        .daemon(&[
            "--fetch-timeout",
            "1s",
            "--fetch-deadline",
            "2s",
            "--fetch-attempts",
            "1",
        ])
        .await;
    let mut client = daemon.client().await;

    let (status, elapsed) = drip_fetch(&mut client, &proxy.oci("faults/drip:v1")).await;

    assert_code(&status, Code::DeadlineExceeded);
    assert!(
        status.message().contains("--fetch-deadline") && status.message().contains("2s"),
        "the message names the deadline: {}",
        status.message()
    );
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "answered after {elapsed:?}; the deadline is 2 s"
    );
    assert_eq!(proxy.blob_gets("faults/drip"), 1);
    assert_ingest_empty(&daemon, "after the deadline");
    assert!(
        !daemon.blob_path(&image.module_digest).exists(),
        "the module is not stored"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 4c. A connection dropped halfway through the body
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn body_cut_off_halfway_is_retried_then_unavailable() {
    let module = Bytes::from(wasm_module_of_size("half-body", 512 * 1024));
    let server = RawServer::start(move |_| Reply::Half(module.clone())).await;
    let daemon = Daemon::start(&[
        "--fetch-attempts",
        "3",
        "--retry-backoff",
        "10ms",
        "--fetch-timeout",
        "5s",
    ])
    .await;
    let mut client = daemon.client().await;

    let started = Instant::now();
    let status = fetch_err(&mut client, req(&server.url("/m.wasm"))).await;

    assert_code(&status, Code::Unavailable);
    assert_eq!(server.accepted(), 3, "every attempt was made");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_ingest_empty(&daemon, "after the failure");
    assert!(list(&mut client).await.is_empty(), "nothing listed");
    assert!(daemon.blob_files().is_empty(), "nothing stored");
}

/// The retry starts from an empty file: half a body followed by a whole one gives exactly the module.
#[tokio::test]
async fn body_cut_off_halfway_then_whole_is_fetched_exactly_once_whole() {
    let module = wasm_module_of_size("half-then-whole", 512 * 1024);
    let body = Bytes::from(module.clone());
    let server = RawServer::start(move |n| {
        if n == 0 {
            Reply::Half(body.clone())
        } else {
            Reply::Full(body.clone())
        }
    })
    .await;
    let daemon = Daemon::start(&["--fetch-attempts", "3", "--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;

    let (info, bytes) = fetch_ok(&mut client, req(&server.url("/m.wasm"))).await;

    assert_eq!(info.outcome(), Outcome::Fetched);
    assert!(bytes == module, "the module, not half of it twice");
    assert_eq!(server.accepted(), 2);
    assert_ingest_empty(&daemon, "after the retry");
}

#[tokio::test]
async fn body_cut_off_halfway_on_refresh_is_retried_then_serves_the_cached_copy() {
    let v1 = wasm_module("half-refresh-v1");
    let v2 = Bytes::from(wasm_module_of_size("half-refresh-v2", 512 * 1024));
    let first = Bytes::from(v1.clone());
    let server = RawServer::start(move |n| {
        if n == 0 {
            Reply::Full(first.clone())
        } else {
            Reply::Half(v2.clone())
        }
    })
    .await;
    let daemon = Daemon::start(&["--fetch-attempts", "3", "--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;
    let url = server.url("/m.wasm");
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1);
    assert_eq!(
        server.accepted(),
        1 + 3,
        "the first fetch, then every attempt of the refresh"
    );
    assert_ingest_empty(&daemon, "after the stale refresh");
    let listed = assert_list_consistent(&mut client, "after the stale refresh").await;
    assert_eq!(listed.len(), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// 4d. A registry sending a blob that does not match its digest
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn registry_blob_corrupted_in_transit_is_data_loss_and_nothing_is_stored() {
    let registry = Registry::shared_plain();
    let image = registry
        .push(
            "faults/corrupt",
            Some("v1"),
            cncf_image(&wasm_module_of_size("corrupt-in-transit", 256 * 1024)),
        )
        .await;
    let proxy = registry.proxy().await;
    proxy.set_fault(BlobFault::Corrupt);
    let daemon = proxy.daemon(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&proxy.oci("faults/corrupt:v1"))).await;

    assert_code(&status, Code::DataLoss);
    assert!(
        status
            .message()
            .contains(image.module_blob_digest.trim_start_matches("sha256:")),
        "the message names the blob digest: {}",
        status.message()
    );
    assert!(list(&mut client).await.is_empty(), "nothing listed");
    assert!(
        daemon.blob_files().is_empty(),
        "nothing stored: {:?}",
        daemon.blob_files()
    );
    assert_ingest_empty(&daemon, "after the mismatch");
    // The registry itself is fine: without the fault the module comes through whole.
    proxy.set_fault(BlobFault::Pass);
    let (info, bytes) = fetch_ok(&mut client, req(&proxy.oci("faults/corrupt:v1"))).await;
    assert!(bytes == image.module);
    assert_eq!(info.sha256, image.module_digest);
}

#[tokio::test]
async fn registry_blob_corrupted_in_transit_on_refresh_serves_the_cached_copy() {
    let registry = Registry::shared_plain();
    let repo = "faults/corrupt-refresh";
    let v1 = registry
        .push(repo, Some("v1"), cncf_image(&wasm_module("corrupt-refresh-v1")))
        .await;
    let proxy = registry.proxy().await;
    let daemon = proxy.daemon(&[]).await;
    let mut client = daemon.client().await;
    let url = proxy.oci(&format!("{repo}:v1"));
    fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "1")).await;
    let v2 = registry
        .push(repo, Some("v1"), cncf_image(&wasm_module("corrupt-refresh-v2")))
        .await;
    proxy.set_fault(BlobFault::Corrupt);

    let (info, bytes) = fetch_ok(&mut client, req_policy(&url, PullPolicy::Always, "ns/p", "2")).await;

    assert_eq!(info.outcome(), Outcome::Stale);
    assert!(bytes == v1.module, "the cached copy is served");
    assert!(
        !daemon.blob_path(&v2.module_digest).exists(),
        "the corrupted new module is not stored"
    );
    let listed = assert_list_consistent(&mut client, "after the corrupt refresh").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sha256, v1.module_digest);
    assert_ingest_empty(&daemon, "after the corrupt refresh");
}

/// The gRPC health status of `wasmcache.v1.ModuleCache` (what the DaemonSet's readiness probe asks).
async fn module_cache_health(daemon: &Daemon) -> ServingStatus {
    let channel = unix_channel(&daemon.socket()).await.expect("connect");
    let request = HealthCheckRequest {
        service: "wasmcache.v1.ModuleCache".into(),
    };
    let answer = HealthClient::new(channel).check(request).await.expect("health check");
    answer.into_inner().status()
}

/// Fills the filesystem of `dir` with a file `name`, leaving about `leave` bytes free; returns its path.
fn fill_disk(tmpfs: &Tmpfs, dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let size = tmpfs.free().saturating_sub(leave);
    let mut file = std::fs::File::create(&path).expect("create filler");
    let block = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    while written < size {
        let n = block.len().min((size - written) as usize);
        if std::io::Write::write_all(&mut file, &block[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    path
}

/// The index's own writes meet a full disk: every answer meanwhile is RESOURCE_EXHAUSTED (never INTERNAL),
/// `/readyz` says 503, no blob is left without a URL, and once space returns the daemon recovers by itself,
/// without a restart.
#[tokio::test]
async fn index_on_a_full_disk_recovers_by_itself_when_space_returns() {
    let origin = Origin::start().await;
    let admin = free_local_addr();
    let admin_arg = admin.to_string();
    let disk = FullDisk::start(&["--retry-backoff", "10ms", "--admin-listen", &admin_arg]).await;
    let mut client = disk.daemon.client().await;
    let first = wasm_module("index-full-first");
    origin.serve("/first.wasm", first.clone());
    fetch_ok(&mut client, req(&origin.url("/first.wasm"))).await;
    let filler = fill_disk(&disk.tmpfs, &disk.daemon.dir().join("cache"), 0);

    // Pinning writes only the index: the index alone meets the full disk.
    let mut codes = Vec::new();
    let hex = sha256_hex(&first);
    for i in 0..400 {
        let target = Some(wasmcache::proto::pin_request::Target::Sha256(hex.clone()));
        let request = wasmcache::proto::PinRequest { target };
        let answer = if i % 2 == 0 {
            client.pin(request).await.map(|_| ())
        } else {
            client.unpin(request).await.map(|_| ())
        };
        codes.push(answer.err());
    }
    // sled writes its log from a background thread every half second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..10 {
        let path = format!("/while-full{i}.wasm");
        origin.serve(&path, first.clone());
        codes.push(fetch_unchecked(&mut client, req(&origin.url(&path))).await.err());
        codes.push(
            fetch_unchecked(&mut client, req(&origin.url("/first.wasm")))
                .await
                .err(),
        );
    }
    let readyz = http_get(admin, "/readyz").await;
    let health = module_cache_health(&disk.daemon).await;

    for status in codes.iter().flatten() {
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "while full: {}",
            status.message()
        );
    }
    assert!(codes.iter().flatten().count() > 0, "the disk was full");
    assert_eq!(readyz.status, 503, "readyz while the index is down: {}", readyz.text());
    assert_eq!(
        health,
        ServingStatus::NotServing,
        "gRPC health of ModuleCache while the index is down"
    );
    std::fs::remove_file(filler).expect("free the space");
    let later = wasm_module("index-full-later");
    origin.serve("/later.wasm", later.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    let bytes = loop {
        match fetch_unchecked(&mut client, req(&origin.url("/later.wasm"))).await {
            Ok((_, bytes)) => break bytes,
            Err(status) if Instant::now() < deadline => {
                assert_ne!(status.code(), Code::Internal, "recovering: {}", status.message());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => panic!("no recovery: {:?} {}", status.code(), status.message()),
        }
    };
    assert!(bytes == later);
    assert_eq!(http_get(admin, "/readyz").await.status, 200, "ready again");
    assert_eq!(module_cache_health(&disk.daemon).await, ServingStatus::Serving);
    let (info, _) = fetch_ok(&mut client, req(&origin.url("/first.wasm"))).await;
    assert_eq!(info.outcome(), Outcome::Hit, "what was cached before is still served");
    let listed = list(&mut client).await;
    assert_eq!(
        listed.len(),
        disk.daemon.blob_files().len(),
        "every blob file is listed: {listed:?}"
    );
    assert!(
        listed.iter().all(|m| !m.urls.is_empty()),
        "no module without a URL: {listed:?}"
    );
    assert_ingest_empty(&disk.daemon, "after recovery");
}
