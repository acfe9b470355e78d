//! The daemon's configuration: every default in one place, filled in and validated before anything binds.
//!
//! A setting comes from four layers; the first that has it wins:
//!
//! 1. a command-line flag (`--fetch-timeout 5s`),
//! 2. an environment variable (`WASMCACHE_FETCH_TIMEOUT=5s`; lists comma-separated),
//! 3. the `--config` TOML file (`fetch-timeout = "5s"`, see [`FileConfig`]),
//! 4. the `DEFAULT_*` constants below.
//!
//! Each of the first three is read into an [`Overrides`] (every field optional), and [`Config::build`] is the
//! one function that layers them over the defaults and validates the result. It is pure apart from reading the
//! `docker-config` file, so tests build a `Config` from strings and maps and never touch the process
//! environment. [`SETTINGS`] names every setting's flag, file key and variable; errors name the source that
//! set the bad value: `wasmcache.toml: line 4: fetch-attempts: must be at least 1`,
//! `WASMCACHE_FETCH_ATTEMPTS: must be at least 1`, or `fetch-attempts: must be at least 1` for a flag.

mod env;
mod file;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use file::FileConfig;

use crate::fetch::oci::auth::DockerConfig;
use crate::fetch::{self, retry::Backoff};

pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_FETCH_DEADLINE: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_FETCH_ATTEMPTS: u32 = 5;
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.5;
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 256 << 20;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_MODULE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_RESOLVE_LEASE: Duration = Duration::from_secs(3600);
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Socket mode: owner and group may connect (proxies join the daemon's group), others may not.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Cache and socket locations when running as root (systemd, DaemonSet).
pub const ROOT_CACHE_DIR: &str = "/var/lib/wasmcache";
pub const ROOT_SOCKET: &str = "/run/wasmcache/wasmcache.sock";
/// The variable that names the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "WASMCACHE_CONFIG";
/// EX_CONFIG from sysexits.h: `serve` and `config check` exit with it on a bad configuration.
pub const EXIT_CONFIG: u8 = 78;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub socket: PathBuf,
    /// Also serve gRPC on TCP (no TLS: bind it to loopback or a trusted network).
    pub listen: Option<SocketAddr>,
    pub socket_mode: u32,
    /// Group (name or number) given the socket, so proxies in that group may connect; `None` keeps the
    /// daemon's own group.
    pub socket_group: Option<String>,
    pub fetch: fetch::Settings,
    /// The file `fetch.oci.default_credentials` was read from; `config check` prints this path, never the
    /// file's contents.
    pub docker_config: Option<PathBuf>,
    /// The kubelet `CredentialProviderConfig` file that `fetch.oci.credential_providers` was read from, and
    /// the directory holding the plugins; `config check` prints the paths.
    pub credential_provider_config: Option<PathBuf>,
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// Serve the cached copy (outcome STALE) when a refresh fails.
    pub serve_stale: bool,
    /// How long in-flight streams may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Watch WasmPlugins in the cluster and prefetch them.
    pub watch: Option<crate::watch::WatchConfig>,
    /// The admin HTTP listener (metrics, health, modules by digest); `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    /// The OCI Distribution pull-through endpoint (`crate::registry`); `None` (the default): off.
    pub registry_listen: Option<SocketAddr>,
    /// Its TLS certificate and key (reloaded when they change); `None`: plain HTTP.
    pub registry_tls: Option<RegistryTls>,
    /// The signature verification policy (`--verify-policy`), loaded and checked.
    pub verify: Option<VerifyPolicy>,
    pub lifecycle: Lifecycle,
    pub log: LogConfig,
}

/// When cached modules are deleted. A module in use is never deleted: being streamed now, pinned, named
/// by a WasmPlugin the daemon watches, or resolved within `resolve_lease`. Every other module may go:
/// least recently used first while the cache is over `max_cache_bytes`, and once unused for
/// `module_expiry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// Evict least recently used modules while the cache is larger; `None`: no limit.
    pub max_cache_bytes: Option<u64>,
    /// Modules unused for this long are deleted by the periodic sweep.
    pub module_expiry: Duration,
    /// How long a module is in use after Resolve handed out its path (a proxy reads the file itself).
    pub resolve_lease: Duration,
    /// How often the sweep runs.
    pub purge_interval: Duration,
}

