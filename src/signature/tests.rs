//! The signature module against generated sigstore material (a test Fulcio, CT log and Rekor) and against real
//! artifacts from production sigstore (tests/fixtures/sigstore, see its README).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::glob::Glob;
use super::*;
use crate::digest::Sha256;

// The generator lives with the integration tests' support code; including it here keeps one copy for both.
#[path = "../../tests/support/sigstore.rs"]
#[allow(dead_code)]
mod testgen;

use testgen::{BundleKind, Fault, KeyKind, Options, TestKey, TestSigstore};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/acme/wasm/.github/workflows/release.yml@refs/tags/v1.2.3";
const SUBJECT_RE: &str = "https://github\\.com/acme/wasm/\\.github/workflows/release\\.yml@refs/tags/v.*";

/// A temp dir with a test sigstore's trusted root in it, and policies written next to it.
struct World {
    dir: tempfile::TempDir,
    sigstore: TestSigstore,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let sigstore = TestSigstore::new();
        std::fs::write(dir.path().join("trusted_root.json"), sigstore.trusted_root_json()).unwrap();
        World { dir, sigstore }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn load(&self, toml: &str) -> Policy {
        let path = self.path().join("policy.toml");
        std::fs::write(&path, toml).unwrap();
        Policy::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One catch-all rule trusting the keyless identity SUBJECT_RE from ISSUER.
    fn keyless(&self) -> Policy {
        self.load(&format!(
            "[[rule]]\nname = \"keyless\"\nimages = [\"**\"]\nurls = [\"https://**\"]\ntrusted-root = \"trusted_root.json\"\n\
             [[rule.identity]]\nissuer = \"{ISSUER}\"\nsubject = '{SUBJECT_RE}'\n"
        ))
    }

    /// One catch-all rule trusting `keys`, with the trusted root when `log`.
    fn keyed(&self, keys: &[&TestKey], log: bool) -> Policy {
        let paths: Vec<String> = keys
            .iter()
            .map(|k| format!("{:?}", k.write_public(self.path()).display().to_string()))
            .collect();
        let root = if log {
            "trusted-root = \"trusted_root.json\"\n"
        } else {
            ""
        };
        self.load(&format!(
            "[[rule]]\nname = \"keyed\"\nimages = [\"**\"]\nurls = [\"https://**\"]\nkeys = [{}]\n{root}",
            paths.join(", ")
        ))
    }
}

fn rule(policy: &Policy) -> &Rule {
    &policy.rules()[0]
}

fn manifest() -> Sha256 {
    Sha256::of(b"a wasm image manifest")
}

fn judge_image(policy: &Policy, digest: &Sha256, evidence: &Evidence) -> Result<Verified, Refused> {
    rule(policy).judge(
        &Subject::Image {
            digests: std::slice::from_ref(digest),
        },
        evidence,
        SystemTime::now(),
    )
}

fn bundles(found_for: Sha256, jsons: Vec<Vec<u8>>) -> Evidence {
    Evidence {
        simple: vec![],
        bundles: jsons.into_iter().map(|json| FoundBundle { found_for, json }).collect(),
    }
}

fn bundle(found_for: Sha256, json: Vec<u8>) -> Evidence {
    bundles(found_for, vec![json])
}

fn reason(result: Result<Verified, Refused>) -> Reason {
    match result {
        Ok(v) => panic!("expected a refusal, verified by {}", v.by),
        Err(r) => r.reason,
    }
}

fn blob_subject(payload: &[u8]) -> Subject<'static> {
    Subject::Blob {
        sha256: Sha256::of(payload),
        sha512: testgen::sha512(payload),
    }
}

// ---------------------------------------------------------------- globs and policy

