//! Module URLs: parsing and validation of what a client asks for, and a credential-free form for logs,
//! errors and the index.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use crate::digest::Sha256;

mod grammar;
use grammar::check_reference;

/// Longest URL accepted; longer ones are refused before any parsing.
pub const MAX_URL_LEN: usize = 4096;

/// Where a module comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum ModuleUrl {
    /// `http://` or `https://`. The URL may carry userinfo credentials; they are used for the request and
    /// never displayed.
    Http(Url),
    /// `file://` with an absolute path (not yet checked against the file roots).
    File(PathBuf),
    /// `oci://REGISTRY/REPO[:TAG][@sha256:DIGEST]`.
    Oci(ImageRef),
}

/// An OCI image reference, normalized: Docker Hub defaults filled in (registry `docker.io`, `library/`
/// for one-segment repositories, tag `latest` when neither tag nor digest is given).
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_spec::distribution::Reference,
    digest: Option<Sha256>,
}

impl ImageRef {
    /// Parses a reference without the `oci://` prefix. A malformed one is refused naming the offending part
    /// and the rule it breaks (`repository "Team/x" must be lowercase`), checked here before the reference
    /// parser, which only knows "invalid reference format"; the error shows the reference with `oci://`.
    pub(crate) fn parse(raw: &str) -> Result<Self, UrlError> {
        let redacted = redact_reference(raw);
        let bad = |reason: String| UrlError::BadReference {
            reference: format!("oci://{redacted}"),
            reason,
        };
        check_reference(raw, &redacted).map_err(bad)?;
        // What the checks let through, the parser accepts; should they ever disagree, its word is final.
        let inner = oci_spec::distribution::Reference::try_from(raw).map_err(|e| bad(e.to_string()))?;
        let digest = match inner.digest() {
            None => None,
            Some(d) if d.starts_with("sha256:") => {
                Some(d.parse().map_err(|e: crate::digest::DigestError| bad(e.to_string()))?)
            }
            Some(_) => return Err(bad("only sha256 digests are supported".into())),
        };
        Ok(ImageRef { inner, digest })
    }

    /// The registry as named in the reference (`docker.io` for Docker Hub), with its port if any.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<Sha256> {
        self.digest
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub(crate) fn manifest_reference(&self) -> String {
        match (self.digest, self.inner.tag()) {
            (Some(d), _) => d.prefixed(),
            (None, Some(tag)) => tag.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// A `latest` tag without a digest: it moves, so an unspecified pull policy re-checks it (the
    /// Kubernetes rule).
    pub(crate) fn is_floating(&self) -> bool {
        self.digest.is_none() && self.inner.tag().is_none_or(|t| t == "latest")
    }

    /// `registry/repository`, the unit that registry permissions apply to.
    pub(crate) fn repository_key(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.whole())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("url is empty")]
    Empty,
    #[error("url is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("url contains a control character")]
    ControlCharacter,
    #[error("url {url:?} is malformed: {reason}")]
    Malformed { url: String, reason: String },
    #[error("url scheme {0:?} is not supported (use oci, http, https or file)")]
    UnsupportedScheme(String),
    #[error("file url {0:?} must name a local absolute path (file:///path)")]
    FileNotLocal(String),
    #[error("url {0:?} has no host")]
    NoHost(String),
    #[error("oci reference {reference:?} is malformed: {reason}")]
    BadReference { reference: String, reason: String },
}

impl ModuleUrl {
    /// A reference that may name other bytes tomorrow without changing (an OCI `latest` tag without a digest);
    /// an unspecified pull policy re-checks it.
    pub(crate) fn is_floating(&self) -> bool {
        matches!(self, ModuleUrl::Oci(image) if image.is_floating())
    }

    /// A reference that names its bytes for good (an OCI reference with a digest).
    pub(crate) fn is_immutable(&self) -> bool {
        matches!(self, ModuleUrl::Oci(image) if image.digest().is_some())
    }

    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let parsed = Self::parse_raw(raw)?;
        // Percent-encoding and the Docker Hub defaults can make the display form, which is the index key and
        // what clients are shown, longer than the input; it must be a URL this function accepts too.
        if parsed.to_string().len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(parsed)
    }

