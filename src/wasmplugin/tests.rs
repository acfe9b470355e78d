use super::*;

use serde_json::json;

/// Every field of the API set, in the style of Istio's own WasmPlugin examples.
fn full_plugin_json() -> Value {
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {
            "name": "openid-connect",
            "namespace": "istio-ingress",
            "labels": {"app": "gateway", "app.kubernetes.io/part-of": "auth"},
            "annotations": {"owner": "platform"},
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "resourceVersion": "123456"
        },
        "spec": {
            "selector": {"matchLabels": {"istio": "ingressgateway"}},
            "url": "oci://private-registry:5000/openid-connect/openid:latest",
            "sha256": "b10b1ad4c4eb46c12f7d0b5c0b8bde2d4b6f0f5a2e4c1f2ae0f1d2c3b4a59687",
            "imagePullPolicy": "IfNotPresent",
            "imagePullSecret": "private-registry-pull-secret",
            "pluginConfig": {
                "openid_server": "authn",
                "openid_realm": "ingress",
                "nested": {"list": [1, -2, 2.5, true, null, "x"], "empty": {}}
            },
            "pluginName": "openid-connect",
            "phase": "AUTHN",
            "priority": 10,
            "failStrategy": "FAIL_OPEN",
            "vmConfig": {
                "env": [
                    {"name": "POD_NAME", "valueFrom": "HOST"},
                    {"name": "TRUST_DOMAIN", "valueFrom": "INLINE", "value": "cluster.local"}
                ]
            },
            "match": [
                {"mode": "SERVER", "ports": [{"number": 80}, {"number": 8080}]},
                {"mode": "CLIENT_AND_SERVER"}
            ],
            "targetRefs": [
                {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "bookinfo-gateway"}
            ]
        }
    })
}

const FULL_PLUGIN_YAML: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: openid-connect
  namespace: istio-ingress
  labels:
    app: gateway
    app.kubernetes.io/part-of: auth
  annotations:
    owner: platform
  creationTimestamp: 2024-05-01T10:00:00Z
  resourceVersion: "123456"
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  url: oci://private-registry:5000/openid-connect/openid:latest
  sha256: b10b1ad4c4eb46c12f7d0b5c0b8bde2d4b6f0f5a2e4c1f2ae0f1d2c3b4a59687
  imagePullPolicy: IfNotPresent
  imagePullSecret: private-registry-pull-secret
  pluginConfig:
    openid_server: authn
    openid_realm: ingress
    nested:
      list: [1, -2, 2.5, true, null, x]
      empty: {}
  pluginName: openid-connect
  phase: AUTHN
  priority: 10
  failStrategy: FAIL_OPEN
  vmConfig:
    env:
    - name: POD_NAME
      valueFrom: HOST
    - name: TRUST_DOMAIN
      valueFrom: INLINE
      value: cluster.local
  match:
  - mode: SERVER
    ports:
    - number: 80
    - number: 8080
  - mode: CLIENT_AND_SERVER
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: bookinfo-gateway
"#;

/// A valid plugin named `name`, with `spec_extra` (indented by 2) appended to its spec.
fn plugin_yaml(name: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\nspec:\n  url: oci://ghcr.io/example/{name}:v1\n{spec_extra}"
    )
}

/// The single plugin in `text`, which must load cleanly.
fn load_one(text: &str) -> WasmPlugin {
    let mut results = load("plugins.yaml", text);
    assert_eq!(results.len(), 1, "{results:?}");
    results.remove(0).expect("the plugin loads")
}

/// The message of the single result of `text`, which must be an error.
fn load_error(text: &str) -> String {
    let results = load("plugins.yaml", text);
    assert_eq!(results.len(), 1, "{results:?}");
    match &results[0] {
        Ok(plugin) => panic!("expected an error, loaded {plugin:?}"),
        Err(error) => error.to_string(),
    }
}

/// Names of the loaded plugins, and messages of the errors, in file order.
fn outcomes(results: &[Result<WasmPlugin, PluginError>]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok(plugin) => format!("ok {}", plugin.resource_name()),
            Err(error) => format!("err {error}"),
        })
        .collect()
}

#[test]
fn full_plugin_round_trips_every_field() {
    let original = full_plugin_json();
    let plugin = load_one(&original.to_string());
    assert_eq!(serde_json::to_value(&plugin).unwrap(), original);
}

