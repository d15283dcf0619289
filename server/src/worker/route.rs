//! What to do with one complete request: the routing table of the node,
//! kept apart from the loop so the API can grow without touching I/O.
//! Pure: a parsed head and body in, an [`Action`] out. Auth (bearer tokens,
//! the loopback rule), CORS and publish-body validation all live here.

use crate::hub::id::ResumePoint;
use crate::hub::publish::{parse_publish, PublishError, PublishRequest, PublishRules};
use crate::hub::topic::Topic;
use crate::limit::Limit;
use crate::wire::http::{self, Method, RequestHead};

/// The live page served at `GET /`: self-contained, nothing fetched from
/// elsewhere.
pub const PAGE_HTML: &str = include_str!("../page/index.html");

/// Methods a browser is told it may use (CORS preflight).
pub const CORS_ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a browser is told it may send (CORS preflight).
pub const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// How long a browser may cache a preflight answer, in seconds.
pub const CORS_MAX_AGE_S: &str = "600";

/// Extra response headers (CORS, `WWW-Authenticate`, `Vary`).
pub type Headers = Vec<(&'static str, String)>;

/// Which browser origins may read our responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// `*` was configured: any origin, without credentials.
    pub any: bool,
    /// Specific origins: echoed back, with credentials allowed.
    pub origins: Vec<String>,
}

impl Cors {
    pub fn from_list(list: &[String]) -> Cors {
        Cors {
            any: list.iter().any(|o| o == "*"),
            origins: list.iter().filter(|o| *o != "*").cloned().collect(),
        }
    }

    /// The CORS headers of a response to a request from `origin`.
    /// A listed origin is echoed with `Access-Control-Allow-Credentials`
    /// (cookies or auth headers may ride along); `*` never comes with
    /// credentials (browsers refuse that pair). When the answer depends on
    /// the origin, `Vary: Origin` keeps caches from mixing them up.
    pub fn headers(&self, origin: Option<&str>) -> Headers {
        let mut out = Headers::new();
        if !self.origins.is_empty() {
            out.push(("Vary", "Origin".to_string()));
            if let Some(o) = origin.filter(|o| self.origins.iter().any(|l| l == o)) {
                out.push(("Access-Control-Allow-Origin", o.to_string()));
                out.push(("Access-Control-Allow-Credentials", "true".to_string()));
                return out;
            }
        }
        if self.any {
            out.push(("Access-Control-Allow-Origin", "*".to_string()));
        }
        out
    }
}

/// The knobs routing needs (copied from the config once per worker).
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub topics_per_stream_max: usize,
    pub topic_bytes_max: usize,
    pub publish_rules: PublishRules,
    /// `--publish-token`: publishing needs `Authorization: Bearer` with it.
    /// Unset: publishing only from loopback.
    pub publish_token: Option<String>,
    /// `--subscribe-token`: streams need it (header or `access_token`).
    pub subscribe_token: Option<String>,
    pub cors: Cors,
}

/// A plain response to write and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub retry_after_s: Option<u32>,
    /// More headers (CORS, `WWW-Authenticate`, ...).
    pub headers: Headers,
    pub body: Vec<u8>,
    pub keep_alive: bool,
    /// The limit an error answer stands for in `stentor_refusals_total`;
    /// `None` = inferred from the status.
    pub limit: Option<Limit>,
}

