//! Kubelet credential providers: registry credentials from exec plugins, as the kubelet gets them.
//!
//! - [`ProviderConfig`]: the kubelet's `CredentialProviderConfig` file (`kubelet.config.k8s.io/v1`, YAML or
//!   JSON), read and validated with errors that name the field (`providers[0].matchImages[1]: ...`).
//! - [`MatchImage`]: a `matchImages` pattern, matched as the kubelet's `URLsMatchStr` does.
//! - [`CredentialProviders`]: runs the plugins that match an image (`credentialprovider.kubelet.k8s.io/v1`
//!   request on stdin, response on stdout), with a timeout, a bound on the answer, single flight and the
//!   response's cache key type and duration.
//!
//! The image a plugin is asked about is what the kubelet asks about: the normalized repository without tag
//! or digest (`docker.io/library/nginx`, `registry.example.com:5000/team/filter`).
//!
//! Secrets: a plugin's answer holds credentials, and its stderr may hold anything. Neither is ever quoted in
//! an error or a log line: a bad answer is described by the field that is wrong, never by a value, and
//! stderr is read only to count its bytes.
//!
//! Long: the whole kubelet credential provider protocol (config file, exec with its limits, the answer cache by key type) in one place, as one protocol's rules.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::{glob_match, parse_authority, strip_scheme, Credentials, DockerConfig};
use crate::metrics::{Metrics, ProviderRun};

/// The `apiVersion` of the configuration file.
pub(crate) const CONFIG_API_VERSION: &str = "kubelet.config.k8s.io/v1";
/// The `kind` of the configuration file.
pub(crate) const CONFIG_KIND: &str = "CredentialProviderConfig";
/// The plugin protocol's `apiVersion`, the only one supported (v1alpha1 and v1beta1 are deprecated).
pub(crate) const PLUGIN_API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// Largest answer read from a plugin's stdout. Real answers are a few kilobytes.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Cache key of a `Global` answer.
const GLOBAL_KEY: &str = "";

/// A validated `CredentialProviderConfig`, with each plugin's executable found in the bin dir.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProviderConfig {
    pub providers: Vec<ProviderSpec>,
}

/// One `providers` item. `Debug` shows `env` names, not values.
#[derive(Clone)]
pub(crate) struct ProviderSpec {
    pub name: String,
    pub match_images: Vec<MatchImage>,
    pub default_cache_duration: Duration,
    pub api_version: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `<bin dir>/<name>`.
    pub program: PathBuf,
}

impl fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("match_images", &self.match_images)
            .field("default_cache_duration", &self.default_cache_duration)
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("env", &env)
            .finish()
    }
}

