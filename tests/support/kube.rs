//! A stand-in for the Kubernetes API server, for the `warm --from-cluster` and `serve --watch-wasmplugins` tests.
//!
//! No Kubernetes API server can run on the test machines (no kube-apiserver, etcd or kind), so this loopback
//! HTTP stub serves the few endpoints the daemon and the CLI use, with the paths, query parameters and JSON
//! shapes of the real API (`extensions.istio.io/v1alpha1` WasmPlugins, `v1` Secrets, `v1` Status errors):
//!
//! - `GET /apis/extensions.istio.io/v1alpha1/namespaces/{ns}/wasmplugins` and the cluster-wide
//!   `GET /apis/extensions.istio.io/v1alpha1/wasmplugins`: a `WasmPluginList`, filtered by `labelSelector`
//!   (`k=v`, `k==v`, `k!=v`, `k`, `!k`), paginated by `limit` and `continue` (a page holds at most `limit` items,
//!   and at most [`KubeStub::set_page_cap`] items, which the API allows: a server may return fewer than
//!   `limit`), with `metadata.resourceVersion` and `metadata.continue`;
//! - the same paths with `watch=true`: a chunked stream of newline-delimited watch events
//!   (`{"type":"ADDED","object":{...}}`), which each test sends with [`KubeStub::send_event`];
//! - `GET /api/v1/namespaces/{ns}/secrets/{name}`: a `v1` Secret;
//! - anything else, a missing object, a missing or wrong `Authorization: Bearer <token>`, or a denial set with
//!   [`KubeStub::deny_wasmplugins`]: a `v1` `Status` with the matching code and reason.
//!
//! Every request is recorded (method, path, decoded query, whether the token was right), so tests can assert
//! how often the API was asked and with which parameters. [`KubeStub::kubeconfig`] writes a kubeconfig that
//! points at the stub.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};

/// The bearer token the stub accepts, and that [`KubeStub::kubeconfig`] writes by default.
pub const TOKEN: &str = "wasmcache-test-token-7c41d2";

pub const GROUP_VERSION: &str = "extensions.istio.io/v1alpha1";
pub const PLUGINS_PREFIX: &str = "/apis/extensions.istio.io/v1alpha1";

/// How long [`KubeStub::wait_for`] and the tests' polls wait at most.
pub const WAIT: Duration = Duration::from_secs(10);

/// One request the stub answered.
#[derive(Clone, Debug)]
pub struct KubeRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (still percent-encoded), empty when there was none.
    pub raw_query: String,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The request carried `Authorization: Bearer <TOKEN>`.
    pub authorized: bool,
    /// The status the stub answered with.
    pub status: u16,
}

impl KubeRequest {
    /// The decoded value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }

    /// A list (not watch) of WasmPlugins, namespaced or cluster-wide.
    pub fn is_plugin_list(&self) -> bool {
        is_plugins_path(&self.path) && !self.is_watch()
    }

    pub fn is_plugin_watch(&self) -> bool {
        is_plugins_path(&self.path) && self.is_watch()
    }
}

fn is_plugins_path(path: &str) -> bool {
    parse_plugins_path(path).is_some()
}

/// `Some(None)` for the cluster-wide path, `Some(Some(ns))` for a namespaced one.
fn parse_plugins_path(path: &str) -> Option<Option<String>> {
    let rest = path.strip_prefix(PLUGINS_PREFIX)?;
    if rest == "/wasmplugins" {
        return Some(None);
    }
    let rest = rest.strip_prefix("/namespaces/")?;
    let (ns, tail) = rest.split_once('/')?;
    (tail == "wasmplugins" && !ns.is_empty()).then(|| Some(ns.to_string()))
}

/// `(ns, name)` of `/api/v1/namespaces/{ns}/secrets/{name}`.
fn parse_secret_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("secrets/")?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| (ns.to_string(), name.to_string()))
}

#[derive(Default)]
struct Objects {
    /// WasmPlugins in insertion order (lists return them in this order, as etcd's key order would be stable).
    plugins: Vec<Value>,
    secrets: Vec<Value>,
    /// The cluster's resourceVersion: bumped by every write, stamped on the written object.
    resource_version: u64,
}

struct StubState {
    objects: Mutex<Objects>,
    requests: Mutex<Vec<KubeRequest>>,
    /// Every open watch stream receives what is sent here (already filtered to its namespace and selector).
    events: broadcast::Sender<Value>,
    page_cap: AtomicUsize,
    /// When set, every WasmPlugin list and watch is answered with this status code.
    deny: Mutex<Option<u16>>,
    /// The next this-many watch requests are answered with HTTP 410 Gone.
    gone_watches: AtomicUsize,
}

