//! Signature checks of what a fetch brought, under the `--verify-policy` rule that matches its URL: run
//! before a module is committed or a URL bound to it, so a refused module is never stored. The verdict is
//! recorded with the binding, with the policy's fingerprint: when the policy changes, the binding is judged
//! again before it is served.

use std::sync::Arc;
use std::time::SystemTime;

use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::oci::Keyring;
use crate::fetch::Fetchers;
use crate::metrics::{Metrics, SignatureResult};
use crate::signature::{Evidence, FoundBundle, Mode, Policy, Refused, Rule, Subject, Target};
use crate::source::ModuleUrl;
use crate::store::{RefRecord, Verification};

/// What a signature must cover, as the fetch learned it.
pub(super) enum Signed {
    /// An OCI image: the reference's manifest (or index) digest, and the platform manifest's.
    Image(Vec<Sha256>),
    /// An http(s) or file payload: the downloaded bytes' digests.
    Blob { sha256: Sha256, sha512: [u8; 64] },
}

/// The rule a URL falls under, in the policy's terms.
pub(super) fn rule_for<'p>(policy: &'p Policy, url: &ModuleUrl, key: &str) -> Option<&'p Rule> {
    let target = match url {
        ModuleUrl::Oci(image) => Target::Image {
            registry: image.registry(),
            repository: image.repository(),
        },
        _ => Target::Url(key),
    };
    policy.rule_for(&target).filter(|r| r.mode() != Mode::Off)
}

/// True when the URL's binding must be judged (again) before it is served: a rule applies and the binding
/// was not judged under this policy.
pub(super) fn needs_judgement(policy: Option<&Policy>, url: &ModuleUrl, key: &str, record: &RefRecord) -> bool {
    let Some(policy) = policy else {
        return false;
    };
    rule_for(policy, url, key).is_some()
        && record.verification.as_ref().map(|v| v.policy.as_str()) != Some(policy.fingerprint())
}

/// One fetch's judge: the policy as it was when the fetch started, and what the fetch needs to gather
/// signatures with.
pub(super) struct Judge<'a> {
    pub policy: Option<Arc<Policy>>,
    pub fetchers: &'a Fetchers,
    pub url: &'a ModuleUrl,
    pub key: &'a str,
    pub keyring: &'a Keyring,
    pub metrics: &'a Metrics,
}

impl Judge<'_> {
    /// Whether a rule applies, so the fetch must keep what a signature covers (the raw payload's digests).
    pub fn applies(&self) -> bool {
        self.policy
            .as_deref()
            .is_some_and(|p| rule_for(p, self.url, self.key).is_some())
    }

    /// Gathers the signatures and judges them. `Ok(None)`: no rule applies. A refusal under `enforce` is
    /// the error; under `warn` it is logged, counted and recorded, and the module is served.
    pub async fn judge(&self, signed: Signed) -> Result<Option<Verification>, Error> {
        let Some(policy) = self.policy.as_deref() else {
            return Ok(None);
        };
        let Some(rule) = rule_for(policy, self.url, self.key) else {
            return Ok(None);
        };
        let warn_only = rule.mode() == Mode::Warn;
        let evidence = match self.gather(rule, &signed).await {
            Ok(evidence) => evidence,
            Err(e) if warn_only => {
                tracing::warn!(url = %self.key, rule = rule.name(), cause = %e, "signatures could not be fetched; serving it (warn)");
                self.metrics
                    .signature_checked(rule.name(), SignatureResult::Warned, "unavailable");
                return Ok(Some(verification(
                    policy,
                    rule,
                    false,
                    format!("signatures unavailable: {e}"),
                )));
            }
            Err(e) => {
                self.metrics
                    .signature_checked(rule.name(), SignatureResult::Refused, "unavailable");
                return Err(e);
            }
        };
        let subject = match &signed {
            Signed::Image(digests) => Subject::Image { digests },
            Signed::Blob { sha256, sha512 } => Subject::Blob {
                sha256: *sha256,
                sha512: *sha512,
            },
        };
        match rule.judge(&subject, &evidence, SystemTime::now()) {
            Ok(verified) => {
                tracing::info!(url = %self.key, rule = rule.name(), by = %verified.by, "signature verified");
                self.metrics
                    .signature_checked(rule.name(), SignatureResult::Verified, "none");
                Ok(Some(verification(policy, rule, true, verified.by)))
            }
            Err(refused) if warn_only => {
                tracing::warn!(url = %self.key, rule = rule.name(), reason = refused.reason.label(), cause = %refused, "signature check failed; serving it (warn)");
                self.metrics
                    .signature_checked(rule.name(), SignatureResult::Warned, refused.reason.label());
                Ok(Some(verification(policy, rule, false, refused.to_string())))
            }
            Err(refused) => {
                tracing::warn!(url = %self.key, rule = rule.name(), reason = refused.reason.label(), cause = %refused, "signature check refused the module");
                self.metrics
                    .signature_checked(rule.name(), SignatureResult::Refused, refused.reason.label());
                Err(refusal(self.key, refused))
            }
        }
    }

    /// The signatures published next to the module: in its registry (OCI), or the rule's detached bundle
    /// (http). A file URL has nowhere to publish one.
    async fn gather(&self, rule: &Rule, signed: &Signed) -> Result<Evidence, Error> {
        match (self.url, signed) {
            (ModuleUrl::Oci(image), Signed::Image(digests)) => Ok(self
                .fetchers
                .oci()
                .signatures(self.key, image, self.keyring, digests)
                .await?),
            (ModuleUrl::Http(_), Signed::Blob { sha256, .. }) => {
                let Some(bundle_url) = rule.bundle_url(self.key) else {
                    return Ok(Evidence::default());
                };
                let bundle_url = url::Url::parse(&bundle_url).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "rule {}: bundle URL {bundle_url:?} for {} is not a URL: {e}",
                        rule.name(),
                        self.key
                    ))
                })?;
                let bundles = self.fetchers.http_bundle(&bundle_url).await?;
                Ok(Evidence {
                    simple: Vec::new(),
                    bundles: bundles
                        .into_iter()
                        .map(|json| FoundBundle {
                            found_for: *sha256,
                            json,
                        })
                        .collect(),
                })
            }
            _ => Ok(Evidence::default()),
        }
    }
}

fn verification(policy: &Policy, rule: &Rule, verified: bool, detail: String) -> Verification {
    Verification {
        policy: policy.fingerprint().to_string(),
        rule: rule.name().to_string(),
        verified,
        detail,
    }
}

fn refusal(key: &str, refused: Refused) -> Error {
    Error::SignatureRefused {
        url: key.to_string(),
        refused,
    }
}
