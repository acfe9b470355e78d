//! `wasmcache serve`: flags, environment and the `--config` file into a [`Config`], then logging, then the
//! server.
//!
//! No flag has a clap default: a flag that is absent must let the environment, the file or the default in
//! `config.rs` decide (see [`Config::build`]). The defaults are stated in the help text only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{self, Config, ConfigError, LogFormat, Overrides};
use crate::server::{self, ServeError};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every flag can also be set by an environment variable, WASMCACHE_ and the flag's name \
    (WASMCACHE_FETCH_TIMEOUT=5s; lists comma-separated; WASMCACHE_NO_SERVE_STALE=true), and in the --config \
    file. A flag wins over the environment, the environment over the file. `wasmcache config check FILE` \
    prints the result."
)]
pub struct Args {
    /// TOML file with any of these settings (see the README) [env: WASMCACHE_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cache directory [default: /var/lib/wasmcache for root, else $XDG_CACHE_HOME/wasmcache]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Unix socket to serve on [default: /run/wasmcache/wasmcache.sock for root, else under $XDG_RUNTIME_DIR]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Group (name or number) the socket belongs to; members may connect (mode 0660) [default: the daemon's group]
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Also serve gRPC on this TCP address (plain text: keep it on loopback or a trusted network)
    #[arg(long, value_name = "HOST:PORT", value_parser = config::parse_addr)]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listener (metrics, health), or `off` [default: 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR|off", value_parser = admin_listen)]
    pub admin_listen: Option<Off<SocketAddr>>,
    /// Serve the OCI Distribution pull-through endpoint (GET/HEAD manifests, blobs, referrers) on this TCP
    /// address, or `off` [default: off]
    #[arg(long, value_name = "ADDR|off", value_parser = admin_listen)]
    pub registry_listen: Option<Off<SocketAddr>>,
    /// PEM certificate chain for TLS on --registry-listen (with --registry-tls-key); reloaded when it changes
    #[arg(long, value_name = "FILE")]
    pub registry_tls_cert: Option<PathBuf>,
    /// PEM private key of --registry-tls-cert
    #[arg(long, value_name = "FILE")]
    pub registry_tls_key: Option<PathBuf>,
    /// Directory that file:// URLs may read below (repeatable); without one, file:// is refused
    #[arg(long = "file-root", value_name = "DIR")]
    pub file_roots: Vec<PathBuf>,
    /// Bound on connecting and on each wait for response bytes, per attempt [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub fetch_timeout: Option<Duration>,
    /// Bound on one whole attempt (connecting, the response, the whole body); must be at least --fetch-timeout
    /// [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub fetch_deadline: Option<Duration>,
    /// Attempts per fetch, the first included [default: 5]
    #[arg(long, value_name = "N")]
    pub fetch_attempts: Option<u32>,
    /// Pause before the first retry; each further one is 1.5 times longer (capped at 60s), with jitter
    /// [default: 500ms]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub retry_backoff: Option<Duration>,
    /// Cap on a module's download and on its unwrapped size (bytes, or with a K/M/G suffix) [default: 256MiB]
    #[arg(long, value_name = "BYTES", value_parser = config::parse_bytes)]
    pub max_module_bytes: Option<u64>,
    /// Destination range no fetch may reach, besides link-local and cloud metadata (repeatable)
    #[arg(long = "blocked-cidr", value_name = "CIDR", value_parser = config::parse_cidr)]
    pub blocked_cidrs: Vec<IpNet>,
    /// PEM bundle of extra trusted root certificates for https
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Host (or host:port, or *) whose TLS certificate is not verified (repeatable)
    #[arg(long = "insecure-skip-verify", value_name = "HOST[:PORT]")]
    pub insecure_hosts: Vec<String>,
    /// Fail a refresh instead of serving the cached copy (outcome STALE) when upstream fails
    #[arg(long)]
    pub no_serve_stale: bool,
    /// Registry reachable over plain HTTP, or HTTPS without certificate verification (repeatable; `*` for all)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Mirror tried before a registry, in the order given (repeatable), e.g. docker.io=https://mirror.local
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL", value_parser = config::parse_mirror)]
    pub registry_mirrors: Vec<(String, url::Url)>,
    /// Signature verification policy (TOML; see the README's Signatures section); reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    pub verify_policy: Option<PathBuf>,
    /// Mirror (a wasmcache cluster tier) sent each request's own credentials for the registry it stands in for,
    /// so that it can check them upstream per client (repeatable)
    #[arg(long = "forward-credentials-to", value_name = "HOST[:PORT]")]
    pub forward_credentials_to: Vec<String>,
    /// Registry credentials for requests without a pull secret (the ~/.docker/config.json format)
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Kubelet CredentialProviderConfig file (kubelet.config.k8s.io/v1): exec plugins that supply registry
    /// credentials for requests whose pull secret has none for the registry
    #[arg(long = "image-credential-provider-config", value_name = "FILE")]
    pub credential_provider_config: Option<PathBuf>,
    /// Directory holding the credential provider plugins named in --image-credential-provider-config
    #[arg(long = "image-credential-provider-bin-dir", value_name = "DIR")]
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// How long a credential provider plugin may run before it is killed [default: 1m, as the kubelet]
    #[arg(long = "image-credential-provider-timeout", value_name = "DURATION", value_parser = config::parse_duration)]
    pub credential_provider_timeout: Option<Duration>,
    /// Platform taken from an image index that has no Wasm platform [default: linux/amd64]
    #[arg(long, value_name = "OS/ARCH", value_parser = config::parse_platform)]
    pub platform: Option<String>,
    /// Cap on an OCI manifest or index (bytes, or with a K/M/G suffix) [default: 4MiB]
    #[arg(long, value_name = "BYTES", value_parser = config::parse_bytes)]
    pub max_manifest_bytes: Option<u64>,
    /// Watch Istio WasmPlugins in the cluster and prefetch new and changed ones
    #[arg(long)]
    pub watch_wasmplugins: bool,
    /// Kubeconfig for --watch-wasmplugins [default: in-cluster service account, $KUBECONFIG, ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace [default: all namespaces]
    #[arg(long, value_name = "NS")]
    pub watch_namespace: Option<String>,
    /// Watch only WasmPlugins with these labels (e.g. app=gateway)
    #[arg(long, value_name = "LABELS")]
    pub watch_selector: Option<String>,
    /// Let --watch-wasmplugins read the Secrets that WasmPlugins name in spec.imagePullSecret (needs `get` on
    /// secrets in their namespaces); without it, no Secret is read and such plugins are not prefetched
    #[arg(long)]
    pub watch_pull_secrets: bool,
    /// How long in-flight streams may run after SIGTERM [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Evict least recently used modules while the cache is larger (bytes, K/M/G suffix; 0 or `off`: no limit)
    /// [default: off]
    #[arg(long, value_name = "BYTES|off", value_parser = max_cache_bytes)]
    pub max_cache_bytes: Option<Off<u64>>,
    /// Delete modules that were not used for this long [default: 24h]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub module_expiry: Option<Duration>,
    /// How long a module stays in use after Resolve handed out its path; resolving again renews [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub resolve_lease: Option<Duration>,
    /// How often expired modules are looked for [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub purge_interval: Option<Duration>,
    /// Log filter: trace, debug, info, warn, error, or directives such as info,wasmcache=debug; RUST_LOG wins
    /// [default: info]
    #[arg(long, value_name = "LEVEL", value_parser = config::parse_log_level)]
    pub log_level: Option<String>,
    /// Log lines as text, or as one JSON object per line [default: text]
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<LogFormat>,
}

