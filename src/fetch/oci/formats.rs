//! Which manifest layout an image uses, and which of its blobs holds the module. Every layout in real
//! use is read: the CNCF Wasm artifact, wasm-to-oci, Solo's artifact, and Wasm images in OCI or Docker
//! image form (a tar+gzip layer with `plugin.wasm`); indexes pick a Wasm platform first.

use crate::fetch::unbox::Pick;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The Accept header for manifests. Without these a distribution registry answers 404 for OCI
/// manifests and rewrites Docker v2 manifests to schema 1.
pub(crate) const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// CNCF "Wasm OCI artifact" layer (config `application/vnd.wasm.config.v0+json`).
const CNCF_LAYER: &str = "application/wasm";
/// wasm-to-oci layer (config `application/vnd.wasm.config.v1+json`).
const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Solo's (WebAssembly Hub) layer.
const SOLO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Image layers that may hold `plugin.wasm` (Istio's compat variant, and Docker images).
const IMAGE_LAYERS: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// A parsed manifest document.
#[derive(Debug)]
pub enum Document {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// The blob that holds the module, and how it is packed.
#[derive(Clone, Debug)]
pub struct Selected {
    pub layer: Descriptor,
    /// Which layout was recognised, for logs and errors.
    pub format: &'static str,
    /// For image layers: only `plugin.wasm` is the module.
    pub pick: Pick,
}

/// Why an image could not be read as a Wasm module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("manifest is not valid JSON of its type ({media_type}): {reason}")]
    Malformed { media_type: String, reason: String },
    #[error("manifest media type {0:?} is not supported (schema 1 and unknown types are not read)")]
    UnsupportedMediaType(String),
    #[error("image is not a Wasm module in any known layout: {0}")]
    NoModule(String),
    #[error("image index has no manifest for a Wasm platform or for {fallback}; it has: {available}")]
    NoPlatform { fallback: String, available: String },
}

/// A document's media type as a registry endpoint must serve it again: the Content-Type it came with, else its
/// `mediaType` field, else the OCI type its shape says.
pub(crate) fn media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let declared = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if let Some(d) = declared.filter(|d| !d.is_empty() && d != "application/json" && d != "text/plain") {
        return d;
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape {
            media_type: Some(m), ..
        }) => m,
        Ok(Shape { manifests: Some(_), .. }) => OCI_INDEX.to_string(),
        _ => OCI_MANIFEST.to_string(),
    }
}

/// Parses a manifest by its Content-Type, falling back to its `mediaType` field and then its shape.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Document, FormatError> {
    let declared = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let malformed = |media_type: &str, e: serde_json::Error| FormatError::Malformed {
        media_type: shown(media_type),
        reason: shortened(&e.to_string()),
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed(declared.as_deref().unwrap_or("unknown"), e))?;
    let field = value.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned);
    let media_type = match declared.as_deref() {
        Some(d) if !d.is_empty() && d != "application/json" && d != "text/plain" => d.to_string(),
        _ => match field {
            Some(f) => f,
            None if value.get("manifests").is_some() => OCI_INDEX.to_string(),
            None if value.get("layers").is_some() => OCI_MANIFEST.to_string(),
            None => return Err(FormatError::UnsupportedMediaType("none declared".into())),
        },
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => serde_json::from_value(value)
            .map(|m| Document::Image(Box::new(m)))
            .map_err(|e| malformed(&media_type, e)),
        OCI_INDEX | DOCKER_MANIFEST_LIST => serde_json::from_value(value)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| malformed(&media_type, e)),
        other => Err(FormatError::UnsupportedMediaType(other.chars().take(128).collect())),
    }
}

