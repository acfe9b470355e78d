//! Registry credentials from pull secrets and docker config files, and the kubelet's rules for which
//! credential goes with which image.
//!
//! One parser reads three inputs:
//! - a Kubernetes `.dockerconfigjson` (`{"auths": {KEY: ENTRY}}`)
//! - a legacy `.dockercfg` (the same entries at the top level)
//! - the daemon's default `~/.docker/config.json` (the `auths` shape plus CLI settings)
//!
//! `credsStore` and `credHelpers` are ignored: the daemon never runs a program that a file names.
//!
//! Matching follows Kubernetes `pkg/credentialprovider` (`BasicDockerKeyring.Add`, `URLsMatch`). A key is
//! a host glob, matched label by label, with an optional port that must be equal and an optional path
//! that must be a prefix of the repository. Docker Hub has several names, and any of them matches the
//! others.
//!
//! Secrets stay secret by type. [`Credentials`] and [`DockerConfig`] print `<redacted>` or only their
//! keys. A [`SecretError`] names the JSON path of the bad field and never its value.
//!
//! Long: one credential model (pull secrets, docker config files and the kubelet's rules for which credential goes with which image), read together.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::fmt;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

/// Largest pull secret or config file accepted. Real ones are a few kilobytes, and Kubernetes caps a
/// whole Secret at 1 MiB.
pub(crate) const MAX_CONFIG_LEN: usize = 1024 * 1024;

/// The names Docker Hub goes by in image references and in config keys. `index.docker.io` is the
/// key `docker login` writes, and `registry-1.docker.io` is where the registry API answers.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Longest part of a key that an error message or `Debug` output repeats. A key is not secret, but the
/// input can be up to 1 MiB.
const MAX_KEY_SHOWN: usize = 200;