/// The PEM files of the registry endpoint's TLS certificate (chain, leaf first) and private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format (use text or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter (`info`, `wasmcache=debug`); `RUST_LOG`, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

impl LogConfig {
    /// Client commands log only warnings and errors (unless `RUST_LOG` says otherwise).
    pub fn client() -> LogConfig {
        LogConfig {
            level: "warn".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad value from a flag (or a default): `key` is the flag's name without `--`.
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// A problem in the configuration file. `key` is the file's key (`registry.platform`) when one is known;
    /// `line` counts from 1.
    #[error("{}: {}{}{reason}", path.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default(),
        key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    File {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad value from an environment variable, named by `var`.
    #[error("{var}: {reason}")]
    Env { var: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// One setting and the three names it goes by.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The `serve` flag without `--`; also the `key` of [`ConfigError::Invalid`].
    pub flag: &'static str,
    /// The key in the configuration file, dotted for keys in a table (`registry.platform`).
    pub file_key: &'static str,
    pub env: &'static str,
}

const fn setting(flag: &'static str, file_key: &'static str, env: &'static str) -> Setting {
    Setting { flag, file_key, env }
}

/// Every setting of `serve` (except `--config` itself, [`CONFIG_ENV`]).
pub const SETTINGS: &[Setting] = &[
    setting("cache-dir", "cache-dir", "WASMCACHE_CACHE_DIR"),
    setting("socket", "socket", "WASMCACHE_SOCKET"),
    setting("socket-group", "socket-group", "WASMCACHE_SOCKET_GROUP"),
    setting("listen", "listen", "WASMCACHE_LISTEN"),
    setting("admin-listen", "admin-listen", "WASMCACHE_ADMIN_LISTEN"),
    setting("registry-listen", "registry-listen", "WASMCACHE_REGISTRY_LISTEN"),
    setting("registry-tls-cert", "registry-tls-cert", "WASMCACHE_REGISTRY_TLS_CERT"),
    setting("registry-tls-key", "registry-tls-key", "WASMCACHE_REGISTRY_TLS_KEY"),
    setting("file-root", "file-root", "WASMCACHE_FILE_ROOT"),
    setting("fetch-timeout", "fetch-timeout", "WASMCACHE_FETCH_TIMEOUT"),
    setting("fetch-deadline", "fetch-deadline", "WASMCACHE_FETCH_DEADLINE"),
    setting("fetch-attempts", "fetch-attempts", "WASMCACHE_FETCH_ATTEMPTS"),
    setting("retry-backoff", "retry-backoff", "WASMCACHE_RETRY_BACKOFF"),
    setting("max-module-bytes", "max-module-bytes", "WASMCACHE_MAX_MODULE_BYTES"),
    setting("blocked-cidr", "blocked-cidr", "WASMCACHE_BLOCKED_CIDR"),
    setting("ca-file", "ca-file", "WASMCACHE_CA_FILE"),
    setting(
        "insecure-skip-verify",
        "insecure-skip-verify",
        "WASMCACHE_INSECURE_SKIP_VERIFY",
    ),
    setting("no-serve-stale", "serve-stale", "WASMCACHE_NO_SERVE_STALE"),
    setting("shutdown-grace", "shutdown-grace", "WASMCACHE_SHUTDOWN_GRACE"),
    setting("verify-policy", "verify-policy", "WASMCACHE_VERIFY_POLICY"),
    setting("insecure-registry", "registry.insecure", "WASMCACHE_INSECURE_REGISTRY"),
    setting("registry-mirror", "registry.mirrors", "WASMCACHE_REGISTRY_MIRROR"),
    setting(
        "forward-credentials-to",
        "registry.forward-credentials-to",
        "WASMCACHE_FORWARD_CREDENTIALS_TO",
    ),
    setting("docker-config", "registry.docker-config", "WASMCACHE_DOCKER_CONFIG"),
    setting(
        "image-credential-provider-config",
        "registry.image-credential-provider-config",
        "WASMCACHE_IMAGE_CREDENTIAL_PROVIDER_CONFIG",
    ),
    setting(
        "image-credential-provider-bin-dir",
        "registry.image-credential-provider-bin-dir",
        "WASMCACHE_IMAGE_CREDENTIAL_PROVIDER_BIN_DIR",
    ),
    setting(
        "image-credential-provider-timeout",
        "registry.image-credential-provider-timeout",
        "WASMCACHE_IMAGE_CREDENTIAL_PROVIDER_TIMEOUT",
    ),
    setting("platform", "registry.platform", "WASMCACHE_PLATFORM"),
    setting(
        "max-manifest-bytes",
        "registry.max-manifest-bytes",
        "WASMCACHE_MAX_MANIFEST_BYTES",
    ),
    setting("watch-wasmplugins", "watch.enabled", "WASMCACHE_WATCH_WASMPLUGINS"),
    setting("kubeconfig", "watch.kubeconfig", "WASMCACHE_KUBECONFIG"),
    setting("watch-namespace", "watch.namespace", "WASMCACHE_WATCH_NAMESPACE"),
    setting("watch-selector", "watch.selector", "WASMCACHE_WATCH_SELECTOR"),
    setting(
        "watch-pull-secrets",
        "watch.pull-secrets",
        "WASMCACHE_WATCH_PULL_SECRETS",
    ),
    setting(
        "max-cache-bytes",
        "lifecycle.max-cache-bytes",
        "WASMCACHE_MAX_CACHE_BYTES",
    ),
    setting("module-expiry", "lifecycle.module-expiry", "WASMCACHE_MODULE_EXPIRY"),
    setting("resolve-lease", "lifecycle.resolve-lease", "WASMCACHE_RESOLVE_LEASE"),
    setting("purge-interval", "lifecycle.purge-interval", "WASMCACHE_PURGE_INTERVAL"),
    setting("log-level", "log.level", "WASMCACHE_LOG_LEVEL"),
    setting("log-format", "log.format", "WASMCACHE_LOG_FORMAT"),
];

/// The setting behind a flag name. Panics on a name that is not in [`SETTINGS`]: that is a bug, which the
/// tests catch.
pub fn setting_for(flag: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.flag == flag)
        .unwrap_or_else(|| panic!("{flag:?} is not in config::SETTINGS"))
}

/// One layer of settings (the flags, the environment or the file): `None` where the layer is silent.
/// A list replaces the list of a lower layer; it is never appended to it.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub cache_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub listen: Option<SocketAddr>,
    /// `Some(None)`: the admin listener is off.
    pub admin_listen: Option<Option<SocketAddr>>,
    /// `Some(None)`: the registry endpoint is off (as when no layer sets it).
    pub registry_listen: Option<Option<SocketAddr>>,
    pub registry_tls_cert: Option<PathBuf>,
    pub registry_tls_key: Option<PathBuf>,
    pub file_roots: Option<Vec<PathBuf>>,
    pub fetch_timeout: Option<Duration>,
    pub fetch_deadline: Option<Duration>,
    pub fetch_attempts: Option<u32>,
    pub retry_backoff: Option<Duration>,
    pub max_module_bytes: Option<u64>,
    pub blocked_cidrs: Option<Vec<IpNet>>,
    pub ca_file: Option<PathBuf>,
    pub insecure_hosts: Option<Vec<String>>,
    pub serve_stale: Option<bool>,
    pub shutdown_grace: Option<Duration>,
    pub verify_policy: Option<PathBuf>,
    pub insecure_registries: Option<Vec<String>>,
    /// `(registry, mirror)` pairs; a registry's mirrors are tried in this order.
    pub registry_mirrors: Option<Vec<(String, url::Url)>>,
    pub forward_credentials_to: Option<Vec<String>>,
    pub docker_config: Option<PathBuf>,
    pub credential_provider_config: Option<PathBuf>,
    pub credential_provider_bin_dir: Option<PathBuf>,
    pub credential_provider_timeout: Option<Duration>,
    pub platform: Option<String>,
    pub max_manifest_bytes: Option<u64>,
    pub watch: Option<bool>,
    pub kubeconfig: Option<PathBuf>,
    pub watch_namespace: Option<String>,
    pub watch_selector: Option<String>,
    pub watch_pull_secrets: Option<bool>,
    /// `Some(None)`: no limit.
    pub max_cache_bytes: Option<Option<u64>>,
    pub module_expiry: Option<Duration>,
    pub resolve_lease: Option<Duration>,
    pub purge_interval: Option<Duration>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// Writes `over` and `keys` from one list, so that a field cannot be layered without being named, or the
/// other way round (the struct literal in `over` must name every field).
macro_rules! layered {
    ($($field:ident => $flag:literal),* $(,)?) => {
        impl Overrides {
            /// This layer over `lower`: each field from `self` where set, else from `lower`.
            pub fn over(self, lower: Overrides) -> Overrides {
                Overrides { $($field: self.$field.or(lower.$field)),* }
            }

            /// The flag names of the settings this layer sets.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field.is_some() { keys.push($flag); })*
                keys
            }
        }
    };
}

layered! {
    cache_dir => "cache-dir",
    socket => "socket",
    socket_group => "socket-group",
    listen => "listen",
    admin_listen => "admin-listen",
    registry_listen => "registry-listen",
    registry_tls_cert => "registry-tls-cert",
    registry_tls_key => "registry-tls-key",
    file_roots => "file-root",
    fetch_timeout => "fetch-timeout",
    fetch_deadline => "fetch-deadline",
    fetch_attempts => "fetch-attempts",
    retry_backoff => "retry-backoff",
    max_module_bytes => "max-module-bytes",
    blocked_cidrs => "blocked-cidr",
    ca_file => "ca-file",
    insecure_hosts => "insecure-skip-verify",
    serve_stale => "no-serve-stale",
    shutdown_grace => "shutdown-grace",
    verify_policy => "verify-policy",
    insecure_registries => "insecure-registry",
    registry_mirrors => "registry-mirror",
    forward_credentials_to => "forward-credentials-to",
    docker_config => "docker-config",
    credential_provider_config => "image-credential-provider-config",
    credential_provider_bin_dir => "image-credential-provider-bin-dir",
    credential_provider_timeout => "image-credential-provider-timeout",
    platform => "platform",
    max_manifest_bytes => "max-manifest-bytes",
    watch => "watch-wasmplugins",
    kubeconfig => "kubeconfig",
    watch_namespace => "watch-namespace",
    watch_selector => "watch-selector",
    watch_pull_secrets => "watch-pull-secrets",
    max_cache_bytes => "max-cache-bytes",
    module_expiry => "module-expiry",
    resolve_lease => "resolve-lease",
    purge_interval => "purge-interval",
    log_level => "log-level",
    log_format => "log-format",
}

impl Overrides {
    /// Reads the `WASMCACHE_*` variables through `var` (the process environment in `serve`, a map in tests).
    /// An empty variable counts as unset; lists are comma-separated; booleans are `true`/`false` (also
    /// `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
        env::read(var)
    }

    /// The layered values over the defaults; reads the docker-config and credential provider files. Not yet
    /// validated.
    fn fill(self) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let fetch = &mut c.fetch;
        macro_rules! set {
            ($target:expr, $value:expr) => {
                if let Some(v) = $value {
                    $target = v;
                }
            };
        }
        set!(c.cache_dir, self.cache_dir);
        set!(c.socket, self.socket);
        c.socket_group = self.socket_group.filter(|g| !g.trim().is_empty());
        c.listen = self.listen;
        set!(c.admin_listen, self.admin_listen);
        set!(c.registry_listen, self.registry_listen);
        // Without the endpoint its TLS files are not used (and, from the file, may stay; see `build`).
        if c.registry_listen.is_some() {
            match (self.registry_tls_cert, self.registry_tls_key) {
                (Some(cert), Some(key)) => c.registry_tls = Some(RegistryTls { cert, key }),
                (Some(_), None) => {
                    return Err(invalid(
                        "registry-tls-cert",
                        "needs registry-tls-key, the certificate's private key",
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "registry-tls-key",
                        "needs registry-tls-cert, the certificate it belongs to",
                    ))
                }
                (None, None) => {}
            }
        }
        set!(fetch.file_roots, self.file_roots);
        set!(fetch.timeout, self.fetch_timeout);
        set!(fetch.deadline, self.fetch_deadline);
        set!(fetch.backoff.attempts, self.fetch_attempts);
        set!(fetch.backoff.initial, self.retry_backoff);
        set!(fetch.max_bytes, self.max_module_bytes);
        set!(fetch.blocked_cidrs, self.blocked_cidrs);
        fetch.ca_file = self.ca_file;
        set!(fetch.insecure_hosts, self.insecure_hosts.map(trimmed));
        set!(c.serve_stale, self.serve_stale);
        set!(c.shutdown_grace, self.shutdown_grace);
        set!(fetch.oci.insecure_registries, self.insecure_registries.map(trimmed));
        set!(fetch.oci.mirrors, self.registry_mirrors);
        set!(fetch.oci.forward_credentials, self.forward_credentials_to.map(trimmed));
        set!(fetch.oci.platform, self.platform);
        set!(fetch.oci.max_manifest_bytes, self.max_manifest_bytes);
        if let Some(path) = self.docker_config {
            fetch.oci.default_credentials = load_docker_config(&path)?;
            c.docker_config = Some(path);
        }
        if let Some(path) = self.verify_policy {
            c.verify = Some(VerifyPolicy::load(path)?);
        }
        set!(fetch.oci.provider_timeout, self.credential_provider_timeout);
        match (self.credential_provider_config, self.credential_provider_bin_dir) {
            (Some(path), Some(bin_dir)) => {
                fetch.oci.credential_providers = load_credential_providers(&path, &bin_dir)?;
                c.credential_provider_config = Some(path);
                c.credential_provider_bin_dir = Some(bin_dir);
            }
            (Some(_), None) => {
                return Err(invalid(
                    "image-credential-provider-config",
                    "needs image-credential-provider-bin-dir, the directory of the plugins",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "image-credential-provider-bin-dir",
                    "only used with image-credential-provider-config",
                ))
            }
            (None, None) => {}
        }
        if self.watch == Some(true) {
            c.watch = Some(crate::watch::WatchConfig {
                kubeconfig: self.kubeconfig,
                scope: crate::cluster::Scope {
                    namespace: self.watch_namespace,
                    selector: self.watch_selector,
                },
                pull_secrets: self.watch_pull_secrets.unwrap_or(false),
            });
        }
        set!(c.lifecycle.max_cache_bytes, self.max_cache_bytes);
        set!(c.lifecycle.module_expiry, self.module_expiry);
        set!(c.lifecycle.resolve_lease, self.resolve_lease);
        set!(c.lifecycle.purge_interval, self.purge_interval);
        set!(c.log.level, self.log_level);
        set!(c.log.format, self.log_format);
        Ok(c)
    }
}

