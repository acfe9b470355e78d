//! oci:// against a registry that takes bearer tokens, the way Docker Hub, GHCR and most hosted registries
//! authenticate: Debian's `docker-registry` with `auth.token`, its `401` challenge, and a token realm that checks
//! Basic credentials and signs ES256 tokens the registry verifies (`support::token`; no token server can be
//! installed here, so that one issuer is ours, the registry is the real one).
//!
//! Fixtures are pushed to a plain registry without auth; the token registry serves the same storage directory.

use crate::support;

use support::registry::*;
use support::token::*;
use support::*;
use tonic::Code;

/// A plain registry for pushes, a token server, a token registry on the same storage, and a daemon for it (its
/// client comes beside it).
struct Setup {
    plain: Registry,
    tokens: TokenServer,
    registry: Registry,
    daemon: Daemon,
}

async fn setup() -> (Setup, Client) {
    let plain = Registry::start(false);
    let tokens = TokenServer::start().await;
    let registry = Registry::start_token_auth(&plain.storage_root(), &tokens.registry_auth());
    let host = registry.host();
    let daemon = Daemon::start(&["--insecure-registry", &host, "--retry-backoff", "10ms"]).await;
    let client = daemon.client().await;
    (
        Setup {
            plain,
            tokens,
            registry,
            daemon,
        },
        client,
    )
}

impl Setup {
    async fn push(&self, repo: &str, tag: &str) -> Image {
        let module = wasm_module(&format!("{repo}:{tag}"));
        self.plain.push(repo, Some(tag), cncf_image(&module)).await
    }

    fn url(&self, reference: &str) -> String {
        format!("oci://{}/{reference}", self.registry.host())
    }

    fn request(&self, reference: &str, (user, password): (&str, &str)) -> FetchRequest {
        FetchRequest {
            pull_secret: docker_config_json(&self.registry.host(), user, password),
            ..req(&self.url(reference))
        }
    }
}

#[tokio::test]
async fn module_is_pulled_with_a_token_from_the_realm() {
    let (s, mut client) = setup().await;
    let image = s.push("token/private", "v1").await;

    let (info, bytes) = fetch_ok(&mut client, s.request("token/private:v1", USER_A)).await;

    assert!(bytes == image.module, "served bytes differ from the pushed module");
    assert_eq!(info.sha256, image.module_digest);
    assert_eq!(info.outcome, Outcome::Fetched as i32);
    let asked = s.tokens.requests();
    assert!(
        asked.iter().any(|r| r.status == 200
            && r.user.as_deref() == Some(USER_A.0)
            && r.service.as_deref() == Some("wasmcache-test-registry")
            && r.scopes.iter().any(|scope| scope == "repository:token/private:pull")),
        "no token request with the user's credentials for repository:token/private:pull: {asked:?}"
    );
}

#[tokio::test]
async fn token_is_reused_for_a_second_tag_of_the_same_repository() {
    let (s, mut client) = setup().await;
    s.push("token/reuse", "v1").await;
    s.push("token/reuse", "v2").await;

    fetch_ok(&mut client, s.request("token/reuse:v1", USER_A)).await;
    let after_first = s.tokens.requests().len();
    fetch_ok(&mut client, s.request("token/reuse:v2", USER_A)).await;

    assert!(after_first >= 1, "the first pull asked for no token");
    assert_eq!(
        s.tokens.requests().len(),
        after_first,
        "the second pull asked for a new token: {:?}",
        s.tokens.requests()
    );
}

#[tokio::test]
async fn wrong_password_at_the_realm_is_unauthenticated_and_never_shown() {
    let (s, mut client) = setup().await;
    s.push("token/wrong", "v1").await;
    let wrong = "wrong-token-pw-81c2d7";

    let status = fetch_err(&mut client, s.request("token/wrong:v1", (USER_A.0, wrong))).await;

    assert_code(&status, Code::Unauthenticated);
    assert!(!status.message().contains(wrong), "{}", status.message());
    assert!(!s.daemon.log().contains(wrong), "the password reached the daemon's log");
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

/// An anonymous token grants nothing here (as Docker Hub answers for a private repository): the registry refuses
/// it, and so does the daemon.
#[tokio::test]
async fn anonymous_pull_gets_a_token_without_access_and_is_unauthenticated() {
    let (s, mut client) = setup().await;
    s.push("token/anonymous", "v1").await;

    let status = fetch_err(&mut client, req(&s.url("token/anonymous:v1"))).await;

    assert_code(&status, Code::Unauthenticated);
    assert!(
        s.tokens.requests().iter().all(|r| r.user.is_none()),
        "credentials were sent without a pull secret: {:?}",
        s.tokens.requests()
    );
    assert!(list(&mut client).await.is_empty(), "nothing is cached");
}

/// A private module pulled with a token is served from the cache only to callers who prove credentials too.
#[tokio::test]
async fn cached_module_pulled_with_a_token_is_refused_to_an_anonymous_caller() {
    let (s, mut client) = setup().await;
    s.push("token/cached", "v1").await;
    fetch_ok(&mut client, s.request("token/cached:v1", USER_B)).await;

    let status = fetch_err(&mut client, req(&s.url("token/cached:v1"))).await;

    assert!(
        matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied),
        "an anonymous caller got {:?}: {}",
        status.code(),
        status.message()
    );
}