#[test]
fn full_plugin_fields_are_typed() {
    let plugin = load_one(&full_plugin_json().to_string());
    let spec = &plugin.spec;
    assert_eq!(plugin.metadata.name.as_deref(), Some("openid-connect"));
    assert_eq!(
        plugin.metadata.labels.as_ref().unwrap()["app.kubernetes.io/part-of"],
        "auth"
    );
    assert_eq!(
        spec.selector.as_ref().unwrap().match_labels.as_ref().unwrap()["istio"],
        "ingressgateway"
    );
    assert_eq!(spec.image_pull_policy, Some(ImagePullPolicy::IfNotPresent));
    assert_eq!(spec.image_pull_secret.as_deref(), Some("private-registry-pull-secret"));
    assert_eq!(spec.plugin_config.as_ref().unwrap()["openid_realm"], "ingress");
    assert_eq!(spec.phase, Some(PluginPhase::Authn));
    assert_eq!(spec.priority, Some(10));
    assert_eq!(spec.fail_strategy, Some(FailStrategy::FailOpen));
    let env = spec.vm_config.as_ref().unwrap().env.as_ref().unwrap();
    assert_eq!(env[0].value_from, Some(EnvValueSource::Host));
    assert_eq!(env[1].value.as_deref(), Some("cluster.local"));
    let matches = spec.r#match.as_ref().unwrap();
    assert_eq!(matches[0].mode, Some(WorkloadMode::Server));
    assert_eq!(matches[0].ports.as_ref().unwrap()[1].number, Some(8080));
    assert_eq!(matches[1].mode, Some(WorkloadMode::ClientAndServer));
    assert_eq!(
        spec.target_refs.as_ref().unwrap()[0].name.as_deref(),
        Some("bookinfo-gateway")
    );
}

#[test]
fn yaml_and_json_of_the_same_plugin_load_the_same() {
    assert_eq!(load_one(FULL_PLUGIN_YAML), load_one(&full_plugin_json().to_string()));
}

#[test]
fn serde_deserialize_reads_a_full_plugin() {
    let plugin: WasmPlugin = serde_json::from_value(full_plugin_json()).unwrap();
    assert_eq!(plugin, load_one(&full_plugin_json().to_string()));
}

#[test]
fn serde_deserialize_error_names_the_field_path() {
    let mut value = full_plugin_json();
    value["spec"]["match"][1]["mode"] = json!("BOTH");
    let error = serde_json::from_value::<WasmPlugin>(value).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"spec.match[1].mode: "BOTH" is not one of UNDEFINED, CLIENT, SERVER, CLIENT_AND_SERVER"#
    );
}

#[test]
fn every_enum_value_round_trips_with_its_api_spelling() {
    fn check<E: serde::de::DeserializeOwned + Serialize + PartialEq + fmt::Debug + Copy>(all: &[E], names: &[&str]) {
        assert_eq!(all.len(), names.len());
        for (value, name) in all.iter().zip(names) {
            assert_eq!(serde_json::to_value(value).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<E>(json!(name)).unwrap(), *value);
        }
    }
    check(ImagePullPolicy::ALL, &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]);
    check(PluginPhase::ALL, &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]);
    check(FailStrategy::ALL, &["FAIL_CLOSE", "FAIL_OPEN"]);
    check(EnvValueSource::ALL, &["INLINE", "HOST"]);
    check(
        WorkloadMode::ALL,
        &["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"],
    );
}

#[test]
fn absent_optional_fields_are_left_out_when_serialized() {
    let plugin = load_one(&plugin_yaml("minimal", ""));
    assert_eq!(
        serde_json::to_value(&plugin).unwrap(),
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "minimal"},
            "spec": {"url": "oci://ghcr.io/example/minimal:v1"}
        })
    );
}

