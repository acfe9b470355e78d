//! Sigstore test fixtures made on the spot: signing keys of every kind cosign uses, and a test sigstore
//! (a Fulcio-like CA whose leaves carry the Fulcio extensions and an embedded SCT, a CT log, and a Rekor v1-like
//! log with SETs, inclusion proofs and signed checkpoints) that writes a `trusted_root.json` and signs bundles
//! (v0.1 to v0.3, message signature or DSSE), cosign simple signatures and legacy blob bundles.
//!
//! Shared by the integration tests (`mod support;`) and by `src/signature/tests.rs`, which includes this file
//! with `#[path]`: so it names nothing from either crate, only dev-dependencies.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use der::asn1::{BitString, Ia5String, OctetString, UtcTime, Utf8StringRef};
use der::{Decode as _, Encode as _};
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::ecdsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use rand_core::{OsRng, RngCore as _};
use serde_json::{json, Value};
use sha2::Digest as _;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// The in-toto predicate of a cosign signature.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

pub fn sha512(bytes: &[u8]) -> [u8; 64] {
    sha2::Sha512::digest(bytes).into()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, LineEnding::LF, der).expect("PEM encoding")
}

/// The key types a signer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    /// Signs whole messages with SHA-384, as cosign does for P-384 keys.
    P384,
    Ed25519,
    /// RSA-2048, PKCS#1 v1.5 padding, SHA-256.
    RsaPkcs1,
    /// RSA-2048, PSS padding, SHA-256.
    RsaPss,
}

enum Signer {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// A signing key and its public half.
pub struct TestKey {
    kind: KeyKind,
    signer: Signer,
}

impl TestKey {
    pub fn generate(kind: KeyKind) -> TestKey {
        let signer = match kind {
            KeyKind::P256 => Signer::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            KeyKind::P384 => Signer::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
            KeyKind::Ed25519 => Signer::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            KeyKind::RsaPkcs1 | KeyKind::RsaPss => Signer::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key generation"),
            )),
        };
        TestKey { kind, signer }
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Vec<u8> {
        let doc = match &self.signer {
            Signer::P256(k) => k.verifying_key().to_public_key_der(),
            Signer::P384(k) => k.verifying_key().to_public_key_der(),
            Signer::Ed25519(k) => k.verifying_key().to_public_key_der(),
            Signer::Rsa(k) => k.to_public_key().to_public_key_der(),
        };
        doc.expect("SPKI encoding").into_vec()
    }

    /// `-----BEGIN PUBLIC KEY-----`, as in cosign.pub.
    pub fn public_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    /// Signs the whole message (ECDSA DER; P-256 and RSA hash with SHA-256, P-384 with SHA-384).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::P256(k) => {
                let sig: p256::ecdsa::DerSignature = k.sign(message);
                sig.to_vec()
            }
            Signer::P384(k) => {
                let sig: p384::ecdsa::DerSignature = k.sign(message);
                sig.to_vec()
            }
            Signer::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
            Signer::Rsa(k) if self.kind == KeyKind::RsaPss => rsa::pss::SigningKey::<sha2::Sha256>::new((**k).clone())
                .sign_with_rng(&mut OsRng, message)
                .to_vec(),
            Signer::Rsa(k) => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone())
                .sign(message)
                .to_vec(),
        }
    }

    /// Signs a message known by its SHA-256 (what a sigstore message signature over a digest is). Ed25519
    /// cannot: it panics.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Vec<u8> {
        match &self.signer {
            Signer::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).expect("prehash signature");
                sig.to_der().to_vec()
            }
            Signer::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(digest).expect("prehash signature");
                sig.to_der().to_vec()
            }
            Signer::Ed25519(_) => panic!("Ed25519 signs whole messages, not digests"),
            Signer::Rsa(k) if self.kind == KeyKind::RsaPss => k
                .sign_with_rng(&mut OsRng, rsa::Pss::new::<sha2::Sha256>(), digest)
                .expect("RSA-PSS signature"),
            Signer::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
                .expect("RSA signature"),
        }
    }

    /// Writes the public key to a new file in `dir` and returns its path.
    pub fn write_public(&self, dir: &Path) -> PathBuf {
        let name = format!("{:?}-{}.pub", self.kind, &hex::encode(sha256(&self.spki_der()))[..12]).to_lowercase();
        let path = dir.join(name);
        std::fs::write(&path, self.public_pem()).expect("write public key");
        path
    }
}

