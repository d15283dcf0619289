//! Answers: a plain response (status, headers, body) and the head every
//! stream starts with. Pure: bytes out, no sockets.

use crate::hub::publish::PublishError;
use crate::limit::Limit;
use crate::wire::http;
use crate::wire::sse;

/// Extra response headers (CORS, `WWW-Authenticate`, `Vary`).
pub type Headers = Vec<(&'static str, String)>;

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
        r.retry_after_s = e.retry_after_s;
        r.limit = match (e.status, e.field) {
            (429, _) => Some(Limit::PublishRate),
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

/// The response head of a stream (DESIGN.md, wire rules).
pub const STREAM_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
];

/// The first bytes of every stream: the response head (with `extra`
/// headers, e.g. CORS), `: connected` and the reconnection delay.
pub fn stream_preamble(retry_ms: u32, extra: &Headers) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = STREAM_HEADERS.to_vec();
    headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
    let mut preamble = Vec::with_capacity(200);
    http::write_stream_head(&mut preamble, 200, &headers);
    preamble.extend_from_slice(&sse::encode_comment("connected"));
    preamble.extend_from_slice(format!("retry: {retry_ms}\n\n").as_bytes());
    preamble
}