#[test]
fn null_optional_fields_are_read_as_absent() {
    let plugin = load_one(&plugin_yaml(
        "nulls",
        "  priority: null\n  selector: ~\n  match:\n  - mode:\n    ports: null\n",
    ));
    assert_eq!(plugin.spec.priority, None);
    assert_eq!(plugin.spec.selector, None);
    assert_eq!(plugin.spec.r#match, Some(vec![TrafficSelector::default()]));
}

#[test]
fn empty_collections_round_trip() {
    let mut original = full_plugin_json();
    original["metadata"]["labels"] = json!({});
    original["spec"]["match"] = json!([]);
    original["spec"]["pluginConfig"] = json!({});
    let plugin = load_one(&original.to_string());
    assert_eq!(serde_json::to_value(&plugin).unwrap(), original);
}

#[test]
fn wrong_image_pull_policy_names_document_field_and_allowed_values() {
    let text = format!(
        "{}\n---\n{}",
        plugin_yaml("good", ""),
        plugin_yaml("bad", "  imagePullPolicy: always\n")
    );
    let results = load("plugins.yaml", &text);
    assert_eq!(
        outcomes(&results),
        [
            "ok default/good",
            r#"err plugins.yaml doc 2: spec.imagePullPolicy: "always" is not one of UNSPECIFIED_POLICY, IfNotPresent, Always"#,
        ]
    );
}

#[test]
fn wrong_phase_lists_the_phases() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  phase: AUTHENTICATION\n")),
        r#"plugins.yaml doc 1: spec.phase: "AUTHENTICATION" is not one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS"#
    );
}

#[test]
fn wrong_fail_strategy_lists_the_strategies() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  failStrategy: FAIL_CLOSED\n")),
        r#"plugins.yaml doc 1: spec.failStrategy: "FAIL_CLOSED" is not one of FAIL_CLOSE, FAIL_OPEN"#
    );
}

#[test]
fn wrong_env_value_source_names_the_env_entry() {
    assert_eq!(
        load_error(&plugin_yaml(
            "p",
            "  vmConfig:\n    env:\n    - name: A\n      value: x\n    - name: B\n      valueFrom: ENV\n"
        )),
        r#"plugins.yaml doc 1: spec.vmConfig.env[1].valueFrom: "ENV" is not one of INLINE, HOST"#
    );
}

#[test]
fn wrong_match_mode_names_the_match_entry() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  match:\n  - mode: server\n")),
        r#"plugins.yaml doc 1: spec.match[0].mode: "server" is not one of UNDEFINED, CLIENT, SERVER, CLIENT_AND_SERVER"#
    );
}

#[test]
fn enum_given_a_number_is_a_type_error() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  imagePullPolicy: 1\n")),
        "plugins.yaml doc 1: spec.imagePullPolicy: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn string_priority_is_a_type_error_naming_the_path() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  priority: high\n")),
        r#"plugins.yaml doc 1: spec.priority: invalid type: string "high", expected i64"#
    );
}

#[test]
fn fractional_priority_is_a_type_error() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  priority: 1.5\n")),
        "plugins.yaml doc 1: spec.priority: invalid type: floating point `1.5`, expected i64"
    );
}

#[test]
fn priority_beyond_64_bits_is_a_type_error() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  priority: 99999999999999999999999\n")),
        "plugins.yaml doc 1: spec.priority: invalid type: floating point `1e+23`, expected i64"
    );
}

#[test]
fn negative_priority_is_accepted() {
    assert_eq!(load_one(&plugin_yaml("p", "  priority: -5\n")).spec.priority, Some(-5));
}

#[test]
fn match_given_a_mapping_is_a_type_error() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  match: {}\n")),
        "plugins.yaml doc 1: spec.match: invalid type: map, expected a sequence"
    );
}

#[test]
fn negative_port_is_a_type_error_naming_the_port() {
    assert_eq!(
        load_error(&plugin_yaml(
            "p",
            "  match:\n  - ports:\n    - number: 80\n    - number: -1\n"
        )),
        "plugins.yaml doc 1: spec.match[0].ports[1].number: invalid value: integer `-1`, expected u32"
    );
}

#[test]
fn plugin_config_must_be_a_mapping() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  pluginConfig: [a]\n")),
        "plugins.yaml doc 1: spec.pluginConfig: invalid type: sequence, expected a map"
    );
}

#[test]
fn label_value_must_be_a_string() {
    let text = plugin_yaml("p", "").replace(
        "  name: p\n",
        "  name: p\n  labels:\n    app.kubernetes.io/version: 2\n",
    );
    assert_eq!(
        load_error(&text),
        r#"plugins.yaml doc 1: metadata.labels["app.kubernetes.io/version"]: invalid type: integer `2`, expected a string"#
    );
}

