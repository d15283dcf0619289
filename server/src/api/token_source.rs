//! Where a request carries its token, which one wins, and
//! [`authenticate`]: find it and verify it, with the answer to send when
//! that fails ([`Refusal`]: 401 or 403, challenge and body).
//!
//! Precedence, first present wins (a present but bad token is refused, the
//! next source is not tried):
//! 1. `Authorization: Bearer <token>`: what every non-browser client sends;
//! 2. the `authorization` query parameter, for clients that cannot set
//!    headers (`EventSource`); it ends up in access logs of every proxy on
//!    the way, so prefer the cookie in browsers;
//! 3. the cookie `stentorAuthorization`, then `mercureAuthorization` (so
//!    an existing Mercure token issuer works unchanged).
//!
//! Explicit beats ambient: a cookie is sent with every request to the
//! domain, possibly set by another app on it, while a header or a query
//! parameter was put there for this request. This is Mercure's order too.
//!
//! Two `Authorization` headers or two `authorization` parameters are
//! refused as ambiguous. An `Authorization` header with another scheme
//! (`Basic`, from a password-protected staging proxy) is not a token and is
//! skipped. Cookies are parsed leniently (RFC 6265 §5.4 as browsers send
//! them): several `Cookie` headers, `;` with or without spaces, quoted
//! values, other cookies that are not UTF-8.

use super::jwt::{AuthError, Claims, Forbidden, Keys, Role, MISSING_TOKEN_CHALLENGE};
use crate::wire::http::RequestHead;

/// The query parameter of source 2.
pub const QUERY_PARAM: &str = "authorization";
/// The cookies of source 3, in order of preference.
pub const COOKIE_NAMES: [&str; 2] = ["stentorAuthorization", "mercureAuthorization"];

/// Which source a token came from. A publish authorized by a cookie is open
/// to cross-site request forgery: the caller may refuse [`Source::Cookie`]
/// for publishing unless the `Origin` is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie(&'static str),
}

/// A token found in a request, not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    pub token: &'a str,
    pub source: Source,
}

/// The token of a request, by the precedence above. `Ok(None)`: none was
/// sent (401 with [`super::jwt::MISSING_TOKEN_CHALLENGE`] where one is
/// needed). `query` is the request's decoded query pairs
/// (`wire::http::parse_query`).
pub fn find<'a>(
    head: &'a RequestHead,
    query: &'a [(String, String)],
) -> Result<Option<Presented<'a>>, AuthError> {
    if let Some(token) = bearer(head)? {
        return Ok(Some(Presented {
            token,
            source: Source::Header,
        }));
    }
    let mut in_query = query.iter().filter(|(k, _)| k == QUERY_PARAM);
    if let Some((_, v)) = in_query.next() {
        if in_query.next().is_some() {
            return Err(AuthError::Malformed);
        }
        let token = v.trim();
        if token.is_empty() {
            return Err(AuthError::Malformed);
        }
        return Ok(Some(Presented {
            token,
            source: Source::Query,
        }));
    }
    for name in COOKIE_NAMES {
        if let Some(token) = cookie(head, name) {
            if token.is_empty() {
                return Err(AuthError::Malformed);
            }
            return Ok(Some(Presented {
                token,
                source: Source::Cookie(name),
            }));
        }
    }
    Ok(None)
}

/// Why a request is not authorized, with everything its answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A token is required and none was sent: 401.
    Missing,
    /// The token is not valid: 401 `invalid_token`.
    Invalid(AuthError),
    /// The token is valid but does not cover a topic: 403.
    Forbidden(Forbidden),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Missing | Refusal::Invalid(_) => AuthError::STATUS,
            Refusal::Forbidden(_) => Forbidden::STATUS,
        }
    }

    /// The `WWW-Authenticate` value.
    pub fn challenge(&self) -> String {
        match self {
            Refusal::Missing => MISSING_TOKEN_CHALLENGE.to_string(),
            Refusal::Invalid(e) => e.challenge(),
            Refusal::Forbidden(f) => f.challenge().to_string(),
        }
    }

    /// One line for the response body.
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing => format!(
                "missing token: send Authorization: Bearer <token>, the {QUERY_PARAM} \
                 query parameter or the {} cookie",
                COOKIE_NAMES[0]
            ),
            Refusal::Invalid(e) => format!("invalid token: {}", e.reason()),
            Refusal::Forbidden(f) => f.message(),
        }
    }
}

impl From<Forbidden> for Refusal {
    fn from(f: Forbidden) -> Refusal {
        Refusal::Forbidden(f)
    }
}

