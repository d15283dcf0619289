//! What to do with one complete request: the routing table of the node,
//! kept apart from the loop so the API can grow without touching I/O.
//! Pure: a parsed head and body in, an [`Action`] out.

use serde::Deserialize;

use crate::hub::topic;
use crate::limit::Limit;
use crate::wire::http::{self, Method, RequestHead};
use crate::wire::sse::Event;

/// The knobs routing needs (copied from the config once per worker).
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub topics_per_stream_max: usize,
    pub topic_bytes_max: usize,
}

/// A plain response to write and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub retry_after_s: Option<u32>,
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
            body: body.into_bytes(),
            keep_alive,
            limit: None,
        }
    }

    /// The wire bytes (head and body) of this response.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let retry_after = self.retry_after_s.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", self.content_type)];
        if let Some(allow) = self.allow {
            headers.push(("Allow", allow));
        }
        if let Some(r) = retry_after.as_deref() {
            headers.push(("Retry-After", r));
        }
        http::write_response(&mut out, self.status, &headers, &self.body, self.keep_alive);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Respond(Response),
    /// Open an SSE stream on these (deduplicated, validated) topics.
    Stream {
        topics: Vec<String>,
    },
    /// Publish `event` to `topic`, then answer with its id.
    Publish {
        topic: String,
        event: Event,
        keep_alive: bool,
    },
    /// The node's counters as Prometheus text.
    Metrics {
        keep_alive: bool,
    },
}

/// The response head of a stream (DESIGN.md, wire rules).
pub const STREAM_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
];