impl Response {
    pub fn text(status: u16, body: &str, keep_alive: bool) -> Response {
        let mut text = body.as_bytes().to_vec();
        text.push(b'\n');
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            retry_after_s: None,
            headers: Headers::new(),
            body: text,
            keep_alive,
            limit: None,
        }
    }

    pub fn json(status: u16, body: String, keep_alive: bool) -> Response {
        Response {
            status,
            content_type: "application/json",
            allow: None,
            retry_after_s: None,
            headers: Headers::new(),
            body: body.into_bytes(),
            keep_alive,
            limit: None,
        }
    }

    /// A publish refusal: its status and `{"error":..,"field":..}`; a 503
    /// says when to retry.
    pub fn publish_error(e: &PublishError, keep_alive: bool) -> Response {
        let mut r = Response::json(e.status, e.to_json(), keep_alive);
        if e.status == 503 {
            r.retry_after_s = Some(1);
        }
        r.limit = match (e.status, e.field) {
            (400, Some("topic")) => Some(Limit::TopicName),
            (503, Some("topic")) => Some(Limit::TopicsMax),
            (413, _) => Some(Limit::PublishBatch),
            _ => None,
        };
        r
    }

    /// The wire bytes (head and body) of this response.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let retry_after = self.retry_after_s.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(4 + self.headers.len());
        if self.status != 204 {
            headers.push(("Content-Type", self.content_type));
        }
        if let Some(allow) = self.allow {
            headers.push(("Allow", allow));
        }
        if let Some(r) = retry_after.as_deref() {
            headers.push(("Retry-After", r));
        }
        headers.extend(self.headers.iter().map(|(n, v)| (*n, v.as_str())));
        http::write_response(&mut out, self.status, &headers, &self.body, self.keep_alive);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Respond(Response),
    /// Open an SSE stream on these (deduplicated, validated) topics,
    /// replaying from `resume` first.
    Stream {
        topics: Vec<Topic>,
        resume: ResumePoint,
        /// Extra head lines (CORS).
        headers: Headers,
    },
    /// Publish these events in order, all or nothing, then answer with
    /// their ids.
    Publish {
        requests: Vec<PublishRequest>,
        keep_alive: bool,
        headers: Headers,
    },
    /// The node's counters as Prometheus text.
    Metrics {
        keep_alive: bool,
        headers: Headers,
    },
}

/// The response head of a stream (DESIGN.md, wire rules).
pub const STREAM_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
];

pub fn route(head: &RequestHead, body: &[u8], peer_loopback: bool, cfg: &RouteConfig) -> Action {
    let cors = cfg.cors.headers(head.header("origin"));
    let mut action = route_path(head, body, peer_loopback, cfg);
    match &mut action {
        Action::Respond(r) => r.headers.extend(cors),
        Action::Stream { headers, .. }
        | Action::Publish { headers, .. }
        | Action::Metrics { headers, .. } => headers.extend(cors),
    }
    action
}

fn route_path(head: &RequestHead, body: &[u8], peer_loopback: bool, cfg: &RouteConfig) -> Action {
    let keep_alive = head.keep_alive;
    let (allow, method) = match head.path.as_str() {
        "/events" | "/healthz" | "/metrics" | "/" => ("GET, OPTIONS", Method::Get),
        "/publish" => ("POST, OPTIONS", Method::Post),
        _ => return Action::Respond(Response::text(404, "not found", keep_alive)),
    };
    if head.method == Method::Options {
        return Action::Respond(preflight(allow, keep_alive));
    }
    if head.method != method {
        return method_not_allowed(allow, keep_alive);
    }
    match head.path.as_str() {
        "/events" => stream(head, cfg),
        "/publish" => publish(head, body, peer_loopback, cfg),
        "/healthz" => Action::Respond(Response::text(200, "ok", keep_alive)),
        "/metrics" => Action::Metrics {
            keep_alive,
            headers: Headers::new(),
        },
        _ => {
            let mut r = Response::text(200, "", keep_alive);
            r.content_type = "text/html; charset=utf-8";
            r.body = PAGE_HTML.as_bytes().to_vec();
            r.headers.push(("Cache-Control", "no-cache".to_string()));
            Action::Respond(r)
        }
    }
}

/// The answer to `OPTIONS`: what may be sent here. The CORS headers are
/// added by [`route`]; without a matching origin the browser refuses.
fn preflight(allow: &'static str, keep_alive: bool) -> Response {
    let mut r = Response::text(204, "", keep_alive);
    r.body.clear();
    r.allow = Some(allow);
    r.headers.extend([
        (
            "Access-Control-Allow-Methods",
            CORS_ALLOW_METHODS.to_string(),
        ),
        (
            "Access-Control-Allow-Headers",
            CORS_ALLOW_HEADERS.to_string(),
        ),
        ("Access-Control-Max-Age", CORS_MAX_AGE_S.to_string()),
    ]);
    r
}

fn method_not_allowed(allow: &'static str, keep_alive: bool) -> Action {
    let mut r = Response::text(405, "method not allowed", keep_alive);
    r.allow = Some(allow);
    Action::Respond(r)
}

fn bad_request(reason: &str) -> Action {
    // A malformed request may have left the connection out of step: close.
    Action::Respond(Response::text(400, reason, false))
}

