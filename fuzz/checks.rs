//! The invariants the fuzz targets check, one function per target, shared with the normal test suite:
//! `tests/properties.rs` includes this file too and replays every input kept under `fuzz/regressions/TARGET/`
//! through the same function, so a crash found by the fuzzer stays a test without nightly or cargo-fuzz.
//!
//! Each function takes the raw fuzz input and panics when an invariant breaks; it never fails for a
//! merely malformed input, which the parsers must refuse with an error.

#![allow(dead_code)]

use std::collections::BTreeSet;

use wasmcache::fetch::oci::auth::DockerConfig;
use wasmcache::fetch::oci::formats::{self, Document};
use wasmcache::fetch::unbox::{self, Pick};
use wasmcache::source::ModuleUrl;

/// Cap handed to `unwrap_slice`, as the brief asks: 1 MiB.
pub const UNWRAP_LIMIT: u64 = 1 << 20;
/// A small cap as well, so that short inputs can reach it.
pub const UNWRAP_SMALL_LIMIT: u64 = 64;

/// Secrets shorter than this are not looked for in messages: a 2-character password appears in ordinary
/// words by chance.
const MIN_SECRET_LEN: usize = 6;

/// Longest error message a parser may produce for an input, whatever its size: messages reach gRPC
/// trailers and log lines.
pub const MAX_MESSAGE_LEN: usize = 8 * 1024;

/// A target's check on its raw input.
pub type Check = fn(&[u8]);

/// Every `target -> check` pair, for the replay test.
pub const TARGETS: &[(&str, Check)] = &[
    ("url", url_bytes),
    ("pull_secret", pull_secret),
    ("unwrap", unwrap),
    ("manifest", manifest),
    ("wasmplugin", wasmplugin_bytes),
];

// -----------------------------------------------------------------------------------------------------------
// url
// -----------------------------------------------------------------------------------------------------------

/// The `&str` that `fuzz_target!(|text: &str| ...)` sees for `data`: its longest valid UTF-8 prefix (as
/// `arbitrary` builds it), so a saved crash input replays as it ran.
fn utf8_prefix(data: &[u8]) -> &str {
    match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).expect("a valid prefix"),
    }
}

fn url_bytes(data: &[u8]) {
    url(utf8_prefix(data));
}

/// `ModuleUrl::parse`: a parsed URL displays without userinfo, and its display form parses again to
/// the same display; an error never repeats the password of a userinfo.
pub fn url(raw: &str) {
    let password = userinfo_password(raw);
    match ModuleUrl::parse(raw) {
        Ok(parsed) => {
            let shown = parsed.to_string();
            assert_eq!(format!("{parsed:?}"), shown, "Debug and Display differ for {raw:?}");
            if let Ok(reparsed) = url::Url::parse(&shown) {
                if matches!(reparsed.scheme(), "http" | "https") {
                    assert!(
                        reparsed.username().is_empty() && reparsed.password().is_none(),
                        "display {shown:?} of {raw:?} keeps userinfo"
                    );
                }
            }
            if let ModuleUrl::Http(u) = &parsed {
                if let Some(pw) = u.password().filter(|p| p.len() >= MIN_SECRET_LEN) {
                    let elsewhere = {
                        let mut bare = u.clone();
                        let _ = bare.set_password(None);
                        let _ = bare.set_username("");
                        bare.as_str().contains(pw)
                    };
                    assert!(
                        elsewhere || !shown.contains(pw),
                        "display {shown:?} of {raw:?} contains the password"
                    );
                }
            }
            let again = ModuleUrl::parse(&shown)
                .unwrap_or_else(|e| panic!("display {shown:?} of {raw:?} does not parse again: {e}"));
            assert_eq!(again.to_string(), shown, "display of {raw:?} is not stable");
            assert_eq!(again.scheme(), parsed.scheme());
        }
        Err(e) => {
            let message = format!("{e} {e:?}");
            assert!(
                message.len() <= MAX_MESSAGE_LEN,
                "error for {raw:?} is {} bytes",
                message.len()
            );
            if let Some(pw) = password {
                assert!(
                    !message.to_lowercase().contains(&pw),
                    "error {message:?} for {raw:?} repeats the password"
                );
            }
        }
    }
}