/// A username and password for one registry. `Debug` and `Display` print `<redacted>`, so a log line or
/// an error can't leak them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    pub(crate) fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `sha256(salt || u64be(len(username)) || username || u64be(len(password)) || password)`.
    ///
    /// The cache uses this to remember that a credential was proven without storing the credential. The
    /// length prefixes make sure that `("ab", "c")` and `("a", "bc")` give different fingerprints. With a
    /// different salt, the fingerprints are unrelated, so a leaked index can't be checked against a
    /// guessed password from another node.
    pub(crate) fn fingerprint(&self, salt: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(salt);
        for part in [&self.username, &self.password] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().into()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A parsed docker config: its usable entries, in file order.
///
/// Some entries are dropped without an error, the way the kubelet or the docker CLI would drop them:
/// - keys that are not a registry
/// - keys holding user info (`https://user:pass@host`)
/// - entries with an `identitytoken` (an OAuth refresh token, which we don't support)
/// - entries with no username, password or `auth`, such as a bare `registrytoken`
///
/// `Debug` prints only the keys.
#[derive(Clone, Default)]
pub struct DockerConfig {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    /// The key as written in the file, for `Debug`.
    key: String,
    pattern: KeyPattern,
    credentials: Credentials,
}

/// Why a pull secret or config file was refused. The messages name the JSON path of the bad field, and
/// never a password, an `auth` value or anything decoded from one. They carry no prefix: the caller
/// says what was being read (`pull secret: …`, or the path of the `--docker-config` file).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("{size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    /// Bad syntax, truncated input, or nesting deeper than serde_json's limit of 128.
    #[error("not valid JSON (error at line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    /// A value of the wrong JSON type, such as `"auths": []` or `"auth": 5`.
    #[error("{path}: expected {expected}")]
    WrongShape { path: String, expected: &'static str },
    /// `auth` is not base64, or it decodes to something that is not UTF-8 `user:password`, and the entry
    /// has no `username` or `password` to fall back on.
    #[error("{path}: not base64 of user:password")]
    BadAuth { path: String },
}

impl DockerConfig {
    /// Parses the bytes of a `.dockerconfigjson`, a `.dockercfg` or a `~/.docker/config.json`. The input
    /// can be at most [`MAX_CONFIG_LEN`] bytes.
    ///
    /// If the input has a top-level `auths` object, its entries are read and every other top-level key
    /// is ignored. This covers `credsStore`, `credHelpers` and other CLI settings. Otherwise the input is
    /// a `.dockercfg`, and its entries are the top-level keys that look like a registry: keys containing
    /// `.`, `:` or `/`, and `localhost`. Bare words such as `credsStore` are settings, not registries.
    ///
    /// In each entry, `auth` (base64 of `user:password`, padding optional) is used if it decodes.
    /// Otherwise `username` and `password` are used. `email` and `registrytoken` are ignored. Fields that
    /// are `null` count as absent, as they do in Go.
    pub fn parse(bytes: &[u8]) -> Result<DockerConfig, SecretError> {
        if bytes.len() > MAX_CONFIG_LEN {
            return Err(SecretError::TooLarge {
                size: bytes.len(),
                limit: MAX_CONFIG_LEN,
            });
        }
        // Some editors on Windows save files with a byte-order mark, and serde_json rejects it.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        if let Err(err) = std::str::from_utf8(bytes) {
            return Err(SecretError::NotUtf8 {
                offset: err.valid_up_to(),
            });
        }
        // A syntax error's message never quotes the input, but we keep only its position anyway.
        let root: Json = serde_json::from_slice(bytes).map_err(|err| SecretError::NotJson {
            line: err.line(),
            column: err.column(),
        })?;
        let Json::Object(top) = root else {
            return Err(wrong_shape("top level".to_owned(), "an object"));
        };

        let mut entries = Vec::new();
        // encoding/json lets the last of duplicate keys win, and so do we.
        match top.iter().rev().find(|(key, _)| key == "auths") {
            Some((_, Json::Object(auths))) => {
                for (key, value) in auths {
                    entries.extend(parse_entry(Section::Auths, key, value)?);
                }
            }
            Some((_, Json::Null)) => {}
            Some(_) => return Err(wrong_shape("auths".to_owned(), "an object")),
            None => {
                for (key, value) in &top {
                    if looks_like_registry(key) {
                        entries.extend(parse_entry(Section::Legacy, key, value)?);
                    }
                }
            }
        }
        Ok(DockerConfig { entries })
    }

    /// A config from `(key, credentials)` pairs in order, as a kubelet credential provider's `auth` map gives
    /// them. Keys that are not a registry are dropped, as [`DockerConfig::parse`] drops them.
    pub(crate) fn from_entries(entries: impl IntoIterator<Item = (String, Credentials)>) -> DockerConfig {
        let entries = entries
            .into_iter()
            .filter_map(|(key, credentials)| {
                let pattern = KeyPattern::parse(&key)?;
                Some(Entry {
                    key,
                    pattern,
                    credentials,
                })
            })
            .collect();
        DockerConfig { entries }
    }

    /// This config's entries, then `other`'s: on equally specific keys this one's come first.
    pub(crate) fn extend(&mut self, other: DockerConfig) {
        self.entries.extend(other.entries);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every credential whose key matches the image at `registry`/`repository`, most specific key first,
    /// so that the caller can try them in order.
    ///
    /// `registry` is a host, or `host:port`, as it appears in the image reference. Docker Hub can be
    /// `docker.io`, `index.docker.io` or `registry-1.docker.io`. `repository` is the path, such as
    /// `library/nginx`.
    ///
    /// A key matches when all of these hold:
    /// - it has as many dot-separated labels as the image's host
    /// - each of its labels matches the image's label, ignoring case, where `*` stands for any run of
    ///   characters within the label
    /// - its port equals the image's port (no port matches only no port)
    /// - its path, if any, is a prefix of the repository in whole segments
    ///
    /// Longer keys (host, port and path) come first. When lengths tie, a key without wildcards comes
    /// before one with them, and then file order decides. Credentials that several keys share are
    /// returned once, at their first place.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<&Credentials> {
        let Some((host, port)) = parse_authority(registry, false) else {
            return Vec::new();
        };
        // Docker Hub's names are interchangeable: a key for one of them matches an image on any other.
        let candidates: Vec<Vec<&str>> = if port.is_none() && DOCKER_HUB_HOSTS.contains(&host.as_str()) {
            DOCKER_HUB_HOSTS.iter().map(|h| h.split('.').collect()).collect()
        } else {
            vec![host.split('.').collect()]
        };
        let repository: Vec<&str> = repository.split('/').filter(|s| !s.is_empty()).collect();

        let mut hits: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.pattern.matches(&candidates, port, &repository))
            .collect();
        // sort_by_key is stable, so file order breaks the remaining ties.
        hits.sort_by_key(|e| (Reverse(e.pattern.specificity), e.pattern.wildcard));
        let mut seen = HashSet::new();
        hits.into_iter()
            .map(|e| &e.credentials)
            .filter(|c| seen.insert(*c))
            .collect()
    }
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.entries.iter().map(|e| shown_key(&e.key)).collect();
        f.debug_struct("DockerConfig").field("keys", &keys).finish()
    }
}