/// The simple-signing payload cosign signs for an image (the layer of a `sha256-<hex>.sig` manifest).
/// `manifest_digest` with or without `sha256:`.
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    let digest = if manifest_digest.starts_with("sha256:") {
        manifest_digest.to_string()
    } else {
        format!("sha256:{manifest_digest}")
    };
    json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

/// An in-toto statement about one subject: `digest_hex` of 64 hex digits is a sha256, of 128 a sha512.
pub fn in_toto_statement(digest_hex: &str, predicate_type: &str) -> Vec<u8> {
    let algorithm = if digest_hex.len() == 128 { "sha512" } else { "sha256" };
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "module.wasm", "digest": {algorithm: digest_hex}}],
        "predicateType": predicate_type,
        "predicate": {}
    })
    .to_string()
    .into_bytes()
}

/// DSSE pre-authentication encoding: what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// What to make: the bundle format and its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleKind {
    /// v0.3 (`certificate` or `publicKey`), message signature over the digest, inclusion proof and SET.
    MessageSignatureV03,
    /// v0.3, DSSE in-toto statement naming the digest, inclusion proof and SET.
    DsseV03,
    /// v0.2 (`x509CertificateChain`), message signature, inclusion proof and SET.
    MessageSignatureV02,
    DsseV02,
    /// v0.1, message signature, SET only (no inclusion proof).
    V01WithSet,
    DsseV01WithSet,
    /// v0.3 without any transparency-log entry (key signatures only: keyless ones need a log time).
    MessageSignatureNoLog,
    DsseNoLog,
    /// Legacy `cosign sign-blob --bundle` JSON: base64Signature, cert (keyless) and rekorBundle.
    LegacyBlob,
}

impl BundleKind {
    fn is_dsse(self) -> bool {
        matches!(
            self,
            BundleKind::DsseV03 | BundleKind::DsseV02 | BundleKind::DsseV01WithSet | BundleKind::DsseNoLog
        )
    }

    fn media_type(self) -> &'static str {
        match self {
            BundleKind::MessageSignatureV03
            | BundleKind::DsseV03
            | BundleKind::MessageSignatureNoLog
            | BundleKind::DsseNoLog => "application/vnd.dev.sigstore.bundle.v0.3+json",
            BundleKind::MessageSignatureV02 | BundleKind::DsseV02 => {
                "application/vnd.dev.sigstore.bundle+json;version=0.2"
            }
            BundleKind::V01WithSet | BundleKind::DsseV01WithSet | BundleKind::LegacyBlob => {
                "application/vnd.dev.sigstore.bundle+json;version=0.1"
            }
        }
    }

    fn has_log(self) -> bool {
        !matches!(self, BundleKind::MessageSignatureNoLog | BundleKind::DsseNoLog)
    }

    fn has_proof(self) -> bool {
        matches!(
            self,
            BundleKind::MessageSignatureV03
                | BundleKind::DsseV03
                | BundleKind::MessageSignatureV02
                | BundleKind::DsseV02
        )
    }
}

/// Something wrong to build into a bundle, for the refusal tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// One sibling hash of the inclusion proof flipped.
    InclusionProof,
    /// The SET signs something else.
    Set,
    /// The checkpoint's tree size altered after signing.
    Checkpoint,
    /// The signature's last byte flipped (in the bundle and its log entry alike).
    Signature,
    /// The SCT is from a CT log the trusted root does not list.
    UnknownCtLog,
    /// The certificate has no SCT.
    NoSct,
    /// The certificate is from another CA with the same name.
    RogueCa,
    /// Logged an hour after the certificate expired.
    LoggedAfterExpiry,
}

/// How to make a keyless bundle beyond its kind.
#[derive(Clone, Debug)]
pub struct Options {
    pub fault: Fault,
    /// When it was signed and logged; the 10-minute certificate starts 30 s before.
    pub signed_secs_ago: u64,
    /// The DSSE statement's predicateType.
    pub predicate_type: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fault: Fault::None,
            signed_secs_ago: 120,
            predicate_type: COSIGN_SIGN_PREDICATE.to_string(),
        }
    }
}