/// What to look for in an error about `raw`: the start (12 characters at most, lower-cased) of the password
/// of a `scheme://user:PASSWORD@host...` userinfo, as a person reads the string, when it is long enough to
/// look for and appears nowhere else in the input. The start, and not the whole password, so that a message
/// that shows a shortened input cannot hide a leak.
fn userinfo_password(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.split_once("://")?;
    // In URLs of special schemes (http, file, ...), `\` ends the authority as `/` does.
    let ends: &[char] = if scheme.eq_ignore_ascii_case("oci") {
        &['/', '?', '#']
    } else {
        &['/', '?', '#', '\\']
    };
    let authority = &rest[..rest.find(ends).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    // `oci://name:tag@sha256:hex`: without a path, one `@` before a digest separates the digest.
    let digest = authority[at + 1..].split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty() && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())
    });
    if scheme.eq_ignore_ascii_case("oci")
        && authority.len() == rest.len()
        && authority.matches('@').count() == 1
        && digest
    {
        return None;
    }
    let userinfo = &authority[..at];
    let (_, password) = userinfo.split_once(':')?;
    let needle: String = password.chars().take(12).collect::<String>().to_lowercase();
    let elsewhere = raw.replacen(userinfo, "", 1).to_lowercase();
    (needle.len() >= MIN_SECRET_LEN && !elsewhere.contains(&needle)).then_some(needle)
}

// -----------------------------------------------------------------------------------------------------------
// pull_secret
// -----------------------------------------------------------------------------------------------------------

/// `DockerConfig::parse`: neither an error nor the parsed config's `Debug` repeats an `auth`, `password`
/// or token value of the input (nor what an `auth` decodes to), and `lookup` never panics.
pub fn pull_secret(data: &[u8]) {
    let secrets = secret_values(data);
    match DockerConfig::parse(data) {
        Ok(config) => {
            let shown = format!("{config:?}");
            for s in &secrets {
                assert!(
                    !skeleton(&shown).contains(s.as_str()),
                    "Debug {shown:?} repeats secret {s:?}"
                );
            }
            for (registry, repository) in lookup_probes(data) {
                for credentials in config.lookup(&registry, &repository) {
                    assert_eq!(format!("{credentials:?}"), "<redacted>");
                    assert_eq!(credentials.to_string(), "<redacted>");
                }
            }
        }
        Err(e) => {
            let message = format!("{e} {e:?}");
            assert!(message.len() <= MAX_MESSAGE_LEN, "error is {} bytes", message.len());
            for s in &secrets {
                assert!(
                    !skeleton(&message).contains(s.as_str()),
                    "error {message:?} repeats secret {s:?}"
                );
            }
        }
    }
}

/// The fixed text of `DockerConfig`'s `Debug` and of `SecretError` messages (Display and Debug).
const SECRET_MESSAGE_TEXT: &[&str] = &[
    "DockerConfig { keys: [",
    "bytes is over the",
    "-byte limit",
    "not UTF-8 (invalid byte at offset",
    "not valid JSON (error at line",
    ", column",
    "top level",
    "auths",
    ": expected ",
    "an object",
    "a string",
    ": not base64 of user:password",
    "TooLarge { size: ",
    ", limit: ",
    "NotUtf8 { offset: ",
    "NotJson { line: ",
    "WrongShape { path: ",
    ", expected: ",
    "BadAuth { path: ",
    "<redacted>",
];

/// `text` with its fixed parts blanked out, so that a secret which merely equals a piece of the template
/// (a password `onfig { keys:`) does not count as repeated, while one that appears where input is shown
/// still does.
fn skeleton(text: &str) -> String {
    let mut out = text.to_string();
    for fixed in SECRET_MESSAGE_TEXT {
        out = out.replace(fixed, "\u{1}");
    }
    out
}

