//! Property tests of the parsers of untrusted input: references, pull secrets, archive unwrapping and manifest
//! layouts. Generated valid inputs must parse to what they say; arbitrary inputs must be refused without a panic,
//! within the size cap, and without repeating a secret. The invariants for arbitrary inputs are those of the
//! fuzz targets (`fuzz/checks.rs`), which also replays here every crash input kept under `fuzz/regressions/`.

#[path = "../fuzz/checks.rs"]
mod fuzz_checks;

use std::io::Write as _;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use wasmcache::fetch::oci::auth::DockerConfig;
use wasmcache::fetch::oci::formats::{self, Document};
use wasmcache::fetch::unbox::{self, Pick, UnboxError, WASM_HEADER};
use wasmcache::source::{ModuleUrl, UrlError, MAX_URL_LEN};

/// Enough cases to find the edges, few enough that the whole file runs in a few seconds.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        // A failure is reproduced from its seed printed in the message; no regression files are written
        // next to the test sources.
        failure_persistence: None,
        ..ProptestConfig::with_cases(CASES)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// References and URLs
// ---------------------------------------------------------------------------------------------------------------

/// A registry host as references write it: an IPv4 literal, `localhost`, or a name with a dot; with or without a
/// port.
fn registry_host() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("127.0.0.1".to_string()),
        Just("localhost".to_string()),
        prop::collection::vec("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", 2..4).prop_map(|labels| labels.join(".")),
    ];
    (name, prop::option::of(1u16..=65535)).prop_map(|(name, port)| match port {
        Some(port) => format!("{name}:{port}"),
        // `localhost` alone is a registry; a bare name without a dot would be a Docker Hub repository.
        None => name,
    })
}

/// A host for http URLs: as `registry_host`, but a name never ends in a numeric label (`a.0`), which URL
/// parsing reads as an IPv4 address.
fn http_host() -> impl Strategy<Value = String> {
    registry_host().prop_filter("no numeric last label", |h| {
        let name = h.rsplit_once(':').map_or(h.as_str(), |(name, _)| name);
        name == "127.0.0.1" || !name.rsplit('.').next().unwrap().chars().all(|c| c.is_ascii_digit())
    })
}

fn repository() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", 1..4).prop_map(|parts| parts.join("/"))
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}"
}

fn hex64() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

/// A password that cannot occur by chance in a host, a path or a message.
fn password() -> impl Strategy<Value = String> {
    "[!-~]{6,24}".prop_map(|tail| format!("PW-{tail}"))
}

