//! Who the client is behind proxies.
//!
//! The TCP peer of an edge node is often a load balancer or a local proxy,
//! not the client. Only peers the operator listed with `--trusted-proxy`
//! may say who the client is, through `Forwarded: for=` (RFC 7239) or
//! `X-Forwarded-For` (or a PROXY protocol header, see `wire::proxy`). The
//! client is the nearest hop that is not itself a trusted proxy: walking the
//! list from the right (the hop our peer added) past trusted proxies, the
//! first untrusted address is the one nobody we trust could have made up.
//! A header a trusted proxy sent that we cannot read makes the client
//! unknown: never loopback, never privileged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::wire::http::RequestHead;

/// Most hops read from forwarding headers; past it the client is unknown.
pub const FORWARDED_HOPS_MAX: usize = 32;
/// Most `--trusted-proxy` entries.
pub const TRUSTED_PROXIES_MAX: usize = 256;

/// Headers that say a request passed through a proxy.
pub const PROXY_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-for", "x-real-ip", "via"];

/// An address block, `10.0.0.0/8` or `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an address or CIDR block (e.g. 10.0.0.0/8)"))?;
        let net = canonical(net);
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0..={bits}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Written as its text (`10.0.0.0/8`), as the flag and the config file take it.
impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `--trusted-proxy`: the peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies { blocks }
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// A v4-mapped IPv6 address is the IPv4 one: one client, one identity.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The client of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address; `None` when a trusted proxy sent forwarding headers we
    /// could not read (then it is nobody in particular: not loopback).
    pub ip: Option<IpAddr>,
    /// The request came through a trusted proxy that named the client.
    pub forwarded: bool,
}

impl Client {
    pub fn is_loopback(&self) -> bool {
        self.ip.is_some_and(|ip| canonical(ip).is_loopback())
    }
}

/// The client of a request whose TCP peer (or PROXY protocol source) is
/// `peer`. Headers from an untrusted peer are ignored: anyone can send them.
pub fn resolve(head: &RequestHead, peer: IpAddr, proxies: &TrustedProxies) -> Client {
    let peer = canonical(peer);
    if !proxies.contains(peer) {
        return Client {
            ip: Some(peer),
            forwarded: false,
        };
    }
    let hops = if head.headers_all("forwarded").next().is_some() {
        forwarded_for(head)
    } else if head.headers_all("x-forwarded-for").next().is_some() {
        x_forwarded_for(head)
    } else {
        // A trusted proxy that names nobody is the client itself (a health
        // check, a local tool going through it).
        return Client {
            ip: Some(peer),
            forwarded: false,
        };
    };
    let ip = hops.and_then(|hops| {
        // Nearest first: the last hop was added by our peer.
        let mut client = None;
        for hop in hops.iter().rev() {
            client = Some(*hop);
            if !proxies.contains(*hop) {
                break;
            }
        }
        client
    });
    Client {
        ip,
        forwarded: true,
    }
}

