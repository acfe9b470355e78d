use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn matches(pattern: &str, image: &str) -> bool {
    MatchImage::parse(pattern).expect("pattern parses").matches(image)
}

/// The kubelet's documented `matchImages` examples and the rules of `URLsMatchStr`.
#[test]
fn match_images_follow_the_kubelet() {
    let table: &[(&str, &str, bool)] = &[
        // Documented examples.
        (
            "123456789.dkr.ecr.us-east-1.amazonaws.com",
            "123456789.dkr.ecr.us-east-1.amazonaws.com/team/app",
            true,
        ),
        ("*.azurecr.io", "myregistry.azurecr.io/app", true),
        ("*.azurecr.io", "azurecr.io/app", false),
        ("gcr.io", "gcr.io/project/app", true),
        ("gcr.io", "eu.gcr.io/project/app", false),
        ("*.*.registry.io", "a.b.registry.io/app", true),
        ("*.*.registry.io", "a.registry.io/app", false),
        ("registry.io:8080/path", "registry.io:8080/path/app", true),
        ("registry.io:8080/path", "registry.io/path/app", false),
        ("registry.io:8080/path", "registry.io:8081/path/app", false),
        ("registry.io:8080/path", "registry.io:8080/other/app", false),
        // A glob matches within one label, and only whole labels.
        ("*.registry.io", "a.registry.io/x", true),
        ("*.registry.io", "registry.io/x", false),
        ("*.registry.io", "a.b.registry.io/x", false),
        ("*.io", "k8s.io/x", true),
        ("*.io", "registry.k8s.io/x", false),
        ("k8s.*.io", "k8s.registry.io/x", true),
        ("k8s.*", "k8s.io/x", true),
        ("app*.k8s.io", "app1.k8s.io/x", true),
        ("app*.k8s.io", "web.k8s.io/x", false),
        // A pattern without a port matches only images without one.
        ("registry.io", "registry.io:5000/x", false),
        ("registry.io:5000", "registry.io:5000/x", true),
        // The path is a string prefix, as the kubelet's strings.HasPrefix.
        ("registry.io/team", "registry.io/team/app", true),
        ("registry.io/team", "registry.io/teammate/app", true),
        ("registry.io/team/", "registry.io/teammate/app", false),
        ("registry.io/team", "registry.io/other/app", false),
        // An optional scheme; host names are not case-sensitive.
        ("https://registry.io", "registry.io/x", true),
        ("http://registry.io", "registry.io/x", true),
        ("Registry.IO", "registry.io/x", true),
        // Docker Hub is matched by the name the image carries, and nothing else.
        ("docker.io", "docker.io/library/nginx", true),
        ("index.docker.io", "docker.io/library/nginx", false),
        // Loopback registries, as the tests use them.
        ("127.0.0.1:5000", "127.0.0.1:5000/team/app", true),
        ("127.0.0.*:5000", "127.0.0.1:5000/team/app", true),
    ];
    for &(pattern, image, expected) in table {
        assert_eq!(matches(pattern, image), expected, "{pattern} against {image}");
    }
}

#[test]
fn bad_match_images_are_refused() {
    for pattern in [
        "",
        "registry.io:*",
        "registry.io:port",
        "a..b",
        ".registry.io",
        "user:pw@registry.io",
        "reg istry.io",
        "[bad",
    ] {
        assert!(MatchImage::parse(pattern).is_err(), "{pattern:?} parsed");
    }
}

#[test]
fn go_durations_parse_as_metav1_duration() {
    let table: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("5m", Duration::from_secs(300)),
        ("1h30m", Duration::from_secs(5400)),
        ("12h", Duration::from_secs(12 * 3600)),
        ("300ms", Duration::from_millis(300)),
        ("1.5s", Duration::from_millis(1500)),
        ("2h45m10s", Duration::from_secs(2 * 3600 + 45 * 60 + 10)),
    ];
    for &(text, expected) in table {
        assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
    }
    for bad in ["", "5", "5 minutes", "1d", "-5m", "m", "1..5s"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} parsed");
    }
}

const GOOD_YAML: &str = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages:
      - "*.dkr.ecr.*.amazonaws.com"
      - "registry.example.com:5000/team"
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args:
      - get-credentials
    env:
      - name: AWS_PROFILE
        value: node-secret-value
"#;

fn parse(text: &str) -> Result<ProviderConfig, ConfigFileError> {
    ProviderConfig::parse(text, Path::new("/opt/providers"))
}

