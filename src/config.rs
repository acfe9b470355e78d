//! The daemon's configuration, filled in and validated before anything binds.
//!
//! A setting comes from four layers; the first that has it wins:
//!
//! 1. a command-line flag (`--fetch-timeout 5s`),
//! 2. an environment variable (`WASMCACHE_FETCH_TIMEOUT=5s`; lists comma-separated),
//! 3. the `--config` TOML file (`fetch-timeout = "5s"`, see [`FileConfig`]),
//! 4. the built-in default.
//!
//! Every setting is declared once, in `config/settings.rs`: its names, how its values are written (a
//! [`kind::Kind`]), its default, help line, place in [`Config`] and checks. Each layer is read into an
//! [`Overrides`] (every field optional), and [`Config::build`] is the one function that layers them over the
//! defaults and validates the result. It is pure apart from reading the files that settings name, so tests
//! build a `Config` from strings and maps and never touch the process environment. Errors name the source
//! that set the bad value: `wasmcache.toml: line 4: fetch-attempts: must be at least 1`,
//! `WASMCACHE_FETCH_ATTEMPTS: must be at least 1`, or `fetch-attempts: must be at least 1` for a flag.
//!
//! Long: the Config type the daemon runs on, its layering (defaults, file, environment, flags) and its validation, which refer to each other throughout.

mod file;
pub(crate) mod kind;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub(crate) use file::FileConfig;
pub(crate) use settings::{flags, setting_for, Overrides, SETTINGS};

pub(crate) use crate::cache::Lifecycle;

use crate::fetch::oci::auth::DockerConfig;
use crate::fetch::{self, retry::Backoff};