/// Why a configuration file was refused: `field` is the path of the bad field (`providers[0].name`), empty
/// for the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub(crate) struct ConfigFileError {
    pub field: String,
    pub reason: String,
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> ConfigFileError {
    ConfigFileError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ProviderConfig {
    /// Reads and validates the file at `path`, and checks that `bin_dir` is a directory holding an executable
    /// for every provider. The error names the field, not the file: the caller knows which file it read.
    pub(crate) fn load(path: &Path, bin_dir: &Path) -> Result<ProviderConfig, ConfigFileError> {
        let meta = std::fs::metadata(path).map_err(|e| field_err("", e.to_string()))?;
        if !meta.is_file() {
            return Err(field_err("", "not a regular file"));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(field_err(
                "",
                format!("{} bytes is over the {MAX_CONFIG_BYTES}-byte limit", meta.len()),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| field_err("", e.to_string()))?;
        let config = ProviderConfig::parse(&text, bin_dir)?;
        config.check_programs(bin_dir)?;
        Ok(config)
    }

    /// Parses and validates the text of a configuration file (YAML, or JSON), as the kubelet's strict decoder
    /// and `validateCredentialProviderConfig` would: unknown fields are refused, and `tokenAttributes`
    /// (service account tokens for plugins) is refused as not supported rather than ignored.
    pub(crate) fn parse(text: &str, bin_dir: &Path) -> Result<ProviderConfig, ConfigFileError> {
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| field_err("", format!("not valid JSON (line {}, column {})", e.line(), e.column())))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| field_err("", format!("not valid YAML: {e}")))?
        };
        let top = object(&value, "")?;
        known_fields(top, "", &["apiVersion", "kind", "providers"])?;
        match top.get("apiVersion").and_then(Value::as_str) {
            Some(CONFIG_API_VERSION) => {}
            Some(other) => {
                return Err(field_err(
                    "apiVersion",
                    format!("{:?} is not supported (only {CONFIG_API_VERSION})", shown(other)),
                ))
            }
            None => return Err(field_err("apiVersion", format!("required ({CONFIG_API_VERSION})"))),
        }
        match top.get("kind").and_then(Value::as_str) {
            Some(CONFIG_KIND) => {}
            Some(other) => return Err(field_err("kind", format!("{:?} is not {CONFIG_KIND}", shown(other)))),
            None => return Err(field_err("kind", format!("required ({CONFIG_KIND})"))),
        }
        let items = match top.get("providers") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                return Err(field_err("providers", "at least one provider is required"))
            }
            Some(_) => return Err(field_err("providers", "expected a list")),
        };
        let mut providers: Vec<ProviderSpec> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let spec = provider_spec(item, &format!("providers[{i}]"), bin_dir)?;
            if providers.iter().any(|p| p.name == spec.name) {
                return Err(field_err(
                    format!("providers[{i}].name"),
                    format!("{:?} is a duplicate", spec.name),
                ));
            }
            providers.push(spec);
        }
        Ok(ProviderConfig { providers })
    }

    /// Every provider's executable is a regular file with an execute bit, as the kubelet checks at start.
    fn check_programs(&self, bin_dir: &Path) -> Result<(), ConfigFileError> {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::metadata(bin_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(field_err(
                    "",
                    format!("bin dir {} is not a directory", bin_dir.display()),
                ))
            }
            Err(e) => return Err(field_err("", format!("bin dir {}: {e}", bin_dir.display()))),
        }
        for (i, p) in self.providers.iter().enumerate() {
            let field = format!("providers[{i}].name");
            match std::fs::metadata(&p.program) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
                Ok(_) => {
                    return Err(field_err(
                        field,
                        format!("{} is not an executable file", p.program.display()),
                    ))
                }
                Err(e) => return Err(field_err(field, format!("{}: {e}", p.program.display()))),
            }
        }
        Ok(())
    }
}

fn provider_spec(item: &Value, at: &str, bin_dir: &Path) -> Result<ProviderSpec, ConfigFileError> {
    let fields = object(item, at)?;
    let child = |name: &str| format!("{at}.{name}");
    if fields.contains_key("tokenAttributes") {
        return Err(field_err(
            child("tokenAttributes"),
            "not supported: wasmcache pulls for no pod, so it has no service account token to give a plugin",
        ));
    }
    known_fields(
        fields,
        at,
        &[
            "name",
            "matchImages",
            "defaultCacheDuration",
            "apiVersion",
            "args",
            "env",
        ],
    )?;
    let name = required_string(fields, &child("name"), "name")?;
    if name.is_empty() {
        return Err(field_err(child("name"), "must not be empty"));
    }
    if name.contains(['/', '\0']) || name.contains(' ') || name == "." || name == ".." {
        return Err(field_err(
            child("name"),
            format!(
                "{:?} must be a file name in the bin dir (no '/', no spaces, not . or ..)",
                shown(&name)
            ),
        ));
    }
    let api_version = required_string(fields, &child("apiVersion"), "apiVersion")?;
    if api_version != PLUGIN_API_VERSION {
        return Err(field_err(
            child("apiVersion"),
            format!("{:?} is not supported (only {PLUGIN_API_VERSION})", shown(&api_version)),
        ));
    }
    let patterns = match fields.get("matchImages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(field_err(child("matchImages"), "at least one pattern is required"))
        }
        Some(_) => return Err(field_err(child("matchImages"), "expected a list")),
    };
    let mut match_images = Vec::new();
    for (j, pattern) in patterns.iter().enumerate() {
        let at = format!("{at}.matchImages[{j}]");
        let Value::String(pattern) = pattern else {
            return Err(field_err(at, "expected a string"));
        };
        match_images.push(MatchImage::parse(pattern).map_err(|reason| field_err(at, reason))?);
    }
    let duration = required_string(fields, &child("defaultCacheDuration"), "defaultCacheDuration")?;
    let default_cache_duration =
        parse_go_duration(&duration).map_err(|reason| field_err(child("defaultCacheDuration"), reason))?;
    let args = match fields.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, a)| match a {
                Value::String(s) => Ok(s.clone()),
                _ => Err(field_err(format!("{at}.args[{j}]"), "expected a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(field_err(child("args"), "expected a list of strings")),
    };
    let env = match fields.get("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut env = Vec::new();
            for (j, var) in items.iter().enumerate() {
                let at = format!("{at}.env[{j}]");
                let var = object(var, &at)?;
                known_fields(var, &at, &["name", "value"])?;
                let name = required_string(var, &format!("{at}.name"), "name")?;
                if name.is_empty() || name.contains(['=', '\0']) {
                    return Err(field_err(
                        format!("{at}.name"),
                        "must be a variable name (not empty, no '=')",
                    ));
                }
                let value = required_string(var, &format!("{at}.value"), "value")?;
                env.push((name, value));
            }
            env
        }
        Some(_) => return Err(field_err(child("env"), "expected a list of {name, value}")),
    };
    Ok(ProviderSpec {
        program: bin_dir.join(&name),
        name,
        match_images,
        default_cache_duration,
        api_version,
        args,
        env,
    })
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ConfigFileError> {
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(field_err(
            if at.is_empty() { "top level" } else { at },
            "expected an object",
        )),
    }
}