/// A value that may be switched off (`off`): `Off(None)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Off<T>(pub Option<T>);

fn admin_listen(s: &str) -> Result<Off<SocketAddr>, String> {
    config::parse_admin_listen(s).map(Off)
}

fn max_cache_bytes(s: &str) -> Result<Off<u64>, String> {
    config::parse_max_cache_bytes(s).map(Off)
}

fn some_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    Some(items).filter(|items| !items.is_empty())
}

impl Args {
    /// The settings given on the command line: the top layer of [`Config::build`].
    pub fn overrides(&self) -> Overrides {
        let args = self;
        Overrides {
            cache_dir: args.cache_dir.clone(),
            socket: args.socket.clone(),
            listen: args.listen,
            socket_group: args.socket_group.clone(),
            admin_listen: args.admin_listen.map(|a| a.0),
            registry_listen: args.registry_listen.map(|a| a.0),
            registry_tls_cert: args.registry_tls_cert.clone(),
            registry_tls_key: args.registry_tls_key.clone(),
            file_roots: some_vec(args.file_roots.clone()),
            fetch_timeout: args.fetch_timeout,
            fetch_deadline: args.fetch_deadline,
            fetch_attempts: args.fetch_attempts,
            retry_backoff: args.retry_backoff,
            max_module_bytes: args.max_module_bytes,
            blocked_cidrs: some_vec(args.blocked_cidrs.clone()),
            ca_file: args.ca_file.clone(),
            insecure_hosts: some_vec(args.insecure_hosts.clone()),
            // Switches can only turn a setting on; leaving one out lets the environment or the file decide.
            serve_stale: args.no_serve_stale.then_some(false),
            shutdown_grace: args.shutdown_grace,
            insecure_registries: some_vec(args.insecure_registries.clone()),
            forward_credentials_to: some_vec(args.forward_credentials_to.clone()),
            registry_mirrors: some_vec(args.registry_mirrors.clone()),
            docker_config: args.docker_config.clone(),
            verify_policy: args.verify_policy.clone(),
            credential_provider_config: args.credential_provider_config.clone(),
            credential_provider_bin_dir: args.credential_provider_bin_dir.clone(),
            credential_provider_timeout: args.credential_provider_timeout,
            platform: args.platform.clone(),
            max_manifest_bytes: args.max_manifest_bytes,
            watch: args.watch_wasmplugins.then_some(true),
            kubeconfig: args.kubeconfig.clone(),
            watch_namespace: args.watch_namespace.clone(),
            watch_selector: args.watch_selector.clone(),
            watch_pull_secrets: args.watch_pull_secrets.then_some(true),
            max_cache_bytes: args.max_cache_bytes.map(|m| m.0),
            module_expiry: args.module_expiry,
            resolve_lease: args.resolve_lease,
            purge_interval: args.purge_interval,
            log_level: args.log_level.clone(),
            log_format: args.log_format,
        }
    }

