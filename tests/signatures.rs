//! Signature verification through the real daemon (`--verify-policy`): cosign signatures found in the real
//! registry the two ways cosign publishes them (tag `sha256-<hex>.sig`, and OCI 1.1 referrers: the referrers API,
//! served here by the test proxy because Debian's docker-registry 2.8 has none, and its tag-schema fallback), and
//! detached bundles of http modules. Signatures are made by the tests with keys, a test CA and a test Rekor made
//! in the tests (tests/support/sigstore.rs); the http interop test uses bundles made by sigstore-js
//! (tests/fixtures/sigstore/README.md).
//!
//! Debian's skopeo (1.9.3) cannot be the signer: it is built with sigstore signing disabled ("Debian-local change:
//! sigstore disabled"), so no cosign-format signature made by it can be tested here.

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::registry::*;
use support::sigstore::*;
use support::*;
use tonic::Code;

const SUBJECT: &str = "https://github.com/team-a/plugins/.github/workflows/release.yml@refs/tags/v1";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// A registry repository with one pushed image, a daemon whose policy file the test writes, and the proxy.
struct Setup {
    registry: &'static Registry,
    proxy: Proxy,
    image: Image,
    repo: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new(repo: &str) -> Setup {
        let registry = Registry::shared_plain();
        let proxy = registry.proxy().await;
        let image = registry.push_module(repo, "v1").await;
        Setup {
            registry,
            proxy,
            image,
            repo: repo.to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        self.proxy.oci(&format!("{}:v1", self.repo))
    }

    /// `HOST/REPO`, as an `images` glob matches it.
    fn image_name(&self) -> String {
        format!("{}/{}", self.proxy.host(), self.repo)
    }

    /// Writes the policy file (`rules` is TOML) and returns its path.
    fn policy(&self, rules: &str) -> PathBuf {
        let path = self.dir.path().join("policy.toml");
        std::fs::write(&path, rules).unwrap();
        path
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    async fn daemon(&self, policy: &Path, extra: &[&str]) -> (Daemon, Client) {
        let host = self.proxy.host();
        let policy = policy.to_str().unwrap().to_string();
        let mut args = vec![
            "--insecure-registry",
            &host,
            "--retry-backoff",
            "10ms",
            "--verify-policy",
            &policy,
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::start(&args).await;
        let client = daemon.client().await;
        (daemon, client)
    }

    /// Signs the image's manifest with `key` the cosign way (tag `.sig`, simple signing payload).
    async fn sign_with(&self, key: &TestKey) {
        let payload = simple_signing_payload(&self.image_name(), &self.image.manifest_digest);
        self.push_simple(payload.clone(), key.sign(&payload)).await;
    }

    async fn push_simple(&self, payload: Vec<u8>, signature: Vec<u8>) {
        let annotations = vec![("dev.cosignproject.cosign/signature", b64(&signature))];
        self.registry
            .push_cosign_signatures(&self.repo, &self.image.manifest_digest, &[(payload, annotations)])
            .await;
    }

    /// The image's manifest as a referrer's `subject`.
    fn subject(&self) -> (&str, &str, usize) {
        (
            self.image.manifest_digest.as_str(),
            self.image.media_type,
            self.image.manifest.len(),
        )
    }

    fn manifest_hex(&self) -> &str {
        self.image.manifest_digest.trim_start_matches("sha256:")
    }
}

/// A rule named `team` for the setup's image with `keys`, in `mode`.
fn key_rule(setup: &Setup, mode: &str, keys: &[&Path]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{:?}", k.to_str().unwrap())).collect();
    format!(
        "[[rule]]\nname = \"team\"\nimages = [\"{}\"]\nmode = \"{mode}\"\nkeys = [{}]\n",
        setup.image_name(),
        keys.join(", ")
    )
}

fn assert_nothing_stored(daemon: &Daemon) {
    assert!(
        daemon.blob_files().is_empty(),
        "no blob was stored: {:?}",
        daemon.blob_files()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Keys, cosign's tag
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn image_signed_by_a_trusted_key_is_served_saying_which_rule_and_key() {
    let setup = Setup::new("sig/trusted").await;
    let key = TestKey::generate(KeyKind::P256);
    setup.sign_with(&key).await;
    let key_file = key.write_public(setup.dir.path());
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key_file]));
    let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&setup.url())).await;

