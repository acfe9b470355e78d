//! Judging one piece of evidence under a rule: `Ok(by)` names the signer, `Err` says why it does not count.
//!
//! Long: every kind of evidence (cosign simple signing, sigstore bundles v0.1 to v0.3, DSSE, keyless certificate chains, Rekor SETs and inclusion proofs) judged under one rule type.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;
use sigstore_verify::types::bundle::VerificationMaterialContent;
use sigstore_verify::types::{
    Artifact, ArtifactDigest, Bundle, DerCertificate, DerPublicKey, HashAlgorithm, Sha256Hash, SignatureContent,
};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy};

use super::keys::{self, PublicKey, VerifyError};
use super::policy::{TrustRoot, TrustedKey};
use super::{Failure, FoundBundle, Reason, Rule, SimpleSignature, Subject, MAX_JSON_BYTES};
use crate::digest::Sha256;

/// `critical.type` of a cosign simple-signing payload.
const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const BUNDLE_V01: &str = "application/vnd.dev.sigstore.bundle+json;version=0.1";

fn malformed(message: impl Into<String>) -> Failure {
    Failure::new(Reason::Malformed, message)
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| malformed(format!("{what} is not base64")))
}

fn b64e(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn check_size(what: &str, len: usize) -> Result<(), Failure> {
    if len > MAX_JSON_BYTES {
        return Err(malformed(format!(
            "{what} is {len} bytes, more than the {MAX_JSON_BYTES} we read"
        )));
    }
    Ok(())
}

/// The digests a signature must name for it to be about this module.
struct Expected {
    sha256: [u8; 32],
    /// Blobs only: in-toto subjects may name the sha512 instead (npm does).
    sha512: Option<[u8; 64]>,
}

impl Expected {
    fn new(subject: &Subject<'_>, found_for: &Sha256) -> Expected {
        match subject {
            Subject::Image { .. } => Expected {
                sha256: *found_for.as_bytes(),
                sha512: None,
            },
            Subject::Blob { sha256, sha512 } => Expected {
                sha256: *sha256.as_bytes(),
                sha512: Some(*sha512),
            },
        }
    }

    fn sha256_artifact(&self) -> ArtifactDigest {
        ArtifactDigest::sha256(Sha256Hash::new(self.sha256))
    }

    fn describe(&self) -> String {
        format!("sha256:{}", hex::encode(self.sha256))
    }
}

/// A cosign simple-signing layer: key signatures are verified here; keyless ones (certificate and Rekor SET
/// annotations) become a v0.1 bundle for sigstore-verify.
pub(super) fn simple(rule: &Rule, _subject: &Subject<'_>, sig: &SimpleSignature) -> Result<String, Failure> {
    check_size("the payload", sig.payload.len())?;
    for (what, value) in [
        ("the signature annotation", Some(&sig.signature)),
        ("the certificate annotation", sig.certificate.as_ref()),
        ("the chain annotation", sig.chain.as_ref()),
        ("the Rekor bundle annotation", sig.rekor_bundle.as_ref()),
    ] {
        check_size(what, value.map_or(0, String::len))?;
    }
    let raw = b64(&sig.signature, "the signature annotation")?;
    let payload = &sig.payload;

    if let Some(key) = rule.keys.iter().find(|k| k.key.verify_message(payload, &raw).is_ok()) {
        check_simple_payload(payload, &sig.found_for)?;
        if let (Some(trust), Some(rekor)) = (&rule.trust, &sig.rekor_bundle) {
            // cosign hashes with SHA-384 for P-384 keys; the bundle's digest must say which hash was signed.
            let digest = match &key.key {
                PublicKey::P384(_) if key.key.verify_digest(&sha2::Sha384::digest(payload), &raw).is_ok() => {
                    ("SHA2_384", sha2::Sha384::digest(payload).to_vec())
                }
                _ => ("SHA2_256", sha2::Sha256::digest(payload).to_vec()),
            };
            let bundle = v01_bundle(rekor, &Material::Key, digest, &raw)?;
            check_log_with_key(trust, key, Artifact::from_blob(payload), &bundle)?;
        }
        return Ok(key.describe());
    }

    if let Some(certificate) = &sig.certificate {
        let mut certs = pem_certificates(certificate)?;
        certs.truncate(1);
        if let Some(chain) = &sig.chain {
            certs.extend(pem_certificates(chain)?);
        }
        if certs.is_empty() {
            return Err(malformed("the certificate annotation holds no certificate"));
        }
        let trust = keyless_trust(rule, &certs[0])?;
        let rekor = sig.rekor_bundle.as_ref().ok_or_else(|| {
            Failure::new(
                Reason::TransparencyLog,
                "keyless signature without a Rekor bundle annotation: no signing time to check its certificate at",
            )
        })?;
        let digest = ("SHA2_256", sha2::Sha256::digest(payload).to_vec());
        let bundle = v01_bundle(rekor, &Material::Certificates(certs), digest, &raw)?;
        let by = verify_keyless(rule, trust, Artifact::from_blob(payload), &bundle)?;
        check_simple_payload(payload, &sig.found_for)?;
        return Ok(by);
    }

    let logged = sig.rekor_bundle.as_deref().and_then(logged_key_of_rekor_bundle);
    Err(unknown_signer(rule, logged, |k| k.verify_message(payload, &raw)))
}

/// A cosign simple-signing payload must be an image signature for the manifest whose `.sig` tag held it.
fn check_simple_payload(payload: &[u8], found_for: &Sha256) -> Result<(), Failure> {
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| malformed(format!("the signed payload is not JSON: {e}")))?;
    let critical = &v["critical"];
    let kind = critical["type"].as_str();
    if !kind.is_some_and(|t| t.eq_ignore_ascii_case(SIMPLE_SIGNING_TYPE)) {
        return Err(malformed(format!(
            "the signed payload's type {kind:?} is not {SIMPLE_SIGNING_TYPE:?}"
        )));
    }
    let named = critical["image"]["docker-manifest-digest"]
        .as_str()
        .ok_or_else(|| malformed("the signed payload names no critical.image.docker-manifest-digest"))?;
    if named.parse::<Sha256>().ok().as_ref() != Some(found_for) {
        return Err(Failure::new(
            Reason::PayloadDigestMismatch,
            format!(
                "the signed payload names {:?}, but the signature was found for {}",
                named.chars().take(80).collect::<String>(),
                found_for.prefixed()
            ),
        ));
    }
    Ok(())
}