#[test]
fn globs_match_segments() {
    let cases: &[(&str, usize, &str, bool)] = &[
        ("ghcr.io/team-a/**", 1, "ghcr.io/team-a/x", true),
        ("ghcr.io/team-a/**", 1, "ghcr.io/team-a/x/y/z", true),
        ("ghcr.io/team-a/**", 1, "ghcr.io/team-a", true),
        ("ghcr.io/team-a/**", 1, "ghcr.io/team-ab/x", false),
        ("ghcr.io/team-a/**", 1, "docker.io/team-a/x", false),
        (
            "registry.local:5000/plugins/*",
            1,
            "registry.local:5000/plugins/a",
            true,
        ),
        (
            "registry.local:5000/plugins/*",
            1,
            "registry.local:5000/plugins/a/b",
            false,
        ),
        ("registry.local:5000/plugins/*", 1, "registry.local:5000/plugins", false),
        ("GHCR.IO/team/*", 1, "ghcr.io/team/x", true),
        ("ghcr.io/team/*", 1, "GHCR.io/team/x", true),
        ("ghcr.io/team/*", 1, "ghcr.io/TEAM/x", false),
        ("docker.io/library/*", 1, "docker.io/library/nginx", true),
        ("ghcr.io/*/filter", 1, "ghcr.io/a/filter", true),
        ("ghcr.io/*/filter", 1, "ghcr.io/a/b/filter", false),
        ("ghcr.io/**/filter", 1, "ghcr.io/a/b/filter", true),
        ("ghcr.io/**/filter", 1, "ghcr.io/filter", true),
        ("ghcr.io/**/filter", 1, "ghcr.io/a/filters", false),
        ("ghcr.io/team/filter-*-v*", 1, "ghcr.io/team/filter-auth-v2", true),
        ("ghcr.io/team/filter-*-v*", 1, "ghcr.io/team/filter-auth", false),
        ("**", 1, "anything/at/all", true),
        (
            "https://example.com/filters/*.wasm",
            3,
            "https://example.com/filters/a.wasm",
            true,
        ),
        (
            "https://EXAMPLE.com/filters/*.wasm",
            3,
            "https://example.com/filters/a.wasm",
            true,
        ),
        (
            "https://example.com/filters/*.wasm",
            3,
            "https://example.com/Filters/a.wasm",
            false,
        ),
        (
            "https://example.com/filters/*.wasm",
            3,
            "https://example.com/filters/sub/a.wasm",
            false,
        ),
        (
            "https://example.com/filters/*.wasm",
            3,
            "http://example.com/filters/a.wasm",
            false,
        ),
        (
            "https://example.com/filters/*.wasm",
            3,
            "https://example.com/filters/a.wasm.sig",
            false,
        ),
        ("https://example.com/**", 3, "https://example.com/a/b.wasm?v=1", true),
        ("https://**", 3, "https://example.com/a.wasm", true),
    ];
    for &(pattern, folded, target, want) in cases {
        assert_eq!(Glob::new(pattern, folded).matches(target), want, "{pattern} ~ {target}");
    }
}

#[test]
fn the_first_matching_rule_wins() {
    let world = World::new();
    let key = TestKey::generate(KeyKind::P256);
    let key_path = key.write_public(world.path());
    let policy = world.load(&format!(
        r#"
[[rule]]
name = "plugins"
images = ["registry.local:5000/plugins/*"]
mode = "warn"
keys = ["{0}"]

[[rule]]
name = "everything-else"
images = ["**"]
urls = ["https://example.com/filters/*.wasm"]
keys = ["{0}"]
bundle-url = "{{url}}.sigstore.json"
"#,
        key_path.display()
    ));
    let image = |registry, repository| policy.rule_for(&Target::Image { registry, repository }).map(Rule::name);
    assert_eq!(image("registry.local:5000", "plugins/a"), Some("plugins"));
    assert_eq!(image("REGISTRY.local:5000", "plugins/a"), Some("plugins"));
    assert_eq!(image("registry.local:5000", "plugins/a/b"), Some("everything-else"));
    assert_eq!(image("docker.io", "library/nginx"), Some("everything-else"));
    let url = |u| policy.rule_for(&Target::Url(u));
    assert_eq!(
        url("https://example.com/filters/a.wasm").map(Rule::name),
        Some("everything-else")
    );
    assert!(url("https://example.com/other/a.wasm").is_none(), "no rule: not judged");
    let rule = url("https://example.com/filters/a.wasm").unwrap();
    assert_eq!(
        rule.bundle_url("https://example.com/filters/a.wasm").as_deref(),
        Some("https://example.com/filters/a.wasm.sigstore.json")
    );
    assert_eq!(rule.mode(), Mode::Enforce);
    assert_eq!(policy.rules()[0].mode(), Mode::Warn);
    assert_eq!(policy.rules()[0].bundle_url("https://x/y"), None);
}

/// Writes `toml` as a policy and returns the error loading it.
fn load_error(world: &World, toml: &str) -> PolicyError {
    let path = world.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    match Policy::load(&path) {
        Ok(_) => panic!("loaded:\n{toml}"),
        Err(e) => e,
    }
}