pub fn route(head: &RequestHead, body: &[u8], peer_loopback: bool, cfg: &RouteConfig) -> Action {
    let keep_alive = head.keep_alive;
    match head.path.as_str() {
        "/events" => match head.method {
            Method::Get => stream(head, cfg),
            _ => method_not_allowed("GET", keep_alive),
        },
        "/publish" => match head.method {
            Method::Post => publish(head, body, peer_loopback, cfg),
            _ => method_not_allowed("POST", keep_alive),
        },
        "/healthz" => match head.method {
            Method::Get => Action::Respond(Response::text(200, "ok", keep_alive)),
            _ => method_not_allowed("GET", keep_alive),
        },
        "/metrics" => match head.method {
            Method::Get => Action::Metrics { keep_alive },
            _ => method_not_allowed("GET", keep_alive),
        },
        _ => Action::Respond(Response::text(404, "not found", keep_alive)),
    }
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

/// A 400 that names the limit it stands for.
fn refused(limit: Limit, reason: &str, keep_alive: bool) -> Action {
    let mut r = Response::text(limit.status(), reason, keep_alive);
    r.limit = Some(limit);
    Action::Respond(r)
}

/// The 400 for a topic the hub's rule refuses (`hub::topic`: one rule for
/// streams and publishes alike), saying why.
fn bad_topic(name: &str, topic_bytes_max: usize, keep_alive: bool) -> Option<Action> {
    let e = topic::validate(name, topic_bytes_max).err()?;
    Some(refused(
        Limit::TopicName,
        &format!("invalid topic: {e}"),
        keep_alive,
    ))
}

fn stream(head: &RequestHead, cfg: &RouteConfig) -> Action {
    let pairs = match http::parse_query(&head.query) {
        Ok(p) => p,
        Err(e) => return bad_request(e.reason()),
    };
    let mut topics: Vec<String> = Vec::new();
    for (k, v) in pairs {
        if k != "topic" || topics.contains(&v) {
            continue;
        }
        if let Some(refusal) = bad_topic(&v, cfg.topic_bytes_max, false) {
            return refusal;
        }
        if topics.len() == cfg.topics_per_stream_max {
            return refused(
                Limit::TopicsPerStream,
                &format!(
                    "too many topics: at most {} per stream",
                    cfg.topics_per_stream_max
                ),
                false,
            );
        }
        topics.push(v);
    }
    if topics.is_empty() {
        return bad_request("missing topic: use /events?topic=NAME (repeatable)");
    }
    Action::Stream { topics }
}

#[derive(Debug, Deserialize)]
struct PublishJson {
    topic: String,
    data: String,
    #[serde(default)]
    event: Option<String>,
}

fn publish(head: &RequestHead, body: &[u8], peer_loopback: bool, cfg: &RouteConfig) -> Action {
    let keep_alive = head.keep_alive;
    if !peer_loopback {
        return Action::Respond(Response::text(
            403,
            "publishing is only accepted from loopback",
            keep_alive,
        ));
    }
    let is_json = head
        .header("content-type")
        .map(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
        .unwrap_or(false);
    let (topic, data, event) = if is_json {
        match serde_json::from_slice::<PublishJson>(body) {
            Ok(p) => (p.topic, p.data, p.event),
            Err(_) => {
                return Action::Respond(Response::text(
                    400,
                    "invalid JSON: expected {\"topic\":\"...\",\"data\":\"...\"}",
                    keep_alive,
                ))
            }
        }
    } else {
        let pairs = match http::parse_form(body) {
            Ok(p) => p,
            Err(e) => return Action::Respond(Response::text(400, e.reason(), keep_alive)),
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match (field("topic"), field("data")) {
            (Some(t), Some(d)) => (t, d, field("event")),
            _ => {
                return Action::Respond(Response::text(
                    400,
                    "missing field: topic and data are required",
                    keep_alive,
                ))
            }
        }
    };
    if let Some(refusal) = bad_topic(&topic, cfg.topic_bytes_max, keep_alive) {
        return refusal;
    }
    Action::Publish {
        topic,
        event: Event {
            event,
            id: None,
            data,
            retry: None,
        },
        keep_alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic_is_valid(name: &str, topic_bytes_max: usize) -> bool {
        bad_topic(name, topic_bytes_max, true).is_none()
    }

    #[test]
    fn topic_names() {
        assert!(topic_is_valid("news/eu.fr:1_a-b", 128));
        assert!(!topic_is_valid("", 128));
        assert!(!topic_is_valid("a b", 128));
        assert!(!topic_is_valid("abc", 2));
        assert!(!topic_is_valid("caf\u{e9}", 128));
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
    const CFG: RouteConfig = RouteConfig {
        topics_per_stream_max: 2,
        topic_bytes_max: 16,
    };

    fn head(raw: &str) -> RequestHead {
        match parse_head(raw.as_bytes(), &LIMITS) {
            Ok(HeadStatus::Complete { head, .. }) => head,
            other => panic!("{other:?}"),
        }
    }

    fn status(a: &Action) -> u16 {
        match a {
            Action::Respond(r) => r.status,
            _ => 0,
        }
    }

    #[test]
    fn streams_dedupe_validate_and_bound_topics() {
        let a = route(
            &head("GET /events?topic=a&topic=b&topic=a HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            true,
            &CFG,
        );
        assert_eq!(
            a,
            Action::Stream {
                topics: vec!["a".into(), "b".into()]
            }
        );
        let a = route(
            &head("GET /events?topic=a&topic=b&topic=c HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            true,
            &CFG,
        );
        assert_eq!(status(&a), 400);
        let a = route(
            &head("GET /events?topic=a%20b HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            true,
            &CFG,
        );
        assert_eq!(status(&a), 400);
        match a {
            Action::Respond(r) => assert_eq!(r.limit, Some(Limit::TopicName)),
            other => panic!("{other:?}"),
        }
        let long = format!(
            "GET /events?topic={} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(17)
        );
        match route(&head(&long), b"", true, &CFG) {
            Action::Respond(r) => {
                assert_eq!((r.status, r.limit), (400, Some(Limit::TopicName)));
                assert!(String::from_utf8_lossy(&r.body).contains("17 bytes"));
            }
            other => panic!("{other:?}"),
        }
        let a = route(
            &head("GET /events HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            true,
            &CFG,
        );
        assert_eq!(status(&a), 400);
        let a = route(
            &head("POST /events?topic=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            b"",
            true,
            &CFG,
        );
        match a {
            Action::Respond(r) => assert_eq!((r.status, r.allow), (405, Some("GET"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_accepts_form_and_json_from_loopback_only() {
        let form = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 25\r\n\r\n";
        let a = route(&head(form), b"topic=t&data=hi&event=ev", true, &CFG);
        match a {
            Action::Publish { topic, event, .. } => {
                assert_eq!(topic, "t");
                assert_eq!(event.data, "hi");
                assert_eq!(event.event.as_deref(), Some("ev"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            status(&route(&head(form), b"topic=t&data=hi", false, &CFG)),
            403
        );
        assert_eq!(status(&route(&head(form), b"topic=t", true, &CFG)), 400);
        let json = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";
        let a = route(&head(json), br#"{"topic":"t","data":"a\nb"}"#, true, &CFG);
        assert!(matches!(a, Action::Publish { ref event, .. } if event.data == "a\nb"));
        assert_eq!(status(&route(&head(json), b"{nope", true, &CFG)), 400);
        // Publishing uses the same topic rule as streams.
        let a = route(&head(form), b"topic=a%20b&data=hi", true, &CFG);
        match a {
            Action::Respond(r) => assert_eq!((r.status, r.limit), (400, Some(Limit::TopicName))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_paths() {
        let a = route(
            &head("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            false,
            &CFG,
        );
        assert_eq!(status(&a), 200);
        let a = route(
            &head("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            false,
            &CFG,
        );
        assert_eq!(status(&a), 404);
        let a = route(
            &head("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"",
            false,
            &CFG,
        );
        assert_eq!(a, Action::Metrics { keep_alive: true });
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