fn known_fields(fields: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), ConfigFileError> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => {
            let path = if at.is_empty() {
                shown(unknown)
            } else {
                format!("{at}.{}", shown(unknown))
            };
            Err(field_err(path, format!("unknown field (known: {})", known.join(", "))))
        }
    }
}

fn required_string(fields: &Map<String, Value>, at: &str, name: &str) -> Result<String, ConfigFileError> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(field_err(at, "required")),
        Some(_) => Err(field_err(at, "expected a string")),
    }
}

/// At most 100 characters of a value shown in a message.
fn shown(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Parses a Go `time.Duration` string (`"12h"`, `"1h30m"`, `"0"`, `"1.5s"`, `"300ms"`), as the kubelet's
/// `metav1.Duration` does. Negative durations are refused.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{:?} is not a duration such as \"5m\" or \"1h30m\"", shown(s));
    let mut rest = s.trim();
    if rest.starts_with('-') && rest != "-0" {
        return Err(format!("{:?} is negative", shown(s)));
    }
    rest = rest.trim_start_matches(['+', '-']);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_end);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// A `matchImages` pattern, matched against an image as the kubelet's `URLsMatchStr` does:
/// - an optional `https://` or `http://` scheme is ignored;
/// - the host has as many dot-separated labels as the image's, and each label matches its glob, where `*`
///   matches any run of characters within one label (`*.registry.io` matches `a.registry.io`, not
///   `registry.io` nor `a.b.registry.io`);
/// - the port is equal: a pattern without one matches only an image without one;
/// - the pattern's path is a prefix of the image's path, as a string (the kubelet's `strings.HasPrefix`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MatchImage {
    raw: String,
    labels: Vec<String>,
    port: Option<u16>,
    path: String,
}

impl fmt::Debug for MatchImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl MatchImage {
    pub(crate) fn parse(pattern: &str) -> Result<MatchImage, String> {
        let (labels, port, path) = split_image_url(pattern, true).ok_or_else(|| {
            format!(
                "{:?} is not a host glob with optional port and path (e.g. *.registry.io, registry.io:5000/team)",
                shown(pattern)
            )
        })?;
        Ok(MatchImage {
            raw: pattern.to_owned(),
            labels,
            port,
            path,
        })
    }

    /// Whether `image` (`host[:port]/repository`) matches.
    pub(crate) fn matches(&self, image: &str) -> bool {
        let Some((labels, port, path)) = split_image_url(image, false) else {
            return false;
        };
        self.port == port
            && self.labels.len() == labels.len()
            && path.starts_with(&self.path)
            && self
                .labels
                .iter()
                .zip(&labels)
                .all(|(glob, label)| glob_match(glob, label))
    }
}