    fn parse_raw(raw: &str) -> Result<Self, UrlError> {
        if raw.is_empty() {
            return Err(UrlError::Empty);
        }
        if raw.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(UrlError::ControlCharacter);
        }
        let scheme = raw.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("oci") => return ImageRef::parse(&raw[raw.find("://").map_or(0, |i| i + 3)..]).map(ModuleUrl::Oci),
            Some("http") | Some("https") | Some("file") => {}
            Some(other) if is_scheme(other) => {
                return Err(UrlError::UnsupportedScheme(other.chars().take(32).collect()))
            }
            _ => {
                return Err(UrlError::Malformed {
                    url: redact_raw(raw),
                    reason: "expected scheme://...".into(),
                })
            }
        }
        let url = Url::parse(raw).map_err(|e| UrlError::Malformed {
            url: redact_raw(raw),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(UrlError::NoHost(shorten(&display_url(&url))));
                }
                Ok(ModuleUrl::Http(url))
            }
            "file" => {
                let local = matches!(url.host_str(), None | Some("") | Some("localhost"));
                match url.to_file_path() {
                    // URL parsing removes `..` segments, but an encoded `/` (`..%2F`) decodes into one here: such
                    // a path would display as a URL that parses to another path.
                    Ok(path) if path.components().any(|c| c == std::path::Component::ParentDir) => {
                        Err(UrlError::Malformed {
                            url: shorten(&display_url(&url)),
                            reason: "file path holds an encoded \"/\" that makes a \"..\" segment".into(),
                        })
                    }
                    Ok(path) if local && path.is_absolute() => Ok(ModuleUrl::File(path)),
                    _ => Err(UrlError::FileNotLocal(shorten(&display_url(&url)))),
                }
            }
            other => Err(UrlError::UnsupportedScheme(other.to_string())),
        }
    }

    /// The scheme as used in metrics and logs.
    pub fn scheme(&self) -> &'static str {
        match self {
            ModuleUrl::Http(u) if u.scheme() == "https" => "https",
            ModuleUrl::Http(_) => "http",
            ModuleUrl::File(_) => "file",
            ModuleUrl::Oci(_) => "oci",
        }
    }
}

/// Displays the URL without userinfo credentials: this is the key of the URL in the index.
impl fmt::Display for ModuleUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleUrl::Http(u) => f.write_str(&display_url(u)),
            ModuleUrl::File(p) => match Url::from_file_path(p) {
                Ok(u) => f.write_str(u.as_str()),
                Err(()) => write!(f, "file://{}", p.display()),
            },
            ModuleUrl::Oci(r) => write!(f, "oci://{r}"),
        }
    }
}

impl fmt::Debug for ModuleUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `url` without username and password.
pub(crate) fn display_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    // Both setters only fail for URLs that cannot have credentials, which then have none to hide.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

/// Longest part of a refused URL that an error message repeats.
const MAX_URL_SHOWN: usize = 256;

/// An RFC 3986 scheme: a letter, then letters, digits, `+`, `-` or `.`. Anything else before `://` is not
/// a scheme and may be user info (`user:password@host://...`), so it is never echoed as one.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// Best-effort credential removal from a string that did not parse as a URL, for error messages: user info
/// is redacted in the whole string before it is shortened, so that a long password is not half shown. Each
/// authority (the start of the string, and what follows each `://`, up to a `/`, `?` or `#`) loses what comes
/// before its last `@`, so user info around a mistyped scheme (`h@tps://user:pw@host/`, `user:pw@evil://x`)
/// is found too.
fn redact_raw(raw: &str) -> String {
    let pieces: Vec<String> = raw
        .split("://")
        .map(|piece| {
            let authority_end = piece.find(['/', '?', '#']).unwrap_or(piece.len());
            match piece[..authority_end].rfind('@') {
                Some(at) => format!("<redacted>{}", &piece[at..]),
                None => piece.to_string(),
            }
        })
        .collect();
    shorten(&pieces.join("://"))
}