#[test]
fn policy_errors_name_the_file_rule_field_and_line() {
    let world = World::new();
    let key = TestKey::generate(KeyKind::P256).write_public(world.path());
    let key = key.display();
    let ok = format!("[[rule]]\nname = \"a\"\nimages = [\"**\"]\nkeys = [\"{key}\"]\n\n");

    // (policy text, expected variant check, expected words in Display)
    let invalid = |toml: String, rule: usize, field: &str, line: usize| match load_error(&world, &toml) {
        PolicyError::Invalid {
            path,
            line: l,
            rule: r,
            field: f,
            ..
        } => {
            assert_eq!((r.index, f, l), (rule, field, Some(line)), "{toml}");
            assert!(path.ends_with("bad.toml"));
        }
        other => panic!("{other} for\n{toml}"),
    };
    invalid(
        format!("{ok}[[rule]]\nimages = [\"**\"]\nkeys = [\"{key}\"]\n"),
        2,
        "name",
        6,
    );
    invalid(
        format!("{ok}[[rule]]\nname = \"a\"\nimages = [\"**\"]\nkeys = [\"{key}\"]\n"),
        2,
        "name",
        6,
    );
    invalid(
        format!("{ok}[[rule]]\nname = \"b\"\nimages = [\"**\"]\nmode = \"strict\"\nkeys = [\"{key}\"]\n"),
        2,
        "mode",
        9,
    );
    invalid(format!("[[rule]]\nname = \"b\"\nkeys = [\"{key}\"]\n"), 1, "images", 1);
    invalid(
        "[[rule]]\nname = \"b\"\nimages = [\"**\"]\nmode = \"warn\"\n".into(),
        1,
        "keys",
        1,
    );
    invalid(
        "[[rule]]\nname = \"b\"\nimages = [\"x\"]\n[[rule.identity]]\nissuer = \"i\"\nsubject = \"s\"\n".into(),
        1,
        "trusted-root",
        1,
    );
    invalid(
        "[[rule]]\nname = \"b\"\nimages = [\"x\"]\ntrusted-root = \"trusted_root.json\"\n[[rule.identity]]\nissuer = \"i\"\nsubject = \"(unclosed\"\n"
            .into(),
        1,
        "identity.subject",
        7,
    );
    invalid(
        format!("[[rule]]\nname = \"b\"\nimages = [\"**\"]\nkeys = [\"{key}\"]\nbundle-url = \"{{url}}.sig\"\n"),
        1,
        "bundle-url",
        5,
    );
    invalid(
        format!("[[rule]]\nname = \"b\"\nurls = [\"example.com/*\"]\nkeys = [\"{key}\"]\n"),
        1,
        "urls",
        3,
    );
    invalid(
        format!("[[rule]]\nname = \"b\"\nimages = [\"oci://ghcr.io/x\"]\nkeys = [\"{key}\"]\n"),
        1,
        "images",
        3,
    );

    match load_error(
        &world,
        &format!("{ok}[[rule]]\nname = \"b\"\nimages = [\"**\"]\nkeyz = [\"{key}\"]\n"),
    ) {
        PolicyError::Parse { line, message, .. } => {
            assert_eq!(line, Some(9));
            assert!(message.contains("keyz"), "{message}");
        }
        other => panic!("{other}"),
    }
    match load_error(
        &world,
        "[[rule]]\nname = \"b\"\nimages = [\"**\"]\nkeys = [\"missing.pub\"]\n",
    ) {
        PolicyError::Key { key, line, rule, .. } => {
            assert!(key.ends_with("missing.pub"));
            assert_eq!((line, rule.index), (Some(4), 1));
        }
        other => panic!("{other}"),
    }
    std::fs::write(world.path().join("not-a-key.pub"), "hello").unwrap();
    assert!(matches!(
        load_error(
            &world,
            "[[rule]]\nname = \"b\"\nimages = [\"**\"]\nkeys = [\"not-a-key.pub\"]\n"
        ),
        PolicyError::Key { .. }
    ));
    std::fs::write(world.path().join("root.json"), "{}").unwrap();
    match load_error(
        &world,
        "[[rule]]\nname = \"b\"\nimages = [\"**\"]\ntrusted-root = \"root.json\"\nmode = \"off\"\n",
    ) {
        PolicyError::TrustedRoot { root, line, .. } => {
            assert!(root.ends_with("root.json"));
            assert_eq!(line, Some(4));
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        Policy::load(&world.path().join("absent.toml")),
        Err(PolicyError::Io { .. })
    ));

    let shown = load_error(
        &world,
        &format!("{ok}[[rule]]\nname = \"b\"\nimages = [\"**\"]\nmode = \"strict\"\nkeys = [\"{key}\"]\n"),
    )
    .to_string();
    assert!(
        shown.contains("bad.toml line 9: rule #2 \"b\": `mode`: \"strict\" is not a mode"),
        "{shown}"
    );
}

#[test]
fn the_fingerprint_follows_every_file_that_decides() {
    let world = World::new();
    let key = TestKey::generate(KeyKind::P256);
    let first = world.keyed(&[&key], true).fingerprint().to_string();
    assert_eq!(
        world.keyed(&[&key], true).fingerprint(),
        first,
        "same files, same fingerprint"
    );
    std::fs::write(
        world.path().join("trusted_root.json"),
        TestSigstore::new().trusted_root_json(),
    )
    .unwrap();
    let second = world.keyed(&[&key], true).fingerprint().to_string();
    assert_ne!(second, first, "another trusted root");
    let other = TestKey::generate(KeyKind::P256);
    std::fs::write(key.write_public(world.path()), other.public_pem()).unwrap();
    let path = world.path().join("policy.toml");
    assert_ne!(
        Policy::load(&path).unwrap().fingerprint(),
        second,
        "another key in the same file"
    );
}

#[test]
fn policies_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}

// ---------------------------------------------------------------- key signatures

/// A cosign simple signature (no Rekor data) by `key` over the payload for `digest`.
fn keyed_simple(key: &TestKey, digest: &Sha256) -> Evidence {
    let payload = testgen::simple_signing_payload("ghcr.io/acme/filter", &digest.prefixed());
    let signature = testgen::b64(&key.sign(&payload));
    Evidence {
        simple: vec![SimpleSignature {
            found_for: *digest,
            payload,
            signature,
            certificate: None,
            chain: None,
            rekor_bundle: None,
        }],
        bundles: vec![],
    }
}

