use base64::Engine as _;

use super::*;

/// The password that every redaction test looks for in printed output.
const SECRET: &str = "hunter2-s3cret";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A `.dockerconfigjson` with one `auth` entry per `(key, username, password)`, in the given order.
fn config_json(entries: &[(&str, &str, &str)]) -> String {
    let auths: Vec<String> = entries
        .iter()
        .map(|(key, user, pass)| format!(r#"{key:?}: {{"auth": "{}"}}"#, b64(&format!("{user}:{pass}"))))
        .collect();
    format!(r#"{{"auths": {{{}}}}}"#, auths.join(", "))
}

fn parse(json: &str) -> DockerConfig {
    DockerConfig::parse(json.as_bytes()).expect("config parses")
}

fn parse_err(json: &str) -> SecretError {
    DockerConfig::parse(json.as_bytes()).expect_err("config is refused")
}

/// Usernames of the credentials `lookup` returns, in order.
fn users<'a>(config: &'a DockerConfig, registry: &str, repository: &str) -> Vec<&'a str> {
    config
        .lookup(registry, repository)
        .into_iter()
        .map(Credentials::username)
        .collect()
}

/// Which of `keys` (each its own entry, with its own username) match the image, in lookup order.
fn matching_keys(keys: &[&str], registry: &str, repository: &str) -> Vec<String> {
    let names: Vec<String> = (0..keys.len()).map(|i| format!("user{i}")).collect();
    let entries: Vec<(&str, &str, &str)> = keys.iter().zip(&names).map(|(k, u)| (*k, u.as_str(), "pw")).collect();
    let config = parse(&config_json(&entries));
    users(&config, registry, repository)
        .into_iter()
        .map(|user| keys[names.iter().position(|n| n == user).unwrap()].to_owned())
        .collect()
}

fn matches(key: &str, registry: &str, repository: &str) -> bool {
    !matching_keys(&[key], registry, repository).is_empty()
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET), "secret leaked in {text:?}");
    assert!(
        !text.contains(&b64(&format!("user:{SECRET}"))),
        "auth value leaked in {text:?}"
    );
}

// ---- Credentials ----

#[test]
fn credentials_expose_username_and_password() {
    let c = Credentials::new("alice", SECRET);
    assert_eq!(c.username(), "alice");
    assert_eq!(c.password(), SECRET);
}

#[test]
fn credentials_debug_and_display_print_redacted() {
    let c = Credentials::new("alice", SECRET);
    assert_eq!(format!("{c:?}"), "<redacted>");
    assert_eq!(format!("{c:#?}"), "<redacted>");
    assert_eq!(format!("{c}"), "<redacted>");
    assert_eq!(format!("{:?}", Some(vec![&c])), "Some([<redacted>])");
}

#[test]
fn fingerprint_is_stable_for_equal_credentials() {
    let a = Credentials::new("alice", SECRET);
    let b = Credentials::new(String::from("alice"), String::from(SECRET));
    assert_eq!(a.fingerprint(b"salt"), b.fingerprint(b"salt"));
}

#[test]
fn fingerprint_matches_the_documented_construction() {
    let mut hasher = Sha256::new();
    hasher.update(b"salt");
    hasher.update(2u64.to_be_bytes());
    hasher.update(b"al");
    hasher.update(3u64.to_be_bytes());
    hasher.update(b"pwd");
    let expected: [u8; 32] = hasher.finalize().into();
    assert_eq!(Credentials::new("al", "pwd").fingerprint(b"salt"), expected);
}

#[test]
fn fingerprint_differs_between_salts() {
    let c = Credentials::new("alice", SECRET);
    assert_ne!(c.fingerprint(b"node-a"), c.fingerprint(b"node-b"));
    assert_ne!(c.fingerprint(b""), c.fingerprint(b"node-a"));
}

#[test]
fn fingerprint_differs_between_passwords() {
    let salt = b"salt";
    assert_ne!(
        Credentials::new("alice", "one").fingerprint(salt),
        Credentials::new("alice", "two").fingerprint(salt)
    );
}

