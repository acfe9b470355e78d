//! The verification policy file: which modules must be signed, and by whom.
//!
//! ```toml
//! [[rule]]
//! name = "team-a"                      # required, unique
//! # registry/repository globs: `*` stays within one path segment, a `**` segment spans any number of segments
//! # (none included); the registry is matched case-insensitively; Docker Hub images are docker.io/library/x
//! images = ["ghcr.io/team-a/**", "registry.local:5000/plugins/*"]
//! # http(s) URL globs, same rules, on the credential-free URL (scheme and host case-insensitive)
//! urls = ["https://example.com/filters/*.wasm"]
//! mode = "enforce"                     # enforce (the default) | warn | off
//! # PEM public keys: ECDSA P-256/P-384, Ed25519, RSA (PKCS#1 v1.5 or PSS, SHA-256)
//! keys = ["/etc/wasmcache/keys/team-a.pub"]
//! # a sigstore trusted_root.json: needed for keyless identities, and to check Rekor data of key signatures
//! trusted-root = "/etc/wasmcache/trusted_root.json"
//! bundle-url = "{url}.sigstore.json"   # http(s) only: where a module's sigstore bundle is; {url} = the module URL
//! # DSSE attestations whose in-toto predicateType counts as a signature; the default is cosign's signature
//! # predicate. Add "https://slsa.dev/provenance/v1" to accept build provenance (npm, GitHub attestations).
//! predicate-types = ["https://sigstore.dev/cosign/sign/v1"]
//! [[rule.identity]]                    # keyless: any listed identity may sign
//! issuer = "https://token.actions.githubusercontent.com"   # exact match of the certificate's OIDC issuer
//! # a regex on the certificate's SAN (URI or email), always anchored at both ends
//! subject = "^https://github.com/team-a/.+/.github/workflows/release.yml@refs/tags/v.*$"
//! ```
//!
//! A rule needs `images` or `urls`, and unless `mode = "off"`, `keys` or an `identity`; an identity needs a
//! `trusted-root`. Relative paths are relative to the policy file's directory. Unknown keys are errors, and
//! every error names the file, the line, the rule (its number from 1, and name) and the field.
//!
//! Long: the policy file's whole grammar and validation, each error naming its rule and key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use sha2::Digest as _;
use toml::Spanned;

use super::glob::Glob;
use super::keys::{self, PublicKey};

/// The in-toto predicate type of a cosign signature (`cosign sign` with the sigstore bundle format).
pub(crate) const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// What a rule does with its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A module that fails verification is not served.
    Enforce,
    /// A failure is logged and counted, and the module is served.
    Warn,
    /// The module is not judged.
    Off,
}

/// What a module is, for choosing its rule.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Image {
        registry: &'a str,
        repository: &'a str,
    },
    /// A credential-free http(s) URL.
    Url(&'a str),
}

/// A rule by position (from 1) and name, for errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub index: usize,
    pub name: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "#{} {name:?}", self.index),
            None => write!(f, "#{}", self.index),
        }
    }
}