/// Finds the module's layer in an image manifest.
pub fn select_layer(manifest: &ImageManifest) -> Result<Selected, FormatError> {
    for (media_type, format) in [
        (CNCF_LAYER, "cncf"),
        (WASM_TO_OCI_LAYER, "wasm-to-oci"),
        (SOLO_LAYER, "solo"),
    ] {
        let matching: Vec<&Descriptor> = manifest
            .layers()
            .iter()
            .filter(|l| l.media_type().as_ref() == media_type)
            .collect();
        match matching.as_slice() {
            [] => {}
            [one] => {
                return Ok(Selected {
                    layer: (*one).clone(),
                    format,
                    pick: Pick::PluginOrOnlyWasm,
                })
            }
            many => {
                return Err(FormatError::NoModule(format!(
                    "{} layers of type {media_type}, so the module is ambiguous",
                    many.len()
                )))
            }
        }
    }
    // Image form: the module is `plugin.wasm` in the last filesystem layer.
    if let Some(last) = manifest
        .layers()
        .iter()
        .rev()
        .find(|l| IMAGE_LAYERS.contains(&l.media_type().as_ref()))
    {
        let format = match manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get("module.wasm.image/variant"))
        {
            Some(v) if v == "compat" => "compat",
            _ if last.media_type().as_ref().contains("docker") => "docker-image",
            _ => "oci-image",
        };
        return Ok(Selected {
            layer: last.clone(),
            format,
            pick: Pick::PluginOnly,
        });
    }
    let layers = listed(manifest.layers().iter().map(|l| l.media_type().as_ref()));
    Err(FormatError::NoModule(format!(
        "config {}, layers [{layers}]; tried a {CNCF_LAYER} layer (CNCF), a {WASM_TO_OCI_LAYER} layer (wasm-to-oci), \
         a {SOLO_LAYER} layer (Solo), and a tar or tar+gzip image layer holding plugin.wasm",
        shown(manifest.config().media_type().as_ref()),
    )))
}

/// Most items of a manifest (layer types, platforms) that an error message lists.
const MAX_LISTED: usize = 10;
/// Longest string from a manifest (a media type, a platform) that an error message repeats.
const MAX_SHOWN: usize = 128;

/// Error messages repeat what the registry sent, and a manifest can be megabytes: each string is cut to
/// [`MAX_SHOWN`] characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A parser's message, which may quote a whole string value of the manifest: its start and its end (where
/// serde_json puts the line and column), without the middle.
fn shortened(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= 4 * MAX_SHOWN {
        return text.to_string();
    }
    let head: String = text.chars().take(2 * MAX_SHOWN).collect();
    let tail: String = text.chars().skip(chars - MAX_SHOWN).collect();
    format!("{head}…{tail}")
}

/// The first [`MAX_LISTED`] items, each [`shown`], and how many more there are.
fn listed<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = items.len();
    let mut out: Vec<String> = items.take(MAX_LISTED).map(shown).collect();
    if total > MAX_LISTED {
        out.push(format!("and {} more", total - MAX_LISTED));
    }
    out.join(", ")
}

