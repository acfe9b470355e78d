//! Every setting of `serve`, each declared once, in the table at the bottom of this file.
//!
//! An entry gives the setting's names (flag, file key, variable), its [`Kind`] (how values are written), its
//! help line, its default, where its value goes in [`Config`] (`apply`), how `config check` prints it
//! (`show`) and what [`Config::validate`] checks (`check`). From the table come [`Overrides`] (one optional
//! field per setting), the `WASMCACHE_*` reader, the keys the file reader accepts, the `serve` flags and their
//! help, the defaults (the lowest layer), the printed configuration and [`SETTINGS`]; adding a setting is
//! adding an entry.
//!
//! The settings that only mean something together (the endpoint's TLS pair, the credential provider file and
//! its plugin directory, the watch settings) have an empty `apply`; `Overrides::fill` puts them together.
//!
//! Long: the table of every setting, one entry each by design: adding a setting adds one entry here and nowhere else.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use toml::de::DeTable;

use super::file::Reader;
use super::kind::{self, Kind, List};
use super::{
    invalid, load_docker_config, resolve_group, trimmed, Config, ConfigError, LogFormat, VerifyPolicy,
    DEFAULT_SHUTDOWN_GRACE,
};

/// One setting and the three names it goes by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setting {
    /// The `serve` flag without `--`; also the `key` of [`ConfigError::Invalid`].
    pub flag: &'static str,
    /// The key in the configuration file, dotted for keys in a table (`registry.platform`).
    pub file_key: &'static str,
    pub env: &'static str,
}

/// The setting behind a flag name. Panics on a name that is not in [`SETTINGS`]: that is a bug, which the
/// tests catch.
pub(crate) fn setting_for(flag: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.flag == flag)
        .unwrap_or_else(|| panic!("{flag:?} is not in config::SETTINGS"))
}

/// `Err(reason)` when `bad`: the shape of most checks.
fn refuse(bad: bool, reason: impl Into<String>) -> Result<(), String> {
    if bad {
        Err(reason.into())
    } else {
        Ok(())
    }
}

/// A variable's value, read as `K` says; an unset or empty variable is `None`.
fn env_value<K: Kind>(
    var: &'static str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<K::Value>, ConfigError> {
    match read(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(value) => K::from_env(value.trim())
            .map(Some)
            .map_err(|reason| ConfigError::Env { var, reason }),
    }
}

/// A flag's help: the doc lines joined, and the default unless the text states it (or it is a switch's).
fn help(lines: &[&str], default: Option<toml::Value>) -> String {
    let text = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    match default {
        _ if text.contains("[default:") => text,
        Some(toml::Value::String(s)) => format!("{text} [default: {s}]"),
        Some(toml::Value::Boolean(_)) | None => text,
        Some(other) => format!("{text} [default: {other}]"),
    }
}

/// Where a setting's value goes in a [`Config`]: `set a.b` assigns it, `|c, v| { ... }` may do more (and
/// fail with `?`), and nothing leaves it to `Overrides::fill`.
macro_rules! apply {
    ($config:ident, $value:expr, set $($path:ident).+) => {
        if let Some(v) = $value {
            $config.$($path).+ = v;
        }
    };
    ($config:ident, $value:expr, |$c:ident, $v:ident| $body:block) => {
        if let Some($v) = $value {
            let $c = &mut *$config;
            $body
        }
    };
    ($config:ident, $value:expr,) => {};
}

/// A check of the filled-in configuration, named by the setting's flag.
macro_rules! check {
    ($config:ident, $flag:literal, |$c:ident| $body:expr) => {{
        let $c: &Config = $config;
        let checked: Result<(), String> = $body;
        checked.map_err(|reason| invalid($flag, reason))?;
    }};
    ($config:ident, $flag:literal,) => {};
}