/// Every `for=` of every `Forwarded` header, in order; `None` when one is
/// unreadable or obfuscated (`for=unknown`, `for=_hidden`), or past the bound.
fn forwarded_for(head: &RequestHead) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in head.headers_all("forwarded") {
        let value = std::str::from_utf8(value).ok()?;
        for element in value.split(',') {
            let mut found = false;
            for pair in element.split(';') {
                let Some((name, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if !name.trim().eq_ignore_ascii_case("for") {
                    continue;
                }
                if found {
                    return None; // two `for` in one element
                }
                found = true;
                hops.push(node_ip(v.trim())?);
            }
            if !found {
                return None;
            }
            if hops.len() > FORWARDED_HOPS_MAX {
                return None;
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// An RFC 7239 node: `192.0.2.60`, `"192.0.2.60:8080"`, `"[2001:db8::1]:80"`.
fn node_ip(v: &str) -> Option<IpAddr> {
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    if let Some(rest) = v.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.starts_with(':')) {
            return None;
        }
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let addr = match v.split_once(':') {
        Some((a, _port)) => a,
        None => v,
    };
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Every address of every `X-Forwarded-For` header, in order; `None` when
/// one is not an address, or past the bound.
fn x_forwarded_for(head: &RequestHead) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in head.headers_all("x-forwarded-for") {
        let value = std::str::from_utf8(value).ok()?;
        for item in value.split(',') {
            let item = item.trim();
            let ip = item.parse::<IpAddr>().ok().or_else(|| node_ip(item))?;
            hops.push(ip);
            if hops.len() > FORWARDED_HOPS_MAX {
                return None;
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// Whether the request carries any header that says it passed a proxy.
pub fn has_proxy_headers(head: &RequestHead) -> bool {
    PROXY_HEADERS
        .iter()
        .any(|h| head.headers_all(h).next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::http::{parse_head, HeadStatus, Limits};

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let limits = Limits {
            head_bytes_max: 8192,
            headers_count_max: 64,
            uri_bytes_max: 4096,
            body_bytes_max: 1024,
        };
        match parse_head(raw.as_bytes(), &limits) {
            Ok(HeadStatus::Complete { head, .. }) => head,
            other => panic!("{other:?}"),
        }
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.9.8.7")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")), "v4-mapped is v4");
        let c: Cidr = "::1".parse().unwrap();
        assert!(c.contains(ip("::1")) && !c.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in [
            "10.0.0.0/33",
            "nonsense",
            "10.0.0.0/",
            "::/129",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = head("X-Forwarded-For: 127.0.0.1\r\nForwarded: for=127.0.0.1\r\n");
        let c = resolve(&h, ip("203.0.113.5"), &proxies(&["127.0.0.1"]));
        assert_eq!(c.ip, Some(ip("203.0.113.5")));
        assert!(!c.forwarded && !c.is_loopback());
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        // A client spoofs a first hop; our proxies appended the real one.
        let h = head("X-Forwarded-For: 127.0.0.1, 198.51.100.7, 10.0.0.2\r\n");
        let c = resolve(&h, ip("127.0.0.1"), &p);
        assert_eq!(c.ip, Some(ip("198.51.100.7")));
        assert!(c.forwarded && !c.is_loopback());
        // Forwarded wins over X-Forwarded-For, with quoting, ports, IPv6.
        let h = head(
            "Forwarded: for=\"[2001:db8::1]:443\";proto=https, for=10.1.1.1\r\nX-Forwarded-For: 127.0.0.1\r\n",
        );
        assert_eq!(resolve(&h, ip("127.0.0.1"), &p).ip, Some(ip("2001:db8::1")));
        // Several headers are one list, in order.
        let h = head("X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 10.0.0.3\r\n");
        assert_eq!(resolve(&h, ip("127.0.0.1"), &p).ip, Some(ip("192.0.2.1")));
        // Everyone trusted: the farthest hop is the client (a local tool).
        let h = head("X-Forwarded-For: 127.0.0.1\r\n");
        let c = resolve(&h, ip("127.0.0.1"), &p);
        assert!(c.is_loopback() && c.forwarded);
        // No header from a trusted proxy: the proxy itself.
        let c = resolve(&head(""), ip("10.0.0.9"), &p);
        assert_eq!((c.ip, c.forwarded), (Some(ip("10.0.0.9")), false));
    }

    #[test]
    fn unreadable_or_hidden_hops_make_the_client_unknown() {
        let p = proxies(&["127.0.0.1"]);
        for extra in [
            "Forwarded: for=unknown\r\n",
            "Forwarded: for=_hidden\r\n",
            "Forwarded: proto=https\r\n",
            "Forwarded: for=1.2.3.4;for=5.6.7.8\r\n",
            "X-Forwarded-For: not-an-ip\r\n",
            "X-Forwarded-For: 1.2.3.4,,\r\n",
        ] {
            let c = resolve(&head(extra), ip("127.0.0.1"), &p);
            assert_eq!(c.ip, None, "{extra}");
            assert!(!c.is_loopback());
        }
        let long = (0..=FORWARDED_HOPS_MAX)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect::<Vec<_>>()
            .join(", ");
        let c = resolve(
            &head(&format!("X-Forwarded-For: {long}\r\n")),
            ip("127.0.0.1"),
            &p,
        );
        assert_eq!(c.ip, None);
    }

    #[test]
    fn proxy_headers_are_noticed() {
        assert!(!has_proxy_headers(&head("")));
        for h in [
            "Via: 1.1 nginx",
            "X-Real-IP: 1.2.3.4",
            "forwarded: for=1.2.3.4",
            "X-Forwarded-For: 1.1.1.1",
        ] {
            assert!(has_proxy_headers(&head(&format!("{h}\r\n"))), "{h}");
        }
    }
}
