//! The Kubernetes manifests in `deploy/kubernetes/`: every file parses, is known to Kubernetes field by field
//! (through k8s-openapi's types), is listed by the kustomization, and makes the choices the DaemonSet, its
//! Service and its RBAC exist for. The overlays are checked against the base they patch: `deploy/overlays/
//! pull-secrets/` (its files exist, its RoleBindings name the DaemonSet's service account, its patch reaches
//! the daemon's container) and `deploy/overlays/registry-tls/` (its certificate names the Service and lands in
//! the Secret its patch mounts, and the flags point into that mount). No cluster (and no kustomize) is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use wasmcache::config::DEFAULT_SHUTDOWN_GRACE;

/// The daemon's image; its tag is the crate's version.
const IMAGE_REPOSITORY: &str = "ghcr.io/wasmcache/wasmcache";
const NAMESPACE: &str = "wasmcache-system";
const CACHE_DIR: &str = "/var/lib/wasmcache";
const SOCKET_DIR: &str = "/run/wasmcache";
const SOCKET: &str = "/run/wasmcache/wasmcache.sock";
const KUSTOMIZATION: &str = "kustomization.yaml";
/// The overlay that lets the daemon read pull secrets, relative to the crate. Not below `deploy/kubernetes`:
/// kustomize refuses a base whose directory contains the overlay ("cycle detected").
const PULL_SECRETS_OVERLAY: &str = "deploy/overlays/pull-secrets";
const PULL_SECRETS_FLAG: &str = "--watch-pull-secrets";
/// The overlay that puts TLS on the registry endpoint.
const REGISTRY_TLS_OVERLAY: &str = "deploy/overlays/registry-tls";
/// The Service in front of the registry endpoint, and the name of its port and of the container's.
const SERVICE: &str = "wasmcache";
const REGISTRY_PORT_NAME: &str = "registry";

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every YAML file in the directory, by file name.
fn manifests() -> BTreeMap<String, Value> {
    let mut docs = BTreeMap::new();
    for entry in std::fs::read_dir(manifest_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        docs.insert(name, doc);
    }
    docs
}

fn manifest(name: &str) -> Value {
    manifests()
        .remove(name)
        .unwrap_or_else(|| panic!("no {name} in deploy/kubernetes"))
}

/// `value` at a JSON pointer (`/spec/template/spec`), failing the test with the path when it is absent.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {value:#}"))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    at(value, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string"))
}

fn daemonset() -> Value {
    manifest("daemonset.yaml")
}

fn pod_spec(ds: &Value) -> &Value {
    at(ds, "/spec/template/spec")
}

/// The container named `wasmcache`.
fn daemon_container(ds: &Value) -> &Value {
    at(pod_spec(ds), "/containers")
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wasmcache")
        .expect("no container named wasmcache")
}

fn args(container: &Value) -> Vec<&str> {
    at(container, "/args")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn flag_value<'a>(args: &[&'a str], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{flag} has no value in {args:?}"))
}

