//! The Kubernetes API side of the warm-up: Istio WasmPlugins listed (page by page) or watched, and the
//! image pull secrets they name. Objects are handed on as JSON; [`crate::wasmplugin`] validates them.

use std::path::Path;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

/// Items asked for per list request; the rest follow by `continue` token.
const PAGE_SIZE: u32 = 100;
/// The secret types that carry registry credentials, and their data keys.
const DOCKER_CONFIG_JSON: (&str, &str) = ("kubernetes.io/dockerconfigjson", ".dockerconfigjson");
const DOCKER_CFG: (&str, &str) = ("kubernetes.io/dockercfg", ".dockercfg");

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    #[error("{what}: the API server refused the credentials (401 Unauthorized)")]
    Unauthorized { what: String },
    #[error("{what}: forbidden (403): {message}")]
    Forbidden { what: String, message: String },
    #[error("{what}: not found (404)")]
    NotFound { what: String },
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    #[error("secret {what} has type {found:?}; expected {DOCKER_CONFIG_JSON:?} or {DOCKER_CFG:?} credentials", DOCKER_CONFIG_JSON = DOCKER_CONFIG_JSON.0, DOCKER_CFG = DOCKER_CFG.0)]
    NotADockerSecret { what: String, found: String },
}

fn api_error(what: String, e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(status) => match status.code {
            401 => ClusterError::Unauthorized { what },
            403 => ClusterError::Forbidden {
                what,
                message: status.message.clone(),
            },
            404 => ClusterError::NotFound { what },
            _ => ClusterError::Api {
                what,
                message: format!("{} ({})", status.message, status.code),
            },
        },
        other => ClusterError::Api {
            what,
            message: crate::fetch::net::error_chain(&other),
        },
    }
}

/// `extensions.istio.io/v1alpha1`, kind `WasmPlugin`, plural `wasmplugins`.
pub fn wasmplugin_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("extensions.istio.io", "v1alpha1", "WasmPlugin"),
        "wasmplugins",
    )
}

/// Connects with `kubeconfig` when given, else as `kubectl` would: in-cluster service account, then
/// `$KUBECONFIG` or `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClusterError> {
    crate::fetch::net::install_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))
}

/// Which WasmPlugins to list or watch.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// A label selector (`app=x,tier!=y`).
    pub selector: Option<String>,
}

impl Scope {
    fn api(&self, client: Client) -> Api<DynamicObject> {
        let resource = wasmplugin_resource();
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &resource),
            None => Api::all_with(client, &resource),
        }
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("listing wasmplugins.extensions.istio.io in namespace {ns}"),
            None => "listing wasmplugins.extensions.istio.io in all namespaces".to_string(),
        }
    }
}

/// Every WasmPlugin in scope, as JSON objects, following `continue` tokens page by page.
pub async fn list_wasmplugins(client: &Client, scope: &Scope) -> Result<Vec<serde_json::Value>, ClusterError> {
    let api = scope.api(client.clone());
    let mut params = ListParams::default().limit(PAGE_SIZE);
    if let Some(selector) = &scope.selector {
        params = params.labels(selector);
    }
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|e| api_error(scope.describe(), e))?;
        for object in page.items {
            items.push(to_json(object));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

/// The registry credentials in secret `namespace/name`: the bytes of its `.dockerconfigjson` (or
/// legacy `.dockercfg`).
pub async fn pull_secret(client: &Client, namespace: &str, name: &str) -> Result<Vec<u8>, ClusterError> {
    let what = format!("{namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(name)
        .await
        .map_err(|e| api_error(format!("reading secret {what}"), e))?;
    let kind = secret.type_.clone().unwrap_or_default();
    let key = match kind.as_str() {
        t if t == DOCKER_CONFIG_JSON.0 => DOCKER_CONFIG_JSON.1,
        t if t == DOCKER_CFG.0 => DOCKER_CFG.1,
        _ => return Err(ClusterError::NotADockerSecret { what, found: kind }),
    };
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|bytes| bytes.0)
        .ok_or_else(|| ClusterError::Api {
            what: format!("secret {what}"),
            message: format!("has no {key} key"),
        })
}

/// A change seen by the watch.
#[derive(Debug)]
pub enum Change {
    /// Added or modified (also every object of a (re-)list).
    Applied(serde_json::Value),
    Deleted(serde_json::Value),
    /// The watch failed; it is retried with backoff.
    Error(String),
}

/// Watches WasmPlugins: an initial list, then a watch from its resourceVersion; a `410 Gone` re-lists,
/// and errors are retried with exponential backoff (kube-runtime's watcher). kube-runtime answers a 410
/// to the watch request itself (rather than in an event) by retrying the same stale resourceVersion
/// forever, so that case starts a fresh watcher, which lists again.
pub fn watch_wasmplugins(client: Client, scope: &Scope) -> impl Stream<Item = Change> + Send + 'static {
    let mut config = watcher::Config::default().page_size(PAGE_SIZE);
    if let Some(selector) = &scope.selector {
        config = config.labels(selector);
    }
    let api = scope.api(client);
    let fresh = move || watcher(api.clone(), config.clone()).default_backoff().boxed();
    futures_util::stream::unfold(None, move |current| {
        let fresh = fresh.clone();
        async move {
            let mut events = current.unwrap_or_else(fresh);
            loop {
                match events.next().await? {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        return Some((Change::Applied(to_json(o)), Some(events)))
                    }
                    Ok(watcher::Event::Delete(o)) => return Some((Change::Deleted(to_json(o)), Some(events))),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(watcher::Error::WatchStartFailed(kube::Error::Api(status))) if status.code == 410 => {
                        tokio::time::sleep(RELIST_PAUSE).await;
                        return Some((Change::Error("watch answered 410 Gone; listing again".into()), None));
                    }
                    Err(e) => return Some((Change::Error(crate::fetch::net::error_chain(&e)), Some(events))),
                }
            }
        }
    })
}

/// Pause before listing again after a `410 Gone`, so a server that keeps answering 410 is not hammered.
const RELIST_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

fn to_json(object: DynamicObject) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or(serde_json::Value::Null)
}