#[test]
fn every_key_type_verifies_simple_signatures_and_bundles() {
    let world = World::new();
    let digest = manifest();
    for kind in [
        KeyKind::P256,
        KeyKind::P384,
        KeyKind::Ed25519,
        KeyKind::RsaPkcs1,
        KeyKind::RsaPss,
    ] {
        let key = TestKey::generate(kind);
        let policy = world.keyed(&[&key], false);
        let verified =
            judge_image(&policy, &digest, &keyed_simple(&key, &digest)).unwrap_or_else(|r| panic!("{kind:?}: {r}"));
        assert!(verified.by.starts_with("key SHA256:"), "{}", verified.by);
        assert!(verified.by.ends_with(".pub)"), "{}", verified.by);
        assert_eq!(verified.rule, "keyed");

        let dsse = world
            .sigstore
            .keyed_bundle(&key, &digest.to_string(), BundleKind::DsseNoLog);
        judge_image(&policy, &digest, &bundle(digest, dsse)).unwrap_or_else(|r| panic!("{kind:?} DSSE: {r}"));
        if kind != KeyKind::Ed25519 {
            let message = world
                .sigstore
                .keyed_bundle(&key, &digest.to_string(), BundleKind::MessageSignatureNoLog);
            judge_image(&policy, &digest, &bundle(digest, message)).unwrap_or_else(|r| panic!("{kind:?} message: {r}"));
        }
    }
}

#[test]
fn a_key_signature_is_checked_against_the_log_when_the_rule_has_a_trusted_root() {
    let world = World::new();
    let key = TestKey::generate(KeyKind::P256);
    let digest = manifest();
    let policy = world.keyed(&[&key], true);
    for kind in [
        BundleKind::MessageSignatureV03,
        BundleKind::DsseV03,
        BundleKind::V01WithSet,
        BundleKind::LegacyBlob,
    ] {
        let json = world.sigstore.keyed_bundle(&key, &digest.to_string(), kind);
        judge_image(&policy, &digest, &bundle(digest, json)).unwrap_or_else(|r| panic!("{kind:?}: {r}"));
        let tampered = Options {
            fault: Fault::Set,
            ..Options::default()
        };
        let json = world
            .sigstore
            .keyed_bundle_with(&key, &digest.to_string(), kind, &tampered);
        assert_eq!(
            reason(judge_image(&policy, &digest, &bundle(digest, json.clone()))),
            Reason::TransparencyLog,
            "{kind:?}"
        );
        // Without a trusted root the log is not consulted: the key alone decides.
        judge_image(&world.keyed(&[&key], false), &digest, &bundle(digest, json)).unwrap();
    }

    let payload = testgen::simple_signing_payload("ghcr.io/acme/filter", &digest.prefixed());
    let (signature, rekor) = world.sigstore.keyed_simple_signature(&key, &payload);
    let mut evidence = Evidence {
        simple: vec![SimpleSignature {
            found_for: digest,
            payload,
            signature,
            certificate: None,
            chain: None,
            rekor_bundle: Some(rekor.clone()),
        }],
        bundles: vec![],
    };
    judge_image(&policy, &digest, &evidence).unwrap();
    evidence.simple[0].rekor_bundle = Some(rekor.replacen("\"integratedTime\":", "\"integratedTime\":1", 1));
    assert_eq!(
        reason(judge_image(&policy, &digest, &evidence)),
        Reason::TransparencyLog
    );
}

// ---------------------------------------------------------------- keyless

#[test]
fn keyless_bundles_of_every_version_and_content_verify() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    for kind in [
        BundleKind::MessageSignatureV03,
        BundleKind::DsseV03,
        BundleKind::MessageSignatureV02,
        BundleKind::DsseV02,
        BundleKind::V01WithSet,
        BundleKind::DsseV01WithSet,
    ] {
        let json = world
            .sigstore
            .keyless_bundle(&digest.to_string(), SUBJECT, ISSUER, kind);
        let verified = judge_image(&policy, &digest, &bundle(digest, json)).unwrap_or_else(|r| panic!("{kind:?}: {r}"));
        assert_eq!(verified.by, format!("keyless issuer={ISSUER} subject={SUBJECT}"));
    }
}

#[test]
fn keyless_simple_signatures_are_verified_through_a_v01_bundle() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    let payload = testgen::simple_signing_payload("ghcr.io/acme/filter", &digest.prefixed());
    let (signature, certificate, chain, rekor) = world.sigstore.keyless_simple_signature(&payload, SUBJECT, ISSUER);
    let sig = SimpleSignature {
        found_for: digest,
        payload,
        signature,
        certificate: Some(certificate),
        chain: Some(chain),
        rekor_bundle: Some(rekor),
    };
    let evidence = Evidence {
        simple: vec![sig.clone()],
        bundles: vec![],
    };
    assert_eq!(
        judge_image(&policy, &digest, &evidence).unwrap().by,
        format!("keyless issuer={ISSUER} subject={SUBJECT}")
    );

    let no_set = Evidence {
        simple: vec![SimpleSignature {
            rekor_bundle: None,
            ..sig.clone()
        }],
        bundles: vec![],
    };
    assert_eq!(reason(judge_image(&policy, &digest, &no_set)), Reason::TransparencyLog);

    // The same valid signature, found under another image's .sig tag: its payload names the first image.
    let other = Sha256::of(b"another manifest");
    let moved = Evidence {
        simple: vec![SimpleSignature {
            found_for: other,
            ..sig
        }],
        bundles: vec![],
    };
    let refused = judge_image(&policy, &other, &moved).unwrap_err();
    assert_eq!(refused.reason, Reason::PayloadDigestMismatch, "{refused}");
}