/// Keys present in `original` but not in `round_trip`, as JSON pointers.
fn dropped_fields(original: &Value, round_trip: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}/{key}");
                match b.get(key) {
                    Some(other) => dropped_fields(value, other, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                dropped_fields(x, y, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Parses `doc` as the Kubernetes type `T` and serializes it back: unknown fields are what went missing.
fn unknown_fields<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Vec<String> {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
    let mut dropped = Vec::new();
    dropped_fields(doc, &serde_json::to_value(typed).unwrap(), "", &mut dropped);
    dropped
}

#[test]
fn every_manifest_is_of_the_expected_kind() {
    let kinds: BTreeMap<String, (String, String)> = manifests()
        .into_iter()
        .map(|(name, doc)| (name, (str_at(&doc, "/apiVersion").into(), str_at(&doc, "/kind").into())))
        .collect();
    let expected: BTreeMap<String, (String, String)> = [
        ("clusterrole.yaml", "rbac.authorization.k8s.io/v1", "ClusterRole"),
        (
            "clusterrolebinding.yaml",
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
        ),
        ("daemonset.yaml", "apps/v1", "DaemonSet"),
        (KUSTOMIZATION, "kustomize.config.k8s.io/v1beta1", "Kustomization"),
        ("namespace.yaml", "v1", "Namespace"),
        ("networkpolicy.yaml", "networking.k8s.io/v1", "NetworkPolicy"),
        ("networkpolicy-registry.yaml", "networking.k8s.io/v1", "NetworkPolicy"),
        ("service.yaml", "v1", "Service"),
        ("serviceaccount.yaml", "v1", "ServiceAccount"),
    ]
    .into_iter()
    .map(|(file, api, kind)| (file.to_string(), (api.to_string(), kind.to_string())))
    .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn manifests_have_no_fields_unknown_to_kubernetes() {
    use k8s_openapi::api::{apps, core, networking, rbac};
    let mut unknown = Vec::new();
    for (name, doc) in manifests() {
        let fields = match str_at(&doc, "/kind") {
            "ClusterRole" => unknown_fields::<rbac::v1::ClusterRole>(&doc),
            "ClusterRoleBinding" => unknown_fields::<rbac::v1::ClusterRoleBinding>(&doc),
            "DaemonSet" => unknown_fields::<apps::v1::DaemonSet>(&doc),
            "Namespace" => unknown_fields::<core::v1::Namespace>(&doc),
            "NetworkPolicy" => unknown_fields::<networking::v1::NetworkPolicy>(&doc),
            "Service" => unknown_fields::<core::v1::Service>(&doc),
            "ServiceAccount" => unknown_fields::<core::v1::ServiceAccount>(&doc),
            "Kustomization" => continue,
            other => panic!("{name}: no type for kind {other}"),
        };
        unknown.extend(fields.into_iter().map(|f| format!("{name}: {f}")));
    }
    assert!(
        unknown.is_empty(),
        "fields Kubernetes does not know (misspelt or misplaced): {unknown:#?}"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = manifest(KUSTOMIZATION);
    let listed: BTreeSet<&str> = at(&kustomization, "/resources")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files = manifests();
    let present: BTreeSet<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|f| *f != KUSTOMIZATION)
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn daemonset_runs_the_image_of_this_crate_version() {
    let ds = daemonset();
    let expected = format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(str_at(daemon_container(&ds), "/image"), expected);
}

#[test]
fn kustomization_pins_every_image_the_daemonset_names() {
    let kustomization = manifest(KUSTOMIZATION);
    let pinned: BTreeMap<&str, &str> = at(&kustomization, "/images")
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (str_at(i, "/name"), str_at(i, "/newTag")))
        .collect();
    let ds = daemonset();
    let spec = pod_spec(&ds);
    let pod_images: BTreeMap<&str, &str> = ["/initContainers", "/containers"]
        .into_iter()
        .flat_map(|list| at(spec, list).as_array().unwrap())
        .map(|c| str_at(c, "/image").rsplit_once(':').unwrap())
        .collect();
    assert_eq!(
        pinned, pod_images,
        "kustomization images: and the DaemonSet's images disagree"
    );
}

#[test]
fn daemonset_serves_the_host_socket_and_cache_directories() {
    let ds = daemonset();
    let container = daemon_container(&ds);
    assert_eq!(
        args(container),
        [
            "serve",
            "--cache-dir",
            CACHE_DIR,
            "--socket",
            SOCKET,
            "--listen",
            "0.0.0.0:9090",
            "--watch-wasmplugins",
            "--registry-listen",
            "0.0.0.0:5000"
        ]
    );
    let volumes: BTreeMap<&str, &Value> = at(pod_spec(&ds), "/volumes")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (str_at(v, "/name"), at(v, "/hostPath")))
        .collect();
    let mounts: BTreeMap<&str, &str> = at(container, "/volumeMounts")
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (str_at(m, "/mountPath"), str_at(m, "/name")))
        .collect();
    for dir in [CACHE_DIR, SOCKET_DIR] {
        let volume = mounts.get(dir).unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        let host_path = volumes
            .get(volume)
            .unwrap_or_else(|| panic!("volume {volume} is not a hostPath"));
        assert_eq!(
            *host_path,
            &json!({"path": dir, "type": "DirectoryOrCreate"}),
            "volume {volume}"
        );
    }
}

/// The flags `wasmcache serve --help` lists, without `--`.
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmcache"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "wasmcache serve --help failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .collect()
}

/// The flags among `args` that `wasmcache serve` does not have.
fn unknown_flags<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let known = serve_flags();
    args.iter()
        .filter_map(|a| a.strip_prefix("--"))
        .filter(|flag| !known.contains(*flag))
        .collect()
}

#[test]
fn daemonset_args_are_known_to_serve() {
    let ds = daemonset();
    let unknown = unknown_flags(&args(daemon_container(&ds)));
    assert!(
        unknown.is_empty(),
        "DaemonSet flags that `wasmcache serve` does not have: {unknown:?}"
    );
}

#[test]
fn probes_use_the_kubelets_grpc_check_on_the_listen_port() {
    let ds = daemonset();
    let container = daemon_container(&ds);
    let port: u64 = flag_value(&args(container), "--listen")
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert_eq!(
        container_port(container, "grpc"),
        &json!({"name": "grpc", "containerPort": port, "protocol": "TCP"})
    );
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(
            at(container, &format!("/{probe}/grpc")),
            &json!({"port": port}),
            "{probe}"
        );
    }
}

/// Readiness asks for the module service, which is NOT_SERVING while the cache index is down (a full
/// disk); liveness asks for the server, so such a pod is taken out of rotation but not restarted.
#[test]
fn readiness_probe_asks_for_the_module_service() {
    let ds = daemonset();
    let container = daemon_container(&ds);
    let port = at(container, "/livenessProbe/grpc/port").clone();
    assert_eq!(
        at(container, "/readinessProbe/grpc"),
        &json!({"port": port, "service": "wasmcache.v1.ModuleCache"})
    );
}

