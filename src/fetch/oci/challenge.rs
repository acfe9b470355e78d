//! The `WWW-Authenticate` challenges of a registry's 401, reduced to the one we answer: a Bearer token
//! request (the distribution token flow) or Basic credentials.
//!
//! The header's grammar (RFC 7235: comma-separated challenges whose parameters are also comma-separated,
//! quoted strings with escapes) is parsed by `http-auth`; this module only chooses among the results.

use http_auth::parser::ChallengeParser;
use http_auth::ChallengeRef;

/// A challenge we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    /// Ask `realm` for a token for `service` and `scope` (the repository's pull scope when absent).
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Longest part of a registry's header that an error message repeats: a header can be kilobytes.
const MAX_SHOWN: usize = 200;

/// Why a 401's challenges gave nothing to answer although the registry sent some.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WWW-Authenticate header: {0}")]
pub(super) struct MalformedChallenge(String);

/// The challenge to answer among the `WWW-Authenticate` values of a 401: a Bearer challenge with a realm
/// before Basic, whatever their order (as Docker's client does: a token flow works with and without
/// credentials, Basic only with them), else the first Basic; `Ok(None)` when none is of a scheme we speak.
///
/// A value that breaks the grammar counts for the challenges before the break, as `http-auth`'s own client
/// does; when that leaves nothing to answer, the syntax error is returned so the caller can say why.
pub(super) fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Option<Challenge>, MalformedChallenge> {
    let mut basic = false;
    let mut malformed = None;
    for value in values {
        for parsed in ChallengeParser::new(value) {
            match parsed {
                Ok(challenge) => match answerable(&challenge) {
                    Some(bearer @ Challenge::Bearer { .. }) => return Ok(Some(bearer)),
                    Some(Challenge::Basic) => basic = true,
                    None => {}
                },
                Err(e) => {
                    malformed.get_or_insert_with(|| MalformedChallenge(shown(&e.to_string())));
                    break;
                }
            }
        }
    }
    match (basic, malformed) {
        (true, _) => Ok(Some(Challenge::Basic)),
        (false, Some(e)) => Err(e),
        (false, None) => Ok(None),
    }
}

/// The challenge as one we answer: Basic, or Bearer with a realm (a Bearer challenge without one names no
/// token endpoint).
fn answerable(challenge: &ChallengeRef<'_>) -> Option<Challenge> {
    // Scheme and parameter names are case-insensitive (RFC 7235 sections 2.1 and 2.2).
    let param = |name: &str| {
        challenge
            .params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_unescaped())
    };
    if challenge.scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if challenge.scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: param("realm")?,
            service: param("service"),
            scope: param("scope"),
        })
    } else {
        None
    }
}

fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    fn one(header: &str) -> Result<Option<Challenge>, MalformedChallenge> {
        choose([header])
    }

    #[test]
    fn bearer_with_realm_service_and_scope() {
        assert_eq!(
            one(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/filter:pull""#
            ),
            Ok(Some(bearer(
                "https://auth.example.com/token",
                Some("registry.example.com"),
                Some("repository:team/filter:pull")
            )))
        );
    }

    #[test]
    fn bearer_with_only_a_realm_leaves_service_and_scope_out() {
        assert_eq!(
            one(r#"Bearer realm="https://auth.example.com/token""#),
            Ok(Some(bearer("https://auth.example.com/token", None, None)))
        );
    }

    #[test]
    fn commas_inside_a_quoted_scope_belong_to_it() {
        assert_eq!(
            one(r#"Bearer realm="https://a/token", scope="repository:x/y:pull,push", service="reg""#),
            Ok(Some(bearer(
                "https://a/token",
                Some("reg"),
                Some("repository:x/y:pull,push")
            )))
        );
    }

    #[test]
    fn escaped_quotes_in_values_are_unescaped() {
        assert_eq!(
            one(r#"Bearer realm="https://a/token", service="a \"b\" c""#),
            Ok(Some(bearer("https://a/token", Some(r#"a "b" c"#), None)))
        );
    }

    #[test]
    fn token_values_need_no_quotes() {
        assert_eq!(
            one("Bearer realm=token-server, service=reg"),
            Ok(Some(bearer("token-server", Some("reg"), None)))
        );
    }

    #[test]
    fn scheme_and_parameter_names_are_case_insensitive() {
        for header in [
            r#"bearer realm="https://a/token",service="reg""#,
            r#"BEARER REALM="https://a/token",Service="reg""#,
            r#"bEaReR rEaLm="https://a/token", SERVICE="reg""#,
        ] {
            assert_eq!(
                one(header),
                Ok(Some(bearer("https://a/token", Some("reg"), None))),
                "{header}"
            );
        }
        assert_eq!(one(r#"BASIC realm="r""#), Ok(Some(Challenge::Basic)));
        assert_eq!(one("basic"), Ok(Some(Challenge::Basic)));
    }

    #[test]
    fn bearer_is_chosen_over_basic_in_one_header_in_either_order() {
        for header in [
            r#"Basic realm="registry", Bearer realm="https://a/token",service="reg""#,
            r#"Bearer realm="https://a/token",service="reg", Basic realm="registry""#,
        ] {
            assert_eq!(
                one(header),
                Ok(Some(bearer("https://a/token", Some("reg"), None))),
                "{header}"
            );
        }
    }

    #[test]
    fn bearer_is_chosen_over_basic_across_header_values() {
        assert_eq!(
            choose([r#"Basic realm="registry""#, r#"Bearer realm="https://a/token""#]),
            Ok(Some(bearer("https://a/token", None, None)))
        );
    }

    #[test]
    fn unknown_schemes_are_skipped() {
        assert_eq!(
            one(r#"Negotiate, Digest realm="x", nonce="n", Basic realm="r""#),
            Ok(Some(Challenge::Basic))
        );
        assert_eq!(one(r#"Digest realm="x", nonce="n""#), Ok(None));
        assert_eq!(choose([]), Ok(None));
    }

    #[test]
    fn bearer_without_a_realm_is_not_answerable() {
        assert_eq!(one(r#"Bearer service="reg",scope="repository:a:pull""#), Ok(None));
        assert_eq!(
            one(r#"Bearer service="reg", Basic realm="r""#),
            Ok(Some(Challenge::Basic))
        );
    }

    #[test]
    fn malformed_header_is_a_clear_error() {
        let err = one(r#"Bearer realm="https://a/token"," garbage"#).unwrap_err();
        assert!(
            err.to_string().starts_with("malformed WWW-Authenticate header: "),
            "{err}"
        );
        assert!(one("Bearer realm=https://a/token").is_err(), "':' and '/' need quotes");
        assert!(one(r#"Bearer realm="unterminated"#).is_err());
    }

    #[test]
    fn challenges_before_a_syntax_error_still_count() {
        assert_eq!(
            one(r#"Bearer realm="https://a/token", Basic realm="r", what is this"#),
            Ok(Some(bearer("https://a/token", None, None)))
        );
        assert_eq!(
            choose(["Bearer realm=https://broken", r#"Basic realm="r""#]),
            Ok(Some(Challenge::Basic))
        );
    }

    #[test]
    fn error_message_is_bounded() {
        let header = format!("Bearer realm=\"{}", "x".repeat(100_000));
        let err = one(&header).unwrap_err().to_string();
        assert!(err.len() < 1024, "{} bytes", err.len());
    }

    /// Hostile headers: none panics, and whatever is chosen is well-formed (a Bearer always names a realm
    /// that the header contains).
    #[test]
    fn hostile_headers_never_panic() {
        let mut table: Vec<String> = [
            "",
            " ",
            ",",
            ",,,,",
            "=",
            "\"",
            "\\",
            "Bearer",
            "Bearer ",
            "Bearer realm",
            "Bearer realm=",
            "Bearer realm=\"",
            "Bearer realm=\"\\",
            "Bearer realm=\"\\\"",
            "Bearer realm=\"a\"\"b\"",
            "Bearer realm==\"a\"",
            "Bearer =\"a\"",
            "Bearer ,,, realm=\"a\" ,,,",
            "Bearer realm=\"é\"",
            "Bearer realm=\"\u{0}\"",
            "Bearer\trealm=\"a\"",
            "Bearer realm=\"a\", realm=\"b\"",
            "Basic realm=\"a\" Bearer",
            "\u{feff}Bearer realm=\"a\"",
            "Bearer realm=\"a\"\r\nX-Injected: 1",
            "Bearer realm=\"a\", scope=\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        table.push(",".repeat(100_000));
        table.push("a".repeat(100_000));
        table.push(format!("Bearer {}", "realm=\"a\", ".repeat(10_000)));
        table.push(format!("Bearer realm=\"{}\"", "\\\"".repeat(10_000)));
        table.push("Basic, ".repeat(10_000));
        // Random strings over the grammar's own characters, from a fixed seed so a failure repeats.
        let alphabet: Vec<char> = "BearerBasic realmscope=\",\\ \t;:/é\u{0}".chars().collect();
        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            table.push((0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect());
        }
        for header in &table {
            match one(header) {
                Ok(Some(Challenge::Bearer { realm, .. })) => {
                    assert!(
                        !header.is_empty() && header.to_ascii_lowercase().contains("realm"),
                        "{header:?}"
                    );
                    assert!(realm.len() <= header.len(), "{header:?}");
                }
                Ok(_) => {}
                Err(e) => assert!(e.to_string().len() < 1024, "{header:.100?}"),
            }
        }
    }
}