macro_rules! settings {
    ($(
        $(#[doc = $help:literal])+
        $field:ident: $kind:ty {
            flag: $flag:literal,
            file: $file:literal,
            env: $env:literal,
            $(value: $value_name:literal,)?
            default: $default:expr,
            apply: [$($apply:tt)*],
            show: |$show_c:ident| $show:expr,
            check: [$($check:tt)*] $(,)?
        }
    )*) => {
        /// Every setting of `serve` (except `--config` itself, [`super::CONFIG_ENV`]).
        pub(crate) const SETTINGS: &[Setting] = &[$(Setting { flag: $flag, file_key: $file, env: $env }),*];

        /// One layer of settings (the flags, the environment, the file or the defaults): `None` where the layer
        /// is silent. A list replaces the list of a lower layer; it is never appended to it.
        #[derive(Clone, Debug, Default)]
        pub(crate) struct Overrides {
            $($(#[doc = $help])+ pub $field: Option<<$kind as Kind>::Value>,)*
        }

        impl Overrides {
            /// This layer over `lower`: each field from `self` where set, else from `lower`.
            pub(crate) fn over(self, lower: Overrides) -> Overrides {
                Overrides { $($field: self.$field.or(lower.$field)),* }
            }

            /// The flag names of the settings this layer sets.
            pub(crate) fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field.is_some() { keys.push($flag); })*
                keys
            }

            /// The built-in defaults, the lowest layer.
            pub(crate) fn defaults() -> Overrides {
                Overrides { $($field: $default),* }
            }

            /// Reads the `WASMCACHE_*` variables through `var` (the process environment in `serve`, a map in
            /// tests). An empty variable counts as unset; lists are comma-separated; booleans are
            /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
            pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
                Ok(Overrides { $($field: env_value::<$kind>($env, &var)?),* })
            }

            /// The settings given as `serve` flags (see [`flags`]).
            pub(crate) fn from_matches(matches: &ArgMatches) -> Overrides {
                Overrides { $($field: <$kind as Kind>::from_matches(matches, $flag)),* }
            }

            /// The settings of a parsed file whose keys [`Reader::check_keys`] accepted.
            pub(super) fn from_file(file: &mut Reader<'_>, root: &DeTable<'_>) -> Result<Overrides, ConfigError> {
                Ok(Overrides { $($field: file.take::<$kind>(root, $file, $flag)?),* })
            }

            /// Applies every setting that has an `apply` to `c`.
            pub(super) fn apply_each(&self, c: &mut Config) -> Result<(), ConfigError> {
                $(apply!(c, self.$field.clone(), $($apply)*);)*
                Ok(())
            }
        }

        impl Config {
            /// The checks of single settings, in the table's order.
            pub(super) fn check_each(&self) -> Result<(), ConfigError> {
                let config = self;
                $(check!(config, $flag, $($check)*);)*
                Ok(())
            }

            /// The settings as the file writes them, in the table's order.
            pub(super) fn printed(&self) -> toml::Table {
                let mut out = toml::Table::new();
                $({
                    let $show_c: &Config = self;
                    let shown: Option<<$kind as Kind>::Value> = $show;
                    if let Some(value) = shown {
                        super::file::insert(&mut out, $file, <$kind as Kind>::to_toml(&value));
                    }
                })*
                out
            }
        }

        /// Adds a flag for every setting to `serve`'s command, with its help and default.
        pub(crate) fn flags(command: Command) -> Command {
            let defaults = Overrides::defaults();
            command $(.arg(<$kind as Kind>::arg(
                Arg::new($flag)
                    .long($flag)
                    $(.value_name($value_name))?
                    .help(help(&[$($help),+], defaults.$field.as_ref().map(<$kind as Kind>::to_toml))),
            )))*
        }
    };
}

