//! Every metric the daemon exports, with its name and its labels, in one place. Each failed upstream
//! fetch counts exactly one `result` reason, so the metrics tell the story of failures.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    scheme: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SchemeLabel {
    scheme: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignatureLabels {
    rule: String,
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    route: &'static str,
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Why a module left the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Least recently used, to bring the cache under `--max-cache-bytes`.
    SizeLimit,
    /// Unused for longer than `--module-expiry`.
    Expired,
    /// Its bytes no longer matched its digest.
    Corrupt,
    /// An operator's `rm`.
    Removed,
}

impl From<crate::store::Evicted> for Eviction {
    fn from(why: crate::store::Evicted) -> Self {
        match why {
            crate::store::Evicted::Expired => Eviction::Expired,
            crate::store::Evicted::SizeLimit => Eviction::SizeLimit,
        }
    }
}

impl Eviction {
    /// The `reason` label, also the reason `wasmcache gc` reports.
    pub fn label(self) -> &'static str {
        match self {
            Eviction::SizeLimit => "size_limit",
            Eviction::Expired => "expired",
            Eviction::Corrupt => "corrupt",
            Eviction::Removed => "removed",
        }
    }
}

/// Why a request or an upstream fetch failed, in one word: the `result` label of `remote_fetch` (beside
/// `success`), the `reason` of logs and of the registry endpoint's error detail. [`crate::Error::failure`]
/// says which error is which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    InvalidArgument,
    ChecksumMismatch,
    CorruptBlob,
    SizeLimit,
    InvalidModule,
    ManifestFailure,
    StoreFailure,
    Unauthorized,
    CredentialProvider,
    DownloadFailure,
    NotCached,
    Removed,
    SignatureRefused,
    Internal,
}

impl FailureReason {
    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::InvalidArgument => "invalid_argument",
            FailureReason::ChecksumMismatch => "checksum_mismatch",
            FailureReason::CorruptBlob => "corrupt_blob",
            FailureReason::SizeLimit => "size_limit",
            FailureReason::InvalidModule => "invalid_module",
            FailureReason::ManifestFailure => "manifest_failure",
            FailureReason::StoreFailure => "store_failure",
            FailureReason::Unauthorized => "unauthorized",
            FailureReason::CredentialProvider => "credential_provider",
            FailureReason::DownloadFailure => "download_failure",
            FailureReason::NotCached => "not_cached",
            FailureReason::Removed => "removed",
            FailureReason::SignatureRefused => "signature_refused",
            FailureReason::Internal => "internal",
        }
    }
}

/// Why the WasmPlugin watch did not prefetch a plugin. Not a reason of `remote_fetch`: no fetch was
/// attempted, and a skipped plugin has no scheme to count it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchSkip {
    /// It names an `imagePullSecret`, and the daemon may not read secrets (no `--watch-pull-secrets`).
    PullSecretNotAllowed,
}

impl WatchSkip {
    pub const ALL: [WatchSkip; 1] = [WatchSkip::PullSecretNotAllowed];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            WatchSkip::PullSecretNotAllowed => "pull_secret_not_allowed",
        }
    }
}

/// How a run of a kubelet credential provider plugin ended: the `result` of
/// `wasmcache_credential_provider_runs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderRun {
    /// A valid answer.
    Success,
    /// No answer within `--image-credential-provider-timeout`; killed.
    Timeout,
    /// It exited with a non-zero status or was killed by a signal.
    Failed,
    /// Its answer was not a valid `CredentialProviderResponse`.
    BadResponse,
    /// Its answer was over the size limit; killed.
    TooLarge,
    /// It could not be started.
    SpawnFailure,
}

impl ProviderRun {
    pub const ALL: [ProviderRun; 6] = [
        ProviderRun::Success,
        ProviderRun::Timeout,
        ProviderRun::Failed,
        ProviderRun::BadResponse,
        ProviderRun::TooLarge,
        ProviderRun::SpawnFailure,
    ];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            ProviderRun::Success => "success",
            ProviderRun::Timeout => "timeout",
            ProviderRun::Failed => "exit_failure",
            ProviderRun::BadResponse => "bad_response",
            ProviderRun::TooLarge => "too_large",
            ProviderRun::SpawnFailure => "spawn_failure",
        }
    }
}

fn fetch_duration_histogram() -> Histogram {
    // 5 ms to about 5 minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    lookups: Family<ResultLabel, Counter>,
    remote_fetches: Family<FetchLabels, Counter>,
    fetch_duration: Family<SchemeLabel, Histogram, fn() -> Histogram>,
    served_bytes: Counter,
    inflight_fetches: Gauge<i64, AtomicI64>,
    evictions: Family<ReasonLabel, Counter>,
    over_limit: Counter,
    watch_skipped: Family<ReasonLabel, Counter>,
    provider_runs: Family<ProviderLabels, Counter>,
    provider_cache: Family<ProviderLabels, Counter>,
    signatures: Family<SignatureLabels, Counter>,
    policy_reloads: Family<ResultLabel, Counter>,
    registry_requests: Family<RegistryLabels, Counter>,
    registry_sent_bytes: Counter,
}

