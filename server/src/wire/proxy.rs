//! The PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer
//! puts before the client's bytes to say who the client is. Pure and
//! incremental: bytes in, `Partial`, the header's length and source, or a
//! refusal. Only peers listed with `--trusted-proxy` may send one, and with
//! `--proxy-protocol` they must.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included (the specification's bound).
pub const V1_BYTES_MAX: usize = 107;
/// Longest version 2 header we accept (addresses and TLVs).
pub const V2_BYTES_MAX: usize = 16 + 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyStatus {
    /// More bytes are needed.
    Partial,
    /// A header of `len` bytes; `source` is the client, `None` for a
    /// `LOCAL`/`UNKNOWN` connection (the proxy's own, e.g. a health check).
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    Missing,
    TooLong,
    Malformed(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => {
                f.write_str("a PROXY protocol header is required from this peer")
            }
            ProxyError::TooLong => f.write_str("PROXY protocol header too long"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

/// Parse the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<ProxyStatus, ProxyError> {
    let v1 = b"PROXY ";
    if buf.len() >= V2_SIGNATURE.len() && buf[..V2_SIGNATURE.len()] == V2_SIGNATURE {
        return parse_v2(buf);
    }
    if buf.len() >= v1.len() && &buf[..v1.len()] == v1 {
        return parse_v1(buf);
    }
    let prefix_of = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if prefix_of(&V2_SIGNATURE) || prefix_of(v1) {
        return Ok(ProxyStatus::Partial);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<ProxyStatus, ProxyError> {
    let window = &buf[..buf.len().min(V1_BYTES_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_BYTES_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(ProxyStatus::Partial)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let len = end + 2;
    let family = parts.next().ok_or(ProxyError::Malformed("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(ProxyStatus::Complete { len, source: None });
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed(
            "expected 4 fields after the protocol",
        ));
    };
    let (src, _dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(
                src.parse::<Ipv4Addr>()
                    .map_err(|_| ProxyError::Malformed("bad IPv4 source"))?,
            ),
            IpAddr::V4(
                dst.parse::<Ipv4Addr>()
                    .map_err(|_| ProxyError::Malformed("bad IPv4 destination"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(
                src.parse::<Ipv6Addr>()
                    .map_err(|_| ProxyError::Malformed("bad IPv6 source"))?,
            ),
            IpAddr::V6(
                dst.parse::<Ipv6Addr>()
                    .map_err(|_| ProxyError::Malformed("bad IPv6 destination"))?,
            ),
        ),
        _ => return Err(ProxyError::Malformed("unknown protocol")),
    };
    let port = |p: &str| {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return Err(ProxyError::Malformed("bad port"));
        }
        p.parse::<u16>()
            .map_err(|_| ProxyError::Malformed("bad port"))
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(ProxyStatus::Complete {
        len,
        source: Some(SocketAddr::new(src, sport)),
    })
}

fn parse_v2(buf: &[u8]) -> Result<ProxyStatus, ProxyError> {
    if buf.len() < 16 {
        return Ok(ProxyStatus::Partial);
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > V2_BYTES_MAX {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < len {
        return Ok(ProxyStatus::Partial);
    }
    let body = &buf[16..len];
    match command {
        0 => return Ok(ProxyStatus::Complete { len, source: None }), // LOCAL
        1 => {}
        _ => return Err(ProxyError::Malformed("unknown command")),
    }
    let source = match buf[13] {
        0x11 => {
            if body.len() < 12 {
                return Err(ProxyError::Malformed("short IPv4 addresses"));
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        0x21 => {
            if body.len() < 36 {
                return Err(ProxyError::Malformed("short IPv6 addresses"));
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // UNSPEC or a family we do not carry (UDP, unix): the proxy's own.
        0x00 => None,
        _ => return Err(ProxyError::Malformed("unsupported address family")),
    };
    Ok(ProxyStatus::Complete { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn version_1_lines() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let len = h.iter().position(|b| *b == b'\n').unwrap() + 1;
        assert_eq!(
            parse(h),
            Ok(ProxyStatus::Complete {
                len,
                source: Some("203.0.113.7:56324".parse().unwrap())
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(
            matches!(parse(h), Ok(ProxyStatus::Complete { source: Some(s), .. }) if s.ip() == "2001:db8::1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(ProxyStatus::Complete {
                len: 15,
                source: None
            })
        );
        for partial in [&b"PRO"[..], b"PROXY TCP4 1.2.3.4", b"\r\n\r\n\0"] {
            assert_eq!(parse(partial), Ok(ProxyStatus::Partial), "{partial:?}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
    }

    #[test]
    fn version_2_blocks() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1];
        body.extend_from_slice(&4242u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h),
            Ok(ProxyStatus::Complete {
                len: h.len(),
                source: Some("198.51.100.9:4242".parse().unwrap())
            })
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(ProxyStatus::Partial), "cut at {cut}");
        }
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&7u16.to_be_bytes());
        assert!(
            matches!(parse(&v2(1, 0x21, &six)), Ok(ProxyStatus::Complete { source: Some(s), .. }) if s == "[::1]:7".parse().unwrap())
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Ok(ProxyStatus::Complete {
                len: 16,
                source: None
            })
        );
        assert!(parse(&v2(1, 0x11, &[1, 2, 3])).is_err(), "short addresses");
        assert!(parse(&v2(2, 0x11, &body)).is_err(), "unknown command");
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyError::TooLong));
    }
}
