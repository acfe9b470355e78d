//! Who may be served a cached private module: the rule of Kubernetes KEP-2535 ("ensure secret pulled
//! images") and Envoy Gateway's permission cache. A module pulled with credentials is served to a later
//! request only when that request's credentials were already proven for the repository, or pass a check
//! at the registry now. A module pulled anonymously is public. Pure functions over [`AccessRecord`].

use crate::store::AccessRecord;

/// Fingerprint recorded for a request without credentials.
pub const ANONYMOUS: &str = "anonymous";
/// Proven fingerprints kept per repository; the oldest go first.
const MAX_PROVEN_PER_REPOSITORY: usize = 64;

/// What a request may do with a cached module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allowed,
    /// The module is private to the request's repository and these credentials are not proven there:
    /// ask the registry.
    CheckRegistry,
    /// The module is private to another repository (or the request is not for a registry): act as if
    /// it were not cached, so the request's own URL decides.
    NotVisible,
}

/// Whether a module with this record is served to anyone, whatever their credentials.
pub fn is_public(record: Option<&AccessRecord>) -> bool {
    record.is_none_or(|r| r.public)
}

/// Judges a request for `repository` (None for http/file URLs) with credential `fingerprint`.
pub fn judge(record: Option<&AccessRecord>, repository: Option<&str>, fingerprint: &str) -> Verdict {
    let Some(record) = record.filter(|r| !is_public(Some(r))) else {
        return Verdict::Allowed;
    };
    let Some(repository) = repository else {
        return Verdict::NotVisible;
    };
    match record.proven.get(repository) {
        Some(proven) if proven.iter().any(|p| p == fingerprint) => Verdict::Allowed,
        Some(_) => Verdict::CheckRegistry,
        None => Verdict::NotVisible,
    }
}

/// Records that `fingerprint` may pull the module from `repository`: after a pull, or after a check at
/// the registry. An anonymous success makes the module public.
pub fn prove(
    record: Option<AccessRecord>,
    repository: Option<&str>,
    fingerprint: &str,
    anonymous: bool,
) -> AccessRecord {
    let mut record = record.unwrap_or_default();
    if anonymous || fingerprint == ANONYMOUS {
        record.public = true;
        return record;
    }
    let Some(repository) = repository else {
        // A non-registry URL fetched it: anyone who can reach that URL has the bytes.
        record.public = true;
        return record;
    };
    let proven = record.proven.entry(repository.to_string()).or_default();
    if !proven.iter().any(|p| p == fingerprint) {
        proven.push(fingerprint.to_string());
        if proven.len() > MAX_PROVEN_PER_REPOSITORY {
            proven.remove(0);
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "registry.local/team/filter";

    fn private_to(fp: &str) -> AccessRecord {
        prove(None, Some(REPO), fp, false)
    }

    #[test]
    fn unrecorded_and_public_modules_are_served_to_anyone() {
        assert_eq!(judge(None, None, ANONYMOUS), Verdict::Allowed);
        let public = prove(None, Some(REPO), ANONYMOUS, true);
        assert_eq!(judge(Some(&public), Some("other/repo"), "x"), Verdict::Allowed);
    }

    #[test]
    fn proven_credentials_are_served() {
        assert_eq!(judge(Some(&private_to("a")), Some(REPO), "a"), Verdict::Allowed);
    }

    #[test]
    fn other_credentials_for_the_same_repository_are_checked_at_the_registry() {
        assert_eq!(judge(Some(&private_to("a")), Some(REPO), "b"), Verdict::CheckRegistry);
        assert_eq!(
            judge(Some(&private_to("a")), Some(REPO), ANONYMOUS),
            Verdict::CheckRegistry
        );
    }

    #[test]
    fn private_module_is_invisible_to_other_repositories_and_to_http() {
        assert_eq!(
            judge(Some(&private_to("a")), Some("registry.local/other"), "a"),
            Verdict::NotVisible
        );
        assert_eq!(judge(Some(&private_to("a")), None, ANONYMOUS), Verdict::NotVisible);
    }

    #[test]
    fn anonymous_success_makes_the_module_public() {
        let record = prove(Some(private_to("a")), Some(REPO), ANONYMOUS, true);
        assert!(record.public);
    }

    #[test]
    fn proven_list_is_bounded() {
        let mut record = None;
        for i in 0..100 {
            record = Some(prove(record, Some(REPO), &format!("fp{i}"), false));
        }
        let record = record.unwrap();
        assert_eq!(record.proven[REPO].len(), MAX_PROVEN_PER_REPOSITORY);
        assert_eq!(judge(Some(&record), Some(REPO), "fp99"), Verdict::Allowed);
        assert_eq!(judge(Some(&record), Some(REPO), "fp0"), Verdict::CheckRegistry);
    }
}
