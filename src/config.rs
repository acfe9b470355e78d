//! The daemon's configuration: every default in one place, filled in and validated before anything binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::fetch::oci::auth::DockerConfig;
use crate::fetch::{self, retry::Backoff};

pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_FETCH_ATTEMPTS: u32 = 5;
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.5;
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 256 << 20;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_MODULE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Socket mode: owner and group may connect (proxies join the daemon's group), others may not.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Cache and socket locations when running as root (systemd, DaemonSet).
pub const ROOT_CACHE_DIR: &str = "/var/lib/wasmcache";
pub const ROOT_SOCKET: &str = "/run/wasmcache/wasmcache.sock";

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub socket: PathBuf,
    /// Also serve gRPC on TCP (no TLS: bind it to loopback or a trusted network).
    pub listen: Option<SocketAddr>,
    pub socket_mode: u32,
    pub fetch: fetch::Settings,
    /// Serve the cached copy (outcome STALE) when a refresh fails.
    pub serve_stale: bool,
    /// How long in-flight streams may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Watch WasmPlugins in the cluster and prefetch them.
    pub watch: Option<crate::watch::WatchConfig>,
    /// The admin HTTP listener (metrics, health, modules by digest); `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    pub lifecycle: Lifecycle,
    pub log: LogConfig,
}

/// When cached modules are deleted. A module that is being streamed, was served or resolved within
/// `module_expiry`, or is pinned is never deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// Evict least recently used modules while the cache is larger; `None`: no limit.
    pub max_cache_bytes: Option<u64>,
    /// Modules unused for this long are deleted by the periodic sweep.
    pub module_expiry: Duration,
    /// How often the sweep runs.
    pub purge_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter (`info`, `wasmcache=debug`); `RUST_LOG`, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_dir: default_cache_dir(),
            socket: default_socket(),
            listen: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            fetch: fetch::Settings {
                timeout: DEFAULT_FETCH_TIMEOUT,
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
            serve_stale: true,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            watch: None,
            admin_listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("valid default address")),
            lifecycle: Lifecycle {
                max_cache_bytes: None,
                module_expiry: DEFAULT_MODULE_EXPIRY,
                purge_interval: DEFAULT_PURGE_INTERVAL,
            },
            log: LogConfig { level: DEFAULT_LOG_LEVEL.to_string(), format: LogFormat::Text },
        }
    }
}

impl Config {
    /// Checks what can be checked before binding: the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fetch.timeout.is_zero() {
            return Err(invalid("fetch-timeout", "must be greater than zero"));
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
        if self.lifecycle.purge_interval.is_zero() {
            return Err(invalid("purge-interval", "must be greater than zero"));
        }
        if self.lifecycle.module_expiry.is_zero() {
            return Err(invalid("module-expiry", "must be greater than zero"));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(invalid("socket", "must not be empty"));
        }
        Ok(())
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
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

/// Reads the default registry credentials file. Its contents never reach an error message.
pub fn load_docker_config(path: &Path) -> Result<DockerConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| invalid("docker-config", format!("{}: {e}", path.display())))?;
    DockerConfig::parse(&bytes).map_err(|e| invalid("docker-config", format!("{}: {e}", path.display())))
}

/// The directory that will hold the socket; created on start when missing.
pub fn socket_dir(socket: &Path) -> Option<&Path> {
    socket.parent().filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("-1").is_err());
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zero_attempts_is_refused_naming_the_key() {
        let mut c = Config::default();
        c.fetch.backoff.attempts = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("fetch-attempts"));
    }

    #[test]
    fn relative_file_root_is_refused() {
        let mut c = Config::default();
        c.fetch.file_roots.push("relative/dir".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn single_address_is_a_cidr() {
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert!(parse_cidr("nope").is_err());
    }
}