/// `[scheme://]host[:port][/path]` into lowercase host labels, port and path (with its leading `/`; query
/// and fragment dropped).
fn split_image_url(s: &str, glob: bool) -> Option<(Vec<String>, Option<u16>, String)> {
    let rest = strip_scheme(s.trim());
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    let (host, port) = parse_authority(authority, glob)?;
    Some((host.split('.').map(str::to_owned).collect(), port, path.to_owned()))
}

/// How a plugin failed. Messages name the provider and the cause, never the plugin's output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("credential provider {provider:?}: could not run {program}: {cause}")]
    Spawn {
        provider: String,
        program: String,
        cause: String,
    },
    #[error("credential provider {provider:?}: no answer within {}; killed", humantime::format_duration(*.timeout))]
    Timeout { provider: String, timeout: Duration },
    #[error("credential provider {provider:?}: {status} (its stderr, {stderr_bytes} bytes, is not shown: it may hold credentials)")]
    Failed {
        provider: String,
        status: String,
        stderr_bytes: u64,
    },
    #[error("credential provider {provider:?}: answer larger than {limit} bytes; killed")]
    TooLarge { provider: String, limit: usize },
    #[error("credential provider {provider:?}: bad CredentialProviderResponse: {reason}")]
    BadResponse { provider: String, reason: String },
}

impl ProviderError {
    pub(crate) fn provider(&self) -> &str {
        match self {
            ProviderError::Spawn { provider, .. }
            | ProviderError::Timeout { provider, .. }
            | ProviderError::Failed { provider, .. }
            | ProviderError::TooLarge { provider, .. }
            | ProviderError::BadResponse { provider, .. } => provider,
        }
    }

    fn run(&self) -> ProviderRun {
        match self {
            ProviderError::Spawn { .. } => ProviderRun::SpawnFailure,
            ProviderError::Timeout { .. } => ProviderRun::Timeout,
            ProviderError::Failed { .. } => ProviderRun::Failed,
            ProviderError::TooLarge { .. } => ProviderRun::TooLarge,
            ProviderError::BadResponse { .. } => ProviderRun::BadResponse,
        }
    }
}

/// `cacheKeyType` of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheKeyType {
    Image,
    Registry,
    Global,
}

/// A plugin's answer, checked. `Debug` shows no credentials.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub cache_key_type: CacheKeyType,
    /// `None`: the response gave none, so the provider's `defaultCacheDuration` applies.
    pub cache_duration: Option<Duration>,
    pub auth: DockerConfig,
}

/// Checks a plugin's stdout against the protocol. Errors name fields, never values: the answer holds
/// credentials.
pub(crate) fn parse_response(bytes: &[u8], api_version: &str) -> Result<Answer, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() && bytes.iter().all(u8::is_ascii_whitespace) {
            "empty answer".to_string()
        } else {
            format!("not valid JSON (line {}, column {})", e.line(), e.column())
        }
    })?;
    let Value::Object(top) = value else {
        return Err("not a JSON object".into());
    };
    if let Some(unknown) = top
        .keys()
        .find(|k| !["apiVersion", "kind", "cacheKeyType", "cacheDuration", "auth"].contains(&k.as_str()))
    {
        return Err(format!("unknown field {:?}", shown(unknown)));
    }
    if top.get("kind").and_then(Value::as_str) != Some("CredentialProviderResponse") {
        return Err("kind is not CredentialProviderResponse".into());
    }
    if top.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        return Err(format!(
            "apiVersion is not {api_version:?}, the provider's configured apiVersion"
        ));
    }
    let cache_key_type = match top.get("cacheKeyType").and_then(Value::as_str) {
        Some("Image") => CacheKeyType::Image,
        Some("Registry") => CacheKeyType::Registry,
        Some("Global") => CacheKeyType::Global,
        _ => return Err("cacheKeyType is not Image, Registry or Global".into()),
    };
    let cache_duration = match top.get("cacheDuration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_go_duration(s).map_err(|_| "cacheDuration is not a duration")?),
        Some(_) => return Err("cacheDuration is not a string".into()),
    };
    let mut entries = Vec::new();
    match top.get("auth") {
        None | Some(Value::Null) => {}
        Some(Value::Object(auth)) => {
            for (key, entry) in auth {
                let Value::Object(fields) = entry else {
                    return Err(format!("auth[{:?}] is not an object", shown(key)));
                };
                if let Some(unknown) = fields.keys().find(|k| !["username", "password"].contains(&k.as_str())) {
                    return Err(format!("auth[{:?}]: unknown field {:?}", shown(key), shown(unknown)));
                }
                let field = |name: &str| match fields.get(name) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(format!("auth[{:?}].{name} is not a string", shown(key))),
                };
                entries.push((key.clone(), Credentials::new(field("username")?, field("password")?)));
            }
        }
        Some(_) => return Err("auth is not an object".into()),
    }
    Ok(Answer {
        cache_key_type,
        cache_duration,
        auth: DockerConfig::from_entries(entries),
    })
}