/// Chooses an index entry: a Wasm platform (arch `wasm`, os `wasip1`, `wasip2` or `wasi`) first, then
/// the fallback `os/arch[/variant]`.
pub fn select_platform<'a>(index: &'a ImageIndex, fallback: &str) -> Result<&'a Descriptor, FormatError> {
    let platform_of = |e: &Descriptor| {
        e.platform().as_ref().map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
                s.push('/');
                s.push_str(v);
            }
            s
        })
    };
    let is_wasm = |e: &Descriptor| {
        e.platform().as_ref().is_some_and(|p| {
            p.architecture().to_string() == "wasm"
                && matches!(p.os().to_string().as_str(), "wasip1" | "wasip2" | "wasi")
        })
    };
    if let Some(entry) = index.manifests().iter().find(|e| is_wasm(e)) {
        return Ok(entry);
    }
    let wanted = fallback.to_ascii_lowercase();
    let matches_fallback = |e: &Descriptor| match platform_of(e) {
        // `linux/arm64` also matches an entry with variant `v8`; a variant in the fallback must match.
        Some(p) => p == wanted || (wanted.matches('/').count() == 1 && p.starts_with(&format!("{wanted}/"))),
        None => false,
    };
    if let Some(entry) = index.manifests().iter().find(|e| matches_fallback(e)) {
        return Ok(entry);
    }
    let available: Vec<String> = index
        .manifests()
        .iter()
        .map(|e| platform_of(e).unwrap_or_else(|| "(no platform)".into()))
        .collect();
    Err(FormatError::NoPlatform {
        fallback: fallback.to_string(),
        available: if available.is_empty() {
            "no manifests".into()
        } else {
            listed(available.iter().map(String::as_str))
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[&str]) -> ImageManifest {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .enumerate()
            .map(|(i, mt)| serde_json::json!({"mediaType": mt, "digest": format!("sha256:{:064x}", i), "size": 1}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": format!("sha256:{:064x}", 99), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn index(platforms: &[(&str, &str)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{:064x}", i), "size": 1,
                    "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn each_artifact_layout_selects_its_wasm_layer() {
        for (config, layer, format) in [
            ("application/vnd.wasm.config.v0+json", CNCF_LAYER, "cncf"),
            ("application/vnd.wasm.config.v1+json", WASM_TO_OCI_LAYER, "wasm-to-oci"),
            ("application/vnd.oci.image.config.v1+json", SOLO_LAYER, "solo"),
        ] {
            let s = select_layer(&manifest(config, &["application/octet-stream", layer])).unwrap();
            assert_eq!((s.layer.media_type().as_ref(), s.format), (layer, format));
        }
    }

    #[test]
    fn image_form_takes_the_last_filesystem_layer() {
        let m = manifest(
            "application/vnd.oci.image.config.v1+json",
            &[IMAGE_LAYERS[0], IMAGE_LAYERS[0]],
        );
        assert_eq!(
            select_layer(&m).unwrap().layer.digest().as_ref(),
            format!("sha256:{:064x}", 1)
        );
    }

    #[test]
    fn unknown_layout_lists_what_was_tried() {
        let err = select_layer(&manifest("application/vnd.oci.image.config.v1+json", &["text/plain"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("text/plain") && msg.contains("plugin.wasm") && msg.contains(CNCF_LAYER),
            "{msg}"
        );
    }

    #[test]
    fn two_cncf_layers_are_ambiguous() {
        let err = select_layer(&manifest(
            "application/vnd.wasm.config.v0+json",
            &[CNCF_LAYER, CNCF_LAYER],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("ambiguous"));
    }

    #[test]
    fn index_prefers_a_wasm_platform() {
        let i = index(&[("linux", "amd64"), ("wasip1", "wasm")]);
        assert_eq!(
            select_platform(&i, "linux/amd64").unwrap().digest().as_ref(),
            format!("sha256:{:064x}", 1)
        );
    }

    #[test]
    fn index_falls_back_to_the_configured_platform() {
        let i = index(&[("linux", "arm64"), ("linux", "amd64")]);
        assert_eq!(
            select_platform(&i, "linux/amd64").unwrap().digest().as_ref(),
            format!("sha256:{:064x}", 1)
        );
    }

    #[test]
    fn index_without_a_match_lists_platforms() {
        let err = select_platform(&index(&[("linux", "arm64"), ("windows", "amd64")]), "linux/amd64").unwrap_err();
        assert!(err.to_string().contains("linux/arm64, windows/amd64"), "{err}");
    }

    /// Regression (issue 6, hostile input): the message listed every layer type, so a manifest with
    /// thousands of layers (or megabyte-long types) gave a message too large for a gRPC status.
    #[test]
    fn unknown_layout_message_is_bounded() {
        let long = "x".repeat(100_000);
        let mut types = vec!["text/plain"; 5000];
        types.push(&long);
        let msg = select_layer(&manifest(&long, &types)).unwrap_err().to_string();
        assert!(msg.len() < 2048, "{} bytes", msg.len());
        assert!(msg.contains("text/plain") && msg.contains("and 4991 more"), "{msg}");
    }

    /// Regression (issue 6, hostile input): the platforms of an index were all listed.
    #[test]
    fn no_platform_message_is_bounded() {
        let long = "y".repeat(100_000);
        let mut platforms = vec![("plan9", "mips"); 3000];
        platforms.push(("linux", &long));
        let msg = select_platform(&index(&platforms), "linux/amd64")
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 2048, "{} bytes", msg.len());
        assert!(msg.contains("plan9/mips") && msg.contains("and 2991 more"), "{msg}");
    }

    /// Regression (issue 6, hostile input): serde_json's message quotes a wrongly typed string whole, so a
    /// 3 MB string in a manifest made a 3 MB status message.
    #[test]
    fn malformed_message_is_bounded() {
        let body = serde_json::to_vec(&serde_json::json!({"schemaVersion": "s".repeat(3 << 20)})).unwrap();
        let msg = parse(Some(OCI_MANIFEST), &body).unwrap_err().to_string();
        assert!(msg.len() < 2048, "{} bytes", msg.len());
        assert!(msg.contains("invalid type") && msg.contains("expected u32"), "{msg}");
    }

    #[test]
    fn manifest_type_comes_from_content_type_then_body() {
        let body = serde_json::to_vec(&index(&[("linux", "amd64")])).unwrap();
        assert!(matches!(parse(Some(OCI_INDEX), &body), Ok(Document::Index(_))));
        assert!(matches!(parse(None, &body), Ok(Document::Index(_))));
        assert!(matches!(
            parse(Some("application/vnd.docker.distribution.manifest.v1+prettyjws"), &body),
            Err(FormatError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(Some(OCI_MANIFEST), b"{not json"),
            Err(FormatError::Malformed { .. })
        ));
    }
}