/// The container's port named `name`.
fn container_port<'a>(container: &'a Value, name: &str) -> &'a Value {
    at(container, "/ports")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The port number a Service or NetworkPolicy port refers to in the daemon's container: a number as it is, a
/// name through the container's ports.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => at(container_port(container, name), "/containerPort").as_u64().unwrap(),
        other => panic!("a port is a number or a name, not {other}"),
    }
}

fn objects_of_kind(kind: &str) -> Vec<(String, Value)> {
    manifests().into_iter().filter(|(_, d)| d["kind"] == kind).collect()
}

/// The plain-text gRPC port serves the whole API (Fetch, Remove, ...): no Service exposes it, and no
/// NetworkPolicy lets a pod reach it. The base's deny-all policy stays as it was; the only other one allows
/// the registry port by number.
#[test]
fn grpc_port_is_reachable_by_no_service_and_no_pod() {
    let ds = daemonset();
    let container = daemon_container(&ds);
    let grpc = resolve_port(container, &json!("grpc"));
    for (file, service) in objects_of_kind("Service") {
        for port in at(&service, "/spec/ports").as_array().unwrap() {
            let target = resolve_port(container, port.get("targetPort").unwrap_or(&port["port"]));
            assert_ne!(target, grpc, "{file} exposes the gRPC port");
        }
    }
    let docs = manifests();
    let deny = &docs["networkpolicy.yaml"];
    assert_eq!(
        at(deny, "/spec/podSelector/matchLabels"),
        at(&ds, "/spec/template/metadata/labels")
    );
    assert_eq!(at(deny, "/spec/policyTypes"), &json!(["Ingress"]));
    assert!(
        deny.pointer("/spec/ingress").is_none(),
        "the base policy must allow no ingress at all"
    );
    for (file, policy) in objects_of_kind("NetworkPolicy") {
        for rule in policy
            .pointer("/spec/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ports = rule["ports"].as_array().filter(|p| !p.is_empty());
            let ports = ports.unwrap_or_else(|| panic!("{file}: an ingress rule without ports allows every port"));
            for port in ports {
                assert_ne!(
                    resolve_port(container, &port["port"]),
                    grpc,
                    "{file} allows the gRPC port"
                );
                assert!(port.get("endPort").is_none(), "{file}: a port range");
            }
        }
    }
}

/// `--registry-listen`, the container's port `registry`, the Service's port and the NetworkPolicy's are one
/// port, and the Service sends a client only to the daemon on its own node.
#[test]
fn registry_port_agrees_between_flag_container_service_and_policy() {
    let ds = daemonset();
    let container = daemon_container(&ds);
    let (host, port) = flag_value(&args(container), "--registry-listen")
        .rsplit_once(':')
        .unwrap();
    assert_eq!(host, "0.0.0.0", "the endpoint listens on the pod's addresses");
    let port: u64 = port.parse().unwrap();
    assert_eq!(
        container_port(container, REGISTRY_PORT_NAME),
        &json!({"name": REGISTRY_PORT_NAME, "containerPort": port, "protocol": "TCP"})
    );

    let service = manifest("service.yaml");
    assert_eq!(str_at(&service, "/metadata/name"), SERVICE);
    assert_eq!(
        str_at(&service, "/metadata/namespace"),
        str_at(&ds, "/metadata/namespace")
    );
    assert_eq!(
        at(&service, "/spec/selector"),
        at(&ds, "/spec/template/metadata/labels")
    );
    assert_eq!(str_at(&service, "/spec/type"), "ClusterIP");
    assert_eq!(
        str_at(&service, "/spec/internalTrafficPolicy"),
        "Local",
        "each node's clients must reach their own node's cache"
    );
    let ports = at(&service, "/spec/ports").as_array().unwrap();
    let [service_port] = ports.as_slice() else {
        panic!("the Service exposes the registry port only, found {}", ports.len())
    };
    assert_eq!(str_at(service_port, "/name"), REGISTRY_PORT_NAME);
    assert_eq!(str_at(service_port, "/protocol"), "TCP");
    assert_eq!(
        at(service_port, "/port").as_u64(),
        Some(port),
        "clients address :{port}"
    );
    assert_eq!(resolve_port(container, at(service_port, "/targetPort")), port);

    let policy = manifest("networkpolicy-registry.yaml");
    assert_eq!(
        str_at(&policy, "/metadata/namespace"),
        str_at(&ds, "/metadata/namespace")
    );
    assert_eq!(
        at(&policy, "/spec/podSelector/matchLabels"),
        at(&ds, "/spec/template/metadata/labels")
    );
    assert_eq!(at(&policy, "/spec/policyTypes"), &json!(["Ingress"]));
    assert_eq!(
        at(&policy, "/spec/ingress"),
        &json!([{"from": [{"namespaceSelector": {}}], "ports": [{"port": port, "protocol": "TCP"}]}]),
        "pods of every namespace reach the registry port, and only it"
    );
}

