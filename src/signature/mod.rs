//! Signature verification: judges the signatures found next to a module against the verification policy.
//!
//! The fetchers find the evidence ([`Evidence`]: cosign `.sig` manifests, OCI referrer bundles, detached http
//! bundles) and the policy ([`Policy`], from a TOML file) picks the [`Rule`] for a module; [`Rule::judge`] then
//! decides, with no I/O, whether any one signature verifies under that rule:
//!
//! - key signatures: by one of the rule's keys; when they carry Rekor data and the rule has a trusted root, the
//!   log entry must verify too;
//! - keyless signatures: a certificate that chains to a Fulcio root of the trusted root, with an SCT when the
//!   root lists CT logs, a Rekor entry (SET, and inclusion proof with checkpoint where the bundle has one) whose
//!   time falls in the certificate's validity, and an identity the rule lists;
//! - and in both cases, the signed payload names the module's digest.
//!
//! sigstore bundles (v0.1 to v0.3) are verified by `sigstore-verify`. cosign's older forms, simple signing
//! (`sha256-<hex>.sig`) and `sign-blob --bundle` JSON, are converted to a v0.1 bundle when they carry a
//! certificate or Rekor data, and are verified with the key directly when they do not. When nothing verifies, the
//! refusal carries the most specific reason seen (see [`Reason`]).
//!
//! Known limits, each refused rather than guessed at: keyless evidence needs an authenticated signing time (a
//! Rekor SET, or an RFC 3161 timestamp in the bundle), as sigstore-verify requires; an Ed25519 message signature
//! over a digest cannot be checked (Ed25519 signs whole messages; DSSE and simple signing are fine); and the log
//! check of an RSA-PSS key signature fails, since sigstore-verify assumes PKCS#1 v1.5 for RSA keys.

mod glob;
mod keys;
pub(crate) mod policy;
mod provider;
mod verify;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::digest::Sha256;

#[cfg(test)]
use policy::PolicyError;
pub(crate) use policy::Rule;
pub use policy::{Mode, Policy, Target};

/// At most this many signatures and bundles are judged per module; the rest are ignored (and counted in the
/// refusal's detail). A signer rarely has more than a few, and each costs a few signature checks.
pub(crate) const MAX_JUDGED: usize = 32;

/// Larger bundles, payloads and annotations are refused as malformed before they are parsed.
pub(crate) const MAX_JSON_BYTES: usize = 1 << 20;

/// Signature material found next to a module by the fetchers (sizes already bounded by them).
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub simple: Vec<SimpleSignature>,
    pub bundles: Vec<FoundBundle>,
}

/// One layer of a cosign signature manifest (tag `sha256-<hex>.sig`).
#[derive(Clone, Debug)]
pub struct SimpleSignature {
    /// The manifest digest whose `.sig` tag held it.
    pub found_for: Sha256,
    /// The layer bytes: the simple-signing JSON payload that was signed.
    pub payload: Vec<u8>,
    /// Annotation `dev.cosignproject.cosign/signature` (base64).
    pub signature: String,
    /// Annotations `dev.sigstore.cosign/certificate` and `dev.sigstore.cosign/chain` (PEM), `dev.sigstore.cosign/bundle` (Rekor SET JSON).
    pub certificate: Option<String>,
    pub chain: Option<String>,
    pub rekor_bundle: Option<String>,
}

/// A sigstore bundle (raw JSON, any of v0.1/v0.2/v0.3, messageSignature or dsseEnvelope) or a legacy cosign
/// `sign-blob --bundle` JSON, with the digest it was found for (OCI: the manifest digest it refers to; http: the payload's sha256).
#[derive(Clone, Debug)]
pub struct FoundBundle {
    pub found_for: Sha256,
    pub json: Vec<u8>,
}