/// A test Fulcio CA, CT log and Rekor log, and the trusted root that lists them.
pub struct TestSigstore {
    ca: TestCa,
    ct: TestKey,
    rekor: Mutex<TestRekor>,
}

impl Default for TestSigstore {
    fn default() -> TestSigstore {
        TestSigstore::new()
    }
}

impl TestSigstore {
    pub fn new() -> TestSigstore {
        TestSigstore {
            ca: TestCa::new(),
            ct: TestKey::generate(KeyKind::P256),
            rekor: Mutex::new(TestRekor::new()),
        }
    }

    /// A sigstore `trusted_root.json` with this CA, CT log and Rekor.
    pub fn trusted_root_json(&self) -> String {
        let rekor_spki = self.rekor.lock().unwrap().key.spki_der();
        let log = |spki: &[u8], url: &str| {
            json!({"baseUrl": url, "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64(spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": b64(&sha256(spki))}})
        };
        serde_json::to_string_pretty(&json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&rekor_spki, "https://rekor.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "wasmcache-test", "commonName": "test-fulcio"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": [{"rawBytes": b64(&self.ca.cert_der)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": [log(&self.ct.spki_der(), "https://ctfe.test")],
            "timestampAuthorities": []
        }))
        .expect("JSON")
    }

    /// The CA certificate (PEM), the chain cosign attaches to keyless simple signatures.
    pub fn ca_pem(&self) -> String {
        pem("CERTIFICATE", &self.ca.cert_der)
    }

    /// A keyless bundle over `digest_hex` (64 hex digits: sha256; 128: sha512, DSSE only) by `subject` (a URI,
    /// or an email when it has no `://`) with OIDC `issuer`.
    pub fn keyless_bundle(&self, digest_hex: &str, subject: &str, issuer: &str, kind: BundleKind) -> Vec<u8> {
        self.keyless_bundle_with(digest_hex, subject, issuer, kind, &Options::default())
    }

    pub fn keyless_bundle_with(
        &self,
        digest_hex: &str,
        subject: &str,
        issuer: &str,
        kind: BundleKind,
        options: &Options,
    ) -> Vec<u8> {
        assert!(
            kind.has_log(),
            "keyless bundles need a log entry for their signing time"
        );
        let signed_at = unix_now() - options.signed_secs_ago;
        let ephemeral = TestKey::generate(KeyKind::P256);
        let leaf = self.leaf(&ephemeral, subject, issuer, signed_at, options.fault);
        let leaf_pem = pem("CERTIFICATE", &leaf);
        let (content, body) = signed_content(&ephemeral, &leaf_pem, digest_hex, kind, options);
        let logged_at = if options.fault == Fault::LoggedAfterExpiry {
            signed_at + 3600
        } else {
            signed_at
        };
        let entry = self.rekor.lock().unwrap().append(body, logged_at as i64);
        let entry = entry.with_fault(options.fault, &self.rekor.lock().unwrap().key);
        if kind == BundleKind::LegacyBlob {
            let Content::Message { sig, .. } = &content else {
                panic!("legacy blob bundles sign digests")
            };
            return legacy_blob_json(sig, Some(&leaf_pem), &entry);
        }
        bundle_json(kind, Material::Certificate(&leaf), Some(&entry), &content)
    }

    /// A keyless cosign simple signature of `payload`: (signature annotation (base64), certificate PEM, chain PEM,
    /// Rekor bundle annotation JSON).
    pub fn keyless_simple_signature(
        &self,
        payload: &[u8],
        subject: &str,
        issuer: &str,
    ) -> (String, String, String, String) {
        let signed_at = unix_now() - 120;
        let ephemeral = TestKey::generate(KeyKind::P256);
        let leaf = self.leaf(&ephemeral, subject, issuer, signed_at, Fault::None);
        let leaf_pem = pem("CERTIFICATE", &leaf);
        let sig = ephemeral.sign(payload);
        let entry = self
            .rekor
            .lock()
            .unwrap()
            .append(hashedrekord_body(&sha256(payload), &sig, &leaf_pem), signed_at as i64);
        (
            b64(&sig),
            leaf_pem,
            self.ca_pem(),
            rekor_bundle_json(&entry).to_string(),
        )
    }

    /// A key-signed cosign simple signature of `payload`, logged: (signature annotation, Rekor bundle JSON).
    pub fn keyed_simple_signature(&self, key: &TestKey, payload: &[u8]) -> (String, String) {
        let sig = key.sign(payload);
        let body = hashedrekord_body(&sha256(payload), &sig, &key.public_pem());
        let entry = self.rekor.lock().unwrap().append(body, unix_now() as i64 - 60);
        (b64(&sig), rekor_bundle_json(&entry).to_string())
    }

    /// A bundle signed with `key` (`verificationMaterial.publicKey`), logged unless `kind` says NoLog.
    pub fn keyed_bundle(&self, key: &TestKey, digest_hex: &str, kind: BundleKind) -> Vec<u8> {
        self.keyed_bundle_with(key, digest_hex, kind, &Options::default())
    }

    pub fn keyed_bundle_with(&self, key: &TestKey, digest_hex: &str, kind: BundleKind, options: &Options) -> Vec<u8> {
        let (content, body) = signed_content(key, &key.public_pem(), digest_hex, kind, options);
        let entry = kind.has_log().then(|| {
            let entry = self.rekor.lock().unwrap().append(body, unix_now() as i64 - 60);
            entry.with_fault(options.fault, &self.rekor.lock().unwrap().key)
        });
        if kind == BundleKind::LegacyBlob {
            let Content::Message { sig, .. } = &content else {
                panic!("legacy blob bundles sign digests")
            };
            return legacy_blob_json(sig, None, entry.as_ref().expect("logged"));
        }
        bundle_json(kind, Material::Key(key), entry.as_ref(), &content)
    }

    fn leaf(&self, key: &TestKey, subject: &str, issuer: &str, signed_at: u64, fault: Fault) -> Vec<u8> {
        let not_before = signed_at - 30;
        match fault {
            Fault::RogueCa => TestCa::new().issue_leaf(&key.spki_der(), subject, issuer, not_before, Some(&self.ct)),
            Fault::NoSct => self.ca.issue_leaf(&key.spki_der(), subject, issuer, not_before, None),
            Fault::UnknownCtLog => {
                let other = TestKey::generate(KeyKind::P256);
                self.ca
                    .issue_leaf(&key.spki_der(), subject, issuer, not_before, Some(&other))
            }
            _ => self
                .ca
                .issue_leaf(&key.spki_der(), subject, issuer, not_before, Some(&self.ct)),
        }
    }
}