fn parse_err(text: &str) -> ConfigFileError {
    parse(text).expect_err("the file is refused")
}

#[test]
fn the_kubelet_format_parses_from_yaml_and_json() {
    let config = parse(GOOD_YAML).expect("parses");
    let p = &config.providers[0];
    assert_eq!(p.name, "ecr-credential-provider");
    assert_eq!(p.program, Path::new("/opt/providers/ecr-credential-provider"));
    assert_eq!(p.default_cache_duration, Duration::from_secs(12 * 3600));
    assert_eq!(p.args, ["get-credentials"]);
    assert_eq!(p.env, [("AWS_PROFILE".to_string(), "node-secret-value".to_string())]);
    assert!(p.match_images[1].matches("registry.example.com:5000/team/app"));
    assert!(
        !format!("{config:?}").contains("node-secret-value"),
        "Debug shows env values"
    );

    let json = r#"{"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
        "providers": [{"name": "p", "matchImages": ["gcr.io"], "defaultCacheDuration": "0s",
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1"}]}"#;
    let config = parse(json).expect("JSON parses");
    assert_eq!(config.providers[0].default_cache_duration, Duration::ZERO);
    assert!(config.providers[0].args.is_empty());
}

/// Each bad file is refused with the path of the bad field.
#[test]
fn errors_name_the_field() {
    let provider = |body: &str| {
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - {}\n",
            body.replace('\n', "\n    ")
        )
    };
    let base = "name: p\nmatchImages: [\"gcr.io\"]\ndefaultCacheDuration: 1m\napiVersion: credentialprovider.kubelet.k8s.io/v1";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD_YAML.replace("kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1"),
            "apiVersion",
            "not supported",
        ),
        (
            GOOD_YAML.replace("kind: CredentialProviderConfig", "kind: Other"),
            "kind",
            "is not",
        ),
        (
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n".into(),
            "providers",
            "at least one",
        ),
        (
            provider(&format!("{base}\nextra: 1")),
            "providers[0].extra",
            "unknown field",
        ),
        (
            provider(&base.replace(
                "credentialprovider.kubelet.k8s.io/v1",
                "credentialprovider.kubelet.k8s.io/v1alpha1",
            )),
            "providers[0].apiVersion",
            "not supported",
        ),
        (
            provider(&base.replace("name: p", "name: ../p")),
            "providers[0].name",
            "file name",
        ),
        (
            provider(&base.replace("name: p", "name: \"a b\"")),
            "providers[0].name",
            "file name",
        ),
        (
            provider(&base.replace("[\"gcr.io\"]", "[\"gcr.io\", \"gcr.io:*\"]")),
            "providers[0].matchImages[1]",
            "host glob",
        ),
        (
            provider(&base.replace("[\"gcr.io\"]", "[]")),
            "providers[0].matchImages",
            "at least one",
        ),
        (
            provider(&base.replace("1m", "forever")),
            "providers[0].defaultCacheDuration",
            "duration",
        ),
        (
            provider(&base.replace("1m", "-1m")),
            "providers[0].defaultCacheDuration",
            "negative",
        ),
        (
            provider(&base.replace("defaultCacheDuration: 1m\n", "")),
            "providers[0].defaultCacheDuration",
            "required",
        ),
        (
            provider(&format!("{base}\ntokenAttributes:\n  serviceAccountTokenAudience: x")),
            "providers[0].tokenAttributes",
            "not supported",
        ),
        (
            provider(&format!("{base}\nenv:\n  - name: A")),
            "providers[0].env[0].value",
            "required",
        ),
        (
            provider(&format!("{base}\nargs: [1]")),
            "providers[0].args[0]",
            "string",
        ),
        (
            format!("{}\n  - {}", provider(base).trim_end(), base.replace('\n', "\n    ")),
            "providers[1].name",
            "duplicate",
        ),
    ];
    for (text, field, reason) in cases {
        let err = parse_err(&text);
        assert_eq!(err.field, field, "{text}\n{err}");
        assert!(err.reason.contains(reason), "{err} does not say {reason:?}");
    }
    let err = parse_err("providers: [");
    assert!(err.reason.contains("YAML"), "{err}");
}

const V1: &str = PLUGIN_API_VERSION;

fn response(auth: &str) -> String {
    format!(
        r#"{{"apiVersion": "{V1}", "kind": "CredentialProviderResponse", "cacheKeyType": "Registry",
            "cacheDuration": "5m", "auth": {auth}}}"#
    )
}