/// A sigstore bundle or a legacy cosign blob bundle.
pub(super) fn bundle(rule: &Rule, subject: &Subject<'_>, found: &FoundBundle) -> Result<String, Failure> {
    check_size("the bundle", found.json.len())?;
    let text = std::str::from_utf8(&found.json).map_err(|_| malformed("the bundle is not UTF-8"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(format!("the bundle is not JSON: {e}")))?;
    let expected = Expected::new(subject, &found.found_for);
    if value.get("mediaType").is_some_and(Value::is_string) {
        sigstore_bundle(rule, &expected, text)
    } else if value.get("base64Signature").is_some() {
        legacy_bundle(rule, &expected, value)
    } else {
        Err(malformed(
            "neither a sigstore bundle (no mediaType) nor a cosign blob bundle (no base64Signature)",
        ))
    }
}

fn sigstore_bundle(rule: &Rule, expected: &Expected, text: &str) -> Result<String, Failure> {
    let bundle = Bundle::from_json(text).map_err(|e| malformed(format!("not a sigstore bundle: {e}")))?;
    // The digest to verify against: a DSSE statement may name only the sha512 (npm provenance).
    let artifact = match &bundle.content {
        SignatureContent::DsseEnvelope(envelope) => {
            if envelope.payload_type != IN_TOTO {
                return Err(malformed(format!(
                    "DSSE payload type {:?} is not an in-toto statement",
                    envelope.payload_type
                )));
            }
            let statement: Value = serde_json::from_slice(envelope.payload.as_bytes())
                .map_err(|e| malformed(format!("the DSSE payload is not JSON: {e}")))?;
            let predicate = statement["predicateType"].as_str().unwrap_or_default();
            if !rule.predicate_types.iter().any(|t| t == predicate) {
                return Err(Failure::new(
                    Reason::NoSignature,
                    format!(
                        "an attestation of predicateType {predicate:?}, not a signature the rule accepts ({})",
                        rule.predicate_types.join(", ")
                    ),
                ));
            }
            let names_sha256 = subjects(&statement).any(|d| d.get("sha256").is_some());
            match expected.sha512 {
                Some(sha512) if !names_sha256 => ArtifactDigest::new(HashAlgorithm::Sha2512, sha512.to_vec())
                    .map_err(|e| malformed(e.to_string()))?,
                _ => expected.sha256_artifact(),
            }
        }
        SignatureContent::MessageSignature(message) => match (&message.message_digest, expected.sha512) {
            (Some(d), Some(sha512)) if d.algorithm == HashAlgorithm::Sha2512 => {
                ArtifactDigest::new(HashAlgorithm::Sha2512, sha512.to_vec()).map_err(|e| malformed(e.to_string()))?
            }
            _ => expected.sha256_artifact(),
        },
        #[allow(unreachable_patterns)] // the enum is non_exhaustive
        _ => {
            return Err(malformed(
                "the bundle's content is neither a message signature nor a DSSE envelope",
            ))
        }
    };

    if let VerificationMaterialContent::PublicKey(_) = &bundle.verification_material.content {
        return keyed_bundle(rule, expected, &bundle, artifact);
    }
    let leaf = bundle
        .signing_certificate()
        .map(|c| c.as_bytes().to_vec())
        .unwrap_or_default();
    let trust = keyless_trust(rule, &leaf)?;
    verify_keyless(rule, trust, Artifact::from_digest(artifact), &bundle)
}

/// The digest entries of an in-toto statement's subjects.
fn subjects(statement: &Value) -> impl Iterator<Item = &Value> {
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["digest"])
}