#[test]
fn match_label_value_must_be_a_string() {
    assert_eq!(
        load_error(&plugin_yaml("p", "  selector:\n    matchLabels:\n      canary: true\n")),
        "plugins.yaml doc 1: spec.selector.matchLabels.canary: invalid type: boolean `true`, expected a string"
    );
}

#[test]
fn yes_and_on_are_strings_not_booleans() {
    let plugin = load_one(&plugin_yaml(
        "p",
        "  selector:\n    matchLabels:\n      canary: yes\n      debug: on\n",
    ));
    let labels = plugin.spec.selector.unwrap().match_labels.unwrap();
    assert_eq!((labels["canary"].as_str(), labels["debug"].as_str()), ("yes", "on"));
}

#[test]
fn missing_url_is_reported() {
    let text = plugin_yaml("p", "").replace("  url: oci://ghcr.io/example/p:v1\n", "  phase: STATS\n");
    assert_eq!(
        load_error(&text),
        "plugins.yaml doc 1: spec.url: required field is missing"
    );
}

#[test]
fn empty_url_is_reported() {
    let text = plugin_yaml("p", "").replace("oci://ghcr.io/example/p:v1", "\"  \"");
    assert_eq!(load_error(&text), "plugins.yaml doc 1: spec.url: must not be empty");
}

#[test]
fn missing_spec_reports_the_missing_url() {
    let text = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: p\n";
    assert_eq!(
        load_error(text),
        "plugins.yaml doc 1: spec.url: required field is missing"
    );
}

#[test]
fn missing_name_is_reported() {
    let text = plugin_yaml("p", "").replace("  name: p\n", "  namespace: istio-system\n");
    assert_eq!(
        load_error(&text),
        "plugins.yaml doc 1: metadata.name: required field is missing"
    );
}

#[test]
fn missing_metadata_reports_the_missing_name() {
    let text = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec:\n  url: oci://x/y:v1\n";
    assert_eq!(
        load_error(text),
        "plugins.yaml doc 1: metadata.name: required field is missing"
    );
}

#[test]
fn empty_name_is_reported() {
    let text = plugin_yaml("p", "").replace("  name: p\n", "  name: \"\"\n");
    assert_eq!(
        load_error(&text),
        "plugins.yaml doc 1: metadata.name: must not be empty"
    );
}

#[test]
fn wrong_api_version_says_what_was_found() {
    let text = plugin_yaml("p", "").replace("v1alpha1", "v1beta1");
    assert_eq!(
        load_error(&text),
        r#"plugins.yaml doc 1: apiVersion: expected extensions.istio.io/v1alpha1, found "extensions.istio.io/v1beta1""#
    );
    assert!(matches!(
        &load("f", &text)[0],
        Err(PluginError::Invalid {
            error: FieldError {
                problem: Problem::WrongApiVersion { .. },
                ..
            },
            ..
        })
    ));
}

#[test]
fn missing_api_version_is_reported() {
    let text = plugin_yaml("p", "").replace("apiVersion: extensions.istio.io/v1alpha1\n", "");
    assert_eq!(
        load_error(&text),
        "plugins.yaml doc 1: apiVersion: required field is missing"
    );
}

#[test]
fn wrong_kind_says_what_was_found() {
    let text = plugin_yaml("p", "").replace("kind: WasmPlugin", "kind: EnvoyFilter");
    assert_eq!(
        load_error(&text),
        r#"plugins.yaml doc 1: kind: expected WasmPlugin, WasmPluginList or List, found "EnvoyFilter""#
    );
}

#[test]
fn missing_kind_is_reported() {
    let text = plugin_yaml("p", "").replace("kind: WasmPlugin\n", "");
    assert_eq!(load_error(&text), "plugins.yaml doc 1: kind: required field is missing");
}

#[test]
fn document_that_is_not_a_mapping_is_reported() {
    assert_eq!(
        load_error("just a string\n"),
        r#"plugins.yaml doc 1: invalid type: string "just a string", expected an object"#
    );
}

#[test]
fn broken_document_in_the_middle_does_not_hide_the_others() {
    let text = [
        plugin_yaml("first", ""),
        plugin_yaml("second", "  failStrategy: OPEN\n"),
        plugin_yaml("third", ""),
    ]
    .join("---\n");
    assert_eq!(
        outcomes(&load("plugins.yaml", &text)),
        [
            "ok default/first",
            r#"err plugins.yaml doc 2: spec.failStrategy: "OPEN" is not one of FAIL_CLOSE, FAIL_OPEN"#,
            "ok default/third",
        ]
    );
}