#[test]
fn fingerprint_separates_username_from_password() {
    let salt = b"salt";
    assert_ne!(
        Credentials::new("ab", "c").fingerprint(salt),
        Credentials::new("a", "bc").fingerprint(salt)
    );
}

#[test]
fn fingerprint_does_not_contain_the_password_bytes() {
    let fp = Credentials::new("alice", SECRET).fingerprint(b"salt");
    assert_no_secret(&hex::encode(fp));
}

// ---- Parsing: formats and fields ----

#[test]
fn dockerconfigjson_auth_field_gives_username_and_password() {
    let config = parse(&config_json(&[("registry.example.com", "alice", SECRET)]));
    let found = config.lookup("registry.example.com", "team/app");
    assert_eq!(found, vec![&Credentials::new("alice", SECRET)]);
}

#[test]
fn dockerconfigjson_username_and_password_fields_are_used() {
    let config = parse(r#"{"auths": {"registry.example.com": {"username": "bob", "password": "pw"}}}"#);
    assert_eq!(
        config.lookup("registry.example.com", "app"),
        vec![&Credentials::new("bob", "pw")]
    );
}

#[test]
fn auth_wins_over_username_and_password_when_it_decodes() {
    let json = format!(
        r#"{{"auths": {{"r.example.com": {{"username": "bob", "password": "pw", "auth": "{}"}}}}}}"#,
        b64("alice:from-auth")
    );
    assert_eq!(
        parse(&json).lookup("r.example.com", "app"),
        vec![&Credentials::new("alice", "from-auth")]
    );
}

#[test]
fn username_and_password_are_used_when_auth_does_not_decode() {
    let json = r#"{"auths": {"r.example.com": {"username": "bob", "password": "pw", "auth": "!!not base64!!"}}}"#;
    assert_eq!(
        parse(json).lookup("r.example.com", "app"),
        vec![&Credentials::new("bob", "pw")]
    );
}

#[test]
fn auth_without_base64_padding_is_accepted() {
    // "alice:pw" is 8 bytes, so its standard encoding ends in "=".
    let unpadded = b64("alice:pw").trim_end_matches('=').to_owned();
    assert_ne!(unpadded, b64("alice:pw"));
    let json = format!(r#"{{"auths": {{"r.example.com": {{"auth": "{unpadded}"}}}}}}"#);
    assert_eq!(
        parse(&json).lookup("r.example.com", "app"),
        vec![&Credentials::new("alice", "pw")]
    );
}

#[test]
fn auth_password_keeps_everything_after_the_first_colon() {
    let config = parse(&config_json(&[("r.example.com", "alice", "pa:ss:word")]));
    assert_eq!(config.lookup("r.example.com", "app")[0].password(), "pa:ss:word");
}

#[test]
fn auth_with_empty_password_is_accepted() {
    let config = parse(&config_json(&[("r.example.com", "token-user", "")]));
    assert_eq!(
        config.lookup("r.example.com", "app"),
        vec![&Credentials::new("token-user", "")]
    );
}

#[test]
fn email_field_is_ignored() {
    let json = format!(
        r#"{{"auths": {{"r.example.com": {{"auth": "{}", "email": 42}}}}}}"#,
        b64("alice:pw")
    );
    assert_eq!(
        parse(&json).lookup("r.example.com", "app"),
        vec![&Credentials::new("alice", "pw")]
    );
}

#[test]
fn entry_with_identitytoken_is_skipped_without_error() {
    // What `docker login` writes for Azure ACR: a placeholder user and an OAuth refresh token.
    let json = format!(
        r#"{{"auths": {{"acr.example.io": {{"auth": "{}", "identitytoken": "eyJ.refresh"}},
                        "r.example.com": {{"auth": "{}"}}}}}}"#,
        b64("00000000-0000-0000-0000-000000000000:"),
        b64("alice:pw")
    );
    let config = parse(&json);
    assert!(config.lookup("acr.example.io", "app").is_empty());
    assert_eq!(users(&config, "r.example.com", "app"), vec!["alice"]);
}