#[test]
fn responses_are_checked_and_their_auth_is_matched_most_specific_first() {
    let answer = parse_response(
        response(
            r#"{"registry.io": {"username": "host", "password": "secret-1"},
                "registry.io/team": {"username": "team", "password": "secret-2"},
                "*.other.io": {"username": "glob", "password": "secret-3"}}"#,
        )
        .as_bytes(),
        V1,
    )
    .expect("valid");
    assert_eq!(answer.cache_key_type, CacheKeyType::Registry);
    assert_eq!(answer.cache_duration, Some(Duration::from_secs(300)));
    let users = |registry: &str, repo: &str| -> Vec<String> {
        answer
            .auth
            .lookup(registry, repo)
            .into_iter()
            .map(|c| c.username().to_string())
            .collect()
    };
    assert_eq!(users("registry.io", "team/app"), ["team", "host"]);
    assert_eq!(users("registry.io", "else/app"), ["host"]);
    assert_eq!(users("a.other.io", "x"), ["glob"]);
    assert!(users("unrelated.io", "x").is_empty());
    assert!(!format!("{answer:?}").contains("secret-"), "Debug shows credentials");
}

#[test]
fn bad_responses_name_what_is_wrong_and_never_a_value() {
    let secret = "pw-never-shown-77";
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        (format!("password: {secret}"), "not valid JSON"),
        (format!("[\"{secret}\"]"), "not a JSON object"),
        (response("{}").replace("CredentialProviderResponse", secret), "kind"),
        (
            response("{}").replace(V1, "credentialprovider.kubelet.k8s.io/v1beta1"),
            "apiVersion",
        ),
        (
            response("{}").replace("\"Registry\"", &format!("\"{secret}\"")),
            "cacheKeyType",
        ),
        (
            response("{}").replace("\"5m\"", &format!("\"{secret}\"")),
            "cacheDuration",
        ),
        (response(&format!("\"{secret}\"")), "auth is not an object"),
        (
            response(&format!(
                r#"{{"r.io": {{"username": "u", "password": 7, "x": "{secret}"}}}}"#
            )),
            "unknown field",
        ),
        (
            response(r#"{"r.io": {"username": "u", "password": 7}}"#),
            "password is not a string",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_response(text.as_bytes(), V1).expect_err("refused");
        assert!(err.contains(expected), "{err:?} does not say {expected:?}");
        assert!(!err.contains(secret), "{err:?} quotes the answer");
    }
}

// -------------------------------------------------------------------------------------------------
// Running plugins: shell scripts written by the test, each counting its runs in a file.
// -------------------------------------------------------------------------------------------------

struct Stub {
    dir: tempfile::TempDir,
}

impl Stub {
    fn new() -> Stub {
        Stub {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes the plugin `name`: it appends its stdin (the request) and a newline to `name.runs`, then runs
    /// `body`.
    fn plugin(&self, name: &str, body: &str) -> ProviderSpec {
        let path = self.dir.path().join(name);
        let runs = self.dir.path().join(format!("{name}.runs"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\ncat >> '{}'\necho >> '{}'\n{body}\n",
                runs.display(),
                runs.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        ProviderSpec {
            name: name.to_string(),
            match_images: vec![MatchImage::parse("*.io").unwrap()],
            default_cache_duration: Duration::from_secs(60),
            api_version: V1.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            program: path,
        }
    }

    fn requests(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.runs")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn answering(key_type: &str, duration: &str) -> String {
    format!(
        r#"echo '{{"apiVersion":"{V1}","kind":"CredentialProviderResponse","cacheKeyType":"{key_type}","cacheDuration":"{duration}","auth":{{"*.io":{{"username":"u","password":"p"}}}}}}'"#
    )
}

fn providers(specs: Vec<ProviderSpec>, timeout: Duration) -> (CredentialProviders, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let config = ProviderConfig { providers: specs };
    (CredentialProviders::new(&config, timeout, metrics.clone()), metrics)
}

fn users(provided: &Provided, registry: &str, repo: &str) -> Vec<String> {
    provided
        .keyring
        .lookup(registry, repo)
        .into_iter()
        .map(|c| c.username().to_string())
        .collect()
}

#[tokio::test]
async fn the_plugin_gets_the_request_args_and_env() {
    let stub = Stub::new();
    let mut spec = stub.plugin(
        "p",
        &format!(
            "[ \"$1 $2\" = 'get-credentials --x' ] && [ \"$EXTRA\" = 'v' ] && [ -n \"$PATH\" ] || exit 3\n{}",
            answering("Image", "1m")
        ),
    );
    spec.args = vec!["get-credentials".into(), "--x".into()];
    spec.env = vec![("EXTRA".into(), "v".into())];
    let (providers, _) = providers(vec![spec], Duration::from_secs(10));

    let provided = providers.provide("a.io/team/app").await;

    assert!(provided.failures.is_empty(), "{:?}", provided.failures);
    assert_eq!(users(&provided, "a.io", "team/app"), ["u"]);
    let request: Value = serde_json::from_str(&stub.requests("p")[0]).expect("the request is JSON");
    assert_eq!(
        request,
        serde_json::json!({"apiVersion": V1, "kind": "CredentialProviderRequest", "image": "a.io/team/app"})
    );
}

#[tokio::test]
async fn a_provider_whose_patterns_do_not_match_is_not_run() {
    let stub = Stub::new();
    let mut spec = stub.plugin("p", &answering("Image", "1m"));
    spec.match_images = vec![MatchImage::parse("registry.example.com").unwrap()];
    let (providers, _) = providers(vec![spec], Duration::from_secs(10));

    let provided = providers.provide("a.io/app").await;

    assert!(provided.keyring.is_empty() && provided.failures.is_empty());
    assert!(stub.requests("p").is_empty(), "the plugin ran");
}

/// `Image` answers serve the same image only; `Registry` answers every image of the registry; `Global`
/// every image.
#[tokio::test]
async fn answers_are_cached_by_their_key_type() {
    for (key_type, runs_for_other_repo, runs_for_other_registry) in
        [("Image", 2, 3), ("Registry", 1, 2), ("Global", 1, 1)]
    {
        let stub = Stub::new();
        let (providers, metrics) = providers(
            vec![stub.plugin("p", &answering(key_type, "1m"))],
            Duration::from_secs(10),
        );
        providers.provide("a.io/team/app").await;
        providers.provide("a.io/team/app").await;
        assert_eq!(stub.requests("p").len(), 1, "{key_type}: the same image again");
        providers.provide("a.io/team/other").await;
        assert_eq!(
            stub.requests("p").len(),
            runs_for_other_repo,
            "{key_type}: another repository"
        );
        let provided = providers.provide("b.io/app").await;
        assert_eq!(
            stub.requests("p").len(),
            runs_for_other_registry,
            "{key_type}: another registry"
        );
        assert_eq!(users(&provided, "b.io", "app"), ["u"], "{key_type}");
        let text = metrics.encode();
        let hits = crate::metrics::sample(
            &text,
            "wasmcache_credential_provider_cache_lookups_total",
            "provider=\"p\",result=\"hit\"",
        );
        assert_eq!(hits, Some((4 - runs_for_other_registry) as f64), "{key_type}");
    }
}

#[tokio::test]
async fn answers_expire_after_their_duration_and_zero_is_not_cached() {
    let stub = Stub::new();
    let mut zero_default = stub.plugin(
        "zero",
        &answering("Image", "0s").replace(",\"cacheDuration\":\"0s\"", ""),
    );
    zero_default.default_cache_duration = Duration::ZERO;
    let (providers, _) = providers(
        vec![
            stub.plugin("short", &answering("Image", "300ms")),
            stub.plugin("never", &answering("Image", "0s")),
            zero_default,
        ],
        Duration::from_secs(10),
    );
    providers.provide("a.io/app").await;
    providers.provide("a.io/app").await;
    assert_eq!(stub.requests("short").len(), 1);
    assert_eq!(stub.requests("never").len(), 2, "cacheDuration 0s is not cached");
    assert_eq!(stub.requests("zero").len(), 2, "defaultCacheDuration 0 is not cached");
    tokio::time::sleep(Duration::from_millis(400)).await;
    providers.provide("a.io/app").await;
    assert_eq!(stub.requests("short").len(), 2, "expired");
}

#[tokio::test]
async fn concurrent_requests_for_one_image_run_the_plugin_once() {
    let stub = Stub::new();
    let (providers, _) = providers(
        vec![stub.plugin("p", &format!("sleep 0.3\n{}", answering("Image", "0s")))],
        Duration::from_secs(10),
    );
    let results = futures_util::future::join_all((0..8).map(|_| providers.provide("a.io/app"))).await;
    assert!(results.iter().all(|p| users(p, "a.io", "app") == ["u"]));
    assert_eq!(stub.requests("p").len(), 1);
}

/// The earlier provider's entries win on equally specific keys.
#[tokio::test]
async fn matching_providers_answer_in_file_order() {
    let stub = Stub::new();
    let second = stub.plugin("first", &answering("Image", "1m"));
    let first = stub.plugin("second", &answering("Image", "1m").replace("\"u\"", "\"v\""));
    let (providers, _) = providers(vec![first, second], Duration::from_secs(10));
    let provided = providers.provide("a.io/app").await;
    assert_eq!(users(&provided, "a.io", "app"), ["v", "u"]);
}

#[tokio::test]
async fn failures_are_reported_and_nothing_is_cached() {
    let secret = "stderr-secret-5512";
    let stub = Stub::new();
    let specs = vec![
        stub.plugin("hangs", "sleep 30 &\nsleep 30"),
        stub.plugin("fails", &format!("echo {secret} >&2\nexit 2")),
        stub.plugin("garbage", &format!("echo 'password: {secret}'")),
        stub.plugin("huge", "head -c 2000000 /dev/zero | tr '\\0' x"),
        stub.plugin(
            "wrong-version",
            &answering("Image", "1m").replace(V1, "credentialprovider.kubelet.k8s.io/v1beta1"),
        ),
    ];
    let (providers, metrics) = providers(specs, Duration::from_millis(500));

    let started = Instant::now();
    let provided = providers.provide("a.io/app").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    assert!(provided.keyring.is_empty());
    let messages: Vec<String> = provided.failures.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 5, "{messages:#?}");
    assert!(
        messages[0].contains("\"hangs\"") && messages[0].contains("no answer within 500ms"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("\"fails\"") && messages[1].contains("exit status: 2"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains(&format!("{} bytes", secret.len() + 1)),
        "{messages:#?}"
    );
    assert!(
        messages[2].contains("\"garbage\"") && messages[2].contains("not valid JSON"),
        "{messages:#?}"
    );
    assert!(
        messages[3].contains("\"huge\"") && messages[3].contains("larger than 1048576 bytes"),
        "{messages:#?}"
    );
    assert!(messages[4].contains("apiVersion"), "{messages:#?}");
    assert!(messages.iter().all(|m| !m.contains(secret)), "{messages:#?}");

    // Nothing was cached: every plugin runs again.
    providers.provide("a.io/app").await;
    for name in ["hangs", "fails", "garbage", "huge", "wrong-version"] {
        assert_eq!(stub.requests(name).len(), 2, "{name}");
    }
    let text = metrics.encode();
    for (provider, result) in [
        ("hangs", "timeout"),
        ("fails", "exit_failure"),
        ("garbage", "bad_response"),
        ("huge", "too_large"),
        ("wrong-version", "bad_response"),
    ] {
        let labels = format!("provider=\"{provider}\",result=\"{result}\"");
        assert_eq!(
            crate::metrics::sample(&text, "wasmcache_credential_provider_runs_total", &labels),
            Some(2.0),
            "{labels}"
        );
    }
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_failure() {
    let stub = Stub::new();
    let mut spec = stub.plugin("p", "true");
    spec.program = stub.dir.path().join("absent");
    let (providers, _) = providers(vec![spec], Duration::from_secs(10));
    let provided = providers.provide("a.io/app").await;
    assert!(
        matches!(provided.failures[..], [ProviderError::Spawn { .. }]),
        "{:?}",
        provided.failures
    );
}

#[test]
fn load_checks_the_bin_dir_and_the_programs() {
    let stub = Stub::new();
    let file = stub.dir.path().join("config.yaml");
    std::fs::write(&file, GOOD_YAML).unwrap();

    let err = ProviderConfig::load(&file, &stub.dir.path().join("missing")).expect_err("no bin dir");
    assert!(err.reason.contains("bin dir"), "{err}");
    let err = ProviderConfig::load(&file, stub.dir.path()).expect_err("no program");
    assert_eq!(err.field, "providers[0].name", "{err}");
    let program = stub.dir.path().join("ecr-credential-provider");
    std::fs::write(&program, "#!/bin/sh\n").unwrap();
    let err = ProviderConfig::load(&file, stub.dir.path()).expect_err("not executable");
    assert!(err.reason.contains("not an executable file"), "{err}");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    ProviderConfig::load(&file, stub.dir.path()).expect("loads");
}