/// What a key says an entry is for, normalized for matching.
#[derive(Clone)]
struct KeyPattern {
    /// Lowercase labels, each possibly a glob.
    labels: Vec<String>,
    port: Option<u16>,
    /// Repository path segments that the repository must start with.
    path: Vec<String>,
    /// Length of `host[:port][/path]`, with Docker Hub's names counted as `docker.io` so that they tie.
    specificity: usize,
    wildcard: bool,
}

impl KeyPattern {
    /// Parses a key as `BasicDockerKeyring.Add` does. The scheme is optional. The path loses a leading
    /// `/v1/` or `/v2/`, which names the registry API and not a repository. Keys with user info, or with
    /// characters that can't be in a host, give `None`.
    fn parse(key: &str) -> Option<KeyPattern> {
        let rest = strip_scheme(key);
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (host, port) = parse_authority(authority, true)?;

        let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
        let path = match path.get(..4) {
            Some("/v1/" | "/v2/") => &path[3..],
            _ => path,
        };
        let path: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();

        let hub = port.is_none() && DOCKER_HUB_HOSTS.contains(&host.as_str());
        let host_len = if hub { "docker.io".len() } else { host.len() };
        let port_len = port.map_or(0, |p| 1 + p.to_string().len());
        let specificity = host_len + port_len + path.iter().map(|s| 1 + s.len()).sum::<usize>();

        Some(KeyPattern {
            wildcard: host.contains('*'),
            labels: host.split('.').map(str::to_owned).collect(),
            port,
            path,
            specificity,
        })
    }

    fn matches(&self, candidates: &[Vec<&str>], port: Option<u16>, repository: &[&str]) -> bool {
        self.port == port
            && self.path.len() <= repository.len()
            && self.path.iter().zip(repository).all(|(a, b)| a == b)
            && candidates.iter().any(|labels| {
                labels.len() == self.labels.len()
                    && self
                        .labels
                        .iter()
                        .zip(labels)
                        .all(|(glob, label)| glob_match(glob, label))
            })
    }
}

/// Where an entry sits, for the JSON path in error messages.
#[derive(Clone, Copy)]
enum Section {
    /// Under `auths`: `.dockerconfigjson` and `config.json`.
    Auths,
    /// At the top level: `.dockercfg`.
    Legacy,
}

fn entry_path(section: Section, key: &str) -> String {
    match section {
        Section::Auths => format!("auths.{:?}", shown_key(key)),
        Section::Legacy => format!("{:?}", shown_key(key)),
    }
}

/// Reads one entry. `Ok(None)` means that the entry is dropped without an error (see [`DockerConfig`]).
fn parse_entry(section: Section, key: &str, value: &Json) -> Result<Option<Entry>, SecretError> {
    // The key is checked first, so that a key holding user info never reaches an error message.
    let Some(pattern) = KeyPattern::parse(key) else {
        tracing::debug!(key = %shown_key(key), "ignoring docker config entry: key is not a registry");
        return Ok(None);
    };
    let path = entry_path(section, key);
    let fields = match value {
        Json::Object(fields) => fields,
        Json::Null => return Ok(None),
        _ => return Err(wrong_shape(path, "an object")),
    };
    let field = |name: &str| string_field(fields, &path, name);
    let auth = field("auth")?;
    let username = field("username")?;
    let password = field("password")?;
    let identity_token = field("identitytoken")?;

    if identity_token.is_some() {
        tracing::debug!(key = %shown_key(key), "ignoring docker config entry: identitytoken is not supported");
        return Ok(None);
    }
    let decoded = auth.map(decode_auth);
    let credentials = match decoded {
        Some(Some(credentials)) => credentials,
        Some(None) if username.is_none() && password.is_none() => {
            return Err(SecretError::BadAuth {
                path: format!("{path}.auth"),
            })
        }
        _ if username.is_some() || password.is_some() => {
            Credentials::new(username.unwrap_or_default(), password.unwrap_or_default())
        }
        _ => return Ok(None),
    };
    Ok(Some(Entry {
        key: key.to_owned(),
        pattern,
        credentials,
    }))
}