#[test]
fn entry_with_only_registrytoken_is_skipped_without_error() {
    let config = parse(r#"{"auths": {"r.example.com": {"registrytoken": "bearer-token"}}}"#);
    assert!(config.is_empty());
}

#[test]
fn registrytoken_is_ignored_when_auth_is_present() {
    let json = format!(
        r#"{{"auths": {{"r.example.com": {{"auth": "{}", "registrytoken": "bearer-token"}}}}}}"#,
        b64("alice:pw")
    );
    assert_eq!(users(&parse(&json), "r.example.com", "app"), vec!["alice"]);
}

#[test]
fn entry_without_any_credentials_is_skipped() {
    let config = parse(r#"{"auths": {"r.example.com": {}, "s.example.com": {"auth": ""}, "t.example.com": null}}"#);
    assert!(config.is_empty());
}

#[test]
fn null_fields_count_as_absent() {
    let json =
        r#"{"auths": {"r.example.com": {"auth": null, "username": "bob", "password": "pw", "identitytoken": null}}}"#;
    assert_eq!(users(&parse(json), "r.example.com", "app"), vec!["bob"]);
}

#[test]
fn legacy_dockercfg_entries_are_read_from_the_top_level() {
    let json = format!(
        r#"{{"registry.example.com": {{"auth": "{}", "email": "a@example.com"}},
            "localhost:5000": {{"username": "bob", "password": "pw"}}}}"#,
        b64("alice:pw")
    );
    let config = parse(&json);
    assert_eq!(users(&config, "registry.example.com", "app"), vec!["alice"]);
    assert_eq!(users(&config, "localhost:5000", "app"), vec!["bob"]);
}

#[test]
fn legacy_dockercfg_ignores_top_level_settings() {
    let json = format!(
        r#"{{"credsStore": "desktop", "credHelpers": {{"gcr.io": "gcloud"}}, "experimental": true,
            "registry.example.com": {{"auth": "{}"}}}}"#,
        b64("alice:pw")
    );
    let config = parse(&json);
    assert_eq!(
        format!("{config:?}"),
        r#"DockerConfig { keys: ["registry.example.com"] }"#
    );
}

#[test]
fn docker_cli_config_ignores_credential_helpers() {
    let json = format!(
        r#"{{"auths": {{"registry.example.com": {{"auth": "{}"}}, "gcr.io": {{}}}},
            "credsStore": "desktop",
            "credHelpers": {{"gcr.io": "gcloud", "registry.example.com": "ecr-login"}}}}"#,
        b64("alice:pw")
    );
    let config = parse(&json);
    assert!(config.lookup("gcr.io", "project/app").is_empty());
    assert_eq!(users(&config, "registry.example.com", "app"), vec!["alice"]);
}

#[test]
fn docker_cli_config_ignores_unknown_top_level_keys() {
    let json = format!(
        r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}, "psFormat": "table", "proxies": {{"default": {{}}}},
            "currentContext": "desktop-linux", "some.future.setting": [1, 2, 3]}}"#,
        b64("alice:pw")
    );
    assert_eq!(users(&parse(&json), "r.example.com", "app"), vec!["alice"]);
}