fn trimmed(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect()
}

/// Where the value of a setting came from, so that an error can point there.
#[derive(Clone, Copy, Debug)]
enum Source {
    File(usize),
    Env,
    Flag,
}

/// Reads the configuration as `serve` does: the file at `path` (if any), the process environment, then `flags`.
pub fn load(path: Option<&Path>, flags: &Overrides) -> Result<Config, ConfigError> {
    let file = path.map(FileConfig::read).transpose()?;
    let env = Overrides::from_env(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))?;
    Config::build(file.as_ref(), &env, flags)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_dir: default_cache_dir(),
            socket: default_socket(),
            listen: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: None,
            fetch: fetch::Settings {
                timeout: DEFAULT_FETCH_TIMEOUT,
                deadline: DEFAULT_FETCH_DEADLINE,
                backoff: Backoff {
                    attempts: DEFAULT_FETCH_ATTEMPTS,
                    initial: DEFAULT_RETRY_BACKOFF,
                    factor: DEFAULT_BACKOFF_FACTOR,
                    max: DEFAULT_BACKOFF_MAX,
                },
                max_bytes: DEFAULT_MAX_MODULE_BYTES,
                blocked_cidrs: Vec::new(),
                ca_file: None,
                insecure_hosts: Vec::new(),
                file_roots: Vec::new(),
                oci: fetch::oci::OciSettings::default(),
            },
            docker_config: None,
            verify: None,
            credential_provider_config: None,
            credential_provider_bin_dir: None,
            serve_stale: true,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            watch: None,
            admin_listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("valid default address")),
            registry_listen: None,
            registry_tls: None,
            lifecycle: Lifecycle {
                max_cache_bytes: None,
                module_expiry: DEFAULT_MODULE_EXPIRY,
                resolve_lease: DEFAULT_RESOLVE_LEASE,
                purge_interval: DEFAULT_PURGE_INTERVAL,
            },
            log: LogConfig {
                level: DEFAULT_LOG_LEVEL.to_string(),
                format: LogFormat::Text,
            },
        }
    }
}

