//! A cluster tier at scale: one origin registry (the real docker-registry behind a counting proxy), one "tier"
//! daemon serving `--registry-listen` and pulling from the origin, and 8 "node" daemons (each its own process
//! and cache dir) whose `--registry-mirror ORIGIN=http://TIER` names the tier. All nodes at once take 200
//! concurrent gRPC `Fetch` requests each, spread over 3 modules; the origin must see one blob GET per module.
//!
//! `cargo test --test tier_scale -- --nocapture` prints the figures (docs/benchmarks.md keeps them). A second
//! test pulls a private module through the tier with `--forward-credentials-to`.
//!
//! The nodes have no `--insecure-registry` for the origin: the origin itself (always tried after the mirrors)
//! refuses them, so a node gets a module through the tier or not at all.
//!
//! All daemons share 127.0.0.1. A loopback address per node (127.0.0.N) would change nothing the tier sees: a
//! node connects out from the address the kernel picks (127.0.0.1 for a 127.0.0.1 destination) and the daemon
//! has no option to bind its outgoing connections. A network namespace per node would need a veth pair or a
//! bridge per node to reach the tier, plus addresses and routes: root-only plumbing that the result (one blob GET
//! per module at the origin) does not depend on, so it is not done here.

mod support;

use std::time::{Duration, Instant};

use support::registry::*;
use support::*;
use tokio::task::JoinSet;

const NODES: usize = 8;
const REQUESTS_PER_NODE: usize = 200;
const MODULES: usize = 3;
const MODULE_BYTES: usize = 256 * 1024;

/// What one node saw: the latency of each of its requests.
struct NodeRun {
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The tier's `wasmcache_registry_requests_total`, summed over the samples whose labels match `filter`.
fn tier_requests(scrape: &Scrape, filter: impl Fn(&[(String, String)]) -> bool) -> f64 {
    scrape
        .all("wasmcache_registry_requests_total")
        .iter()
        .filter(|(labels, _)| filter(labels))
        .map(|(_, value)| value)
        .sum()
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_nodes_behind_one_tier_pull_each_module_from_the_origin_once() {
    let registry = Registry::shared_plain();
    let origin = registry.proxy().await;
    let origin_host = origin.host();
    let mut modules = Vec::new();
    for i in 0..MODULES {
        let repo = format!("scale/module-{i}");
        let module = wasm_module_of_size(&repo, MODULE_BYTES);
        let image = registry.push(&repo, Some("v1"), cncf_image(&module)).await;
        modules.push((repo, image, sha256_hex(&module)));
    }
    let tier_listen = free_local_addr().to_string();
    let (_tier, tier_admin) =
        start_with_admin(&["--registry-listen", &tier_listen, "--insecure-registry", &origin_host]).await;
    let mirror = format!("{origin_host}=http://{tier_listen}");
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Daemon::start(&["--registry-mirror", &mirror]).await);
    }
    let urls: Vec<String> = modules
        .iter()
        .map(|(repo, _, _)| origin.oci(&format!("{repo}:v1")))
        .collect();

