//! The daemon's WasmPlugin watch (`serve --watch-wasmplugins`): every WasmPlugin that appears or
//! changes in the cluster is fetched into the cache at once, with the same request a proxy's agent
//! would send, so the proxy's own request is a hit.
//!
//! Reading the Secrets that plugins name in `spec.imagePullSecret` is opt-in (`--watch-pull-secrets`):
//! granting a node-level daemon `get` on secrets everywhere is more than most clusters want. Without it
//! the watch never asks the API server for a Secret, and a plugin that names one is skipped with a
//! warning; its proxy's agent fetches it with the secret as before. `wasmcache warm --from-cluster`, run
//! by an operator with their own credentials, is not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::Value;

use crate::cache::{Cache, Request};
use crate::cluster::{self, Change, Scope};
use crate::error::Error;
use crate::metrics::WatchSkip;
use crate::warm::{self, Secrets};
use crate::wasmplugin::WasmPlugin;

/// Plugins fetched at the same time.
const CONCURRENCY: usize = 4;

/// Why a plugin that names a pull secret is not prefetched without `--watch-pull-secrets`.
pub const PULL_SECRET_NOT_ALLOWED: &str = "has imagePullSecret; reading pull secrets needs --watch-pull-secrets";

/// Where to watch, and what the watch may read.
#[derive(Clone, Debug, Default)]
pub struct WatchConfig {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub scope: Scope,
    /// Read the Secrets that plugins name in `spec.imagePullSecret` (`--watch-pull-secrets`). Without it
    /// no Secret is ever requested, and plugins that name one are skipped.
    pub pull_secrets: bool,
}

/// Watches until dropped (the server drops it at shutdown). Never returns: watch errors are logged and
/// retried with backoff.
pub async fn run(client: kube::Client, config: WatchConfig, cache: Arc<Cache>) {
    tracing::info!(
        namespace = ?config.scope.namespace,
        selector = ?config.scope.selector,
        pull_secrets = config.pull_secrets,
        "watching wasmplugins"
    );
    let pull_secrets = config.pull_secrets;
    let skipped = &Skipped::default();
    cluster::watch_wasmplugins(client.clone(), &config.scope)
        .for_each_concurrent(CONCURRENCY, |change| {
            let (client, cache) = (client.clone(), cache.clone());
            async move { handle(&client, pull_secrets, &cache, skipped, change).await }
        })
        .await;
    tracing::error!("the wasmplugin watch ended");
    std::future::pending::<()>().await
}

/// The plugins skipped so far, each with the generation it was skipped at, so that a skip is warned about
/// (and counted) once per plugin generation: a re-list, or a change outside the spec, hands the watch the
/// same generation again. An entry goes when its plugin is deleted or no longer skipped; one deleted while
/// the watch was down stays (a few bytes) until the daemon restarts.
#[derive(Default)]
struct Skipped(Mutex<HashMap<String, String>>);

impl Skipped {
    /// Records that `plugin` is skipped at `generation`; true when it was not already, at that generation.
    fn first_time(&self, plugin: &str, generation: &str) -> bool {
        let mut skipped = self.0.lock().unwrap_or_else(|e| e.into_inner());
        skipped.insert(plugin.to_string(), generation.to_string()).as_deref() != Some(generation)
    }

    fn forget(&self, plugin: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(plugin);
    }
}

/// `namespace/name` of a plugin object, as [`WasmPlugin::resource_name`] has it, read without validating.
fn object_name(object: &Value) -> String {
    let meta = &object["metadata"];
    let namespace = meta["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    format!("{namespace}/{}", meta["name"].as_str().unwrap_or_default())
}

/// The object's identity and spec version: `metadata.uid` (a plugin deleted and created again is a new
/// one) and `metadata.generation`, which the API server bumps on spec changes only; the resourceVersion
/// when there is no generation.
fn generation_of(object: &Value) -> String {
    let meta = &object["metadata"];
    let uid = meta["uid"].as_str().unwrap_or_default();
    match meta["generation"].as_i64() {
        Some(generation) => format!("{uid}/{generation}"),
        None => format!("{uid}/rv:{}", meta["resourceVersion"].as_str().unwrap_or_default()),
    }
}

async fn handle(client: &kube::Client, pull_secrets: bool, cache: &Cache, skipped: &Skipped, change: Change) {
    let value = match change {
        Change::Applied(value) => value,
        // A deleted plugin's module is no longer kept on its account; it stays until the expiry or the size
        // limit removes it, since a proxy may still use it.
        Change::Deleted(value) => {
            let id = object_name(&value);
            skipped.forget(&id);
            cache.release_plugin(&id);
            return;
        }
        Change::Error(cause) => {
            tracing::warn!(%cause, "wasmplugin watch failed; retrying");
            return;
        }
    };
    let generation = generation_of(&value);
    let plugin = match WasmPlugin::from_api_object(value) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(cause = %e, "ignoring an invalid wasmplugin");
            return;
        }
    };
    let id = plugin.resource_name();
    if let (Some(secret), false) = (plugin.image_pull_secret(), pull_secrets) {
        if skipped.first_time(&id, &generation) {
            tracing::warn!(plugin = %id, pull_secret = secret, reason = PULL_SECRET_NOT_ALLOWED, "wasmplugin not prefetched");
            cache.metrics().watch_skipped(WatchSkip::PullSecretNotAllowed);
        } else {
            tracing::debug!(plugin = %id, %generation, "wasmplugin still skipped");
        }
        return;
    }
    skipped.forget(&id);
    // Without --watch-pull-secrets the request is built with no way to reach a Secret at all.
    let secrets = if pull_secrets {
        Secrets::Cluster(client)
    } else {
        Secrets::None
    };
    let request = match warm::request_for(&plugin, secrets).await {
        Ok(raw) => Request::parse(&raw).map_err(Error::from),
        Err(e) => {
            tracing::warn!(plugin = %id, cause = %e, "cannot prefetch wasmplugin");
            return;
        }
    };
    let result = match request {
        Ok(request) => cache.get(&request).await.map(|(module, _)| module),
        Err(e) => Err(e),
    };
    match result {
        Ok(m) => {
            cache.keep_for_plugin(&id, m.digest);
            tracing::info!(plugin = %id, url = %m.source_url, digest = %m.digest, outcome = ?m.outcome, "wasmplugin prefetched")
        }
        Err(e) => tracing::warn!(plugin = %id, code = ?e.code(), cause = %e, "wasmplugin prefetch failed"),
    }
}