/// What a bundle carries as its signature.
enum Content {
    Message { digest: [u8; 32], sig: Vec<u8> },
    Dsse { statement: Vec<u8>, sig: Vec<u8> },
}

/// Signs what `kind` needs and returns it with the Rekor entry body that logs it (`signer_pem`: the key or
/// certificate the log names).
fn signed_content(
    key: &TestKey,
    signer_pem: &str,
    digest_hex: &str,
    kind: BundleKind,
    options: &Options,
) -> (Content, Vec<u8>) {
    let flip = |mut sig: Vec<u8>| {
        if options.fault == Fault::Signature {
            *sig.last_mut().expect("signature") ^= 1;
        }
        sig
    };
    if kind.is_dsse() {
        let statement = in_toto_statement(digest_hex, &options.predicate_type);
        let sig = flip(key.sign(&pae("application/vnd.in-toto+json", &statement)));
        let body = dsse_body(&statement, &sig, signer_pem);
        (Content::Dsse { statement, sig }, body)
    } else {
        let digest: [u8; 32] = hex::decode(digest_hex)
            .expect("hex")
            .try_into()
            .expect("a sha256 digest");
        let sig = flip(key.sign_digest(&digest));
        let body = hashedrekord_body(&digest, &sig, signer_pem);
        (Content::Message { digest, sig }, body)
    }
}