/// An OCI reference for error messages. References have no user info, but `oci://user:password@host/repo`
/// is still a way to write one. An `@` is a digest separator only after the repository's first `/` or, in a
/// reference without one, when a single `@` is followed by `algorithm:hex`; up to the last other `@`,
/// everything is redacted.
fn redact_reference(raw: &str) -> String {
    let user_info_end = match raw.find('/') {
        Some(slash) => raw[..slash].rfind('@'),
        None => raw
            .rfind('@')
            .filter(|&at| raw.matches('@').count() > 1 || !looks_like_digest(&raw[at + 1..])),
    };
    match user_info_end {
        Some(at) => shorten(&format!("<redacted>{}", &raw[at..])),
        None => shorten(raw),
    }
}

/// `algorithm:hex`, the shape of an OCI digest (whether or not the algorithm is supported).
fn looks_like_digest(text: &str) -> bool {
    text.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
            && !hex.is_empty()
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_URL_SHOWN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_displays_without_credentials() {
        let u = ModuleUrl::parse("https://user:secret@example.com/a.wasm").unwrap();
        assert_eq!(u.to_string(), "https://example.com/a.wasm");
        assert!(!format!("{u:?}").contains("secret"));
    }

    #[test]
    fn file_url_needs_a_local_absolute_path() {
        assert_eq!(
            ModuleUrl::parse("file:///opt/m.wasm").unwrap(),
            ModuleUrl::File("/opt/m.wasm".into())
        );
        assert!(ModuleUrl::parse("file://localhost/opt/m.wasm").is_ok());
        assert!(matches!(
            ModuleUrl::parse("file://other/opt/m.wasm"),
            Err(UrlError::FileNotLocal(_))
        ));
    }

    /// Regression (issue 6, fuzz/regressions/url/display-over-the-limit): a URL under the limit whose
    /// percent-encoded display is over it was accepted, and its display was then refused.
    #[test]
    fn url_whose_display_is_over_the_limit_is_too_long() {
        let raw = format!("http://example.com/{}", "é".repeat(1000));
        assert!(raw.len() <= MAX_URL_LEN);
        assert_eq!(ModuleUrl::parse(&raw), Err(UrlError::TooLong));
        let raw = format!("oci://{}.example.com/r", "a".repeat(MAX_URL_LEN - 25));
        assert!(raw.len() <= MAX_URL_LEN);
        assert_eq!(ModuleUrl::parse(&raw), Err(UrlError::TooLong));
    }

    /// Regression (issue 6, fuzz/regressions/url/long-file-url-error): the URL in a `file` error was shown
    /// whole, and percent-encoding made it three times as long as the input.
    #[test]
    fn url_in_an_error_is_shortened() {
        let err = ModuleUrl::parse(&format!("file://remote/{}", "é".repeat(2000))).unwrap_err();
        assert!(matches!(err, UrlError::FileNotLocal(_)), "{err}");
        assert!(err.to_string().len() < 400, "{} bytes", err.to_string().len());
    }

    /// Regression (issue 6, fuzz/regressions/url/file-encoded-slash-dotdot): `..%2F` decoded into a `..`
    /// segment, so the display form parsed to another path.
    #[test]
    fn file_path_with_an_encoded_dotdot_segment_is_refused() {
        for raw in ["file:///srv/wasm/..%2F..%2Fetc/passwd", "file:///a/%2E%2E%2Fb"] {
            assert!(
                matches!(ModuleUrl::parse(raw), Err(UrlError::Malformed { .. })),
                "{raw}"
            );
        }
        let u = ModuleUrl::parse("file:///srv/a%2Fb/../c.wasm").unwrap();
        assert_eq!(u.to_string(), "file:///srv/c.wasm");
        assert_eq!(ModuleUrl::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn unsupported_schemes_and_garbage_are_refused() {
        assert_eq!(
            ModuleUrl::parse("ftp://x/y"),
            Err(UrlError::UnsupportedScheme("ftp".into()))
        );
        assert!(matches!(ModuleUrl::parse("not a url"), Err(UrlError::Malformed { .. })));
        assert_eq!(ModuleUrl::parse(""), Err(UrlError::Empty));
        assert_eq!(ModuleUrl::parse("http://a/\nb"), Err(UrlError::ControlCharacter));
        assert_eq!(
            ModuleUrl::parse(&format!("http://a/{}", "x".repeat(5000))),
            Err(UrlError::TooLong)
        );
    }

    #[test]
    fn oci_reference_gets_docker_hub_defaults() {
        let ModuleUrl::Oci(r) = ModuleUrl::parse("oci://envoy-filter").unwrap() else {
            panic!()
        };
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/envoy-filter");
        assert_eq!(r.tag(), Some("latest"));
        assert!(r.is_floating());
        assert_eq!(
            ModuleUrl::Oci(r).to_string(),
            "oci://docker.io/library/envoy-filter:latest"
        );
    }

    #[test]
    fn oci_reference_with_port_tag_and_digest() {
        let d = "a".repeat(64);
        let ModuleUrl::Oci(r) = ModuleUrl::parse(&format!("oci://127.0.0.1:5000/team/filter:v1@sha256:{d}")).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/filter");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.manifest_reference(), format!("sha256:{d}"));
        assert!(!r.is_floating());
    }

    #[test]
    fn malformed_oci_references_name_the_problem() {
        for bad in [
            "oci://",
            "oci://Upper/Case",
            "oci://repo@sha256:abc",
            "oci://repo@sha512:".to_string().as_str(),
            "oci://a/b:bad tag",
        ] {
            let err = ModuleUrl::parse(bad).unwrap_err();
            assert!(
                matches!(err, UrlError::BadReference { .. } | UrlError::ControlCharacter),
                "{bad}: {err}"
            );
        }
    }

    /// Issue 6: a short digest was only "invalid reference format".
    #[test]
    fn malformed_digest_in_a_reference_is_named() {
        let err = ModuleUrl::parse("oci://127.0.0.1:5000/a/b@sha256:abc").unwrap_err();
        assert!(err.to_string().contains("64 hex characters, got 3"), "{err}");
        let err = ModuleUrl::parse(&format!("oci://a/b:v1@sha512:{}", "a".repeat(128))).unwrap_err();
        assert!(
            err.to_string().contains("\"sha512\" is not supported (only sha256)"),
            "{err}"
        );
        let err = ModuleUrl::parse(&format!("oci://a/b@sha256:{}", "g".repeat(64))).unwrap_err();
        assert!(err.to_string().contains("non-hex"), "{err}");
        // Regression (fuzz/regressions/url/oci-at-signs): what precedes the last `@` is never taken for a
        // digest, and an implausible algorithm is not echoed.
        let err = ModuleUrl::parse("oci://@@@@:hunter2-secret)@@@@9.2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = ModuleUrl::parse("oci://a/b@x(y):0").unwrap_err();
        assert!(err.to_string().contains("digest algorithm is not supported"), "{err}");
    }

    /// Regression (issue 6, fuzz/regressions/url/uppercase-docker-hub-repository): an uppercase first
    /// component without a dot was accepted as a Docker Hub repository, and its display did not parse.
    #[test]
    fn uppercase_repository_is_refused_whatever_its_position() {
        for raw in [
            "oci://Team/filter",
            "oci://ghcr0Xample/a:v1",
            "oci://docker.io/Team/filter",
        ] {
            let err = ModuleUrl::parse(raw).unwrap_err();
            assert!(
                err.to_string().contains("lowercase") || err.to_string().contains("format"),
                "{raw}: {err}"
            );
        }
        assert!(ModuleUrl::parse("oci://Registry.Example.com:5000/team/filter").is_ok());
    }

    /// The message of a reference refused as malformed.
    #[track_caller]
    fn refusal(raw: &str) -> String {
        match ModuleUrl::parse(raw) {
            Err(e @ UrlError::BadReference { .. }) => e.to_string(),
            other => panic!("{raw}: expected a malformed reference, got {other:?}"),
        }
    }

    /// `refusal(raw)` without the `oci reference "..." is malformed: ` that every one starts with.
    #[track_caller]
    fn reason(raw: &str) -> String {
        let message = refusal(raw);
        let prefix = format!("oci reference {raw:?} is malformed: ");
        message
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{raw}: {message:?} does not start with {prefix:?}"))
            .to_string()
    }

    #[test]
    fn uppercase_in_the_repository_is_named_with_the_rule() {
        assert_eq!(
            refusal("oci://r.io/Team/x:v1"),
            r#"oci reference "oci://r.io/Team/x:v1" is malformed: repository "Team/x" must be lowercase"#
        );
        // Without a registry the whole name is the (Docker Hub) repository.
        assert_eq!(
            reason("oci://team/fiLter"),
            r#"repository "team/fiLter" must be lowercase"#
        );
    }

    /// Host names are case-insensitive and tags may hold uppercase: neither is refused.
    #[test]
    fn uppercase_is_allowed_in_the_registry_host_and_the_tag() {
        let ModuleUrl::Oci(r) = ModuleUrl::parse("oci://Registry.Example.com:5000/team/filter:V1.0-RC_1").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.registry(), "Registry.Example.com:5000");
        assert_eq!(r.repository(), "team/filter");
        assert_eq!(r.tag(), Some("V1.0-RC_1"));
    }

    #[test]
    fn tag_with_a_character_outside_its_set_is_named() {
        assert_eq!(
            reason("oci://r.io/a/b:v1+build"),
            r#"tag "v1+build" has '+', outside [A-Za-z0-9_.-]"#
        );
        assert_eq!(
            reason("oci://r.io/a/b:bad tag"),
            r#"tag "bad tag" has ' ', outside [A-Za-z0-9_.-]"#
        );
    }

    #[test]
    fn tag_over_128_characters_is_named() {
        let tag = "a".repeat(129);
        assert!(ModuleUrl::parse(&format!("oci://r.io/a/b:{}", &tag[1..])).is_ok());
        let reason = reason(&format!("oci://r.io/a/b:{tag}"));
        assert!(reason.ends_with(" is 129 characters, more than 128"), "{reason}");
        assert!(reason.starts_with(r#"tag "aaaa"#), "{reason}");
    }

    #[test]
    fn tag_starting_with_a_dot_or_a_dash_is_named() {
        for tag in [".v1", "-v1"] {
            assert_eq!(
                reason(&format!("oci://r.io/a/b:{tag}")),
                format!("tag {tag:?} must start with a letter, a digit or '_'")
            );
        }
    }

    #[test]
    fn empty_tag_is_named() {
        assert_eq!(reason("oci://r.io/a/b:"), "the tag after ':' is empty");
    }

    #[test]
    fn digest_of_the_wrong_length_is_named_with_the_rule() {
        assert_eq!(
            reason("oci://r.io/a/b@sha256:abc"),
            r#"digest "sha256:abc": a sha256 digest is 64 hex characters, got 3"#
        );
    }

    #[test]
    fn digest_with_a_non_hex_character_is_named_with_the_rule() {
        let digest = format!("sha256:{}x", "a".repeat(63));
        assert_eq!(
            reason(&format!("oci://r.io/a/b@{digest}")),
            format!("digest {digest:?}: a sha256 digest is 64 hex characters, and this has a non-hex character 'x'")
        );
    }

    #[test]
    fn digest_without_its_algorithm_is_named_with_the_rule() {
        let hex = "a".repeat(64);
        assert_eq!(
            reason(&format!("oci://r.io/a/b@{hex}")),
            format!(r#"digest "{hex}" must be "sha256:" and 64 hex characters"#)
        );
    }

    #[test]
    fn repository_path_components_follow_the_grammar() {
        for (raw, expected) in [
            ("oci://r.io/a//b:v1", r#"repository "a//b" has an empty path component"#),
            (
                "oci://r.io/-a/b:v1",
                r#"repository "-a/b": path component "-a" must start and end with a lowercase letter or a digit"#,
            ),
            (
                "oci://r.io/a..b:v1",
                r#"repository "a..b": path component "a..b" joins with "..", where only '.', '_', '__' or dashes may"#,
            ),
            (
                "oci://r.io/a/b$c:v1",
                r#"repository "a/b$c" has '$', outside [a-z0-9._-] and '/'"#,
            ),
            ("oci://r.io/:v1", "the repository is empty"),
        ] {
            assert_eq!(reason(raw), expected, "{raw}");
        }
    }

    #[test]
    fn registry_host_and_port_are_named_with_the_rule() {
        for (raw, expected) in [
            (
                "oci://r!x.io/a:v1",
                r#"registry "r!x.io": host has '!', outside [A-Za-z0-9.-]"#,
            ),
            ("oci://r..io/a:v1", r#"registry "r..io": host has an empty label"#),
            (
                "oci://r.-io/a:v1",
                r#"registry "r.-io": host label "-io" must start and end with a letter or a digit"#,
            ),
            (
                "oci://r.io:50a0/a:v1",
                r#"registry "r.io:50a0": port "50a0" must be digits"#,
            ),
            ("oci://:5000/a:v1", r#"registry ":5000": the host before ':' is empty"#),
        ] {
            assert_eq!(reason(raw), expected, "{raw}");
        }
        // User info is named, and never shown.
        let message = refusal("oci://alice:hunter2-secret@r.io/a:v1");
        assert!(
            message.ends_with("registry part holds user info (user:password@), which does not belong in a reference: use a pull secret"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn malformed_url_error_hides_credentials() {
        let err = ModuleUrl::parse("http://user:pw@[bad/x").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    /// Regression (issue 6, hostile input): the reference was echoed whole, user info included.
    #[test]
    fn oci_reference_error_hides_user_info() {
        let err = ModuleUrl::parse("oci://alice:hunter2-secret@127.0.0.1:5000/repo:v1").unwrap_err();
        assert!(matches!(err, UrlError::BadReference { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("127.0.0.1:5000/repo:v1"), "{err}");
        // A digest separator is not user info, and the reference is still shown.
        let err = ModuleUrl::parse("oci://Repo@sha256:abc").unwrap_err();
        assert!(err.to_string().contains("Repo@sha256:abc"), "{err}");
        // Without a repository path (fuzz/regressions/url/oci-userinfo-without-path).
        for raw in [
            "oci://alice:hunter2-secret@registry",
            "oci://a:v1@sha256:hunter2-secret@x:1.a;b",
        ] {
            let err = ModuleUrl::parse(raw).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    /// Regression (issue 6, hostile input): a password longer than the shown part was cut, not redacted.
    #[test]
    fn long_password_is_redacted_not_shortened() {
        let password = "p".repeat(300);
        let err = ModuleUrl::parse(&format!("http://user:{password}@[bad/x")).unwrap_err();
        assert!(!err.to_string().contains("pppppppp"), "{err}");
    }

    /// Regression (issue 6, hostile input): text before `://` that is not a scheme was echoed as one, and
    /// user info behind a mistyped scheme was not found (fuzz/regressions/url/mistyped-scheme-userinfo).
    #[test]
    fn user_info_around_a_fake_scheme_is_not_echoed() {
        let err = ModuleUrl::parse("user:hunter2-secret@evil://x/y").unwrap_err();
        assert!(matches!(err, UrlError::Malformed { .. }), "{err}");
        assert!(!err.to_string().to_lowercase().contains("hunter2"), "{err}");
        let err = ModuleUrl::parse("h@tps://user:hunter2-secret@_example.com/a.wasm").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("<redacted>@_example.com/a.wasm"), "{err}");
        let err = ModuleUrl::parse("http://user:hunter2-secret@[bad/x").unwrap_err();
        assert!(err.to_string().contains("http://<redacted>@[bad/x"), "{err}");
        // A `/` before the fake scheme (fuzz/regressions/url/slash-before-fake-scheme).
        let err = ModuleUrl::parse("e/a:v1@x!tps://user:hunter2-secret@host/f").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(
            ModuleUrl::parse("ftp+ssh://x/y"),
            Err(UrlError::UnsupportedScheme("ftp+ssh".into()))
        );
    }
}