#[test]
fn daemon_runs_as_non_root_without_capabilities() {
    let ds = daemonset();
    assert_eq!(
        at(pod_spec(&ds), "/securityContext/seccompProfile"),
        &json!({"type": "RuntimeDefault"})
    );
    let security = at(daemon_container(&ds), "/securityContext");
    assert_eq!(security["runAsNonRoot"], true);
    assert!(security["runAsUser"].as_u64().unwrap() > 0);
    assert!(security["runAsGroup"].as_u64().unwrap() > 0);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
}

#[test]
fn init_container_gives_the_host_directories_to_the_daemons_user() {
    let ds = daemonset();
    let daemon = at(daemon_container(&ds), "/securityContext");
    let owner = format!("{}:{}", daemon["runAsUser"], daemon["runAsGroup"]);
    let inits = at(pod_spec(&ds), "/initContainers").as_array().unwrap();
    let [init] = inits.as_slice() else {
        panic!("expected one init container, found {}", inits.len())
    };
    let script = at(init, "/command")
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        script.contains(&format!("chown {owner} {CACHE_DIR} {SOCKET_DIR}")),
        "{script}"
    );
    assert!(
        script.contains(&format!("chmod 0750 {CACHE_DIR} {SOCKET_DIR}")),
        "{script}"
    );
    let mounted: BTreeSet<&str> = at(init, "/volumeMounts")
        .as_array()
        .unwrap()
        .iter()
        .map(|m| str_at(m, "/mountPath"))
        .collect();
    assert_eq!(mounted, BTreeSet::from([CACHE_DIR, SOCKET_DIR]));
    let security = at(init, "/securityContext");
    assert_eq!(
        security["capabilities"],
        json!({"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]})
    );
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
}

#[test]
fn daemonset_runs_on_every_node_and_rolls_one_node_at_a_time() {
    let ds = daemonset();
    let spec = pod_spec(&ds);
    assert_eq!(at(spec, "/tolerations"), &json!([{"operator": "Exists"}]));
    assert_eq!(str_at(spec, "/priorityClassName"), "system-node-critical");
    assert_eq!(
        at(&ds, "/spec/updateStrategy"),
        // No surge: a second daemon on the node would find the socket taken.
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
}

#[test]
fn termination_grace_outlasts_the_daemons_shutdown() {
    let ds = daemonset();
    let grace = at(pod_spec(&ds), "/terminationGracePeriodSeconds").as_u64().unwrap();
    // Draining streams and fetches takes up to one grace period; closing the index needs a few seconds more.
    assert!(
        grace >= DEFAULT_SHUTDOWN_GRACE.as_secs() + 5,
        "terminationGracePeriodSeconds {grace} leaves no time after a grace period of {DEFAULT_SHUTDOWN_GRACE:?}"
    );
}

#[test]
fn daemon_memory_is_limited_and_its_cpu_is_not() {
    let ds = daemonset();
    let resources = at(daemon_container(&ds), "/resources");
    assert_eq!(resources["requests"], json!({"cpu": "50m", "memory": "64Mi"}));
    assert_eq!(resources["limits"], json!({"memory": "256Mi"}));
}

#[test]
fn cluster_role_grants_only_get_list_watch_on_wasmplugins() {
    let role = manifest("clusterrole.yaml");
    assert_eq!(
        at(&role, "/rules"),
        &json!([
            {"apiGroups": ["extensions.istio.io"], "resources": ["wasmplugins"], "verbs": ["get", "list", "watch"]},
        ])
    );
}

/// Reading pull secrets is the overlay's to grant, per namespace: no base manifest grants anything on secrets,
/// and the base DaemonSet does not ask to read them.
#[test]
fn base_grants_no_access_to_secrets() {
    for (name, doc) in manifests() {
        let Some(rules) = doc.pointer("/rules").and_then(Value::as_array) else {
            continue;
        };
        for rule in rules {
            let resources = rule["resources"].as_array().cloned().unwrap_or_default();
            assert!(
                !resources.iter().any(|r| r == "secrets" || r == "*"),
                "{name} grants access to secrets: {rule}"
            );
        }
    }
    let ds = daemonset();
    assert!(
        !args(daemon_container(&ds)).contains(&PULL_SECRETS_FLAG),
        "the base DaemonSet must not read pull secrets"
    );
}

#[test]
fn binding_grants_the_role_to_the_daemonsets_service_account() {
    let docs = manifests();
    let binding = &docs["clusterrolebinding.yaml"];
    let account = &docs["serviceaccount.yaml"];
    let ds = &docs["daemonset.yaml"];
    assert_eq!(
        at(binding, "/roleRef"),
        &json!({
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": str_at(&docs["clusterrole.yaml"], "/metadata/name"),
        })
    );
    let name = str_at(pod_spec(ds), "/serviceAccountName");
    assert_eq!(str_at(account, "/metadata/name"), name);
    assert_eq!(
        at(binding, "/subjects"),
        &json!([{"kind": "ServiceAccount", "name": name, "namespace": str_at(ds, "/metadata/namespace")}])
    );
}

#[test]
fn namespaced_objects_live_in_the_namespace_manifest() {
    let docs = manifests();
    assert_eq!(str_at(&docs["namespace.yaml"], "/metadata/name"), NAMESPACE);
    for name in [
        "daemonset.yaml",
        "serviceaccount.yaml",
        "networkpolicy.yaml",
        "networkpolicy-registry.yaml",
        "service.yaml",
    ] {
        assert_eq!(str_at(&docs[name], "/metadata/namespace"), NAMESPACE, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// overlays (`overlay` is the overlay's directory relative to the crate)
// ---------------------------------------------------------------------------------------------------------------

fn overlay_dir(overlay: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(overlay)
}

/// Every YAML file of the overlay, by file name, as its list of documents.
fn overlay_files(overlay: &str) -> BTreeMap<String, Vec<Value>> {
    let dir = overlay_dir(overlay);
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        files.insert(name, docs);
    }
    files
}

fn overlay_kustomization(overlay: &str) -> Value {
    let mut files = overlay_files(overlay);
    let docs = files
        .remove(KUSTOMIZATION)
        .unwrap_or_else(|| panic!("no {KUSTOMIZATION} in {overlay}"));
    let [kustomization] = <[Value; 1]>::try_from(docs).expect("one document in the overlay's kustomization");
    assert_eq!(str_at(&kustomization, "/kind"), "Kustomization");
    kustomization
}

/// The overlay's Kubernetes objects (its `resources` other than the base), each with the file it is in.
fn overlay_objects(overlay: &str) -> Vec<(String, Value)> {
    let kustomization = overlay_kustomization(overlay);
    let files = overlay_files(overlay);
    let mut objects = Vec::new();
    for resource in at(&kustomization, "/resources").as_array().unwrap() {
        let resource = resource.as_str().unwrap();
        if overlay_dir(overlay).join(resource).is_dir() {
            continue;
        }
        let docs = files
            .get(resource)
            .unwrap_or_else(|| panic!("{overlay}: resource {resource} is not a YAML file of the overlay"));
        objects.extend(docs.iter().map(|d| (resource.to_string(), d.clone())));
    }
    objects
}

fn overlay_objects_of_kind(overlay: &str, kind: &str) -> Vec<(String, Value)> {
    overlay_objects(overlay)
        .into_iter()
        .filter(|(_, o)| o["kind"] == kind)
        .collect()
}

/// The overlay's JSON patches: `(target, operations)`.
fn overlay_patches(overlay: &str) -> Vec<(Value, Vec<Value>)> {
    let kustomization = overlay_kustomization(overlay);
    let files = overlay_files(overlay);
    at(&kustomization, "/patches")
        .as_array()
        .unwrap()
        .iter()
        .map(|patch| {
            let path = str_at(patch, "/path");
            let docs = files
                .get(path)
                .unwrap_or_else(|| panic!("{overlay}: patch {path} is not a YAML file of the overlay"));
            let [ops] = <[Value; 1]>::try_from(docs.clone()).expect("one document in a patch file");
            let ops = ops.as_array().cloned().unwrap_or_else(|| {
                panic!("{path}: a JSON patch (a list of operations) is expected, as kustomize applies to a target")
            });
            (at(patch, "/target").clone(), ops)
        })
        .collect()
}

/// Applies the `test` and `add` operations of a JSON patch (RFC 6902) to `doc`; panics on a failed test or any
/// other operation.
fn apply_json_patch(doc: &mut Value, ops: &[Value]) {
    for op in ops {
        let path = str_at(op, "/path");
        let tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = tokens.split_last().unwrap_or_else(|| panic!("{path}: an empty path"));
        let parent_pointer: String = parents.iter().map(|t| format!("/{t}")).collect();
        let value = at(op, "/value").clone();
        match str_at(op, "/op") {
            "test" => assert_eq!(doc.pointer(path), Some(&value), "JSON patch test of {path} fails"),
            "add" => {
                let parent = doc
                    .pointer_mut(&parent_pointer)
                    .unwrap_or_else(|| panic!("JSON patch add: no {parent_pointer}"));
                match parent {
                    Value::Array(items) if last == "-" => items.push(value),
                    Value::Array(items) => {
                        let i: usize = last.parse().unwrap_or_else(|_| panic!("{path}: bad index"));
                        assert!(i <= items.len(), "{path}: index out of range");
                        items.insert(i, value);
                    }
                    Value::Object(map) => {
                        map.insert(last.clone(), value);
                    }
                    other => panic!("JSON patch add: {parent_pointer} is {other}"),
                }
            }
            other => panic!("JSON patch op {other:?}: this test applies only test and add"),
        }
    }
}

/// The overlay's kustomization lists files that exist, and every file of the overlay is listed.
fn assert_overlay_lists_files_that_exist_and_every_file_it_has(overlay: &str) {
    let kustomization = overlay_kustomization(overlay);
    assert_eq!(str_at(&kustomization, "/apiVersion"), "kustomize.config.k8s.io/v1beta1");
    let mut listed = BTreeSet::new();
    for resource in at(&kustomization, "/resources").as_array().unwrap() {
        let resource = resource.as_str().unwrap();
        let path = overlay_dir(overlay).join(resource);
        assert!(path.exists(), "{overlay}: resource {resource} does not exist");
        if path.is_dir() {
            assert!(
                path.join(KUSTOMIZATION).is_file(),
                "{overlay}: resource {resource} is a directory without a kustomization"
            );
        } else {
            listed.insert(resource.to_string());
        }
    }
    for patch in at(&kustomization, "/patches").as_array().unwrap() {
        let path = str_at(patch, "/path");
        assert!(
            overlay_dir(overlay).join(path).is_file(),
            "{overlay}: patch {path} does not exist"
        );
        listed.insert(path.to_string());
    }
    let present: BTreeSet<String> = overlay_files(overlay)
        .into_keys()
        .filter(|f| f != KUSTOMIZATION)
        .collect();
    assert_eq!(listed, present, "every file of the overlay is used, and only those");
}

/// The overlay builds on the base, once, from outside it, and moves nothing to another namespace.
fn assert_overlay_builds_on_the_base(overlay: &str) {
    let kustomization = overlay_kustomization(overlay);
    let base = manifest_dir().canonicalize().unwrap();
    let bases: Vec<&str> = at(&kustomization, "/resources")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .filter(|r| overlay_dir(overlay).join(r).canonicalize().ok().as_ref() == Some(&base))
        .collect();
    assert_eq!(
        bases.len(),
        1,
        "the overlay lists deploy/kubernetes once among its resources"
    );
    assert!(
        !overlay_dir(overlay).canonicalize().unwrap().starts_with(&base),
        "kustomize refuses a base directory that contains the overlay"
    );
    assert!(
        kustomization.get("namespace").is_none(),
        "a kustomization namespace would move every object of the base and of the overlay into one namespace"
    );
}

#[test]
fn pull_secrets_overlay_lists_files_that_exist_and_every_file_it_has() {
    assert_overlay_lists_files_that_exist_and_every_file_it_has(PULL_SECRETS_OVERLAY);
}

#[test]
fn pull_secrets_overlay_builds_on_the_base() {
    assert_overlay_builds_on_the_base(PULL_SECRETS_OVERLAY);
}

#[test]
fn pull_secrets_overlay_objects_are_roles_and_bindings_known_to_kubernetes() {
    use k8s_openapi::api::rbac;
    let objects = overlay_objects(PULL_SECRETS_OVERLAY);
    assert!(!objects.is_empty(), "the overlay has no Role and RoleBinding");
    let mut unknown = Vec::new();
    for (file, doc) in objects {
        assert_eq!(str_at(&doc, "/apiVersion"), "rbac.authorization.k8s.io/v1", "{file}");
        let fields = match str_at(&doc, "/kind") {
            "Role" => unknown_fields::<rbac::v1::Role>(&doc),
            "RoleBinding" => unknown_fields::<rbac::v1::RoleBinding>(&doc),
            other => panic!("{file}: the overlay adds only Roles and RoleBindings, not a {other}"),
        };
        unknown.extend(fields.into_iter().map(|f| format!("{file}: {f}")));
    }
    assert!(unknown.is_empty(), "fields Kubernetes does not know: {unknown:#?}");
}

#[test]
fn pull_secrets_overlay_roles_only_get_secrets_in_their_namespace() {
    let roles = overlay_objects_of_kind(PULL_SECRETS_OVERLAY, "Role");
    assert!(!roles.is_empty(), "the overlay has no Role");
    for (file, role) in roles {
        assert!(!str_at(&role, "/metadata/namespace").is_empty(), "{file}");
        let rules = at(&role, "/rules").as_array().unwrap();
        let [rule] = rules.as_slice() else {
            panic!("{file}: one rule expected, found {}", rules.len())
        };
        let mut granted = rule.clone();
        if let Some(names) = granted.as_object_mut().unwrap().remove("resourceNames") {
            let names = names.as_array().expect("resourceNames is a list");
            assert!(
                !names.is_empty() && names.iter().all(|n| n.as_str().is_some_and(|n| !n.is_empty())),
                "{file}: resourceNames, when present, names secrets"
            );
        }
        assert_eq!(
            granted,
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
            "{file}: get on secrets, nothing else (never list or watch)"
        );
    }
}

#[test]
fn pull_secrets_overlay_bindings_grant_their_namespaces_role_to_the_daemonsets_service_account() {
    let ds = daemonset();
    let account = str_at(pod_spec(&ds), "/serviceAccountName");
    assert_eq!(str_at(&manifest("serviceaccount.yaml"), "/metadata/name"), account);
    let subject = json!([{
        "kind": "ServiceAccount",
        "name": account,
        "namespace": str_at(&ds, "/metadata/namespace"),
    }]);
    let roles: BTreeSet<(String, String)> = overlay_objects_of_kind(PULL_SECRETS_OVERLAY, "Role")
        .iter()
        .map(|(_, r)| {
            (
                str_at(r, "/metadata/namespace").to_string(),
                str_at(r, "/metadata/name").to_string(),
            )
        })
        .collect();
    let mut bound = BTreeSet::new();
    for (file, binding) in overlay_objects_of_kind(PULL_SECRETS_OVERLAY, "RoleBinding") {
        let namespace = str_at(&binding, "/metadata/namespace").to_string();
        assert_eq!(at(&binding, "/subjects"), &subject, "{file}");
        assert_eq!(
            str_at(&binding, "/roleRef/apiGroup"),
            "rbac.authorization.k8s.io",
            "{file}"
        );
        assert_eq!(str_at(&binding, "/roleRef/kind"), "Role", "{file}");
        let role = (namespace, str_at(&binding, "/roleRef/name").to_string());
        assert!(
            roles.contains(&role),
            "{file}: binds {role:?}, which the overlay does not define"
        );
        bound.insert(role);
    }
    assert_eq!(bound, roles, "every Role is bound, in its own namespace");
}

#[test]
fn pull_secrets_overlay_patch_adds_the_flag_to_the_daemonsets_container() {
    let mut ds = daemonset();
    let patches = overlay_patches(PULL_SECRETS_OVERLAY);
    let [(target, ops)] = patches.as_slice() else {
        panic!("one patch expected, found {}", patches.len())
    };
    let api_version = str_at(&ds, "/apiVersion");
    let (group, version) = api_version.split_once('/').unwrap();
    assert_eq!(
        target,
        &json!({
            "group": group,
            "version": version,
            "kind": str_at(&ds, "/kind"),
            "name": str_at(&ds, "/metadata/name"),
            "namespace": str_at(&ds, "/metadata/namespace"),
        })
    );
    let before: Vec<String> = args(daemon_container(&ds)).into_iter().map(String::from).collect();

    apply_json_patch(&mut ds, ops);

    let after = args(daemon_container(&ds));
    let mut expected: Vec<&str> = before.iter().map(String::as_str).collect();
    expected.push(PULL_SECRETS_FLAG);
    assert_eq!(after, expected, "the daemon's arguments plus {PULL_SECRETS_FLAG}");
    assert!(after.contains(&"--watch-wasmplugins"));
    let unknown = unknown_flags(&after);
    assert!(
        unknown.is_empty(),
        "flags that `wasmcache serve` does not have: {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// overlays/registry-tls
// ---------------------------------------------------------------------------------------------------------------

/// The fields of cert-manager's `cert-manager.io/v1` objects that the overlay may use, by JSON pointer: a
/// misspelt field would be pruned by the API server (cert-manager's CRDs are structural) and the certificate
/// silently issued without it.
const CERT_MANAGER_FIELDS: &[(&str, &str, &[&str])] = &[
    ("Issuer", "/spec", &["selfSigned", "ca"]),
    ("Issuer", "/spec/ca", &["secretName"]),
    (
        "Certificate",
        "/spec",
        &[
            "secretName",
            "commonName",
            "dnsNames",
            "isCA",
            "duration",
            "renewBefore",
            "usages",
            "privateKey",
            "issuerRef",
        ],
    ),
    (
        "Certificate",
        "/spec/privateKey",
        &["algorithm", "size", "encoding", "rotationPolicy"],
    ),
    ("Certificate", "/spec/issuerRef", &["group", "kind", "name"]),
];

#[test]
fn registry_tls_overlay_lists_files_that_exist_and_every_file_it_has() {
    assert_overlay_lists_files_that_exist_and_every_file_it_has(REGISTRY_TLS_OVERLAY);
}

#[test]
fn registry_tls_overlay_builds_on_the_base() {
    assert_overlay_builds_on_the_base(REGISTRY_TLS_OVERLAY);
}

#[test]
fn registry_tls_overlay_objects_are_cert_manager_issuers_and_certificates() {
    let ds = daemonset();
    let namespace = str_at(&ds, "/metadata/namespace");
    let objects = overlay_objects(REGISTRY_TLS_OVERLAY);
    assert!(!objects.is_empty(), "the overlay has no Certificate");
    let issuers: BTreeSet<&str> = objects
        .iter()
        .filter(|(_, o)| o["kind"] == "Issuer")
        .map(|(_, o)| str_at(o, "/metadata/name"))
        .collect();
    let ca_secrets: BTreeSet<&str> = objects
        .iter()
        .filter(|(_, o)| o["kind"] == "Certificate" && o.pointer("/spec/isCA") == Some(&json!(true)))
        .map(|(_, o)| str_at(o, "/spec/secretName"))
        .collect();
    for (file, object) in &objects {
        assert_eq!(str_at(object, "/apiVersion"), "cert-manager.io/v1", "{file}");
        let kind = str_at(object, "/kind");
        assert!(
            ["Issuer", "Certificate"].contains(&kind),
            "{file}: the overlay adds only cert-manager Issuers and Certificates, not a {kind}"
        );
        assert_eq!(str_at(object, "/metadata/namespace"), namespace, "{file}");
        for (of, pointer, known) in CERT_MANAGER_FIELDS {
            let Some(Value::Object(fields)) = object.pointer(pointer).filter(|_| *of == kind) else {
                continue;
            };
            let unknown: Vec<&String> = fields.keys().filter(|k| !known.contains(&k.as_str())).collect();
            assert!(
                unknown.is_empty(),
                "{file}: {kind} fields {pointer}/{unknown:?} are not cert-manager's"
            );
        }
        match kind {
            "Certificate" => {
                let issuer = at(object, "/spec/issuerRef");
                assert_eq!(issuer["group"], "cert-manager.io", "{file}");
                assert_eq!(issuer["kind"], "Issuer", "{file}");
                let name = str_at(issuer, "/name");
                assert!(
                    issuers.contains(name),
                    "{file}: issued by {name}, which the overlay does not define"
                );
            }
            _ => {
                if let Some(ca) = object.pointer("/spec/ca") {
                    let secret = str_at(ca, "/secretName");
                    assert!(
                        ca_secrets.contains(secret),
                        "{file}: a CA Issuer signing with {secret}, which no CA Certificate of the overlay fills"
                    );
                }
            }
        }
    }
}

/// The patch mounts the serving certificate's Secret read-only and passes its `tls.crt` and `tls.key` to the
/// daemon's TLS flags; the certificate names the Service as clients address it. What comes out is still a
/// DaemonSet Kubernetes knows field by field, running flags the daemon has.
#[test]
fn registry_tls_overlay_patch_serves_the_certificate_issued_for_the_service() {
    let mut ds = daemonset();
    let namespace = str_at(&ds, "/metadata/namespace").to_string();
    let patches = overlay_patches(REGISTRY_TLS_OVERLAY);
    let [(target, ops)] = patches.as_slice() else {
        panic!("one patch expected, found {}", patches.len())
    };
    let (group, version) = str_at(&ds, "/apiVersion").split_once('/').unwrap();
    assert_eq!(
        target,
        &json!({
            "group": group,
            "version": version,
            "kind": str_at(&ds, "/kind"),
            "name": str_at(&ds, "/metadata/name"),
            "namespace": namespace,
        })
    );
    let before: Vec<String> = args(daemon_container(&ds)).into_iter().map(String::from).collect();

    apply_json_patch(&mut ds, ops);

    let container = daemon_container(&ds);
    let after = args(container);
    let (cert, key) = (
        flag_value(&after, "--registry-tls-cert"),
        flag_value(&after, "--registry-tls-key"),
    );
    let mut expected: Vec<&str> = before.iter().map(String::as_str).collect();
    expected.extend(["--registry-tls-cert", cert, "--registry-tls-key", key]);
    assert_eq!(after, expected, "the daemon's arguments plus the two TLS flags");
    assert!(
        after.contains(&"--registry-listen"),
        "TLS for the endpoint the base serves"
    );
    let unknown = unknown_flags(&after);
    assert!(
        unknown.is_empty(),
        "flags that `wasmcache serve` does not have: {unknown:?}"
    );

    let (cert_dir, cert_file) = cert.rsplit_once('/').unwrap();
    let (key_dir, key_file) = key.rsplit_once('/').unwrap();
    assert_eq!(cert_dir, key_dir, "certificate and key come from one Secret");
    assert_eq!(
        (cert_file, key_file),
        ("tls.crt", "tls.key"),
        "the keys cert-manager writes"
    );
    let mount = at(container, "/volumeMounts")
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == cert_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {cert_dir}"));
    assert_eq!(mount["readOnly"], true, "the key is mounted read-only");
    let volume = at(pod_spec(&ds), "/volumes")
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    let secret = str_at(volume, "/secret/secretName");

    let certificates = overlay_objects_of_kind(REGISTRY_TLS_OVERLAY, "Certificate");
    let (file, serving) = certificates
        .iter()
        .find(|(_, c)| c["spec"]["secretName"] == secret)
        .unwrap_or_else(|| panic!("no Certificate of the overlay fills the mounted Secret {secret}"));
    assert_ne!(
        serving.pointer("/spec/isCA"),
        Some(&json!(true)),
        "{file}: the serving certificate is no CA"
    );
    let names: BTreeSet<&str> = at(serving, "/spec/dnsNames")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let service = manifest("service.yaml");
    assert_eq!(str_at(&service, "/metadata/namespace"), namespace);
    for name in [
        format!("{SERVICE}.{namespace}.svc"),
        format!("{SERVICE}.{namespace}.svc.cluster.local"),
    ] {
        assert!(names.contains(name.as_str()), "{file}: {name} is not among {names:?}");
    }
    assert!(
        at(serving, "/spec/usages")
            .as_array()
            .unwrap()
            .contains(&json!("server auth")),
        "{file}: a serving certificate"
    );

    let unknown = unknown_fields::<k8s_openapi::api::apps::v1::DaemonSet>(&ds);
    assert!(
        unknown.is_empty(),
        "the patched DaemonSet has fields Kubernetes does not know: {unknown:?}"
    );
}