/// Why a policy file was not loaded. Every variant names the policy file; `line` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read signature policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signature policy {}{}: {message}", path.display(), at_line(*line))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("signature policy {}{}: rule {rule}: `{field}`: {message}", path.display(), at_line(*line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        rule: RuleRef,
        field: &'static str,
        message: String,
    },
    #[error("signature policy {}{}: rule {rule}: key {}: {message}", path.display(), at_line(*line), key.display())]
    Key {
        path: PathBuf,
        line: Option<usize>,
        rule: RuleRef,
        key: PathBuf,
        message: String,
    },
    #[error(
        "signature policy {}{}: rule {rule}: trusted root {}: {message}",
        path.display(), at_line(*line), root.display()
    )]
    TrustedRoot {
        path: PathBuf,
        line: Option<usize>,
        rule: RuleRef,
        root: PathBuf,
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// A loaded policy: its rules in file order, every key and trusted root parsed.
pub struct Policy {
    path: PathBuf,
    rules: Vec<Rule>,
    fingerprint: String,
}

/// One `[[rule]]`.
pub struct Rule {
    name: String,
    images: Vec<Glob>,
    urls: Vec<Glob>,
    mode: Mode,
    pub(super) keys: Vec<TrustedKey>,
    pub(super) trust: Option<Arc<TrustRoot>>,
    pub(super) identities: Vec<Identity>,
    bundle_url: Option<String>,
    pub(super) predicate_types: Vec<String>,
}

/// A key from the policy, with what names it in messages.
pub(super) struct TrustedKey {
    pub(super) key: PublicKey,
    pub(super) spki_der: Vec<u8>,
    pub(super) path: PathBuf,
    /// `SHA256:` and 16 hex digits.
    pub(super) fingerprint: String,
}

impl TrustedKey {
    /// `key SHA256:3f9a... (/etc/wasmcache/keys/a.pub)`.
    pub(super) fn describe(&self) -> String {
        format!("key {} ({})", self.fingerprint, self.path.display())
    }
}

/// A trusted_root.json, ready to verify with (parsed once, shared by the rules that name it).
pub(super) struct TrustRoot {
    pub(super) path: PathBuf,
    pub(super) verifier: sigstore_verify::Verifier,
    /// SCTs are required only when the root lists CT logs.
    pub(super) has_ct_logs: bool,
}

/// A keyless signer the rule accepts.
pub(super) struct Identity {
    pub(super) issuer: String,
    pub(super) subject: Regex,
    /// The pattern as written, for messages.
    pub(super) subject_source: String,
}

impl Identity {
    pub(super) fn describe(&self) -> String {
        format!("issuer={} subject=~{}", self.issuer, self.subject_source)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("path", &self.path)
            .field("rules", &self.rules)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("images", &self.images.iter().map(Glob::as_str).collect::<Vec<_>>())
            .field("urls", &self.urls.iter().map(Glob::as_str).collect::<Vec<_>>())
            .field("keys", &self.keys.iter().map(TrustedKey::describe).collect::<Vec<_>>())
            .field("trusted_root", &self.trust.as_ref().map(|t| &t.path))
            .field(
                "identities",
                &self.identities.iter().map(Identity::describe).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Reads a TOML policy file and every key / trusted-root file it names; errors name the file, the rule
    /// (index and name) and the field.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Loader::new(path, &text).load()
    }

    /// The first rule whose patterns match (first match wins); None: no rule applies (the module is not judged).
    pub fn rule_for(&self, target: &Target<'_>) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.applies_to(target))
    }

    /// A digest of the policy file and of every file it names: changes when anything that decides a verdict
    /// changes.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    #[cfg(test)]
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// http(s): the detached bundle's URL for a module URL, from the rule's template (`{url}` = the module URL),
    /// if any.
    pub fn bundle_url(&self, module_url: &str) -> Option<String> {
        self.bundle_url
            .as_ref()
            .map(|template| template.replace("{url}", module_url))
    }

    fn applies_to(&self, target: &Target<'_>) -> bool {
        match target {
            Target::Image { registry, repository } => {
                let name = format!("{registry}/{repository}");
                self.images.iter().any(|g| g.matches(&name))
            }
            Target::Url(url) => self.urls.iter().any(|g| g.matches(url)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rule: Vec<RawRule>,
}

type Strings = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRule {
    name: Option<Spanned<String>>,
    images: Strings,
    urls: Strings,
    mode: Option<Spanned<String>>,
    keys: Strings,
    trusted_root: Option<Spanned<String>>,
    bundle_url: Option<Spanned<String>>,
    predicate_types: Strings,
    #[serde(default)]
    identity: Vec<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    issuer: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
}

/// Reading one policy file: its text for line numbers, the files it names (for the fingerprint), and the
/// trusted roots parsed so far (a root named by several rules is parsed once).
struct Loader<'a> {
    path: &'a Path,
    dir: PathBuf,
    text: &'a str,
    fingerprint: sha2::Sha256,
    roots: HashMap<PathBuf, Arc<TrustRoot>>,
}

/// The context of one rule's errors.
struct At<'l> {
    path: &'l Path,
    rule: RuleRef,
    /// The `[[rule]]` header's line, for fields that have no span of their own.
    line: Option<usize>,
}

impl At<'_> {
    fn invalid(&self, line: Option<usize>, field: &'static str, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            path: self.path.to_path_buf(),
            line: line.or(self.line),
            rule: self.rule.clone(),
            field,
            message: message.into(),
        }
    }
}

impl<'a> Loader<'a> {
    fn new(path: &'a Path, text: &'a str) -> Loader<'a> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut fingerprint = sha2::Sha256::new();
        fingerprint.update(text.as_bytes());
        Loader {
            path,
            dir,
            text,
            fingerprint,
            roots: HashMap::new(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn line_of<T>(&self, spanned: &Spanned<T>) -> Option<usize> {
        Some(self.line(spanned.span().start))
    }

    /// The line of each `[[rule]]` header, in order.
    fn rule_lines(&self) -> Vec<usize> {
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with("[[rule]]"))
            .map(|(i, _)| i + 1)
            .collect()
    }

    fn load(mut self) -> Result<Policy, PolicyError> {
        super::provider::install();
        let raw: RawPolicy = toml::from_str(self.text).map_err(|e| PolicyError::Parse {
            path: self.path.to_path_buf(),
            line: e.span().map(|s| self.line(s.start)),
            message: e.message().trim().to_string(),
        })?;
        let headers = self.rule_lines();
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
        for (i, raw_rule) in raw.rule.into_iter().enumerate() {
            let at = At {
                path: self.path,
                rule: RuleRef {
                    index: i + 1,
                    name: raw_rule.name.as_ref().map(|n| n.get_ref().clone()),
                },
                line: headers.get(i).copied(),
            };
            let rule = self.rule(&at, raw_rule)?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(at.invalid(None, "name", format!("another rule is already named {:?}", rule.name)));
            }
            rules.push(rule);
        }
        Ok(Policy {
            path: self.path.to_path_buf(),
            rules,
            fingerprint: hex::encode(self.fingerprint.finalize()),
        })
    }

    fn rule(&mut self, at: &At<'_>, raw: RawRule) -> Result<Rule, PolicyError> {
        let name = match &raw.name {
            Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
            Some(n) => return Err(at.invalid(self.line_of(n), "name", "must not be empty")),
            None => return Err(at.invalid(None, "name", "every rule needs a name")),
        };
        let mode = match &raw.mode {
            None => Mode::Enforce,
            Some(m) => match m.get_ref().as_str() {
                "enforce" => Mode::Enforce,
                "warn" => Mode::Warn,
                "off" => Mode::Off,
                other => {
                    return Err(at.invalid(
                        self.line_of(m),
                        "mode",
                        format!("{other:?} is not a mode (enforce, warn or off)"),
                    ))
                }
            },
        };
        let images = self.globs(at, &raw.images, "images", 1, |p| {
            if p.contains("://") {
                Err("is a registry/repository pattern, without a scheme")
            } else {
                Ok(())
            }
        })?;
        let urls = self.globs(at, &raw.urls, "urls", 3, |p| {
            let lower = p.to_ascii_lowercase();
            if lower.starts_with("https://") || lower.starts_with("http://") {
                Ok(())
            } else {
                Err("must start with http:// or https://")
            }
        })?;
        if images.is_empty() && urls.is_empty() {
            return Err(at.invalid(None, "images", "a rule needs `images` or `urls` (or both)"));
        }

        let mut keys = Vec::new();
        for key in raw.keys.iter().flat_map(|k| k.get_ref()) {
            keys.push(self.key(at, key)?);
        }
        let trust = match &raw.trusted_root {
            Some(root) => Some(self.trusted_root(at, root)?),
            None => None,
        };
        let mut identities = Vec::new();
        for identity in &raw.identity {
            identities.push(self.identity(at, identity)?);
        }
        if !identities.is_empty() && trust.is_none() {
            return Err(at.invalid(
                None,
                "trusted-root",
                "keyless identities need a trusted-root (sigstore trusted_root.json)",
            ));
        }
        if mode != Mode::Off && keys.is_empty() && identities.is_empty() {
            return Err(at.invalid(
                raw.keys.as_ref().and_then(|k| self.line_of(k)),
                "keys",
                "a rule that is not off needs `keys` or an `[[rule.identity]]`",
            ));
        }

        let bundle_url = match &raw.bundle_url {
            None => None,
            Some(t) => {
                let template = t.get_ref();
                let lower = template.to_ascii_lowercase();
                if urls.is_empty() {
                    return Err(at.invalid(
                        self.line_of(t),
                        "bundle-url",
                        "only http(s) rules (`urls`) have bundles by URL",
                    ));
                }
                if !(template.starts_with("{url}") || lower.starts_with("https://") || lower.starts_with("http://")) {
                    return Err(at.invalid(
                        self.line_of(t),
                        "bundle-url",
                        "must be an http(s) URL or start with {url} (the module URL)",
                    ));
                }
                Some(template.clone())
            }
        };
        let predicate_types = match &raw.predicate_types {
            None => vec![COSIGN_SIGN_PREDICATE.to_string()],
            Some(list) => {
                let mut out = Vec::new();
                for t in list.get_ref() {
                    if t.get_ref().trim().is_empty() {
                        return Err(at.invalid(self.line_of(t), "predicate-types", "must not be empty"));
                    }
                    out.push(t.get_ref().clone());
                }
                if out.is_empty() {
                    return Err(at.invalid(self.line_of(list), "predicate-types", "must list at least one type"));
                }
                out
            }
        };
        Ok(Rule {
            name,
            images,
            urls,
            mode,
            keys,
            trust,
            identities,
            bundle_url,
            predicate_types,
        })
    }

    fn globs(
        &self,
        at: &At<'_>,
        raw: &Strings,
        field: &'static str,
        folded: usize,
        check: impl Fn(&str) -> Result<(), &'static str>,
    ) -> Result<Vec<Glob>, PolicyError> {
        let mut out = Vec::new();
        for pattern in raw.iter().flat_map(|p| p.get_ref()) {
            let p = pattern.get_ref();
            if p.trim().is_empty() || p.chars().any(char::is_whitespace) {
                return Err(at.invalid(
                    self.line_of(pattern),
                    field,
                    format!("{p:?}: patterns must not be empty or contain spaces"),
                ));
            }
            check(p).map_err(|m| at.invalid(self.line_of(pattern), field, format!("{p:?} {m}")))?;
            out.push(Glob::new(p, folded));
        }
        Ok(out)
    }

    /// Reads a file the policy names, and folds its path and bytes into the fingerprint.
    fn read(&mut self, relative: &str) -> (PathBuf, std::io::Result<Vec<u8>>) {
        let path = self.dir.join(relative);
        let bytes = std::fs::read(&path);
        self.fingerprint.update(path.as_os_str().as_encoded_bytes());
        self.fingerprint.update([0]);
        match &bytes {
            Ok(b) => {
                self.fingerprint.update((b.len() as u64).to_be_bytes());
                self.fingerprint.update(b);
            }
            Err(e) => self.fingerprint.update(e.to_string().as_bytes()),
        }
        (path, bytes)
    }

    fn key(&mut self, at: &At<'_>, raw: &Spanned<String>) -> Result<TrustedKey, PolicyError> {
        let line = self.line_of(raw);
        let (path, bytes) = self.read(raw.get_ref());
        let error = |message: String| PolicyError::Key {
            path: at.path.to_path_buf(),
            line,
            rule: at.rule.clone(),
            key: path.clone(),
            message,
        };
        let bytes = bytes.map_err(|e| error(format!("cannot read it: {e}")))?;
        let pem = String::from_utf8(bytes).map_err(|_| error("is not a PEM file".into()))?;
        let (key, spki_der) = PublicKey::from_pem(&pem).map_err(|e| error(e.to_string()))?;
        let fingerprint = keys::fingerprint(&spki_der);
        Ok(TrustedKey {
            key,
            spki_der,
            path,
            fingerprint,
        })
    }

    fn trusted_root(&mut self, at: &At<'_>, raw: &Spanned<String>) -> Result<Arc<TrustRoot>, PolicyError> {
        let line = self.line_of(raw);
        let (path, bytes) = self.read(raw.get_ref());
        if let Some(root) = self.roots.get(&path) {
            return Ok(root.clone());
        }
        let error = |message: String| PolicyError::TrustedRoot {
            path: at.path.to_path_buf(),
            line,
            rule: at.rule.clone(),
            root: path.clone(),
            message,
        };
        let bytes = bytes.map_err(|e| error(format!("cannot read it: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| error("is not UTF-8 JSON".into()))?;
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(&text).map_err(|e| error(e.to_string()))?;
        let verifier = sigstore_verify::Verifier::new(&root).map_err(|e| error(e.to_string()))?;
        let root = Arc::new(TrustRoot {
            path: path.clone(),
            verifier,
            has_ct_logs: !root.ctlogs.is_empty(),
        });
        self.roots.insert(path, root.clone());
        Ok(root)
    }

    fn identity(&self, at: &At<'_>, raw: &RawIdentity) -> Result<Identity, PolicyError> {
        let issuer = match &raw.issuer {
            Some(i) if !i.get_ref().trim().is_empty() => i.get_ref().clone(),
            Some(i) => return Err(at.invalid(self.line_of(i), "identity.issuer", "must not be empty")),
            None => return Err(at.invalid(None, "identity.issuer", "every identity needs an issuer")),
        };
        let subject = raw
            .subject
            .as_ref()
            .ok_or_else(|| at.invalid(None, "identity.subject", "every identity needs a subject (a regex)"))?;
        let source = subject.get_ref().clone();
        if source.trim().is_empty() {
            return Err(at.invalid(self.line_of(subject), "identity.subject", "must not be empty"));
        }
        // Anchored at both ends whatever the user wrote: `^(?:^a$)$` means the same as `^a$`.
        let regex = Regex::new(&format!("^(?:{source})$"))
            .map_err(|e| at.invalid(self.line_of(subject), "identity.subject", format!("not a regex: {e}")))?;
        Ok(Identity {
            issuer,
            subject: regex,
            subject_source: source,
        })
    }
}