/// A bundle signed with a key (`verificationMaterial.publicKey`): the signature is checked here with the rule's
/// keys (sigstore-verify wants log data we may not have); the log, when there is one, by sigstore-verify.
fn keyed_bundle(
    rule: &Rule,
    expected: &Expected,
    bundle: &Bundle,
    artifact: ArtifactDigest,
) -> Result<String, Failure> {
    if rule.keys.is_empty() {
        return Err(Failure::new(
            Reason::UntrustedKey,
            "signed with a key (the bundle has no certificate), and the rule accepts only keyless identities",
        ));
    }
    let (check, binding): (Check<'_>, Result<(), Failure>) = match &bundle.content {
        SignatureContent::MessageSignature(message) => {
            let digest = match &message.message_digest {
                Some(d) => d.digest.as_bytes().to_vec(),
                None => artifact.as_bytes().to_vec(),
            };
            let binding = if digest == artifact.as_bytes() {
                Ok(())
            } else {
                Err(Failure::new(
                    Reason::PayloadDigestMismatch,
                    format!(
                        "the bundle signs digest {}, not {}",
                        hex::encode(&digest),
                        expected.describe()
                    ),
                ))
            };
            let sig = message.signature.as_bytes();
            (Box::new(move |k: &PublicKey| k.verify_digest(&digest, sig)), binding)
        }
        SignatureContent::DsseEnvelope(envelope) => {
            let pae = sigstore_verify::types::pae(&envelope.payload_type, envelope.payload.as_bytes());
            let sig = envelope.signature.sig.as_bytes();
            let statement: Value = serde_json::from_slice(envelope.payload.as_bytes()).unwrap_or_default();
            let sha256 = hex::encode(expected.sha256);
            let sha512 = expected.sha512.map(hex::encode);
            let named = subjects(&statement).any(|d| {
                d["sha256"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(&sha256))
                    || sha512
                        .as_ref()
                        .is_some_and(|s| d["sha512"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(s)))
            });
            let binding = if named {
                Ok(())
            } else {
                Err(Failure::new(
                    Reason::PayloadDigestMismatch,
                    format!("the signed statement's subjects do not name {}", expected.describe()),
                ))
            };
            (Box::new(move |k: &PublicKey| k.verify_message(&pae, sig)), binding)
        }
        #[allow(unreachable_patterns)] // the enum is non_exhaustive
        _ => {
            return Err(malformed(
                "the bundle's content is neither a message signature nor a DSSE envelope",
            ))
        }
    };

    let mut needs_message = None;
    let mut found = None;
    for key in &rule.keys {
        match check(&key.key) {
            Ok(()) => {
                found = Some(key);
                break;
            }
            Err(VerifyError::NeedsMessage) => needs_message = Some(key),
            Err(VerifyError::Invalid) => {}
        }
    }
    let Some(key) = found else {
        if let Some(key) = needs_message {
            if rule.keys.len() == 1 {
                return Err(malformed(format!(
                    "{} is an {} key, which signs whole messages: a message signature over a digest cannot be checked with it",
                    key.describe(),
                    key.key.kind()
                )));
            }
        }
        let logged = bundle
            .verification_material
            .tlog_entries
            .iter()
            .find_map(|e| logged_key_of_body(e.canonicalized_body.as_bytes()));
        return Err(unknown_signer(rule, logged, |k| check(k)));
    };
    binding?;
    if let Some(trust) = &rule.trust {
        if !bundle.verification_material.tlog_entries.is_empty() {
            check_log_with_key(trust, key, Artifact::from_digest(artifact), bundle)?;
        }
    }
    Ok(key.describe())
}