/// A 400 that names the limit it stands for (closes, like `bad_request`).
fn refused(limit: Limit, reason: &str) -> Action {
    let mut r = Response::text(limit.status(), reason, false);
    r.limit = Some(limit);
    Action::Respond(r)
}

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
fn bearer(head: &RequestHead) -> Option<&str> {
    let value = head.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The 401 answer: which token is missing or wrong, and the challenge.
fn unauthorized(what: &str, presented: bool, json: bool, keep_alive: bool) -> Action {
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
    Action::Respond(r)
}

fn stream(head: &RequestHead, cfg: &RouteConfig) -> Action {
    let pairs = match http::parse_query(&head.query) {
        Ok(p) => p,
        Err(e) => return bad_request(e.reason()),
    };
    let mut topics: Vec<Topic> = Vec::new();
    let mut last_event_id: Option<&str> = None;
    let mut access_token: Option<&str> = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "lastEventId" => last_event_id = Some(v),
            "access_token" => access_token = Some(v),
            "topic" => {
                if topics.iter().any(|t| t.as_str() == v) {
                    continue;
                }
                let topic = match Topic::parse(v, cfg.topic_bytes_max) {
                    Ok(t) => t,
                    Err(e) => return refused(Limit::TopicName, &format!("invalid topic: {e}")),
                };
                if topics.len() == cfg.topics_per_stream_max {
                    return refused(
                        Limit::TopicsPerStream,
                        &format!(
                            "too many topics: at most {} per stream",
                            cfg.topics_per_stream_max
                        ),
                    );
                }
                topics.push(topic);
            }
            _ => {}
        }
    }
    if let Some(expected) = &cfg.subscribe_token {
        // EventSource cannot set headers: the query parameter is the way
        // for browsers, the header for every other client.
        let presented = bearer(head).or(access_token);
        let ok = presented.is_some_and(|p| token_matches(p.as_bytes(), expected.as_bytes()));
        if !ok {
            return unauthorized("subscribe", presented.is_some(), false, head.keep_alive);
        }
    }
    if topics.is_empty() {
        return bad_request("missing topic: use /events?topic=NAME (repeatable)");
    }
    let resume = ResumePoint::from_request(head.header("last-event-id"), last_event_id);
    Action::Stream {
        topics,
        resume,
        headers: Headers::new(),
    }
}