impl Config {
    /// The one place where a configuration is put together: defaults, then the file, then the environment,
    /// then the flags (each layer wins over the ones before it), then [`Config::validate`]. An error names
    /// the layer that set the bad value: the file and line, the variable, or the flag.
    pub fn build(file: Option<&FileConfig>, env: &Overrides, flags: &Overrides) -> Result<Config, ConfigError> {
        let mut sources: HashMap<&'static str, Source> = HashMap::new();
        if let Some(file) = file {
            sources.extend(file.lines().map(|(flag, line)| (flag, Source::File(line))));
        }
        sources.extend(env.keys().into_iter().map(|flag| (flag, Source::Env)));
        sources.extend(flags.keys().into_iter().map(|flag| (flag, Source::Flag)));
        let locate = |e: ConfigError| match e {
            ConfigError::Invalid { key, reason } => match sources.get(key) {
                Some(Source::File(line)) => ConfigError::File {
                    path: file.map(|f| f.path().to_path_buf()).unwrap_or_default(),
                    line: Some(*line),
                    key: Some(setting_for(key).file_key.to_string()),
                    reason,
                },
                Some(Source::Env) => ConfigError::Env {
                    var: setting_for(key).env,
                    reason,
                },
                _ => ConfigError::Invalid { key, reason },
            },
            other => other,
        };

        let file_values = file.map(|f| f.values().clone()).unwrap_or_default();
        let merged = flags.clone().over(env.clone()).over(file_values);
        if merged.registry_listen.flatten().is_none() {
            // As with the watch settings below: kept in a file while the endpoint is off, a mistake elsewhere.
            for key in ["registry-tls-cert", "registry-tls-key"] {
                if matches!(sources.get(key), Some(Source::Flag | Source::Env)) {
                    return Err(locate(invalid(key, "only used with --registry-listen")));
                }
            }
        }
        if merged.watch != Some(true) {
            // From a file these may be kept while watching is switched off; on the command line or in the
            // environment they are a mistake that would otherwise pass unnoticed.
            for key in ["kubeconfig", "watch-namespace", "watch-selector", "watch-pull-secrets"] {
                if matches!(sources.get(key), Some(Source::Flag | Source::Env)) {
                    return Err(locate(invalid(key, "only used with --watch-wasmplugins")));
                }
            }
        }
        let config = merged.fill().map_err(locate)?;
        config.validate().map_err(locate)?;
        Ok(config)
    }

