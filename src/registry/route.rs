//! Which upstream repository a `/v2/...` path names, and what it asks of it. Pure: no I/O, no backend.
//!
//! Two naming forms, as pull-through registries are addressed in the wild:
//! - the upstream host as the first path component (`/v2/ghcr.io/org/plugin/manifests/v1`), as Harbor and Zot
//!   proxy projects are named. Docker's rule says which first component is a host: one with a `.` or a `:`, or
//!   `localhost`.
//! - containerd's mirror form: the path holds the repository only, and `?ns=ghcr.io` names its registry (what
//!   containerd sends to a `hosts.toml` mirror, and what Spegel serves).
//!
//! Docker Hub's names (`docker.io`, `index.docker.io`, `registry-1.docker.io`) become `docker.io`, and its
//! one-component repositories `library/x`. Names are checked against the distribution spec's grammar before
//! anything else happens: `%`-escapes, `.`/`..` and empty segments are refused outright, so no path trick can
//! reach the cache.

use crate::cache::registry::ManifestRef;
use crate::digest::Sha256;

/// Docker Hub's host names; any of them is `docker.io` upstream.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Longest `registry/repository`, as Docker's reference parser allows.
const MAX_NAME_LEN: usize = 255;

/// The endpoint a path is for, known from its shape before it is validated: the `route` label of the request
/// metric and log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ping,
    Manifest,
    Blob,
    Referrers,
    /// Anything else, under `/v2` or not.
    Other,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
            Kind::Referrers => "referrers",
            Kind::Other => "other",
        }
    }
}

/// An upstream repository, named and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// `host[:port]`, lowercase; `docker.io` for Docker Hub.
    pub registry: String,
    pub repository: String,
    /// The `ns` query parameter, when the request named the registry that way (echoed as `OCI-Namespace`).
    pub namespace: Option<String>,
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// A request the endpoint serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Ping,
    Manifest(Name, ManifestRef),
    Blob(Name, Sha256),
    /// The referrers of a digest, filtered by `artifactType` when one was given.
    Referrers(Name, Sha256, Option<String>),
}

/// Why a path is not served: the status, the OCI code and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        code,
        message: message.into(),
    }
}

/// What the upstream host may be named in a path; part of every NAME_UNKNOWN message.
const NAMING_HINT: &str = "name the upstream registry as the first path component \
    (/v2/ghcr.io/org/plugin/manifests/v1, /v2/docker.io/library/nginx/manifests/latest), \
    or with the ns query parameter (/v2/org/plugin/manifests/v1?ns=ghcr.io)";

/// Routes a request path (without the query) and its query string (without the `?`, possibly empty).
pub fn route(path: &str, query: &str) -> (Kind, Result<Route, Refused>) {
    let Some(rest) = path.strip_prefix("/v2") else {
        return (
            Kind::Other,
            Err(refused(404, "UNSUPPORTED", "not found: this endpoint serves /v2/")),
        );
    };
    if rest.is_empty() || rest == "/" {
        return (Kind::Ping, Ok(Route::Ping));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return (
            Kind::Other,
            Err(refused(404, "UNSUPPORTED", "not found: this endpoint serves /v2/")),
        );
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let kind = match segments.len() {
        0..=2 => Kind::Other,
        n => match segments[n - 2] {
            "manifests" => Kind::Manifest,
            "blobs" => Kind::Blob,
            "referrers" => Kind::Referrers,
            _ => Kind::Other,
        },
    };
    (kind, route_segments(kind, path, &segments, query))
}

fn route_segments(kind: Kind, path: &str, segments: &[&str], query: &str) -> Result<Route, Refused> {
    if path.contains('%') {
        return Err(refused(
            400,
            "NAME_INVALID",
            "percent-encoded paths are refused: names, tags and digests never need escaping",
        ));
    }
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(refused(
            400,
            "NAME_INVALID",
            "empty, '.' and '..' path segments are refused",
        ));
    }
    if kind == Kind::Other {
        return Err(refused(
            404,
            "UNSUPPORTED",
            "not served here: this endpoint answers /v2/<name>/manifests/<reference>, /v2/<name>/blobs/<digest> \
             and /v2/<name>/referrers/<digest> (GET and HEAD)",
        ));
    }
    let (name, last) = (&segments[..segments.len() - 2], segments[segments.len() - 1]);
    let query = Query::parse(query);
    let name = parse_name(name, query.ns.as_deref())?;
    Ok(match kind {
        Kind::Manifest => {
            let reference = if last.contains(':') {
                ManifestRef::Digest(parse_digest(last)?)
            } else if is_tag(last) {
                ManifestRef::Tag(last.to_string())
            } else {
                // No manifest can have this name: unknown, as a registry would say of a missing tag.
                return Err(refused(
                    404,
                    "MANIFEST_UNKNOWN",
                    format!(
                        "{last:?} is neither a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}) nor a digest (sha256:<64 hex>)"
                    ),
                ));
            };
            Route::Manifest(name, reference)
        }
        Kind::Blob => Route::Blob(name, parse_digest(last)?),
        Kind::Referrers => Route::Referrers(name, parse_digest(last)?, query.artifact_type),
        Kind::Ping | Kind::Other => unreachable!("routed above"),
    })
}