    assert_eq!(bytes, setup.image.module);
    assert!(info.verified_by.starts_with("rule team: key"), "{}", info.verified_by);
    assert!(
        info.verified_by.contains(key_file.to_str().unwrap()),
        "{}",
        info.verified_by
    );
}

#[tokio::test]
async fn every_key_type_is_accepted() {
    for (i, kind) in [KeyKind::P384, KeyKind::Ed25519, KeyKind::RsaPkcs1, KeyKind::RsaPss]
        .into_iter()
        .enumerate()
    {
        let setup = Setup::new(&format!("sig/kind-{i}")).await;
        let key = TestKey::generate(kind);
        setup.sign_with(&key).await;
        let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
        let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

        let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

        assert!(
            info.verified_by.starts_with("rule team: key"),
            "{kind:?}: {}",
            info.verified_by
        );
    }
}

#[tokio::test]
async fn unsigned_image_is_permission_denied_under_enforce_and_nothing_is_stored() {
    let setup = Setup::new("sig/unsigned").await;
    let key = TestKey::generate(KeyKind::P256);
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("rule team"), "{}", status.message());
    assert!(status.message().contains("no signature"), "{}", status.message());
    assert_nothing_stored(&daemon);
    assert!(list(&mut client).await.is_empty());
}

/// A signature by another key that its Rekor entry names: the rule's trusted root checks the entry, which shows
/// whose key it is.
#[tokio::test]
async fn logged_signature_from_another_key_is_refused_as_untrusted() {
    let setup = Setup::new("sig/other-key").await;
    let (trusted, other) = (TestKey::generate(KeyKind::P256), TestKey::generate(KeyKind::P256));
    let sigstore = TestSigstore::new();
    let payload = simple_signing_payload(&setup.image_name(), &setup.image.manifest_digest);
    let (signature, rekor) = sigstore.keyed_simple_signature(&other, &payload);
    let annotations = vec![
        ("dev.cosignproject.cosign/signature", signature),
        ("dev.sigstore.cosign/bundle", rekor),
    ];
    setup
        .registry
        .push_cosign_signatures(&setup.repo, &setup.image.manifest_digest, &[(payload, annotations)])
        .await;
    let root = setup.write("trusted_root.json", &sigstore.trusted_root_json());
    let rule = key_rule(&setup, "enforce", &[&trusted.write_public(setup.dir.path())]);
    let policy = setup.policy(&format!("{rule}trusted-root = {:?}\n", root.to_str().unwrap()));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("untrusted key"), "{}", status.message());
    assert_nothing_stored(&daemon);
}

/// Without log data a signature by another key cannot be told from an altered one: refused either way.
#[tokio::test]
async fn signature_from_another_key_is_refused() {
    let setup = Setup::new("sig/other-key-bare").await;
    let (trusted, other) = (TestKey::generate(KeyKind::P256), TestKey::generate(KeyKind::P256));
    setup.sign_with(&other).await;
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&trusted.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("another key"), "{}", status.message());
    assert_nothing_stored(&daemon);
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let setup = Setup::new("sig/tampered").await;
    let key = TestKey::generate(KeyKind::P256);
    let payload = simple_signing_payload(&setup.image_name(), &setup.image.manifest_digest);
    let signature = key.sign(&payload);
    let mut tampered = payload.clone();
    tampered.extend_from_slice(b" ");
    setup.push_simple(tampered, signature).await;
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("rule team"), "{}", status.message());
    assert_nothing_stored(&daemon);
}

