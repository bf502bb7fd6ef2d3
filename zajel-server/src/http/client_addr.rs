//! The client's address, for throttling and connection caps.
//!
//! Behind reverse proxies that *append* to `X-Forwarded-For`, only the entries added by
//! proxies we trust are believable: everything to their left was written by the client. So
//! the client is the rightmost address that is not a trusted proxy, and only when the direct
//! peer itself is trusted.

use crate::engine::Engine;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The client's address (from the connection, or `X-Forwarded-For` when configured).
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

impl FromRequestParts<Engine> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let cfg = engine.config();
        if !cfg.trust_forwarded_for {
            return Ok(ClientAddr(peer));
        }
        Ok(ClientAddr(client_address(
            peer,
            &parts.headers,
            &cfg.trusted_proxies,
        )))
    }
}

/// Whether `ip` is one of `trusted` (addresses or CIDR ranges; unparsable entries match
/// nothing).
fn is_trusted(ip: IpAddr, trusted: &[String]) -> bool {
    trusted.iter().any(|t| match t.split_once('/') {
        None => t.trim().parse::<IpAddr>().is_ok_and(|a| a == ip),
        Some((net, bits)) => match (net.trim().parse::<IpAddr>(), bits.trim().parse::<u32>()) {
            (Ok(IpAddr::V4(net)), Ok(bits)) if bits <= 32 => match ip {
                IpAddr::V4(ip) => {
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    u32::from(ip) & mask == u32::from(net) & mask
                }
                IpAddr::V6(_) => false,
            },
            (Ok(IpAddr::V6(net)), Ok(bits)) if bits <= 128 => match ip {
                IpAddr::V6(ip) => {
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    u128::from(ip) & mask == u128::from(net) & mask
                }
                IpAddr::V4(_) => false,
            },
            _ => false,
        },
    })
}

/// The client address: the direct `peer` unless it is a trusted proxy (any peer when
/// `trusted` is empty), then the rightmost `X-Forwarded-For` hop that is not trusted. A
/// malformed hop stops the walk at the last good address (never trusting what is left of it).
pub(crate) fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[String],
) -> Option<IpAddr> {
    let trusted_peer = peer.is_none_or(|p| trusted.is_empty() || is_trusted(p, trusted));
    if !trusted_peer {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = Some(ip);
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("header"));
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let trusted = vec!["10.0.0.0/8".to_owned(), "192.0.2.7".to_owned()];
        // The client forged "6.6.6.6"; the proxies appended the real address 203.0.113.9.
        let h = xff("6.6.6.6, 203.0.113.9, 10.1.2.3");
        assert_eq!(
            client_address(ip("192.0.2.7"), &h, &trusted),
            ip("203.0.113.9")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        // No trusted list: the peer is the one proxy, the last hop is the client.
        assert_eq!(client_address(ip("127.0.0.1"), &h, &[]), ip("10.1.2.3"));
        // Garbage stops the walk.
        let h = xff("1.1.1.1, nonsense, 10.0.0.1");
        assert_eq!(client_address(ip("10.0.0.2"), &h, &trusted), ip("10.0.0.1"));
        assert!(is_trusted(
            "fd00::1".parse().expect("v6"),
            &["fd00::/8".into()]
        ));
        assert!(!is_trusted(
            "1.2.3.4".parse().expect("v4"),
            &["1.2.3.0/33".into()]
        ));
    }
}
