//! The sigstore [`CryptoProvider`]: RustCrypto, installed once per process.
//!
//! sigstore-verify's own provider is aws-lc (a C and assembly build we avoid); with its default features off it
//! needs one installed. `install_default_provider` is process-global and refuses a second provider, so
//! [`install`] runs it at most once, and keeps whatever provider is already there.

use std::sync::OnceLock;

use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use sha2::Digest as _;
use sigstore_verify::crypto::{self as sc, CryptoProvider, HashContext, SigningScheme};
use sigstore_verify::types::HashAlgorithm;

/// Makes sure a provider is installed before any sigstore verification.
pub(crate) fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Err means another provider came first: it verifies just as well, so it stays.
        let _ = sc::install_default_provider(&RustCrypto);
    });
}

#[derive(Debug)]
struct RustCrypto;

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl HashContext for Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finalize(self: Box<Self>) -> Vec<u8> {
        match *self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> sc::Error {
    sc::Error::Verification(e.to_string())
}

fn digest(algorithm: HashAlgorithm, data: &[u8]) -> sc::Result<Vec<u8>> {
    Ok(match algorithm {
        HashAlgorithm::Sha2256 => sha2::Sha256::digest(data).to_vec(),
        HashAlgorithm::Sha2384 => sha2::Sha384::digest(data).to_vec(),
        HashAlgorithm::Sha2512 => sha2::Sha512::digest(data).to_vec(),
        other => return Err(sc::Error::UnsupportedAlgorithm(format!("{other:?}"))),
    })
}

impl CryptoProvider for RustCrypto {
    fn hash(&self, algorithm: HashAlgorithm) -> sc::Result<Box<dyn HashContext>> {
        Ok(Box::new(match algorithm {
            HashAlgorithm::Sha2256 => Hasher::Sha256(Default::default()),
            HashAlgorithm::Sha2384 => Hasher::Sha384(Default::default()),
            HashAlgorithm::Sha2512 => Hasher::Sha512(Default::default()),
            other => return Err(sc::Error::UnsupportedAlgorithm(format!("{other:?}"))),
        }))
    }

    /// `key` is the raw subjectPublicKey: a SEC1 point, 32 Ed25519 bytes, or a PKCS#1 RSAPublicKey.
    fn verify_raw(&self, scheme: SigningScheme, key: &[u8], data: &[u8], sig: &[u8]) -> sc::Result<()> {
        match scheme {
            SigningScheme::Ed25519 => {
                use p256::ecdsa::signature::Verifier as _;
                let key: [u8; 32] = key.try_into().map_err(failed)?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(failed)?;
                key.verify(data, &ed25519_dalek::Signature::from_slice(sig).map_err(failed)?)
                    .map_err(failed)
            }
            other => {
                let algorithm = other
                    .hash_algorithm()
                    .ok_or_else(|| sc::Error::UnsupportedAlgorithm(other.name().to_string()))?;
                self.verify_prehashed(other, key, &digest(algorithm, data)?, sig)
            }
        }
    }

    fn verify_prehashed(&self, scheme: SigningScheme, key: &[u8], digest: &[u8], sig: &[u8]) -> sc::Result<()> {
        let rsa_key = || rsa::RsaPublicKey::from_pkcs1_der(key).map_err(failed);
        match scheme {
            SigningScheme::EcdsaP256Sha256 | SigningScheme::EcdsaP256Sha384 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(failed)?;
                let sig = p256::ecdsa::Signature::from_der(sig).map_err(failed)?;
                key.verify_prehash(digest, &sig).map_err(failed)
            }
            SigningScheme::EcdsaP384Sha256 | SigningScheme::EcdsaP384Sha384 => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(failed)?;
                let sig = p384::ecdsa::Signature::from_der(sig).map_err(failed)?;
                key.verify_prehash(digest, &sig).map_err(failed)
            }
            SigningScheme::RsaPkcs1Sha256 => rsa_key()?
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, sig)
                .map_err(failed),
            SigningScheme::RsaPkcs1Sha384 => rsa_key()?
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), digest, sig)
                .map_err(failed),
            SigningScheme::RsaPkcs1Sha512 => rsa_key()?
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), digest, sig)
                .map_err(failed),
            SigningScheme::RsaPssSha256 => rsa_key()?
                .verify(rsa::Pss::new::<sha2::Sha256>(), digest, sig)
                .map_err(failed),
            SigningScheme::RsaPssSha384 => rsa_key()?
                .verify(rsa::Pss::new::<sha2::Sha384>(), digest, sig)
                .map_err(failed),
            SigningScheme::RsaPssSha512 => rsa_key()?
                .verify(rsa::Pss::new::<sha2::Sha512>(), digest, sig)
                .map_err(failed),
            other => Err(sc::Error::UnsupportedAlgorithm(other.name().to_string())),
        }
    }
}
