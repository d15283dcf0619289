//! HTTP/1.1 on the wire: request heads, bodies, query strings, responses.
//!
//! Pure and incremental: the caller accumulates the bytes it has read and
//! calls [`parse_head`] (then [`read_body`] on the bytes after the head) again
//! until the answer is complete. Nothing here keeps state between calls, so a
//! connection's only state is its buffer.
//!
//! The rules are the ones an edge server must get right to be safe behind (or
//! in front of) other HTTP software: every ambiguity that two parsers could
//! read differently (request smuggling) is refused with 400, every limit has a
//! name, a default and its own error. `docs/reference/protocol.md` (part 2) lists them all.
//! After any [`HttpError`] the caller answers with its status and closes the
//! connection: the framing of whatever follows can no longer be trusted.

/// Default of [`Limits::head_bytes_max`]: request line plus headers.
pub const HEAD_BYTES_MAX_DEFAULT: usize = 8192;
/// Default of [`Limits::headers_count_max`].
pub const HEADERS_COUNT_MAX_DEFAULT: usize = 64;
/// Default of [`Limits::uri_bytes_max`]: the request target as sent.
pub const URI_BYTES_MAX_DEFAULT: usize = 4096;
/// Default of [`Limits::body_bytes_max`]: decoded body bytes.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// Size of the header array on the stack; `headers_count_max` is clamped to
/// it (the configuration refuses larger values anyway).
pub const HEADERS_COUNT_CEILING: usize = 256;
/// Longest chunk-size line (hex size plus extensions, CRLF excluded) and
/// longest trailer line. Extensions are ignored, so they only need a bound.
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Total bytes of a chunked body that are not data (size lines, CRLFs,
/// trailers). Bounds the wire size of a body sent as many tiny chunks.
pub const CHUNKED_FRAMING_BYTES_MAX: usize = 64 * 1024;
/// Total bytes of the trailer section of a chunked body (discarded).
pub const TRAILERS_BYTES_MAX: usize = 4096;

/// Hard limits on what one request may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub head_bytes_max: usize,
    pub headers_count_max: usize,
    pub uri_bytes_max: usize,
    pub body_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes_max: HEAD_BYTES_MAX_DEFAULT,
            headers_count_max: HEADERS_COUNT_MAX_DEFAULT,
            uri_bytes_max: URI_BYTES_MAX_DEFAULT,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }
}

impl Limits {
    /// The most bytes after the head a caller may have to buffer before
    /// [`read_body`] answers `Complete` or an error, for any framing: the
    /// decoded body, the chunked framing, and one partial chunk line.
    pub fn body_wire_bytes_max(&self) -> usize {
        self.body_bytes_max
            .saturating_add(CHUNKED_FRAMING_BYTES_MAX)
            .saturating_add(CHUNK_LINE_BYTES_MAX + 2)
    }
}

/// Why a request is refused; each maps to one status and one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    // ---- limits ---------------------------------------------------------
    /// The head is longer than `head_bytes_max` (complete or not).
    HeadTooLarge,
    /// More header lines than `headers_count_max`.
    TooManyHeaders,
    /// The request target is longer than `uri_bytes_max`.
    UriTooLong,
    /// Declared or decoded body longer than `body_bytes_max`.
    BodyTooLarge,
    /// A chunked body whose framing passes [`CHUNKED_FRAMING_BYTES_MAX`].
    ChunkedFramingTooLarge,
    /// A chunked body whose trailers pass [`TRAILERS_BYTES_MAX`].
    TrailersTooLarge,
    // ---- syntax of the head ---------------------------------------------
    /// The request line does not parse (method, target or spacing).
    MalformedRequestLine,
    /// A header line does not parse (name, colon, value).
    MalformedHeader,
    /// A header line continued on the next line (obs-fold).
    ObsoleteLineFolding,
    /// A control byte (NUL, DEL, ...) in the target or a header value.
    ControlByte,
    /// A line of the head ends with LF alone instead of CRLF.
    BareLineFeed,
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// A request target that is not origin-form (or `*` for OPTIONS, or
    /// absolute-form http/https).
    InvalidTarget,
    // ---- semantics of the head ------------------------------------------
    /// HTTP/1.1 without `Host`.
    MissingHost,
    /// More than one `Host` header.
    DuplicateHost,
    /// Both `Content-Length` and `Transfer-Encoding` (smuggling).
    ContentLengthWithTransferEncoding,
    /// Several `Content-Length` values that disagree.
    ConflictingContentLength,
    /// A `Content-Length` that is not plain decimal digits fitting 64 bits.
    InvalidContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    TransferEncodingInHttp10,
    /// `Transfer-Encoding` whose last coding is not `chunked`, or which
    /// applies `chunked` twice.
    ChunkedNotFinal,
    /// A transfer coding before `chunked` that we do not decode (gzip, ...).
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` that is empty or not a list of plain tokens.
    InvalidTransferEncoding,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    // ---- chunked body -----------------------------------------------------
    /// A chunk-size line that is not hex digits with optional extensions.
    InvalidChunkSize,
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A chunk-size or trailer line longer than [`CHUNK_LINE_BYTES_MAX`].
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF, or CR not followed by LF.
    MissingChunkCrlf,
    /// A line of a chunked body ends with LF alone.
    BareLineFeedInBody,
    /// A trailer line that is not `name: value`.
    InvalidTrailer,
    // ---- query strings and forms ----------------------------------------
    /// `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// A decoded key or value that is not UTF-8.
    InvalidUtf8,
}

impl HttpError {
    /// The HTTP status to answer with (400, 413, 414, 431, 501, 505, ...).
    pub fn status(&self) -> u16 {
        use HttpError::*;
        match self {
            HeadTooLarge | TooManyHeaders | TrailersTooLarge => 431,
            UriTooLong => 414,
            BodyTooLarge | ChunkedFramingTooLarge => 413,
            VersionNotSupported => 505,
            UnsupportedTransferCoding => 501,
            ExpectationFailed => 417,
            MalformedRequestLine
            | MalformedHeader
            | ObsoleteLineFolding
            | ControlByte
            | BareLineFeed
            | InvalidTarget
            | MissingHost
            | DuplicateHost
            | ContentLengthWithTransferEncoding
            | ConflictingContentLength
            | InvalidContentLength
            | TransferEncodingInHttp10
            | ChunkedNotFinal
            | InvalidTransferEncoding
            | InvalidChunkSize
            | ChunkSizeOverflow
            | ChunkLineTooLong
            | MissingChunkCrlf
            | BareLineFeedInBody
            | InvalidTrailer
            | InvalidPercentEncoding
            | InvalidUtf8 => 400,
        }
    }