    /// Checks what can be checked before binding: the first problem found is returned, named by its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cache_dir.as_os_str().is_empty() {
            return Err(invalid("cache-dir", "must not be empty"));
        }
        if let Some(group) = &self.socket_group {
            resolve_group(group).map_err(|reason| invalid("socket-group", reason))?;
        }
        if self.socket.as_os_str().is_empty() {
            return Err(invalid("socket", "must not be empty"));
        }
        if let (Some(admin), Some(listen)) = (self.admin_listen, self.listen) {
            if admin == listen {
                return Err(invalid(
                    "admin-listen",
                    format!("{admin} is also the gRPC --listen address"),
                ));
            }
        }
        if let Some(registry) = self.registry_listen {
            if Some(registry) == self.listen {
                return Err(invalid(
                    "registry-listen",
                    format!("{registry} is also the gRPC --listen address"),
                ));
            }
            if Some(registry) == self.admin_listen {
                return Err(invalid(
                    "registry-listen",
                    format!("{registry} is also the --admin-listen address"),
                ));
            }
        }
        if let Some(tls) = &self.registry_tls {
            crate::registry::tls::load_pair(&tls.cert, &tls.key).map_err(|e| {
                let key = match e.file {
                    crate::registry::tls::TlsFile::Cert => "registry-tls-cert",
                    crate::registry::tls::TlsFile::Key => "registry-tls-key",
                };
                invalid(key, e.to_string())
            })?;
        }
        if self.fetch.timeout.is_zero() {
            return Err(invalid("fetch-timeout", "must be greater than zero"));
        }
        if self.fetch.deadline < self.fetch.timeout {
            // The deadline bounds a whole attempt, of which the timeout bounds each wait.
            return Err(invalid(
                "fetch-deadline",
                format!(
                    "{} must be at least fetch-timeout ({})",
                    humantime::format_duration(self.fetch.deadline),
                    humantime::format_duration(self.fetch.timeout)
                ),
            ));
        }
        if self.fetch.backoff.attempts == 0 {
            return Err(invalid("fetch-attempts", "must be at least 1"));
        }
        if self.fetch.max_bytes == 0 {
            return Err(invalid("max-module-bytes", "must be greater than zero"));
        }
        for root in &self.fetch.file_roots {
            if !root.is_absolute() {
                return Err(invalid(
                    "file-root",
                    format!("{} is not an absolute path", root.display()),
                ));
            }
            if !root.is_dir() {
                return Err(invalid("file-root", format!("{} is not a directory", root.display())));
            }
        }
        if let Some(ca) = &self.fetch.ca_file {
            if !ca.is_file() {
                return Err(invalid("ca-file", format!("{} is not a readable file", ca.display())));
            }
        }
        parse_platform(&self.fetch.oci.platform).map_err(|e| invalid("platform", e))?;
        if self.fetch.oci.provider_timeout.is_zero() {
            return Err(invalid(
                "image-credential-provider-timeout",
                "must be greater than zero",
            ));
        }
        if self.fetch.oci.max_manifest_bytes == 0 {
            return Err(invalid("max-manifest-bytes", "must be greater than zero"));
        }
        if self.lifecycle.max_cache_bytes == Some(0) {
            return Err(invalid(
                "max-cache-bytes",
                "must be greater than zero (or off for no limit)",
            ));
        }
        if self.lifecycle.purge_interval.is_zero() {
            return Err(invalid("purge-interval", "must be greater than zero"));
        }
        if self.lifecycle.module_expiry.is_zero() {
            return Err(invalid("module-expiry", "must be greater than zero"));
        }
        if self.lifecycle.resolve_lease.is_zero() {
            return Err(invalid("resolve-lease", "must be greater than zero"));
        }
        parse_log_level(&self.log.level).map_err(|e| invalid("log-level", e))?;
        Ok(())
    }

    /// The effective configuration in the file's format, which `--config` reads back unchanged. Nothing in it
    /// is secret: credentials live in the docker-config file, of which only the path is shown.
    pub fn to_toml(&self) -> String {
        file::to_toml(self)
    }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute())
}