/// A valid signature by the trusted key, but its payload names another image: copied from another image's `.sig`.
#[tokio::test]
async fn signature_for_another_digest_is_refused() {
    let setup = Setup::new("sig/other-digest").await;
    let key = TestKey::generate(KeyKind::P256);
    let other = sha256_hex(b"another manifest");
    let payload = simple_signing_payload(&setup.image_name(), &other);
    setup.push_simple(payload.clone(), key.sign(&payload)).await;
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("digest"), "{}", status.message());
    assert_nothing_stored(&daemon);
}

/// The module blob in the registry replaced after the image was signed: the signature still names the manifest,
/// but the blob no longer matches it, so nothing is stored.
#[tokio::test]
async fn replaced_blob_of_a_signed_image_is_refused() {
    let setup = Setup::new("sig/replaced-blob").await;
    let key = TestKey::generate(KeyKind::P256);
    setup.sign_with(&key).await;
    setup.registry.tamper_blob(&setup.image.module_blob_digest);
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::DataLoss);
    assert_nothing_stored(&daemon);
}

/// The tag moved to another manifest after the first was signed: no signature names the new one.
#[tokio::test]
async fn image_retagged_after_signing_is_refused() {
    let setup = Setup::new("sig/retagged").await;
    let key = TestKey::generate(KeyKind::P256);
    setup.sign_with(&key).await;
    setup
        .registry
        .push(&setup.repo, Some("v1"), cncf_image(&wasm_module("sig/retagged/other")))
        .await;
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert_nothing_stored(&daemon);
}

#[tokio::test]
async fn warn_mode_serves_an_unsigned_image_and_logs_why() {
    let setup = Setup::new("sig/warn").await;
    let key = TestKey::generate(KeyKind::P256);
    let policy = setup.policy(&key_rule(&setup, "warn", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, bytes) = fetch_ok(&mut client, req(&setup.url())).await;

    assert_eq!(bytes, setup.image.module);
    assert!(
        info.verified_by.starts_with("rule team (warn): not verified"),
        "{}",
        info.verified_by
    );
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("signature check failed")),
        "{log}"
    );
}

#[tokio::test]
async fn off_mode_does_not_look_for_signatures() {
    let setup = Setup::new("sig/off").await;
    let key = TestKey::generate(KeyKind::P256);
    let policy = setup.policy(&key_rule(&setup, "off", &[&key.write_public(setup.dir.path())]));
    let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert!(info.verified_by.is_empty(), "{}", info.verified_by);
    let sig_requests = setup
        .proxy
        .seen()
        .iter()
        .filter(|s| s.path.contains("sha256-") || s.path.contains("/referrers/"))
        .count();
    assert_eq!(sig_requests, 0, "{}", setup.proxy.describe());
}

#[tokio::test]
async fn image_no_rule_matches_is_served_unjudged() {
    let setup = Setup::new("sig/unmatched").await;
    let key = TestKey::generate(KeyKind::P256);
    let rule = format!(
        "[[rule]]\nname = \"elsewhere\"\nimages = [\"{}/other/**\"]\nkeys = [{:?}]\n",
        setup.proxy.host(),
        key.write_public(setup.dir.path()).to_str().unwrap()
    );
    let (_daemon, mut client) = setup.daemon(&setup.policy(&rule), &[]).await;

    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert!(info.verified_by.is_empty(), "{}", info.verified_by);
}

// ---------------------------------------------------------------------------------------------------------------
// Sigstore bundles as OCI 1.1 referrers
// ---------------------------------------------------------------------------------------------------------------

/// cosign v3 on a registry with the referrers API (served by the proxy: the registry itself has none).
#[tokio::test]
async fn bundle_found_through_the_referrers_api_is_verified() {
    let setup = Setup::new("sig/referrers-api").await;
    let key = TestKey::generate(KeyKind::P256);
    let sigstore = TestSigstore::new();
    let bundle = sigstore.keyed_bundle(&key, setup.manifest_hex(), BundleKind::MessageSignatureNoLog);
    let referrer = setup
        .registry
        .push_bundle_referrer(&setup.repo, setup.subject(), &bundle)
        .await;
    setup.proxy.answer(
        &format!("/v2/{}/referrers/{}", setup.repo, setup.image.manifest_digest),
        "application/vnd.oci.image.index.v1+json",
        Registry::referrers_index(&[referrer]),
    );
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert!(info.verified_by.starts_with("rule team: key"), "{}", info.verified_by);
}

