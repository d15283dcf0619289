//! Who may do what: shared bearer tokens and the rule for publishing
//! without one. Pure: a parsed head and the client in, a verdict out.

use super::client::{self, Client};
use super::cors::Cors;
use super::response::Response;
use crate::hub::publish::PublishError;
use crate::wire::http::RequestHead;

/// Compare a presented token with the configured one in time independent
/// of where they differ, so response timing does not reveal a prefix.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= p ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(head: &RequestHead) -> Option<&str> {
    let value = head.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The 401 answer: which token is missing or wrong, and the challenge.
pub fn unauthorized(what: &str, presented: bool, json: bool, keep_alive: bool) -> Response {
    let (message, challenge) = if presented {
        (
            format!("wrong {what} token"),
            r#"Bearer realm="stentor", error="invalid_token""#,
        )
    } else {
        (
            format!("missing {what} token: send Authorization: Bearer <token>"),
            r#"Bearer realm="stentor""#,
        )
    };
    let mut r = if json {
        Response::publish_error(&PublishError::new(401, None, message), keep_alive)
    } else {
        Response::text(401, &message, keep_alive)
    };
    r.headers.push(("WWW-Authenticate", challenge.to_string()));
    r
}

/// Whether `origin` is the node's own page as a local browser sees it:
/// `http(s)://` + the `Host` the request was sent to, where that host is a
/// loopback name. A page from anywhere else has another origin; a page of a
/// DNS-rebinding attacker has its own (non-loopback) host name in both.
fn same_loopback_origin(head: &RequestHead, origin: &str) -> bool {
    let Some(host) = head.header("host").map(str::trim) else {
        return false;
    };
    let Some(origin_host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if !origin_host.eq_ignore_ascii_case(host) {
        return false;
    }
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| client::canonical(ip).is_loopback())
}

/// Why a publish without a token is refused, or `None` when it may pass.
///
/// Without a publish token, publishing is for tools on the node itself.
/// Each rule closes a way in that trusting the TCP peer alone left open:
/// - the client must be loopback: resolved through `--trusted-proxy`, so a
///   proxy on the node no longer makes every internet client "local";
/// - no proxy headers unless a trusted proxy sent them and named a loopback
///   client: an untrusted local proxy forwarding the internet would
///   otherwise be taken for a local tool;
/// - no `Origin` other than a listed one or the node's own page on a
///   loopback host, and no `Sec-Fetch-Site: cross-site`: a page in a
///   browser on the node may send a form POST to 127.0.0.1 without a
///   preflight (cross-site request forgery).
pub fn tokenless_publish_refusal(
    head: &RequestHead,
    client: &Client,
    cors: &Cors,
) -> Option<&'static str> {
    if !client.is_loopback() {
        return Some(
            "publishing is only accepted from loopback while no --publish-token is set; \
             set --publish-token (STENTOR_PUBLISH_TOKEN) and send Authorization: Bearer <token>",
        );
    }
    if client::has_proxy_headers(head) && !client.forwarded {
        return Some(
            "the request came through a proxy (Forwarded, X-Forwarded-For, X-Real-IP or Via) \
             that is not a --trusted-proxy; publishing through a proxy needs --publish-token",
        );
    }
    if let Some(origin) = head.header("origin") {
        if !cors.lists(origin) && !same_loopback_origin(head, origin) {
            return Some(
                "cross-origin publish refused: the Origin is not listed in --cors-origin; \
                 a browser page may only publish with --publish-token",
            );
        }
    }
    let cross_site = head
        .header("sec-fetch-site")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"));
    if cross_site {
        return Some("cross-site publish refused (Sec-Fetch-Site: cross-site)");
    }
    None
}