/// What a signature check came to: `verified`, `refused` (enforce: the module is not stored), or `warned`
/// (warn: served anyway). `reason` is the refusal's ([`crate::signature::Reason::label`]), `unavailable` when
/// the signatures could not be fetched, `none` when verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureResult {
    Verified,
    Refused,
    Warned,
}

impl SignatureResult {
    pub fn label(self) -> &'static str {
        match self {
            SignatureResult::Verified => "verified",
            SignatureResult::Refused => "refused",
            SignatureResult::Warned => "warned",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmcache");
        let m = Metrics {
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
            lookups: Family::default(),
            remote_fetches: Family::default(),
            fetch_duration: Family::new_with_constructor(fetch_duration_histogram),
            served_bytes: Counter::default(),
            inflight_fetches: Gauge::default(),
            evictions: Family::default(),
            over_limit: Counter::default(),
            watch_skipped: Family::default(),
            provider_runs: Family::default(),
            provider_cache: Family::default(),
            signatures: Family::default(),
            policy_reloads: Family::default(),
            registry_requests: Family::default(),
            registry_sent_bytes: Counter::default(),
            registry: Registry::default(),
        };
        // Every reason is exported from the start, at zero, so that an alert on its increase needs no
        // first sample.
        for why in WatchSkip::ALL {
            drop(m.watch_skipped.get_or_create(&ReasonLabel { reason: why.label() }));
        }
        registry.register("cache_entries", "Modules in the cache", m.cache_entries.clone());
        registry.register("cache_bytes", "Bytes of modules in the cache", m.cache_bytes.clone());
        registry.register(
            "cache_lookups",
            "Requests answered from the cache (hit) or not (miss)",
            m.lookups.clone(),
        );
        registry.register(
            "remote_fetch",
            "Upstream fetches by scheme and result (success or the reason of the failure)",
            m.remote_fetches.clone(),
        );
        registry.register_with_unit(
            "fetch_duration",
            "Duration of upstream fetches, including retries",
            prometheus_client::registry::Unit::Seconds,
            m.fetch_duration.clone(),
        );
        registry.register("served_bytes", "Module bytes sent to clients", m.served_bytes.clone());
        registry.register(
            "inflight_fetches",
            "Upstream fetches running now",
            m.inflight_fetches.clone(),
        );
        registry.register(
            "evictions",
            "Modules deleted from the cache, by reason",
            m.evictions.clone(),
        );
        registry.register(
            "cache_over_limit",
            "Sweeps that left the cache above --max-cache-bytes because every remaining module was in use",
            m.over_limit.clone(),
        );
        registry.register(
            "watch_skipped",
            "WasmPlugins the watch did not prefetch, by reason; each plugin generation is counted once",
            m.watch_skipped.clone(),
        );
        registry.register(
            "credential_provider_runs",
            "Runs of kubelet credential provider plugins, by provider and result",
            m.provider_runs.clone(),
        );
        registry.register(
            "credential_provider_cache_lookups",
            "Credential provider answers looked for in the cache, by provider: found (hit) or not (miss)",
            m.provider_cache.clone(),
        );
        registry.register(
            "signature_checks",
            "Signature checks of fetched modules under --verify-policy, by rule, result and reason",
            m.signatures.clone(),
        );
        registry.register(
            "verify_policy_reloads",
            "Reloads of the --verify-policy file on SIGHUP, by result (success, failure: the old policy stays)",
            m.policy_reloads.clone(),
        );
        registry.register(
            "registry_requests",
            "Requests to the OCI registry endpoint (--registry-listen), by route (manifest, blob, referrers, ping, \
             other), method and HTTP status code",
            m.registry_requests.clone(),
        );
        registry.register(
            "registry_sent_bytes",
            "Response body bytes the OCI registry endpoint sent (manifests, blobs, referrers, errors)",
            m.registry_sent_bytes.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn set_cache_size(&self, entries: u64, bytes: u64) {
        self.cache_entries.set(entries as i64);
        self.cache_bytes.set(bytes as i64);
    }

    pub fn lookup(&self, hit: bool) {
        self.lookups
            .get_or_create(&ResultLabel {
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// Records the end of an upstream fetch; `result` is `success` or the failure's reason.
    pub fn fetched(&self, scheme: &'static str, result: &'static str, took: Duration) {
        self.remote_fetches.get_or_create(&FetchLabels { scheme, result }).inc();
        self.fetch_duration
            .get_or_create(&SchemeLabel { scheme })
            .observe(took.as_secs_f64());
    }

    /// Counts a running fetch until the guard drops.
    pub fn fetch_started(&self) -> InflightGuard<'_> {
        self.inflight_fetches.inc();
        InflightGuard(&self.inflight_fetches)
    }

    pub fn served(&self, bytes: u64) {
        self.served_bytes.inc_by(bytes);
    }

    pub fn evicted(&self, why: Eviction) {
        self.evictions.get_or_create(&ReasonLabel { reason: why.label() }).inc();
    }

    pub fn over_limit(&self) {
        self.over_limit.inc();
    }

    /// Exports a configured credential provider's counters at zero.
    pub fn provider_configured(&self, provider: &str) {
        for run in ProviderRun::ALL {
            drop(self.provider_runs.get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                result: run.label(),
            }));
        }
        for result in ["hit", "miss"] {
            drop(self.provider_cache.get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                result,
            }));
        }
    }

