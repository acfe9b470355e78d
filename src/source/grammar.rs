//! The OCI reference grammar as checks that name what is wrong: a reference the parser refuses is explained
//! part by part (digest, registry, repository, tag) before the caller sees the parser's terse error.

/// The parts of a reference as written, before Docker Hub's defaults: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.
/// Split as the reference grammar does: the digest after the last `@` of the last path component, the tag
/// after the first `:` of what is left of it, and the first component is the registry when it has a `.` or
/// a `:` or is `localhost` (a `:` before the last `/` is a port).
struct Parts<'a> {
    registry: Option<&'a str>,
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(raw: &'a str) -> Self {
        let last = raw.rfind('/').map_or(0, |i| i + 1);
        let (rest, digest) = match raw[last..].rfind('@') {
            Some(at) => (&raw[..last + at], Some(&raw[last + at + 1..])),
            None => (raw, None),
        };
        let (name, tag) = match rest[last..].find(':') {
            Some(colon) => (&rest[..last + colon], Some(&rest[last + colon + 1..])),
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), path),
            _ => (None, name),
        };
        Parts {
            registry,
            repository,
            tag,
            digest,
        }
    }
}

/// The rules of the OCI distribution spec's reference grammar, each broken one named with its part: the
/// digest first (the part most often mistyped), then the registry, the repository and the tag. They refuse
/// what the reference parser refuses, in more words; the one addition is that a tag is ASCII, as the spec
/// says (the parser's `\w` also took other letters).
///
/// A part is quoted only when `redacted` (the reference as the error shows it) shows it too, so no check
/// repeats user info that redaction removed.
pub(super) fn check_reference(raw: &str, redacted: &str) -> Result<(), String> {
    /// How much of a part a message repeats.
    const MAX_SHOWN: usize = 72;
    let named = |what: &str, part: &str| {
        if part.is_empty() || !redacted.contains(part) {
            return format!("the {what}");
        }
        match part.char_indices().nth(MAX_SHOWN) {
            None => format!("{what} {part:?}"),
            Some((end, _)) => format!("{what} {:?}", format!("{}...", &part[..end])),
        }
    };
    let parts = Parts::split(raw);
    if let Some(digest) = parts.digest {
        check_digest(digest, &named)?;
    }
    if let Some(registry) = parts.registry {
        check_registry(registry, &named)?;
    }
    check_repository(parts.repository, &named)?;
    if let Some(tag) = parts.tag {
        check_tag(tag, &named)?;
    }
    Ok(())
}

/// `sha256:` and 64 hex characters: the only digest the cache verifies.
fn check_digest(digest: &str, named: &dyn Fn(&str, &str) -> String) -> Result<(), String> {
    if digest.is_empty() {
        return Err("the digest after '@' is empty".into());
    }
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "{} must be \"sha256:\" and 64 hex characters",
            named("digest", digest)
        ));
    };
    if algorithm != "sha256" {
        // Named only when it looks like one: in a mistyped reference it may be anything.
        let plausible = algorithm.len() <= 32
            && algorithm
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
        let named = if plausible {
            format!(" {algorithm:?}")
        } else {
            String::new()
        };
        return Err(format!("digest algorithm{named} is not supported (only sha256)"));
    }
    let rule = "a sha256 digest is 64 hex characters";
    if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{}: {rule}, and this has a non-hex character {c:?}",
            named("digest", digest)
        ));
    }
    if hex.len() != 64 {
        return Err(format!("{}: {rule}, got {}", named("digest", digest), hex.len()));
    }
    Ok(())
}

/// `HOST[:PORT]`: host labels of letters (either case), digits and inner dashes, joined by dots; a port of
/// digits. An `_` is let through, as the reference parser does.
fn check_registry(registry: &str, named: &dyn Fn(&str, &str) -> String) -> Result<(), String> {
    if registry.contains('@') {
        return Err(
            "the registry part holds user info (user:password@), which does not belong in a reference: use a pull \
             secret"
                .into(),
        );
    }
    let it = named("registry", registry);
    if registry.starts_with('[') {
        return Err(format!(
            "{it}: IPv6 addresses are not supported in references; use a host name"
        ));
    }
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if host.is_empty() {
        return Err(format!("{it}: the host before ':' is empty"));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!("{it}: host has {c:?}, outside [A-Za-z0-9.-]"));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("{it}: host has an empty label"));
        }
        if label.starts_with(['-', '_']) || label.ends_with(['-', '_']) {
            return Err(format!(
                "{it}: {} must start and end with a letter or a digit",
                named("host label", label)
            ));
        }
    }
    match port {
        Some("") => Err(format!("{it}: the port after ':' is empty")),
        Some(port) if !port.chars().all(|c| c.is_ascii_digit()) => {
            Err(format!("{it}: {} must be digits", named("port", port)))
        }
        _ => Ok(()),
    }
}

/// Path components of lowercase letters and digits, joined within a component by one `.`, one or two `_`,
/// or any number of `-`.
fn check_repository(repository: &str, named: &dyn Fn(&str, &str) -> String) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository is empty".into());
    }
    let it = named("repository", repository);
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("{it} must be lowercase"));
    }
    if let Some(c) = repository
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(*c)))
    {
        return Err(format!("{it} has {c:?}, outside [a-z0-9._-] and '/'"));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(format!("{it} has an empty path component"));
        }
        let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !component.starts_with(alphanumeric) || !component.ends_with(alphanumeric) {
            return Err(format!(
                "{it}: {} must start and end with a lowercase letter or a digit",
                named("path component", component)
            ));
        }
        for separator in component.split(alphanumeric).filter(|s| !s.is_empty()) {
            if !matches!(separator, "." | "_" | "__") && !separator.chars().all(|c| c == '-') {
                return Err(format!(
                    "{it}: {} joins with {separator:?}, where only '.', '_', '__' or dashes may",
                    named("path component", component)
                ));
            }
        }
    }
    Ok(())
}

/// At most 128 of `[A-Za-z0-9_.-]`, the first not `.` or `-`.
fn check_tag(tag: &str, named: &dyn Fn(&str, &str) -> String) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    let it = named("tag", tag);
    if let Some(c) = tag.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(format!("{it} has {c:?}, outside [A-Za-z0-9_.-]"));
    }
    if tag.starts_with(['.', '-']) {
        return Err(format!("{it} must start with a letter, a digit or '_'"));
    }
    if tag.len() > 128 {
        return Err(format!("{it} is {} characters, more than 128", tag.len()));
    }
    Ok(())
}