/// A running stub API server on 127.0.0.1:0; dropping it closes the listener and every connection.
pub struct KubeStub {
    addr: SocketAddr,
    state: Arc<StubState>,
    task: Option<JoinHandle<()>>,
    dir: TempDir,
}

impl KubeStub {
    pub async fn start() -> KubeStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the kube stub");
        let addr = listener.local_addr().expect("kube stub addr");
        let (events, _) = broadcast::channel(64);
        let state = Arc::new(StubState {
            objects: Mutex::new(Objects {
                resource_version: 100,
                ..Default::default()
            }),
            requests: Mutex::new(Vec::new()),
            events,
            page_cap: AtomicUsize::new(usize::MAX),
            deny: Mutex::new(None),
            gone_watches: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(super::serve::accept_loop(listener, None, move |request| {
            handle(shared.clone(), request)
        }));
        let dir = tempfile::Builder::new()
            .prefix("wasmcache-kube")
            .tempdir()
            .expect("kube stub temp dir");
        KubeStub {
            addr,
            state,
            task: Some(task),
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn server(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig whose current context points at the stub with namespace `namespace` and user token
    /// `token` (`None`: a user without any credentials); returns its path.
    pub fn kubeconfig(&self, namespace: &str, token: Option<&str>) -> PathBuf {
        let user = match token {
            Some(token) => format!("    token: {token}\n"),
            None => "    {}\n".to_string(),
        };
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: stub\n  cluster:\n    server: {server}\n\
             users:\n\
             - name: tester\n  user:\n{user}\
             contexts:\n\
             - name: stub\n  context:\n    cluster: stub\n    user: tester\n    namespace: {namespace}\n\
             current-context: stub\n\
             preferences: {{}}\n",
            server = self.server(),
        );
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let path = self.dir.path().join(format!("kubeconfig-{n}.yaml"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A list page holds at most `n` items, whatever `limit` the client asked for.
    pub fn set_page_cap(&self, n: usize) {
        self.state.page_cap.store(n.max(1), Ordering::SeqCst);
    }

    /// Every WasmPlugin list and watch from now on gets `code` (401, 403, ...) as a `Status`.
    pub fn deny_wasmplugins(&self, code: u16) {
        *self.state.deny.lock().unwrap() = Some(code);
    }

    /// The next `n` watch requests get an HTTP 410 Gone `Status` instead of a stream.
    pub fn gone_next_watches(&self, n: usize) {
        self.state.gone_watches.store(n, Ordering::SeqCst);
    }

    /// Stores `plugin` (created or replaced by namespace and name), stamping a new `metadata.resourceVersion`
    /// (and a `uid` and `creationTimestamp` when missing); returns the object as stored. `metadata.generation` is
    /// kept as the API server keeps it: 1 on creation, one more on each replacement that changes the `spec`, the
    /// same on one that does not (labels, annotations).
    pub fn put_plugin(&self, mut plugin: Value) -> Value {
        let mut objects = self.state.objects.lock().unwrap();
        objects.resource_version += 1;
        let rv = objects.resource_version.to_string();
        let key = object_key(&plugin);
        let existing = objects.plugins.iter().find(|p| object_key(p) == key);
        let generation = match existing {
            None => 1,
            Some(old) => {
                let old_generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                if old["spec"] == plugin["spec"] {
                    old_generation
                } else {
                    old_generation + 1
                }
            }
        };
        let uid = existing.and_then(|old| old["metadata"]["uid"].as_str().map(str::to_string));
        let meta = plugin["metadata"].as_object_mut().expect("plugin has metadata");
        meta.insert("resourceVersion".into(), Value::String(rv.clone()));
        meta.insert("generation".into(), json!(generation));
        meta.entry("uid")
            .or_insert_with(|| Value::String(uid.unwrap_or_else(|| format!("00000000-0000-4000-8000-{rv:0>12}"))));
        meta.entry("creationTimestamp")
            .or_insert_with(|| Value::String("2024-01-01T00:00:00Z".into()));
        match objects.plugins.iter_mut().find(|p| object_key(p) == key) {
            Some(existing) => *existing = plugin.clone(),
            None => objects.plugins.push(plugin.clone()),
        }
        plugin
    }

    /// Deletes plugin `namespace/name`; returns it as it was, with a new resourceVersion, as a watch reports it.
    pub fn delete_plugin(&self, namespace: &str, name: &str) -> Option<Value> {
        let mut objects = self.state.objects.lock().unwrap();
        let index = objects
            .plugins
            .iter()
            .position(|p| object_key(p) == (namespace.to_string(), name.to_string()))?;
        let mut plugin = objects.plugins.remove(index);
        objects.resource_version += 1;
        plugin["metadata"]["resourceVersion"] = Value::String(objects.resource_version.to_string());
        Some(plugin)
    }

    /// Stores a Secret `namespace/name` of `type_` whose `data` holds `data` (base64-encoded by the stub).
    pub fn put_secret(&self, namespace: &str, name: &str, type_: &str, data: &[(&str, &[u8])]) {
        let mut objects = self.state.objects.lock().unwrap();
        objects.resource_version += 1;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(super::registry::base64(v))))
            .collect();
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": objects.resource_version.to_string(),
                "uid": format!("00000000-0000-4000-9000-{:0>12}", objects.resource_version),
                "creationTimestamp": "2024-01-01T00:00:00Z",
            },
            "type": type_,
            "data": data,
        });
        objects
            .secrets
            .retain(|s| object_key(s) != (namespace.to_string(), name.to_string()));
        objects.secrets.push(secret);
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> String {
        self.state.objects.lock().unwrap().resource_version.to_string()
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`) about `object` to every open watch whose namespace and
    /// selector it matches.
    pub fn send_event(&self, type_: &str, object: &Value) {
        let _ = self.state.events.send(json!({"type": type_, "object": object}));
    }

    /// Sends a `BOOKMARK` at the current resourceVersion to every open watch.
    pub fn send_bookmark(&self) {
        let object = json!({
            "apiVersion": GROUP_VERSION,
            "kind": "WasmPlugin",
            "metadata": {"resourceVersion": self.resource_version()},
        });
        let _ = self.state.events.send(json!({"type": "BOOKMARK", "object": object}));
    }

    /// Sends an `ERROR` event carrying a `Status` with `code` (410: the watch's resourceVersion is too old).
    pub fn send_error_event(&self, code: u16) {
        let (reason, message) = match code {
            410 => ("Expired", "too old resource version: 1 (100)".to_string()),
            _ => ("InternalError", format!("watch failed with {code}")),
        };
        let status = status_json(code, reason, &message);
        let _ = self.state.events.send(json!({"type": "ERROR", "object": status}));
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn plugin_lists(&self) -> Vec<KubeRequest> {
        self.requests().into_iter().filter(|r| r.is_plugin_list()).collect()
    }

    pub fn plugin_watches(&self) -> Vec<KubeRequest> {
        self.requests().into_iter().filter(|r| r.is_plugin_watch()).collect()
    }

    /// Every request for a Secret or a list of Secrets, in any namespace.
    pub fn secret_requests(&self) -> Vec<KubeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('/').any(|segment| segment == "secrets"))
            .collect()
    }

    /// Requests for secret `namespace/name`.
    pub fn secret_gets(&self, namespace: &str, name: &str) -> Vec<KubeRequest> {
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// The requests seen, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {}{}{} -> {}{}",
                    r.method,
                    r.path,
                    if r.raw_query.is_empty() { "" } else { "?" },
                    r.raw_query,
                    r.status,
                    if r.authorized { "" } else { " (no valid token)" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls (every 20 ms, at most [`WAIT`]) until `done` holds for the requests seen; panics naming `what`.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[KubeRequest]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if done(&self.requests()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "kube stub: waited {WAIT:?} for {what}; requests seen:\n{}",
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KubeStub {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if std::thread::panicking() {
            eprintln!("---- kube stub {} saw ----\n{}", self.addr, self.describe());
        }
    }
}

/// A WasmPlugin object as the API server stores it: `apiVersion`, `kind`, `metadata` (name, namespace,
/// labels) and `spec` (`url` plus the fields of `spec_extra`, an object).
pub fn wasmplugin(namespace: &str, name: &str, labels: &[(&str, &str)], url: &str, spec_extra: Value) -> Value {
    let mut spec = json!({ "url": url });
    if let Value::Object(extra) = spec_extra {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let mut metadata = json!({"name": name, "namespace": namespace});
    if !labels.is_empty() {
        metadata["labels"] = Value::Object(labels);
    }
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "WasmPlugin",
        "metadata": metadata,
        "spec": spec,
    })
}

fn object_key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("default").to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// A `v1` `Status` for an error response or an `ERROR` watch event.
pub fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A parsed `labelSelector`: the equality and existence terms kubectl users write.
struct Selector(Vec<Term>);

enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = raw.split_once("==") {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = raw.split_once('=') {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = raw.strip_prefix('!') {
                Term::NotExists(k.trim().into())
            } else if raw.contains(' ') || raw.contains('(') {
                return Err(format!(
                    "unable to parse requirement: {raw:?} (the stub knows =, ==, != and existence)"
                ));
            } else {
                Term::Exists(raw.into())
            };
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    fn matches(&self, object: &Value) -> bool {
        let labels: BTreeMap<String, String> = object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        self.0.iter().all(|term| match term {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
            Term::Exists(k) => labels.contains_key(k),
            Term::NotExists(k) => !labels.contains_key(k),
        })
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed())
        .unwrap()
}

async fn handle(state: Arc<StubState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let query: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let authorized = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str());
    let mut seen = KubeRequest {
        method,
        path,
        raw_query,
        query,
        authorized,
        status: 0,
    };
    // A watch subscribes (in `respond`) before it is recorded, so a test that saw the watch request knows that the
    // events it sends from then on reach that watch.
    let response = respond(&state, &seen);
    seen.status = response.status().as_u16();
    state.requests.lock().unwrap().push(seen);
    Ok(response)
}

fn respond(state: &StubState, request: &KubeRequest) -> Response<Body> {
    let error = |code: u16, reason: &str, message: String| json_response(code, &status_json(code, reason, &message));
    if !request.authorized {
        return error(401, "Unauthorized", "Unauthorized".into());
    }
    if request.method != "GET" {
        return error(
            405,
            "MethodNotAllowed",
            format!("the stub serves GET only, not {}", request.method),
        );
    }
    if let Some(namespace) = parse_plugins_path(&request.path) {
        let scope = match &namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let verb = if request.is_watch() { "watch" } else { "list" };
        if let Some(code) = *state.deny.lock().unwrap() {
            return match code {
                401 => error(401, "Unauthorized", "Unauthorized".into()),
                403 => error(
                    403,
                    "Forbidden",
                    format!(
                        "wasmplugins.extensions.istio.io is forbidden: User \"system:serviceaccount:istio-system:wasmcache\" \
                         cannot {verb} resource \"wasmplugins\" in API group \"extensions.istio.io\" {scope}"
                    ),
                ),
                other => error(other, "InternalError", format!("the stub was told to answer {other}")),
            };
        }
        let selector = match Selector::parse(request.param("labelSelector").unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return error(400, "BadRequest", e),
        };
        if request.is_watch() {
            if state
                .gone_watches
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return error(410, "Expired", "too old resource version: 1 (100)".into());
            }
            return watch_response(state.events.subscribe(), namespace, selector);
        }
        return list_response(state, request, namespace.as_deref(), &selector);
    }
    if let Some((ns, name)) = parse_secret_path(&request.path) {
        let objects = state.objects.lock().unwrap();
        return match objects
            .secrets
            .iter()
            .find(|s| object_key(s) == (ns.clone(), name.clone()))
        {
            Some(secret) => json_response(200, secret),
            None => error(404, "NotFound", format!("secrets \"{name}\" not found")),
        };
    }
    error(
        404,
        "NotFound",
        "the server could not find the requested resource".into(),
    )
}

fn list_response(
    state: &StubState,
    request: &KubeRequest,
    namespace: Option<&str>,
    selector: &Selector,
) -> Response<Body> {
    let objects = state.objects.lock().unwrap();
    let matching: Vec<&Value> = objects
        .plugins
        .iter()
        .filter(|p| namespace.is_none_or(|ns| object_key(p).0 == ns))
        .filter(|p| selector.matches(p))
        .collect();
    let offset = match request.param("continue").filter(|c| !c.is_empty()) {
        None => 0,
        Some(token) => match token
            .strip_prefix("stub-continue-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => {
                return json_response(
                    400,
                    &status_json(400, "BadRequest", &format!("invalid continue token {token:?}")),
                )
            }
        },
    };
    let limit = request
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let page = limit.min(state.page_cap.load(Ordering::SeqCst));
    let end = offset.saturating_add(page).min(matching.len());
    let items: Vec<Value> = matching[offset.min(end)..end].iter().map(|v| (*v).clone()).collect();
    let mut metadata = json!({"resourceVersion": objects.resource_version.to_string()});
    if end < matching.len() {
        metadata["continue"] = Value::String(format!("stub-continue-{end}"));
        metadata["remainingItemCount"] = json!(matching.len() - end);
    }
    json_response(
        200,
        &json!({
            "apiVersion": GROUP_VERSION,
            "kind": "WasmPluginList",
            "metadata": metadata,
            "items": items,
        }),
    )
}

/// A chunked stream of watch events, one JSON object per line, until the client goes away.
fn watch_response(
    receiver: broadcast::Receiver<Value>,
    namespace: Option<String>,
    selector: Selector,
) -> Response<Body> {
    let filter = Arc::new((namespace, selector));
    let frames = futures_util::stream::unfold(receiver, move |mut receiver| {
        let filter = filter.clone();
        async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                let object = &event["object"];
                let about_objects = matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED"));
                if about_objects {
                    let (namespace, selector) = &*filter;
                    if namespace.as_ref().is_some_and(|ns| object_key(object).0 != *ns) || !selector.matches(object) {
                        continue;
                    }
                }
                let mut line = serde_json::to_vec(&event).unwrap();
                line.push(b'\n');
                return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), receiver));
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(frames).boxed())
        .unwrap()
}
