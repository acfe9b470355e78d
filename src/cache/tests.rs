//! The lookup's branches, in process: a real store in a temporary directory and the `file://` fetcher over
//! a temporary root, so that each branch (fetch, hit, refresh, stale, refetch after corruption, mismatch)
//! is driven by what is on disk and nothing else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::fetch::retry::Backoff;
use crate::fetch::Settings;
use crate::policy::PullPolicy;
use crate::store::Store;

/// A cache over a fresh store, fetching `file://` URLs below its own root.
struct Harness {
    cache: Cache,
    root: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
}

fn module(tag: &str) -> Vec<u8> {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    // A custom section carrying the tag, so that every module is valid Wasm and distinct.
    bytes.push(0);
    bytes.push((tag.len() + 1) as u8);
    bytes.push(tag.len() as u8);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

impl Harness {
    fn new(serve_stale: bool) -> Harness {
        let store_dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // The daemon's defaults, with one attempt and a file root of the test's own.
        let defaults = crate::config::Config::build(None, &Default::default(), &Default::default()).unwrap();
        let settings = Settings {
            backoff: Backoff {
                attempts: 1,
                ..defaults.fetch.backoff.clone()
            },
            file_roots: vec![root.path().to_path_buf()],
            ..defaults.fetch
        };
        let metrics = Arc::new(Metrics::new());
        let fetchers = Arc::new(Fetchers::new(&settings, metrics.clone()).unwrap());
        let store = Arc::new(Store::open(store_dir.path()).unwrap());
        let lifecycle = Lifecycle {
            max_cache_bytes: None,
            module_expiry: Duration::from_secs(3600),
            resolve_lease: Duration::from_secs(60),
            purge_interval: Duration::from_secs(60),
        };
        let cache = Cache::new(store, fetchers, serve_stale, lifecycle, metrics).unwrap();
        Harness {
            cache,
            root,
            _store_dir: store_dir,
        }
    }

    /// Writes `bytes` as `name` under the file root; returns its URL.
    fn origin(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.root.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        format!("file://{}", path.display())
    }

    fn request(url: &str, policy: PullPolicy, sha256: &str) -> Request {
        Request::parse(&RawRequest {
            url: url.into(),
            sha256: sha256.into(),
            policy,
            ..Default::default()
        })
        .unwrap()
    }

    async fn get(&self, url: &str, policy: PullPolicy) -> Result<(Module, Vec<u8>), Error> {
        self.get_pinned(url, policy, "").await
    }

    async fn get_pinned(&self, url: &str, policy: PullPolicy, sha256: &str) -> Result<(Module, Vec<u8>), Error> {
        let (module, blob) = self.cache.get(&Harness::request(url, policy, sha256)).await?;
        Ok((module, read(&blob.path)))
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn a_first_request_fetches_and_the_next_is_a_hit() {
    let h = Harness::new(true);
    let url = h.origin("a.wasm", &module("a"));

    let (first, bytes) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();
    let (second, _) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();

    assert_eq!(first.outcome, Outcome::Fetched);
    assert_eq!(bytes, module("a"));
    assert_eq!((second.outcome, second.digest), (Outcome::Hit, first.digest));
}

#[tokio::test]
async fn if_not_present_serves_the_cached_copy_after_the_origin_changed() {
    let h = Harness::new(true);
    let url = h.origin("b.wasm", &module("old"));
    h.get(&url, PullPolicy::IfNotPresent).await.unwrap();
    h.origin("b.wasm", &module("new"));

    let (module_info, bytes) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();

    assert_eq!(module_info.outcome, Outcome::Hit);
    assert_eq!(bytes, module("old"));
}

#[tokio::test]
async fn always_refreshes_from_the_origin() {
    let h = Harness::new(true);
    let url = h.origin("c.wasm", &module("old"));
    h.get(&url, PullPolicy::Always).await.unwrap();
    h.origin("c.wasm", &module("new"));

    let (refreshed, bytes) = h.get(&url, PullPolicy::Always).await.unwrap();

    assert_eq!(refreshed.outcome, Outcome::Refreshed);
    assert_eq!(bytes, module("new"));
}

#[tokio::test]
async fn always_serves_the_stale_copy_when_the_origin_is_gone_and_stale_is_allowed() {
    let h = Harness::new(true);
    let url = h.origin("d.wasm", &module("kept"));
    h.get(&url, PullPolicy::Always).await.unwrap();
    std::fs::remove_file(h.root.path().join("d.wasm")).unwrap();

    let (stale, bytes) = h.get(&url, PullPolicy::Always).await.unwrap();

    assert_eq!(stale.outcome, Outcome::Stale);
    assert_eq!(bytes, module("kept"));
}

#[tokio::test]
async fn always_fails_when_the_origin_is_gone_and_stale_is_not_allowed() {
    let h = Harness::new(false);
    let url = h.origin("e.wasm", &module("kept"));
    h.get(&url, PullPolicy::Always).await.unwrap();
    std::fs::remove_file(h.root.path().join("e.wasm")).unwrap();

    let error = h.get(&url, PullPolicy::Always).await.unwrap_err();

    assert_eq!(error.code(), tonic::Code::NotFound, "{error}");
}

#[tokio::test]
async fn a_cached_blob_corrupt_on_disk_is_quarantined_and_fetched_again() {
    let h = Harness::new(true);
    let url = h.origin("f.wasm", &module("good"));
    let (first, _) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();
    let mut bad = module("good");
    *bad.last_mut().unwrap() ^= 0xff;
    std::fs::write(&first.path, &bad).unwrap();

    let (again, bytes) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();

    assert_eq!(again.outcome, Outcome::Fetched);
    assert_eq!(bytes, module("good"));
}

#[tokio::test]
async fn a_pinned_digest_the_origin_does_not_have_is_data_loss_and_binds_nothing() {
    let h = Harness::new(true);
    let url = h.origin("g.wasm", &module("real"));
    let other = Sha256::of(&module("other")).to_string();

    let error = h.get_pinned(&url, PullPolicy::IfNotPresent, &other).await.unwrap_err();

    assert_eq!(error.code(), tonic::Code::DataLoss, "{error}");
    assert!(h.cache.list().unwrap().is_empty(), "nothing was stored or bound");
}

#[tokio::test]
async fn a_pinned_digest_the_url_leads_to_is_a_hit_without_the_origin() {
    let h = Harness::new(false);
    let url = h.origin("h.wasm", &module("pinned"));
    let (first, _) = h.get(&url, PullPolicy::Always).await.unwrap();
    std::fs::remove_file(h.root.path().join("h.wasm")).unwrap();

    let (hit, _) = h
        .get_pinned(&url, PullPolicy::Always, &first.digest.to_string())
        .await
        .unwrap();

    assert_eq!(hit.outcome, Outcome::Hit);
}

#[tokio::test]
async fn a_removed_module_is_fetched_again_on_the_next_request() {
    let h = Harness::new(true);
    let url = h.origin("i.wasm", &module("back"));
    let (first, _) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();
    h.cache.remove_digest(&first.digest).unwrap();

    let (again, bytes) = h.get(&url, PullPolicy::IfNotPresent).await.unwrap();

    assert_eq!(again.outcome, Outcome::Fetched);
    assert_eq!(bytes, module("back"));
}
