//! Warm-up: Istio WasmPlugin resources turned into fetch requests, with the pull secrets they name
//! resolved from a directory or from the cluster. Shared by `wasmcache warm` and the daemon's watch.

use std::path::Path;

use base64::Engine as _;

use crate::cache::RawRequest;
use crate::wasmplugin::WasmPlugin;

/// Largest secret file read from a secret directory.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Why a plugin's request could not be built: the plugin (`namespace/name`), and what is wrong with the pull
/// secret its `spec.imagePullSecret` names.
#[derive(Debug, thiserror::Error)]
#[error("{plugin}: {problem}")]
pub struct WarmError {
    pub plugin: String,
    pub problem: SecretProblem,
}

/// What is wrong with a plugin's pull secret; [`WarmError`] says whose it is.
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    #[error(
        "image pull secret {secret:?} is named, but no --pull-secret-dir or --from-cluster says where secrets are"
    )]
    NoSource { secret: String },
    #[error("image pull secret {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Cluster(#[source] crate::cluster::ClusterError),
}

/// Where `spec.imagePullSecret` names are looked up.
#[derive(Clone, Copy)]
pub enum Secrets<'a> {
    /// Nowhere: a plugin that names a secret fails.
    None,
    /// `DIR/<namespace>/<name>`: a raw `.dockerconfigjson`, or a Secret manifest (YAML or JSON).
    Dir(&'a Path),
    /// The plugin's namespace in the cluster.
    Cluster(&'a kube::Client),
}

/// The module URL a WasmPlugin's `url` means: as Istio reads it, one without a scheme is an OCI reference.
pub fn module_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("oci://{url}")
    }
}

/// The request that warms `plugin`, as a proxy's agent would send it: url, sha256, pull policy, pull
/// secret, and `namespace/name` with the resource version as the resource identity. Not yet validated:
/// [`crate::cache::Request::parse`] does that for every edge alike.
pub async fn request_for(plugin: &WasmPlugin, secrets: Secrets<'_>) -> Result<RawRequest, WarmError> {
    let id = plugin.resource_name();
    let pull_secret = match plugin.image_pull_secret() {
        None => Vec::new(),
        Some(name) => {
            let namespace = id.split('/').next().unwrap_or("default");
            match secrets {
                Secrets::None => {
                    return Err(WarmError {
                        plugin: id,
                        problem: SecretProblem::NoSource {
                            secret: name.to_string(),
                        },
                    });
                }
                Secrets::Dir(dir) => read_secret_file(&id, &dir.join(namespace).join(name))?,
                Secrets::Cluster(client) => {
                    crate::cluster::pull_secret(client, namespace, name)
                        .await
                        .map_err(|e| WarmError {
                            plugin: id.clone(),
                            problem: SecretProblem::Cluster(e),
                        })?
                }
            }
        }
    };
    Ok(RawRequest {
        url: module_url(&plugin.spec.url),
        sha256: plugin.spec.sha256.clone().unwrap_or_default(),
        policy: plugin.pull_policy(),
        pull_secret,
        resource_name: id,
        resource_version: plugin.resource_version(),
    })
}

/// Reads a secret file: a Kubernetes Secret manifest (its `.dockerconfigjson` or `.dockercfg`, from
/// `data` in base64 or from `stringData`), or else the raw docker config JSON itself.
pub fn read_secret_file(plugin: &str, path: &Path) -> Result<Vec<u8>, WarmError> {
    let fail = |reason: String| WarmError {
        plugin: plugin.to_string(),
        problem: SecretProblem::File {
            path: path.display().to_string(),
            reason,
        },
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_SECRET_FILE {
        return Err(fail(format!("larger than {MAX_SECRET_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8".into()))?;
    let value: Option<serde_json::Value> = serde_saphyr::from_str(text).ok();
    let is_secret = value.as_ref().and_then(|v| v.get("kind")).and_then(|k| k.as_str()) == Some("Secret");
    if !is_secret {
        // A raw docker config; the daemon validates it and says what is wrong.
        return Ok(bytes);
    }
    let value = value.expect("checked above");
    for key in [".dockerconfigjson", ".dockercfg"] {
        if let Some(encoded) = value.get("data").and_then(|d| d.get(key)).and_then(|v| v.as_str()) {
            let cleaned: String = encoded.split_whitespace().collect();
            return base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|_| fail(format!("data.{key} is not base64")));
        }
        if let Some(plain) = value
            .get("stringData")
            .and_then(|d| d.get(key))
            .and_then(|v| v.as_str())
        {
            return Ok(plain.as_bytes().to_vec());
        }
    }
    Err(fail(
        "the Secret has no .dockerconfigjson or .dockercfg key in data or stringData".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_url_without_a_scheme_is_an_oci_reference_as_in_istio() {
        assert_eq!(module_url("ghcr.io/org/plugin:v1"), "oci://ghcr.io/org/plugin:v1");
        for kept in ["oci://r/x:v1", "https://h/m.wasm", "file:///srv/m.wasm"] {
            assert_eq!(module_url(kept), kept);
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const CONFIG: &str = r#"{"auths":{"reg.local":{"auth":"dTpw"}}}"#;

    #[test]
    fn raw_docker_config_is_read_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "s", CONFIG);
        assert_eq!(read_secret_file("ns/p", &path).unwrap(), CONFIG.as_bytes());
    }

    #[test]
    fn secret_manifest_data_is_base64_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(CONFIG);
        let manifest = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {encoded}\n"
        );
        let path = write(dir.path(), "s", &manifest);
        assert_eq!(read_secret_file("ns/p", &path).unwrap(), CONFIG.as_bytes());
    }

    #[test]
    fn secret_manifest_string_data_is_taken_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = format!(
            "{{\"kind\":\"Secret\",\"stringData\":{{\".dockerconfigjson\":{}}}}}",
            serde_json::to_string(CONFIG).unwrap()
        );
        let path = write(dir.path(), "s", &manifest);
        assert_eq!(read_secret_file("ns/p", &path).unwrap(), CONFIG.as_bytes());
    }

    #[test]
    fn secret_manifest_without_docker_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "s", "kind: Secret\ndata:\n  token: eHg=\n");
        let err = read_secret_file("ns/p", &path).unwrap_err().to_string();
        assert!(err.contains("ns/p") && err.contains(".dockerconfigjson"), "{err}");
    }

    #[test]
    fn missing_secret_file_names_plugin_and_path() {
        let err = read_secret_file("ns/p", Path::new("/nonexistent/ns/s"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ns/p") && err.contains("/nonexistent/ns/s"), "{err}");
    }
}
