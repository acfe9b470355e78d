//! The `--config` TOML file, in and out.
//!
//! Keys are the flag names, with the registry, watch, lifecycle and log settings in tables of their own
//! (see [`super::SETTINGS`] and the README). Every value is read as a spanned TOML value and converted here,
//! where its key is known, so that a bad value is reported with its key and line whatever its type; unknown
//! keys are refused by serde (`deny_unknown_fields`) and reported with the line toml gives.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::{Spanned, Value};

use super::{
    parse_addr, parse_admin_listen, parse_bytes, parse_cidr, parse_duration, parse_log_level, parse_max_cache_bytes,
    parse_mirror, parse_platform, setting_for, Config, ConfigError, LogFormat, Overrides,
};

/// A configuration file, read and converted, with the line of each key it sets.
#[derive(Clone, Debug)]
pub struct FileConfig {
    path: PathBuf,
    values: Overrides,
    /// Flag name → line (from 1) of the value, so that [`Config::build`] can point at it.
    lines: HashMap<&'static str, usize>,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(path, &text)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        let mut reader = Reader {
            path,
            src: text,
            lines: HashMap::new(),
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| reader.toml_error(&e))?;
        let values = reader.convert(raw)?;
        Ok(FileConfig {
            path: path.to_path_buf(),
            values,
            lines: reader.lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn values(&self) -> &Overrides {
        &self.values
    }

    /// `(flag, line)` for every setting the file sets.
    pub fn lines(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.lines.iter().map(|(flag, line)| (*flag, *line))
    }
}

type Raw = Option<Spanned<Value>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    cache_dir: Raw,
    socket: Raw,
    socket_group: Raw,
    listen: Raw,
    admin_listen: Raw,
    registry_listen: Raw,
    registry_tls_cert: Raw,
    registry_tls_key: Raw,
    file_root: Raw,
    fetch_timeout: Raw,
    fetch_deadline: Raw,
    fetch_attempts: Raw,
    retry_backoff: Raw,
    max_module_bytes: Raw,
    blocked_cidr: Raw,
    ca_file: Raw,
    insecure_skip_verify: Raw,
    serve_stale: Raw,
    shutdown_grace: Raw,
    verify_policy: Raw,
    #[serde(default)]
    registry: RawRegistry,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRegistry {
    insecure: Raw,
    /// Registry → its mirrors in order. Registry names are quoted keys (`"docker.io" = [...]`).
    mirrors: Option<BTreeMap<String, Spanned<Value>>>,
    forward_credentials_to: Raw,
    docker_config: Raw,
    image_credential_provider_config: Raw,
    image_credential_provider_bin_dir: Raw,
    image_credential_provider_timeout: Raw,
    platform: Raw,
    max_manifest_bytes: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWatch {
    enabled: Raw,
    kubeconfig: Raw,
    namespace: Raw,
    selector: Raw,
    pull_secrets: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLifecycle {
    max_cache_bytes: Raw,
    module_expiry: Raw,
    resolve_lease: Raw,
    purge_interval: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLog {
    level: Raw,
    format: Raw,
}

struct Reader<'a> {
    path: &'a Path,
    src: &'a str,
    lines: HashMap<&'static str, usize>,
}

impl Reader<'_> {
    fn convert(&mut self, raw: RawFile) -> Result<Overrides, ConfigError> {
        let (registry, watch, lifecycle, log) = (raw.registry, raw.watch, raw.lifecycle, raw.log);
        Ok(Overrides {
            cache_dir: self.one("cache-dir", raw.cache_dir, path)?,
            socket: self.one("socket", raw.socket, path)?,
            socket_group: self.one("socket-group", raw.socket_group, text)?,
            listen: self.one("listen", raw.listen, with(parse_addr))?,
            admin_listen: self.one("admin-listen", raw.admin_listen, with(parse_admin_listen))?,
            registry_listen: self.one("registry-listen", raw.registry_listen, with(parse_admin_listen))?,
            registry_tls_cert: self.one("registry-tls-cert", raw.registry_tls_cert, path)?,
            registry_tls_key: self.one("registry-tls-key", raw.registry_tls_key, path)?,
            file_roots: self.one("file-root", raw.file_root, list(path))?,
            fetch_timeout: self.one("fetch-timeout", raw.fetch_timeout, duration)?,
            fetch_deadline: self.one("fetch-deadline", raw.fetch_deadline, duration)?,
            fetch_attempts: self.one("fetch-attempts", raw.fetch_attempts, count)?,
            retry_backoff: self.one("retry-backoff", raw.retry_backoff, duration)?,
            max_module_bytes: self.one("max-module-bytes", raw.max_module_bytes, bytes)?,
            blocked_cidrs: self.one("blocked-cidr", raw.blocked_cidr, list(with(parse_cidr)))?,
            ca_file: self.one("ca-file", raw.ca_file, path)?,
            insecure_hosts: self.one("insecure-skip-verify", raw.insecure_skip_verify, list(text))?,
            serve_stale: self.one("no-serve-stale", raw.serve_stale, boolean)?,
            shutdown_grace: self.one("shutdown-grace", raw.shutdown_grace, duration)?,
            verify_policy: self.one("verify-policy", raw.verify_policy, path)?,
            insecure_registries: self.one("insecure-registry", registry.insecure, list(text))?,
            registry_mirrors: registry.mirrors.map(|m| self.mirrors(m)).transpose()?,
            forward_credentials_to: self.one("forward-credentials-to", registry.forward_credentials_to, list(text))?,
            docker_config: self.one("docker-config", registry.docker_config, path)?,
            credential_provider_config: self.one(
                "image-credential-provider-config",
                registry.image_credential_provider_config,
                path,
            )?,
            credential_provider_bin_dir: self.one(
                "image-credential-provider-bin-dir",
                registry.image_credential_provider_bin_dir,
                path,
            )?,
            credential_provider_timeout: self.one(
                "image-credential-provider-timeout",
                registry.image_credential_provider_timeout,
                duration,
            )?,
            platform: self.one("platform", registry.platform, with(parse_platform))?,
            max_manifest_bytes: self.one("max-manifest-bytes", registry.max_manifest_bytes, bytes)?,
            watch: self.one("watch-wasmplugins", watch.enabled, boolean)?,
            kubeconfig: self.one("kubeconfig", watch.kubeconfig, path)?,
            watch_namespace: self.one("watch-namespace", watch.namespace, text)?,
            watch_selector: self.one("watch-selector", watch.selector, text)?,
            watch_pull_secrets: self.one("watch-pull-secrets", watch.pull_secrets, boolean)?,
            max_cache_bytes: self.one("max-cache-bytes", lifecycle.max_cache_bytes, cache_limit)?,
            module_expiry: self.one("module-expiry", lifecycle.module_expiry, duration)?,
            resolve_lease: self.one("resolve-lease", lifecycle.resolve_lease, duration)?,
            purge_interval: self.one("purge-interval", lifecycle.purge_interval, duration)?,
            log_level: self.one("log-level", log.level, with(parse_log_level))?,
            log_format: self.one("log-format", log.format, with(|s| s.parse::<LogFormat>()))?,
        })
    }

    /// Converts one value, recording its line under `flag`; an error names the file key and the line.
    fn one<T>(
        &mut self,
        flag: &'static str,
        raw: Raw,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let line = self.line(raw.span().start);
        self.lines.insert(flag, line);
        convert(raw.get_ref())
            .map(Some)
            .map_err(|reason| self.error(Some(line), Some(setting_for(flag).file_key.to_string()), reason))
    }

    /// `[registry.mirrors]`: each registry's list, in order, registries sorted by name.
    fn mirrors(&mut self, table: BTreeMap<String, Spanned<Value>>) -> Result<Vec<(String, url::Url)>, ConfigError> {
        let mut mirrors = Vec::new();
        for (registry, urls) in table {
            let line = self.line(urls.span().start);
            let first = self.lines.entry("registry-mirror").or_insert(line);
            *first = (*first).min(line);
            let urls: Result<Vec<String>, String> = match urls.get_ref() {
                Value::Table(_) => Err(format!(
                    "expected a list of mirror URLs; quote a registry name with dots: \"{registry}.…\" = [...]"
                )),
                value => list(text)(value),
            };
            let key = Some(format!("registry.mirrors.{registry:?}"));
            for url in urls.map_err(|reason| self.error(Some(line), key.clone(), reason))? {
                let mirror = parse_mirror(&format!("{registry}={url}"))
                    .map_err(|reason| self.error(Some(line), key.clone(), reason))?;
                mirrors.push(mirror);
            }
        }
        Ok(mirrors)
    }

    fn error(&self, line: Option<usize>, key: Option<String>, reason: String) -> ConfigError {
        ConfigError::File {
            path: self.path.to_path_buf(),
            line,
            key,
            reason,
        }
    }

    /// The line (from 1) of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn line_text(&self, line: usize) -> &str {
        self.src.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }

    /// A syntax error, an unknown or duplicate key, or a table where a value was expected, as one line.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|span| self.line(span.start));
        let message = e.message().trim();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let prefix = line.map(|l| self.table_of(l, name)).unwrap_or_default();
            let dotted = |n: &str| {
                if prefix.is_empty() {
                    n.to_string()
                } else {
                    format!("{prefix}.{n}")
                }
            };
            let expected = rest.split_once("expected").map(|(_, e)| e).unwrap_or_default();
            let hint = closest(name, expected.split('`').skip(1).step_by(2))
                .map(|k| format!(" (did you mean {:?}?)", dotted(k)))
                .unwrap_or_default();
            return self.error(line, None, format!("unknown key {:?}{hint}", dotted(name)));
        }
        let key = match (message, e.span()) {
            ("duplicate key", Some(span)) => self.src.get(span).map(|k| k.trim().trim_matches('"').to_string()),
            _ => line
                .and_then(|l| self.line_text(l).split_once('='))
                .map(|(k, _)| k.trim().to_string()),
        }
        .filter(|k| !k.is_empty() && !k.starts_with('['));
        let reason = match message.find("expected struct ") {
            Some(i) => format!("{}expected a table", &message[..i]),
            None => message.to_string(),
        };
        self.error(line, key, reason)
    }

    /// The table that an unknown key `name` on `line` belongs to, as a dotted prefix (`registry`), found from the
    /// nearest `[table]` header above and any dotted key on the line itself.
    fn table_of(&self, line: usize, name: &str) -> String {
        let segments =
            |s: &str| -> Vec<String> { s.split('.').map(|p| p.trim().trim_matches('"').to_string()).collect() };
        let header = |text: &str| -> Option<String> {
            let inner = text.trim().strip_prefix('[')?.trim_start_matches('[');
            Some(inner.split(']').next().unwrap_or_default().to_string())
        };
        let text = self.line_text(line);
        let mut path = Vec::new();
        let on_line = match header(text) {
            Some(inner) => segments(&inner),
            None => {
                if let Some(h) = (1..line).rev().find_map(|l| header(self.line_text(l))) {
                    path = segments(&h);
                }
                let lhs = text.split(['=', '{']).next().unwrap_or_default();
                if text.contains('{') && !segments(lhs).iter().any(|s| s == name) {
                    // `registry = { insecur = ... }`: the key belongs to the inline table.
                    path.extend(segments(lhs));
                    Vec::new()
                } else {
                    segments(lhs)
                }
            }
        };
        path.extend(on_line.into_iter().take_while(|s| s != name));
        path.join(".")
    }
}

