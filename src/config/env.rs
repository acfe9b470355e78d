//! The `WASMCACHE_*` layer: one variable per flag, named in [`super::SETTINGS`].

use std::path::PathBuf;

use super::{
    parse_addr, parse_admin_listen, parse_bool, parse_bytes, parse_cidr, parse_duration, parse_log_level,
    parse_max_cache_bytes, parse_mirror, parse_platform, setting_for, ConfigError, Overrides,
};

/// Reads every variable through `var`; see [`Overrides::from_env`].
pub(super) fn read(var: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
    let env = Env { var: &var };
    Ok(Overrides {
        cache_dir: env.one("cache-dir", path)?,
        socket: env.one("socket", path)?,
        socket_group: env.one("socket-group", text)?,
        listen: env.one("listen", parse_addr)?,
        admin_listen: env.one("admin-listen", parse_admin_listen)?,
        registry_listen: env.one("registry-listen", parse_admin_listen)?,
        registry_tls_cert: env.one("registry-tls-cert", path)?,
        registry_tls_key: env.one("registry-tls-key", path)?,
        file_roots: env.list("file-root", path)?,
        fetch_timeout: env.one("fetch-timeout", parse_duration)?,
        fetch_deadline: env.one("fetch-deadline", parse_duration)?,
        fetch_attempts: env.one("fetch-attempts", parse_count)?,
        retry_backoff: env.one("retry-backoff", parse_duration)?,
        max_module_bytes: env.one("max-module-bytes", parse_bytes)?,
        blocked_cidrs: env.list("blocked-cidr", parse_cidr)?,
        ca_file: env.one("ca-file", path)?,
        insecure_hosts: env.list("insecure-skip-verify", text)?,
        // WASMCACHE_NO_SERVE_STALE=true turns serving stale copies off, as the flag does.
        serve_stale: env.one("no-serve-stale", parse_bool)?.map(|no| !no),
        shutdown_grace: env.one("shutdown-grace", parse_duration)?,
        verify_policy: env.one("verify-policy", path)?,
        insecure_registries: env.list("insecure-registry", text)?,
        registry_mirrors: env.list("registry-mirror", parse_mirror)?,
        forward_credentials_to: env.list("forward-credentials-to", text)?,
        docker_config: env.one("docker-config", path)?,
        credential_provider_config: env.one("image-credential-provider-config", path)?,
        credential_provider_bin_dir: env.one("image-credential-provider-bin-dir", path)?,
        credential_provider_timeout: env.one("image-credential-provider-timeout", parse_duration)?,
        platform: env.one("platform", parse_platform)?,
        max_manifest_bytes: env.one("max-manifest-bytes", parse_bytes)?,
        watch: env.one("watch-wasmplugins", parse_bool)?,
        kubeconfig: env.one("kubeconfig", path)?,
        watch_namespace: env.one("watch-namespace", text)?,
        watch_selector: env.one("watch-selector", text)?,
        watch_pull_secrets: env.one("watch-pull-secrets", parse_bool)?,
        max_cache_bytes: env.one("max-cache-bytes", parse_max_cache_bytes)?,
        module_expiry: env.one("module-expiry", parse_duration)?,
        resolve_lease: env.one("resolve-lease", parse_duration)?,
        purge_interval: env.one("purge-interval", parse_duration)?,
        log_level: env.one("log-level", parse_log_level)?,
        log_format: env.one("log-format", |s| s.parse())?,
    })
}

struct Env<'a> {
    var: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The variable of `flag`, parsed; an unset or empty variable is `None`.
    fn one<T>(&self, flag: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        let var = setting_for(flag).env;
        match (self.var)(var).filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(value) => parse(value.trim())
                .map(Some)
                .map_err(|reason| ConfigError::Env { var, reason }),
        }
    }

    /// A comma-separated list; empty items are skipped.
    fn list<T>(&self, flag: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<Vec<T>>, ConfigError> {
        self.one(flag, |value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(&parse)
                .collect()
        })
    }
}

fn path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn text(s: &str) -> Result<String, String> {
    Ok(s.to_string())
}

fn parse_count(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| format!("{s:?} is not a whole number"))
}