/// The request a plugin reads on stdin.
fn request_json(api_version: &str, image: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": api_version,
        "kind": "CredentialProviderRequest",
        "image": image,
    }))
    .expect("a JSON object serializes")
}

/// What the matching providers answered for one image.
#[derive(Debug, Default)]
pub(crate) struct Provided {
    /// Their credentials, the first matching provider's entries first (the kubelet lets the provider earlier
    /// in the file win on overlapping keys).
    pub keyring: DockerConfig,
    /// The providers that failed.
    pub failures: Vec<ProviderError>,
}

type Flight = Shared<BoxFuture<'static, Result<DockerConfig, ProviderError>>>;

#[derive(Default)]
struct State {
    /// Cached answers by key: `Image`: the image; `Registry`: its host; `Global`: one key.
    cache: HashMap<String, (DockerConfig, Instant)>,
    /// Plugin runs in progress, by image.
    flights: HashMap<String, Flight>,
}

struct Provider {
    spec: ProviderSpec,
    state: Arc<Mutex<State>>,
}

/// The configured providers, each with its cache of answers.
pub(crate) struct CredentialProviders {
    providers: Vec<Provider>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for CredentialProviders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.spec.name.as_str()).collect();
        f.debug_struct("CredentialProviders")
            .field("providers", &names)
            .finish()
    }
}

