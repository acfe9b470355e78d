//! The signature module's public API as the fetchers and the cache use it, with the shared test sigstore
//! (tests/support/sigstore.rs): a policy file on disk, evidence as found in a registry or next to a URL.

use crate::support;

use std::time::SystemTime;

use support::sigstore::{simple_signing_payload, BundleKind, KeyKind, TestKey, TestSigstore};
use wasmcache::digest::Sha256;
use wasmcache::signature::{Evidence, FoundBundle, Mode, Policy, Reason, SimpleSignature, Subject, Target};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/acme/filters/.github/workflows/release.yml@refs/tags/v1.0.0";

/// A key rule for images and a keyless rule for URLs, next to their key and trusted root.
fn policy(dir: &std::path::Path, key: &TestKey, sigstore: &TestSigstore) -> Policy {
    let key_path = key.write_public(dir);
    std::fs::write(dir.join("trusted_root.json"), sigstore.trusted_root_json()).unwrap();
    let text = format!(
        r#"
[[rule]]
name = "images"
images = ["registry.local:5000/plugins/**"]
keys = ["{}"]
trusted-root = "trusted_root.json"

[[rule]]
name = "downloads"
urls = ["https://example.com/filters/*.wasm"]
mode = "warn"
bundle-url = "{{url}}.sigstore.json"
trusted-root = "trusted_root.json"
[[rule.identity]]
issuer = "{ISSUER}"
subject = "https://github.com/acme/filters/.github/workflows/release.yml@refs/tags/v.*"
"#,
        key_path.display()
    );
    std::fs::write(dir.join("policy.toml"), text).unwrap();
    Policy::load(&dir.join("policy.toml")).unwrap()
}

#[test]
fn an_image_signed_with_cosign_and_a_key_passes_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (key, sigstore) = (TestKey::generate(KeyKind::P256), TestSigstore::new());
    let policy = policy(dir.path(), &key, &sigstore);
    let rule = policy
        .rule_for(&Target::Image {
            registry: "registry.local:5000",
            repository: "plugins/auth",
        })
        .unwrap();
    assert_eq!((rule.name(), rule.mode()), ("images", Mode::Enforce));

    let digest = Sha256::of(b"manifest");
    let payload = simple_signing_payload("registry.local:5000/plugins/auth", &digest.to_string());
    let (signature, rekor_bundle) = sigstore.keyed_simple_signature(&key, &payload);
    let evidence = Evidence {
        simple: vec![SimpleSignature {
            found_for: digest,
            payload,
            signature,
            certificate: None,
            chain: None,
            rekor_bundle: Some(rekor_bundle),
        }],
        bundles: vec![FoundBundle {
            found_for: digest,
            json: sigstore.keyed_bundle(&key, &digest.to_string(), BundleKind::DsseV03),
        }],
    };
    let digests = [digest];
    let verified = rule
        .judge(&Subject::Image { digests: &digests }, &evidence, SystemTime::now())
        .unwrap();
    assert!(verified.by.starts_with("key SHA256:"), "{}", verified.by);

    let unsigned = Sha256::of(b"another manifest");
    let refused = rule
        .judge(&Subject::Image { digests: &[unsigned] }, &evidence, SystemTime::now())
        .unwrap_err();
    assert_eq!(refused.reason, Reason::NoSignature);
    assert!(
        refused
            .to_string()
            .starts_with("rule images refused it: no signature: "),
        "{refused}"
    );
}

#[test]
fn a_download_with_a_keyless_bundle_passes_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (key, sigstore) = (TestKey::generate(KeyKind::P256), TestSigstore::new());
    let policy = policy(dir.path(), &key, &sigstore);
    let url = "https://example.com/filters/auth.wasm";
    let rule = policy.rule_for(&Target::Url(url)).unwrap();
    assert_eq!(
        rule.bundle_url(url).as_deref(),
        Some("https://example.com/filters/auth.wasm.sigstore.json")
    );

    let module = b"\0asm\x01\0\0\0";
    let sha256 = Sha256::of(module);
    let sha512: [u8; 64] = support::sigstore::sha512(module);
    let json = sigstore.keyless_bundle(&sha256.to_string(), SUBJECT, ISSUER, BundleKind::MessageSignatureV03);
    let evidence = Evidence {
        simple: vec![],
        bundles: vec![FoundBundle {
            found_for: sha256,
            json,
        }],
    };
    let verified = rule
        .judge(&Subject::Blob { sha256, sha512 }, &evidence, SystemTime::now())
        .unwrap();
    assert_eq!(verified.by, format!("keyless issuer={ISSUER} subject={SUBJECT}"));
}