/// Secret strings of a docker config (values of `auth`, `password`, `identitytoken`, `registrytoken`, and
/// the parts of a decoded `auth`), skipping short ones, ones without a letter, and ones that also occur in
/// a key or an ordinary value, which messages may legitimately name.
fn secret_values(data: &[u8]) -> BTreeSet<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return BTreeSet::new();
    };
    let mut secrets = BTreeSet::new();
    let mut public = Vec::new();
    let mut pending = vec![&value];
    while let Some(v) = pending.pop() {
        match v {
            serde_json::Value::Object(fields) => {
                for (k, v) in fields {
                    public.push(k.clone());
                    match (k.as_str(), v) {
                        ("auth" | "password" | "identitytoken" | "registrytoken", serde_json::Value::String(s)) => {
                            secrets.insert(s.clone());
                            if k == "auth" {
                                if let Some(decoded) = decode_base64(s.trim()) {
                                    let decoded = String::from_utf8_lossy(&decoded).into_owned();
                                    if let Some((_, pw)) = decoded.split_once(':') {
                                        secrets.insert(pw.to_string());
                                    }
                                    secrets.insert(decoded);
                                }
                            }
                        }
                        (_, serde_json::Value::String(s)) => public.push(s.clone()),
                        _ => pending.push(v),
                    }
                }
            }
            serde_json::Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    // A secret without a letter could be a number the message holds (a line, a column, a size).
    secrets.retain(|s| {
        s.len() >= MIN_SECRET_LEN
            && s.chars().any(char::is_alphabetic)
            && !public.iter().any(|p| p.contains(s.as_str()))
    });
    secrets
}

/// Registries and repositories to look up: every key of the input cut as a host, and a few fixed ones.
fn lookup_probes(data: &[u8]) -> Vec<(String, String)> {
    let mut probes = vec![
        ("docker.io".to_string(), "library/x".to_string()),
        ("127.0.0.1:5000".to_string(), "a/b".to_string()),
        (String::new(), String::new()),
    ];
    if let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(data) {
        let keys = match top.get("auths") {
            Some(serde_json::Value::Object(auths)) => auths.keys().cloned().collect::<Vec<_>>(),
            _ => top.keys().cloned().collect(),
        };
        for key in keys.into_iter().take(16) {
            let bare = key.trim_start_matches("https://").trim_start_matches("http://");
            let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
            probes.push((host.to_string(), path.to_string()));
            probes.push((key.clone(), key));
        }
    }
    probes
}

/// Standard base64, padding optional; `None` when it is not base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

// -----------------------------------------------------------------------------------------------------------
// unwrap
// -----------------------------------------------------------------------------------------------------------

/// `unwrap_slice` with both picks and two caps: never panics, never writes more than the cap, and what
/// it writes for a payload that is already Wasm is the payload itself.
pub fn unwrap(data: &[u8]) {
    for pick in [Pick::PluginOrOnlyWasm, Pick::PluginOnly] {
        for limit in [UNWRAP_LIMIT, UNWRAP_SMALL_LIMIT] {
            let mut out = Vec::new();
            let result = unbox::unwrap_slice(data, &mut out, limit, pick);
            assert!(
                out.len() as u64 <= limit,
                "unwrap wrote {} bytes over the {limit}-byte cap ({pick:?}, {result:?})",
                out.len()
            );
            match result {
                Ok(()) if unbox::sniff(data) == unbox::Kind::Wasm => assert_eq!(out, data),
                Ok(()) => {}
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.len() <= MAX_MESSAGE_LEN, "error is {} bytes", message.len());
                }
            }
        }
    }
    let _ = unbox::check_wasm(data);
}

// -----------------------------------------------------------------------------------------------------------
// manifest
// -----------------------------------------------------------------------------------------------------------

/// Content types the first input byte chooses from.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(formats::OCI_MANIFEST),
    Some(formats::OCI_INDEX),
    Some(formats::DOCKER_MANIFEST),
    Some(formats::DOCKER_MANIFEST_LIST),
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("text/plain"),
    Some(""),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
];

/// Platforms to fall back to in an index.
const FALLBACKS: &[&str] = &["linux/amd64", "linux/arm64/v8", "", "/", "wasip1/wasm"];

/// `formats::parse` by the first byte's content type, then `select_layer` or `select_platform`: never
/// panics, chooses only what the document lists, and keeps error messages bounded.
pub fn manifest(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let check_message = |e: &formats::FormatError| {
        let message = e.to_string();
        assert!(
            message.len() <= MAX_MESSAGE_LEN,
            "error is {} bytes: {:.200}",
            message.len(),
            message
        );
    };
    match formats::parse(content_type, body) {
        Ok(Document::Image(m)) => match formats::select_layer(&m) {
            Ok(selected) => {
                assert!(
                    m.layers()
                        .iter()
                        .any(|l| l.digest() == selected.layer.digest() && l.media_type() == selected.layer.media_type()),
                    "selected a layer the manifest does not list"
                );
            }
            Err(e) => check_message(&e),
        },
        Ok(Document::Index(index)) => {
            for fallback in FALLBACKS {
                match formats::select_platform(&index, fallback) {
                    Ok(entry) => assert!(
                        index.manifests().iter().any(|e| std::ptr::eq(e, entry)),
                        "selected an entry the index does not list"
                    ),
                    Err(e) => check_message(&e),
                }
            }
        }
        Err(e) => check_message(&e),
    }
}

// -----------------------------------------------------------------------------------------------------------
// wasmplugin
// -----------------------------------------------------------------------------------------------------------

fn wasmplugin_bytes(data: &[u8]) {
    wasmplugin(utf8_prefix(data));
}

/// `wasmplugin::load`: never panics; every plugin it returns has a name and a url, and loads back
/// unchanged from its own JSON serialization.
pub fn wasmplugin(text: &str) {
    for result in wasmcache::wasmplugin::load("f.yaml", text) {
        match result {
            Ok(plugin) => {
                assert!(plugin.metadata.name.as_deref().is_some_and(|n| !n.trim().is_empty()));
                assert!(!plugin.spec.url.trim().is_empty());
                let json = serde_json::to_string(&plugin).expect("a plugin serializes");
                let again = wasmcache::wasmplugin::load("again.json", &json);
                assert_eq!(again.len(), 1, "{json}");
                assert_eq!(again[0].as_ref().ok(), Some(&plugin), "{json}");
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.len() <= MAX_MESSAGE_LEN,
                    "error is {} bytes: {:.200}",
                    message.len(),
                    message
                );
            }
        }
    }
}
