//! HTTP/1.1 on the wire: request heads, bodies, query strings, responses.
//!
//! CONTRACT (filled in by the wire-http work; signatures are fixed because the
//! data plane is written against them).

/// Hard limits on what one request may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub head_bytes_max: usize,
    pub headers_count_max: usize,
    pub uri_bytes_max: usize,
    pub body_bytes_max: usize,
}

/// Why a request is refused; each maps to one status and one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    Todo,
}

impl HttpError {
    /// The HTTP status to answer with (400, 413, 414, 431, 501, 505, ...).
    pub fn status(&self) -> u16 {
        todo!()
    }
    /// One line a client can read: what was wrong.
    pub fn reason(&self) -> &'static str {
        todo!()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    /// Any other syntactically valid method (answered 405 by the router).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

/// A parsed request head. Header names are lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path before `?`, as sent (not percent-decoded).
    pub path: String,
    /// The raw query after `?` (empty when none).
    pub query: String,
    pub version: Version,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: BodyFraming,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of a header (name lower-case), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let _ = name;
        todo!()
    }
}

/// Result of feeding the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadStatus {
    /// Need more bytes (and the buffer is still within the head limit).
    Partial,
    /// The head is complete; the body (if any) starts at `head_len`.
    Complete { head: RequestHead, head_len: usize },
}

/// Parse a request head from the start of `buf`.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<HeadStatus, HttpError> {
    let _ = (buf, limits);
    todo!()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStatus {
    Partial,
    /// The decoded body and how many bytes of `buf` it used.
    Complete {
        body: Vec<u8>,
        consumed: usize,
    },
}

/// Read a body framed as `framing` from the start of `buf` (the bytes after
/// the head), decoding chunked transfer coding, within `limits.body_bytes_max`.
pub fn read_body(
    framing: BodyFraming,
    buf: &[u8],
    limits: &Limits,
) -> Result<BodyStatus, HttpError> {
    let _ = (framing, buf, limits);
    todo!()
}

/// Parse `a=1&b=2&a=3` with percent-decoding and `+` as space.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, HttpError> {
    let _ = query;
    todo!()
}

/// Parse an `application/x-www-form-urlencoded` body (same rules as queries;
/// invalid UTF-8 is an error).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, HttpError> {
    let _ = body;
    todo!()
}

/// The interim response sent when a client waits on `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Append a complete response: status line, `headers`, `Content-Length`,
/// `Connection: keep-alive|close`, then `body`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let _ = (out, status, headers, body, keep_alive);
    todo!()
}

/// Append the head of a close-delimited stream (an SSE response): status
/// line, `headers`, `Connection: close`, no length; the body runs until close.
pub fn write_stream_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    let _ = (out, status, headers);
    todo!()
}

/// Append one chunk of a `Transfer-Encoding: chunked` response body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = (out, data);
    todo!()
}

/// Append the terminating chunk of a chunked response.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}