fn publish(head: &RequestHead, body: &[u8], peer_loopback: bool, cfg: &RouteConfig) -> Action {
    let keep_alive = head.keep_alive;
    match &cfg.publish_token {
        Some(expected) => {
            let presented = bearer(head);
            let ok = presented.is_some_and(|p| token_matches(p.as_bytes(), expected.as_bytes()));
            if !ok {
                return unauthorized("publish", presented.is_some(), true, keep_alive);
            }
        }
        None if !peer_loopback => {
            let e = PublishError::new(
                403,
                None,
                "publishing is only accepted from loopback while no --publish-token is set; \
                 set --publish-token (STENTOR_PUBLISH_TOKEN) and send Authorization: Bearer <token>",
            );
            return Action::Respond(Response::publish_error(&e, keep_alive));
        }
        None => {}
    }
    match parse_publish(head.header("content-type"), body, &cfg.publish_rules) {
        Ok(requests) => Action::Publish {
            requests,
            keep_alive,
            headers: Headers::new(),
        },
        Err(e) => Action::Respond(Response::publish_error(&e, keep_alive)),
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;
    use crate::wire::http::{parse_head, HeadStatus, Limits};

    const LIMITS: Limits = Limits {
        head_bytes_max: 8192,
        headers_count_max: 64,
        uri_bytes_max: 4096,
        body_bytes_max: 1 << 20,
    };
    const TOKEN: &str = "0123456789abcdef-token";

    fn cfg() -> RouteConfig {
        RouteConfig {
            topics_per_stream_max: 2,
            topic_bytes_max: 16,
            publish_rules: PublishRules {
                topic_bytes_max: 16,
                batch_events_max: 3,
            },
            publish_token: None,
            subscribe_token: None,
            cors: Cors::default(),
        }
    }

    fn head(raw: &str) -> RequestHead {
        match parse_head(raw.as_bytes(), &LIMITS) {
            Ok(HeadStatus::Complete { head, .. }) => head,
            other => panic!("{other:?}"),
        }
    }

    fn get(target: &str, extra: &str) -> RequestHead {
        head(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"))
    }

    fn post(body: &str, ct: &str, extra: &str) -> RequestHead {
        head(&format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        ))
    }

    fn response(a: Action) -> Response {
        match a {
            Action::Respond(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn streams_dedupe_validate_and_bound_topics() {
        let a = route(
            &get("/events?topic=a&topic=b&topic=a", ""),
            b"",
            true,
            &cfg(),
        );
        match a {
            Action::Stream { topics, resume, .. } => {
                let names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
                assert_eq!(names, ["a", "b"]);
                assert_eq!(resume, ResumePoint::Live);
            }
            other => panic!("{other:?}"),
        }
        for target in [
            "/events?topic=a&topic=b&topic=c",
            "/events?topic=a%20b",
            "/events",
            "/events?topic=",
        ] {
            assert_eq!(
                response(route(&get(target, ""), b"", true, &cfg())).status,
                400,
                "{target}"
            );
        }
        let r = response(route(
            &head("POST /events?topic=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            b"",
            true,
            &cfg(),
        ));
        assert_eq!((r.status, r.allow), (405, Some("GET, OPTIONS")));
    }

    #[test]
    fn topic_refusals_name_their_limit_for_streams_and_publishes() {
        let limit = |a: Action| response(a).limit;
        let long = format!("/events?topic={}", "a".repeat(17));
        assert_eq!(
            limit(route(&get(&long, ""), b"", true, &cfg())),
            Some(Limit::TopicName)
        );
        assert_eq!(
            limit(route(
                &get("/events?topic=caf%C3%A9", ""),
                b"",
                true,
                &cfg()
            )),
            Some(Limit::TopicName)
        );
        assert_eq!(
            limit(route(
                &get("/events?topic=a&topic=b&topic=c", ""),
                b"",
                true,
                &cfg()
            )),
            Some(Limit::TopicsPerStream)
        );
        let body = "topic=a%20b&data=x";
        let r = response(route(
            &post(body, "application/x-www-form-urlencoded", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ));
        assert_eq!((r.status, r.limit), (400, Some(Limit::TopicName)));
    }

    #[test]
    fn resume_from_header_or_query_header_wins() {
        let resume = |target: &str, extra: &str| match route(&get(target, extra), b"", true, &cfg())
        {
            Action::Stream { resume, .. } => resume,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            resume("/events?topic=a&lastEventId=5", ""),
            ResumePoint::After(5)
        );
        assert_eq!(
            resume("/events?topic=a&lastEventId=5", "Last-Event-ID: 9\r\n"),
            ResumePoint::After(9)
        );
        assert_eq!(
            resume("/events?topic=a", "Last-Event-ID: x\r\n"),
            ResumePoint::Unknown("x".into())
        );
    }

    #[test]
    fn publish_parses_bodies_and_names_fields() {
        let body = "topic=t&data=hi&event=ev";
        match route(
            &post(body, "application/x-www-form-urlencoded", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ) {
            Action::Publish { requests, .. } => {
                assert_eq!(requests.len(), 1);
                assert_eq!(requests[0].topic.as_str(), "t");
                assert_eq!(requests[0].event.data, "hi");
            }
            other => panic!("{other:?}"),
        }
        let body = r#"[{"topic":"a","data":"1"},{"topic":"b","data":{"x": 1}}]"#;
        match route(
            &post(body, "application/json", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ) {
            Action::Publish { requests, .. } => {
                assert_eq!(requests[1].event.data, r#"{"x":1}"#);
            }
            other => panic!("{other:?}"),
        }
        let body = r#"{"topic":"a"}"#;
        let r = response(route(
            &post(body, "application/json", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ));
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, "application/json");
        assert!(String::from_utf8_lossy(&r.body).contains(r#""field":"data""#));
        let r = response(route(
            &post(body, "text/plain", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ));
        assert_eq!(r.status, 415);
    }

    #[test]
    fn publish_auth_loopback_default_and_bearer_token() {
        let body = r#"{"topic":"a","data":"x"}"#;
        let ct = "application/json";
        let r = response(route(&post(body, ct, ""), body.as_bytes(), false, &cfg()));
        assert_eq!(r.status, 403);
        assert!(String::from_utf8_lossy(&r.body).contains("loopback"));

        let with_token = RouteConfig {
            publish_token: Some(TOKEN.into()),
            ..cfg()
        };
        for (extra, challenge) in [
            ("", r#"Bearer realm="stentor""#),
            (
                "Authorization: Bearer wrong\r\n",
                r#"Bearer realm="stentor", error="invalid_token""#,
            ),
            ("Authorization: Basic abc\r\n", r#"Bearer realm="stentor""#),
        ] {
            // From loopback too: a configured token is always required.
            let r = response(route(
                &post(body, ct, extra),
                body.as_bytes(),
                true,
                &with_token,
            ));
            assert_eq!(r.status, 401, "{extra}");
            assert_eq!(header(&r, "WWW-Authenticate"), Some(challenge));
        }
        let auth = format!("Authorization: bearer {TOKEN}\r\n");
        let a = route(&post(body, ct, &auth), body.as_bytes(), false, &with_token);
        assert!(matches!(a, Action::Publish { .. }), "{a:?}");
    }

    #[test]
    fn subscribe_token_by_header_or_query() {
        let c = RouteConfig {
            subscribe_token: Some(TOKEN.into()),
            ..cfg()
        };
        let r = response(route(&get("/events?topic=a", ""), b"", true, &c));
        assert_eq!(r.status, 401);
        let r = response(route(
            &get("/events?topic=a&access_token=nope", ""),
            b"",
            true,
            &c,
        ));
        assert_eq!(r.status, 401);
        let q = format!("/events?topic=a&access_token={TOKEN}");
        assert!(matches!(
            route(&get(&q, ""), b"", true, &c),
            Action::Stream { .. }
        ));
        let h = format!("Authorization: Bearer {TOKEN}\r\n");
        assert!(matches!(
            route(&get("/events?topic=a", &h), b"", true, &c),
            Action::Stream { .. }
        ));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"abcd", b"abc"));
        assert!(!token_matches(b"", b"abc"));
    }

    #[test]
    fn cors_echoes_listed_origins_with_credentials_and_star_without() {
        let listed = Cors::from_list(&["https://a.example".into()]);
        let h = listed.headers(Some("https://a.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://a.example".into())));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(h.contains(&("Vary", "Origin".into())));
        let h = listed.headers(Some("https://evil.example"));
        assert_eq!(h, [("Vary", "Origin".to_string())]);

        let star = Cors::from_list(&["*".into()]);
        assert_eq!(
            star.headers(Some("https://x.example")),
            [("Access-Control-Allow-Origin", "*".to_string())]
        );
        assert!(Cors::default()
            .headers(Some("https://x.example"))
            .is_empty());
        let both = Cors::from_list(&["*".into(), "https://a.example".into()]);
        let h = both.headers(Some("https://b.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "*".into())));
        assert!(!h
            .iter()
            .any(|(n, _)| *n == "Access-Control-Allow-Credentials"));
    }

    #[test]
    fn preflight_and_stream_carry_cors() {
        let c = RouteConfig {
            cors: Cors::from_list(&["https://a.example".into()]),
            ..cfg()
        };
        let r = response(route(
            &head("OPTIONS /publish HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: POST\r\n\r\n"),
            b"",
            false,
            &c,
        ));
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
        assert_eq!(
            header(&r, "Access-Control-Allow-Origin"),
            Some("https://a.example")
        );
        assert_eq!(
            header(&r, "Access-Control-Allow-Headers"),
            Some(CORS_ALLOW_HEADERS)
        );
        assert_eq!(header(&r, "Access-Control-Max-Age"), Some(CORS_MAX_AGE_S));
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 "), "{text}");
        assert!(!text.contains("\r\nContent-Type:"), "{text}");
        match route(
            &get("/events?topic=a", "Origin: https://a.example\r\n"),
            b"",
            true,
            &c,
        ) {
            Action::Stream { headers, .. } => {
                assert!(
                    headers.contains(&("Access-Control-Allow-Origin", "https://a.example".into()))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_paths() {
        assert_eq!(
            response(route(&get("/healthz", ""), b"", false, &cfg())).status,
            200
        );
        assert_eq!(
            response(route(&get("/nowhere", ""), b"", false, &cfg())).status,
            404
        );
        let page = response(route(&get("/", ""), b"", false, &cfg()));
        assert_eq!(
            (page.status, page.content_type),
            (200, "text/html; charset=utf-8")
        );
        assert!(String::from_utf8_lossy(&page.body).contains("EventSource"));
        assert!(matches!(
            route(&get("/metrics", ""), b"", false, &cfg()),
            Action::Metrics {
                keep_alive: true,
                ..
            }
        ));
    }

    #[test]
    fn responses_carry_allow_and_retry_after() {
        let mut r = Response::text(503, "full", false);
        r.retry_after_s = Some(1);
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
    }
}