    /// One line a client can read: what was wrong.
    pub fn reason(&self) -> &'static str {
        use HttpError::*;
        match self {
            HeadTooLarge => "request head exceeds the size limit",
            TooManyHeaders => "request has more headers than the limit",
            UriTooLong => "request target exceeds the length limit",
            BodyTooLarge => "request body exceeds the size limit",
            ChunkedFramingTooLarge => "chunked body framing exceeds the limit",
            TrailersTooLarge => "chunked body trailers exceed the limit",
            MalformedRequestLine => "malformed request line",
            MalformedHeader => "malformed header line",
            ObsoleteLineFolding => "obsolete line folding is not accepted",
            ControlByte => "control byte in request target or header value",
            BareLineFeed => "request head lines must end with CRLF",
            VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
            InvalidTarget => "request target must be an absolute path",
            MissingHost => "HTTP/1.1 request without Host header",
            DuplicateHost => "more than one Host header",
            ContentLengthWithTransferEncoding => {
                "Content-Length and Transfer-Encoding together are refused"
            }
            ConflictingContentLength => "Content-Length values disagree",
            InvalidContentLength => "Content-Length must be decimal digits",
            TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
            ChunkedNotFinal => "chunked must be the final transfer coding, applied once",
            UnsupportedTransferCoding => "only the chunked transfer coding is supported",
            InvalidTransferEncoding => "Transfer-Encoding must be a list of codings",
            ExpectationFailed => "only Expect: 100-continue is supported",
            InvalidChunkSize => "chunk size must be hex digits",
            ChunkSizeOverflow => "chunk size overflows",
            ChunkLineTooLong => "chunk size or trailer line exceeds the limit",
            MissingChunkCrlf => "chunk data must be followed by CRLF",
            BareLineFeedInBody => "chunked body lines must end with CRLF",
            InvalidTrailer => "malformed trailer line",
            InvalidPercentEncoding => "percent sign must be followed by two hex digits",
            InvalidUtf8 => "decoded query or form is not UTF-8",
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for HttpError {}

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
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// Every value of a header (name lower-case), in the order sent.
    pub fn headers_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
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
///
/// Only the first `head_bytes_max` bytes are looked at, so the work per call
/// is bounded whatever the caller has buffered (e.g. pipelined requests).
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<HeadStatus, HttpError> {
    let window = &buf[..buf.len().min(limits.head_bytes_max)];
    let mut storage = [httparse::EMPTY_HEADER; HEADERS_COUNT_CEILING];
    let count = limits.headers_count_max.min(HEADERS_COUNT_CEILING);
    let mut req = httparse::Request::new(&mut storage[..count]);
    match req.parse(window) {
        Ok(httparse::Status::Partial) => {
            // A target still growing past its limit is a 414, not a 431,
            // even before the request line is complete.
            if partial_target_bytes(window, req.path) > limits.uri_bytes_max {
                return Err(HttpError::UriTooLong);
            }
            if buf.len() > limits.head_bytes_max {
                return Err(HttpError::HeadTooLarge);
            }
            Ok(HeadStatus::Partial)
        }
        Ok(httparse::Status::Complete(head_len)) => {
            debug_assert!(head_len <= limits.head_bytes_max);
            let head = build_head(&req, &window[..head_len], limits)?;
            Ok(HeadStatus::Complete { head, head_len })
        }
        Err(error) => {
            // A target that outgrew its limit before the byte parsing
            // stopped at is a 414, as it was while those bytes were partial.
            if target_bytes_before_error(window, req.path) > limits.uri_bytes_max {
                return Err(HttpError::UriTooLong);
            }
            Err(map_parse_error(error, window, req.version.is_some()))
        }
    }
}

/// Bytes of the request target seen so far while the head is partial.
fn partial_target_bytes(window: &[u8], parsed: Option<&str>) -> usize {
    if let Some(path) = parsed {
        return path.len();
    }
    // Method, one space, then the target up to the next space or the end.
    match window.iter().position(|&b| b == b' ') {
        Some(space) => window[space + 1..]
            .iter()
            .take_while(|&&b| b != b' ' && b != b'\r' && b != b'\n')
            .count(),
        None => 0,
    }
}

/// Bytes of the request target before the byte parsing of `window`
/// stopped at (`parsed`: the target, when httparse completed it).
fn target_bytes_before_error(window: &[u8], parsed: Option<&str>) -> usize {
    if let Some(path) = parsed {
        return path.len();
    }
    // Parsing stopped in the method or the target. Counting to the next
    // space would take in bytes after the one refused; find that byte (a
    // binary search with httparse, only when the count could matter).
    let upper = partial_target_bytes(window, None);
    if upper == 0 {
        return 0;
    }
    let (mut parses, mut fails) = (0, window.len());
    while fails - parses > 1 {
        let mid = parses + (fails - parses) / 2;
        let mut storage = [httparse::EMPTY_HEADER; HEADERS_COUNT_CEILING];
        if httparse::Request::new(&mut storage)
            .parse(&window[..mid])
            .is_ok()
        {
            parses = mid;
        } else {
            fails = mid;
        }
    }
    partial_target_bytes(&window[..parses], None)
}

fn map_parse_error(error: httparse::Error, window: &[u8], line_done: bool) -> HttpError {
    use httparse::Error as E;
    // Each refinement below names what httparse stopped at, never a byte
    // after it: the worker parses again after every read, so a verdict that
    // depended on later bytes would change with how the client's bytes were
    // split (found by fuzzing: 505 whole, 400 in pieces).
    match error {
        E::TooManyHeaders => HttpError::TooManyHeaders,
        // A control byte explains a Token/HeaderValue error better than
        // either, when it is where parsing stopped.
        _ if error_is_at(window, first_control_byte(window)) => HttpError::ControlByte,
        E::Version if version_token_is_http(window) => HttpError::VersionNotSupported,
        E::HeaderName if error_is_at(window, first_fold(window)) => HttpError::ObsoleteLineFolding,
        E::HeaderName | E::HeaderValue => HttpError::MalformedHeader,
        E::NewLine if line_done => HttpError::MalformedHeader,
        E::NewLine | E::Token | E::Version | E::Status => HttpError::MalformedRequestLine,
    }
}

/// Whether the parse error of `window` is at byte `at`: the bytes before it
/// still parse as the start of a head. httparse stops at the first byte it
/// refuses, so this tells the byte that failed from one further on. Only
/// runs on the way to a refusal, at most twice.
fn error_is_at(window: &[u8], at: Option<usize>) -> bool {
    let Some(at) = at else {
        return false;
    };
    let mut storage = [httparse::EMPTY_HEADER; HEADERS_COUNT_CEILING];
    let mut req = httparse::Request::new(&mut storage);
    req.parse(&window[..at]).is_ok()
}

/// The first byte no request head may hold: controls other than HTAB, CR
/// and LF, and DEL.
fn first_control_byte(window: &[u8]) -> Option<usize> {
    window
        .iter()
        .position(|&b| (b < 0x20 && b != b'\t' && b != b'\r' && b != b'\n') || b == 0x7f)
}

/// Whether the request line is three words or more and the third starts
/// `HTTP/<digit>`: a version we recognise as HTTP but do not speak (505),
/// not garbage (400). The third word, not the last: in `GET /a / HTTP/1.1`
/// parsing stopped at `/`, which is no version at all.
fn version_token_is_http(window: &[u8]) -> bool {
    let line_end = window
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(window.len());
    match window[..line_end].split(|&b| b == b' ').nth(2) {
        Some(token) => token.len() > 5 && token.starts_with(b"HTTP/") && token[5].is_ascii_digit(),
        None => false,
    }
}

/// Where the first header line that starts with whitespace (a continuation,
/// obs-fold) starts.
fn first_fold(window: &[u8]) -> Option<usize> {
    window
        .windows(2)
        .position(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
        .map(|at| at + 1)
}

fn build_head(
    req: &httparse::Request<'_, '_>,
    head_bytes: &[u8],
    limits: &Limits,
) -> Result<RequestHead, HttpError> {
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        // Complete implies all three were parsed; refuse rather than panic.
        return Err(HttpError::MalformedRequestLine);
    };
    // First: while the head was partial, a long target was already a 414,
    // whatever came after it (a bare LF can only come after it).
    if target.len() > limits.uri_bytes_max {
        return Err(HttpError::UriTooLong);
    }
    // httparse accepts LF alone as a line end; we do not, so that a proxy in
    // front that splits lines only on CRLF cannot read a different head.
    if head_bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head_bytes[i - 1] != b'\r'))
    {
        return Err(HttpError::BareLineFeed);
    }
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HttpError::VersionNotSupported),
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let (path, query) = split_target(method, target)?;
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };

    match values("host").count() {
        0 if version == Version::Http11 => return Err(HttpError::MissingHost),
        0 | 1 => {}
        _ => return Err(HttpError::DuplicateHost),
    }

    let has_te = values("transfer-encoding").next().is_some();
    let has_cl = values("content-length").next().is_some();
    if has_te && version == Version::Http10 {
        return Err(HttpError::TransferEncodingInHttp10);
    }
    if has_te && has_cl {
        return Err(HttpError::ContentLengthWithTransferEncoding);
    }
    let body = if has_te {
        check_transfer_encoding(values("transfer-encoding"))?;
        BodyFraming::Chunked
    } else if has_cl {
        let length = content_length(values("content-length"))?;
        // Decided from the header alone, so a client waiting on
        // 100-continue hears 413 before sending anything.
        if length > limits.body_bytes_max as u64 {
            return Err(HttpError::BodyTooLarge);
        }
        // Fits: it is at most body_bytes_max, a usize.
        BodyFraming::Length(length as usize)
    } else {
        BodyFraming::None
    };

    let mut expect_continue = false;
    for member in list_members(values("expect")) {
        if member.eq_ignore_ascii_case(b"100-continue") {
            // RFC 9110 10.1.1: a 1.0 client cannot expect 100; ignore it.
            expect_continue = version == Version::Http11;
        } else {
            return Err(HttpError::ExpectationFailed);
        }
    }

    let mut close = false;
    let mut keep_alive_token = false;
    for token in list_members(values("connection")) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };

    Ok(RequestHead {
        method,
        path,
        query,
        version,
        headers,
        body,
        keep_alive,
        expect_continue,
    })
}