enum Material<'a> {
    Certificate(&'a [u8]),
    Key(&'a TestKey),
}

fn bundle_json(kind: BundleKind, material: Material<'_>, entry: Option<&Entry>, content: &Content) -> Vec<u8> {
    let mut vm = json!({"tlogEntries": entry.map(|e| vec![e.json(kind.has_proof())]).unwrap_or_default()});
    match material {
        Material::Certificate(der) if kind.media_type().contains("v0.3") => {
            vm["certificate"] = json!({"rawBytes": b64(der)})
        }
        Material::Certificate(der) => vm["x509CertificateChain"] = json!({"certificates": [{"rawBytes": b64(der)}]}),
        Material::Key(key) => vm["publicKey"] = json!({"hint": b64(&sha256(&key.spki_der()))}),
    }
    let mut bundle = json!({"mediaType": kind.media_type(), "verificationMaterial": vm});
    match content {
        Content::Message { digest, sig } => {
            bundle["messageSignature"] =
                json!({"messageDigest": {"algorithm": "SHA2_256", "digest": b64(digest)}, "signature": b64(sig)})
        }
        Content::Dsse { statement, sig } => {
            bundle["dsseEnvelope"] = json!({"payload": b64(statement), "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": b64(sig), "keyid": ""}]})
        }
    }
    bundle.to_string().into_bytes()
}

fn rekor_bundle_json(entry: &Entry) -> Value {
    json!({"SignedEntryTimestamp": b64(&entry.set), "Payload": {"body": b64(&entry.body),
        "integratedTime": entry.integrated_time, "logIndex": entry.log_index, "logID": hex::encode(entry.log_id)}})
}

fn legacy_blob_json(sig: &[u8], cert_pem: Option<&str>, entry: &Entry) -> Vec<u8> {
    let mut out = json!({"base64Signature": b64(sig), "rekorBundle": rekor_bundle_json(entry)});
    if let Some(cert) = cert_pem {
        out["cert"] = json!(b64(cert.as_bytes()));
    }
    out.to_string().into_bytes()
}

/// A Rekor `hashedrekord` v0.0.1 entry body.
pub fn hashedrekord_body(digest: &[u8; 32], sig: &[u8], signer_pem: &str) -> Vec<u8> {
    json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hex::encode(digest)}},
        "signature": {"content": b64(sig), "publicKey": {"content": b64(signer_pem.as_bytes())}}}})
    .to_string()
    .into_bytes()
}

/// A Rekor `dsse` v0.0.1 entry body (the envelope hash is not checked by verifiers; ours is of the statement).
pub fn dsse_body(statement: &[u8], sig: &[u8], signer_pem: &str) -> Vec<u8> {
    json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "envelopeHash": {"algorithm": "sha256", "value": hex::encode(sha256(statement))},
        "payloadHash": {"algorithm": "sha256", "value": hex::encode(sha256(statement))},
        "signatures": [{"signature": b64(sig), "verifier": b64(signer_pem.as_bytes())}]}})
    .to_string()
    .into_bytes()
}

fn ext(oid: &str, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: const_oid::ObjectIdentifier::new_unwrap(oid),
        critical,
        extn_value: OctetString::new(value).expect("octets"),
    }
}

fn time(t: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(t)).expect("UTC time"))
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        parameters: None,
    }
}

const SCT_LIST_OID: &str = "1.3.6.1.4.1.11129.2.4.2";