/// `/var/lib/wasmcache` for root, else `$XDG_CACHE_HOME/wasmcache` (or `~/.cache/wasmcache`).
pub fn default_cache_dir() -> PathBuf {
    if running_as_root() {
        return PathBuf::from(ROOT_CACHE_DIR);
    }
    env_dir("XDG_CACHE_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wasmcache-{}", uid())))
        .join("wasmcache")
}

/// `/run/wasmcache/wasmcache.sock` for root, else `$XDG_RUNTIME_DIR/wasmcache/wasmcache.sock` (or a
/// per-user directory under the temp dir). Client commands use the same default.
pub fn default_socket() -> PathBuf {
    if running_as_root() {
        return PathBuf::from(ROOT_SOCKET);
    }
    env_dir("XDG_RUNTIME_DIR")
        .map(|d| d.join("wasmcache"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wasmcache-{}", uid())))
        .join("wasmcache.sock")
}

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Parses a byte size: a plain number, or one with a `K`/`KiB`/`M`/`MiB`/`G`/`GiB` suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a byte size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?} has an unknown size unit (use K, M or G)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// A group name or number, as its gid. Names are looked up with getgrnam, as `getent group` does, so that
/// groups from NSS (LDAP, systemd's dynamic users) count as well as those in `/etc/group`.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    let group = group.trim();
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => Err(format!("no group is named {group:?} (give its number instead)")),
        Err(e) => Err(format!("looking up group {group:?}: {e}")),
    }
}