/// What a signature must cover.
pub enum Subject<'a> {
    /// An OCI image: a signature counts when it is for one of these manifest digests (the reference's own, and the
    /// platform manifest's when the reference named an index); a simple-signing payload's
    /// critical.image.docker-manifest-digest must be that digest (else PayloadDigestMismatch).
    Image { digests: &'a [Sha256] },
    /// An http(s) blob: the downloaded payload (sha256 and sha512 of it, since in-toto subjects may use either).
    Blob { sha256: Sha256, sha512: [u8; 64] },
}

impl Subject<'_> {
    /// Whether evidence found for `digest` is about this subject at all.
    fn covers(&self, digest: &Sha256) -> bool {
        match self {
            Subject::Image { digests } => digests.contains(digest),
            Subject::Blob { sha256, .. } => sha256 == digest,
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::Image { digests } => digests.iter().map(Sha256::prefixed).collect::<Vec<_>>().join(" or "),
            Subject::Blob { sha256, .. } => sha256.prefixed(),
        }
    }
}

/// A module passed: which rule, and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub rule: String,
    /// e.g. "key SHA256:3f9a…(16 hex) (/etc/wasmcache/keys/a.pub)" or "keyless issuer=https://… subject=https://…"
    pub by: String,
}

/// A module failed its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub rule: String,
    pub reason: Reason,
    /// names the cause precisely, never secrets
    pub detail: String,
}

/// Why a module was refused: the most specific failure among its signatures (see [`Reason::specificity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No signature (of a kind the rule accepts) was found for the module.
    NoSignature,
    /// A valid signature by a key (or keyless signer) the rule does not trust.
    UntrustedKey,
    /// A valid keyless signature by an identity the rule does not list.
    IdentityMismatch,
    /// A valid signature over a payload that names another digest.
    PayloadDigestMismatch,
    /// A signature does not verify (tampered, or made by a key we cannot name).
    InvalidSignature,
    /// A signing certificate does not chain to the trusted root, lacks a valid SCT, or was not valid when signed.
    UntrustedCertificate,
    /// The transparency-log evidence (SET, inclusion proof, checkpoint, entry) is missing or does not verify.
    TransparencyLog,
    /// A signature or bundle could not be parsed, is too large, or is of a form we cannot verify.
    Malformed,
}

impl Reason {
    /// metric label: no_signature, untrusted_key, identity_mismatch, payload_digest_mismatch, invalid_signature, untrusted_certificate, transparency_log, malformed
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::NoSignature => "no_signature",
            Reason::UntrustedKey => "untrusted_key",
            Reason::IdentityMismatch => "identity_mismatch",
            Reason::PayloadDigestMismatch => "payload_digest_mismatch",
            Reason::InvalidSignature => "invalid_signature",
            Reason::UntrustedCertificate => "untrusted_certificate",
            Reason::TransparencyLog => "transparency_log",
            Reason::Malformed => "malformed",
        }
    }

    /// Every reason, for the test that their labels are distinct.
    #[cfg(test)]
    pub(crate) const ALL: [Reason; 8] = [
        Reason::NoSignature,
        Reason::UntrustedKey,
        Reason::IdentityMismatch,
        Reason::PayloadDigestMismatch,
        Reason::InvalidSignature,
        Reason::UntrustedCertificate,
        Reason::TransparencyLog,
        Reason::Malformed,
    ];

    /// How far a signature got before it failed: when several fail, the highest is reported, so a signature
    /// that verified but names another digest is reported over a tampered one, and anything over none at all.
    pub(crate) fn specificity(self) -> u8 {
        match self {
            Reason::NoSignature => 0,
            Reason::Malformed => 1,
            Reason::InvalidSignature => 2,
            Reason::UntrustedCertificate => 3,
            Reason::TransparencyLog => 4,
            Reason::PayloadDigestMismatch => 5,
            Reason::UntrustedKey => 6,
            Reason::IdentityMismatch => 7,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Reason::NoSignature => "no signature",
            Reason::UntrustedKey => "signed by an untrusted key",
            Reason::IdentityMismatch => "signed by an identity the rule does not list",
            Reason::PayloadDigestMismatch => "the signature is for another digest",
            Reason::InvalidSignature => "invalid signature",
            Reason::UntrustedCertificate => "untrusted signing certificate",
            Reason::TransparencyLog => "transparency log evidence does not verify",
            Reason::Malformed => "malformed signature",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words())
    }
}