/// A Fulcio-like root CA (P-256, self-signed) that issues 10-minute code-signing leaves.
struct TestCa {
    key: TestKey,
    cert_der: Vec<u8>,
    name: Name,
    ski: Vec<u8>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = TestKey::generate(KeyKind::P256);
        let name = Name::from_str("CN=test-fulcio,O=wasmcache-test").expect("name");
        let ski = sha256(&key.spki_der())[..20].to_vec();
        let start = unix_now() - 86400;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&[0x01, 0x23]).expect("serial"),
            signature: ecdsa_sha256(),
            issuer: name.clone(),
            validity: Validity {
                not_before: time(start),
                not_after: time(start + 10 * 365 * 86400),
            },
            subject: name.clone(),
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(&key.spki_der()).expect("spki"),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                ext(
                    "2.5.29.19",
                    true,
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(1),
                    }
                    .to_der()
                    .expect("der"),
                ),
                ext(
                    "2.5.29.15",
                    true,
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                        .to_der()
                        .expect("der"),
                ),
                ext(
                    "2.5.29.14",
                    false,
                    SubjectKeyIdentifier(OctetString::new(ski.clone()).expect("ski"))
                        .to_der()
                        .expect("der"),
                ),
            ]),
        };
        let cert_der = sign_tbs(&key, tbs);
        TestCa {
            key,
            cert_der,
            name,
            ski,
        }
    }

    /// A leaf with the Fulcio issuer extensions (.1.1 raw, .1.8 UTF8String), the SAN, the codeSigning EKU, and
    /// an embedded SCT from `ct` when given.
    fn issue_leaf(
        &self,
        spki_der: &[u8],
        subject: &str,
        issuer: &str,
        not_before: u64,
        ct: Option<&TestKey>,
    ) -> Vec<u8> {
        let san = if subject.contains("://") {
            GeneralName::UniformResourceIdentifier(Ia5String::new(subject).expect("ia5"))
        } else {
            GeneralName::Rfc822Name(Ia5String::new(subject).expect("ia5"))
        };
        let mut serial = [0u8; 16];
        OsRng.fill_bytes(&mut serial);
        serial[0] &= 0x7f;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.ski.clone()).expect("aki")),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let mut tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&serial).expect("serial"),
            signature: ecdsa_sha256(),
            issuer: self.name.clone(),
            validity: Validity {
                not_before: time(not_before),
                not_after: time(not_before + 600),
            },
            subject: Name::default(),
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der).expect("spki"),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                ext(
                    "2.5.29.15",
                    true,
                    KeyUsage(KeyUsages::DigitalSignature.into()).to_der().expect("der"),
                ),
                ext(
                    "2.5.29.37",
                    false,
                    ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_CODE_SIGNING])
                        .to_der()
                        .expect("der"),
                ),
                ext("2.5.29.35", false, aki.to_der().expect("der")),
                ext("2.5.29.17", true, SubjectAltName(vec![san]).to_der().expect("der")),
                ext("1.3.6.1.4.1.57264.1.1", false, issuer.as_bytes().to_vec()),
                ext(
                    "1.3.6.1.4.1.57264.1.8",
                    false,
                    Utf8StringRef::new(issuer).expect("utf8").to_der().expect("der"),
                ),
            ]),
        };
        if let Some(ct) = ct {
            // RFC 6962 precert SCT: over the TBS without the SCT extension, which is appended last.
            let timestamp_ms = not_before * 1000 + 1234;
            let precert_tbs = tbs.to_der().expect("der");
            let mut signed = vec![0u8, 0u8];
            signed.extend_from_slice(&timestamp_ms.to_be_bytes());
            signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
            signed.extend_from_slice(&sha256(&self.key.spki_der()));
            signed.extend_from_slice(&(precert_tbs.len() as u32).to_be_bytes()[1..]);
            signed.extend_from_slice(&precert_tbs);
            signed.extend_from_slice(&0u16.to_be_bytes()); // no extensions
            let sig = ct.sign(&signed);
            let mut sct = vec![0u8]; // v1
            sct.extend_from_slice(&sha256(&ct.spki_der()));
            sct.extend_from_slice(&timestamp_ms.to_be_bytes());
            sct.extend_from_slice(&0u16.to_be_bytes());
            sct.extend_from_slice(&[4, 3]); // sha256, ecdsa
            sct.extend_from_slice(&(sig.len() as u16).to_be_bytes());
            sct.extend_from_slice(&sig);
            let mut list = (sct.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&sct);
            let mut tls = (list.len() as u16).to_be_bytes().to_vec();
            tls.extend_from_slice(&list);
            let value = OctetString::new(tls).expect("octets").to_der().expect("der");
            tbs.extensions
                .as_mut()
                .expect("extensions")
                .push(ext(SCT_LIST_OID, false, value));
        }
        sign_tbs(&self.key, tbs)
    }
}

fn sign_tbs(key: &TestKey, tbs: TbsCertificate) -> Vec<u8> {
    let sig = key.sign(&tbs.to_der().expect("der"));
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&sig).expect("bits"),
    }
    .to_der()
    .expect("der")
}