/// Parses a duration such as `500ms`, `15s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a CIDR, or a single address as a one-address network.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8)"))
}

/// Parses `REGISTRY=URL` (URL http or https) for a registry mirror.
pub fn parse_mirror(s: &str) -> Result<(String, url::Url), String> {
    let (registry, mirror) = s.split_once('=').ok_or_else(|| format!("{s:?} is not REGISTRY=URL"))?;
    let registry = registry.trim().to_ascii_lowercase();
    if registry.is_empty() || registry.contains('/') {
        return Err(format!("{registry:?} is not a registry host[:port]"));
    }
    let url = url::Url::parse(mirror.trim()).map_err(|e| format!("mirror {mirror:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("mirror {mirror:?} must be an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("mirror URLs must not carry credentials (use --docker-config)".into());
    }
    Ok((registry, url))
}

/// Checks an `os/arch[/variant]` platform.
pub fn parse_platform(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split('/').collect();
    if (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) {
        Ok(s)
    } else {
        Err(format!("{s:?} is not os/arch[/variant], e.g. linux/amd64"))
    }
}

/// Parses a listen address, or `off` (`None`), for the admin listener and the registry endpoint.
pub fn parse_admin_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_addr(s).map(Some)
}

/// Parses `HOST:PORT` with an IP address as host (`127.0.0.1:9090`, `[::1]:9090`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not IP:PORT (e.g. 127.0.0.1:9464)"))
}