/// Find and verify the token of a request for `role`. `Ok(None)`: no token
/// was sent and `required` is false (an anonymous stream: public events
/// only). A token that is sent is always verified, required or not: a bad
/// one is a 401, never silently anonymous. Which topics it covers is the
/// caller's next step ([`Claims::authorize`], all or nothing).
pub fn authenticate(
    keys: &Keys,
    role: Role,
    head: &RequestHead,
    query: &[(String, String)],
    required: bool,
) -> Result<Option<(Claims, Source)>, Refusal> {
    match find(head, query).map_err(Refusal::Invalid)? {
        Some(p) => {
            let claims = keys.verify(p.token, role).map_err(Refusal::Invalid)?;
            Ok(Some((claims, p.source)))
        }
        None if required => Err(Refusal::Missing),
        None => Ok(None),
    }
}

/// The token of the `Authorization: Bearer` header, if there is one.
fn bearer(head: &RequestHead) -> Result<Option<&str>, AuthError> {
    let mut found = None;
    for value in head.headers_all("authorization") {
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let value = value.trim_matches([' ', '\t']);
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        if found.is_some() {
            return Err(AuthError::Malformed);
        }
        let token = rest.trim_matches([' ', '\t']);
        if token.is_empty() {
            return Err(AuthError::Malformed);
        }
        found = Some(token);
    }
    Ok(found)
}