    /// The configuration: defaults, the file (`--config` or `WASMCACHE_CONFIG`), the environment, the flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let path = self.config.clone().or_else(|| {
            std::env::var_os(config::CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        config::load(path.as_deref(), &self.overrides())
    }
}

/// Builds the configuration, starts logging as it says, and serves until a shutdown signal. Returns the
/// exit code: 0, 78 for a bad configuration, 1 for other failures, each reported on stderr (as a log event
/// only when logs are JSON, so that every line stays JSON).
pub async fn run(args: Args) -> u8 {
    // Asked for JSON logs on the command line or in the environment: even a configuration error (which
    // comes before logging is set up) is written as one JSON line.
    let json_requested = args.log_format == Some(LogFormat::Json)
        || std::env::var("WASMCACHE_LOG_FORMAT").is_ok_and(|v| v.trim().eq_ignore_ascii_case("json"));
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            let message = ServeError::Config(e).to_string();
            if json_requested {
                let line = serde_json::json!({
                    "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                    "level": "ERROR",
                    "message": "wasmcache stopped",
                    "cause": message,
                    "target": "wasmcache::cli::serve",
                });
                eprintln!("{line}");
            } else {
                eprintln!("wasmcache: {message}");
            }
            return config::EXIT_CONFIG;
        }
    };
    super::init_tracing(&config.log);
    let json = config.log.format == LogFormat::Json;
    match server::serve(config, crate::signal::shutdown()).await {
        Ok(()) => 0,
        Err(e) => {
            // Once: as a JSON log event when logs are JSON (every line stays JSON), else as one plain line.
            if json {
                tracing::error!(cause = %e, "wasmcache stopped");
            } else {
                eprintln!("wasmcache: {e}");
            }
            u8::try_from(e.exit_code()).unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, FromArgMatches as _};

    use super::*;

    fn parse(args: &[&str]) -> Args {
        let command = Args::augment_args(clap::Command::new("serve"));
        let matches = command
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        Args::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn every_flag_is_a_setting() {
        let command = Args::augment_args(clap::Command::new("serve"));
        let flags: Vec<&str> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|flag| !matches!(*flag, "config" | "help"))
            .collect();
        for flag in &flags {
            config::setting_for(flag);
        }
        for setting in config::SETTINGS {
            assert!(flags.contains(&setting.flag), "--{} is missing", setting.flag);
        }
    }

    #[test]
    fn absent_flags_set_nothing() {
        assert!(parse(&[]).overrides().keys().is_empty());
    }

    #[test]
    fn off_values_parse_to_none() {
        let overrides = parse(&[
            "--admin-listen",
            "off",
            "--max-cache-bytes",
            "0",
            "--registry-listen",
            "off",
        ])
        .overrides();
        assert_eq!(overrides.admin_listen, Some(None));
        assert_eq!(overrides.registry_listen, Some(None));
        assert_eq!(overrides.max_cache_bytes, Some(None));
    }

    #[test]
    fn new_flags_reach_the_layer() {
        let overrides = parse(&[
            "--admin-listen",
            "127.0.0.1:1234",
            "--max-cache-bytes",
            "1G",
            "--module-expiry",
            "2h",
            "--purge-interval",
            "5m",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ])
        .overrides();
        assert_eq!(overrides.admin_listen, Some(Some("127.0.0.1:1234".parse().unwrap())));
        assert_eq!(overrides.max_cache_bytes, Some(Some(1 << 30)));
        assert_eq!(overrides.module_expiry, Some(Duration::from_secs(7200)));
        assert_eq!(overrides.purge_interval, Some(Duration::from_secs(300)));
        assert_eq!(overrides.log_level.as_deref(), Some("debug"));
        assert_eq!(overrides.log_format, Some(LogFormat::Json));
    }
}