#[test]
fn an_expired_certificate_counts_when_it_was_valid_at_the_logged_time() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    let three_hours_ago = Options {
        signed_secs_ago: 3 * 3600,
        ..Options::default()
    };
    let json = world.sigstore.keyless_bundle_with(
        &digest.to_string(),
        SUBJECT,
        ISSUER,
        BundleKind::MessageSignatureV03,
        &three_hours_ago,
    );
    judge_image(&policy, &digest, &bundle(digest, json)).unwrap();

    let late = Options {
        fault: Fault::LoggedAfterExpiry,
        signed_secs_ago: 3 * 3600,
        ..Options::default()
    };
    let json = world.sigstore.keyless_bundle_with(
        &digest.to_string(),
        SUBJECT,
        ISSUER,
        BundleKind::MessageSignatureV03,
        &late,
    );
    assert_eq!(
        reason(judge_image(&policy, &digest, &bundle(digest, json))),
        Reason::UntrustedCertificate
    );
}

#[test]
fn tampered_log_and_certificate_evidence_is_refused_for_what_it_is() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    let cases = [
        (
            BundleKind::MessageSignatureV03,
            Fault::InclusionProof,
            Reason::TransparencyLog,
        ),
        (BundleKind::DsseV03, Fault::InclusionProof, Reason::TransparencyLog),
        (
            BundleKind::MessageSignatureV03,
            Fault::Checkpoint,
            Reason::TransparencyLog,
        ),
        (BundleKind::MessageSignatureV03, Fault::Set, Reason::TransparencyLog),
        (BundleKind::V01WithSet, Fault::Set, Reason::TransparencyLog),
        (
            BundleKind::MessageSignatureV03,
            Fault::NoSct,
            Reason::UntrustedCertificate,
        ),
        (
            BundleKind::MessageSignatureV03,
            Fault::UnknownCtLog,
            Reason::UntrustedCertificate,
        ),
        (
            BundleKind::MessageSignatureV03,
            Fault::RogueCa,
            Reason::UntrustedCertificate,
        ),
        (
            BundleKind::MessageSignatureV03,
            Fault::Signature,
            Reason::InvalidSignature,
        ),
        (BundleKind::DsseV03, Fault::Signature, Reason::InvalidSignature),
    ];
    for (kind, fault, want) in cases {
        let options = Options {
            fault,
            ..Options::default()
        };
        let json = world
            .sigstore
            .keyless_bundle_with(&digest.to_string(), SUBJECT, ISSUER, kind, &options);
        let refused = judge_image(&policy, &digest, &bundle(digest, json)).unwrap_err();
        assert_eq!(refused.reason, want, "{kind:?} with {fault:?}: {refused}");
    }
}

#[test]
fn identities_are_regexes_on_the_san_and_exact_issuers() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    let by = |subject: &str, issuer: &str| {
        let json = world
            .sigstore
            .keyless_bundle(&digest.to_string(), subject, issuer, BundleKind::MessageSignatureV03);
        judge_image(&policy, &digest, &bundle(digest, json))
    };
    by(SUBJECT, ISSUER).unwrap();
    by(
        "https://github.com/acme/wasm/.github/workflows/release.yml@refs/tags/v9",
        ISSUER,
    )
    .unwrap();
    for (subject, issuer) in [
        (
            "https://github.com/evil/wasm/.github/workflows/release.yml@refs/tags/v1",
            ISSUER,
        ),
        // Anchored: a prefix or suffix around a match is not a match.
        (
            "https://evil.example/https://github.com/acme/wasm/.github/workflows/release.yml@refs/tags/v1",
            ISSUER,
        ),
        (SUBJECT, "https://token.actions.githubusercontent.com.evil"),
        ("dev@example.com", "https://accounts.google.com"),
    ] {
        let refused = by(subject, issuer).unwrap_err();
        assert_eq!(refused.reason, Reason::IdentityMismatch, "{subject} {issuer}");
        assert!(refused.detail.contains(subject), "{}", refused.detail);
    }
}

#[test]
fn legacy_blob_bundles_verify_keyless_and_keyed() {
    let world = World::new();
    let payload = b"\0asm\x01\0\0\0 a module";
    let subject = blob_subject(payload);
    let found_for = Sha256::of(payload);
    let digest_hex = found_for.to_string();

    let json = world
        .sigstore
        .keyless_bundle(&digest_hex, SUBJECT, ISSUER, BundleKind::LegacyBlob);
    let policy = world.keyless();
    rule(&policy)
        .judge(&subject, &bundle(found_for, json.clone()), SystemTime::now())
        .unwrap();
    let other = b"another module";
    let refused = rule(&policy)
        .judge(
            &blob_subject(other),
            &bundle(Sha256::of(other), json),
            SystemTime::now(),
        )
        .unwrap_err();
    assert_eq!(refused.reason, Reason::PayloadDigestMismatch, "{refused}");

    let key = TestKey::generate(KeyKind::P256);
    let json = world.sigstore.keyed_bundle(&key, &digest_hex, BundleKind::LegacyBlob);
    rule(&world.keyed(&[&key], true))
        .judge(&subject, &bundle(found_for, json), SystemTime::now())
        .unwrap();
}