/// The candidate nearest to `name` when it is close enough to be a typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, c)| d > 0 && d <= 2.max(c.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn expected(what: &str, value: &Value) -> String {
    format!("expected {what}, found {} {value}", value.type_str())
}

fn text(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| expected("a string", value))
}

/// A string value, then `parse` on it.
fn with<T>(parse: impl Fn(&str) -> Result<T, String>) -> impl Fn(&Value) -> Result<T, String> {
    move |value| parse(&text(value)?)
}

fn path(value: &Value) -> Result<PathBuf, String> {
    let s = text(value)?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(s))
}

/// A list of items; a single item is a list of one.
fn list<T>(item: impl Fn(&Value) -> Result<T, String>) -> impl Fn(&Value) -> Result<Vec<T>, String> {
    move |value| match value {
        Value::Array(items) => items.iter().map(&item).collect(),
        one => Ok(vec![item(one)?]),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| expected("true or false", value))
}

fn count(value: &Value) -> Result<u32, String> {
    let n = value.as_integer().ok_or_else(|| expected("a whole number", value))?;
    u32::try_from(n).map_err(|_| format!("{n} is out of range"))
}

fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => parse_duration(s),
        other => Err(expected("a duration such as \"15s\" or \"500ms\"", other)),
    }
}