    pub fn provider_ran(&self, provider: &str, run: ProviderRun) {
        self.provider_runs
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                result: run.label(),
            })
            .inc();
    }

    pub fn provider_cache(&self, provider: &str, hit: bool) {
        self.provider_cache
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    pub fn signature_checked(&self, rule: &str, result: SignatureResult, reason: &'static str) {
        self.signatures
            .get_or_create(&SignatureLabels {
                rule: rule.to_string(),
                result: result.label(),
                reason,
            })
            .inc();
    }

    pub fn policy_reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.policy_reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts an answered registry endpoint request.
    pub fn registry_request(&self, route: &'static str, method: &'static str, code: u16) {
        self.registry_requests
            .get_or_create(&RegistryLabels { route, method, code })
            .inc();
    }

    pub fn registry_sent(&self, bytes: u64) {
        self.registry_sent_bytes.inc_by(bytes);
    }

    pub fn watch_skipped(&self, why: WatchSkip) {
        self.watch_skipped
            .get_or_create(&ReasonLabel { reason: why.label() })
            .inc();
    }
}

pub struct InflightGuard<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
/// Reads one sample from an exposition, for tests: the value of `name` with exactly `labels`.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let wanted = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.rsplit_once(' ')
            .filter(|(k, _)| *k == wanted)
            .and_then(|(_, v)| v.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_the_prefix() {
        let m = Metrics::new();
        m.lookup(true);
        m.fetched("https", "success", Duration::from_millis(20));
        m.evicted(Eviction::SizeLimit);
        let text = m.encode();
        for name in [
            "wasmcache_cache_entries",
            "wasmcache_cache_bytes",
            "wasmcache_cache_lookups_total",
            "wasmcache_remote_fetch_total",
            "wasmcache_fetch_duration_seconds_bucket",
            "wasmcache_served_bytes_total",
            "wasmcache_inflight_fetches",
            "wasmcache_evictions_total",
            "wasmcache_watch_skipped_total",
            "wasmcache_registry_sent_bytes_total",
            "wasmcache_build_info",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn counters_move_with_their_labels() {
        let m = Metrics::new();
        m.lookup(false);
        m.lookup(false);
        m.fetched("oci", "checksum_mismatch", Duration::from_millis(1));
        let text = m.encode();
        assert_eq!(
            sample(&text, "wasmcache_cache_lookups_total", "result=\"miss\""),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "wasmcache_remote_fetch_total",
                "scheme=\"oci\",result=\"checksum_mismatch\""
            ),
            Some(1.0)
        );
    }

    #[test]
    fn watch_skips_start_at_zero_and_count_by_reason() {
        let m = Metrics::new();
        let labels = "reason=\"pull_secret_not_allowed\"";
        assert_eq!(sample(&m.encode(), "wasmcache_watch_skipped_total", labels), Some(0.0));
        m.watch_skipped(WatchSkip::PullSecretNotAllowed);
        assert_eq!(sample(&m.encode(), "wasmcache_watch_skipped_total", labels), Some(1.0));
    }

    #[test]
    fn credential_provider_counters_start_at_zero_and_count_by_provider() {
        let m = Metrics::new();
        m.provider_configured("ecr");
        let text = m.encode();
        for run in ProviderRun::ALL {
            let labels = format!("provider=\"ecr\",result=\"{}\"", run.label());
            assert_eq!(
                sample(&text, "wasmcache_credential_provider_runs_total", &labels),
                Some(0.0),
                "{labels}"
            );
        }
        m.provider_ran("ecr", ProviderRun::Timeout);
        m.provider_cache("ecr", true);
        m.provider_cache("ecr", true);
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "wasmcache_credential_provider_runs_total",
                "provider=\"ecr\",result=\"timeout\""
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "wasmcache_credential_provider_cache_lookups_total",
                "provider=\"ecr\",result=\"hit\""
            ),
            Some(2.0)
        );
    }

    #[test]
    fn registry_requests_count_by_route_method_and_code() {
        let m = Metrics::new();
        m.registry_request("blob", "GET", 206);
        m.registry_request("blob", "GET", 206);
        m.registry_sent(10);
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "wasmcache_registry_requests_total",
                "route=\"blob\",method=\"GET\",code=\"206\""
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "wasmcache_registry_sent_bytes_total", ""), Some(10.0));
    }

    #[test]
    fn inflight_gauge_follows_the_guard() {
        let m = Metrics::new();
        let guard = m.fetch_started();
        assert_eq!(sample(&m.encode(), "wasmcache_inflight_fetches", ""), Some(1.0));
        drop(guard);
        assert_eq!(sample(&m.encode(), "wasmcache_inflight_fetches", ""), Some(0.0));
    }
}