/// Parses the cache size limit: a byte size, or `0` or `off` for no limit (`None`).
pub fn parse_max_cache_bytes(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_bytes(s).map(|n| Some(n).filter(|&n| n > 0))
}

/// Checks a log filter: a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or tracing directives
/// (`info,wasmcache=debug`).
pub fn parse_log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let s = s.trim();
    let plain_level = !s.contains(['=', ',', '[']);
    if s.is_empty() || (plain_level && !LEVELS.contains(&s.to_ascii_lowercase().as_str())) {
        return Err(format!(
            "{s:?} is not a log level (trace, debug, info, warn, error, off)"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(s.to_string())
}

/// Parses a boolean environment value: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// Reads the default registry credentials file. Its contents never reach an error message.
pub fn load_docker_config(path: &Path) -> Result<DockerConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| invalid("docker-config", format!("{}: {e}", path.display())))?;
    DockerConfig::parse(&bytes).map_err(|e| invalid("docker-config", format!("{}: {e}", path.display())))
}

/// Reads and validates a kubelet `CredentialProviderConfig` and checks its plugins in `bin_dir`. The error
/// names the file and the field (`/etc/kubernetes/credential-providers.yaml: providers[0].apiVersion: ...`).
pub fn load_credential_providers(
    path: &Path,
    bin_dir: &Path,
) -> Result<fetch::oci::provider::ProviderConfig, ConfigError> {
    fetch::oci::provider::ProviderConfig::load(path, bin_dir)
        .map_err(|e| invalid("image-credential-provider-config", format!("{}: {e}", path.display())))
}

/// A loaded signature verification policy and the file it came from (reloaded from there on SIGHUP).
#[derive(Clone)]
pub struct VerifyPolicy {
    pub path: PathBuf,
    pub policy: std::sync::Arc<crate::signature::Policy>,
}

impl VerifyPolicy {
    pub fn load(path: PathBuf) -> Result<VerifyPolicy, ConfigError> {
        let policy = crate::signature::Policy::load(&path).map_err(|e| invalid("verify-policy", e.to_string()))?;
        Ok(VerifyPolicy {
            path,
            policy: std::sync::Arc::new(policy),
        })
    }
}

impl std::fmt::Debug for VerifyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyPolicy({})", self.path.display())
    }
}

/// The directory that will hold the socket; created on start when missing.
pub fn socket_dir(socket: &Path) -> Option<&Path> {
    socket.parent().filter(|p| !p.as_os_str().is_empty())
}
