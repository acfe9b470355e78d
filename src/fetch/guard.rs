//! The destination filter: addresses no fetch may reach, checked on every resolved address, on IP
//! literals in URLs, and on every redirect, so a module URL can't be turned against the node's metadata
//! service or link-local neighbours (SSRF).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Always blocked: link-local ranges and the cloud metadata endpoints that live outside them.
pub(crate) const ALWAYS_BLOCKED: [&str; 4] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::/32", "100.100.100.200/32"];

#[derive(Clone, Debug)]
pub(crate) struct Guard {
    blocked: Arc<Vec<IpNet>>,
}

/// A destination the guard refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("destination {addr} is blocked ({net})")]
pub struct Blocked {
    pub addr: IpAddr,
    pub net: IpNet,
}

impl Guard {
    /// The always-blocked ranges plus the operator's.
    pub(crate) fn new(extra: &[IpNet]) -> Guard {
        let mut blocked: Vec<IpNet> = ALWAYS_BLOCKED
            .iter()
            .map(|n| n.parse().expect("valid built-in CIDR"))
            .collect();
        blocked.extend_from_slice(extra);
        Guard {
            blocked: Arc::new(blocked),
        }
    }

    pub(crate) fn check(&self, addr: IpAddr) -> Result<(), Blocked> {
        // IPv4-mapped IPv6 (::ffff:169.254.169.254) reaches the IPv4 address: judge it as one.
        let addr = addr.to_canonical();
        match self.blocked.iter().find(|net| net.contains(&addr)) {
            Some(net) => Err(Blocked { addr, net: *net }),
            None => Ok(()),
        }
    }

    /// Checks a URL host when it is an IP literal; names are checked when they resolve.
    pub(crate) fn check_url(&self, url: &url::Url) -> Result<(), Blocked> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }

    /// Keeps the allowed addresses of a name; refuses the name when none is left.
    pub(crate) fn filter(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Blocked> {
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(a.ip()) {
                Ok(()) => true,
                Err(b) => {
                    first_refusal.get_or_insert(b);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (true, Some(refusal)) => Err(refusal),
            _ => Ok(allowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_blocked_in_every_form() {
        let g = Guard::new(&[]);
        for a in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            assert!(g.check(ip(a)).is_err(), "{a}");
        }
        for a in ["127.0.0.1", "10.1.2.3", "::1", "100.100.100.201"] {
            assert!(g.check(ip(a)).is_ok(), "{a}");
        }
    }

    #[test]
    fn operator_ranges_are_added() {
        let g = Guard::new(&["10.0.0.0/8".parse().unwrap()]);
        assert!(g.check(ip("10.9.9.9")).is_err());
    }

    #[test]
    fn a_name_with_some_allowed_addresses_keeps_only_those() {
        let g = Guard::new(&[]);
        let addrs = vec!["169.254.1.1:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()];
        assert_eq!(
            g.filter(addrs).unwrap(),
            vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert!(g.filter(vec!["169.254.1.1:80".parse().unwrap()]).is_err());
    }
}