#[test]
fn yaml_syntax_error_in_the_middle_does_not_hide_the_others() {
    let text = format!(
        "{}---\nkind: WasmPlugin\nspec: [unclosed\n---\n{}",
        plugin_yaml("first", ""),
        plugin_yaml("third", "")
    );
    let results = load("plugins.yaml", &text);
    let outcomes = outcomes(&results);
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(outcomes[0], "ok default/first");
    assert!(
        outcomes[1].starts_with("err plugins.yaml doc 2: invalid YAML: "),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], "ok default/third");
}

#[test]
fn yaml_syntax_error_names_the_line_in_the_file() {
    // Line 9 of the file is line 3 of the second document (counting its `---`).
    let text = format!(
        "{}---\nkind: WasmPlugin\n  spec: bad indent\n",
        plugin_yaml("first", "")
    );
    let results = load("plugins.yaml", &text);
    let Err(PluginError::Syntax { doc, line, message, .. }) = &results[1] else {
        panic!("{results:?}");
    };
    assert_eq!((*doc, *line), (2, Some(9)));
    assert!(message.contains("line 9"), "{message}");
}

#[test]
fn duplicate_keys_are_a_syntax_error() {
    let text = plugin_yaml("p", "  url: oci://other/url:v1\n");
    assert!(load_error(&text).starts_with("plugins.yaml doc 1: invalid YAML: duplicate mapping key"));
}

#[test]
fn empty_documents_are_skipped_but_counted() {
    let text = format!(
        "---\n---\n# only a comment\n---\nnull\n---\n{}",
        plugin_yaml("bad", "  phase: LAST\n")
    );
    let outcomes = outcomes(&load("plugins.yaml", &text));
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(
        outcomes[0].starts_with("err plugins.yaml doc 4: spec.phase"),
        "{outcomes:?}"
    );
}

#[test]
fn leading_comments_and_trailing_marker_make_no_documents() {
    let text = format!("# plugins for the ingress\n\n---\n{}---\n", plugin_yaml("only", ""));
    assert_eq!(outcomes(&load("plugins.yaml", &text)), ["ok default/only"]);
}

#[test]
fn empty_input_yields_nothing() {
    assert!(load("plugins.yaml", "").is_empty());
    assert!(load("plugins.yaml", "\n# nothing here\n").is_empty());
}

#[test]
fn document_end_marker_separates_documents() {
    let text = format!(
        "{}...\n# between\n{}",
        plugin_yaml("one", ""),
        plugin_yaml("two", "  phase: NOPE\n")
    );
    let outcomes = outcomes(&load("plugins.yaml", &text));
    assert_eq!(outcomes[0], "ok default/one");
    assert!(
        outcomes[1].starts_with("err plugins.yaml doc 2: spec.phase"),
        "{outcomes:?}"
    );
}

#[test]
fn directive_goes_with_the_document_it_precedes() {
    let text = format!("%YAML 1.2\n---\n{}", plugin_yaml("directed", ""));
    assert_eq!(outcomes(&load("plugins.yaml", &text)), ["ok default/directed"]);
}

#[test]
fn windows_line_endings_and_byte_order_mark_are_read() {
    let text = format!("\u{feff}{}---\n{}", plugin_yaml("one", ""), plugin_yaml("two", "")).replace('\n', "\r\n");
    assert_eq!(
        outcomes(&load("plugins.yaml", &text)),
        ["ok default/one", "ok default/two"]
    );
}

#[test]
fn document_starting_on_the_marker_line_is_read() {
    let text = r#"--- {apiVersion: extensions.istio.io/v1alpha1, kind: WasmPlugin, metadata: {name: flow}, spec: {url: "oci://x/y:v1"}}"#;
    assert_eq!(outcomes(&load("plugins.yaml", text)), ["ok default/flow"]);
}

#[test]
fn wasm_plugin_list_yields_each_item() {
    let list = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPluginList",
        "metadata": {"resourceVersion": "99", "continue": "token"},
        "items": [
            {"metadata": {"name": "a", "namespace": "ns1", "resourceVersion": "7"}, "spec": {"url": "oci://x/a:v1"}},
            {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin", "metadata": {"name": "b"}, "spec": {"url": "oci://x/b:v1"}}
        ]
    });
    let results = load("list.json", &list.to_string());
    assert_eq!(outcomes(&results), ["ok ns1/a", "ok default/b"]);
    assert_eq!(results[0].as_ref().unwrap().resource_version(), "7");
}