/// The value of cookie `name` across every `Cookie` header; the first one
/// wins (browsers send the most specific path first, RFC 6265 §5.4).
/// Surrounding double quotes are removed. Names are case-sensitive.
pub fn cookie<'a>(head: &'a RequestHead, name: &str) -> Option<&'a str> {
    for header in head.headers_all("cookie") {
        for pair in header.split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (k, v) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
            if k != name.as_bytes() {
                continue;
            }
            let v = match v {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            };
            // A token is ASCII; a value that is not UTF-8 is not ours.
            return std::str::from_utf8(v).ok();
        }
    }
    None
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::http::{parse_head, parse_query, HeadStatus, Limits};

    fn head(headers: &[(&str, &[u8])]) -> RequestHead {
        let mut raw = b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\n".to_vec();
        for (n, v) in headers {
            raw.extend_from_slice(n.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(v);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        match parse_head(&raw, &Limits::default()) {
            Ok(HeadStatus::Complete { head, .. }) => head,
            other => panic!("head did not parse: {other:?}"),
        }
    }

    fn q(query: &str) -> Vec<(String, String)> {
        parse_query(query).expect("query")
    }

    fn found(h: &RequestHead, query: &[(String, String)]) -> Option<(String, Source)> {
        find(h, query)
            .expect("no error")
            .map(|p| (p.token.to_string(), p.source))
    }

    #[test]
    fn precedence_header_then_query_then_cookies() {
        let cookies: &[u8] = b"mercureAuthorization=m; stentorAuthorization=s";
        let all = head(&[("Authorization", b"Bearer h"), ("Cookie", cookies)]);
        let query = q("topic=a&authorization=qq");
        assert_eq!(found(&all, &query), Some(("h".into(), Source::Header)));
        let no_header = head(&[("Cookie", cookies)]);
        assert_eq!(
            found(&no_header, &query),
            Some(("qq".into(), Source::Query))
        );
        assert_eq!(
            found(&no_header, &q("topic=a")),
            Some(("s".into(), Source::Cookie("stentorAuthorization")))
        );
        let mercure_only = head(&[("Cookie", b"mercureAuthorization=m")]);
        assert_eq!(
            found(&mercure_only, &[]),
            Some(("m".into(), Source::Cookie("mercureAuthorization")))
        );
        assert_eq!(found(&head(&[]), &q("topic=a")), None);
    }

    #[test]
    fn bearer_header() {
        let h = head(&[("authorization", b"bearer   abc.def.ghi  ")]);
        assert_eq!(found(&h, &[]).map(|f| f.0), Some("abc.def.ghi".into()));
        // Another scheme is not a token: the cookie is used.
        let basic = head(&[
            ("Authorization", b"Basic dXNlcjpwYXNz"),
            ("Cookie", b"stentorAuthorization=c"),
        ]);
        assert_eq!(found(&basic, &[]).map(|f| f.0), Some("c".into()));
        for bad in [
            head(&[("Authorization", b"Bearer")]),
            head(&[("Authorization", b"Bearer   ")]),
            head(&[
                ("Authorization", b"Bearer a"),
                ("Authorization", b"Bearer b"),
            ]),
            head(&[("Authorization", b"Bearer \xff")]),
        ] {
            assert_eq!(find(&bad, &[]), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn query_parameter() {
        let h = head(&[]);
        assert_eq!(
            find(&h, &q("authorization=a&authorization=b")),
            Err(AuthError::Malformed)
        );
        assert_eq!(find(&h, &q("authorization=")), Err(AuthError::Malformed));
        // Percent-decoding is parse_query's: a token survives it intact.
        assert_eq!(
            found(&h, &q("authorization=a%2Eb.c")).map(|f| f.0),
            Some("a.b.c".into())
        );
        // Other names are not tokens (case matters, as for every parameter).
        assert_eq!(found(&h, &q("Authorization=x&access_token=y")), None);
    }

    #[test]
    fn authenticate_then_authorize() {
        use crate::api::jwt::JwtConfig;
        use jsonwebtoken::{encode, EncodingKey, Header};
        let secret = "a-test-secret-of-at-least-32-bytes-long";
        let keys = Keys::load(&JwtConfig {
            key: Some(secret.into()),
            ..Default::default()
        })
        .expect("keys")
        .expect("enabled");
        let claims = serde_json::json!({"mercure": {"subscribe": ["users/7/*"]}});
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode");
        let cookie_header = format!("stentorAuthorization={token}");
        let h = head(&[("Cookie", cookie_header.as_bytes())]);
        let (c, source) = authenticate(&keys, Role::Subscriber, &h, &[], true)
            .expect("valid")
            .expect("present");
        assert_eq!(source, Source::Cookie("stentorAuthorization"));
        assert!(c.authorize(Role::Subscriber, ["users/7/inbox"]).is_ok());
        let r = Refusal::from(
            c.authorize(Role::Subscriber, ["users/8/inbox"])
                .expect_err("other user"),
        );
        assert_eq!(r.status(), 403);
        assert!(r.message().contains("users/8/inbox"));
        assert!(r.challenge().contains("insufficient_scope"));

        let none = head(&[]);
        assert!(matches!(
            authenticate(&keys, Role::Subscriber, &none, &[], false),
            Ok(None)
        ));
        let r = authenticate(&keys, Role::Subscriber, &none, &[], true).expect_err("required");
        assert_eq!(
            (r.status(), r.challenge().as_str()),
            (401, MISSING_TOKEN_CHALLENGE)
        );
        // A bad token is refused even where none is required.
        let r = authenticate(
            &keys,
            Role::Subscriber,
            &none,
            &q("authorization=x.y.z"),
            false,
        )
        .expect_err("bad token");
        assert_eq!(r.status(), 401);
        assert!(r.challenge().contains(r#"error="invalid_token""#));
        assert!(r.message().starts_with("invalid token: "));
    }

    proptest::proptest! {
        /// Other cookies, whatever their bytes, neither hide ours nor break
        /// the parse; with ours absent, nothing is found.
        #[test]
        fn our_cookie_is_found_among_any_others(
            before in proptest::collection::vec(proptest::collection::vec(0x20u8..0xff, 0..30), 0..4),
            after in proptest::collection::vec(proptest::collection::vec(0x20u8..0xff, 0..30), 0..4),
            value in "[A-Za-z0-9._-]{1,40}",
        ) {
            // Other pairs must not themselves be named stentorAuthorization.
            let clean = |v: &Vec<u8>| -> Vec<u8> {
                v.iter().map(|&b| if b == b';' || b == b'=' || b == 0x7f { b'x' } else { b }).collect()
            };
            let mut header = Vec::new();
            for v in &before {
                header.extend_from_slice(b"k=");
                header.extend_from_slice(&clean(v));
                header.extend_from_slice(b"; ");
            }
            header.extend_from_slice(format!("stentorAuthorization={value}").as_bytes());
            for v in &after {
                header.extend_from_slice(b";");
                header.extend_from_slice(&clean(v));
            }
            let h = head(&[("Cookie", &header)]);
            proptest::prop_assert_eq!(cookie(&h, "stentorAuthorization"), Some(value.as_str()));
            proptest::prop_assert_eq!(cookie(&h, "mercureAuthorization"), None);
        }
    }

    #[test]
    fn cookies_parse_like_browsers_send_them() {
        let cases: &[(&[&[u8]], Option<&str>)] = &[
            (&[b"stentorAuthorization=tok"], Some("tok")),
            (&[b"a=1; stentorAuthorization=tok; b=2"], Some("tok")),
            (&[b"a=1;stentorAuthorization=tok;b=2"], Some("tok")),
            (&[b"  stentorAuthorization = tok  ;"], Some("tok")),
            (&[b"stentorAuthorization=\"tok\""], Some("tok")),
            (&[b"a=1", b"stentorAuthorization=tok"], Some("tok")),
            (
                &[b"stentorAuthorization=first; stentorAuthorization=second"],
                Some("first"),
            ),
            (&[b"junk; x; stentorAuthorization=tok"], Some("tok")),
            (&[b"other=\xff\xfe; stentorAuthorization=tok"], Some("tok")),
            (&[b"stentorauthorization=tok"], None),
            (&[b"xstentorAuthorization=tok"], None),
            (&[b"a=stentorAuthorization=tok"], None),
            (&[b""], None),
        ];
        for (headers, want) in cases {
            let hs: Vec<(&str, &[u8])> = headers.iter().map(|v| ("Cookie", *v)).collect();
            let h = head(&hs);
            assert_eq!(cookie(&h, "stentorAuthorization"), *want, "{headers:?}");
        }
        let empty = head(&[("Cookie", b"stentorAuthorization=")]);
        assert_eq!(find(&empty, &[]), Err(AuthError::Malformed));
    }
}