/// Split the target into path and query; accepts origin-form, `*` for
/// OPTIONS, and absolute-form for http/https (scheme and authority dropped:
/// we serve one site, so the authority selects nothing).
fn split_target(method: Method, target: &str) -> Result<(String, String), HttpError> {
    // httparse already refused controls and spaces; refuse what it lets
    // through that no request-target may hold.
    if target.bytes().any(|b| !b.is_ascii() || b == b'#') {
        return Err(HttpError::InvalidTarget);
    }
    if target == "*" {
        return match method {
            Method::Options => Ok(("*".to_owned(), String::new())),
            _ => Err(HttpError::InvalidTarget),
        };
    }
    let origin: String = if target.starts_with('/') {
        target.to_owned()
    } else {
        let rest = strip_scheme(target).ok_or(HttpError::InvalidTarget)?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if authority_end == 0 {
            return Err(HttpError::InvalidTarget);
        }
        let after = &rest[authority_end..];
        if after.starts_with('/') {
            after.to_owned()
        } else {
            format!("/{after}")
        }
    };
    Ok(match origin.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (origin, String::new()),
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if target.len() >= scheme.len()
            && target.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// Trim optional whitespace (SP, HTAB) around a list element.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The non-empty members of comma-separated list headers, across repeats
/// (RFC 9110 5.6.1: empty elements are ignored).
fn list_members<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|m| !m.is_empty())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Every `Content-Length`, across repeated headers and comma lists, must be
/// plain digits and all equal (RFC 9110 8.6 lets identical repeats count as
/// one; anything else is a smuggling attempt).
fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<u64, HttpError> {
    let mut found: Option<u64> = None;
    for value in values {
        for element in value.split(|&b| b == b',') {
            let length = parse_decimal(trim_ows(element))?;
            match found {
                Some(previous) if previous != length => {
                    return Err(HttpError::ConflictingContentLength)
                }
                _ => found = Some(length),
            }
        }
    }
    found.ok_or(HttpError::InvalidContentLength)
}

fn parse_decimal(digits: &[u8]) -> Result<u64, HttpError> {
    if digits.is_empty() {
        return Err(HttpError::InvalidContentLength);
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(HttpError::InvalidContentLength);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(HttpError::InvalidContentLength)?;
    }
    Ok(value)
}

/// The codings across all `Transfer-Encoding` headers, in order, must end
/// with exactly one `chunked` (case-insensitive) and hold nothing else we
/// would have to decode.
fn check_transfer_encoding<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<(), HttpError> {
    let codings: Vec<&[u8]> = list_members(values).collect();
    if codings.iter().any(|c| !c.iter().all(|&b| is_tchar(b))) {
        return Err(HttpError::InvalidTransferEncoding);
    }
    let is_chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    let Some((last, earlier)) = codings.split_last() else {
        return Err(HttpError::InvalidTransferEncoding);
    };
    if !is_chunked(last) || earlier.iter().any(is_chunked) {
        return Err(HttpError::ChunkedNotFinal);
    }
    if !earlier.is_empty() {
        return Err(HttpError::UnsupportedTransferCoding);
    }
    Ok(())
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
///
/// Stateless: call again with more bytes after `Partial`. The caller never
/// needs to buffer more than [`Limits::body_wire_bytes_max`] bytes.
pub fn read_body(
    framing: BodyFraming,
    buf: &[u8],
    limits: &Limits,
) -> Result<BodyStatus, HttpError> {
    match framing {
        BodyFraming::None => Ok(BodyStatus::Complete {
            body: Vec::new(),
            consumed: 0,
        }),
        BodyFraming::Length(length) => {
            if length > limits.body_bytes_max {
                return Err(HttpError::BodyTooLarge);
            }
            match buf.get(..length) {
                Some(body) => Ok(BodyStatus::Complete {
                    body: body.to_vec(),
                    consumed: length,
                }),
                None => Ok(BodyStatus::Partial),
            }
        }
        BodyFraming::Chunked => {
            // Validate first without copying, so that the many calls on a
            // trickling body allocate nothing; copy once when complete.
            let Some(consumed) = scan_chunked(buf, limits, &mut |_| {})? else {
                return Ok(BodyStatus::Partial);
            };
            let mut body = Vec::new();
            let again = scan_chunked(buf, limits, &mut |data| body.extend_from_slice(data))?;
            debug_assert_eq!(again, Some(consumed));
            Ok(BodyStatus::Complete { body, consumed })
        }
    }
}

/// Walk a chunked body, handing each chunk's data to `sink`. Returns the
/// bytes used when the body (with trailers) is complete, `None` if more bytes
/// are needed.
fn scan_chunked(
    buf: &[u8],
    limits: &Limits,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<Option<usize>, HttpError> {
    let mut pos = 0;
    let mut decoded_bytes = 0usize;
    let mut framing_bytes = 0usize;
    // Bounded: every turn consumes at least 3 bytes of `buf` (a size digit,
    // CRLF) or returns.
    loop {
        let Some(line_end) = crlf_line_end(buf, pos)? else {
            return Ok(None);
        };
        let size = parse_chunk_size_line(&buf[pos..line_end])?;
        framing_bytes += line_end + 2 - pos;
        pos = line_end + 2;
        if framing_bytes > CHUNKED_FRAMING_BYTES_MAX {
            return Err(HttpError::ChunkedFramingTooLarge);
        }
        if size == 0 {
            return scan_trailers(buf, pos, framing_bytes);
        }
        let room = (limits.body_bytes_max - decoded_bytes) as u64;
        if size > room {
            return Err(HttpError::BodyTooLarge);
        }
        // Fits: at most body_bytes_max.
        let size = size as usize;
        let data_end = pos + size;
        let Some(data) = buf.get(pos..data_end) else {
            return Ok(None);
        };
        match (buf.get(data_end), buf.get(data_end + 1)) {
            (None, _) | (Some(b'\r'), None) => return Ok(None),
            (Some(b'\r'), Some(b'\n')) => {}
            (Some(b'\n'), _) => return Err(HttpError::BareLineFeedInBody),
            _ => return Err(HttpError::MissingChunkCrlf),
        }
        sink(data);
        decoded_bytes += size;
        debug_assert!(decoded_bytes <= limits.body_bytes_max);
        framing_bytes += 2;
        pos = data_end + 2;
    }
}

/// Trailer lines after the last chunk: checked for shape, bounded, and
/// discarded (we give no trailer a meaning). Ends at the empty line.
fn scan_trailers(
    buf: &[u8],
    mut pos: usize,
    mut framing_bytes: usize,
) -> Result<Option<usize>, HttpError> {
    let mut trailer_bytes = 0usize;
    // Bounded: every turn consumes at least 2 bytes or returns.
    loop {
        let Some(line_end) = crlf_line_end(buf, pos)? else {
            return Ok(None);
        };
        let line = &buf[pos..line_end];
        pos = line_end + 2;
        if line.is_empty() {
            return Ok(Some(pos));
        }
        trailer_bytes += line.len() + 2;
        framing_bytes += line.len() + 2;
        if trailer_bytes > TRAILERS_BYTES_MAX {
            return Err(HttpError::TrailersTooLarge);
        }
        if framing_bytes > CHUNKED_FRAMING_BYTES_MAX {
            return Err(HttpError::ChunkedFramingTooLarge);
        }
        let colon = line.iter().position(|&b| b == b':');
        let valid = match colon {
            Some(colon) => {
                colon > 0
                    && line[..colon].iter().all(|&b| is_tchar(b))
                    && line[colon + 1..].iter().all(|&b| is_field_byte(b))
            }
            None => false,
        };
        if !valid {
            return Err(HttpError::InvalidTrailer);
        }
    }
}

/// HTAB, SP, visible ASCII and obs-text: what a field value may hold.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// The index of the CR of the CRLF ending the line that starts at `start`,
/// `None` if the line is not complete yet.
fn crlf_line_end(buf: &[u8], start: usize) -> Result<Option<usize>, HttpError> {
    for (offset, &b) in buf.get(start..).unwrap_or(&[]).iter().enumerate() {
        match b {
            b'\n' => return Err(HttpError::BareLineFeedInBody),
            b'\r' => {
                return match buf.get(start + offset + 1) {
                    Some(b'\n') => Ok(Some(start + offset)),
                    Some(_) => Err(HttpError::MissingChunkCrlf),
                    None => Ok(None),
                }
            }
            // This byte would be the line's (LINE + 1)th before its CRLF.
            _ if offset >= CHUNK_LINE_BYTES_MAX => return Err(HttpError::ChunkLineTooLong),
            _ => {}
        }
    }
    Ok(None)
}

/// `chunk-size [ BWS ";" ext... ]`: hex digits, then nothing, or optional
/// whitespace and `;` followed by extensions we ignore.
fn parse_chunk_size_line(line: &[u8]) -> Result<u64, HttpError> {
    let digits_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits_len == 0 {
        return Err(HttpError::InvalidChunkSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits_len] {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(HttpError::ChunkSizeOverflow)?;
    }
    let rest = &line[digits_len..];
    if !rest.is_empty() {
        let ext = trim_ows(rest);
        if ext.first() != Some(&b';') || !ext.iter().all(|&b| is_field_byte(b)) {
            return Err(HttpError::InvalidChunkSize);
        }
    }
    Ok(size)
}

/// Parse `a=1&b=2&a=3` with percent-decoding and `+` as space.
///
/// Repeated keys are kept in order, a key without `=` has an empty value,
/// empty pairs (`a=1&&b=2`) are skipped.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, HttpError> {
    parse_pairs(query.as_bytes())
}

/// Parse an `application/x-www-form-urlencoded` body (same rules as queries;
/// invalid UTF-8 is an error).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, HttpError> {
    parse_pairs(body)
}

fn parse_pairs(input: &[u8]) -> Result<Vec<(String, String)>, HttpError> {
    // Bounded by the input, itself bounded by uri_bytes_max/body_bytes_max.
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decode `%XX` and `+` (a space, in queries as in forms: browsers encode a
/// space as `+` in both, and a literal `+` is sent as `%2B`).
fn percent_decode(input: &[u8]) -> Result<String, HttpError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let high = input.get(i + 1).and_then(|&b| hex_value(b));
                let low = input.get(i + 2).and_then(|&b| hex_value(b));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(HttpError::InvalidPercentEncoding);
                };
                out.push(high << 4 | low);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::InvalidUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The interim response sent when a client waits on `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for a status code (a class name for codes we never send).
pub fn status_text(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// Append a complete response: status line, `headers`, `Content-Length`,
/// `Connection: keep-alive|close`, then `body`.
///
/// 1xx, 204 and 304 carry no `Content-Length` (RFC 9110 8.6) and no body.
/// A header whose name is not a token or whose value holds CR, LF or NUL is
/// a bug in the caller (asserted in debug builds) and is left out in release
/// builds, so a response can never be split.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let bodiless = matches!(status, 100..=199 | 204 | 304);
    debug_assert!(!bodiless || body.is_empty(), "status {status} has no body");
    write_status_and_headers(out, status, headers);
    if !bodiless {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, body.len());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    if !bodiless {
        out.extend_from_slice(body);
    }
}

/// Append the head of a close-delimited stream (an SSE response): status
/// line, `headers`, `Connection: close`, no length; the body runs until close.
///
/// Close-delimited rather than chunked so that one shared frame is sent
/// byte-identical to every subscriber, without per-subscriber chunk framing.
pub fn write_stream_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    write_status_and_headers(out, status, headers);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

fn write_status_and_headers(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    debug_assert!((100..=999).contains(&status), "status {status}");
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(status_text(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let safe = !name.is_empty()
            && name.bytes().all(is_tchar)
            && value.bytes().all(|b| b != b'\r' && b != b'\n' && b != 0);
        debug_assert!(safe, "unsafe response header {name:?}: {value:?}");
        debug_assert!(
            !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("connection"),
            "{name} is written by the writer itself"
        );
        if safe {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Append one chunk of a `Transfer-Encoding: chunked` response body.
///
/// Empty `data` writes nothing: an empty chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Append the terminating chunk of a chunked response.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn push_hex(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b"0123456789abcdef"[value & 0xf];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn small_limits() -> Limits {
        Limits {
            head_bytes_max: 256,
            headers_count_max: 4,
            uri_bytes_max: 64,
            body_bytes_max: 16,
        }
    }

    /// Parse a whole request (head, then body) the way the data plane will.
    fn parse_request(bytes: &[u8], limits: &Limits) -> Result<(RequestHead, Vec<u8>), HttpError> {
        match parse_head(bytes, limits)? {
            HeadStatus::Partial => panic!("head partial: {:?}", String::from_utf8_lossy(bytes)),
            HeadStatus::Complete { head, head_len } => {
                match read_body(head.body, &bytes[head_len..], limits)? {
                    BodyStatus::Partial => panic!("body partial"),
                    BodyStatus::Complete { body, consumed } => {
                        assert_eq!(head_len + consumed, bytes.len(), "trailing bytes");
                        Ok((head, body))
                    }
                }
            }
        }
    }

    fn complete_head(bytes: &[u8]) -> (RequestHead, usize) {
        match parse_head(bytes, &limits()) {
            Ok(HeadStatus::Complete { head, head_len }) => (head, head_len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn smuggling_and_limit_table() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(64));
        let long_head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
            "y".repeat(240)
        );
        let five_headers = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        #[rustfmt::skip]
        let table: Vec<(&str, Vec<u8>, Result<(), HttpError>)> = vec![
            // Content-Length and Transfer-Encoding together.
            ("CL+TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::ContentLengthWithTransferEncoding)),
            ("TE+CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::ContentLengthWithTransferEncoding)),
            // Transfer-Encoding obfuscations.
            ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
             Err(HttpError::UnsupportedTransferCoding)),
            ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(),
             Err(HttpError::ChunkedNotFinal)),
            ("TE gzip alone", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
             Err(HttpError::ChunkedNotFinal)),
            ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec(),
             Err(HttpError::ChunkedNotFinal)),
            ("TE chunked twice in a list", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n".to_vec(),
             Err(HttpError::ChunkedNotFinal)),
            ("TE repeated headers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
             Err(HttpError::ChunkedNotFinal)),
            ("TE repeated gzip then chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
             Err(HttpError::UnsupportedTransferCoding)),
            ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n".to_vec(),
             Err(HttpError::ChunkedNotFinal)),
            ("TE with parameter", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n".to_vec(),
             Err(HttpError::InvalidTransferEncoding)),
            ("TE inner space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n".to_vec(),
             Err(HttpError::InvalidTransferEncoding)),
            ("TE empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n".to_vec(),
             Err(HttpError::InvalidTransferEncoding)),
            ("TE vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n".to_vec(),
             Err(HttpError::ControlByte)),
            ("TE name with space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n".to_vec(),
             Err(HttpError::MalformedHeader)),
            ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::TransferEncodingInHttp10)),
            ("TE Chunked (case-insensitive) accepted", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n".to_vec(),
             Ok(())),
            ("TE chunked with trailing OWS accepted", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \t\r\n\r\n0\r\n\r\n".to_vec(),
             Ok(())),
            ("TE empty list elements ignored", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked,\r\n\r\n0\r\n\r\n".to_vec(),
             Ok(())),
            // Content-Length.
            ("CL differing headers", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
             Err(HttpError::ConflictingContentLength)),
            ("CL differing list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello".to_vec(),
             Err(HttpError::ConflictingContentLength)),
            ("CL identical repeats accepted", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec(),
             Ok(())),
            ("CL plus sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL minus sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL empty list element", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,,5\r\n\r\nhello".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
             Err(HttpError::InvalidContentLength)),
            ("CL surrounding OWS is not part of the value", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \r\n\r\nhello".to_vec(),
             Ok(())),
            // Host.
            ("1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), Err(HttpError::MissingHost)),
            ("1.1 with two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), Err(HttpError::DuplicateHost)),
            ("1.0 with two Hosts", b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n".to_vec(), Err(HttpError::DuplicateHost)),
            ("1.0 without Host", b"GET / HTTP/1.0\r\n\r\n".to_vec(), Ok(())),
            // Limits (small_limits for these rows: 256 / 4 / 64 / 16).
            ("header count over limit", five_headers.as_bytes().to_vec(), Err(HttpError::TooManyHeaders)),
            ("head over limit, complete", long_head.clone().into_bytes(), Err(HttpError::HeadTooLarge)),
            ("URI over limit", long_uri.into_bytes(), Err(HttpError::UriTooLong)),
            ("body over limit, CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n".to_vec(),
             Err(HttpError::BodyTooLarge)),
            ("body over limit, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\n".to_vec(),
             Err(HttpError::BodyTooLarge)),
            ("body at limit, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n".to_vec(),
             Ok(())),
            // Chunked bodies.
            ("chunk size not hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
             Err(HttpError::InvalidChunkSize)),
            ("chunk size empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n".to_vec(),
             Err(HttpError::InvalidChunkSize)),
            ("chunk size with sign", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::InvalidChunkSize)),
            ("chunk size 0x prefix", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::InvalidChunkSize)),
            ("chunk size trailing space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::InvalidChunkSize)),
            ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n".to_vec(),
             Err(HttpError::ChunkSizeOverflow)),
            ("chunk size huge but in u64", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n".to_vec(),
             Err(HttpError::BodyTooLarge)),
            ("chunk extension ignored", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ; name=\"v\"\r\nhello\r\n0;last\r\n\r\n".to_vec(),
             Ok(())),
            ("chunk extension with control byte", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00\r\nhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::InvalidChunkSize)),
            ("bare LF after chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::BareLineFeedInBody)),
            ("bare LF after chunk data", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n".to_vec(),
             Err(HttpError::BareLineFeedInBody)),
            ("bare LF ending the body", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n".to_vec(),
             Err(HttpError::BareLineFeedInBody)),
            ("chunk data longer than its size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::MissingChunkCrlf)),
            ("CR without LF in size line", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\rxhello\r\n0\r\n\r\n".to_vec(),
             Err(HttpError::MissingChunkCrlf)),
            ("trailers discarded", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n".to_vec(),
             Ok(())),
            ("trailer without colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a trailer\r\n\r\n".to_vec(),
             Err(HttpError::InvalidTrailer)),
            // Bytes that must never pass.
            ("NUL in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n".to_vec(), Err(HttpError::ControlByte)),
            ("DEL in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n".to_vec(), Err(HttpError::ControlByte)),
            ("NUL in target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::ControlByte)),
            ("ESC in target", b"GET /a\x1bb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::ControlByte)),
            ("non-ASCII in target", "GET /é HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes().to_vec(), Err(HttpError::InvalidTarget)),
            ("fragment in target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::InvalidTarget)),
            ("bare CR in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n".to_vec(), Err(HttpError::MalformedHeader)),
            ("bare LF in head", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n".to_vec(), Err(HttpError::BareLineFeed)),
            ("bare LF request line", b"GET / HTTP/1.1\nHost: a\r\n\r\n".to_vec(), Err(HttpError::BareLineFeed)),
            ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), Err(HttpError::ObsoleteLineFolding)),
            ("obsolete line folding, tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n".to_vec(), Err(HttpError::ObsoleteLineFolding)),
            // Request line.
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::VersionNotSupported)),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::VersionNotSupported)),
            ("HTTP/0.9", b"GET / HTTP/0.9\r\n\r\n".to_vec(), Err(HttpError::VersionNotSupported)),
            ("garbage version", b"GET / FTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::MalformedRequestLine)),
            ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::MalformedRequestLine)),
            ("no version", b"GET /\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::MalformedRequestLine)),
            ("relative target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::InvalidTarget)),
            ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::InvalidTarget)),
            ("asterisk for OPTIONS", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Ok(())),
            ("absolute-form", b"GET http://example.com/events?topic=a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Ok(())),
            ("absolute-form without authority", b"GET http:///events HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::InvalidTarget)),
            ("other scheme", b"GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Err(HttpError::InvalidTarget)),
            // Expect.
            ("Expect: 100-continue", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx".to_vec(), Ok(())),
            ("Expect: other", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx".to_vec(),
             Err(HttpError::ExpectationFailed)),
            ("Expect: 100-continue plus other", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\n\r\n".to_vec(),
             Err(HttpError::ExpectationFailed)),
            ("framing errors come before Expect", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\nContent-Length: +1\r\n\r\n".to_vec(),
             Err(HttpError::InvalidContentLength)),
        ];
        let small = small_limits();
        for (name, input, expected) in &table {
            let got = parse_request(input, &small).map(|_| ());
            assert_eq!(&got, expected, "{name}");
            if let Err(error) = expected {
                let status = error.status();
                assert!(
                    matches!(status, 400 | 413 | 414 | 417 | 431 | 501 | 505),
                    "{name}: {status}"
                );
                assert!(!error.reason().is_empty());
            }
        }
    }

    /// Found by fuzzing (`fuzz/`, target `http_head`): the refusal of a bad
    /// head depended on bytes after the one parsing stopped at, so the same
    /// bytes got 505 when they arrived whole and 400 in pieces (or another
    /// 400 reason). Every cut must give `Partial` or the verdict of the whole.
    #[test]
    fn refusal_does_not_depend_on_bytes_after_the_error() {
        let long = |before: &str, after: &str| {
            let mut bytes = before.as_bytes().to_vec();
            bytes.extend_from_slice(&[b'a'; 80]); // past small_limits' 64
            bytes.extend_from_slice(after.as_bytes());
            bytes
        };
        let cases: Vec<(Vec<u8>, Limits, HttpError)> = vec![
            // Four words: parsing stops at the third, `/`, no version.
            (
                b"GET /T / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
                limits(),
                HttpError::MalformedRequestLine,
            ),
            // A control byte after the bad method byte did not stop parsing.
            (
                b"\xff\xff\xff\x03Hos4.1\r\n\r\n".to_vec(),
                limits(),
                HttpError::MalformedRequestLine,
            ),
            // The version is refused before the control byte is reached.
            (
                b"GET / HTTP/2.0\r\nX: \x01\r\n\r\n".to_vec(),
                limits(),
                HttpError::VersionNotSupported,
            ),
            // A fold after the bad header name did not stop parsing.
            (
                b"GET / HTTP/1.1\r\nX@: a\r\n b\r\n\r\n".to_vec(),
                limits(),
                HttpError::MalformedHeader,
            ),
            // Where they do stop parsing, control bytes and folds still say so.
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n".to_vec(),
                limits(),
                HttpError::ControlByte,
            ),
            // The target outgrew its limit before the control byte...
            (
                long("POST /", "\0\0 HTTP/1.1\r\nHost: a\r\n\r\n"),
                small_limits(),
                HttpError::UriTooLong,
            ),
            // ... or before the bare LF of a complete head...
            (
                long("GET /", " HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
                small_limits(),
                HttpError::UriTooLong,
            ),
            // ... but not when the control byte came first.
            (
                long("GET /a\x01", " HTTP/1.1\r\nHost: a\r\n\r\n"),
                small_limits(),
                HttpError::ControlByte,
            ),
        ];
        for (bytes, limits, expected) in &cases {
            let name = String::from_utf8_lossy(bytes);
            assert_eq!(parse_head(bytes, limits), Err(expected.clone()), "{name:?}");
            for cut in 1..bytes.len() {
                match parse_head(&bytes[..cut], limits) {
                    Ok(HeadStatus::Partial) => {}
                    got => assert_eq!(got, Err(expected.clone()), "{name:?} cut at {cut}"),
                }
            }
        }
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", &limits()),
            Err(HttpError::ObsoleteLineFolding)
        );
    }

    #[test]
    fn errors_have_the_expected_statuses() {
        let table = [
            (HttpError::HeadTooLarge, 431),
            (HttpError::TooManyHeaders, 431),
            (HttpError::TrailersTooLarge, 431),
            (HttpError::UriTooLong, 414),
            (HttpError::BodyTooLarge, 413),
            (HttpError::ChunkedFramingTooLarge, 413),
            (HttpError::VersionNotSupported, 505),
            (HttpError::UnsupportedTransferCoding, 501),
            (HttpError::ExpectationFailed, 417),
            (HttpError::ContentLengthWithTransferEncoding, 400),
            (HttpError::MissingHost, 400),
            (HttpError::InvalidPercentEncoding, 400),
        ];
        for (error, status) in table {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.to_string(), format!("{status} {}", error.reason()));
        }
    }

    #[test]
    fn head_over_limit_while_partial() {
        let limits = small_limits();
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        buf.resize(limits.head_bytes_max, b'y');
        // Exactly at the limit and still incomplete: wait for more.
        assert_eq!(parse_head(&buf, &limits), Ok(HeadStatus::Partial));
        buf.push(b'y');
        assert_eq!(parse_head(&buf, &limits), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn head_exactly_at_limit_is_accepted() {
        let limits = small_limits();
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        let pad = limits.head_bytes_max - buf.len() - 4;
        buf.extend(std::iter::repeat_n(b'y', pad));
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(buf.len(), limits.head_bytes_max);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n"); // next pipelined request
        match parse_head(&buf, &limits) {
            Ok(HeadStatus::Complete { head_len, .. }) => {
                assert_eq!(head_len, limits.head_bytes_max)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uri_over_limit_while_partial_is_414() {
        let limits = small_limits();
        let mut buf = b"GET /".to_vec();
        buf.resize("GET ".len() + limits.uri_bytes_max, b'a');
        assert_eq!(parse_head(&buf, &limits), Ok(HeadStatus::Partial));
        buf.push(b'a');
        assert_eq!(parse_head(&buf, &limits), Err(HttpError::UriTooLong));
    }

    #[test]
    fn header_count_at_limit_is_accepted() {
        let limits = small_limits();
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let (head, _) = parse_request(buf, &limits).expect("four headers");
        assert_eq!(head.headers.len(), 4);
        // The fifth header line fails even before the head is complete.
        let partial = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n";
        assert_eq!(parse_head(partial, &limits), Err(HttpError::TooManyHeaders));
    }

    #[test]
    fn body_limit_for_content_length_is_decided_from_the_header() {
        let limits = small_limits();
        assert_eq!(
            read_body(BodyFraming::Length(17), b"", &limits),
            Err(HttpError::BodyTooLarge)
        );
        assert_eq!(
            read_body(BodyFraming::Length(16), b"0123456789", &limits),
            Ok(BodyStatus::Partial)
        );
        // parse_head refuses the head alone, so 100-continue is never sent.
        let head =
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 17\r\n\r\n";
        assert_eq!(parse_head(head, &limits), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn chunked_body_partial_until_complete() {
        let limits = limits();
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for cut in 0..end {
            assert_eq!(
                read_body(BodyFraming::Chunked, &body[..cut], &limits),
                Ok(BodyStatus::Partial),
                "cut {cut}"
            );
        }
        for cut in end..=body.len() {
            assert_eq!(
                read_body(BodyFraming::Chunked, &body[..cut], &limits),
                Ok(BodyStatus::Complete {
                    body: b"hello, world".to_vec(),
                    consumed: end
                })
            );
        }
    }

    #[test]
    fn chunked_framing_and_lines_are_bounded() {
        let limits = limits();
        let mut long_line = vec![b'0'; CHUNK_LINE_BYTES_MAX + 2];
        long_line[0] = b'1';
        assert_eq!(
            read_body(BodyFraming::Chunked, &long_line, &limits),
            Err(HttpError::ChunkLineTooLong)
        );
        let mut extension = b"1;".to_vec();
        extension.resize(CHUNK_LINE_BYTES_MAX + 1, b'e');
        assert_eq!(
            read_body(BodyFraming::Chunked, &extension, &limits),
            Err(HttpError::ChunkLineTooLong)
        );
        // Many one-byte chunks: the framing bound bites before the body's.
        let many = b"1\r\nx\r\n".repeat(CHUNKED_FRAMING_BYTES_MAX / 5 + 1);
        assert_eq!(
            read_body(BodyFraming::Chunked, &many, &limits),
            Err(HttpError::ChunkedFramingTooLarge)
        );
        assert!(many.len() < limits.body_wire_bytes_max());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..(TRAILERS_BYTES_MAX / 10 + 1) {
            trailers.extend_from_slice(b"X-Tr: 123\r\n");
        }
        assert_eq!(
            read_body(BodyFraming::Chunked, &trailers, &limits),
            Err(HttpError::TrailersTooLarge)
        );
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let buf: &[u8] = b"POST /publish?topic=a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /publish?topic=b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
GET /events?topic=a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let limits = limits();
        let mut rest = buf;
        let mut seen = Vec::new();
        // Bounded: three requests, then the buffer is empty.
        for _ in 0..3 {
            let HeadStatus::Complete { head, head_len } = parse_head(rest, &limits).expect("head")
            else {
                panic!("partial head");
            };
            rest = &rest[head_len..];
            let BodyStatus::Complete { body, consumed } =
                read_body(head.body, rest, &limits).expect("body")
            else {
                panic!("partial body");
            };
            rest = &rest[consumed..];
            seen.push((head.method, head.path, head.query, body, head.keep_alive));
        }
        assert!(rest.is_empty());
        assert_eq!(parse_head(rest, &limits), Ok(HeadStatus::Partial));
        assert_eq!(
            seen,
            vec![
                (
                    Method::Post,
                    "/publish".into(),
                    "topic=a".into(),
                    b"hello".to_vec(),
                    true
                ),
                (
                    Method::Post,
                    "/publish".into(),
                    "topic=b".into(),
                    b"abcde".to_vec(),
                    true
                ),
                (
                    Method::Get,
                    "/events".into(),
                    "topic=a".into(),
                    Vec::new(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn keep_alive_matrix() {
        let table: [(&str, &str, bool); 10] = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: Close\r\n", false),
            ("HTTP/1.1", "Connection: keep-alive\r\n", true),
            ("HTTP/1.1", "Connection: upgrade, CLOSE\r\n", false),
            (
                "HTTP/1.1",
                "Connection: keep-alive\r\nConnection: close\r\n",
                false,
            ),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
            ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
            ("HTTP/1.0", "Connection: close\r\n", false),
        ];
        for (version, connection, keep_alive) in table {
            let request = format!("GET / {version}\r\nHost: a\r\n{connection}\r\n");
            let (head, _) = complete_head(request.as_bytes());
            assert_eq!(head.keep_alive, keep_alive, "{version} {connection:?}");
        }
    }

    #[test]
    fn expect_continue() {
        let (head, _) = complete_head(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(head.expect_continue);
        assert_eq!(head.body, BodyFraming::Length(3));
        let (head, _) = complete_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n");
        assert!(!head.expect_continue);
        // RFC 9110 10.1.1: ignored in HTTP/1.0.
        let (head, _) =
            complete_head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!head.expect_continue);
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\nExpect: x\r\n\r\n", &limits()),
            Err(HttpError::ExpectationFailed)
        );
    }

    #[test]
    fn head_fields() {
        let (head, head_len) = complete_head(
            b"\r\nOPTIONS /a/b%20c?x=1&y HTTP/1.1\r\nHOST: example\r\nX-Multi: 1\r\nx-multi: 2\r\nX-Bin: \xff\r\n\r\nbody",
        );
        assert_eq!(head_len, 86);
        assert_eq!(head.method, Method::Options);
        assert_eq!(head.path, "/a/b%20c");
        assert_eq!(head.query, "x=1&y");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.body, BodyFraming::None);
        assert_eq!(head.header("host"), Some("example"));
        assert_eq!(head.header("x-multi"), Some("1"));
        assert_eq!(head.header("x-bin"), None);
        assert_eq!(head.header("absent"), None);
        let all: Vec<&[u8]> = head.headers_all("x-multi").collect();
        assert_eq!(all, vec![&b"1"[..], &b"2"[..]]);
        assert!(head
            .headers
            .iter()
            .all(|(n, _)| n == &n.to_ascii_lowercase()));

        for (method, expected) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("DELETE", Method::Other),
            ("get", Method::Other),
        ] {
            let request = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(complete_head(request.as_bytes()).0.method, expected);
        }

        let (head, _) =
            complete_head(b"GET HTTP://example.com?topic=a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((head.path.as_str(), head.query.as_str()), ("/", "topic=a"));
        let (head, _) = complete_head(b"GET https://example.com HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((head.path.as_str(), head.query.as_str()), ("/", ""));
    }

    #[test]
    fn head_partial_at_every_cut() {
        let request = b"POST /publish?topic=a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
        let (full, head_len) = complete_head(request);
        assert_eq!(head_len, request.len());
        for cut in 0..request.len() {
            assert_eq!(
                parse_head(&request[..cut], &limits()),
                Ok(HeadStatus::Partial),
                "cut {cut}"
            );
        }
        assert_eq!(full.body, BodyFraming::Length(2));
    }

    #[test]
    fn query_strings() {
        let pairs = |q: &str| parse_query(q).expect(q);
        let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            pairs("topic=a&topic=b"),
            owned(&[("topic", "a"), ("topic", "b")])
        );
        assert_eq!(pairs("a=1&&b=2&"), owned(&[("a", "1"), ("b", "2")]));
        assert_eq!(pairs("flag&x="), owned(&[("flag", ""), ("x", "")]));
        assert_eq!(pairs("a+b=c+d%2B"), owned(&[("a b", "c d+")]));
        assert_eq!(pairs("k=%C3%A9%3d=x"), owned(&[("k", "é==x")]));
        assert_eq!(pairs(""), owned(&[]));
        assert_eq!(parse_query("a=%zz"), Err(HttpError::InvalidPercentEncoding));
        assert_eq!(parse_query("a=%4"), Err(HttpError::InvalidPercentEncoding));
        assert_eq!(parse_query("a=%"), Err(HttpError::InvalidPercentEncoding));
        assert_eq!(parse_query("a=%ff"), Err(HttpError::InvalidUtf8));
        assert_eq!(parse_query("%c3=1"), Err(HttpError::InvalidUtf8));
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_form(b"topic=news&data=hello+world%21&data=2"),
            Ok(vec![
                ("topic".into(), "news".into()),
                ("data".into(), "hello world!".into()),
                ("data".into(), "2".into()),
            ])
        );
        assert_eq!(parse_form(b"a=\xff"), Err(HttpError::InvalidUtf8));
        assert_eq!(parse_form(b"a=%e2%82"), Err(HttpError::InvalidUtf8));
        assert_eq!(
            parse_form("a=é".as_bytes()),
            Ok(vec![("a".into(), "é".into())])
        );
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            &[("Content-Type", "text/plain")],
            b"ok",
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
        );
        out.clear();
        write_response(&mut out, 404, &[], b"", false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        write_response(&mut out, 204, &[], b"", true);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        write_stream_head(
            &mut out,
            200,
            &[
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-store"),
            ],
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        );
        // Multi-digit lengths are written in full.
        out.clear();
        let body = vec![b'x'; 12345];
        write_response(&mut out, 200, &[], &body, true);
        assert!(out.windows(21).any(|w| w == b"Content-Length: 12345"));
        assert!(out.ends_with(&body));
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"");
        assert!(out.is_empty());
        write_chunk(&mut out, b"hello");
        write_chunk(&mut out, &[b'a'; 26]);
        write_last_chunk(&mut out);
        assert_eq!(&out[..10], b"5\r\nhello\r\n");
        assert_eq!(&out[10..14], b"1a\r\n");
        // What we write, we read back.
        assert_eq!(
            read_body(BodyFraming::Chunked, &out, &limits()),
            Ok(BodyStatus::Complete {
                body: [&b"hello"[..], &[b'a'; 26]].concat(),
                consumed: out.len()
            })
        );
        let mut big = Vec::new();
        write_chunk(&mut big, &vec![0u8; 0x10000]);
        assert!(big.starts_with(b"10000\r\n"));
    }

    #[test]
    fn status_texts() {
        let table = [
            (100, "Continue"),
            (200, "OK"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (413, "Content Too Large"),
            (414, "URI Too Long"),
            (415, "Unsupported Media Type"),
            (417, "Expectation Failed"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
            (299, "Success"),
            (499, "Client Error"),
            (599, "Server Error"),
        ];
        for (status, text) in table {
            assert_eq!(status_text(status), text, "{status}");
        }
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