fn hash_leaf(data: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn hash_children(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 6962 Merkle tree hash.
fn tree_hash(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha256(b""),
        1 => leaves[0],
        n => {
            let k = split(n);
            hash_children(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n`.
fn split(n: usize) -> usize {
    1usize << (usize::BITS - (n - 1).leading_zeros() - 1)
}

/// RFC 6962 audit path of leaf `m`.
fn audit_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() <= 1 {
        return vec![];
    }
    let k = split(leaves.len());
    if m < k {
        let mut p = audit_path(m, &leaves[..k]);
        p.push(tree_hash(&leaves[k..]));
        p
    } else {
        let mut p = audit_path(m - k, &leaves[k..]);
        p.push(tree_hash(&leaves[..k]));
        p
    }
}

/// A Rekor v1-like log: a Merkle tree, signed checkpoints and SETs.
struct TestRekor {
    key: TestKey,
    leaves: Vec<[u8; 32]>,
}

/// One logged entry and everything a bundle says about it.
#[derive(Clone)]
struct Entry {
    log_index: u64,
    tree_size: u64,
    root: [u8; 32],
    proof: Vec<[u8; 32]>,
    checkpoint: String,
    set: Vec<u8>,
    integrated_time: i64,
    body: Vec<u8>,
    log_id: [u8; 32],
}

const REKOR_ORIGIN: &str = "rekor.test - 1234567890";

impl TestRekor {
    fn new() -> TestRekor {
        // A few entries before ours, so that proofs have some length.
        let leaves = (0..5u8).map(|i| hash_leaf(&[i])).collect();
        TestRekor {
            key: TestKey::generate(KeyKind::P256),
            leaves,
        }
    }

    fn append(&mut self, body: Vec<u8>, integrated_time: i64) -> Entry {
        let index = self.leaves.len();
        self.leaves.push(hash_leaf(&body));
        for i in 0..2u8 {
            self.leaves.push(hash_leaf(&[0xff, i, index as u8]));
        }
        let root = tree_hash(&self.leaves);
        let log_id = sha256(&self.key.spki_der());
        let checkpoint = checkpoint(&self.key, self.leaves.len() as u64, &root);
        let set_payload = format!(
            r#"{{"body":"{}","integratedTime":{integrated_time},"logID":"{}","logIndex":{index}}}"#,
            b64(&body),
            hex::encode(log_id)
        );
        Entry {
            log_index: index as u64,
            tree_size: self.leaves.len() as u64,
            root,
            proof: audit_path(index, &self.leaves),
            checkpoint,
            set: self.key.sign(set_payload.as_bytes()),
            integrated_time,
            body,
            log_id,
        }
    }
}

/// A signed note, as Rekor v1 writes checkpoints: origin, size, root, blank line, `— name base64(hint||sig)`.
fn checkpoint(key: &TestKey, size: u64, root: &[u8; 32]) -> String {
    let text = format!("{REKOR_ORIGIN}\n{size}\n{}\n", b64(root));
    let mut signature = sha256(&key.spki_der())[..4].to_vec();
    signature.extend(key.sign(text.as_bytes()));
    format!("{text}\n\u{2014} rekor.test {}\n", b64(&signature))
}

impl Entry {
    fn with_fault(mut self, fault: Fault, log_key: &TestKey) -> Entry {
        match fault {
            Fault::InclusionProof => self.proof[0][0] ^= 1,
            Fault::Set => self.set = log_key.sign(b"something else"),
            Fault::Checkpoint => {
                self.checkpoint = self.checkpoint.replacen(
                    &format!("\n{}\n", self.tree_size),
                    &format!("\n{}\n", self.tree_size + 1),
                    1,
                )
            }
            _ => {}
        }
        self
    }

    fn json(&self, with_proof: bool) -> Value {
        let kind: Value = serde_json::from_slice(&self.body).expect("body");
        let mut v = json!({"logIndex": self.log_index.to_string(), "logId": {"keyId": b64(&self.log_id)},
            "kindVersion": {"kind": kind["kind"], "version": kind["apiVersion"]},
            "integratedTime": self.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": b64(&self.set)},
            "canonicalizedBody": b64(&self.body)});
        if with_proof {
            v["inclusionProof"] = json!({"logIndex": self.log_index.to_string(), "rootHash": b64(&self.root),
                "treeSize": self.tree_size.to_string(), "hashes": self.proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": self.checkpoint}});
        }
        v
    }
}
