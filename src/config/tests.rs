//! Configuration: parsing helpers, validation, and the layering of file, environment and flags. Every
//! `Config` here is built from strings and maps; no test reads or sets the process environment.

use std::collections::HashMap;

use super::*;

const FILE: &str = "wasmcache.toml";

fn file(text: &str) -> FileConfig {
    FileConfig::parse(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}"))
}

fn file_err(text: &str) -> String {
    FileConfig::parse(Path::new(FILE), text)
        .expect_err("the file must be refused")
        .to_string()
}

fn env(vars: &[(&str, &str)]) -> Overrides {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Overrides::from_env(|name| vars.get(name).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

fn build(file_text: Option<&str>, env_vars: &[(&str, &str)], flags: Overrides) -> Result<Config, ConfigError> {
    let file = file_text.map(file);
    Config::build(file.as_ref(), &env(env_vars), &flags)
}

fn built(file_text: Option<&str>, env_vars: &[(&str, &str)], flags: Overrides) -> Config {
    build(file_text, env_vars, flags).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn assert_names(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} does not mention {part:?}");
    }
}

// Parsing helpers and validation.

#[test]
fn byte_sizes_take_binary_suffixes() {
    assert_eq!(parse_bytes("1024"), Ok(1024));
    assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
    assert_eq!(parse_bytes("2G"), Ok(2 << 30));
    assert!(parse_bytes("12XB").is_err());
    assert!(parse_bytes("-1").is_err());
}

#[test]
fn defaults_validate() {
    Config::default().validate().unwrap();
}

#[test]
fn zero_attempts_is_refused_naming_the_key() {
    let mut c = Config::default();
    c.fetch.backoff.attempts = 0;
    assert!(c.validate().unwrap_err().to_string().starts_with("fetch-attempts"));
}

#[test]
fn relative_file_root_is_refused() {
    let mut c = Config::default();
    c.fetch.file_roots.push("relative/dir".into());
    assert!(c.validate().is_err());
}

#[test]
fn single_address_is_a_cidr() {
    assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
    assert!(parse_cidr("nope").is_err());
}

#[test]
fn log_level_is_a_level_or_directives() {
    assert!(parse_log_level("debug").is_ok());
    assert!(parse_log_level("info,wasmcache=trace").is_ok());
    assert!(parse_log_level("loud").is_err());
    assert!(parse_log_level("").is_err());
}

#[test]
fn admin_listener_on_the_grpc_address_is_refused() {
    let mut c = Config::default();
    c.listen = c.admin_listen;
    assert!(c.validate().unwrap_err().to_string().starts_with("admin-listen"));
}

/// Each variable in `SETTINGS` is read, into the field whose flag it names, and follows the naming rule.
#[test]
fn every_setting_has_a_variable_read_into_its_own_field() {
    let samples = [
        ("cache-dir", "/c"),
        ("socket", "/s"),
        ("socket-group", "proxies"),
        ("listen", "127.0.0.1:1"),
        ("admin-listen", "off"),
        ("registry-listen", "127.0.0.1:5000"),
        ("registry-tls-cert", "/tls.crt"),
        ("registry-tls-key", "/tls.key"),
        ("file-root", "/r"),
        ("fetch-timeout", "1s"),
        ("fetch-deadline", "1m"),
        ("fetch-attempts", "1"),
        ("retry-backoff", "1s"),
        ("max-module-bytes", "1K"),
        ("blocked-cidr", "10.0.0.0/8"),
        ("ca-file", "/ca"),
        ("insecure-skip-verify", "h"),
        ("no-serve-stale", "true"),
        ("shutdown-grace", "1s"),
        ("verify-policy", "/v.toml"),
        ("insecure-registry", "r"),
        ("registry-mirror", "docker.io=https://m"),
        ("forward-credentials-to", "tier.local:5000"),
        ("docker-config", "/d"),
        ("image-credential-provider-config", "/p.yaml"),
        ("image-credential-provider-bin-dir", "/bin"),
        ("image-credential-provider-timeout", "10s"),
        ("platform", "linux/amd64"),
        ("max-manifest-bytes", "1K"),
        ("watch-wasmplugins", "true"),
        ("kubeconfig", "/k"),
        ("watch-namespace", "n"),
        ("watch-selector", "a=b"),
        ("watch-pull-secrets", "true"),
        ("max-cache-bytes", "1G"),
        ("module-expiry", "1h"),
        ("resolve-lease", "1h"),
        ("purge-interval", "1h"),
        ("log-level", "info"),
        ("log-format", "json"),
    ];
    assert_eq!(samples.len(), SETTINGS.len());
    for s in SETTINGS {
        assert_eq!(s.env, format!("WASMCACHE_{}", s.flag.to_uppercase().replace('-', "_")));
        let value = samples.iter().find(|(flag, _)| *flag == s.flag).expect("a sample").1;
        let layer = env(&[(s.env, value)]);
        assert_eq!(layer.keys(), [s.flag], "{} sets only {}", s.env, s.flag);
    }
}

// Layering.

#[test]
fn defaults_when_nothing_is_set() {
    let c = built(None, &[], Overrides::default());
    let d = Config::default();
    assert_eq!(c.cache_dir, d.cache_dir);
    assert_eq!(c.socket, d.socket);
    // The defaults the README states.
    assert_eq!(c.fetch.timeout, Duration::from_secs(15));
    assert_eq!(c.fetch.deadline, Duration::from_secs(300));
    assert_eq!(c.fetch.backoff.attempts, 5);
    assert_eq!(c.fetch.max_bytes, 256 << 20);
    assert_eq!(c.fetch.oci.max_manifest_bytes, 4 << 20);
    assert_eq!(c.fetch.oci.platform, "linux/amd64");
    assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(c.admin_listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.registry_listen, None);
    assert_eq!(c.lifecycle, d.lifecycle);
    assert_eq!(c.log, d.log);
    assert!(c.serve_stale);
    assert!(c.watch.is_none());
    assert_eq!(c.to_toml(), d.to_toml());
}

#[test]
fn file_alone_sets_every_kind_of_value() {
    let c = built(
        Some(
            r#"
cache-dir = "/var/cache/wc"
socket = "/run/wc.sock"
listen = "127.0.0.1:9090"
fetch-timeout = "3s"
fetch-attempts = 2
insecure-skip-verify = ["localhost:8443"]
serve-stale = false

[registry]
insecure = ["localhost:5000"]
platform = "linux/arm64"

[watch]
enabled = true
namespace = "istio-system"
selector = "app=gw"

[log]
level = "debug"
format = "json"
"#,
        ),
        &[],
        Overrides::default(),
    );
    assert_eq!(c.cache_dir, Path::new("/var/cache/wc"));
    assert_eq!(c.socket, Path::new("/run/wc.sock"));
    assert_eq!(c.listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.fetch.timeout, Duration::from_secs(3));
    assert_eq!(c.fetch.backoff.attempts, 2);
    assert_eq!(c.fetch.insecure_hosts, ["localhost:8443"]);
    assert!(!c.serve_stale);
    assert_eq!(c.fetch.oci.insecure_registries, ["localhost:5000"]);
    assert_eq!(c.fetch.oci.platform, "linux/arm64");
    let watch = c.watch.expect("watch enabled by the file");
    assert_eq!(watch.scope.namespace.as_deref(), Some("istio-system"));
    assert_eq!(watch.scope.selector.as_deref(), Some("app=gw"));
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn env_wins_over_file() {
    let c = built(
        Some("fetch-timeout = \"3s\"\nsocket = \"/file.sock\"\n"),
        &[("WASMCACHE_FETCH_TIMEOUT", "7s")],
        Overrides::default(),
    );
    assert_eq!(c.fetch.timeout, Duration::from_secs(7));
    assert_eq!(
        c.socket,
        Path::new("/file.sock"),
        "what env does not set stays the file's"
    );
}

#[test]
fn flag_wins_over_env() {
    let flags = Overrides {
        fetch_timeout: Some(Duration::from_secs(9)),
        ..Overrides::default()
    };
    let c = built(
        Some("fetch-timeout = \"3s\"\n"),
        &[("WASMCACHE_FETCH_TIMEOUT", "7s")],
        flags,
    );
    assert_eq!(c.fetch.timeout, Duration::from_secs(9));
}

#[test]
fn a_list_from_env_replaces_the_file_list() {
    let c = built(
        Some("blocked-cidr = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n"),
        &[("WASMCACHE_BLOCKED_CIDR", "172.16.0.0/12, 10.9.9.9")],
        Overrides::default(),
    );
    let cidrs: Vec<String> = c.fetch.blocked_cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["172.16.0.0/12", "10.9.9.9/32"]);
}

#[test]
fn env_false_turns_a_file_switch_off() {
    let c = built(
        Some("[watch]\nenabled = true\n"),
        &[("WASMCACHE_WATCH_WASMPLUGINS", "false")],
        Overrides::default(),
    );
    assert!(c.watch.is_none());
}

#[test]
fn no_serve_stale_flag_wins_over_the_file() {
    let flags = Overrides {
        serve_stale: Some(false),
        ..Overrides::default()
    };
    assert!(!built(Some("serve-stale = true\n"), &[], flags).serve_stale);
}

#[test]
fn watch_namespace_flag_without_watching_is_refused() {
    let flags = Overrides {
        watch_namespace: Some("ns".into()),
        ..Overrides::default()
    };
    let err = build(None, &[], flags).unwrap_err().to_string();
    assert!(err.starts_with("watch-namespace"), "{err}");
}

#[test]
fn admin_listen_off_in_the_file_turns_the_listener_off() {
    let c = built(Some("admin-listen = \"off\"\n"), &[], Overrides::default());
    assert_eq!(c.admin_listen, None);
}

#[test]
fn admin_listen_address_from_env() {
    let c = built(
        None,
        &[("WASMCACHE_ADMIN_LISTEN", "0.0.0.0:9999")],
        Overrides::default(),
    );
    assert_eq!(c.admin_listen, Some("0.0.0.0:9999".parse().unwrap()));
}

#[test]
fn mirrors_keep_their_order_per_registry() {
    let c = built(
        Some(
            r#"
[registry.mirrors]
"docker.io" = ["https://m2.local", "https://m1.local"]
"ghcr.io" = ["http://ghcr-mirror.local:5000"]
"#,
        ),
        &[],
        Overrides::default(),
    );
    let mirrors: Vec<(&str, &str)> = c
        .fetch
        .oci
        .mirrors
        .iter()
        .map(|(r, u)| (r.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        mirrors,
        [
            ("docker.io", "https://m2.local/"),
            ("docker.io", "https://m1.local/"),
            ("ghcr.io", "http://ghcr-mirror.local:5000/"),
        ]
    );
}

#[test]
fn durations_and_sizes_are_parsed() {
    let c = built(
        Some(
            r#"
retry-backoff = "250ms"
max-module-bytes = "64M"
shutdown-grace = "1m"

[registry]
max-manifest-bytes = 65536

[lifecycle]
max-cache-bytes = "2GiB"
module-expiry = "7d"
purge-interval = "15m"
"#,
        ),
        &[],
        Overrides::default(),
    );
    assert_eq!(c.fetch.backoff.initial, Duration::from_millis(250));
    assert_eq!(c.fetch.max_bytes, 64 << 20);
    assert_eq!(c.shutdown_grace, Duration::from_secs(60));
    assert_eq!(c.fetch.oci.max_manifest_bytes, 65536);
    assert_eq!(c.lifecycle.max_cache_bytes, Some(2 << 30));
    assert_eq!(c.lifecycle.module_expiry, Duration::from_secs(7 * 86400));
    assert_eq!(c.lifecycle.purge_interval, Duration::from_secs(900));
}

#[test]
fn max_cache_bytes_zero_or_off_means_no_limit() {
    for value in ["0", "\"0\"", "\"off\""] {
        let c = built(
            Some(&format!("[lifecycle]\nmax-cache-bytes = {value}\n")),
            &[("WASMCACHE_MODULE_EXPIRY", "1h")],
            Overrides::default(),
        );
        assert_eq!(c.lifecycle.max_cache_bytes, None, "{value}");
    }
    let c = built(None, &[("WASMCACHE_MAX_CACHE_BYTES", "off")], Overrides::default());
    assert_eq!(c.lifecycle.max_cache_bytes, None);
}

// Errors name the key and where it was set.

#[test]
fn unknown_key_names_the_key_and_the_line() {
    let err = file_err("socket = \"/s\"\n\n\nfetch-timout = \"3s\"\n");
    assert_names(
        &err,
        &[
            FILE,
            "line 4",
            "unknown key \"fetch-timout\"",
            "did you mean \"fetch-timeout\"",
        ],
    );
}

#[test]
fn unknown_key_in_a_table_is_named_with_its_table() {
    let err = file_err("[registry]\nplatform = \"linux/amd64\"\ninsecur = [\"x\"]\n");
    assert_names(
        &err,
        &["line 3", "unknown key \"registry.insecur\"", "\"registry.insecure\""],
    );
}

#[test]
fn a_value_where_a_table_belongs_is_refused_with_its_line() {
    let err = file_err("socket = \"/s\"\nregistry = 5\n");
    assert_names(&err, &["line 2", "registry", "expected a table", "integer"]);
}

#[test]
fn unknown_table_is_named() {
    let err = file_err("socket = \"/s\"\n[registy]\nplatform = \"linux/amd64\"\n");
    assert_names(&err, &["line 2", "unknown key \"registy\""]);
}

#[test]
fn bad_size_names_the_key_and_the_line() {
    let err = file_err("socket = \"/s\"\nmax-module-bytes = \"12XB\"\n");
    assert_names(&err, &[FILE, "line 2", "max-module-bytes", "XB"]);
}

#[test]
fn bad_admin_address_names_the_key_and_the_line() {
    let err = file_err("\nadmin-listen = \"nope\"\n");
    assert_names(&err, &["line 2", "admin-listen", "nope"]);
}

#[test]
fn wrong_type_names_the_key_and_the_line() {
    let err = file_err("[lifecycle]\nmodule-expiry = 3600\n");
    assert_names(&err, &["line 2", "lifecycle.module-expiry", "integer"]);
}

#[test]
fn invalid_value_found_by_validation_names_the_file_key_and_the_line() {
    let err = build(
        Some("socket = \"/s\"\n\n\nfetch-attempts = 0\n"),
        &[],
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "wasmcache.toml: line 4: fetch-attempts: must be at least 1");
}

#[test]
fn invalid_value_in_a_table_names_the_dotted_key() {
    let err = build(
        Some("[lifecycle]\npurge-interval = \"0s\"\n"),
        &[],
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert_names(&err, &["line 2", "lifecycle.purge-interval", "greater than zero"]);
}

#[test]
fn invalid_value_from_env_names_the_variable() {
    let err = build(
        Some("fetch-attempts = 3\n"),
        &[("WASMCACHE_FETCH_ATTEMPTS", "0")],
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "WASMCACHE_FETCH_ATTEMPTS: must be at least 1");
}

#[test]
fn unparsable_env_value_names_the_variable() {
    let err = Overrides::from_env(|name| (name == "WASMCACHE_LOG_FORMAT").then(|| "yaml".to_string()))
        .unwrap_err()
        .to_string();
    assert_names(&err, &["WASMCACHE_LOG_FORMAT", "yaml"]);
}

#[test]
fn unquoted_dotted_registry_gets_a_hint() {
    let err = file_err("[registry.mirrors]\ndocker.io = [\"https://m.local\"]\n");
    assert_names(&err, &["line 2", "registry.mirrors", "quote"]);
}

#[test]
fn mirror_with_credentials_is_refused_with_its_line() {
    let err = file_err("[registry.mirrors]\n\"docker.io\" = [\"https://u:p@m.local\"]\n");
    assert_names(&err, &["line 2", "registry.mirrors.\"docker.io\"", "credentials"]);
    assert!(!err.contains("u:p"), "{err}");
}

#[test]
fn syntax_error_names_the_line() {
    let err = file_err("socket = \"/s\"\nfetch-timeout = \n");
    assert_names(&err, &["line 2", "fetch-timeout"]);
}

// The printed configuration.

#[test]
fn printed_configuration_reads_back_unchanged() {
    let c = built(
        Some(
            r#"
listen = "127.0.0.1:9090"
admin-listen = "off"
retry-backoff = "1500ms"
blocked-cidr = ["10.0.0.0/8"]
[registry.mirrors]
"docker.io" = ["https://m2.local", "https://m1.local"]
[lifecycle]
max-cache-bytes = 1000
[watch]
enabled = true
selector = "app=x"
"#,
        ),
        &[],
        Overrides::default(),
    );
    let printed = c.to_toml();
    let again = built(Some(&printed), &[], Overrides::default());
    assert_eq!(again.to_toml(), printed);
    assert_names(
        &printed,
        &[
            "admin-listen = \"off\"",
            "retry-backoff = \"1500ms\"",
            "max-cache-bytes = \"1000\"",
            "\"docker.io\" = [\"https://m2.local/\", \"https://m1.local/\"]",
        ],
    );
}

#[test]
fn readme_example_file_parses() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("### The file").expect("the README's file section")..];
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml example");
    let parsed = file(example);
    assert_eq!(
        parsed.values().keys().len(),
        SETTINGS.len(),
        "the example shows every key"
    );
}

#[test]
fn socket_group_by_number_or_name_resolves() {
    assert_eq!(resolve_group("0"), Ok(0));
    assert_eq!(resolve_group("root"), Ok(0));
    assert!(resolve_group("no-such-group-here")
        .unwrap_err()
        .contains("no-such-group-here"));
}

// The registry endpoint.

/// A certificate and key that belong together, in a temporary directory.
fn tls_pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

fn registry_flags(listen: Option<&str>, cert: Option<&Path>, key: Option<&Path>) -> Overrides {
    Overrides {
        registry_listen: listen.map(|l| parse_admin_listen(l).unwrap()),
        registry_tls_cert: cert.map(Path::to_path_buf),
        registry_tls_key: key.map(Path::to_path_buf),
        ..Overrides::default()
    }
}

#[test]
fn registry_endpoint_is_off_by_default_and_on_with_an_address() {
    let c = built(None, &[], Overrides::default());
    assert_eq!((c.registry_listen, c.registry_tls.clone()), (None, None));
    let c = built(
        None,
        &[("WASMCACHE_REGISTRY_LISTEN", "127.0.0.1:5000")],
        Overrides::default(),
    );
    assert_eq!(c.registry_listen, Some("127.0.0.1:5000".parse().unwrap()));
    let c = built(
        Some("registry-listen = \"127.0.0.1:5000\"\n"),
        &[("WASMCACHE_REGISTRY_LISTEN", "off")],
        Overrides::default(),
    );
    assert_eq!(c.registry_listen, None, "a higher layer turns it off");
}

#[test]
fn registry_tls_takes_a_certificate_and_its_key_together() {
    let (_dir, cert, key) = tls_pair();
    let c = built(
        None,
        &[],
        registry_flags(Some("127.0.0.1:5443"), Some(&cert), Some(&key)),
    );
    assert_eq!(
        c.registry_tls,
        Some(RegistryTls {
            cert: cert.clone(),
            key: key.clone()
        })
    );
    let err = build(None, &[], registry_flags(Some("127.0.0.1:5443"), Some(&cert), None)).unwrap_err();
    assert_names(&err.to_string(), &["registry-tls-cert", "needs registry-tls-key"]);
    let err = build(None, &[], registry_flags(Some("127.0.0.1:5443"), None, Some(&key))).unwrap_err();
    assert_names(&err.to_string(), &["registry-tls-key", "needs registry-tls-cert"]);
}

#[test]
fn registry_tls_without_the_endpoint_is_refused_from_flags_and_kept_in_a_file() {
    let (_dir, cert, key) = tls_pair();
    let err = build(None, &[], registry_flags(None, Some(&cert), Some(&key))).unwrap_err();
    assert_names(
        &err.to_string(),
        &["registry-tls-cert", "only used with --registry-listen"],
    );
    let err = build(
        None,
        &[("WASMCACHE_REGISTRY_TLS_KEY", key.to_str().unwrap())],
        Overrides::default(),
    )
    .unwrap_err();
    assert_names(
        &err.to_string(),
        &["WASMCACHE_REGISTRY_TLS_KEY", "only used with --registry-listen"],
    );
    let text = format!(
        "registry-listen = \"off\"\nregistry-tls-cert = {:?}\nregistry-tls-key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let c = built(Some(&text), &[], Overrides::default());
    assert_eq!((c.registry_listen, c.registry_tls), (None, None));
}

#[test]
fn registry_tls_files_are_read_and_checked_before_binding() {
    let (dir, cert, key) = tls_pair();
    let missing = dir.path().join("missing.crt");
    let err = build(
        None,
        &[],
        registry_flags(Some("127.0.0.1:5443"), Some(&missing), Some(&key)),
    )
    .unwrap_err();
    assert_names(&err.to_string(), &["registry-tls-cert", "missing.crt"]);
    let (_other_dir, _, other_key) = tls_pair();
    let err = build(
        None,
        &[],
        registry_flags(Some("127.0.0.1:5443"), Some(&cert), Some(&other_key)),
    )
    .unwrap_err();
    assert_names(&err.to_string(), &["registry-tls-key", "does not match"]);
    // From the file, the error points at the line of the key.
    let text = format!(
        "registry-listen = \"127.0.0.1:5443\"\nregistry-tls-cert = {:?}\nregistry-tls-key = {:?}\n",
        key.display().to_string(),
        key.display().to_string()
    );
    let err = build(Some(&text), &[], Overrides::default()).unwrap_err();
    assert_names(&err.to_string(), &["line 2", "registry-tls-cert", "no PEM certificate"]);
}

#[test]
fn registry_endpoint_on_another_listener_address_is_refused() {
    let err = build(None, &[], registry_flags(Some("127.0.0.1:9464"), None, None)).unwrap_err();
    assert_names(&err.to_string(), &["registry-listen", "--admin-listen"]);
    let flags = Overrides {
        listen: Some("127.0.0.1:5000".parse().unwrap()),
        ..registry_flags(Some("127.0.0.1:5000"), None, None)
    };
    assert_names(
        &build(None, &[], flags).unwrap_err().to_string(),
        &["registry-listen", "gRPC"],
    );
}

#[test]
fn printed_registry_settings_read_back_unchanged() {
    let (_dir, cert, key) = tls_pair();
    let c = built(None, &[], registry_flags(Some("[::1]:5443"), Some(&cert), Some(&key)));
    let printed = c.to_toml();
    assert_names(
        &printed,
        &[
            "registry-listen = \"[::1]:5443\"",
            "registry-tls-cert = ",
            "registry-tls-key = ",
        ],
    );
    let again = built(Some(&printed), &[], Overrides::default());
    assert_eq!(again.to_toml(), printed);
    assert!(!built(None, &[], Overrides::default())
        .to_toml()
        .contains("registry-listen"));
}