impl fmt::Display for Refused {
    /// "rule NAME refused it: <reason in words>: <detail>"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} refused it: {}: {}", self.rule, self.reason, self.detail)
    }
}

impl std::error::Error for Refused {}

/// Why one piece of evidence failed.
#[derive(Debug)]
pub(crate) struct Failure {
    reason: Reason,
    message: String,
}

impl Failure {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl Rule {
    /// Judges the evidence (pure; `now` for certificate validity when no transparency-log time is at hand).
    ///
    /// Passes as soon as one signature verifies. `now` is kept for that contract, but every keyless path today
    /// has a log time: sigstore-verify requires a Rekor SET (or an RFC 3161 timestamp) to check the certificate
    /// at, and refuses keyless evidence without one (as [`Reason::TransparencyLog`]).
    pub fn judge(
        &self,
        subject: &Subject<'_>,
        evidence: &Evidence,
        now: std::time::SystemTime,
    ) -> Result<Verified, Refused> {
        let _ = now;
        provider::install();
        let mut seen = 0usize;
        let mut other_digests = 0usize;
        let mut judged = 0usize;
        let mut best: Option<(String, Failure)> = None;

        let simple = evidence
            .simple
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("simple signature #{}", i + 1), Some(s), None));
        let bundles = evidence
            .bundles
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("bundle #{}", i + 1), None, Some(b)));
        for (label, simple, bundle) in simple.chain(bundles) {
            seen += 1;
            let found_for = simple
                .map(|s| &s.found_for)
                .or(bundle.map(|b| &b.found_for))
                .expect("one of the two");
            if !subject.covers(found_for) {
                other_digests += 1;
                continue;
            }
            if judged == MAX_JUDGED {
                continue;
            }
            judged += 1;
            let outcome = match (simple, bundle) {
                (Some(s), _) => verify::simple(self, subject, s),
                (_, Some(b)) => verify::bundle(self, subject, b),
                _ => unreachable!("one of the two"),
            };
            match outcome {
                Ok(by) => {
                    return Ok(Verified {
                        rule: self.name().to_string(),
                        by,
                    })
                }
                Err(failure) => {
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| failure.reason.specificity() > b.reason.specificity())
                    {
                        best = Some((label, failure));
                    }
                }
            }
        }

        let accepted = self.accepted();
        let mut detail = match &best {
            None => format!("no signature for {}", subject.describe()),
            Some(_) => format!("{judged} signature(s) for {} judged, none verified", subject.describe()),
        };
        if other_digests > 0 {
            detail.push_str(&format!("; {other_digests} found for other digests"));
        }
        let capped = seen - other_digests - judged;
        if capped > 0 {
            detail.push_str(&format!("; {capped} more not judged (at most {MAX_JUDGED})"));
        }
        detail.push_str(&format!("; accepted: {accepted}"));
        let reason = match best {
            None => Reason::NoSignature,
            Some((label, failure)) => {
                detail.push_str(&format!("; {label}: {}", failure.message));
                failure.reason
            }
        };
        Err(Refused {
            rule: self.name().to_string(),
            reason,
            detail,
        })
    }

    /// The signers this rule accepts, for refusals.
    fn accepted(&self) -> String {
        let signers: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.describe())
            .chain(self.identities.iter().map(|i| format!("keyless {}", i.describe())))
            .collect();
        if signers.is_empty() {
            "no signer".to_string()
        } else {
            signers.join(", ")
        }
    }
}