/// Verifies a bundle's signature with one key.
type Check<'a> = Box<dyn Fn(&PublicKey) -> Result<(), VerifyError> + 'a>;

/// `cosign sign-blob --bundle` output from before the sigstore bundle format.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyBundle {
    base64_signature: String,
    cert: Option<String>,
    rekor_bundle: Option<Value>,
}

fn legacy_bundle(rule: &Rule, expected: &Expected, value: Value) -> Result<String, Failure> {
    let legacy: LegacyBundle =
        serde_json::from_value(value).map_err(|e| malformed(format!("not a cosign blob bundle: {e}")))?;
    let sig = b64(&legacy.base64_signature, "base64Signature")?;
    let rekor = legacy.rekor_bundle.as_ref().map(Value::to_string);
    // The blob's digest is not in this format; its log entry says what was signed, which tells a signature for
    // another blob from a tampered one.
    let signed = rekor.as_deref().and_then(logged_sha256).unwrap_or(expected.sha256);
    let mismatch = || {
        Failure::new(
            Reason::PayloadDigestMismatch,
            format!(
                "the signature is for sha256:{}, not {}",
                hex::encode(signed),
                expected.describe()
            ),
        )
    };
    let artifact = || Artifact::from_digest(expected.sha256_artifact());
    match &legacy.cert {
        None => {
            let Some(key) = rule.keys.iter().find(|k| k.key.verify_digest(&signed, &sig).is_ok()) else {
                let logged = rekor.as_deref().and_then(logged_key_of_rekor_bundle);
                return Err(unknown_signer(rule, logged, |k| k.verify_digest(&signed, &sig)));
            };
            if signed != expected.sha256 {
                return Err(mismatch());
            }
            if let (Some(trust), Some(rekor)) = (&rule.trust, &rekor) {
                let bundle = v01_bundle(rekor, &Material::Key, ("SHA2_256", signed.to_vec()), &sig)?;
                check_log_with_key(trust, key, artifact(), &bundle)?;
            }
            Ok(key.describe())
        }
        Some(cert) => {
            // cosign writes the PEM base64-encoded again; accept it plain too.
            let pem = if cert.trim_start().starts_with("-----BEGIN") {
                cert.clone()
            } else {
                String::from_utf8(b64(cert, "cert")?).map_err(|_| malformed("cert is not PEM"))?
            };
            let certs = pem_certificates(&pem)?;
            let leaf = certs.first().ok_or_else(|| malformed("cert holds no certificate"))?;
            let trust = keyless_trust(rule, leaf)?;
            let rekor = rekor.ok_or_else(|| {
                Failure::new(
                    Reason::TransparencyLog,
                    "keyless blob bundle without a rekorBundle: no signing time",
                )
            })?;
            let bundle = v01_bundle(
                &rekor,
                &Material::Certificates(certs),
                ("SHA2_256", signed.to_vec()),
                &sig,
            )?;
            verify_keyless(rule, trust, artifact(), &bundle)
        }
    }
}

/// What signed a converted bundle: a key (given by the policy) or a certificate chain (leaf first).
enum Material {
    Key,
    Certificates(Vec<Vec<u8>>),
}

