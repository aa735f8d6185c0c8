//! The private-address guard: unless `WEBHOOK_ALLOW_PRIVATE=true`, a webhook never reaches
//! a loopback, private, link-local (or otherwise non-public) address.
//!
//! The check happens after name resolution, inside the HTTP client's resolver: the client
//! connects only to the addresses that passed, so a name that resolves to a public address
//! when checked and to a private one when connecting (DNS rebinding) cannot slip through.
//! An address written into the URL itself is never resolved, so it is checked before the
//! request ([`refused_literal`]).

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a destination was refused (found in the HTTP client's error chain).
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} resolves only to loopback, private or link-local addresses (WEBHOOK_ALLOW_PRIVATE is not set)")]
pub struct PrivateDestination(pub String);

/// Whether a delivery may connect to `ip`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), nat64(v6)) {
            (Some(v4), _) | (None, Some(v4)) => is_public_v4(v4),
            (None, None) => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8 ("this network"), 100.64.0.0/10 (carrier-grade NAT, shared space),
        // 198.18.0.0/15 (benchmarking) and 240.0.0.0/4 (reserved).
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240)
}

/// The IPv4 address inside a NAT64 address (64:ff9b::/96), which reaches it.
fn nat64(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80)
}

/// The refusal of a URL whose host is an address literal that is not public.
pub fn refused_literal(url: &reqwest::Url) -> Option<PrivateDestination> {
    let host = url.host_str()?;
    let ip: IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    (!is_public(ip)).then(|| PrivateDestination(ip.to_string()))
}

/// Resolves names with the system resolver and keeps only public addresses; a name with
/// none left is refused with [`PrivateDestination`].
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(PrivateDestination(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The refusal somewhere in `error`'s chain of causes, if that is why it failed.
pub fn refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a PrivateDestination> {
    std::iter::successors(Some(error), |e| (*e).source()).find_map(|e| e.downcast_ref::<PrivateDestination>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_and_link_local_addresses_are_not_public() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused}");
        }
        for allowed in
            ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:2800:220:1::1", "64:ff9b::808:808"]
        {
            assert!(is_public(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn address_literals_are_checked_before_any_request() {
        let check = |url: &str| refused_literal(&url.parse().unwrap()).is_some();
        assert!(check("http://127.0.0.1:9000/hook"));
        assert!(check("https://[::1]/hook"));
        assert!(check("http://169.254.169.254/latest"));
        assert!(!check("https://8.8.8.8/hook"));
        // Names are checked once resolved, by the resolver.
        assert!(!check("http://localhost/hook"));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        let error = PublicOnly.resolve("localhost".parse().unwrap()).await.err().unwrap();
        assert!(refusal(error.as_ref()).is_some(), "{error}");
    }
}