proptest! {
    #![proptest_config(config())]

    /// `oci://host[:port]/repo[:tag][@sha256:hex]` parses to its parts and displays as it was written (with the
    /// `latest` tag filled in when neither tag nor digest is given); the display form parses to the same.
    #[test]
    fn oci_reference_round_trips(
        host in registry_host(),
        repo in repository(),
        tag in prop::option::of(tag()),
        digest in prop::option::of(hex64()),
    ) {
        let mut raw = format!("oci://{host}/{repo}");
        if let Some(tag) = &tag {
            raw.push_str(&format!(":{tag}"));
        }
        if let Some(digest) = &digest {
            raw.push_str(&format!("@sha256:{digest}"));
        }
        let parsed = ModuleUrl::parse(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        let ModuleUrl::Oci(image) = &parsed else { panic!("{raw} is not oci") };
        prop_assert_eq!(image.registry(), host.as_str());
        prop_assert_eq!(image.repository(), repo.as_str());
        let expected_tag = tag.clone().or_else(|| digest.is_none().then(|| "latest".to_string()));
        prop_assert_eq!(image.tag(), expected_tag.as_deref());
        prop_assert_eq!(image.digest().map(|d| d.to_string()), digest.clone());

        let mut expected = format!("oci://{host}/{repo}");
        if let Some(tag) = &expected_tag {
            expected.push_str(&format!(":{tag}"));
        }
        if let Some(digest) = &digest {
            expected.push_str(&format!("@sha256:{digest}"));
        }
        prop_assert_eq!(parsed.to_string(), expected.clone());
        let again = ModuleUrl::parse(&expected).unwrap();
        prop_assert_eq!(again, parsed);
    }

    /// An http(s) URL with userinfo displays without it, parses again from its display, and a malformed
    /// variant of it never repeats the password in the error.
    #[test]
    fn http_url_hides_userinfo_and_round_trips(
        https in any::<bool>(),
        host in http_host(),
        path in prop::collection::vec("[a-zA-Z0-9._~-]{1,12}", 0..4),
        user in "[a-z]{1,8}",
        // Unreserved characters and sub-delimiters: what a userinfo password may hold unencoded.
        pw in "PW-[A-Za-z0-9._~!$&'()*+,;=-]{6,24}",
    ) {
        let scheme = if https { "https" } else { "http" };
        let raw = format!("{scheme}://{user}:{pw}@{host}/{}", path.join("/"));
        let parsed = ModuleUrl::parse(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        let shown = parsed.to_string();
        prop_assert!(!shown.contains(&pw), "{} shows the password", shown);
        prop_assert!(!shown.contains('@'), "{} shows userinfo", shown);
        prop_assert_eq!(ModuleUrl::parse(&shown).unwrap().to_string(), shown);
        fuzz_checks::url(&raw);

        for bad in [
            format!("{scheme}://{user}:{pw}@[{host}/x"),
            format!("oci://{user}:{pw}@{host}/repo:v1"),
            format!("{scheme}://{user}:{pw}@/x"),
            format!("{scheme}://{user}:{pw}@{host}:99999/x"),
        ] {
            if let Err(e) = ModuleUrl::parse(&bad) {
                prop_assert!(!e.to_string().contains(&pw), "{:?} -> {}", bad, e);
            }
        }
    }

    /// Any string: no panic, and the invariants of the `url` fuzz target.
    #[test]
    fn arbitrary_strings_never_panic(raw in any::<String>()) {
        fuzz_checks::url(&raw);
    }

    /// Strings made of URL characters behind a real scheme reach deeper into the parsers than random text.
    #[test]
    fn url_shaped_strings_keep_the_invariants(
        scheme in select(&["oci", "http", "https", "file", "OCI", "HTTP", "ftp", ""][..]),
        rest in r"[-a-zA-Z0-9.:/@\[\]%?#_~=+!$&'()*,;]{0,80}",
    ) {
        fuzz_checks::url(&format!("{scheme}://{rest}"));
    }

    /// A control character anywhere, or more than `MAX_URL_LEN` bytes, is refused before parsing.
    #[test]
    fn control_characters_and_huge_urls_are_refused(
        host in registry_host(),
        at in 0usize..40,
        control in prop_oneof![0u32..0x20, 0x7fu32..0xa0].prop_map(|c| char::from_u32(c).unwrap()),
    ) {
        let mut raw: Vec<char> = format!("http://{host}/filters/module.wasm").chars().collect();
        raw.insert(at.min(raw.len()), control);
        let raw: String = raw.into_iter().collect();
        prop_assert_eq!(ModuleUrl::parse(&raw), Err(UrlError::ControlCharacter));

        let huge = format!("http://{host}/{}", "a".repeat(MAX_URL_LEN));
        prop_assert_eq!(ModuleUrl::parse(&huge), Err(UrlError::TooLong));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pull secrets
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct SecretEntry {
    /// `host[:port]` as the image reference names the registry.
    registry: String,
    /// The config key: the registry, maybe behind `https://`.
    key: String,
    user: String,
    password: String,
    /// `auth` (base64 of `user:password`, maybe unpadded) rather than `username`/`password`.
    as_auth: bool,
    unpadded: bool,
}

fn secret_entry() -> impl Strategy<Value = SecretEntry> {
    (
        prop::collection::vec("[a-z][a-z0-9-]{0,8}[a-z0-9]", 2..4),
        prop::option::of(1u16..=65535),
        any::<bool>(),
        "[a-zA-Z0-9._-]{1,16}",
        password(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(labels, port, scheme, user, password, as_auth, unpadded)| {
            let mut registry = labels.join(".");
            if let Some(port) = port {
                registry.push_str(&format!(":{port}"));
            }
            let key = if scheme {
                format!("https://{registry}")
            } else {
                registry.clone()
            };
            SecretEntry {
                registry,
                key,
                user,
                password,
                as_auth,
                unpadded,
            }
        })
}

fn entry_json(entry: &SecretEntry) -> Value {
    if entry.as_auth {
        let mut auth = base64(format!("{}:{}", entry.user, entry.password).as_bytes());
        if entry.unpadded {
            auth = auth.trim_end_matches('=').to_string();
        }
        json!({"auth": auth, "email": "someone@example.com"})
    } else {
        json!({"username": entry.user, "password": entry.password})
    }
}

/// A `.dockerconfigjson` (or, `legacy`, a `.dockercfg`) with `decoys` before and after `entry`.
fn secret_json(entry: &SecretEntry, decoys: &[SecretEntry], legacy: bool) -> Value {
    let mut entries = serde_json::Map::new();
    for (i, decoy) in decoys.iter().enumerate() {
        entries.insert(format!("decoy{i}.{}", decoy.registry), entry_json(decoy));
    }
    entries.insert(entry.key.clone(), entry_json(entry));
    if legacy {
        Value::Object(entries)
    } else {
        json!({"auths": entries, "credsStore": "desktop"})
    }
}

proptest! {
    #![proptest_config(config())]

    /// A generated config parses, and `lookup` finds the entry for its registry first, whatever the key
    /// spelling and entry form.
    #[test]
    fn valid_secret_parses_and_lookup_finds_its_entry(
        entry in secret_entry(),
        decoys in prop::collection::vec(secret_entry(), 0..3),
        legacy in any::<bool>(),
        repo in repository(),
    ) {
        let bytes = serde_json::to_vec(&secret_json(&entry, &decoys, legacy)).unwrap();
        let config = DockerConfig::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let found = config.lookup(&entry.registry, &repo);
        let first = found.first().expect("the entry matches its registry");
        prop_assert_eq!(first.username(), entry.user.as_str());
        prop_assert_eq!(first.password(), entry.password.as_str());
        let shown = format!("{config:?}");
        prop_assert!(!shown.contains(&entry.password), "Debug shows the password: {}", shown);
        fuzz_checks::pull_secret(&bytes);
    }

    /// Broken variants of a config that holds a password are refused with an error that never repeats it.
    #[test]
    fn broken_secret_errors_never_repeat_the_password(
        entry in secret_entry(),
        legacy in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        breakage in 0usize..6,
    ) {
        let good = secret_json(&entry, &[], legacy);
        let bytes = match breakage {
            // Cut short anywhere.
            0 => {
                let full = serde_json::to_vec(&good).unwrap();
                full[..cut.index(full.len())].to_vec()
            }
            // A field of the wrong type next to the secret.
            1 => {
                let mut fields = entry_json(&entry);
                fields["username"] = json!(5);
                serde_json::to_vec(&json!({"auths": {entry.key.clone(): fields}})).unwrap()
            }
            2 => {
                let mut fields = entry_json(&entry);
                fields["identitytoken"] = json!(["x"]);
                serde_json::to_vec(&json!({"auths": {entry.key.clone(): fields}})).unwrap()
            }
            // `auths` of the wrong type, holding the secret.
            3 => serde_json::to_vec(&json!({"auths": [entry_json(&entry)]})).unwrap(),
            // An `auth` that is not base64, whose text is the password.
            4 => serde_json::to_vec(&json!({"auths": {entry.key.clone(): {"auth": entry.password}}})).unwrap(),
            // The secret inside a non-UTF-8 document.
            _ => {
                let mut bytes = serde_json::to_vec(&good).unwrap();
                bytes.insert(cut.index(bytes.len()), 0xff);
                bytes
            }
        };
        if let Err(e) = DockerConfig::parse(&bytes) {
            let message = format!("{e} {e:?}");
            prop_assert!(!message.contains(&entry.password), "{}", message);
            let auth = base64(format!("{}:{}", entry.user, entry.password).as_bytes());
            prop_assert!(!message.contains(auth.trim_end_matches('=')), "{}", message);
        } else {
            prop_assert!(breakage == 0 || breakage == 5, "breakage {} was accepted", breakage);
        }
        fuzz_checks::pull_secret(&bytes);
    }

    /// Arbitrary bytes, and arbitrary JSON with the keys a config has: no panic, no secret in a message.
    #[test]
    fn arbitrary_secrets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), value in json_value()) {
        fuzz_checks::pull_secret(&bytes);
        fuzz_checks::pull_secret(&serde_json::to_vec(&value).unwrap());
        fuzz_checks::pull_secret(&serde_json::to_vec(&json!({"auths": value})).unwrap());
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Unwrapping
// ---------------------------------------------------------------------------------------------------------------

const LIMIT: u64 = 1 << 20;

/// A module: the Wasm header and random bytes.
fn module() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..3000).prop_map(|tail| {
        let mut module = WASM_HEADER.to_vec();
        module.extend(tail);
        module
    })
}

/// Other archive entries: names that never end in `.wasm`, or `.wasm` names that must never be taken
/// (absolute, or with `..`).
fn extra_entries() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        "[a-z]{1,8}(\\.txt|\\.md|\\.wasm\\.sig|)",
        "[a-z]{1,4}/[a-z]{1,8}\\.json",
        "(\\.\\./|/|a/\\.\\./\\.\\./)[a-z]{1,8}\\.wasm",
    ];
    prop::collection::vec((name, prop::collection::vec(any::<u8>(), 0..700)), 0..5)
}

#[derive(Clone, Copy, Debug)]
enum Packing {
    Raw,
    Gzip,
    Tar,
    TarGz,
}

fn packing() -> impl Strategy<Value = Packing> {
    select(&[Packing::Raw, Packing::Gzip, Packing::Tar, Packing::TarGz][..])
}

/// A ustar archive written byte by byte, so entry names are exactly as given (the `tar` crate's builder
/// refuses `..` and strips leading `/`, which is what hostile archives have).
fn raw_tar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut header = [0u8; 512];
        assert!(name.len() <= 100, "name fits the ustar name field");
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn pack(module: &[u8], packing: Packing, name: &str, extras: &[(String, Vec<u8>)], at: usize) -> Vec<u8> {
    let archive = || {
        let mut entries = extras.to_vec();
        entries.insert(at.min(entries.len()), (name.to_string(), module.to_vec()));
        raw_tar(&entries)
    };
    match packing {
        Packing::Raw => module.to_vec(),
        Packing::Gzip => gzip(module),
        Packing::Tar => archive(),
        Packing::TarGz => gzip(&archive()),
    }
}

fn unwrap(payload: &[u8], limit: u64, pick: Pick) -> (Result<(), UnboxError>, Vec<u8>) {
    let mut out = Vec::new();
    let result = unbox::unwrap_slice(payload, &mut out, limit, pick);
    assert!(
        out.len() as u64 <= limit,
        "{} bytes written over the {limit}-byte cap",
        out.len()
    );
    (result, out)
}

proptest! {
    #![proptest_config(config())]

    /// A module packed raw, as gzip, tar or tar.gz (among other entries) comes back byte for byte.
    #[test]
    fn packed_module_unwraps_byte_identical(
        module in module(),
        packing in packing(),
        plugin_name in any::<bool>(),
        extras in extra_entries(),
        at in 0usize..6,
    ) {
        let name = if plugin_name { "plugin.wasm" } else { "dir/filter.wasm" };
        let payload = pack(&module, packing, name, &extras, at);
        let (result, out) = unwrap(&payload, LIMIT, Pick::PluginOrOnlyWasm);
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(&out, &module);

        // An image layer holds its module as plugin.wasm only.
        let (result, out) = unwrap(&payload, LIMIT, Pick::PluginOnly);
        let archived = matches!(packing, Packing::Tar | Packing::TarGz);
        if plugin_name || !archived {
            prop_assert!(result.is_ok(), "{:?}", result);
            prop_assert_eq!(&out, &module);
        } else {
            prop_assert!(matches!(result, Err(UnboxError::Archive(_))), "{:?}", result);
        }
    }

    /// One byte under the module's size, every packing is refused as too large; a raw or gzip module of
    /// exactly the cap passes.
    #[test]
    fn module_over_the_cap_is_too_large(module in module(), packing in packing(), extras in extra_entries()) {
        let payload = pack(&module, packing, "plugin.wasm", &extras, 0);
        let size = module.len() as u64;
        let (result, _) = unwrap(&payload, size - 1, Pick::PluginOrOnlyWasm);
        prop_assert!(matches!(result, Err(UnboxError::TooLarge { .. })), "{:?}", result);
        if matches!(packing, Packing::Raw | Packing::Gzip) {
            let (result, out) = unwrap(&payload, size, Pick::PluginOrOnlyWasm);
            prop_assert!(result.is_ok(), "{:?}", result);
            prop_assert_eq!(out, module);
        }
    }

    /// Arbitrary bytes (alone, gzipped, or behind a tar header) never panic and never exceed the cap.
    #[test]
    fn arbitrary_payloads_never_exceed_the_cap(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        fuzz_checks::unwrap(&bytes);
        fuzz_checks::unwrap(&gzip(&bytes));
        let mut tarred = raw_tar(&[("plugin.wasm".to_string(), bytes.clone())]);
        let (result, _) = unwrap(&tarred, 16, Pick::PluginOrOnlyWasm);
        prop_assert!(matches!(result, Err(UnboxError::TooLarge { .. })), "{:?}", result);
        // A header whose size field lies.
        tarred[124..136].copy_from_slice(b"77777777777\0");
        fuzz_checks::unwrap(&tarred);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Manifest layouts
// ---------------------------------------------------------------------------------------------------------------

const CNCF_LAYER: &str = "application/wasm";
const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
const SOLO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const OCI_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Layer types no layout takes.
const UNRELATED_LAYERS: &[&str] = &[
    "text/plain",
    "application/octet-stream",
    "application/vnd.example.blob.v1",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.module.wasm.descriptor.v1+json",
];

#[derive(Clone, Copy, Debug)]
struct Layout {
    manifest_type: &'static str,
    config: &'static str,
    layer: &'static str,
    format: &'static str,
    pick: Pick,
    /// Image layouts take the last filesystem layer, so earlier ones may be filesystem layers too.
    image: bool,
    compat_annotation: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    let artifact = |config, layer, format| Layout {
        manifest_type: formats::OCI_MANIFEST,
        config,
        layer,
        format,
        pick: Pick::PluginOrOnlyWasm,
        image: false,
        compat_annotation: false,
    };
    let image = |manifest_type, layer, format, compat_annotation| Layout {
        manifest_type,
        config: "application/vnd.oci.image.config.v1+json",
        layer,
        format,
        pick: Pick::PluginOnly,
        image: true,
        compat_annotation,
    };
    select(vec![
        artifact("application/vnd.wasm.config.v0+json", CNCF_LAYER, "cncf"),
        artifact("application/vnd.wasm.config.v1+json", WASM_TO_OCI_LAYER, "wasm-to-oci"),
        artifact("application/vnd.module.wasm.config.v1+json", SOLO_LAYER, "solo"),
        image(formats::OCI_MANIFEST, OCI_TAR_GZIP, "oci-image", false),
        image(formats::OCI_MANIFEST, OCI_TAR, "oci-image", false),
        image(formats::OCI_MANIFEST, OCI_TAR_GZIP, "compat", true),
        image(formats::DOCKER_MANIFEST, DOCKER_TAR_GZIP, "docker-image", false),
        image(formats::DOCKER_MANIFEST, DOCKER_TAR, "docker-image", false),
    ])
}

fn descriptor(media_type: &str, n: u64) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{n:064x}"), "size": n + 1})
}

proptest! {
    #![proptest_config(config())]

    /// Every layout, among unrelated layers (and, for images, earlier filesystem layers), selects its module
    /// layer, whether the type comes from the Content-Type, the `mediaType` field or the shape.
    #[test]
    fn each_layout_selects_its_layer(
        layout in layout(),
        before in prop::collection::vec(select(UNRELATED_LAYERS), 0..4),
        after in prop::collection::vec(select(UNRELATED_LAYERS), 0..4),
        earlier_image_layers in 0usize..3,
        content_type in 0usize..3,
    ) {
        let mut layers = Vec::new();
        let mut n = 1;
        for media_type in &before {
            layers.push(descriptor(media_type, n));
            n += 1;
        }
        if layout.image {
            for _ in 0..earlier_image_layers {
                layers.push(descriptor(layout.layer, n));
                n += 1;
            }
        }
        let target = n;
        layers.push(descriptor(layout.layer, target));
        for media_type in &after {
            n += 1;
            layers.push(descriptor(media_type, n));
        }
        let mut manifest = json!({
            "schemaVersion": 2,
            "config": descriptor(layout.config, 999),
            "layers": layers,
        });
        if layout.compat_annotation {
            manifest["annotations"] = json!({"module.wasm.image/variant": "compat"});
        }
        let declared = match content_type {
            0 => Some(layout.manifest_type),
            1 => {
                manifest["mediaType"] = json!(layout.manifest_type);
                Some("application/json")
            }
            _ => {
                manifest["mediaType"] = json!(layout.manifest_type);
                None
            }
        };
        let body = serde_json::to_vec(&manifest).unwrap();
        let Ok(Document::Image(parsed)) = formats::parse(declared, &body) else {
            panic!("not parsed as an image: {}", String::from_utf8_lossy(&body))
        };
        let selected = formats::select_layer(&parsed).unwrap();
        prop_assert_eq!(selected.layer.digest().as_ref(), format!("sha256:{target:064x}"));
        prop_assert_eq!(selected.format, layout.format);
        prop_assert_eq!(selected.pick, layout.pick);
    }

    /// An index chooses its first Wasm platform wherever it sits, else the fallback platform.
    #[test]
    fn index_selects_wasm_then_fallback(
        others in prop::collection::vec(select(&[("linux", "arm64", None), ("windows", "amd64", None),
            ("linux", "arm", Some("v7")), ("linux", "s390x", None), ("linux", "amd64", None)][..]), 0..5),
        wasm in prop::option::of((select(&["wasip1", "wasip2", "wasi"][..]), 0usize..6)),
        docker in any::<bool>(),
    ) {
        let mut entries: Vec<Value> = others
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut platform = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = json!(v);
                }
                let mut e = descriptor(formats::OCI_MANIFEST, i as u64 + 1);
                e["platform"] = platform;
                e
            })
            .collect();
        if let Some((os, at)) = wasm {
            let mut e = descriptor(formats::OCI_MANIFEST, 100);
            e["platform"] = json!({"os": os, "architecture": "wasm"});
            entries.insert(at.min(entries.len()), e);
        }
        let media_type = if docker { formats::DOCKER_MANIFEST_LIST } else { formats::OCI_INDEX };
        let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
        let body = serde_json::to_vec(&index).unwrap();
        let Ok(Document::Index(index)) = formats::parse(Some(media_type), &body) else { panic!("not an index") };
        let chosen = formats::select_platform(&index, "linux/amd64");
        let fallback = others.iter().position(|(os, arch, _)| (*os, *arch) == ("linux", "amd64"));
        match (wasm, fallback) {
            (Some(_), _) => prop_assert_eq!(chosen.unwrap().digest().as_ref(), format!("sha256:{:064x}", 100)),
            (None, Some(i)) => prop_assert_eq!(chosen.unwrap().digest().as_ref(), format!("sha256:{:064x}", i + 1)),
            (None, None) => prop_assert!(
                matches!(chosen, Err(formats::FormatError::NoPlatform { .. })),
                "expected no platform, got {:?}",
                chosen
            ),
        }
    }

    /// Arbitrary JSON built from manifest vocabulary, under every Content-Type: no panic, a layer only from the
    /// document, bounded messages.
    #[test]
    fn arbitrary_manifests_never_panic(value in json_value(), selector in any::<u8>()) {
        let mut input = vec![selector];
        input.extend(serde_json::to_vec(&value).unwrap());
        fuzz_checks::manifest(&input);
    }
}