/// cosign v3 on a registry without the referrers API: the index at tag `sha256-<hex>`.
#[tokio::test]
async fn bundle_found_through_the_referrers_tag_fallback_is_verified() {
    let setup = Setup::new("sig/referrers-tag").await;
    let key = TestKey::generate(KeyKind::P256);
    let sigstore = TestSigstore::new();
    let bundle = sigstore.keyed_bundle(&key, setup.manifest_hex(), BundleKind::DsseNoLog);
    let referrer = setup
        .registry
        .push_bundle_referrer(&setup.repo, setup.subject(), &bundle)
        .await;
    setup
        .registry
        .push_referrers_tag(&setup.repo, &setup.image.manifest_digest, &[referrer])
        .await;
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert!(info.verified_by.starts_with("rule team: key"), "{}", info.verified_by);
}

/// A rule with a keyless identity (test CA, CT log and Rekor key in a trusted root made by the test).
fn keyless_rule(setup: &Setup, sigstore: &TestSigstore, subject: &str) -> PathBuf {
    let root = setup.write("trusted_root.json", &sigstore.trusted_root_json());
    setup.policy(&format!(
        "[[rule]]\nname = \"ci\"\nimages = [\"{}\"]\ntrusted-root = {:?}\n[[rule.identity]]\nissuer = {ISSUER:?}\nsubject = {subject:?}\n",
        setup.image_name(),
        root.to_str().unwrap(),
    ))
}

#[tokio::test]
async fn keyless_bundle_with_a_matching_identity_is_verified() {
    let setup = Setup::new("sig/keyless").await;
    let sigstore = TestSigstore::new();
    let bundle = sigstore.keyless_bundle(setup.manifest_hex(), SUBJECT, ISSUER, BundleKind::DsseV03);
    let referrer = setup
        .registry
        .push_bundle_referrer(&setup.repo, setup.subject(), &bundle)
        .await;
    setup
        .registry
        .push_referrers_tag(&setup.repo, &setup.image.manifest_digest, &[referrer])
        .await;
    let policy = keyless_rule(&setup, &sigstore, "https://github.com/team-a/.+");
    let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert!(info.verified_by.starts_with("rule ci: keyless"), "{}", info.verified_by);
    assert!(info.verified_by.contains(SUBJECT), "{}", info.verified_by);
}

#[tokio::test]
async fn keyless_simple_signature_in_the_cosign_tag_is_verified() {
    let setup = Setup::new("sig/keyless-tag").await;
    let sigstore = TestSigstore::new();
    let payload = simple_signing_payload(&setup.image_name(), &setup.image.manifest_digest);
    let (signature, cert, chain, rekor) = sigstore.keyless_simple_signature(&payload, SUBJECT, ISSUER);
    let annotations = vec![
        ("dev.cosignproject.cosign/signature", signature),
        ("dev.sigstore.cosign/certificate", cert),
        ("dev.sigstore.cosign/chain", chain),
        ("dev.sigstore.cosign/bundle", rekor),
    ];
    setup
        .registry
        .push_cosign_signatures(&setup.repo, &setup.image.manifest_digest, &[(payload, annotations)])
        .await;
    let policy = keyless_rule(&setup, &sigstore, "https://github.com/team-a/.+");
    let (_daemon, mut client) = setup.daemon(&policy, &[]).await;

    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert!(info.verified_by.starts_with("rule ci: keyless"), "{}", info.verified_by);
}