#[test]
fn docker_cli_config_with_only_settings_is_empty() {
    assert!(parse(r#"{"credsStore": "desktop", "currentContext": "default"}"#).is_empty());
}

#[test]
fn empty_auths_is_empty() {
    assert!(parse(r#"{"auths": {}}"#).is_empty());
    assert!(parse(r#"{"auths": null}"#).is_empty());
    assert!(parse("{}").is_empty());
    assert!(DockerConfig::default().is_empty());
    assert!(DockerConfig::default().lookup("docker.io", "library/nginx").is_empty());
}

#[test]
fn entries_keep_file_order() {
    let config = parse(&config_json(&[
        ("z.example.com", "z", "pw"),
        ("a.example.com", "a", "pw"),
    ]));
    assert_eq!(
        format!("{config:?}"),
        r#"DockerConfig { keys: ["z.example.com", "a.example.com"] }"#
    );
}

#[test]
fn leading_byte_order_mark_is_accepted() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(config_json(&[("r.example.com", "alice", "pw")]).as_bytes());
    let config = DockerConfig::parse(&bytes).unwrap();
    assert_eq!(users(&config, "r.example.com", "app"), vec!["alice"]);
}

#[test]
fn key_that_is_not_a_registry_is_skipped() {
    let config = parse(&config_json(&[
        ("not a host", "a", "pw"),
        ("", "b", "pw"),
        ("r.example.com:port", "c", "pw"),
        ("r..example.com", "d", "pw"),
    ]));
    assert!(config.is_empty());
}

#[test]
fn key_with_user_info_is_skipped_and_never_printed() {
    let json = format!(
        r#"{{"auths": {{"https://user:{SECRET}@r.example.com": {{"auth": 5}},
                        "r.example.com": {{"auth": "{}"}}}}}}"#,
        b64("alice:pw")
    );
    // The entry's bad `auth` is not even looked at: the key alone disqualifies it.
    let config = parse(&json);
    assert_eq!(users(&config, "r.example.com", "app"), vec!["alice"]);
    assert_no_secret(&format!("{config:?}"));
}

#[test]
fn shown_key_redacts_user_info_and_truncates() {
    assert_eq!(
        shown_key(&format!("https://user:{SECRET}@r.example.com/v1/")),
        "https://<redacted>@r.example.com/v1/"
    );
    assert_eq!(shown_key("r.example.com/a@b"), "r.example.com/a@b");
    let long = "a".repeat(1000);
    assert_eq!(shown_key(&long), format!("{}…", "a".repeat(MAX_KEY_SHOWN)));
}

// ---- Parsing: malformed input ----

#[test]
fn input_that_is_not_json_is_refused() {
    assert!(matches!(parse_err("auths: {}"), SecretError::NotJson { line: 1, .. }));
    assert!(matches!(parse_err(""), SecretError::NotJson { .. }));
    assert!(matches!(parse_err(r#"{"auths": {"#), SecretError::NotJson { .. }));
    assert!(matches!(
        parse_err(r#"{"auths": {}} trailing"#),
        SecretError::NotJson { .. }
    ));
}

#[test]
fn invalid_utf8_is_refused() {
    let err = DockerConfig::parse(b"{\"auths\": {\"r\xff\": {}}}").unwrap_err();
    assert_eq!(err, SecretError::NotUtf8 { offset: 13 });
}

#[test]
fn top_level_that_is_not_an_object_is_refused() {
    for json in ["[]", "null", "\"text\"", "5"] {
        assert_eq!(
            parse_err(json),
            SecretError::WrongShape {
                path: "top level".into(),
                expected: "an object"
            },
            "{json}"
        );
    }
}

#[test]
fn auths_that_is_not_an_object_is_refused() {
    let err = parse_err(r#"{"auths": []}"#);
    assert_eq!(err.to_string(), "auths: expected an object");
}

#[test]
fn entry_that_is_not_an_object_is_refused() {
    assert_eq!(
        parse_err(&format!(r#"{{"auths": {{"r.example.com": "{SECRET}"}}}}"#)).to_string(),
        r#"auths."r.example.com": expected an object"#
    );
    assert_eq!(
        parse_err(r#"{"r.example.com": []}"#).to_string(),
        r#""r.example.com": expected an object"#
    );
}

#[test]
fn numeric_auth_is_refused() {
    assert_eq!(
        parse_err(r#"{"auths": {"r.example.com": {"auth": 5}}}"#),
        SecretError::WrongShape {
            path: r#"auths."r.example.com".auth"#.into(),
            expected: "a string"
        }
    );
}

#[test]
fn wrong_typed_username_password_or_identitytoken_is_refused() {
    for field in ["username", "password", "identitytoken"] {
        let err = parse_err(&format!(
            r#"{{"auths": {{"r.example.com": {{"{field}": {{"a": 1}}}}}}}}"#
        ));
        assert_eq!(
            err.to_string(),
            format!(r#"auths."r.example.com".{field}: expected a string"#)
        );
    }
}

#[test]
fn auth_that_is_not_base64_is_refused() {
    let err = parse_err(r#"{"auths": {"registry.example.com": {"auth": "not base64!"}}}"#);
    assert_eq!(
        err.to_string(),
        r#"auths."registry.example.com".auth: not base64 of user:password"#
    );
}

#[test]
fn auth_without_a_colon_is_refused() {
    let json = format!(r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}}}"#, b64(SECRET));
    assert_eq!(
        parse_err(&json),
        SecretError::BadAuth {
            path: r#"auths."r.example.com".auth"#.into()
        }
    );
}

#[test]
fn auth_that_decodes_to_invalid_utf8_is_refused() {
    let auth = base64::engine::general_purpose::STANDARD.encode(b"user:\xff\xfe");
    let json = format!(r#"{{"auths": {{"r.example.com": {{"auth": "{auth}"}}}}}}"#);
    assert!(matches!(parse_err(&json), SecretError::BadAuth { .. }));
}

#[test]
fn legacy_entry_error_names_the_top_level_path() {
    assert_eq!(
        parse_err(r#"{"r.example.com": {"auth": "%%%"}}"#).to_string(),
        r#""r.example.com".auth: not base64 of user:password"#
    );
}

#[test]
fn error_path_quotes_and_truncates_the_key() {
    let key = format!("r.example.com/{}", "x".repeat(1000));
    let err = parse_err(&format!(r#"{{"auths": {{"{key}": {{"auth": 5}}}}}}"#));
    let SecretError::WrongShape { path, .. } = err else {
        panic!("{err:?}")
    };
    assert!(path.len() < 300, "{path}");
    assert!(path.starts_with(r#"auths."r.example.com/xxx"#), "{path}");
    let odd = parse_err(r#"{"auths": {"r.example.com/\"\n": {"auth": 5}}}"#);
    assert!(odd.to_string().contains(r#"auths."r.example.com/\"\n".auth"#), "{odd}");
}

#[test]
fn input_over_one_mebibyte_is_refused() {
    let mut json = config_json(&[("r.example.com", "alice", "pw")]);
    json.push_str(&" ".repeat(MAX_CONFIG_LEN + 1 - json.len()));
    assert_eq!(
        parse_err(&json),
        SecretError::TooLarge {
            size: MAX_CONFIG_LEN + 1,
            limit: MAX_CONFIG_LEN
        }
    );
}

#[test]
fn input_of_exactly_one_mebibyte_is_accepted() {
    let mut json = config_json(&[("r.example.com", "alice", "pw")]);
    json.push_str(&" ".repeat(MAX_CONFIG_LEN - json.len()));
    assert_eq!(users(&parse(&json), "r.example.com", "app"), vec!["alice"]);
}

#[test]
fn deeply_nested_arrays_are_refused_without_panic() {
    let json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(parse_err(&json), SecretError::NotJson { .. }));
}

#[test]
fn deeply_nested_objects_are_refused_without_panic() {
    let json = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    assert!(matches!(parse_err(&json), SecretError::NotJson { .. }));
}

#[test]
fn deep_nesting_inside_an_entry_is_refused_without_panic() {
    let json = format!(
        r#"{{"auths": {{"r.example.com": {{"email": {}{}}}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(parse_err(&json), SecretError::NotJson { .. }));
}

#[test]
fn moderate_nesting_in_ignored_fields_is_accepted() {
    let json = format!(
        r#"{{"auths": {{}}, "plugins": {}1{}}}"#,
        r#"{"a":"#.repeat(100),
        "}".repeat(100)
    );
    assert!(parse(&json).is_empty());
}

// ---- Redaction ----

#[test]
fn docker_config_debug_prints_only_keys() {
    let config = parse(&config_json(&[("r.example.com", "alice", SECRET)]));
    let printed = format!("{config:?} {config:#?}");
    assert_no_secret(&printed);
    assert!(!printed.contains("alice"), "{printed}");
    assert!(printed.contains("r.example.com"), "{printed}");
}

#[test]
fn errors_never_contain_secret_material() {
    let auth = b64(&format!("user:{SECRET}"));
    let inputs = [
        // Bad base64 that contains the secret verbatim.
        format!(r#"{{"auths": {{"r.example.com": {{"auth": "{SECRET}!"}}}}}}"#),
        // Good base64 of text without a colon.
        format!(r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}}}"#, b64(SECRET)),
        // Wrong types next to the secret.
        format!(r#"{{"auths": {{"r.example.com": {{"auth": "{auth}", "password": ["{SECRET}"]}}}}}}"#),
        format!(r#"{{"auths": {{"r.example.com": {{"username": 5, "password": "{SECRET}"}}}}}}"#),
        format!(r#"{{"auths": {{"r.example.com": "{SECRET}"}}}}"#),
        format!(r#"{{"auths": "{SECRET}"}}"#),
        format!(r#""{SECRET}""#),
        // Syntax errors right after the secret.
        format!(r#"{{"auths": {{"r.example.com": {{"auth": "{auth}" "#),
        format!(r#"{{"auths": {{"r.example.com": {{"password": "{SECRET}", }}}}}}"#),
        format!(r#"{{"auths": {{"r.example.com": {{"password": "{SECRET}\q"}}}}}}"#),
        format!(r#"{{"auths": {{"r.example.com": {{"password": {SECRET}}}}}}}"#),
    ];
    for input in &inputs {
        let err = parse_err(input);
        assert_no_secret(&err.to_string());
        assert_no_secret(&format!("{err:?}"));
    }
    let mut not_utf8 = format!(r#"{{"auths": {{"r.example.com": {{"password": "{SECRET}"#).into_bytes();
    not_utf8.push(0xff);
    let err = DockerConfig::parse(&not_utf8).unwrap_err();
    assert_no_secret(&format!("{err} {err:?}"));
}

// ---- Matching: hosts ----

#[test]
fn exact_host_matches() {
    assert!(matches("registry.example.com", "registry.example.com", "app"));
}

#[test]
fn different_host_does_not_match() {
    assert!(!matches("registry.example.com", "other.example.com", "app"));
    assert!(!matches("registry.example.com", "registry.example.org", "app"));
}

#[test]
fn host_comparison_ignores_case() {
    assert!(matches("Registry.EXAMPLE.com", "registry.example.com", "app"));
    assert!(matches("registry.example.com", "REGISTRY.example.COM", "app"));
}

#[test]
fn key_with_scheme_matches_its_host() {
    assert!(matches("https://registry.example.com", "registry.example.com", "app"));
    assert!(matches("http://registry.example.com", "registry.example.com", "app"));
    assert!(matches("HTTPS://registry.example.com/", "registry.example.com", "app"));
}

#[test]
fn key_with_registry_api_path_matches_the_whole_host() {
    assert!(matches(
        "https://registry.example.com/v1/",
        "registry.example.com",
        "team/app"
    ));
    assert!(matches(
        "https://registry.example.com/v2/",
        "registry.example.com",
        "team/app"
    ));
}

#[test]
fn key_query_and_fragment_are_ignored() {
    assert!(matches(
        "https://registry.example.com/team?x=1#frag",
        "registry.example.com",
        "team/app"
    ));
}

#[test]
fn wildcard_label_matches_one_label() {
    assert!(matches("*.example.com", "a.example.com", "app"));
    assert!(matches("*.example.com", "registry.example.com", "app"));
}

#[test]
fn wildcard_label_does_not_match_the_bare_domain() {
    assert!(!matches("*.example.com", "example.com", "app"));
}

#[test]
fn wildcard_label_does_not_match_two_labels() {
    assert!(!matches("*.example.com", "a.b.example.com", "app"));
}

#[test]
fn wildcard_inside_a_label_matches() {
    assert!(matches("reg*.example.com", "registry.example.com", "app"));
    assert!(matches("reg*.example.com", "reg.example.com", "app"));
    assert!(!matches("reg*.example.com", "other.example.com", "app"));
    assert!(matches("*-eu.example.com", "reg-eu.example.com", "app"));
    assert!(matches("*.*.example.com", "a.b.example.com", "app"));
}

/// As in the kubelet, whose `url.Parse` reads `?` as the start of a query, not as a glob.
#[test]
fn question_mark_in_key_starts_a_query() {
    assert!(!matches("reg?.example.com", "reg1.example.com", "app"));
    assert!(matches("reg?.example.com", "reg", "app"));
}

#[test]
fn wildcard_in_image_registry_is_not_a_glob() {
    assert!(!matches("registry.example.com", "*.example.com", "app"));
}

#[test]
fn glob_match_handles_pathological_patterns() {
    let text = "a".repeat(60);
    assert!(!glob_match(&"*a".repeat(30), &format!("{text}b")));
    assert!(!glob_match(&format!("{}b", "*a".repeat(30)), &text));
    assert!(glob_match("*a*a*", &text));
    assert!(glob_match("*", ""));
    assert!(!glob_match("a", ""));
    assert!(!glob_match("", "a"));
}

#[test]
fn ipv4_and_ipv6_hosts_match() {
    assert!(matches("10.0.0.7:5000", "10.0.0.7:5000", "app"));
    assert!(matches("10.0.0.*:5000", "10.0.0.7:5000", "app"));
    assert!(matches("[fd00::1]:5000", "[FD00::1]:5000", "app"));
    assert!(!matches("[fd00::1]:5000", "[fd00::2]:5000", "app"));
}

#[test]
fn unparseable_image_registry_matches_nothing() {
    for registry in [
        "",
        "user@r.example.com",
        "r.example.com:abc",
        "r.example.com/app",
        "r..example.com",
    ] {
        assert!(!matches("*.example.com", registry, "app"), "{registry}");
    }
}

// ---- Matching: ports ----

#[test]
fn key_port_must_equal_image_port() {
    assert!(matches("registry:5000", "registry:5000", "app"));
    assert!(!matches("registry:5000", "registry:5001", "app"));
}

#[test]
fn key_without_port_does_not_match_image_with_port() {
    assert!(!matches("registry.example.com", "registry.example.com:5000", "app"));
}

#[test]
fn key_with_port_does_not_match_image_without_port() {
    assert!(!matches("registry.example.com:443", "registry.example.com", "app"));
}

#[test]
fn key_port_compares_as_a_number() {
    assert!(matches("https://localhost:05000/v2/", "localhost:5000", "app"));
}

#[test]
fn key_with_empty_port_counts_as_no_port() {
    assert!(matches("registry.example.com:", "registry.example.com", "app"));
}

// ---- Matching: paths ----

#[test]
fn key_path_matches_repositories_under_it() {
    assert!(matches(
        "registry.example.com/team-a",
        "registry.example.com",
        "team-a/filter"
    ));
    assert!(matches(
        "registry.example.com/team-a/",
        "registry.example.com",
        "team-a/sub/filter"
    ));
    assert!(matches(
        "https://registry.example.com/team-a",
        "registry.example.com",
        "team-a/filter"
    ));
}

#[test]
fn key_path_does_not_match_other_repositories() {
    assert!(!matches(
        "registry.example.com/team-a",
        "registry.example.com",
        "team-b/filter"
    ));
}

#[test]
fn key_path_matches_whole_segments_only() {
    assert!(!matches(
        "registry.example.com/team",
        "registry.example.com",
        "team-a/filter"
    ));
}

#[test]
fn key_path_matches_the_repository_itself() {
    assert!(matches(
        "registry.example.com/team-a/filter",
        "registry.example.com",
        "team-a/filter"
    ));
    assert!(!matches(
        "registry.example.com/team-a/filter/x",
        "registry.example.com",
        "team-a/filter"
    ));
}

#[test]
fn key_with_api_prefix_and_path_keeps_the_path() {
    assert!(matches(
        "https://registry.example.com/v2/team-a",
        "registry.example.com",
        "team-a/filter"
    ));
    assert!(!matches(
        "https://registry.example.com/v2/team-a",
        "registry.example.com",
        "team-b/filter"
    ));
}

// ---- Matching: Docker Hub ----

#[test]
fn docker_hub_aliases_all_match_docker_hub_images() {
    let keys = [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
        "http://index.docker.io/v1/",
        "https://registry-1.docker.io/v2/",
    ];
    for key in keys {
        for registry in DOCKER_HUB_HOSTS {
            assert!(
                matches(key, registry, "library/nginx"),
                "key {key} vs image on {registry}"
            );
        }
    }
}

#[test]
fn docker_hub_v1_path_is_not_a_repository_prefix() {
    assert!(matches("https://index.docker.io/v1/", "docker.io", "bitnami/nginx"));
}

#[test]
fn docker_hub_key_with_path_matches_only_that_namespace() {
    assert!(matches("docker.io/library", "docker.io", "library/nginx"));
    assert!(matches(
        "index.docker.io/library",
        "registry-1.docker.io",
        "library/nginx"
    ));
    assert!(!matches("docker.io/library", "docker.io", "bitnami/nginx"));
}

#[test]
fn docker_hub_key_does_not_match_other_registries() {
    assert!(!matches("https://index.docker.io/v1/", "quay.io", "library/nginx"));
    assert!(!matches("docker.io", "docker.io:5000", "library/nginx"));
    assert!(!matches("docker.io", "mirror.docker.io", "library/nginx"));
}

#[test]
fn other_registry_key_does_not_match_docker_hub() {
    assert!(!matches("quay.io", "docker.io", "library/nginx"));
    assert!(!matches("*.example.com", "index.docker.io", "library/nginx"));
}

#[test]
fn docker_hub_wildcard_key_matches_through_the_aliases() {
    assert!(matches("*.docker.io", "docker.io", "library/nginx"));
}

// ---- Ordering ----

#[test]
fn longer_key_comes_first() {
    let keys = [
        "registry.example.com",
        "registry.example.com/team-a",
        "registry.example.com/team-a/filter",
    ];
    assert_eq!(
        matching_keys(&keys, "registry.example.com", "team-a/filter"),
        vec![
            "registry.example.com/team-a/filter",
            "registry.example.com/team-a",
            "registry.example.com"
        ]
    );
}

#[test]
fn key_without_wildcard_comes_before_wildcard_of_equal_length() {
    let keys = ["*.example.com", "a.example.com"];
    assert_eq!(
        matching_keys(&keys, "a.example.com", "app"),
        vec!["a.example.com", "*.example.com"]
    );
}

#[test]
fn wildcard_key_with_longer_path_comes_before_shorter_literal_key() {
    let keys = ["registry.example.com", "*.example.com/team-a/filter"];
    assert_eq!(
        matching_keys(&keys, "registry.example.com", "team-a/filter"),
        vec!["*.example.com/team-a/filter", "registry.example.com"]
    );
}

#[test]
fn equally_specific_keys_keep_file_order() {
    let keys = ["https://a.example.com", "a.example.com/"];
    assert_eq!(
        matching_keys(&keys, "a.example.com", "app"),
        vec!["https://a.example.com", "a.example.com/"]
    );
    let reversed = ["a.example.com/", "https://a.example.com"];
    assert_eq!(
        matching_keys(&reversed, "a.example.com", "app"),
        vec!["a.example.com/", "https://a.example.com"]
    );
}

#[test]
fn docker_hub_aliases_rank_as_equally_specific() {
    // Counted as "docker.io", the longer spelling of the host doesn't outrank a key with a path.
    let keys = ["https://index.docker.io/v1/", "docker.io/library"];
    assert_eq!(
        matching_keys(&keys, "docker.io", "library/nginx"),
        vec!["docker.io/library", "https://index.docker.io/v1/"]
    );
}

#[test]
fn shared_credentials_are_returned_once_at_their_first_place() {
    let config = parse(&config_json(&[
        ("registry.example.com", "alice", "pw"),
        ("registry.example.com/team-a", "bob", "pw"),
        ("*.example.com", "alice", "pw"),
    ]));
    assert_eq!(
        users(&config, "registry.example.com", "team-a/app"),
        vec!["bob", "alice"]
    );
}

#[test]
fn same_user_with_different_passwords_is_returned_twice() {
    let config = parse(&config_json(&[
        ("docker.io", "alice", "old"),
        ("index.docker.io", "alice", "new"),
    ]));
    let found = config.lookup("docker.io", "library/nginx");
    assert_eq!(
        found.iter().map(|c| c.password()).collect::<Vec<_>>(),
        vec!["old", "new"]
    );
}