/// The query parameters the endpoint reads; others (`n`, `last`) are ignored.
#[derive(Default)]
struct Query {
    ns: Option<String>,
    artifact_type: Option<String>,
}

impl Query {
    /// `application/x-www-form-urlencoded`, as Go's `url.Values` writes it (containerd escapes the `:` of
    /// `ns=localhost%3A5000`). The first of a repeated parameter wins.
    fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "ns" if q.ns.is_none() => q.ns = Some(value.into_owned()),
                "artifactType" if q.artifact_type.is_none() && !value.is_empty() => {
                    q.artifact_type = Some(value.into_owned())
                }
                _ => {}
            }
        }
        q
    }
}

/// The repository and its registry, from the path's name components and the `ns` parameter.
fn parse_name(components: &[&str], ns: Option<&str>) -> Result<Name, Refused> {
    let (registry, repository, namespace) = match ns {
        Some(ns) => {
            let registry = parse_host(ns)
                .ok_or_else(|| refused(400, "NAME_INVALID", format!("ns={ns:?} is not a registry host[:port]")))?;
            (registry, components, Some(ns.to_string()))
        }
        None => {
            let first = components[0];
            if !(first.contains(['.', ':']) || first == "localhost") {
                return Err(refused(
                    404,
                    "NAME_UNKNOWN",
                    format!("{first:?} is not a registry host: {NAMING_HINT}"),
                ));
            }
            let registry = parse_host(first)
                .ok_or_else(|| refused(400, "NAME_INVALID", format!("{first:?} is not a registry host[:port]")))?;
            if components.len() < 2 {
                return Err(refused(
                    400,
                    "NAME_INVALID",
                    format!("{first:?} names a registry but no repository in it"),
                ));
            }
            (registry, &components[1..], None)
        }
    };
    if let Some(bad) = repository.iter().find(|c| !is_name_component(c)) {
        return Err(refused(
            400,
            "NAME_INVALID",
            format!("repository component {bad:?} does not match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"),
        ));
    }
    let registry = if DOCKER_HUB.contains(&registry.as_str()) {
        "docker.io".to_string()
    } else {
        registry
    };
    let mut repository = repository.join("/");
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(refused(
            400,
            "NAME_INVALID",
            format!("{registry}/{repository} is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(Name {
        registry,
        repository,
        namespace,
    })
}

/// `host[:port]` as Docker's reference grammar has it (DNS labels of letters, digits and inner hyphens,
/// an optional decimal port), lowercased. IPv6 literals are not accepted.
fn parse_host(s: &str) -> Option<String> {
    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return None;
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !(1..=65535).contains(&port.parse::<u32>().ok()?) {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// One repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_name_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of [a-z0-9]+.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator: '.', '_', '__' or '-'+, followed by another run.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == b'_')
        && rest.len() <= 127
        && rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A digest as the OCI image spec writes it (`algorithm:encoded`); only sha256 with 64 lowercase hex
/// characters is served.
pub fn parse_digest(s: &str) -> Result<Sha256, Refused> {
    let invalid = |why: String| refused(400, "DIGEST_INVALID", why);
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return Err(invalid(format!("{s:?} is not a digest (sha256:<64 hex>)")));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .split(['+', '.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    if !algorithm_ok || !encoded_ok {
        return Err(invalid(format!("{s:?} is not a digest (sha256:<64 hex>)")));
    }
    if algorithm != "sha256" {
        return Err(invalid(format!(
            "digest algorithm {algorithm:?} is not supported (only sha256)"
        )));
    }
    if encoded.len() != 64
        || !encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid("a sha256 digest is 64 lowercase hex characters".to_string()));
    }
    encoded
        .parse()
        .map_err(|e: crate::digest::DigestError| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Sha256 {
        HEX.parse().unwrap()
    }

    fn name(registry: &str, repository: &str) -> Name {
        Name {
            registry: registry.into(),
            repository: repository.into(),
            namespace: None,
        }
    }

    fn tag(t: &str) -> ManifestRef {
        ManifestRef::Tag(t.into())
    }

    /// Paths that are served, and what they name.
    #[test]
    fn served_paths_name_their_upstream() {
        let d = format!("sha256:{HEX}");
        let cases: Vec<(String, &str, Route)> = vec![
            ("/v2/".into(), "", Route::Ping),
            ("/v2".into(), "", Route::Ping),
            (
                "/v2/ghcr.io/org/plugin/manifests/v1".into(),
                "",
                Route::Manifest(name("ghcr.io", "org/plugin"), tag("v1")),
            ),
            (
                format!("/v2/ghcr.io/org/plugin/manifests/{d}"),
                "",
                Route::Manifest(name("ghcr.io", "org/plugin"), ManifestRef::Digest(digest())),
            ),
            (
                format!("/v2/localhost:5000/a/blobs/{d}"),
                "",
                Route::Blob(name("localhost:5000", "a"), digest()),
            ),
            (
                "/v2/localhost/a/manifests/latest".into(),
                "",
                Route::Manifest(name("localhost", "a"), tag("latest")),
            ),
            (
                "/v2/docker.io/nginx/manifests/latest".into(),
                "",
                Route::Manifest(name("docker.io", "library/nginx"), tag("latest")),
            ),
            (
                "/v2/index.docker.io/nginx/manifests/1.25".into(),
                "",
                Route::Manifest(name("docker.io", "library/nginx"), tag("1.25")),
            ),
            (
                "/v2/registry-1.docker.io/istio/proxyv2/manifests/1.20".into(),
                "",
                Route::Manifest(name("docker.io", "istio/proxyv2"), tag("1.20")),
            ),
            (
                "/v2/Registry.Example.COM:8443/a/b/c/manifests/V1_x.y-z".into(),
                "",
                Route::Manifest(name("registry.example.com:8443", "a/b/c"), tag("V1_x.y-z")),
            ),
            // A component named like an endpoint is still a name component.
            (
                "/v2/ghcr.io/manifests/blobs/manifests/v1".into(),
                "",
                Route::Manifest(name("ghcr.io", "manifests/blobs"), tag("v1")),
            ),
            (
                "/v2/a__b/c-d/e--f/g.h/manifests/_t".into(),
                "ns=quay.io",
                Route::Manifest(
                    Name {
                        registry: "quay.io".into(),
                        repository: "a__b/c-d/e--f/g.h".into(),
                        namespace: Some("quay.io".into()),
                    },
                    tag("_t"),
                ),
            ),
            // containerd's mirror form: the whole name is the repository, even when it looks like a host.
            (
                "/v2/library/nginx/manifests/latest".into(),
                "ns=docker.io",
                Route::Manifest(
                    Name {
                        registry: "docker.io".into(),
                        repository: "library/nginx".into(),
                        namespace: Some("docker.io".into()),
                    },
                    tag("latest"),
                ),
            ),
            (
                "/v2/nginx/manifests/latest".into(),
                "ns=index.docker.io",
                Route::Manifest(
                    Name {
                        registry: "docker.io".into(),
                        repository: "library/nginx".into(),
                        namespace: Some("index.docker.io".into()),
                    },
                    tag("latest"),
                ),
            ),
            (
                format!("/v2/team/plugin/blobs/{d}"),
                "ns=localhost%3A5000",
                Route::Blob(
                    Name {
                        registry: "localhost:5000".into(),
                        repository: "team/plugin".into(),
                        namespace: Some("localhost:5000".into()),
                    },
                    digest(),
                ),
            ),
            (
                format!("/v2/ghcr.io/org/plugin/referrers/{d}"),
                "artifactType=application%2Fvnd.dev.cosign.artifact.sig.v1%2Bjson&n=5",
                Route::Referrers(
                    name("ghcr.io", "org/plugin"),
                    digest(),
                    Some("application/vnd.dev.cosign.artifact.sig.v1+json".into()),
                ),
            ),
            (
                format!("/v2/ghcr.io/org/plugin/referrers/{d}"),
                "artifactType=",
                Route::Referrers(name("ghcr.io", "org/plugin"), digest(), None),
            ),
        ];
        for (path, query, want) in cases {
            let (_, got) = route(&path, query);
            assert_eq!(got, Ok(want), "{path}?{query}");
        }
    }

    /// Paths that are refused: status, code, and a word the message must contain.
    #[test]
    fn refused_paths_say_why() {
        let d = format!("sha256:{HEX}");
        let long = format!("/v2/ghcr.io/{}/manifests/v1", vec!["abcdefghij"; 30].join("/"));
        let cases: Vec<(String, &str, Kind, u16, &str, &str)> = vec![
            (
                "/v2/org/plugin/manifests/v1".into(),
                "",
                Kind::Manifest,
                404,
                "NAME_UNKNOWN",
                "ns=",
            ),
            (
                "/v2/nginx/manifests/latest".into(),
                "",
                Kind::Manifest,
                404,
                "NAME_UNKNOWN",
                "registry host",
            ),
            (
                "/v2/ghcr.io/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "no repository",
            ),
            (
                "/v2/ghcr.io/Org/x/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "\"Org\"",
            ),
            (
                "/v2/ghcr.io/a_-b/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "a_-b",
            ),
            (
                "/v2/ghcr.io/a___b/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "a___b",
            ),
            (
                "/v2/ghcr.io/-a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "-a",
            ),
            (
                "/v2/ghcr.io/a./manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "a.",
            ),
            (
                "/v2/gh_cr.io/a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "host",
            ),
            (
                "/v2/ghcr.io:99999/a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "host",
            ),
            (
                "/v2/ghcr.io:/a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "host",
            ),
            (
                "/v2/a/manifests/v1".into(),
                "ns=bad_host",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "ns=",
            ),
            (
                "/v2/a/manifests/v1".into(),
                "ns=",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "ns=",
            ),
            (long, "", Kind::Manifest, 400, "NAME_INVALID", "255"),
            // Path tricks.
            (
                "/v2/ghcr.io/../etc/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "'..'",
            ),
            (
                "/v2/ghcr.io/./a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "'.'",
            ),
            (
                "/v2/ghcr.io//a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "empty",
            ),
            (
                "/v2/ghcr.io/%2e%2e/a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "percent",
            ),
            (
                "/v2/ghcr.io/a%2Fb/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "percent",
            ),
            (
                "/v2/ghcr.io/a/manifests/v1%00".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "percent",
            ),
            (
                "/v2/../v2/ghcr.io/a/manifests/v1".into(),
                "",
                Kind::Manifest,
                400,
                "NAME_INVALID",
                "'..'",
            ),
            // References.
            (
                "/v2/ghcr.io/a/manifests/.v1".into(),
                "",
                Kind::Manifest,
                404,
                "MANIFEST_UNKNOWN",
                "tag",
            ),
            (
                "/v2/ghcr.io/a/manifests/-v1".into(),
                "",
                Kind::Manifest,
                404,
                "MANIFEST_UNKNOWN",
                "tag",
            ),
            (
                format!("/v2/ghcr.io/a/manifests/{}", "t".repeat(129)),
                "",
                Kind::Manifest,
                404,
                "MANIFEST_UNKNOWN",
                "tag",
            ),
            (
                "/v2/ghcr.io/a/manifests/sha256:abc".into(),
                "",
                Kind::Manifest,
                400,
                "DIGEST_INVALID",
                "64",
            ),
            (
                format!("/v2/ghcr.io/a/manifests/sha256:{}", HEX.to_uppercase()),
                "",
                Kind::Manifest,
                400,
                "DIGEST_INVALID",
                "lowercase",
            ),
            (
                format!("/v2/ghcr.io/a/blobs/sha512:{}", "ab".repeat(64)),
                "",
                Kind::Blob,
                400,
                "DIGEST_INVALID",
                "sha512",
            ),
            (
                "/v2/ghcr.io/a/blobs/latest".into(),
                "",
                Kind::Blob,
                400,
                "DIGEST_INVALID",
                "not a digest",
            ),
            (
                format!("/v2/ghcr.io/a/blobs/{HEX}"),
                "",
                Kind::Blob,
                400,
                "DIGEST_INVALID",
                "not a digest",
            ),
            (
                "/v2/ghcr.io/a/referrers/v1".into(),
                "",
                Kind::Referrers,
                400,
                "DIGEST_INVALID",
                "not a digest",
            ),
            (
                "/v2/ghcr.io/a/blobs/SHA256:x".into(),
                "",
                Kind::Blob,
                400,
                "DIGEST_INVALID",
                "not a digest",
            ),
            // Other endpoints and paths.
            (
                "/v2/ghcr.io/a/tags/list".into(),
                "",
                Kind::Other,
                404,
                "UNSUPPORTED",
                "manifests",
            ),
            ("/v2/_catalog".into(), "", Kind::Other, 404, "UNSUPPORTED", "manifests"),
            (
                format!("/v2/ghcr.io/a/blobs/uploads/{d}"),
                "",
                Kind::Other,
                404,
                "UNSUPPORTED",
                "manifests",
            ),
            ("/v2x/".into(), "", Kind::Other, 404, "UNSUPPORTED", "/v2/"),
            ("/".into(), "", Kind::Other, 404, "UNSUPPORTED", "/v2/"),
        ];
        for (path, query, kind, status, code, word) in cases {
            let (got_kind, got) = route(&path, query);
            let refused = got.expect_err(&path);
            assert_eq!(
                (got_kind, refused.status, refused.code),
                (kind, status, code),
                "{path}?{query}"
            );
            assert!(
                refused.message.contains(word),
                "{path}?{query}: {:?} does not mention {word:?}",
                refused.message
            );
        }
    }

    #[test]
    fn name_components_follow_the_grammar() {
        for ok in ["a", "a0", "a.b", "a_b", "a__b", "a-b", "a---b", "a.b_c__d-e", "0"] {
            assert!(is_name_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a___b", "a_.b", "_a", "a-", "a b", "a:b", "é",
        ] {
            assert!(!is_name_component(bad), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["v1", "_", "V1.2-rc_3", &"a".repeat(128)] {
            assert!(is_tag(ok), "{ok}");
        }
        for bad in ["", ".v1", "-v1", "v:1", "v/1", &"a".repeat(129), "v1é"] {
            assert!(!is_tag(bad), "{bad}");
        }
    }
}