#[tokio::test]
async fn keyless_bundle_from_another_identity_is_refused() {
    let setup = Setup::new("sig/keyless-other").await;
    let sigstore = TestSigstore::new();
    let bundle = sigstore.keyless_bundle(setup.manifest_hex(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03);
    let referrer = setup
        .registry
        .push_bundle_referrer(&setup.repo, setup.subject(), &bundle)
        .await;
    setup
        .registry
        .push_referrers_tag(&setup.repo, &setup.image.manifest_digest, &[referrer])
        .await;
    let policy = keyless_rule(&setup, &sigstore, "https://github.com/team-b/.+");
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("identity"), "{}", status.message());
    assert_nothing_stored(&daemon);
}

// ---------------------------------------------------------------------------------------------------------------
// Policy changes
// ---------------------------------------------------------------------------------------------------------------

/// A cached module is judged again once the policy changes (SIGHUP): a rule that now applies refuses the cached
/// unsigned module; signing it makes it served again.
#[tokio::test]
async fn cached_module_is_judged_again_when_the_policy_changes() {
    let setup = Setup::new("sig/reload").await;
    let key = TestKey::generate(KeyKind::P256);
    let key_file = key.write_public(setup.dir.path());
    let policy = setup.policy(&key_rule(&setup, "off", &[&key_file]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;
    fetch_ok(&mut client, req(&setup.url())).await;

    setup.policy(&key_rule(&setup, "enforce", &[&key_file]));
    daemon.signal(libc::SIGHUP);
    let refused = eventually_refused(&mut client, &setup.url()).await;
    setup.sign_with(&key).await;
    let (info, _) = fetch_ok(&mut client, req(&setup.url())).await;

    assert_code(&refused, Code::PermissionDenied);
    assert!(info.verified_by.starts_with("rule team: key"), "{}", info.verified_by);
    let module_gets = setup
        .proxy
        .seen()
        .iter()
        .filter(|s| s.path.ends_with(&setup.image.module_blob_digest))
        .count();
    assert_eq!(module_gets, 1, "judged again without downloading the module again");
}

/// Polls until a fetch of `url` fails (the reloaded policy is in force), for at most 10 s.
async fn eventually_refused(client: &mut Client, url: &str) -> tonic::Status {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Err(status) = fetch(client, req(url)).await {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded policy never refused {url}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_policy_file_that_no_longer_loads_keeps_the_old_policy() {
    let setup = Setup::new("sig/bad-reload").await;
    let key = TestKey::generate(KeyKind::P256);
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let (daemon, mut client) = setup.daemon(&policy, &[]).await;

    setup.policy("[[rule]]\nname = \"broken\"\nmode = \"sometimes\"\n");
    daemon.signal(libc::SIGHUP);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let status = fetch_err(&mut client, req(&setup.url())).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(
        daemon.log().contains("verification policy not reloaded"),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn serve_with_a_bad_policy_file_exits_78_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"x\"\nimages = [\"r/**\"]\nmode = \"sometimes\"\nkeys = []\n",
    )
    .unwrap();

    let (status, _) = serve_until_exit(&["--verify-policy", policy.to_str().unwrap()]).await;
    let check = run_cli(
        &["config", "check", "/dev/null"],
        &[("WASMCACHE_VERIFY_POLICY", policy.to_str().unwrap())],
    )
    .await;

    assert_eq!(status.and_then(|s| s.code()), Some(78));
    assert_eq!(check.status.code(), Some(78));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("policy.toml") && err.contains("mode"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn ls_and_metrics_say_what_was_verified_and_refused() {
    let setup = Setup::new("sig/report").await;
    let key = TestKey::generate(KeyKind::P256);
    setup.sign_with(&key).await;
    let unsigned = setup
        .registry
        .push(
            &setup.repo,
            Some("unsigned"),
            cncf_image(&wasm_module("sig/report/unsigned")),
        )
        .await;
    assert_ne!(unsigned.manifest_digest, setup.image.manifest_digest);
    let policy = setup.policy(&key_rule(&setup, "enforce", &[&key.write_public(setup.dir.path())]));
    let admin = free_local_addr();
    let (daemon, mut client) = setup.daemon(&policy, &["--admin-listen", &admin.to_string()]).await;
    fetch_ok(&mut client, req(&setup.url())).await;
    fetch_err(&mut client, req(&setup.proxy.oci(&format!("{}:unsigned", setup.repo)))).await;

    let ls = run_cli(&["ls", "--json", "--socket", daemon.socket().to_str().unwrap()], &[]).await;
    let metrics = scrape(admin).await;

    let rows: Value = serde_json::from_slice(&ls.stdout).expect("ls --json");
    let by = rows[0]["verified_by"][setup.url().as_str()]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(by.starts_with("rule team: key"), "{rows}");
    let verified = [("rule", "team"), ("result", "verified"), ("reason", "none")];
    let refused = [("rule", "team"), ("result", "refused"), ("reason", "no_signature")];
    assert_eq!(metrics.value("wasmcache_signature_checks_total", &verified), 1.0);
    assert_eq!(metrics.value("wasmcache_signature_checks_total", &refused), 1.0);
}

// ---------------------------------------------------------------------------------------------------------------
// http(s) modules with a detached bundle
// ---------------------------------------------------------------------------------------------------------------

fn http_rule(origin: &Origin, key: &Path, mode: &str) -> String {
    format!(
        "[[rule]]\nname = \"web\"\nurls = [\"{}/*\"]\nmode = \"{mode}\"\nkeys = [{:?}]\nbundle-url = \"{{url}}.sigstore.json\"\n",
        origin.url(""),
        key.to_str().unwrap()
    )
}

/// Interop: a module and its bundle made by sigstore-js (`@sigstore/sign`), a signer no one here wrote.
#[tokio::test]
async fn http_module_with_a_sigstore_js_bundle_is_verified() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigstore/sigstore-js");
    let module = std::fs::read(fixtures.join("module.wasm")).unwrap();
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module.clone());
    origin.serve_with_type(
        "/m.wasm.sigstore.json",
        std::fs::read(fixtures.join("module.wasm.sigstore.json")).unwrap(),
        "application/json",
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, http_rule(&origin, &fixtures.join("key.pub"), "enforce")).unwrap();
    let daemon = Daemon::start(&["--verify-policy", policy.to_str().unwrap()]).await;

    let (info, bytes) = fetch_ok(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;

    assert_eq!(bytes, module);
    assert!(info.verified_by.starts_with("rule web: key"), "{}", info.verified_by);
}

#[tokio::test]
async fn http_module_without_its_bundle_is_refused() {
    let origin = Origin::start().await;
    origin.serve("/m.wasm", wasm_module("http-unsigned"));
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::generate(KeyKind::P256);
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, http_rule(&origin, &key.write_public(dir.path()), "enforce")).unwrap();
    let daemon = Daemon::start(&["--verify-policy", policy.to_str().unwrap(), "--retry-backoff", "10ms"]).await;

    let status = fetch_err(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;

    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("no signature"), "{}", status.message());
    assert_eq!(origin.hits("/m.wasm.sigstore.json"), 1);
    assert_nothing_stored(&daemon);
}

#[tokio::test]
async fn http_module_with_a_bundle_for_other_bytes_is_refused() {
    let origin = Origin::start().await;
    let module = wasm_module("http-other-bytes");
    origin.serve("/m.wasm", module.clone());
    let key = TestKey::generate(KeyKind::P256);
    let sigstore = TestSigstore::new();
    let other = sha256_hex(b"other bytes");
    origin.serve(
        "/m.wasm.sigstore.json",
        sigstore.keyed_bundle(&key, &other, BundleKind::MessageSignatureNoLog),
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, http_rule(&origin, &key.write_public(dir.path()), "enforce")).unwrap();
    let daemon = Daemon::start(&["--verify-policy", policy.to_str().unwrap()]).await;

    let status = fetch_err(&mut daemon.client().await, req(&origin.url("/m.wasm"))).await;

    assert_code(&status, Code::PermissionDenied);
    assert_nothing_stored(&daemon);
}