/// cosign's Rekor bundle (`dev.sigstore.cosign/bundle`, `rekorBundle`): a SET over the entry.
#[derive(Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// A sigstore v0.1 bundle (message signature, SET only) from cosign's older forms, so that sigstore-verify
/// checks the certificate, the SET and the log entry's agreement with the signature exactly as for bundles.
/// `digest`: the algorithm name and digest of what was signed.
fn v01_bundle(rekor: &str, material: &Material, digest: (&str, Vec<u8>), sig: &[u8]) -> Result<Bundle, Failure> {
    let rekor: RekorBundle =
        serde_json::from_str(rekor).map_err(|e| malformed(format!("the Rekor bundle is not cosign's: {e}")))?;
    let body = b64(&rekor.payload.body, "the Rekor entry body")?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| malformed(format!("the Rekor entry body is not JSON: {e}")))?;
    let (Some(kind), Some(version)) = (body["kind"].as_str(), body["apiVersion"].as_str()) else {
        return Err(malformed("the Rekor entry body has no kind and apiVersion"));
    };
    let log_id = hex::decode(&rekor.payload.log_id).map_err(|_| malformed("the Rekor bundle's logID is not hex"))?;
    let mut material_json = json!({
        "tlogEntries": [{
            "logIndex": rekor.payload.log_index.to_string(),
            "logId": {"keyId": b64e(&log_id)},
            "kindVersion": {"kind": kind, "version": version},
            "integratedTime": rekor.payload.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": rekor.set},
            "canonicalizedBody": rekor.payload.body,
        }]
    });
    match material {
        Material::Key => material_json["publicKey"] = json!({"hint": ""}),
        Material::Certificates(certs) => {
            material_json["x509CertificateChain"] =
                json!({"certificates": certs.iter().map(|c| json!({"rawBytes": b64e(c)})).collect::<Vec<_>>()})
        }
    }
    let bundle = json!({
        "mediaType": BUNDLE_V01,
        "verificationMaterial": material_json,
        "messageSignature": {"messageDigest": {"algorithm": digest.0, "digest": b64e(&digest.1)}, "signature": b64e(sig)},
    });
    Bundle::from_json(&bundle.to_string()).map_err(|e| malformed(format!("cannot convert to a sigstore bundle: {e}")))
}

/// Every certificate in a PEM text, as DER.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    for block in pem.split_inclusive("-----END CERTIFICATE-----") {
        let block = block.trim();
        if block.is_empty() {
            continue;
        }
        let der = DerCertificate::from_pem(block).map_err(|e| malformed(format!("not a PEM certificate: {e}")))?;
        out.push(der.as_bytes().to_vec());
    }
    Ok(out)
}

/// The trusted root for a keyless signature, or why the rule does not take keyless signatures.
fn keyless_trust<'r>(rule: &'r Rule, leaf: &[u8]) -> Result<&'r TrustRoot, Failure> {
    match (&rule.trust, rule.identities.is_empty()) {
        (Some(trust), false) => Ok(trust),
        _ => {
            // Unverified: only to say who claims to have signed.
            let claim = sigstore_verify::crypto::parse_certificate_info(&DerCertificate::new(leaf.to_vec()))
                .map(|info| {
                    format!(
                        " (its certificate names subject={} issuer={})",
                        info.identity.as_ref().map_or("none", |i| i.as_str()),
                        info.issuer.as_deref().unwrap_or("none")
                    )
                })
                .unwrap_or_default();
            Err(Failure::new(
                Reason::UntrustedKey,
                format!("signed keylessly{claim}, and the rule accepts only keys"),
            ))
        }
    }
}

/// sigstore-verify with any identity, then the rule's identities on what it verified: its identity matching is
/// exact, ours is a regex.
fn verify_keyless(rule: &Rule, trust: &TrustRoot, artifact: Artifact<'_>, bundle: &Bundle) -> Result<String, Failure> {
    let mut policy = VerificationPolicy::any_identity();
    if !trust.has_ct_logs {
        policy = policy.skip_sct();
    }
    let result = trust
        .verifier
        .verify(artifact, bundle, &policy)
        .map_err(|e| crate_failure(&e))?;
    let subject = result.identity().map(|i| i.as_str().to_string());
    let issuer = result.issuer().map(str::to_string);
    if let (Some(subject), Some(issuer)) = (&subject, &issuer) {
        if rule
            .identities
            .iter()
            .any(|id| &id.issuer == issuer && id.subject.is_match(subject))
        {
            return Ok(format!("keyless issuer={issuer} subject={subject}"));
        }
    }
    Err(Failure::new(
        Reason::IdentityMismatch,
        format!(
            "a valid keyless signature by issuer={} subject={}, which no identity of the rule matches",
            issuer.as_deref().unwrap_or("none"),
            subject.as_deref().unwrap_or("none")
        ),
    ))
}