#[test]
fn blobs_verify_by_sha256_or_sha512_subjects() {
    let world = World::new();
    let policy = world.keyless();
    let payload = b"\0asm\x01\0\0\0 an http module";
    let subject = blob_subject(payload);
    let found_for = Sha256::of(payload);
    let judge = |json| rule(&policy).judge(&subject, &bundle(found_for, json), SystemTime::now());

    judge(
        world
            .sigstore
            .keyless_bundle(&found_for.to_string(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03),
    )
    .unwrap();
    judge(
        world
            .sigstore
            .keyless_bundle(&found_for.to_string(), SUBJECT, ISSUER, BundleKind::DsseV03),
    )
    .unwrap();
    let sha512 = hex::encode(testgen::sha512(payload));
    judge(
        world
            .sigstore
            .keyless_bundle(&sha512, SUBJECT, ISSUER, BundleKind::DsseV03),
    )
    .unwrap();
    let wrong512 = hex::encode(testgen::sha512(b"something else"));
    assert_eq!(
        reason(judge(world.sigstore.keyless_bundle(
            &wrong512,
            SUBJECT,
            ISSUER,
            BundleKind::DsseV03
        ))),
        Reason::PayloadDigestMismatch
    );

    let key = TestKey::generate(KeyKind::Ed25519);
    let keyed = world.keyed(&[&key], false);
    let json = world.sigstore.keyed_bundle(&key, &sha512, BundleKind::DsseNoLog);
    rule(&keyed)
        .judge(&subject, &bundle(found_for, json), SystemTime::now())
        .unwrap();
}

// ---------------------------------------------------------------- every reason

#[test]
fn nothing_found_is_no_signature() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    let refused = judge_image(&policy, &digest, &Evidence::default()).unwrap_err();
    assert_eq!(refused.reason, Reason::NoSignature);
    assert!(refused.detail.contains(&digest.prefixed()), "{}", refused.detail);
    assert!(
        refused.detail.contains(ISSUER),
        "names what it accepts: {}",
        refused.detail
    );

    // A valid signature, but for another manifest: not evidence about this one.
    let other = Sha256::of(b"other");
    let json = world
        .sigstore
        .keyless_bundle(&other.to_string(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03);
    let refused = judge_image(&policy, &digest, &bundle(other, json)).unwrap_err();
    assert_eq!(refused.reason, Reason::NoSignature);
    assert!(
        refused.detail.contains("1 found for other digests"),
        "{}",
        refused.detail
    );

    // An attestation that is not a signature (an SBOM, say) does not count either.
    let sbom = Options {
        predicate_type: "https://spdx.dev/Document".into(),
        ..Options::default()
    };
    let json = world
        .sigstore
        .keyless_bundle_with(&digest.to_string(), SUBJECT, ISSUER, BundleKind::DsseV03, &sbom);
    let refused = judge_image(&policy, &digest, &bundle(digest, json)).unwrap_err();
    assert_eq!(refused.reason, Reason::NoSignature, "{refused}");
    assert!(
        refused.detail.contains("https://spdx.dev/Document"),
        "{}",
        refused.detail
    );
}

#[test]
fn a_valid_signature_by_an_unknown_key_is_untrusted_key_and_a_tampered_one_invalid() {
    let world = World::new();
    let trusted = TestKey::generate(KeyKind::P256);
    let stranger = TestKey::generate(KeyKind::P256);
    let policy = world.keyed(&[&trusted], true);
    let digest = manifest();

    // The log entry names the key that made it: valid under that key, which the rule does not trust.
    let json = world
        .sigstore
        .keyed_bundle(&stranger, &digest.to_string(), BundleKind::MessageSignatureV03);
    let refused = judge_image(&policy, &digest, &bundle(digest, json)).unwrap_err();
    assert_eq!(refused.reason, Reason::UntrustedKey, "{refused}");
    let payload = testgen::simple_signing_payload("ghcr.io/acme/filter", &digest.prefixed());
    let (signature, rekor) = world.sigstore.keyed_simple_signature(&stranger, &payload);
    let evidence = Evidence {
        simple: vec![SimpleSignature {
            found_for: digest,
            payload,
            signature,
            certificate: None,
            chain: None,
            rekor_bundle: Some(rekor),
        }],
        bundles: vec![],
    };
    assert_eq!(reason(judge_image(&policy, &digest, &evidence)), Reason::UntrustedKey);

    // A keyless signature where the rule wants keys.
    let json = world
        .sigstore
        .keyless_bundle(&digest.to_string(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03);
    let refused = judge_image(&policy, &digest, &bundle(digest, json)).unwrap_err();
    assert_eq!(refused.reason, Reason::UntrustedKey, "{refused}");
    assert!(refused.detail.contains(SUBJECT), "{}", refused.detail);

    // Tampered bytes under the trusted key.
    let mut evidence = keyed_simple(&trusted, &digest);
    let mut sig = testgen::b64(&trusted.sign(&evidence.simple[0].payload)).into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    evidence.simple[0].signature = String::from_utf8(sig).unwrap();
    let refused = judge_image(&policy, &digest, &evidence).unwrap_err();
    assert_eq!(refused.reason, Reason::InvalidSignature, "{refused}");
    let tampered = Options {
        fault: Fault::Signature,
        ..Options::default()
    };
    let json = world.sigstore.keyed_bundle_with(
        &trusted,
        &digest.to_string(),
        BundleKind::MessageSignatureNoLog,
        &tampered,
    );
    assert_eq!(
        reason(judge_image(&policy, &digest, &bundle(digest, json))),
        Reason::InvalidSignature
    );
}

#[test]
fn a_valid_signature_over_another_digest_is_a_payload_digest_mismatch() {
    let world = World::new();
    let key = TestKey::generate(KeyKind::P256);
    let policy = world.keyed(&[&key], false);
    let digest = manifest();
    let other = Sha256::of(b"other");

    // A simple-signing payload for `other`, found under `digest`'s .sig tag.
    let mut evidence = keyed_simple(&key, &other);
    evidence.simple[0].found_for = digest;
    let refused = judge_image(&policy, &digest, &evidence).unwrap_err();
    assert_eq!(refused.reason, Reason::PayloadDigestMismatch, "{refused}");
    assert!(refused.detail.contains(&other.prefixed()), "{}", refused.detail);

    for kind in [BundleKind::MessageSignatureNoLog, BundleKind::DsseNoLog] {
        let json = world.sigstore.keyed_bundle(&key, &other.to_string(), kind);
        assert_eq!(
            reason(judge_image(&policy, &digest, &bundle(digest, json))),
            Reason::PayloadDigestMismatch,
            "{kind:?}"
        );
    }
    let keyless = world.keyless();
    for kind in [BundleKind::MessageSignatureV03, BundleKind::DsseV03] {
        let json = world.sigstore.keyless_bundle(&other.to_string(), SUBJECT, ISSUER, kind);
        assert_eq!(
            reason(judge_image(&keyless, &digest, &bundle(digest, json))),
            Reason::PayloadDigestMismatch,
            "{kind:?}"
        );
    }
}

#[test]
fn unreadable_or_oversized_evidence_is_malformed() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    for json in [
        b"not json".to_vec(),
        b"{}".to_vec(),
        br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v9+json"}"#.to_vec(),
    ] {
        assert_eq!(
            reason(judge_image(&policy, &digest, &bundle(digest, json))),
            Reason::Malformed
        );
    }
    let mut huge = world
        .sigstore
        .keyless_bundle(&digest.to_string(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03);
    huge.truncate(huge.len() - 1);
    huge.extend(format!(",\"pad\":\"{}\"}}", "x".repeat(MAX_JSON_BYTES)).into_bytes());
    let refused = judge_image(&policy, &digest, &bundle(digest, huge)).unwrap_err();
    assert_eq!(refused.reason, Reason::Malformed);
    assert!(refused.detail.contains("more than"), "{}", refused.detail);
}

#[test]
fn the_most_specific_failure_is_reported_and_work_is_bounded() {
    let world = World::new();
    let policy = world.keyless();
    let digest = manifest();
    let stranger = world
        .sigstore
        .keyless_bundle(&digest.to_string(), "dev@example.com", ISSUER, BundleKind::DsseV03);
    let tampered = world.sigstore.keyless_bundle_with(
        &digest.to_string(),
        SUBJECT,
        ISSUER,
        BundleKind::MessageSignatureV03,
        &Options {
            fault: Fault::Signature,
            ..Options::default()
        },
    );
    let refused = judge_image(
        &policy,
        &digest,
        &bundles(digest, vec![b"junk".to_vec(), stranger, tampered]),
    )
    .unwrap_err();
    assert_eq!(refused.reason, Reason::IdentityMismatch, "{refused}");
    assert!(refused.detail.starts_with("3 signature(s) for"), "{}", refused.detail);
    assert!(refused.detail.contains("bundle #2"), "{}", refused.detail);

    // Only the first MAX_JUDGED are judged: a valid one after them is not reached.
    let valid = world
        .sigstore
        .keyless_bundle(&digest.to_string(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03);
    let mut many = vec![b"junk".to_vec(); MAX_JUDGED + 3];
    many.push(valid.clone());
    let refused = judge_image(&policy, &digest, &bundles(digest, many)).unwrap_err();
    assert!(refused.detail.contains("4 more not judged"), "{}", refused.detail);
    let mut few = vec![b"junk".to_vec(); 3];
    few.push(valid);
    judge_image(&policy, &digest, &bundles(digest, few)).unwrap();
}

#[test]
fn reasons_have_labels_and_refusals_read_as_a_sentence() {
    let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(
        labels,
        [
            "no_signature",
            "untrusted_key",
            "identity_mismatch",
            "payload_digest_mismatch",
            "invalid_signature",
            "untrusted_certificate",
            "transparency_log",
            "malformed"
        ]
    );
    let refused = Refused {
        rule: "team-a".into(),
        reason: Reason::UntrustedKey,
        detail: "signed by key SHA256:00".into(),
    };
    assert_eq!(
        refused.to_string(),
        "rule team-a refused it: signed by an untrusted key: signed by key SHA256:00"
    );
}

// ---------------------------------------------------------------- artifacts from elsewhere

/// tests/fixtures/sigstore: see its README for where each file came from.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sigstore")
        .join(name)
}

const SIGSTORE_JS_RELEASE: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";

/// A rule for npm tarballs against the production sigstore root: build provenance by `subject` counts.
fn npm_policy(world: &World, subject: &str, predicate_types: &str) -> Policy {
    world.load(&format!(
        "[[rule]]\nname = \"npm\"\nurls = [\"https://registry.npmjs.org/**\"]\ntrusted-root = '{}'\n{predicate_types}\n\
         [[rule.identity]]\nissuer = \"{ISSUER}\"\nsubject = '{subject}'\n",
        fixture("production_trusted_root.json").display()
    ))
}

const PROVENANCE: &str = "predicate-types = [\"https://slsa.dev/provenance/v1\"]";

/// (tarball, its npm provenance bundle) as fetched from the npm registry.
fn npm_artifact(version: &str) -> (Vec<u8>, Vec<u8>) {
    let tarball = std::fs::read(fixture(&format!("npm/sigstore-{version}.tgz"))).unwrap();
    let bundle = std::fs::read(fixture(&format!("npm/sigstore-{version}.tgz.provenance.sigstore.json"))).unwrap();
    (tarball, bundle)
}

#[test]
fn real_npm_provenance_verifies_offline_against_the_production_root() {
    let world = World::new();
    let policy = npm_policy(
        &world,
        "https://github\\.com/sigstore/sigstore-js/\\.github/workflows/release\\.yml@refs/heads/main",
        PROVENANCE,
    );
    let target = Target::Url("https://registry.npmjs.org/sigstore/-/sigstore-2.0.0.tgz");
    let rule = policy.rule_for(&target).expect("the npm rule");
    // v0.1 (2023) and v0.3 (2026): DSSE statements naming the tarball's sha512, as npm writes them.
    for version in ["2.0.0", "5.0.0"] {
        let (tarball, json) = npm_artifact(version);
        let evidence = bundle(Sha256::of(&tarball), json);
        let verified = rule
            .judge(&blob_subject(&tarball), &evidence, SystemTime::now())
            .unwrap_or_else(|r| panic!("{version}: {r}"));
        assert_eq!(
            verified.by,
            format!("keyless issuer={ISSUER} subject={SIGSTORE_JS_RELEASE}"),
            "{version}"
        );
    }
}

#[test]
fn real_npm_provenance_is_refused_for_another_identity_tarball_or_predicate() {
    let world = World::new();
    let (tarball, json) = npm_artifact("2.0.0");
    let judge = |policy: &Policy, tarball: &[u8], json: Vec<u8>| {
        rule(policy).judge(
            &blob_subject(tarball),
            &bundle(Sha256::of(tarball), json),
            SystemTime::now(),
        )
    };

    let other_repo = npm_policy(
        &world,
        "https://github\\.com/sigstore/sigstore-js/\\.github/workflows/release\\.yml@refs/tags/.*",
        PROVENANCE,
    );
    let refused = judge(&other_repo, &tarball, json.clone()).unwrap_err();
    assert_eq!(refused.reason, Reason::IdentityMismatch, "{refused}");
    assert!(refused.detail.contains(SIGSTORE_JS_RELEASE), "{}", refused.detail);

    let subject = "https://github\\.com/sigstore/sigstore-js/.+";
    let (other_tarball, _) = npm_artifact("5.0.0");
    let refused = judge(&npm_policy(&world, subject, PROVENANCE), &other_tarball, json.clone()).unwrap_err();
    assert_eq!(refused.reason, Reason::PayloadDigestMismatch, "{refused}");

    // Build provenance is not a signature unless the rule says so.
    let refused = judge(&npm_policy(&world, subject, ""), &tarball, json).unwrap_err();
    assert_eq!(refused.reason, Reason::NoSignature, "{refused}");
}

#[test]
fn key_bundles_made_by_sigstore_js_verify() {
    let world = World::new();
    let dir = fixture("sigstore-js");
    let module = std::fs::read(dir.join("module.wasm")).unwrap();
    let policy = world.load(&format!(
        "[[rule]]\nname = \"js\"\nurls = [\"https://**\"]\nkeys = ['{}']\n",
        dir.join("key.pub").display()
    ));
    for name in ["module.wasm.sigstore.json", "module.wasm.dsse.sigstore.json"] {
        let json = std::fs::read(dir.join(name)).unwrap();
        let verified = rule(&policy)
            .judge(
                &blob_subject(&module),
                &bundle(Sha256::of(&module), json.clone()),
                SystemTime::now(),
            )
            .unwrap_or_else(|r| panic!("{name}: {r}"));
        assert!(verified.by.contains("key.pub"), "{}", verified.by);

        let stranger = world.keyed(&[&TestKey::generate(KeyKind::P256)], false);
        let refused = rule(&stranger)
            .judge(
                &blob_subject(&module),
                &bundle(Sha256::of(&module), json),
                SystemTime::now(),
            )
            .unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidSignature, "{name}: {refused}");
    }
}