/// The string value of `name`. Absent, `null` and empty all give `None`, as an empty field does in
/// docker. Any other type is an error.
fn string_field<'a>(fields: &'a [(String, Json)], path: &str, name: &str) -> Result<Option<&'a str>, SecretError> {
    match fields.iter().rev().find(|(k, _)| k == name) {
        None | Some((_, Json::Null)) => Ok(None),
        Some((_, Json::String(s))) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(_) => Err(wrong_shape(format!("{path}.{name}"), "a string")),
    }
}

/// Decodes `auth`. The kubelet accepts it with or without padding, and so do we. The password is
/// everything after the first colon.
fn decode_auth(auth: &str) -> Option<Credentials> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = String::from_utf8(ENGINE.decode(auth.trim()).ok()?).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials::new(username, password))
}

fn wrong_shape(path: String, expected: &'static str) -> SecretError {
    SecretError::WrongShape { path, expected }
}

/// Whether a top-level key of a `.dockercfg` names a registry, and is not a `config.json` setting such
/// as `credsStore`. An image's registry always has a dot or a port, or is `localhost`, and a setting
/// never does.
fn looks_like_registry(key: &str) -> bool {
    key.contains(['.', ':', '/']) || key.eq_ignore_ascii_case("localhost")
}

pub(crate) fn strip_scheme(key: &str) -> &str {
    for scheme in ["https://", "http://"] {
        // `get` and not indexing: the key may have a multi-byte character where the scheme would end.
        if key.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme)) {
            return &key[scheme.len()..];
        }
    }
    key
}

/// Splits `host[:port]` (or `[v6]:port`) into a lowercase host and a port. With `glob`, the host may
/// contain `*`. Returns `None` when the host is empty, has an empty label, holds user info or
/// holds a character that can't be in a host, or when the port is not a number.
pub(crate) fn parse_authority(authority: &str, glob: bool) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let ok = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.');
        if host.is_empty() || !host.chars().all(ok) {
            return None;
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (glob && c == '*');
        if host.split('.').any(str::is_empty) || !host.chars().all(ok) {
            return None;
        }
        (host, port)
    };
    // Go's url.Parse accepts an empty port after the colon, and so does the kubelet.
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Glob match of one host label, where `*` is any run of characters. Go's `filepath.Match`, which the
/// kubelet uses, also knows `?` and `[...]`, but `url.Parse` has already cut a key at `?`, and `[` only
/// appears in IPv6 literals. This runs in O(pattern × label), with no backtracking blow-up. Both sides
/// are ASCII, as `parse_authority` checked.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// A key as errors and `Debug` show it: any user info replaced by `<redacted>`, and cut to
/// [`MAX_KEY_SHOWN`] characters.
fn shown_key(key: &str) -> String {
    let rest = strip_scheme(key);
    let scheme = &key[..key.len() - rest.len()];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let redacted = match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>{}", &rest[at..]),
        None => key.to_owned(),
    };
    match redacted.char_indices().nth(MAX_KEY_SHOWN) {
        Some((cut, _)) => format!("{}…", &redacted[..cut]),
        None => redacted,
    }
}

/// A JSON value that keeps object members in file order, which `serde_json::Value` doesn't without
/// the `preserve_order` feature. Deserializing into it never fails on a type, so the only errors
/// serde_json can raise are syntax errors, which don't quote the input. Array contents are dropped,
/// because no field we read is an array. There is deliberately no `Debug`: strings hold secrets.
enum Json {
    Null,
    Scalar,
    String(String),
    Array,
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Scalar)
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // Elements are parsed as `Json` (and dropped), not skipped as `IgnoredAny`: serde_json skips
        // without its depth limit, and a pull secret nested 10,000 deep should be refused, not accepted.
        while seq.next_element::<Json>()?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Json>()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests;