settings! {
    /// Cache directory [default: /var/lib/wasmcache for root, else $XDG_CACHE_HOME/wasmcache]
    cache_dir: kind::Path {
        flag: "cache-dir", file: "cache-dir", env: "WASMCACHE_CACHE_DIR", value: "DIR",
        default: Some(super::default_cache_dir()),
        apply: [set cache_dir],
        show: |c| Some(c.cache_dir.clone()),
        check: [|c| refuse(c.cache_dir.as_os_str().is_empty(), "must not be empty")],
    }
    /// Unix socket to serve on [default: /run/wasmcache/wasmcache.sock for root, else under $XDG_RUNTIME_DIR]
    socket: kind::Path {
        flag: "socket", file: "socket", env: "WASMCACHE_SOCKET", value: "PATH",
        default: Some(super::default_socket()),
        apply: [set socket],
        show: |c| Some(c.socket.clone()),
        check: [|c| refuse(c.socket.as_os_str().is_empty(), "must not be empty")],
    }
    /// Group (name or number) the socket belongs to; members may connect (mode 0660) [default: the daemon's group]
    socket_group: kind::Text {
        flag: "socket-group", file: "socket-group", env: "WASMCACHE_SOCKET_GROUP", value: "GROUP",
        default: None,
        apply: [|c, v| { c.socket_group = Some(v).filter(|g| !g.trim().is_empty()); }],
        show: |c| c.socket_group.clone(),
        check: [|c| c.socket_group.as_deref().map_or(Ok(()), |g| resolve_group(g).map(drop))],
    }
    /// Also serve gRPC on this TCP address (plain text: keep it on loopback or a trusted network)
    listen: kind::Addr {
        flag: "listen", file: "listen", env: "WASMCACHE_LISTEN", value: "HOST:PORT",
        default: None,
        apply: [|c, v| { c.listen = Some(v); }],
        show: |c| c.listen,
        check: [],
    }
    /// Admin HTTP listener (metrics, health), or `off`
    admin_listen: kind::AddrOrOff {
        flag: "admin-listen", file: "admin-listen", env: "WASMCACHE_ADMIN_LISTEN", value: "ADDR|off",
        default: Some(Some(SocketAddr::from(([127, 0, 0, 1], 9464)))),
        apply: [set admin_listen],
        show: |c| Some(c.admin_listen),
        check: [|c| match (c.admin_listen, c.listen) {
            (Some(admin), Some(listen)) => refuse(admin == listen, format!("{admin} is also the gRPC --listen address")),
            _ => Ok(()),
        }],
    }
    /// Serve the OCI Distribution pull-through endpoint (GET/HEAD manifests, blobs, referrers) on this TCP
    /// address, or `off`
    registry_listen: kind::AddrOrOff {
        flag: "registry-listen", file: "registry-listen", env: "WASMCACHE_REGISTRY_LISTEN", value: "ADDR|off",
        default: Some(None),
        apply: [set registry_listen],
        show: |c| c.registry_listen.map(Some),
        check: [|c| match c.registry_listen {
            Some(registry) if Some(registry) == c.listen => Err(format!("{registry} is also the gRPC --listen address")),
            Some(registry) if Some(registry) == c.admin_listen => Err(format!("{registry} is also the --admin-listen address")),
            _ => Ok(()),
        }],
    }
    /// PEM certificate chain for TLS on --registry-listen (with --registry-tls-key); reloaded when it changes
    registry_tls_cert: kind::Path {
        flag: "registry-tls-cert", file: "registry-tls-cert", env: "WASMCACHE_REGISTRY_TLS_CERT", value: "FILE",
        default: None,
        apply: [],
        show: |c| c.registry_tls.as_ref().map(|t| t.cert.clone()),
        check: [],
    }
    /// PEM private key of --registry-tls-cert
    registry_tls_key: kind::Path {
        flag: "registry-tls-key", file: "registry-tls-key", env: "WASMCACHE_REGISTRY_TLS_KEY", value: "FILE",
        default: None,
        apply: [],
        show: |c| c.registry_tls.as_ref().map(|t| t.key.clone()),
        check: [],
    }
    /// Directory that file:// URLs may read below (repeatable); without one, file:// is refused
    file_roots: List<kind::Path> {
        flag: "file-root", file: "file-root", env: "WASMCACHE_FILE_ROOT", value: "DIR",
        default: None,
        apply: [set fetch.file_roots],
        show: |c| Some(c.fetch.file_roots.clone()),
        check: [|c| c.fetch.file_roots.iter().try_for_each(|root| {
            refuse(!root.is_absolute(), format!("{} is not an absolute path", root.display()))?;
            refuse(!root.is_dir(), format!("{} is not a directory", root.display()))
        })],
    }
    /// Bound on connecting and on each wait for response bytes, per attempt
    fetch_timeout: kind::Dur {
        flag: "fetch-timeout", file: "fetch-timeout", env: "WASMCACHE_FETCH_TIMEOUT", value: "DURATION",
        default: Some(Duration::from_secs(15)),
        apply: [set fetch.timeout],
        show: |c| Some(c.fetch.timeout),
        check: [|c| refuse(c.fetch.timeout.is_zero(), "must be greater than zero")],
    }
    /// Bound on one whole attempt (connecting, the response, the whole body); must be at least --fetch-timeout
    fetch_deadline: kind::Dur {
        flag: "fetch-deadline", file: "fetch-deadline", env: "WASMCACHE_FETCH_DEADLINE", value: "DURATION",
        default: Some(Duration::from_secs(5 * 60)),
        apply: [set fetch.deadline],
        show: |c| Some(c.fetch.deadline),
        // The deadline bounds a whole attempt, of which the timeout bounds each wait.
        check: [|c| refuse(
            c.fetch.deadline < c.fetch.timeout,
            format!(
                "{} must be at least fetch-timeout ({})",
                humantime::format_duration(c.fetch.deadline),
                humantime::format_duration(c.fetch.timeout)
            ),
        )],
    }
    /// Attempts per fetch, the first included
    fetch_attempts: kind::Count {
        flag: "fetch-attempts", file: "fetch-attempts", env: "WASMCACHE_FETCH_ATTEMPTS", value: "N",
        default: Some(5),
        apply: [set fetch.backoff.attempts],
        show: |c| Some(c.fetch.backoff.attempts),
        check: [|c| refuse(c.fetch.backoff.attempts == 0, "must be at least 1")],
    }
    /// Pause before the first retry; each further one is 1.5 times longer (capped at 60s), with jitter
    retry_backoff: kind::Dur {
        flag: "retry-backoff", file: "retry-backoff", env: "WASMCACHE_RETRY_BACKOFF", value: "DURATION",
        default: Some(Duration::from_millis(500)),
        apply: [set fetch.backoff.initial],
        show: |c| Some(c.fetch.backoff.initial),
        check: [],
    }
    /// Cap on a module's download and on its unwrapped size (bytes, or with a K/M/G suffix)
    max_module_bytes: kind::Bytes {
        flag: "max-module-bytes", file: "max-module-bytes", env: "WASMCACHE_MAX_MODULE_BYTES", value: "BYTES",
        default: Some(256 << 20),
        apply: [set fetch.max_bytes],
        show: |c| Some(c.fetch.max_bytes),
        check: [|c| refuse(c.fetch.max_bytes == 0, "must be greater than zero")],
    }
    /// Destination range no fetch may reach, besides link-local and cloud metadata (repeatable)
    blocked_cidrs: List<kind::Cidr> {
        flag: "blocked-cidr", file: "blocked-cidr", env: "WASMCACHE_BLOCKED_CIDR", value: "CIDR",
        default: None,
        apply: [set fetch.blocked_cidrs],
        show: |c| Some(c.fetch.blocked_cidrs.clone()),
        check: [],
    }
    /// PEM bundle of extra trusted root certificates for https
    ca_file: kind::Path {
        flag: "ca-file", file: "ca-file", env: "WASMCACHE_CA_FILE", value: "FILE",
        default: None,
        apply: [|c, v| { c.fetch.ca_file = Some(v); }],
        show: |c| c.fetch.ca_file.clone(),
        check: [|c| c.fetch.ca_file.as_deref().map_or(Ok(()), |ca| {
            refuse(!ca.is_file(), format!("{} is not a readable file", ca.display()))
        })],
    }
    /// Host (or host:port, or *) whose TLS certificate is not verified (repeatable)
    insecure_hosts: List<kind::Text> {
        flag: "insecure-skip-verify", file: "insecure-skip-verify", env: "WASMCACHE_INSECURE_SKIP_VERIFY",
        value: "HOST[:PORT]",
        default: None,
        apply: [|c, v| { c.fetch.insecure_hosts = trimmed(v); }],
        show: |c| Some(c.fetch.insecure_hosts.clone()),
        check: [],
    }
    /// Fail a refresh instead of serving the cached copy (outcome STALE) when upstream fails
    serve_stale: kind::NoSwitch {
        flag: "no-serve-stale", file: "serve-stale", env: "WASMCACHE_NO_SERVE_STALE",
        default: Some(true),
        apply: [set serve_stale],
        show: |c| Some(c.serve_stale),
        check: [],
    }
    /// How long in-flight streams may run after SIGTERM
    shutdown_grace: kind::Dur {
        flag: "shutdown-grace", file: "shutdown-grace", env: "WASMCACHE_SHUTDOWN_GRACE", value: "DURATION",
        default: Some(DEFAULT_SHUTDOWN_GRACE),
        apply: [set shutdown_grace],
        show: |c| Some(c.shutdown_grace),
        check: [],
    }
    /// Signature verification policy (TOML; see the README's Signatures section); reloaded on SIGHUP
    verify_policy: kind::Path {
        flag: "verify-policy", file: "verify-policy", env: "WASMCACHE_VERIFY_POLICY", value: "FILE",
        default: None,
        apply: [|c, v| { c.verify = Some(VerifyPolicy::load(v)?); }],
        show: |c| c.verify.as_ref().map(|v| v.path.clone()),
        check: [],
    }
    /// Registry reachable over plain HTTP, or HTTPS without certificate verification (repeatable; `*` for all)
    insecure_registries: List<kind::Text> {
        flag: "insecure-registry", file: "registry.insecure", env: "WASMCACHE_INSECURE_REGISTRY",
        value: "HOST[:PORT]",
        default: None,
        apply: [|c, v| { c.fetch.oci.insecure_registries = trimmed(v); }],
        show: |c| Some(c.fetch.oci.insecure_registries.clone()),
        check: [],
    }
    /// Mirror tried before a registry, in the order given (repeatable), e.g. docker.io=https://mirror.local
    registry_mirrors: kind::Mirrors {
        flag: "registry-mirror", file: "registry.mirrors", env: "WASMCACHE_REGISTRY_MIRROR", value: "REGISTRY=URL",
        default: None,
        apply: [set fetch.oci.mirrors],
        show: |c| Some(c.fetch.oci.mirrors.clone()).filter(|m| !m.is_empty()),
        check: [],
    }
    /// Mirror (a wasmcache cluster tier) sent each request's own credentials for the registry it stands in for,
    /// so that it can check them upstream per client (repeatable)
    forward_credentials_to: List<kind::Text> {
        flag: "forward-credentials-to", file: "registry.forward-credentials-to",
        env: "WASMCACHE_FORWARD_CREDENTIALS_TO", value: "HOST[:PORT]",
        default: None,
        apply: [|c, v| { c.fetch.oci.forward_credentials = trimmed(v); }],
        show: |c| Some(c.fetch.oci.forward_credentials.clone()).filter(|f| !f.is_empty()),
        check: [],
    }
    /// Registry credentials for requests without a pull secret (the ~/.docker/config.json format)
    docker_config: kind::Path {
        flag: "docker-config", file: "registry.docker-config", env: "WASMCACHE_DOCKER_CONFIG", value: "FILE",
        default: None,
        apply: [|c, v| {
            c.fetch.oci.default_credentials = load_docker_config(&v)?;
            c.docker_config = Some(v);
        }],
        show: |c| c.docker_config.clone(),
        check: [],
    }
    /// Kubelet CredentialProviderConfig file (kubelet.config.k8s.io/v1): exec plugins that supply registry
    /// credentials for requests whose pull secret has none for the registry
    credential_provider_config: kind::Path {
        flag: "image-credential-provider-config", file: "registry.image-credential-provider-config",
        env: "WASMCACHE_IMAGE_CREDENTIAL_PROVIDER_CONFIG", value: "FILE",
        default: None,
        apply: [],
        show: |c| c.credential_provider_config.clone(),
        check: [],
    }
    /// Directory holding the credential provider plugins named in --image-credential-provider-config
    credential_provider_bin_dir: kind::Path {
        flag: "image-credential-provider-bin-dir", file: "registry.image-credential-provider-bin-dir",
        env: "WASMCACHE_IMAGE_CREDENTIAL_PROVIDER_BIN_DIR", value: "DIR",
        default: None,
        apply: [],
        show: |c| c.credential_provider_bin_dir.clone(),
        check: [],
    }
    /// How long a credential provider plugin may run before it is killed (the default is the kubelet's)
    credential_provider_timeout: kind::Dur {
        flag: "image-credential-provider-timeout", file: "registry.image-credential-provider-timeout",
        env: "WASMCACHE_IMAGE_CREDENTIAL_PROVIDER_TIMEOUT", value: "DURATION",
        // The kubelet's fixed one minute, which leaves a plugin room to retry a failed request to its cloud's API.
        default: Some(Duration::from_secs(60)),
        apply: [set fetch.oci.provider_timeout],
        show: |c| Some(c.fetch.oci.provider_timeout),
        check: [|c| refuse(c.fetch.oci.provider_timeout.is_zero(), "must be greater than zero")],
    }
    /// Platform taken from an image index that has no Wasm platform
    platform: kind::Platform {
        flag: "platform", file: "registry.platform", env: "WASMCACHE_PLATFORM", value: "OS/ARCH",
        default: Some("linux/amd64".into()),
        apply: [set fetch.oci.platform],
        show: |c| Some(c.fetch.oci.platform.clone()),
        check: [|c| super::parse_platform(&c.fetch.oci.platform).map(drop)],
    }
    /// Cap on an OCI manifest or index (bytes, or with a K/M/G suffix)
    max_manifest_bytes: kind::Bytes {
        flag: "max-manifest-bytes", file: "registry.max-manifest-bytes", env: "WASMCACHE_MAX_MANIFEST_BYTES",
        value: "BYTES",
        default: Some(4 << 20),
        apply: [set fetch.oci.max_manifest_bytes],
        show: |c| Some(c.fetch.oci.max_manifest_bytes),
        check: [|c| refuse(c.fetch.oci.max_manifest_bytes == 0, "must be greater than zero")],
    }
    /// Watch Istio WasmPlugins in the cluster and prefetch new and changed ones
    watch: kind::Switch {
        flag: "watch-wasmplugins", file: "watch.enabled", env: "WASMCACHE_WATCH_WASMPLUGINS",
        default: None,
        apply: [],
        show: |c| Some(c.watch.is_some()),
        check: [],
    }
    /// Kubeconfig for --watch-wasmplugins [default: in-cluster service account, $KUBECONFIG, ~/.kube/config]
    kubeconfig: kind::Path {
        flag: "kubeconfig", file: "watch.kubeconfig", env: "WASMCACHE_KUBECONFIG", value: "FILE",
        default: None,
        apply: [],
        show: |c| c.watch.as_ref().and_then(|w| w.kubeconfig.clone()),
        check: [],
    }
    /// Watch only this namespace [default: all namespaces]
    watch_namespace: kind::Text {
        flag: "watch-namespace", file: "watch.namespace", env: "WASMCACHE_WATCH_NAMESPACE", value: "NS",
        default: None,
        apply: [],
        show: |c| c.watch.as_ref().and_then(|w| w.scope.namespace.clone()),
        check: [],
    }
    /// Watch only WasmPlugins with these labels (e.g. app=gateway)
    watch_selector: kind::Text {
        flag: "watch-selector", file: "watch.selector", env: "WASMCACHE_WATCH_SELECTOR", value: "LABELS",
        default: None,
        apply: [],
        show: |c| c.watch.as_ref().and_then(|w| w.scope.selector.clone()),
        check: [],
    }
    /// Let --watch-wasmplugins read the Secrets that WasmPlugins name in spec.imagePullSecret (needs `get` on
    /// secrets in their namespaces); without it, no Secret is read and such plugins are not prefetched
    watch_pull_secrets: kind::Switch {
        flag: "watch-pull-secrets", file: "watch.pull-secrets", env: "WASMCACHE_WATCH_PULL_SECRETS",
        default: None,
        apply: [],
        show: |c| Some(c.watch.as_ref().is_some_and(|w| w.pull_secrets)),
        check: [],
    }
    /// Evict least recently used modules while the cache is larger (bytes, K/M/G suffix; 0 or `off`: no limit)
    max_cache_bytes: kind::SizeOrOff {
        flag: "max-cache-bytes", file: "lifecycle.max-cache-bytes", env: "WASMCACHE_MAX_CACHE_BYTES",
        value: "BYTES|off",
        default: Some(None),
        apply: [set lifecycle.max_cache_bytes],
        show: |c| Some(c.lifecycle.max_cache_bytes),
        check: [|c| refuse(c.lifecycle.max_cache_bytes == Some(0), "must be greater than zero (or off for no limit)")],
    }
    /// Delete modules that were not used for this long
    module_expiry: kind::Dur {
        flag: "module-expiry", file: "lifecycle.module-expiry", env: "WASMCACHE_MODULE_EXPIRY", value: "DURATION",
        default: Some(Duration::from_secs(24 * 3600)),
        apply: [set lifecycle.module_expiry],
        show: |c| Some(c.lifecycle.module_expiry),
        check: [|c| refuse(c.lifecycle.module_expiry.is_zero(), "must be greater than zero")],
    }
    /// How long a module stays in use after Resolve handed out its path; resolving again renews
    resolve_lease: kind::Dur {
        flag: "resolve-lease", file: "lifecycle.resolve-lease", env: "WASMCACHE_RESOLVE_LEASE", value: "DURATION",
        default: Some(Duration::from_secs(3600)),
        apply: [set lifecycle.resolve_lease],
        show: |c| Some(c.lifecycle.resolve_lease),
        check: [|c| refuse(c.lifecycle.resolve_lease.is_zero(), "must be greater than zero")],
    }
    /// How often expired modules are looked for
    purge_interval: kind::Dur {
        flag: "purge-interval", file: "lifecycle.purge-interval", env: "WASMCACHE_PURGE_INTERVAL", value: "DURATION",
        default: Some(Duration::from_secs(3600)),
        apply: [set lifecycle.purge_interval],
        show: |c| Some(c.lifecycle.purge_interval),
        check: [|c| refuse(c.lifecycle.purge_interval.is_zero(), "must be greater than zero")],
    }
    /// Log filter: trace, debug, info, warn, error, or directives such as info,wasmcache=debug; RUST_LOG wins
    log_level: kind::LogLevel {
        flag: "log-level", file: "log.level", env: "WASMCACHE_LOG_LEVEL", value: "LEVEL",
        default: Some("info".into()),
        apply: [set log.level],
        show: |c| Some(c.log.level.clone()),
        check: [|c| super::parse_log_level(&c.log.level).map(drop)],
    }
    /// Log lines as text, or as one JSON object per line
    log_format: kind::Format {
        flag: "log-format", file: "log.format", env: "WASMCACHE_LOG_FORMAT", value: "text|json",
        default: Some(LogFormat::Text),
        apply: [set log.format],
        show: |c| Some(c.log.format),
        check: [],
    }
}