    let started = Instant::now();
    let mut runs = JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        let client = node.client().await;
        let urls = urls.clone();
        let expected: Vec<String> = modules.iter().map(|(_, _, sha)| sha.clone()).collect();
        runs.spawn(async move {
            let mut requests = JoinSet::new();
            for r in 0..REQUESTS_PER_NODE {
                let m = (r + n) % MODULES;
                let mut client = client.clone();
                let url = urls[m].clone();
                let want = expected[m].clone();
                requests.spawn(async move {
                    let t = Instant::now();
                    let result = fetch(&mut client, req(&url)).await;
                    let elapsed = t.elapsed();
                    match result {
                        Ok((_, bytes)) if sha256_hex(&bytes) == want => Ok(elapsed),
                        Ok((_, bytes)) => Err(format!(
                            "node {n}: {url}: {} bytes with sha256 {}, want {want}",
                            bytes.len(),
                            sha256_hex(&bytes)
                        )),
                        Err(status) => Err(format!("node {n}: {url}: {:?} {}", status.code(), status.message())),
                    }
                });
            }
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while let Some(joined) = requests.join_next().await {
                match joined.expect("request task") {
                    Ok(latency) => latencies.push(latency),
                    Err(failure) => failures.push(failure),
                }
            }
            (n, latencies, failures)
        });
    }
    let mut per_node: Vec<Option<NodeRun>> = (0..NODES).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(joined) = runs.join_next().await {
        let (n, latencies, node_failures) = joined.expect("node task");
        failures.extend(node_failures);
        per_node[n] = Some(NodeRun { latencies });
    }
    let wall = started.elapsed();
    let scrape = scrape(tier_admin).await;

    let tier_total = tier_requests(&scrape, |_| true);
    let tier_blob_gets = tier_requests(&scrape, |l| {
        label(l, "route") == "blob" && label(l, "method") == "GET" && label(l, "code") == "200"
    });
    let tier_manifests = tier_requests(&scrape, |l| label(l, "route") == "manifest");
    let origin_blob_gets: Vec<usize> = modules.iter().map(|(repo, _, _)| origin.blob_gets(repo)).collect();
    let origin_manifests: Vec<usize> = modules
        .iter()
        .map(|(repo, _, _)| origin.manifest_requests(repo))
        .collect();
    println!(
        "tier scale: {NODES} nodes x {REQUESTS_PER_NODE} concurrent Fetch over {MODULES} modules of {} KiB",
        MODULE_BYTES / 1024
    );
    println!("wall time: {:.0} ms", wall.as_secs_f64() * 1000.0);
    println!("origin blob GETs per module: {origin_blob_gets:?}");
    println!("origin manifest requests per module: {origin_manifests:?}");
    println!("origin requests in all: {}", origin.total());
    println!(
        "tier requests: {tier_total} (manifest {tier_manifests}, blob GET 200 {tier_blob_gets}, others {})",
        tier_total - tier_manifests - tier_blob_gets
    );
    for (n, run) in per_node.iter().enumerate() {
        let Some(run) = run else { continue };
        let mut sorted = run.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            continue;
        }
        println!(
            "node {n}: {} ok, p50 {:.1} ms, max {:.1} ms",
            sorted.len(),
            percentile(&sorted, 0.5).as_secs_f64() * 1000.0,
            sorted.last().unwrap().as_secs_f64() * 1000.0
        );
    }

    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failures.len(),
        NODES * REQUESTS_PER_NODE,
        failures.first()
    );
    assert!(
        origin_blob_gets.iter().all(|&n| n == 1),
        "one blob GET per module at the origin: {origin_blob_gets:?}\n{}",
        origin.describe()
    );
    assert_eq!(
        tier_blob_gets,
        (NODES * MODULES) as f64,
        "each node pulled each module from the tier once (its own single flight)"
    );
}

/// A private module through the tier: the node passes the request's pull secret for the origin to the tier
/// (`--forward-credentials-to TIER`), the tier passes it upstream, and a request without one is refused. The
/// node has no `--ca-file` for the HTTPS origin, so it cannot go around the tier.
#[tokio::test]
async fn node_forwards_the_pull_secret_to_the_tier_for_a_private_module() {
    let registry = Registry::shared_tls_auth();
    let origin = registry.proxy().await;
    let origin_host = origin.host();
    let module = wasm_module("scale/private");
    registry.push("scale/private", Some("v1"), cncf_image(&module)).await;
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let tier_listen = free_local_addr().to_string();
    let tier = Daemon::start(&["--registry-listen", &tier_listen, "--ca-file", &ca]).await;
    let mirror = format!("{origin_host}=http://{tier_listen}");
    let node = Daemon::start(&[
        "--registry-mirror",
        &mirror,
        "--forward-credentials-to",
        &tier_listen,
        "--retry-backoff",
        "10ms",
    ])
    .await;
    let url = origin.oci("scale/private:v1");
    let (user, password) = USER_A;
    let mut client = node.client().await;

    let anonymous = fetch(&mut client, req(&url)).await;
    let mut with_secret = req(&url);
    with_secret.pull_secret = docker_config_json(&origin_host, user, password);
    let (_, bytes) = fetch_ok(&mut client, with_secret).await;

    assert!(bytes == module, "the private module, through the tier");
    // The node reports the error of the last host it tried, the origin it cannot verify; the tier's answer
    // to it was a 401, in the tier's log.
    anonymous.expect_err("a request without the pull secret is refused");
    assert!(
        tier.log()
            .lines()
            .any(|l| l.contains(r#"route="manifest""#) && l.contains("status=401")),
        "the tier refused the anonymous request: {}",
        tier.log()
    );
    assert!(
        origin.seen().iter().any(|s| s.authorized && s.status == 200),
        "the credentials reached the origin: {}",
        origin.describe()
    );
}