#[test]
fn wasm_plugin_list_item_error_names_the_item_index() {
    let list = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPluginList",
        "items": [
            {"metadata": {"name": "a"}, "spec": {"url": "oci://x/a:v1"}},
            {"metadata": {"name": "b"}, "spec": {"url": "oci://x/b:v1", "phase": "FIRST"}},
            {"metadata": {"name": "c"}, "spec": {"url": "oci://x/c:v1"}}
        ]
    });
    assert_eq!(
        outcomes(&load("list.json", &list.to_string())),
        [
            "ok default/a",
            r#"err list.json doc 1: items[1].spec.phase: "FIRST" is not one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS"#,
            "ok default/c",
        ]
    );
}

/// A problem found after loading is reported where [`load`] would have reported it: same file, document and
/// path, the item index included.
#[test]
fn located_plugins_report_later_problems_at_their_document_and_item() {
    let list = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPluginList",
        "items": [
            {"metadata": {"name": "a"}, "spec": {"url": "oci://x/a:v1", "phase": "FIRST"}},
            {"metadata": {"name": "b"}, "spec": {"url": "oci://x/b:v1"}}
        ]
    });
    let text = format!("{}---\n{list}\n", plugin_yaml("single", ""));
    let results = load_located("plugins.yaml", &text);
    let located: Vec<&Location> = results.iter().filter_map(|r| r.as_ref().ok()).map(|(l, _)| l).collect();
    let refused = |location: &Location| {
        location
            .error(
                "spec.sha256",
                Problem::Refused {
                    reason: "too short".into(),
                },
            )
            .to_string()
    };
    assert_eq!(
        located.iter().map(|l| refused(l)).collect::<Vec<_>>(),
        [
            "plugins.yaml doc 1: spec.sha256: too short",
            "plugins.yaml doc 2: items[1].spec.sha256: too short"
        ]
    );
    assert_eq!(
        outcomes(&load("plugins.yaml", &text)),
        [
            "ok default/single",
            r#"err plugins.yaml doc 2: items[0].spec.phase: "FIRST" is not one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS"#,
            "ok default/b"
        ]
    );
}

#[test]
fn wasm_plugin_list_with_malformed_metadata_is_one_error() {
    let text = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPluginList\nmetadata: {resourceVersion: [1]}\nitems:\n- metadata: {name: a}\n  spec: {url: oci://x/a:v1}\n";
    assert_eq!(
        load_error(text),
        "plugins.yaml doc 1: metadata.resourceVersion: invalid type: sequence, expected a string"
    );
}

#[test]
fn wasm_plugin_list_with_wrong_api_version_is_one_error() {
    let text = "apiVersion: v1\nkind: WasmPluginList\nitems:\n- metadata: {name: a}\n  spec: {url: oci://x/a:v1}\n";
    assert_eq!(
        load_error(text),
        r#"plugins.yaml doc 1: apiVersion: expected extensions.istio.io/v1alpha1, found "v1""#
    );
}

#[test]
fn core_list_yields_wasm_plugins() {
    let text = format!(
        "apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n- {}\n- {}\n",
        plugin_yaml("a", "").replace('\n', "\n  "),
        plugin_yaml("b", "").replace('\n', "\n  ")
    );
    assert_eq!(outcomes(&load("plugins.yaml", &text)), ["ok default/a", "ok default/b"]);
}

#[test]
fn core_list_item_of_another_kind_is_an_error_naming_its_index() {
    let text = format!(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: cm}}\n- {}\n",
        plugin_yaml("a", "").replace('\n', "\n  ")
    );
    let results = load("plugins.yaml", &text);
    assert_eq!(
        outcomes(&results),
        [
            r#"err plugins.yaml doc 1: items[0].kind: expected WasmPlugin, found "ConfigMap""#,
            "ok default/a"
        ]
    );
    assert!(matches!(
        &results[0],
        Err(PluginError::Invalid {
            error: FieldError {
                problem: Problem::WrongKind { .. },
                ..
            },
            ..
        })
    ));
}