impl CredentialProviders {
    pub(crate) fn new(config: &ProviderConfig, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        for spec in &config.providers {
            metrics.provider_configured(&spec.name);
        }
        CredentialProviders {
            providers: config
                .providers
                .iter()
                .map(|spec| Provider {
                    spec: spec.clone(),
                    state: Default::default(),
                })
                .collect(),
            timeout,
            metrics,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Asks every provider whose `matchImages` match `image` (`registry/repository`), in file order: from its
    /// cache when an answer for the image, its registry or every image is still fresh (looked up in that
    /// order, as the kubelet does), else by running the plugin, once for all concurrent callers.
    pub(crate) async fn provide(&self, image: &str) -> Provided {
        let mut provided = Provided::default();
        for provider in self
            .providers
            .iter()
            .filter(|p| p.spec.match_images.iter().any(|m| m.matches(image)))
        {
            match self.ask(provider, image).await {
                Ok(keyring) => provided.keyring.extend(keyring),
                Err(e) => provided.failures.push(e),
            }
        }
        provided
    }

    async fn ask(&self, provider: &Provider, image: &str) -> Result<DockerConfig, ProviderError> {
        let name = &provider.spec.name;
        let flight = {
            let mut state = provider.state.lock().unwrap();
            let now = Instant::now();
            state.cache.retain(|_, (_, expires)| *expires > now);
            let registry = image.split('/').next().unwrap_or_default();
            if let Some((keyring, _)) = [image, registry, GLOBAL_KEY]
                .iter()
                .find_map(|key| state.cache.get(*key))
            {
                self.metrics.provider_cache(name, true);
                return Ok(keyring.clone());
            }
            self.metrics.provider_cache(name, false);
            match state.flights.get(image) {
                Some(flight) => flight.clone(),
                None => {
                    let flight = run_and_cache(
                        provider.spec.clone(),
                        provider.state.clone(),
                        image.to_owned(),
                        self.timeout,
                        self.metrics.clone(),
                    )
                    .boxed()
                    .shared();
                    state.flights.insert(image.to_owned(), flight.clone());
                    flight
                }
            }
        };
        flight.await
    }
}

/// One plugin run for `image`, its answer cached as it says, and its flight removed: under one lock, so that
/// a caller finds either the flight or the cached answer.
async fn run_and_cache(
    spec: ProviderSpec,
    state: Arc<Mutex<State>>,
    image: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
) -> Result<DockerConfig, ProviderError> {
    let started = Instant::now();
    let result = exec(&spec, &image, timeout).await;
    metrics.provider_ran(
        &spec.name,
        result
            .as_ref()
            .map_or_else(ProviderError::run, |_| ProviderRun::Success),
    );
    let mut state = state.lock().unwrap();
    state.flights.remove(&image);
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => return Err(e),
    };
    let duration = answer.cache_duration.unwrap_or(spec.default_cache_duration);
    let key = match answer.cache_key_type {
        CacheKeyType::Image => image.clone(),
        CacheKeyType::Registry => image.split('/').next().unwrap_or_default().to_owned(),
        CacheKeyType::Global => GLOBAL_KEY.to_owned(),
    };
    tracing::debug!(
        provider = %spec.name,
        image,
        cache_key_type = ?answer.cache_key_type,
        cache_seconds = duration.as_secs_f64(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "credential provider answered"
    );
    if !duration.is_zero() {
        if let Some(expires) = Instant::now().checked_add(duration) {
            state.cache.insert(key, (answer.auth.clone(), expires));
        }
    }
    Ok(answer.auth)
}

/// Runs the plugin: `<bin dir>/<name> args...` with the daemon's environment plus `env`, the request on
/// stdin, the answer from stdout (at most [`MAX_RESPONSE_BYTES`]), stderr counted and dropped. Past
/// `timeout`, or when the answer is too large, the plugin's whole process group is killed.
async fn exec(spec: &ProviderSpec, image: &str, timeout: Duration) -> Result<Answer, ProviderError> {
    let provider = || spec.name.clone();
    let mut child = tokio::process::Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what a plugin script started, too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProviderError::Spawn {
            provider: provider(),
            program: spec.program.display().to_string(),
            cause: e.to_string(),
        })?;
    let group = child.id();
    let request = request_json(&spec.api_version, image);
    let (mut stdin, stdout, mut stderr) = (
        child.stdin.take().expect("stdin is piped"),
        child.stdout.take().expect("stdout is piped"),
        child.stderr.take().expect("stderr is piped"),
    );
    let converse = async {
        let write = async {
            // A plugin may exit without reading its stdin; its answer decides.
            let _ = stdin.write_all(&request).await;
            drop(stdin);
            Ok::<_, ProviderError>(())
        };
        let read = async {
            let mut out = Vec::new();
            let mut limited = stdout.take(MAX_RESPONSE_BYTES as u64 + 1);
            // A read error ends the answer early; the parse then says what is wrong with it.
            let _ = limited.read_to_end(&mut out).await;
            if out.len() > MAX_RESPONSE_BYTES {
                return Err(ProviderError::TooLarge {
                    provider: provider(),
                    limit: MAX_RESPONSE_BYTES,
                });
            }
            Ok(out)
        };
        let count =
            async { Ok::<_, ProviderError>(tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await.unwrap_or(0)) };
        let ((), out, stderr_bytes) = tokio::try_join!(write, read, count)?;
        let status = child.wait().await.map_err(|e| ProviderError::Failed {
            provider: provider(),
            status: format!("could not be waited for: {e}"),
            stderr_bytes,
        })?;
        Ok((status, out, stderr_bytes))
    };
    let outcome = tokio::time::timeout(timeout, converse).await;
    let (status, out, stderr_bytes) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            kill_group(group);
            return Err(e);
        }
        Err(_) => {
            kill_group(group);
            return Err(ProviderError::Timeout {
                provider: provider(),
                timeout,
            });
        }
    };
    if !status.success() {
        return Err(ProviderError::Failed {
            provider: provider(),
            status: status.to_string(),
            stderr_bytes,
        });
    }
    parse_response(&out, &spec.api_version).map_err(|reason| ProviderError::BadResponse {
        provider: provider(),
        reason,
    })
}

/// Kills the process group led by the plugin (`pid`); the plugin itself is also killed and reaped when its
/// `Child` drops.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|&p| p > 0) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names the process group that the
        // plugin leads (it was spawned with process_group(0)), and at worst the group is already gone.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests;
