//! Module URLs: parsing and validation of what a client asks for, and a credential-free form for logs,
//! errors and the index.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use crate::digest::Sha256;

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
    inner: oci_client::Reference,
    digest: Option<Sha256>,
}

impl ImageRef {
    /// Parses a reference without the `oci://` prefix.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let bad = |reason: String| UrlError::BadReference {
            reference: raw.chars().take(256).collect(),
            reason,
        };
        let inner = oci_client::Reference::try_from(raw).map_err(|e| bad(e.to_string()))?;
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
    pub fn manifest_reference(&self) -> String {
        match (self.digest, self.inner.tag()) {
            (Some(d), _) => d.prefixed(),
            (None, Some(tag)) => tag.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// A `latest` tag without a digest: it moves, so an unspecified pull policy re-checks it (the
    /// Kubernetes rule).
    pub fn is_floating(&self) -> bool {
        self.digest.is_none() && self.inner.tag().is_none_or(|t| t == "latest")
    }

    /// `registry/repository`, the unit that registry permissions apply to.
    pub fn repository_key(&self) -> String {
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
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
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
            Some(other) if !other.is_empty() => {
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
                    return Err(UrlError::NoHost(display_url(&url)));
                }
                Ok(ModuleUrl::Http(url))
            }
            "file" => {
                let local = matches!(url.host_str(), None | Some("") | Some("localhost"));
                match url.to_file_path() {
                    Ok(path) if local && path.is_absolute() => Ok(ModuleUrl::File(path)),
                    _ => Err(UrlError::FileNotLocal(display_url(&url))),
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
pub fn display_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    // Both setters only fail for URLs that cannot have credentials, which then have none to hide.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

/// Best-effort credential removal from a string that did not parse as a URL, for error messages.
fn redact_raw(raw: &str) -> String {
    let shortened: String = raw.chars().take(256).collect();
    match shortened.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
                None => shortened.clone(),
            }
        }
        None => shortened,
    }
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

    #[test]
    fn malformed_url_error_hides_credentials() {
        let err = ModuleUrl::parse("http://user:pw@[bad/x").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