/// JSON whose keys and strings are mostly those of manifests and docker configs, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let word = select(
        &[
            "mediaType",
            "layers",
            "manifests",
            "config",
            "digest",
            "size",
            "platform",
            "os",
            "architecture",
            "variant",
            "annotations",
            "schemaVersion",
            "auths",
            "auth",
            "username",
            "password",
            "identitytoken",
            "127.0.0.1:5000",
            "https://index.docker.io/v1/",
            formats::OCI_MANIFEST,
            formats::OCI_INDEX,
            formats::DOCKER_MANIFEST,
            CNCF_LAYER,
            OCI_TAR_GZIP,
            "wasm",
            "wasip1",
            "linux",
            "amd64",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "module.wasm.image/variant",
            "compat",
        ][..],
    )
    .prop_map(str::to_string);
    let string = prop_oneof![3 => word.clone(), 1 => any::<String>()];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        string.clone().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let key = prop_oneof![3 => word.clone(), 1 => any::<String>()];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((key, inner), 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Fuzz findings
// ---------------------------------------------------------------------------------------------------------------

/// Every input under `fuzz/regressions/TARGET/` (crashes the fuzzers found, kept after the fix) and every seed
/// under `fuzz/corpus/TARGET/seed-*` passes its target's checks.
#[test]
fn fuzz_regressions_and_seeds_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, check) in fuzz_checks::TARGETS {
        for dir in [root.join("regressions").join(target), root.join("corpus").join(target)] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if dir.ends_with(format!("corpus/{target}")) && !name.starts_with("seed-") {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{target}: {} fails its checks again", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 5, "only {replayed} inputs found under {}", root.display());
}
