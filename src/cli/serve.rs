//! `wasmcache serve`: flags into a [`Config`], then the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{self, Config};
use crate::server::{self, ServeError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cache directory [default: /var/lib/wasmcache for root, else $XDG_CACHE_HOME/wasmcache]
    #[arg(long, env = "WASMCACHE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Unix socket to serve on [default: /run/wasmcache/wasmcache.sock for root, else under $XDG_RUNTIME_DIR]
    #[arg(long, env = "WASMCACHE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also serve gRPC on this TCP address (plain text: keep it on loopback or a trusted network)
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory that file:// URLs may read below (repeatable); without one, file:// is refused
    #[arg(long = "file-root", value_name = "DIR")]
    pub file_roots: Vec<PathBuf>,
    /// Bound on connecting and on each wait for response bytes, per attempt
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, default_value = "15s")]
    pub fetch_timeout: Duration,
    /// Attempts per fetch, the first included
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_FETCH_ATTEMPTS)]
    pub fetch_attempts: u32,
    /// Pause before the first retry; each further one is 1.5 times longer (capped at 60s), with jitter
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, default_value = "500ms")]
    pub retry_backoff: Duration,
    /// Cap on a module's download and on its unwrapped size (bytes, or with a K/M/G suffix)
    #[arg(long, value_name = "BYTES", value_parser = config::parse_bytes, default_value = "256MiB")]
    pub max_module_bytes: u64,
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
    /// Registry credentials for requests without a pull secret (the ~/.docker/config.json format)
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Platform taken from an image index that has no Wasm platform
    #[arg(long, value_name = "OS/ARCH", default_value = "linux/amd64", value_parser = config::parse_platform)]
    pub platform: String,
    /// Cap on an OCI manifest or index (bytes, or with a K/M/G suffix)
    #[arg(long, value_name = "BYTES", value_parser = config::parse_bytes, default_value = "4MiB")]
    pub max_manifest_bytes: u64,
    /// Watch Istio WasmPlugins in the cluster and prefetch new and changed ones
    #[arg(long)]
    pub watch_wasmplugins: bool,
    /// Kubeconfig for --watch-wasmplugins [default: in-cluster service account, $KUBECONFIG, ~/.kube/config]
    #[arg(long, value_name = "FILE", requires = "watch_wasmplugins")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace [default: all namespaces]
    #[arg(long, value_name = "NS", requires = "watch_wasmplugins")]
    pub watch_namespace: Option<String>,
    /// Watch only WasmPlugins with these labels (e.g. app=gateway)
    #[arg(long, value_name = "LABELS", requires = "watch_wasmplugins")]
    pub watch_selector: Option<String>,
    /// How long in-flight streams may run after SIGTERM
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
}

impl Args {
    pub fn into_config(self) -> Result<Config, config::ConfigError> {
        let mut c = Config::default();
        if let Some(dir) = self.cache_dir {
            c.cache_dir = dir;
        }
        if let Some(socket) = self.socket {
            c.socket = socket;
        }
        c.listen = self.listen;
        c.fetch.file_roots = self.file_roots;
        c.fetch.timeout = self.fetch_timeout;
        c.fetch.backoff.attempts = self.fetch_attempts;
        c.fetch.backoff.initial = self.retry_backoff;
        c.fetch.max_bytes = self.max_module_bytes;
        c.fetch.blocked_cidrs = self.blocked_cidrs;
        c.fetch.ca_file = self.ca_file;
        c.fetch.insecure_hosts = trimmed(self.insecure_hosts);
        c.serve_stale = !self.no_serve_stale;
        c.shutdown_grace = self.shutdown_grace;
        c.fetch.oci.insecure_registries = trimmed(self.insecure_registries);
        c.fetch.oci.mirrors = self.registry_mirrors;
        c.fetch.oci.platform = self.platform;
        c.fetch.oci.max_manifest_bytes = self.max_manifest_bytes;
        if self.watch_wasmplugins {
            c.watch = Some(crate::watch::WatchConfig {
                kubeconfig: self.kubeconfig,
                scope: crate::cluster::Scope {
                    namespace: self.watch_namespace,
                    selector: self.watch_selector,
                },
            });
        }
        if let Some(path) = &self.docker_config {
            c.fetch.oci.default_credentials = config::load_docker_config(path)?;
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

pub async fn run(args: Args) -> Result<(), ServeError> {
    server::serve(args.into_config()?, crate::signal::shutdown()).await
}