#[test]
fn core_list_items_must_say_what_they_are() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- metadata: {name: a}\n  spec: {url: oci://x/a:v1}\n";
    assert_eq!(
        load_error(text),
        "plugins.yaml doc 1: items[0].kind: required field is missing"
    );
}

#[test]
fn list_items_that_are_not_an_array_are_one_error() {
    assert_eq!(
        load_error("apiVersion: v1\nkind: List\nitems: {a: 1}\n"),
        "plugins.yaml doc 1: items: invalid type: map, expected a sequence"
    );
}

#[test]
fn empty_list_yields_nothing() {
    assert!(load("plugins.yaml", "apiVersion: v1\nkind: List\nitems: []\n").is_empty());
}

#[test]
fn json_plugin_is_read() {
    let text = serde_json::to_string_pretty(&full_plugin_json()).unwrap();
    assert_eq!(
        outcomes(&load("plugin.json", &text)),
        ["ok istio-ingress/openid-connect"]
    );
}

#[test]
fn concatenated_json_documents_are_counted_separately() {
    let good =
        json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "a"}, "spec": {"url": "oci://x/a:v1"}});
    let mut bad = good.clone();
    bad["spec"]["priority"] = json!("high");
    let text = format!("{good}\n{bad}\n");
    assert_eq!(
        outcomes(&load("plugins.json", &text)),
        [
            "ok default/a",
            r#"err plugins.json doc 2: spec.priority: invalid type: string "high", expected i64"#,
        ]
    );
}

#[test]
fn malformed_json_is_reported_with_its_line() {
    let text =
        "{\n  \"apiVersion\": \"extensions.istio.io/v1alpha1\",\n  \"kind\": \"WasmPlugin\"\n  \"metadata\": {}\n}\n";
    let results = load("plugin.json", text);
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        matches!(
            &results[0],
            Err(PluginError::Syntax {
                doc: 1,
                line: Some(_),
                ..
            })
        ),
        "{results:?}"
    );
}

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let mut value = full_plugin_json();
    value["status"] = json!({"conditions": []});
    value["metadata"]["uid"] = json!("d1f0c6a2");
    value["metadata"]["managedFields"] = json!([{"manager": "kubectl"}]);
    value["spec"]["futureField"] = json!({"a": 1});
    value["spec"]["selector"]["matchExpressions"] = json!([]);
    value["spec"]["vmConfig"]["env"][0]["extra"] = json!(true);
    value["spec"]["match"][0]["ports"][0]["protocol"] = json!("TCP");
    value["spec"]["targetRefs"][0]["namespace"] = json!("other");
    assert_eq!(load_one(&value.to_string()), load_one(&full_plugin_json().to_string()));
}

#[test]
fn resource_name_joins_namespace_and_name() {
    assert_eq!(
        load_one(FULL_PLUGIN_YAML).resource_name(),
        "istio-ingress/openid-connect"
    );
}

#[test]
fn resource_name_defaults_the_namespace() {
    assert_eq!(load_one(&plugin_yaml("p", "")).resource_name(), "default/p");
    let text = plugin_yaml("p", "").replace("  name: p\n", "  name: p\n  namespace: \"\"\n");
    assert_eq!(load_one(&text).resource_name(), "default/p");
}

#[test]
fn resource_version_is_the_metadata_value() {
    assert_eq!(load_one(FULL_PLUGIN_YAML).resource_version(), "123456");
}

#[test]
fn resource_version_is_empty_when_absent() {
    assert_eq!(load_one(&plugin_yaml("p", "")).resource_version(), "");
}

#[test]
fn pull_policy_maps_each_value() {
    for (text, expected) in [
        ("UNSPECIFIED_POLICY", PullPolicy::Unspecified),
        ("IfNotPresent", PullPolicy::IfNotPresent),
        ("Always", PullPolicy::Always),
    ] {
        let plugin = load_one(&plugin_yaml("p", &format!("  imagePullPolicy: {text}\n")));
        assert_eq!(plugin.pull_policy(), expected, "{text}");
    }
}

#[test]
fn pull_policy_defaults_to_unspecified() {
    assert_eq!(load_one(&plugin_yaml("p", "")).pull_policy(), PullPolicy::Unspecified);
}

#[test]
fn input_over_the_size_limit_is_rejected_whole() {
    let text = " ".repeat(MAX_INPUT_BYTES + 1);
    let results = load("huge.yaml", &text);
    assert_eq!(
        outcomes(&results),
        [format!(
            "err huge.yaml: {} bytes is more than the {MAX_INPUT_BYTES} bytes accepted",
            MAX_INPUT_BYTES + 1
        )]
    );
}