// Every setting's default is in its entry in `config/settings.rs`; these are named because other code or
// tests need them, or because they are no setting.
/// How long in-flight streams may run after a shutdown signal (the systemd unit and the DaemonSet leave time
/// for it).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The retry backoff's growth and cap (`--retry-backoff` sets its start).
pub(crate) const DEFAULT_BACKOFF_FACTOR: f64 = 1.5;
pub(crate) const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Socket mode: owner and group may connect (proxies join the daemon's group), others may not.
pub(crate) const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Cache and socket locations when running as root (systemd, DaemonSet).
pub(crate) const ROOT_CACHE_DIR: &str = "/var/lib/wasmcache";
pub(crate) const ROOT_SOCKET: &str = "/run/wasmcache/wasmcache.sock";
/// The variable that names the configuration file when `--config` is not given.
pub(crate) const CONFIG_ENV: &str = "WASMCACHE_CONFIG";
/// EX_CONFIG from sysexits.h: `serve` and `config check` exit with it on a bad configuration.
pub(crate) const EXIT_CONFIG: u8 = 78;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub(crate) struct Config {
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

/// The PEM files of the registry endpoint's TLS certificate (chain, leaf first) and private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RegistryTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum LogFormat {
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
pub(crate) struct LogConfig {
    /// A tracing filter (`info`, `wasmcache=debug`); `RUST_LOG`, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

impl LogConfig {
    /// Client commands log only warnings and errors (unless `RUST_LOG` says otherwise).
    pub(crate) fn client() -> LogConfig {
        LogConfig {
            level: "warn".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
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

impl Overrides {
    /// These layered values (the defaults included) as a configuration: each setting's `apply`, then the
    /// settings that only mean something together. Reads the docker-config, verify-policy and credential
    /// provider files. Not yet validated.
    fn fill(self) -> Result<Config, ConfigError> {
        let mut c = Config::empty();
        self.apply_each(&mut c)?;
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
        match (self.credential_provider_config, self.credential_provider_bin_dir) {
            (Some(path), Some(bin_dir)) => {
                c.fetch.oci.credential_providers = load_credential_providers(&path, &bin_dir)?;
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
pub(crate) fn load(path: Option<&Path>, flags: &Overrides) -> Result<Config, ConfigError> {
    let file = path.map(FileConfig::read).transpose()?;
    let env = Overrides::from_env(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))?;
    Config::build(file.as_ref(), &env, flags)
}

impl Default for Config {
    /// The built-in defaults ([`Overrides::defaults`]).
    fn default() -> Self {
        Overrides::defaults().fill().expect("the defaults read no file")
    }
}

impl Config {
    /// The frame that [`Overrides::fill`] applies settings to: what no setting decides, and a blank for
    /// every value that one does (each of those has a default or means "none" when blank).
    fn empty() -> Config {
        Config {
            cache_dir: PathBuf::new(),
            socket: PathBuf::new(),
            listen: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: None,
            fetch: fetch::Settings {
                timeout: Duration::ZERO,
                deadline: Duration::ZERO,
                backoff: Backoff {
                    attempts: 0,
                    initial: Duration::ZERO,
                    factor: DEFAULT_BACKOFF_FACTOR,
                    max: DEFAULT_BACKOFF_MAX,
                },
                max_bytes: 0,
                blocked_cidrs: Vec::new(),
                ca_file: None,
                insecure_hosts: Vec::new(),
                file_roots: Vec::new(),
                oci: fetch::oci::OciSettings {
                    insecure_registries: Vec::new(),
                    mirrors: Vec::new(),
                    default_credentials: DockerConfig::default(),
                    credential_providers: fetch::oci::provider::ProviderConfig::default(),
                    provider_timeout: Duration::ZERO,
                    platform: String::new(),
                    max_manifest_bytes: 0,
                    forward_credentials: Vec::new(),
                },
            },
            docker_config: None,
            verify: None,
            credential_provider_config: None,
            credential_provider_bin_dir: None,
            serve_stale: false,
            shutdown_grace: Duration::ZERO,
            watch: None,
            admin_listen: None,
            registry_listen: None,
            registry_tls: None,
            lifecycle: Lifecycle {
                max_cache_bytes: None,
                module_expiry: Duration::ZERO,
                resolve_lease: Duration::ZERO,
                purge_interval: Duration::ZERO,
            },
            log: LogConfig {
                level: String::new(),
                format: LogFormat::Text,
            },
        }
    }
}

impl Config {
    /// The one place where a configuration is put together: defaults, then the file, then the environment,
    /// then the flags (each layer wins over the ones before it), then [`Config::validate`]. An error names
    /// the layer that set the bad value: the file and line, the variable, or the flag.
    pub(crate) fn build(file: Option<&FileConfig>, env: &Overrides, flags: &Overrides) -> Result<Config, ConfigError> {
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
        let config = merged.over(Overrides::defaults()).fill().map_err(locate)?;
        config.validate().map_err(locate)?;
        Ok(config)
    }

    /// Checks what can be checked before binding: the first problem found is returned, named by its flag.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.check_each()?;
        if let Some(tls) = &self.registry_tls {
            crate::registry::tls::load_pair(&tls.cert, &tls.key).map_err(|e| {
                let key = match e.file {
                    crate::registry::tls::TlsFile::Cert => "registry-tls-cert",
                    crate::registry::tls::TlsFile::Key => "registry-tls-key",
                };
                invalid(key, e.to_string())
            })?;
        }
        Ok(())
    }

    /// The effective configuration in the file's format, which `--config` reads back unchanged. Nothing in it
    /// is secret: credentials live in the docker-config file, of which only the path is shown.
    pub(crate) fn to_toml(&self) -> String {
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
pub(crate) fn default_cache_dir() -> PathBuf {
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
pub(crate) fn default_socket() -> PathBuf {
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
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
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
pub(crate) fn resolve_group(group: &str) -> Result<u32, String> {
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
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a CIDR, or a single address as a one-address network.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8)"))
}

/// Parses `REGISTRY=URL` (URL http or https) for a registry mirror.
pub(crate) fn parse_mirror(s: &str) -> Result<(String, url::Url), String> {
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
pub(crate) fn parse_platform(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split('/').collect();
    if (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) {
        Ok(s)
    } else {
        Err(format!("{s:?} is not os/arch[/variant], e.g. linux/amd64"))
    }
}

/// Parses a listen address, or `off` (`None`), for the admin listener and the registry endpoint.
pub(crate) fn parse_admin_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_addr(s).map(Some)
}

/// Parses `HOST:PORT` with an IP address as host (`127.0.0.1:9090`, `[::1]:9090`).
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not IP:PORT (e.g. 127.0.0.1:9464)"))
}

/// Parses the cache size limit: a byte size, or `0` or `off` for no limit (`None`).
pub(crate) fn parse_max_cache_bytes(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_bytes(s).map(|n| Some(n).filter(|&n| n > 0))
}

/// Checks a log filter: a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or tracing directives
/// (`info,wasmcache=debug`).
pub(crate) fn parse_log_level(s: &str) -> Result<String, String> {
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
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// Reads the default registry credentials file. Its contents never reach an error message.
pub(crate) fn load_docker_config(path: &Path) -> Result<DockerConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| invalid("docker-config", format!("{}: {e}", path.display())))?;
    DockerConfig::parse(&bytes).map_err(|e| invalid("docker-config", format!("{}: {e}", path.display())))
}

/// Reads and validates a kubelet `CredentialProviderConfig` and checks its plugins in `bin_dir`. The error
/// names the file and the field (`/etc/kubernetes/credential-providers.yaml: providers[0].apiVersion: ...`).
pub(crate) fn load_credential_providers(
    path: &Path,
    bin_dir: &Path,
) -> Result<fetch::oci::provider::ProviderConfig, ConfigError> {
    fetch::oci::provider::ProviderConfig::load(path, bin_dir)
        .map_err(|e| invalid("image-credential-provider-config", format!("{}: {e}", path.display())))
}

/// A loaded signature verification policy and the file it came from (reloaded from there on SIGHUP).
#[derive(Clone)]
pub(crate) struct VerifyPolicy {
    pub path: PathBuf,
    pub policy: std::sync::Arc<crate::signature::Policy>,
}

impl VerifyPolicy {
    pub(crate) fn load(path: PathBuf) -> Result<VerifyPolicy, ConfigError> {
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
pub(crate) fn socket_dir(socket: &Path) -> Option<&Path> {
    socket.parent().filter(|p| !p.as_os_str().is_empty())
}