/// A size: a number of bytes, or a string with a K/M/G suffix.
fn bytes(value: &Value) -> Result<u64, String> {
    match value {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is not a byte size")),
        Value::String(s) => parse_bytes(s),
        other => Err(expected("a size such as 1048576 or \"256MiB\"", other)),
    }
}

/// A size, or `0` or `"off"` for no limit.
fn cache_limit(value: &Value) -> Result<Option<u64>, String> {
    match value {
        Value::String(s) => parse_max_cache_bytes(s),
        other => bytes(other).map(|n| Some(n).filter(|&n| n > 0)),
    }
}

/// The configuration as a file; see [`Config::to_toml`].
pub(super) fn to_toml(c: &Config) -> String {
    let mut mirrors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (registry, url) in &c.fetch.oci.mirrors {
        mirrors.entry(registry.clone()).or_default().push(url.to_string());
    }
    let watch = c.watch.as_ref();
    let out = OutFile {
        cache_dir: show(&c.cache_dir),
        socket: show(&c.socket),
        socket_group: c.socket_group.clone(),
        listen: c.listen.map(|a| a.to_string()),
        admin_listen: c.admin_listen.map_or("off".into(), |a| a.to_string()),
        registry_listen: c.registry_listen.map(|a| a.to_string()),
        registry_tls_cert: c.registry_tls.as_ref().map(|t| show(&t.cert)),
        registry_tls_key: c.registry_tls.as_ref().map(|t| show(&t.key)),
        file_root: c.fetch.file_roots.iter().map(|p| show(p)).collect(),
        fetch_timeout: show_duration(c.fetch.timeout),
        fetch_deadline: show_duration(c.fetch.deadline),
        fetch_attempts: c.fetch.backoff.attempts,
        retry_backoff: show_duration(c.fetch.backoff.initial),
        max_module_bytes: show_bytes(c.fetch.max_bytes),
        blocked_cidr: c.fetch.blocked_cidrs.iter().map(|n| n.to_string()).collect(),
        ca_file: c.fetch.ca_file.as_deref().map(show),
        insecure_skip_verify: c.fetch.insecure_hosts.clone(),
        serve_stale: c.serve_stale,
        shutdown_grace: show_duration(c.shutdown_grace),
        verify_policy: c.verify.as_ref().map(|v| show(&v.path)),
        registry: OutRegistry {
            insecure: c.fetch.oci.insecure_registries.clone(),
            forward_credentials_to: c.fetch.oci.forward_credentials.clone(),
            docker_config: c.docker_config.as_deref().map(show),
            image_credential_provider_config: c.credential_provider_config.as_deref().map(show),
            image_credential_provider_bin_dir: c.credential_provider_bin_dir.as_deref().map(show),
            image_credential_provider_timeout: show_duration(c.fetch.oci.provider_timeout),
            platform: c.fetch.oci.platform.clone(),
            max_manifest_bytes: show_bytes(c.fetch.oci.max_manifest_bytes),
            mirrors,
        },
        watch: OutWatch {
            enabled: watch.is_some(),
            pull_secrets: watch.is_some_and(|w| w.pull_secrets),
            kubeconfig: watch.and_then(|w| w.kubeconfig.as_deref()).map(show),
            namespace: watch.and_then(|w| w.scope.namespace.clone()),
            selector: watch.and_then(|w| w.scope.selector.clone()),
        },
        lifecycle: OutLifecycle {
            max_cache_bytes: c.lifecycle.max_cache_bytes.map_or("off".into(), show_bytes),
            module_expiry: show_duration(c.lifecycle.module_expiry),
            resolve_lease: show_duration(c.lifecycle.resolve_lease),
            purge_interval: show_duration(c.lifecycle.purge_interval),
        },
        log: OutLog {
            level: c.log.level.clone(),
            format: c.log.format.to_string(),
        },
    };
    toml::to_string(&out).expect("the configuration serializes as TOML")
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct OutFile {
    cache_dir: String,
    socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    admin_listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_tls_key: Option<String>,
    file_root: Vec<String>,
    fetch_timeout: String,
    fetch_deadline: String,
    fetch_attempts: u32,
    retry_backoff: String,
    max_module_bytes: String,
    blocked_cidr: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    insecure_skip_verify: Vec<String>,
    serve_stale: bool,
    shutdown_grace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_policy: Option<String>,
    registry: OutRegistry,
    watch: OutWatch,
    lifecycle: OutLifecycle,
    log: OutLog,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct OutRegistry {
    insecure: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    forward_credentials_to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_config: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_credential_provider_config: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_credential_provider_bin_dir: Option<String>,
    image_credential_provider_timeout: String,
    platform: String,
    max_manifest_bytes: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    mirrors: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct OutWatch {
    enabled: bool,
    pull_secrets: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubeconfig: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct OutLifecycle {
    max_cache_bytes: String,
    module_expiry: String,
    resolve_lease: String,
    purge_interval: String,
}

#[derive(Serialize)]
struct OutLog {
    level: String,
    format: String,
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// `24h`, `90s`, `500ms`: the largest whole unit, in a form `parse_duration` reads back.
fn show_duration(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    match (secs, nanos) {
        (0, 0) => "0s".into(),
        (s, 0) if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        (s, 0) if s.is_multiple_of(60) => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ if d.as_nanos().is_multiple_of(1_000_000) => format!("{}ms", d.as_millis()),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// `256MiB`, `4KiB`, or the plain number when it is no whole number of KiB.
fn show_bytes(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n.is_multiple_of(1 << 30) => format!("{}GiB", n >> 30),
        n if n.is_multiple_of(1 << 20) => format!("{}MiB", n >> 20),
        n if n.is_multiple_of(1 << 10) => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}
