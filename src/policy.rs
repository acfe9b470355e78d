//! The pull policy as a pure function: what the request asks and what the cache holds in, a decision
//! out. No I/O here, so every rule is a unit test.

use crate::digest::Sha256;

/// The WasmPlugin `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always for an OCI `latest` tag (or no tag), IfNotPresent otherwise: the Kubernetes rule.
    #[default]
    Unspecified,
    IfNotPresent,
    Always,
}

/// The parts of a request the policy looks at.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    pub policy: PullPolicy,
    pub expected: Option<Sha256>,
    pub resource_name: &'a str,
    pub resource_version: &'a str,
    /// The URL names something that moves by design (an OCI `latest` tag).
    pub floating: bool,
    /// The URL pins its content by digest (`oci://...@sha256:`): once cached, never re-checked.
    pub immutable: bool,
}

/// What the cache holds for the request: only what the URL itself is bound to. A module cached from
/// another URL never answers for this one, whatever digest the request names: only bytes fetched from a
/// URL bind it to a module.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The URL's last successful fetch, when its blob is still on disk.
    pub url: Option<UrlFacts>,
}

#[derive(Clone, Debug)]
pub struct UrlFacts {
    pub digest: Sha256,
    /// Digests of the image manifest and index the module came through (OCI).
    pub manifest_digest: Option<Sha256>,
    pub index_digest: Option<Sha256>,
    /// `(resource_name, resource_version)` recorded at that fetch.
    pub resource: Option<(String, String)>,
    /// False when a signature rule applies and the binding was not judged under the policy in force:
    /// it is judged again (with what upstream says) before it is served.
    pub judged: bool,
}