/// The Rekor entry of a signature that `key` already verified: SET, inclusion proof and checkpoint where
/// present, and the entry's agreement with the signature, key and digest.
fn check_log_with_key(
    trust: &TrustRoot,
    key: &TrustedKey,
    artifact: Artifact<'_>,
    bundle: &Bundle,
) -> Result<(), Failure> {
    let policy = PublicKeyVerificationPolicy::new(DerPublicKey::new(key.spki_der.clone()));
    trust
        .verifier
        .verify(artifact, bundle, &policy)
        .map(|_| ())
        .map_err(|e| {
            let failure = crate_failure(&e);
            Failure::new(
                failure.reason,
                format!("{} verified it, but: {}", key.describe(), failure.message),
            )
        })
}

/// Nothing the rule trusts verified the signature: if its log entry names the key that made it and that key
/// verifies it, the signature is valid but untrusted; otherwise it is invalid.
fn unknown_signer(
    rule: &Rule,
    logged: Option<(PublicKey, Vec<u8>)>,
    check: impl Fn(&PublicKey) -> Result<(), VerifyError>,
) -> Failure {
    if let Some((key, der)) = logged {
        if check(&key).is_ok() {
            return Failure::new(
                Reason::UntrustedKey,
                format!(
                    "signed by key {} (named by its transparency-log entry), which is not a key of the rule",
                    keys::fingerprint(&der)
                ),
            );
        }
    }
    if rule.keys.is_empty() {
        return Failure::new(
            Reason::UntrustedKey,
            "signed with a key (no certificate), and the rule accepts only keyless identities",
        );
    }
    Failure::new(
        Reason::InvalidSignature,
        format!(
            "the signature verifies under none of the rule's {} key(s): it was altered, or made with another key",
            rule.keys.len()
        ),
    )
}

/// The sha256 a cosign Rekor bundle's hashedrekord entry says was signed.
fn logged_sha256(json: &str) -> Option<[u8; 32]> {
    let rekor: RekorBundle = serde_json::from_str(json).ok()?;
    let body: Value = serde_json::from_slice(&b64(&rekor.payload.body, "").ok()?).ok()?;
    if body["spec"]["data"]["hash"]["algorithm"].as_str()? != "sha256" {
        return None;
    }
    hex::decode(body["spec"]["data"]["hash"]["value"].as_str()?)
        .ok()?
        .try_into()
        .ok()
}

fn logged_key_of_rekor_bundle(json: &str) -> Option<(PublicKey, Vec<u8>)> {
    let rekor: RekorBundle = serde_json::from_str(json).ok()?;
    logged_key_of_body(&b64(&rekor.payload.body, "").ok()?)
}

/// The public key a Rekor v1 entry body names (hashedrekord or dsse), when it is a key and not a certificate.
fn logged_key_of_body(body: &[u8]) -> Option<(PublicKey, Vec<u8>)> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let pem_b64 = match body["kind"].as_str()? {
        "hashedrekord" => body["spec"]["signature"]["publicKey"]["content"].as_str()?,
        "dsse" => body["spec"]["signatures"][0]["verifier"].as_str()?,
        _ => return None,
    };
    let pem = String::from_utf8(b64(pem_b64, "").ok()?).ok()?;
    PublicKey::from_pem(&pem).ok()
}

/// How a sigstore-verify error counts.
fn crate_failure(e: &sigstore_verify::Error) -> Failure {
    use sigstore_verify::bundle::Error as B;
    use sigstore_verify::{CertificateError, Error as E};
    let reason = match e {
        E::IdentityMismatch { .. } | E::IssuerMismatch { .. } => Reason::IdentityMismatch,
        E::SignatureInvalid(_) => Reason::InvalidSignature,
        E::ArtifactMismatch(_) => Reason::PayloadDigestMismatch,
        E::Certificate(CertificateError::Malformed(_)) => Reason::Malformed,
        E::Certificate(_) => Reason::UntrustedCertificate,
        E::TransparencyLog(_) | E::Timestamp(_) => Reason::TransparencyLog,
        E::Bundle(
            B::MissingInclusionPromise(_)
            | B::MissingInclusionProof(_)
            | B::MissingSigningTimeEvidence
            | B::MissingCheckpoint
            | B::CheckpointRootMismatch
            | B::LogIndexOutOfRange { .. },
        ) => Reason::TransparencyLog,
        E::Crypto(sigstore_verify::crypto::Error::Verification(_)) => Reason::InvalidSignature,
        E::InvalidTrustRoot(_) | E::TrustRoot(_) | E::TrustedCertificate(_) => Reason::UntrustedCertificate,
        _ => Reason::Malformed,
    };
    Failure::new(reason, e.to_string())
}