#[test]
fn documents_past_the_limit_are_not_read() {
    let text = format!(
        "{}---\n{}---\n{}",
        "---\n".repeat(MAX_DOCUMENTS - 1),
        plugin_yaml("last", ""),
        plugin_yaml("late", "")
    );
    assert_eq!(
        outcomes(&load("many.yaml", &text)),
        [
            "ok default/last".to_owned(),
            format!("err many.yaml: more than {MAX_DOCUMENTS} documents; the rest were not read")
        ]
    );
}

#[test]
fn alias_bomb_is_an_error_not_an_explosion() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (previous, next) in ('a'..='i').zip('b'..='j') {
        let refs = vec![format!("*{previous}"); 10].join(", ");
        text.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    let results = load("bomb.yaml", &text);
    assert!(
        matches!(&results[..], [Err(PluginError::Syntax { doc: 1, .. })]),
        "{results:?}"
    );
}

#[test]
fn values_past_the_file_limit_stop_the_reading() {
    // Each document expands through its aliases to 123 values (the mapping, two sequences, ten
    // inner sequences, 110 scalars); the third takes the file past 300.
    let doc = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n";
    let text = [doc; 5].join("---\n");
    let limits = Limits { values: 300, ..LIMITS };
    let results = load_within("big.yaml", &text, limits);
    let messages: Vec<String> = outcomes(&results)
        .into_iter()
        .map(|m| m.split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        messages,
        ["err big.yaml doc 1", "err big.yaml doc 2", "err big.yaml doc 3"]
    );
    assert!(
        matches!(&results[2], Err(PluginError::TooManyValues { doc: 3, limit: 300, .. })),
        "{results:?}"
    );
}

#[test]
fn deep_yaml_nesting_is_an_error_not_a_crash() {
    let text = format!("{}x{}", "[".repeat(100_000), "]".repeat(100_000));
    let results = load("deep.yaml", &text);
    assert!(matches!(&results[..], [Err(PluginError::Syntax { .. })]), "{results:?}");
}

#[test]
fn deep_block_yaml_nesting_is_an_error_not_a_crash() {
    let text: String = (0..500).map(|depth| format!("{}a:\n", " ".repeat(depth))).collect();
    let results = load("deep.yaml", &text);
    assert!(matches!(&results[..], [Err(PluginError::Syntax { .. })]), "{results:?}");
}

#[test]
fn deep_json_nesting_is_an_error_not_a_crash() {
    let text = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let results = load("deep.json", &text);
    assert!(matches!(&results[..], [Err(PluginError::Syntax { .. })]), "{results:?}");
}

#[test]
fn long_wrong_values_are_cut_short_in_messages() {
    let message = load_error(&plugin_yaml("p", &format!("  phase: {}\n", "X".repeat(10_000))));
    assert!(message.len() < 300, "{message}");
    assert!(message.contains(r#"XXX..." is not one of"#), "{message}");
}

#[test]
fn api_object_may_leave_out_its_type() {
    let mut value = full_plugin_json();
    value
        .as_object_mut()
        .unwrap()
        .retain(|key, _| key != "apiVersion" && key != "kind");
    assert_eq!(
        WasmPlugin::from_api_object(value).unwrap(),
        load_one(&full_plugin_json().to_string())
    );
}

#[test]
fn api_object_of_another_kind_is_rejected() {
    let mut value = full_plugin_json();
    value["kind"] = json!("EnvoyFilter");
    let error = WasmPlugin::from_api_object(value).unwrap_err();
    assert_eq!(error.to_string(), r#"kind: expected WasmPlugin, found "EnvoyFilter""#);
}

/// serde's type errors quote the wrong value whole; the message keeps its start and what was expected.
#[test]
fn long_wrongly_typed_values_are_cut_short_in_messages() {
    let message = load_error(&plugin_yaml(
        "p",
        &format!("  priority: {}\n", "9".repeat(10_000) + "x"),
    ));
    assert!(message.len() < 300, "{message}");
    assert!(
        message.starts_with("plugins.yaml doc 1: spec.priority: invalid type: string \"999"),
        "{message}"
    );
    assert!(message.ends_with("x\", expected i64"), "{message}");
}