impl UrlFacts {
    /// True when `expected` names what the URL is bound to: the module's digest, or the digest of the
    /// image manifest or index it was pulled through.
    pub fn satisfies(&self, expected: Sha256) -> bool {
        [Some(self.digest), self.manifest_digest, self.index_digest].contains(&Some(expected))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve this blob without contacting upstream.
    UseCached(Sha256),
    /// Nothing usable is cached: fetch.
    Fetch,
    /// Something is cached but must be re-checked upstream. `stale_ok`: if the re-check fails, the
    /// cached copy may still be served (it may not when it is known not to be what was asked for).
    Revalidate { stale_ok: bool },
}

pub fn decide(ask: &Ask<'_>, facts: &Facts) -> Decision {
    let Some(url) = &facts.url else {
        return Decision::Fetch;
    };
    if !url.judged {
        return Decision::Revalidate { stale_ok: false };
    }
    match ask.expected {
        // Pinned content the URL is known to lead to: upstream has nothing to add, whatever the policy.
        Some(expected) if url.satisfies(expected) => return Decision::UseCached(url.digest),
        // The URL's cached module is not what was asked for.
        Some(_) => return Decision::Revalidate { stale_ok: false },
        None => {}
    }
    if ask.immutable {
        return Decision::UseCached(url.digest);
    }
    let policy = match ask.policy {
        PullPolicy::Unspecified if ask.floating => PullPolicy::Always,
        PullPolicy::Unspecified => PullPolicy::IfNotPresent,
        other => other,
    };
    match policy {
        PullPolicy::Unspecified | PullPolicy::IfNotPresent => Decision::UseCached(url.digest),
        PullPolicy::Always => {
            let same_resource = !ask.resource_version.is_empty()
                && url
                    .resource
                    .as_ref()
                    .is_some_and(|(name, version)| name == ask.resource_name && version == ask.resource_version);
            if same_resource {
                Decision::UseCached(url.digest)
            } else {
                Decision::Revalidate { stale_ok: true }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Sha256 {
        Sha256::from_bytes([n; 32])
    }

    fn ask(policy: PullPolicy, expected: Option<Sha256>, version: &str) -> Ask<'static> {
        let version: &'static str = Box::leak(version.to_string().into_boxed_str());
        Ask {
            policy,
            expected,
            resource_name: "ns/plugin",
            resource_version: version,
            floating: false,
            immutable: false,
        }
    }

    fn cached(digest: Sha256, version: Option<&str>) -> Facts {
        Facts {
            url: Some(UrlFacts {
                digest,
                manifest_digest: None,
                index_digest: None,
                resource: version.map(|v| ("ns/plugin".to_string(), v.to_string())),
                judged: true,
            }),
        }
    }

    #[test]
    fn expected_digest_the_url_is_bound_to_never_contacts_upstream_whatever_the_policy() {
        let facts = cached(d(1), Some("7"));
        for p in [PullPolicy::Unspecified, PullPolicy::IfNotPresent, PullPolicy::Always] {
            assert_eq!(decide(&ask(p, Some(d(1)), "8"), &facts), Decision::UseCached(d(1)));
        }
    }

    #[test]
    fn expected_digest_of_a_module_cached_for_another_url_fetches() {
        // The facts only ever describe the requested URL: nothing cached for it means a fetch.
        for p in [PullPolicy::Unspecified, PullPolicy::IfNotPresent, PullPolicy::Always] {
            assert_eq!(decide(&ask(p, Some(d(1)), ""), &Facts::default()), Decision::Fetch);
        }
    }

    #[test]
    fn nothing_cached_means_fetch() {
        assert_eq!(
            decide(&ask(PullPolicy::Always, None, "1"), &Facts::default()),
            Decision::Fetch
        );
        assert_eq!(
            decide(&ask(PullPolicy::IfNotPresent, Some(d(1)), ""), &Facts::default()),
            Decision::Fetch
        );
    }

    #[test]
    fn if_not_present_and_unspecified_use_the_cached_url() {
        for p in [PullPolicy::Unspecified, PullPolicy::IfNotPresent] {
            assert_eq!(
                decide(&ask(p, None, ""), &cached(d(2), None)),
                Decision::UseCached(d(2))
            );
        }
    }

    #[test]
    fn always_with_the_recorded_resource_version_uses_the_cache() {
        assert_eq!(
            decide(&ask(PullPolicy::Always, None, "7"), &cached(d(2), Some("7"))),
            Decision::UseCached(d(2))
        );
    }

    #[test]
    fn always_with_a_changed_or_empty_version_revalidates() {
        let facts = cached(d(2), Some("7"));
        assert_eq!(
            decide(&ask(PullPolicy::Always, None, "8"), &facts),
            Decision::Revalidate { stale_ok: true }
        );
        assert_eq!(
            decide(&ask(PullPolicy::Always, None, ""), &facts),
            Decision::Revalidate { stale_ok: true }
        );
    }

    #[test]
    fn always_with_another_resource_name_revalidates() {
        let facts = cached(d(2), Some("7"));
        let other = Ask {
            resource_name: "ns/other",
            ..ask(PullPolicy::Always, None, "7")
        };
        assert_eq!(decide(&other, &facts), Decision::Revalidate { stale_ok: true });
    }

    #[test]
    fn expected_manifest_or_index_digest_serves_the_module_the_url_led_to() {
        let facts = Facts {
            url: Some(UrlFacts {
                digest: d(3),
                manifest_digest: Some(d(7)),
                index_digest: Some(d(8)),
                resource: None,
                judged: true,
            }),
        };
        for expected in [d(7), d(8)] {
            assert_eq!(
                decide(&ask(PullPolicy::Always, Some(expected), ""), &facts),
                Decision::UseCached(d(3))
            );
        }
    }

    #[test]
    fn unspecified_on_a_floating_tag_behaves_as_always() {
        let floating = Ask {
            floating: true,
            ..ask(PullPolicy::Unspecified, None, "")
        };
        assert_eq!(
            decide(&floating, &cached(d(2), None)),
            Decision::Revalidate { stale_ok: true }
        );
        let versioned = Ask {
            floating: true,
            ..ask(PullPolicy::Unspecified, None, "7")
        };
        assert_eq!(decide(&versioned, &cached(d(2), Some("7"))), Decision::UseCached(d(2)));
    }

    #[test]
    fn unspecified_on_a_fixed_tag_behaves_as_if_not_present() {
        assert_eq!(
            decide(&ask(PullPolicy::Unspecified, None, ""), &cached(d(2), None)),
            Decision::UseCached(d(2))
        );
    }

    #[test]
    fn cached_digest_reference_is_never_rechecked() {
        let pinned = Ask {
            immutable: true,
            ..ask(PullPolicy::Always, None, "")
        };
        assert_eq!(decide(&pinned, &cached(d(2), None)), Decision::UseCached(d(2)));
    }

    #[test]
    fn binding_not_judged_under_the_policy_in_force_is_judged_again_whatever_else() {
        let mut facts = cached(d(2), Some("7"));
        facts.url.as_mut().unwrap().judged = false;
        for (policy, expected) in [(PullPolicy::IfNotPresent, None), (PullPolicy::Always, Some(d(2)))] {
            assert_eq!(
                decide(&ask(policy, expected, "7"), &facts),
                Decision::Revalidate { stale_ok: false }
            );
        }
    }

    #[test]
    fn expected_digest_other_than_cached_refetches_without_stale_fallback() {
        let decision = decide(&ask(PullPolicy::IfNotPresent, Some(d(9)), ""), &cached(d(2), None));
        assert_eq!(decision, Decision::Revalidate { stale_ok: false });
    }
}
