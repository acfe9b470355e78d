//! Public keys named by the policy (PEM), their verification with RustCrypto, and their fingerprints.
//!
//! The same primitives back the sigstore [`CryptoProvider`](super::provider) (certificate chains, SCTs, Rekor
//! SETs and checkpoints) and the key-based signatures we check ourselves: cosign simple signing, legacy blob
//! bundles and bundles without log data, which sigstore-verify does not verify with a caller's key.

use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

/// A public key of a kind cosign can sign with.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Signatures may use PKCS#1 v1.5 or PSS padding: both are tried, with SHA-256.
    Rsa(rsa::RsaPublicKey),
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("not a PEM public key: {0}")]
    Pem(String),
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// Why a signature was not verified.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// The signature does not verify under this key.
    Invalid,
    /// This key type cannot verify over a digest alone (Ed25519 signs the whole message).
    NeedsMessage,
}

impl PublicKey {
    /// Parses a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`, what `cosign generate-key-pair` and
    /// `openssl pkey -pubout` write). Returns the key and its SPKI DER.
    pub(crate) fn from_pem(pem: &str) -> Result<(PublicKey, Vec<u8>), KeyError> {
        let trimmed = pem.trim();
        let der = sigstore_verify::types::DerPublicKey::from_pem(trimmed).map_err(|e| KeyError::Pem(e.to_string()))?;
        let key = PublicKey::from_spki_der(der.as_bytes())?;
        Ok((key, der.as_bytes().to_vec()))
    }

    pub(crate) fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        use sigstore_verify::crypto::KeyAlgorithm;
        let bad = |e: &dyn std::fmt::Display| KeyError::Unsupported(e.to_string());
        let algorithm =
            KeyAlgorithm::from_spki(&sigstore_verify::types::DerPublicKey::new(der.to_vec())).map_err(|e| bad(&e))?;
        Ok(match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                PublicKey::P256(p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|e| bad(&e))?)
            }
            KeyAlgorithm::EcdsaP384 => {
                PublicKey::P384(p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|e| bad(&e))?)
            }
            KeyAlgorithm::Ed25519 => {
                PublicKey::Ed25519(ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|e| bad(&e))?)
            }
            KeyAlgorithm::Rsa => PublicKey::Rsa(rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| bad(&e))?),
            other => return Err(KeyError::Unsupported(format!("{other:?} keys"))),
        })
    }

    /// What the key is, for messages: `ECDSA P-256`, `RSA`, ...
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ECDSA P-256",
            PublicKey::P384(_) => "ECDSA P-384",
            PublicKey::Ed25519(_) => "Ed25519",
            PublicKey::Rsa(_) => "RSA",
        }
    }

    /// Verifies `sig` over the whole `message`: ECDSA and RSA hash it with SHA-256 (P-384 also with SHA-384,
    /// which cosign uses for P-384 keys).
    pub(crate) fn verify_message(&self, message: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        match self {
            PublicKey::Ed25519(key) => {
                let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| VerifyError::Invalid)?;
                key.verify(message, &sig).map_err(|_| VerifyError::Invalid)
            }
            PublicKey::P384(_) => self
                .verify_digest(&sha2::Sha384::digest(message), sig)
                .or_else(|_| self.verify_digest(&sha2::Sha256::digest(message), sig)),
            _ => self.verify_digest(&sha2::Sha256::digest(message), sig),
        }
    }

    /// Verifies `sig` over a message known only by its digest (SHA-256, SHA-384 or SHA-512, told by length).
    pub(crate) fn verify_digest(&self, digest: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        fn invalid<E>(_: E) -> VerifyError {
            VerifyError::Invalid
        }
        match self {
            PublicKey::P256(key) => key.verify_prehash(digest, &ecdsa_p256(sig)?).map_err(invalid),
            PublicKey::P384(key) => key.verify_prehash(digest, &ecdsa_p384(sig)?).map_err(invalid),
            PublicKey::Ed25519(_) => Err(VerifyError::NeedsMessage),
            PublicKey::Rsa(key) => {
                let pkcs1 = match digest.len() {
                    32 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    48 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    64 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    _ => return Err(VerifyError::Invalid),
                };
                let pss = match digest.len() {
                    32 => rsa::Pss::new::<sha2::Sha256>(),
                    48 => rsa::Pss::new::<sha2::Sha384>(),
                    _ => rsa::Pss::new::<sha2::Sha512>(),
                };
                key.verify(pkcs1, digest, sig)
                    .or_else(|_| key.verify(pss, digest, sig))
                    .map_err(invalid)
            }
        }
    }
}

/// ECDSA signatures are ASN.1 DER in cosign and sigstore; the fixed-size form is accepted too.
fn ecdsa_p256(sig: &[u8]) -> Result<p256::ecdsa::Signature, VerifyError> {
    p256::ecdsa::Signature::from_der(sig)
        .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
        .map_err(|_| VerifyError::Invalid)
}

fn ecdsa_p384(sig: &[u8]) -> Result<p384::ecdsa::Signature, VerifyError> {
    p384::ecdsa::Signature::from_der(sig)
        .or_else(|_| p384::ecdsa::Signature::from_slice(sig))
        .map_err(|_| VerifyError::Invalid)
}

/// `SHA256:` and the first 16 hex digits of the SHA-256 of the key's SPKI DER: enough to tell keys apart in
/// logs, short enough to read.
pub(crate) fn fingerprint(spki_der: &[u8]) -> String {
    let hex = hex::encode(sha2::Sha256::digest(spki_der));
    format!("SHA256:{}", &hex[..16])
}
