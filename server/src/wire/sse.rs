//! Server-Sent Events on the wire (`text/event-stream`).
//!
//! Two halves, both pure (no I/O, no clocks):
//! - the **encoder** ([`encode`], [`encode_comment`]) validates a publisher's
//!   event once and writes its exact wire bytes into one [`Frame`] that every
//!   subscriber shares; anything a browser would misread is refused with a
//!   typed [`EncodeError`] instead of being put on the wire;
//! - the **parser** ([`Parser`]) reads a stream incrementally the way the
//!   WHATWG HTML standard says a browser does ("Interpreting an event
//!   stream"), so the load generator sees exactly what an `EventSource` would.
//!
//! The rules and byte-exact examples are in `docs/reference/protocol.md (part 1)`.

use std::fmt;

use bytes::{Bytes, BytesMut};

/// The exact wire bytes of one event or comment, encoded once and shared by
/// every subscriber (cloning is a refcount bump, never a copy).
pub type Frame = Bytes;

/// One event as a publisher describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field; `None` means the default type `message`. `Some("")` is
    /// put on the wire as-is and a browser reads it as `message` too.
    pub event: Option<String>,
    /// `id:` field; `None` leaves the client's last event id unchanged, and
    /// `Some("")` resets it to the empty string.
    pub id: Option<String>,
    /// The payload; split into `data:` lines on LF, CR and CRLF.
    pub data: String,
    /// `retry:` field, reconnection time in milliseconds.
    pub retry: Option<u64>,
}

/// Why an event cannot be put on the wire without a browser misreading it.
///
/// Each variant names the field at fault ([`EncodeError::field`]) and its
/// `Display` says why, in words fit for a `400` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// `event` contains CR or LF: a browser would end the field there and read
    /// the rest as another field.
    EventLineBreak,
    /// `id` contains CR or LF: a browser would end the field there and read
    /// the rest as another field.
    IdLineBreak,
    /// `id` contains NUL: a browser ignores such an id, so the client's resume
    /// point would silently differ from ours.
    IdNul,
    /// `retry` given as text is empty.
    RetryEmpty,
    /// `retry` given as text has something other than ASCII digits (a sign,
    /// a space, a letter): a browser ignores such a value.
    RetryNotDigits,
    /// `retry` given as text does not fit in a `u64` of milliseconds.
    RetryOverflow,
}

impl EncodeError {
    /// The name of the field at fault, as it appears on the wire.
    pub fn field(&self) -> &'static str {
        match self {
            EncodeError::EventLineBreak => "event",
            EncodeError::IdLineBreak | EncodeError::IdNul => "id",
            EncodeError::RetryEmpty | EncodeError::RetryNotDigits | EncodeError::RetryOverflow => {
                "retry"
            }
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.field();
        match self {
            EncodeError::EventLineBreak | EncodeError::IdLineBreak => write!(
                f,
                "field `{field}` contains a line break (CR or LF); a browser would end the field there"
            ),
            EncodeError::IdNul => write!(
                f,
                "field `{field}` contains a NUL character; a browser would ignore the id"
            ),
            EncodeError::RetryEmpty => write!(
                f,
                "field `{field}` is empty; it must be ASCII digits (0-9), in milliseconds"
            ),
            EncodeError::RetryNotDigits => write!(
                f,
                "field `{field}` must be ASCII digits only (0-9); a browser ignores any other value"
            ),
            EncodeError::RetryOverflow => write!(
                f,
                "field `{field}` is larger than {} milliseconds",
                u64::MAX
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

// Every field is written as `name: value`: a WHATWG parser strips exactly one
// space after the colon, so a value that itself starts with a space survives.
const EVENT_PREFIX: &[u8] = b"event: ";
const ID_PREFIX: &[u8] = b"id: ";
const RETRY_PREFIX: &[u8] = b"retry: ";
const DATA_PREFIX: &[u8] = b"data: ";
const COMMENT_PREFIX: &[u8] = b": ";

/// Decimal digits in `u64::MAX`: the most a `retry:` value can take.
const RETRY_DIGITS_MAX: usize = 20;

/// Check that `event` can go on the wire unchanged; the first fault found, in
/// field order (`event`, then `id`), is reported.
pub fn validate(event: &Event) -> Result<(), EncodeError> {
    if let Some(event_type) = &event.event {
        if find_line_break(event_type.as_bytes()).is_some() {
            return Err(EncodeError::EventLineBreak);
        }
    }
    if let Some(id) = &event.id {
        if find_line_break(id.as_bytes()).is_some() {
            return Err(EncodeError::IdLineBreak);
        }
        if id.as_bytes().contains(&0) {
            return Err(EncodeError::IdNul);
        }
    }
    Ok(())
}

/// The number of bytes [`encode`] writes for `event` (whether or not it is
/// valid), so a caller can size a buffer once.
pub fn encoded_len(event: &Event) -> usize {
    let mut len = 0;
    if let Some(event_type) = &event.event {
        len += EVENT_PREFIX.len() + event_type.len() + 1;
    }
    if let Some(id) = &event.id {
        len += ID_PREFIX.len() + id.len() + 1;
    }
    if let Some(retry_ms) = event.retry {
        len += RETRY_PREFIX.len() + decimal_digits(retry_ms) + 1;
    }
    for line in Lines::new(&event.data) {
        len += DATA_PREFIX.len() + line.len() + 1;
    }
    len + 1 // the blank line that dispatches the event
}

/// Validate `event` and append its wire bytes to `out`, reserving the exact
/// length first (at most one allocation). On error `out` is left untouched.
pub fn encode_into(event: &Event, out: &mut BytesMut) -> Result<(), EncodeError> {
    validate(event)?;
    let len = encoded_len(event);
    out.reserve(len);
    let start = out.len();
    if let Some(event_type) = &event.event {
        put_field(out, EVENT_PREFIX, event_type.as_bytes());
    }
    if let Some(id) = &event.id {
        put_field(out, ID_PREFIX, id.as_bytes());
    }
    if let Some(retry_ms) = event.retry {
        let mut digits = [0u8; RETRY_DIGITS_MAX];
        put_field(out, RETRY_PREFIX, write_decimal(retry_ms, &mut digits));
    }
    for line in Lines::new(&event.data) {
        put_field(out, DATA_PREFIX, line.as_bytes());
    }
    out.extend_from_slice(b"\n");
    debug_assert_eq!(
        out.len() - start,
        len,
        "encoded_len disagrees with encode_into"
    );
    Ok(())
}

/// Validate `event` and write its wire bytes once, in one allocation.
///
/// Field order: `event:`, `id:`, `retry:`, then one `data:` line per line of
/// data (split on LF, CR and CRLF), then a blank line. Empty data is a valid
/// event (a single `data: ` line).
pub fn encode(event: &Event) -> Result<Frame, EncodeError> {
    let mut out = BytesMut::with_capacity(encoded_len(event));
    encode_into(event, &mut out)?;
    debug_assert_eq!(out.len(), out.capacity(), "frame must be sized exactly");
    Ok(out.freeze())
}

/// A comment frame (`: text`), e.g. heartbeats and `: connected`.
///
/// `text` is split on LF, CR and CRLF and each line is written as its own
/// `: line` so a comment can never inject a field. The frame ends with a blank
/// line: it dispatches nothing (the data buffer is empty at a frame boundary)
/// but leaves the stream at a clean boundary, like every event frame.
pub fn encode_comment(text: &str) -> Frame {
    let len = Lines::new(text)
        .map(|line| COMMENT_PREFIX.len() + line.len() + 1)
        .sum::<usize>()
        + 1;
    let mut out = BytesMut::with_capacity(len);
    for line in Lines::new(text) {
        put_field(&mut out, COMMENT_PREFIX, line.as_bytes());
    }
    out.extend_from_slice(b"\n");
    debug_assert_eq!(out.len(), len, "comment frame must be sized exactly");
    out.freeze()
}

/// Parse a `retry` value a caller got as text (e.g. from a publish form):
/// ASCII digits only, no sign, no spaces, within `u64`, as a browser accepts.
pub fn parse_retry(text: &str) -> Result<u64, EncodeError> {
    if text.is_empty() {
        return Err(EncodeError::RetryEmpty);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EncodeError::RetryNotDigits);
    }
    // Digits only, so the one way left to fail is overflow.
    text.parse::<u64>().map_err(|_| EncodeError::RetryOverflow)
}

fn put_field(out: &mut BytesMut, prefix: &[u8], value: &[u8]) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\n");
}

fn decimal_digits(mut value: u64) -> usize {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

/// Write `value` in decimal at the end of `buf` without allocating.
fn write_decimal(mut value: u64, buf: &mut [u8; RETRY_DIGITS_MAX]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Index of the first CR or LF in `bytes`. Both are ASCII, so the index is
/// always a char boundary in UTF-8 text.
///
/// Every frame's data is scanned by the encoder and every received byte by the
/// parser (once per delivery in the load generator), so this looks at eight
/// bytes per step instead of one.
fn find_line_break(bytes: &[u8]) -> Option<usize> {
    const WORD_BYTES: usize = 8;
    let mut words = bytes.chunks_exact(WORD_BYTES);
    let mut offset = 0;
    for word in &mut words {
        let mut word_bytes = [0u8; WORD_BYTES];
        word_bytes.copy_from_slice(word);
        let word = u64::from_le_bytes(word_bytes);
        let found = zero_bytes(word ^ splat(b'\r')) | zero_bytes(word ^ splat(b'\n'));
        if found != 0 {
            // Little-endian: the lowest flagged byte is the first in the slice.
            let at = offset + (found.trailing_zeros() / 8) as usize;
            debug_assert!(bytes[at] == b'\r' || bytes[at] == b'\n');
            return Some(at);
        }
        offset += WORD_BYTES;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|at| offset + at)
}

const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The high bit of each zero byte of `word` set. A borrow can also flag a
/// byte *above* a zero byte, never below one, so the lowest flag is exact.
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(splat(0x01)) & !word & splat(0x80)
}

/// The lines of `text` as a WHATWG parser splits them: on CRLF, CR and LF.
/// Yields at least one (maybe empty) line; a trailing break yields a final
/// empty line, so `"a\n"` is `["a", ""]` and round-trips as `"a\n"`.
struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines { rest: Some(text) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        match find_line_break(bytes) {
            None => {
                self.rest = None;
                Some(rest)
            }
            Some(at) => {
                let crlf = bytes[at] == b'\r' && bytes.get(at + 1) == Some(&b'\n');
                let next = if crlf { at + 2 } else { at + 1 };
                self.rest = Some(&rest[next..]);
                Some(&rest[..at])
            }
        }
    }
}

/// One event dispatched by the parser (WHATWG "dispatch the event").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The event type; `message` when the stream gave none.
    pub event_type: String,
    /// The data buffer with its final LF removed.
    pub data: String,
    /// The last event id in force when this event was dispatched.
    pub last_event_id: String,
}

/// What the parser hands back while reading a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(ParsedEvent),
    /// A comment line's text after the colon (one leading space removed).
    Comment(String),
}

/// Default bound on one line's bytes (without its line ending). A longer line
/// is discarded and counted ([`Parser::lines_too_long`]) instead of growing
/// the buffer without bound.
pub const LINE_BYTES_MAX: usize = 1024 * 1024;

/// Default bound on one event's data buffer. An event whose data would grow
/// past it is discarded at its blank line and counted
/// ([`Parser::events_discarded`]).
pub const DATA_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A line buffer that grew past this is freed after its line instead of kept:
/// the parser runs once per connection (100k of them in the load generator),
/// so an idle one must not hold on to a once-large buffer.
const LINE_KEEP_BYTES: usize = 4 * 1024;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Where the parser is in skipping the UTF-8 byte order mark, which is only
/// ever skipped at the very start of the stream (and may be split across reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bom {
    /// This many leading bytes of the stream matched the BOM so far.
    Matching(usize),
    Done,
}

/// Incremental `text/event-stream` parser, following the WHATWG HTML standard
/// ("Interpreting an event stream"):
/// - a UTF-8 BOM is skipped at the start of the stream only;
/// - a line ends at CRLF, CR or LF (a CRLF split across reads is one ending);
/// - lines are decoded as UTF-8 lossily (U+FFFD), at line end, so a character
///   split across reads decodes correctly;
/// - `:` starts a comment; `name: value` drops one space after the colon; a
///   line with no colon is a field with an empty value;
/// - `event` sets the type, `data` appends value + LF, `id` sets the last event
///   id unless it contains NUL, `retry` is taken only if all ASCII digits;
/// - a blank line dispatches: nothing if the data buffer is empty, else the
///   event with its final LF removed (type `message` if none was given);
/// - an event without its blank line at the end of the stream is discarded.
///
/// Unlike a browser it bounds its buffers: see [`LINE_BYTES_MAX`] and
/// [`DATA_BYTES_MAX`].
#[derive(Debug)]
pub struct Parser {
    /// Raw bytes of the current line when it spans reads (else empty: a line
    /// wholly inside one read is parsed straight from the read's bytes).
    line: Vec<u8>,
    /// The current line went over `line_bytes_max`: drop bytes until its end.
    line_discarding: bool,
    /// The last byte seen ended a line with CR: an LF next is part of it.
    after_cr: bool,
    bom: Bom,
    data: String,
    event_type: String,
    /// The "last event ID buffer": set by `id:` lines as they arrive.
    id_buffer: String,
    /// The "last event ID string": `id_buffer` as of the last dispatch, what a
    /// browser would send as `Last-Event-ID` when it reconnects.
    last_event_id: String,
    retry_ms: Option<u64>,
    /// The current event lost a line or outgrew its data bound: drop it at its
    /// blank line rather than hand back an event with data missing.
    event_broken: bool,
    line_bytes_max: usize,
    data_bytes_max: usize,
    lines_too_long: u64,
    events_discarded: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            line: Vec::new(),
            line_discarding: false,
            after_cr: false,
            bom: Bom::Matching(0),
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry_ms: None,
            event_broken: false,
            line_bytes_max: LINE_BYTES_MAX,
            data_bytes_max: DATA_BYTES_MAX,
            lines_too_long: 0,
            events_discarded: 0,
        }
    }
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bound one line's bytes (without its line ending) at `line_bytes_max`
    /// instead of [`LINE_BYTES_MAX`]. A longer line is discarded and counted;
    /// unless it is a comment, the event it belongs to is discarded too.
    pub fn with_line_bytes_max(mut self, line_bytes_max: usize) -> Self {
        self.line_bytes_max = line_bytes_max;
        self
    }

    /// Bound one event's data at `data_bytes_max` bytes (counting the LF after
    /// each `data:` line) instead of [`DATA_BYTES_MAX`].
    pub fn with_data_bytes_max(mut self, data_bytes_max: usize) -> Self {
        self.data_bytes_max = data_bytes_max;
        self
    }

    /// Feed the next bytes of the stream; complete items are pushed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        let mut rest = self.skip_bom(chunk);
        while !rest.is_empty() {
            if self.after_cr {
                // CR then LF is one line ending, even when split across reads.
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match find_line_break(rest) {
                None => {
                    self.push_partial(rest);
                    return;
                }
                Some(at) => {
                    self.end_line(&rest[..at], out);
                    self.after_cr = rest[at] == b'\r';
                    rest = &rest[at + 1..];
                }
            }
        }
    }

    /// The last event id as of the last dispatch (persists across events, as
    /// in browsers): what a client sends as `Last-Event-ID` on reconnect. An
    /// `id:` line of an event whose blank line has not arrived yet does not
    /// count, just as in a browser.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for with `retry:`, if any.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Lines discarded because they were longer than the line bound.
    pub fn lines_too_long(&self) -> u64 {
        self.lines_too_long
    }

    /// Events dropped at their blank line because one of their lines was too
    /// long or their data outgrew the data bound.
    pub fn events_discarded(&self) -> u64 {
        self.events_discarded
    }

    /// End of stream. An event (or line) without its blank line is discarded,
    /// as a browser does; returns `true` if anything was left unfinished, e.g.
    /// so a load generator can tell a clean close from a cut one.
    pub fn finish(self) -> bool {
        !self.line.is_empty()
            || self.line_discarding
            || !self.data.is_empty()
            || !self.event_type.is_empty()
            || self.event_broken
            || self.id_buffer != self.last_event_id
    }

    /// Skip a UTF-8 BOM at the start of the stream, even one split across
    /// reads; returns what is left of `chunk` to parse.
    fn skip_bom<'c>(&mut self, chunk: &'c [u8]) -> &'c [u8] {
        let mut rest = chunk;
        while let Bom::Matching(matched) = self.bom {
            let Some((&byte, tail)) = rest.split_first() else {
                return rest;
            };
            if byte == BOM[matched] {
                rest = tail;
                self.bom = if matched + 1 == BOM.len() {
                    Bom::Done
                } else {
                    Bom::Matching(matched + 1)
                };
            } else {
                // Not a BOM after all: the bytes held back are content. None
                // of them is CR or LF, so they only start the first line.
                self.bom = Bom::Done;
                self.push_partial(&BOM[..matched]);
            }
        }
        rest
    }

    /// Keep bytes of a line whose end has not arrived yet, within the bound.
    fn push_partial(&mut self, part: &[u8]) {
        if self.line_discarding || part.is_empty() {
            return;
        }
        if self.line.len() + part.len() > self.line_bytes_max {
            let first = self.line.first().copied().unwrap_or(part[0]);
            self.line_too_long(first);
            self.line_discarding = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// A line ending arrived; `tail` is the line's bytes in this read.
    fn end_line(&mut self, tail: &[u8], out: &mut Vec<Item>) {
        if self.line_discarding {
            self.line_discarding = false;
            return;
        }
        if self.line.is_empty() {
            // The common case: the whole line is in this read, parse in place.
            if tail.len() > self.line_bytes_max {
                self.line_too_long(tail[0]);
                return;
            }
            self.process_line(tail, out);
            return;
        }
        self.push_partial(tail);
        if self.line_discarding {
            self.line_discarding = false;
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        self.process_line(&line, out);
        if line.capacity() <= LINE_KEEP_BYTES {
            line.clear();
            self.line = line;
        }
    }

    fn line_too_long(&mut self, first_byte: u8) {
        self.lines_too_long += 1;
        // A comment is only itself; any other line may be part of an event,
        // which would arrive with data missing: drop the whole event.
        if first_byte != b':' {
            self.event_broken = true;
        }
    }

    fn process_line(&mut self, raw: &[u8], out: &mut Vec<Item>) {
        if raw.is_empty() {
            self.dispatch(out);
            return;
        }
        // Valid UTF-8 (every line a server sends, in practice) is checked
        // at `from_utf8`'s speed and split at the colon's byte, which is a
        // char boundary there; anything else goes through the replacing
        // (and allocating) conversion, as a browser decodes it.
        match std::str::from_utf8(raw) {
            Ok(text) => self.process_text(text, raw.iter().position(|&b| b == b':'), out),
            Err(_) => {
                let text = String::from_utf8_lossy(raw);
                self.process_text(&text, text.find(':'), out);
            }
        }
    }

    fn process_text(&mut self, text: &str, colon: Option<usize>, out: &mut Vec<Item>) {
        match colon {
            Some(0) => out.push(Item::Comment(strip_one_space(&text[1..]).to_owned())),
            Some(colon) => self.process_field(&text[..colon], strip_one_space(&text[colon + 1..])),
            None => self.process_field(text, ""),
        }
    }

    fn process_field(&mut self, name: &str, value: &str) {
        match name {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                if self.event_broken {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.data_bytes_max {
                    self.event_broken = true;
                    self.data = String::new();
                    return;
                }
                // One reservation for value and LF: pushing them one after the
                // other would reallocate a fresh buffer twice per event.
                self.data.reserve(value.len() + 1);
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id with NUL is ignored, as in browsers.
            "id" if !value.contains('\0') => {
                self.id_buffer.clear();
                self.id_buffer.push_str(value);
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits only: the one failure left is overflow, which a
                // browser cannot honour either; keep the previous value.
                if let Ok(retry_ms) = value.parse::<u64>() {
                    self.retry_ms = Some(retry_ms);
                }
            }
            _ => {} // Unknown fields and refused values are ignored, as in browsers.
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.event_broken {
            self.event_broken = false;
            self.events_discarded += 1;
            self.data.clear();
            self.event_type.clear();
            return;
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let had_lf = self.data.pop();
        debug_assert_eq!(had_lf, Some('\n'), "data buffer ends with LF");
        let data = std::mem::take(&mut self.data);
        let event_type = if self.event_type.is_empty() {
            String::from("message")
        } else {
            std::mem::take(&mut self.event_type)
        };
        out.push(Item::Event(ParsedEvent {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        }));
    }
}

fn strip_one_space(value: &str) -> &str {
    value.strip_prefix(' ').unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            data: data.to_owned(),
            ..Event::default()
        }
    }

    fn ev(event_type: &str, data: &str, last_event_id: &str) -> Item {
        Item::Event(ParsedEvent {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            last_event_id: last_event_id.to_owned(),
        })
    }

    fn comment(text: &str) -> Item {
        Item::Comment(text.to_owned())
    }

    fn parse(bytes: &[u8]) -> (Vec<Item>, Parser) {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        parser.feed(bytes, &mut out);
        (out, parser)
    }

    /// Parse in one read and one byte per read; both must agree.
    fn parse_both_ways(bytes: &[u8]) -> Vec<Item> {
        let (whole, whole_parser) = parse(bytes);
        let mut parser = Parser::new();
        let mut bytewise = Vec::new();
        for byte in bytes {
            parser.feed(std::slice::from_ref(byte), &mut bytewise);
        }
        assert_eq!(whole, bytewise, "split reads differ for {bytes:?}");
        assert_eq!(whole_parser.last_event_id(), parser.last_event_id());
        assert_eq!(whole_parser.retry_ms(), parser.retry_ms());
        whole
    }

    fn round_trip(event: &Event) -> (Vec<Item>, Parser) {
        let frame = encode(event).expect("valid event");
        parse(&frame)
    }

    #[test]
    fn find_line_break_matches_a_plain_scan() {
        // Every position in and around an 8-byte word, every byte value next
        // to it (0x0C/0x0E, 0x8D, ... must not be taken for CR/LF).
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = byte;
                    if at + 1 < len {
                        bytes[at + 1] = b'\n';
                    }
                    let plain = bytes.iter().position(|&b| b == b'\r' || b == b'\n');
                    assert_eq!(find_line_break(&bytes), plain, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn encode_writes_fields_in_order_with_one_data_line_per_line() {
        let frame = encode(&Event {
            event: Some("update".into()),
            id: Some("42".into()),
            data: "first\nsecond".into(),
            retry: Some(3000),
        })
        .unwrap();
        assert_eq!(
            &frame[..],
            b"event: update\nid: 42\nretry: 3000\ndata: first\ndata: second\n\n"
        );
    }

    #[test]
    fn encode_data_table() {
        let cases: &[(&str, &[u8])] = &[
            ("", b"data: \n\n"),
            ("a", b"data: a\n\n"),
            ("a\n", b"data: a\ndata: \n\n"),
            ("a\rb", b"data: a\ndata: b\n\n"),
            ("a\r\nb", b"data: a\ndata: b\n\n"),
            ("a\n\rb", b"data: a\ndata: \ndata: b\n\n"),
            ("\n", b"data: \ndata: \n\n"),
            ("  two spaces", b"data:   two spaces\n\n"),
            (": not a comment", b"data: : not a comment\n\n"),
            ("id: 7", b"data: id: 7\n\n"),
            (
                "h\u{e9}llo \u{1F600}",
                "data: h\u{e9}llo \u{1F600}\n\n".as_bytes(),
            ),
        ];
        for (data, wire) in cases {
            let frame = encode(&event(data)).unwrap();
            assert_eq!(&frame[..], *wire, "data {data:?}");
            assert_eq!(frame.len(), encoded_len(&event(data)));
        }
    }

    #[test]
    fn encode_round_trips_data_with_cr_and_crlf_normalised_to_lf() {
        let cases = [
            ("", ""),
            ("a\n", "a\n"),
            ("a\r\n", "a\n"),
            ("a\r", "a\n"),
            ("\r\n\r\n", "\n\n"),
            ("\n\n\n", "\n\n\n"),
            (" lead", " lead"),
            ("  two", "  two"),
            (": x", ": x"),
            ("x:y", "x:y"),
            ("\u{feff}bom inside", "\u{feff}bom inside"),
            ("nul\0ok", "nul\0ok"),
            ("\u{4e2d}\u{6587}\r\n\u{0639}", "\u{4e2d}\u{6587}\n\u{0639}"),
        ];
        for (data, expected) in cases {
            let (items, _) = round_trip(&event(data));
            assert_eq!(items, vec![ev("message", expected, "")], "data {data:?}");
        }
    }

    #[test]
    fn encode_round_trips_event_type_id_and_retry() {
        let (items, parser) = round_trip(&Event {
            event: Some(" spaced:type".into()),
            id: Some(" 7:x".into()),
            data: "d".into(),
            retry: Some(u64::MAX),
        });
        assert_eq!(items, vec![ev(" spaced:type", "d", " 7:x")]);
        assert_eq!(parser.retry_ms(), Some(u64::MAX));
        assert_eq!(parser.last_event_id(), " 7:x");

        // An empty type is written and read back as the default type.
        let (items, _) = round_trip(&Event {
            event: Some(String::new()),
            ..event("d")
        });
        assert_eq!(items, vec![ev("message", "d", "")]);
    }

    #[test]
    fn encode_refuses_what_a_browser_would_misread() {
        let cases = [
            (Some("a\nb"), None, EncodeError::EventLineBreak),
            (Some("a\r"), None, EncodeError::EventLineBreak),
            (Some("a"), Some("1\r\n"), EncodeError::IdLineBreak),
            (None, Some("\n"), EncodeError::IdLineBreak),
            (None, Some("1\u{0}2"), EncodeError::IdNul),
            // The first fault in field order is the one reported.
            (Some("\n"), Some("\0"), EncodeError::EventLineBreak),
            (None, Some("\0\n"), EncodeError::IdLineBreak),
        ];
        for (event_type, id, expected) in cases {
            let event = Event {
                event: event_type.map(str::to_owned),
                id: id.map(str::to_owned),
                ..event("d")
            };
            assert_eq!(encode(&event), Err(expected), "{event:?}");
            let mut out = BytesMut::from(&b"kept"[..]);
            assert_eq!(encode_into(&event, &mut out), Err(expected));
            assert_eq!(&out[..], b"kept", "a refused event writes nothing");
        }
        // NUL is fine in the type and the data: a browser reads them back.
        let ok = Event {
            event: Some("t\0".into()),
            ..event("\0")
        };
        assert_eq!(round_trip(&ok).0, vec![ev("t\0", "\0", "")]);
    }

    #[test]
    fn encode_error_names_field_and_reason() {
        assert_eq!(
            EncodeError::IdLineBreak.to_string(),
            "field `id` contains a line break (CR or LF); a browser would end the field there"
        );
        assert_eq!(
            EncodeError::EventLineBreak.to_string(),
            "field `event` contains a line break (CR or LF); a browser would end the field there"
        );
        assert_eq!(
            EncodeError::IdNul.to_string(),
            "field `id` contains a NUL character; a browser would ignore the id"
        );
        assert_eq!(EncodeError::RetryNotDigits.field(), "retry");
        assert!(EncodeError::RetryOverflow
            .to_string()
            .contains("18446744073709551615"));
    }

    #[test]
    fn parse_retry_accepts_ascii_digits_only() {
        let cases: &[(&str, Result<u64, EncodeError>)] = &[
            ("0", Ok(0)),
            ("1500", Ok(1500)),
            ("007", Ok(7)),
            ("18446744073709551615", Ok(u64::MAX)),
            ("18446744073709551616", Err(EncodeError::RetryOverflow)),
            ("", Err(EncodeError::RetryEmpty)),
            ("12a", Err(EncodeError::RetryNotDigits)),
            ("-1", Err(EncodeError::RetryNotDigits)),
            ("+1", Err(EncodeError::RetryNotDigits)),
            (" 1", Err(EncodeError::RetryNotDigits)),
            ("1 ", Err(EncodeError::RetryNotDigits)),
            ("1.5", Err(EncodeError::RetryNotDigits)),
            ("\u{0661}", Err(EncodeError::RetryNotDigits)), // Arabic-Indic one
        ];
        for (text, expected) in cases {
            assert_eq!(parse_retry(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn encode_retry_digits_table() {
        for retry_ms in [0, 9, 10, 99, 100, 12345, u64::MAX] {
            let e = Event {
                retry: Some(retry_ms),
                ..event("")
            };
            let frame = encode(&e).unwrap();
            assert_eq!(frame, format!("retry: {retry_ms}\ndata: \n\n").as_bytes());
            assert_eq!(round_trip(&e).1.retry_ms(), Some(retry_ms));
        }
    }

    #[test]
    fn encode_comment_splits_lines_so_nothing_is_injected() {
        let cases: &[(&str, &[u8])] = &[
            ("connected", b": connected\n\n"),
            ("", b": \n\n"),
            ("a\nb", b": a\n: b\n\n"),
            ("x\r\ndata: evil", b": x\n: data: evil\n\n"),
            ("\r", b": \n: \n\n"),
        ];
        for (text, wire) in cases {
            let frame = encode_comment(text);
            assert_eq!(&frame[..], *wire, "comment {text:?}");
            let items = parse_both_ways(&frame);
            assert!(
                items.iter().all(|item| matches!(item, Item::Comment(_))),
                "a comment frame yields only comments: {items:?}"
            );
        }
        assert_eq!(parse(&encode_comment("hb")).0, vec![comment("hb")]);
    }

    #[test]
    fn parser_line_endings_table() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"data: a\n\n", &["a"]),
            (b"data: a\r\r", &["a"]),
            (b"data: a\r\n\r\n", &["a"]),
            (b"data: a\r\ndata: b\rdata: c\n\n", &["a\nb\nc"]),
            // CR LF is one ending, LF CR is two.
            (b"data: a\n\rdata: b\n\n", &["a", "b"]),
            (b"data: a\r\n\rdata: b\n\n", &["a", "b"]),
        ];
        for (wire, expected) in cases {
            let items = parse_both_ways(wire);
            let expected: Vec<Item> = expected.iter().map(|d| ev("message", d, "")).collect();
            assert_eq!(items, expected, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn parser_crlf_split_across_reads_is_one_line_ending() {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        parser.feed(b"data: a\r", &mut out);
        parser.feed(b"\ndata: b\r", &mut out);
        parser.feed(b"", &mut out); // an empty read changes nothing
        parser.feed(b"\n\r", &mut out);
        assert_eq!(out, vec![ev("message", "a\nb", "")]);
        // The CR at the end of a read that is NOT followed by LF still ended
        // the line, and the next line starts right away.
        parser.feed(b"data: c\r", &mut out);
        parser.feed(b"\r", &mut out);
        assert_eq!(out.last(), Some(&ev("message", "c", "")));
    }

    #[test]
    fn parser_bom_table() {
        let cases: &[(&[u8], Vec<Item>)] = &[
            (b"\xEF\xBB\xBFdata: a\n\n", vec![ev("message", "a", "")]),
            // Only ONE BOM is skipped: the second makes the field name
            // "\u{feff}data", an unknown field.
            (b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n", vec![]),
            // A BOM cut short is content (lossily decoded), not skipped.
            (b"\xEF\xBBdata: a\n\n", vec![]),
            (b"\xEF\xBB\xBF: c\n", vec![comment("c")]),
        ];
        for (wire, expected) in cases {
            assert_eq!(&parse_both_ways(wire), expected, "{wire:?}");
        }
        // Split across reads, at every point.
        let wire = b"\xEF\xBB\xBFdata: a\n\n";
        for cut in 0..wire.len() {
            let mut parser = Parser::new();
            let mut out = Vec::new();
            parser.feed(&wire[..cut], &mut out);
            parser.feed(&wire[cut..], &mut out);
            assert_eq!(out, vec![ev("message", "a", "")], "cut at {cut}");
        }
        // A BOM is skipped only at the start of the stream.
        let mut parser = Parser::new();
        let mut out = Vec::new();
        parser.feed(b"data: a\n\n", &mut out);
        parser.feed(b"\xEF\xBB\xBFdata: b\n\n", &mut out);
        assert_eq!(out, vec![ev("message", "a", "")]);
        // A partial BOM that turns into a line: "\u{fffd}data" is no field.
        let (items, _) = parse(b"\xEF\xBB\n\xEF\xBB\xBFx\n");
        assert_eq!(items, vec![]);
    }

    #[test]
    fn parser_field_and_value_rules_table() {
        let cases: &[(&[u8], Vec<Item>)] = &[
            // One leading space is removed, and only one.
            (b"data:a\n\n", vec![ev("message", "a", "")]),
            (b"data: a\n\n", vec![ev("message", "a", "")]),
            (b"data:  a\n\n", vec![ev("message", " a", "")]),
            (b"data:\ta\n\n", vec![ev("message", "\ta", "")]),
            // No colon: the whole line is the name, the value is empty.
            (b"data\n\n", vec![ev("message", "", "")]),
            (b"data\ndata\n\n", vec![ev("message", "\n", "")]),
            // Only the first colon splits.
            (b"data: a: b\n\n", vec![ev("message", "a: b", "")]),
            // Names are case-sensitive and must match exactly.
            (b"Data: a\n\n", vec![]),
            (b"data : a\n\n", vec![]),
            (b" data: a\n\n", vec![]),
            (b"unknown: a\ndata: b\n\n", vec![ev("message", "b", "")]),
            // Event type.
            (b"event: add\ndata: x\n\n", vec![ev("add", "x", "")]),
            (b"event:\ndata: x\n\n", vec![ev("message", "x", "")]),
            (b"event: a\nevent: b\ndata: x\n\n", vec![ev("b", "x", "")]),
            // The type resets after each dispatch, and after an empty dispatch.
            (
                b"event: a\ndata: x\n\ndata: y\n\n",
                vec![ev("a", "x", ""), ev("message", "y", "")],
            ),
            (b"event: a\n\ndata: y\n\n", vec![ev("message", "y", "")]),
            // A blank line with an empty data buffer dispatches nothing.
            (b"\n\n\n", vec![]),
            (b"id: 1\n\n", vec![]),
            // Non-ASCII and invalid UTF-8 (replaced, like a browser).
            (
                "data: \u{1F600} \u{e9}\n\n".as_bytes(),
                vec![ev("message", "\u{1F600} \u{e9}", "")],
            ),
            (b"data: a\xFFb\n\n", vec![ev("message", "a\u{FFFD}b", "")]),
            (b"data: \xE2\x82\n\n", vec![ev("message", "\u{FFFD}", "")]),
        ];
        for (wire, expected) in cases {
            assert_eq!(
                &parse_both_ways(wire),
                expected,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn parser_multibyte_char_split_across_reads_decodes_whole() {
        let wire = "data: \u{1F600}\u{e9}\n\n".as_bytes();
        for cut in 0..wire.len() {
            let mut parser = Parser::new();
            let mut out = Vec::new();
            parser.feed(&wire[..cut], &mut out);
            parser.feed(&wire[cut..], &mut out);
            assert_eq!(out, vec![ev("message", "\u{1F600}\u{e9}", "")], "cut {cut}");
        }
    }

    #[test]
    fn parser_comments_table() {
        let cases: &[(&[u8], Vec<Item>)] = &[
            (b": hi\n", vec![comment("hi")]),
            (b":hi\n", vec![comment("hi")]),
            (b":  hi\n", vec![comment(" hi")]),
            (b":\n", vec![comment("")]),
            (b":data: x\n", vec![comment("data: x")]),
            // A comment inside an event neither ends nor changes it.
            (
                b"data: a\n: between\ndata: b\n\n",
                vec![comment("between"), ev("message", "a\nb", "")],
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(&parse_both_ways(wire), expected, "{wire:?}");
        }
    }

    #[test]
    fn parser_retry_only_ascii_digits_table() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"retry: 1500\n", Some(1500)),
            (b"retry:0\n", Some(0)),
            (b"retry: 007\n", Some(7)),
            (b"retry: 12a\n", None),
            (b"retry: -1\n", None),
            (b"retry: +1\n", None),
            (b"retry:  1\n", None), // the second space stays in the value
            (b"retry: 1 \n", None),
            (b"retry: 1.5\n", None),
            (b"retry:\n", None),
            (b"retry\n", None),
            (b"retry: 18446744073709551616\n", None),
            (b"retry: 5\nretry: x\n", Some(5)), // a bad value keeps the old one
            (b"retry: 5\nretry: 6\n", Some(6)),
        ];
        for (wire, expected) in cases {
            let (_, parser) = parse(wire);
            assert_eq!(
                parser.retry_ms(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // Retry takes effect at its line, without a dispatch.
        let (items, parser) = parse(b"retry: 10\n");
        assert!(items.is_empty());
        assert_eq!(parser.retry_ms(), Some(10));
    }

    #[test]
    fn parser_last_event_id_rules() {
        let (items, parser) = parse(
            b"id: 1\ndata: a\n\n\
              data: b\n\n\
              id: 2\0x\ndata: c\n\n\
              id\ndata: d\n\n\
              id: 3\ndata: e\n\n\
              id:\ndata: f\n\n",
        );
        assert_eq!(
            items,
            vec![
                ev("message", "a", "1"),
                ev("message", "b", "1"), // persists across events
                ev("message", "c", "1"), // an id with NUL is ignored
                ev("message", "d", ""),  // `id` with no value resets it
                ev("message", "e", "3"),
                ev("message", "f", ""), // so does `id:`
            ]
        );
        assert_eq!(parser.last_event_id(), "");

        // An id with no data still moves the last event id at its blank line.
        let (items, parser) = parse(b"id: 9\n\n");
        assert!(items.is_empty());
        assert_eq!(parser.last_event_id(), "9");

        // ... but not before: the event is not complete yet.
        let (_, parser) = parse(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn parser_discards_final_event_without_blank_line() {
        let cases: &[(&[u8], bool)] = &[
            (b"data: a\n\ndata: b\n", true),
            (b"data: a\n\ndata: b", true),
            (b"data: a\n\nid: 2\n", true),
            (b"data: a\n\nevent: x\n", true),
            (b"data: a\n\n", false),
            (b"data: a\n\n: hb\n", false),
        ];
        for (wire, unfinished) in cases {
            let (items, parser) = parse(wire);
            let events: Vec<&Item> = items
                .iter()
                .filter(|item| matches!(item, Item::Event(_)))
                .collect();
            assert_eq!(events, vec![&ev("message", "a", "")], "{wire:?}");
            assert_eq!(parser.finish(), *unfinished, "{wire:?}");
        }
    }

    #[test]
    fn parser_bounds_line_length() {
        let mut parser = Parser::new().with_line_bytes_max(8);
        let mut out = Vec::new();
        // "data: 12" is 8 bytes: fits. "data: 123" is 9: discarded with its event.
        parser.feed(b"data: 12\n\ndata: 123\ndata: x\n\ndata: y\n\n", &mut out);
        assert_eq!(out, vec![ev("message", "12", ""), ev("message", "y", "")]);
        assert_eq!(parser.lines_too_long(), 1);
        assert_eq!(parser.events_discarded(), 1);

        // Split across reads: the buffer never holds more than the bound.
        let mut parser = Parser::new().with_line_bytes_max(8);
        let mut out = Vec::new();
        for _ in 0..1000 {
            parser.feed(b"data: xxxxxxxx", &mut out);
            assert!(parser.line.len() <= 8);
        }
        parser.feed(b"\n\ndata: ok\n\n", &mut out);
        assert_eq!(out, vec![ev("message", "ok", "")]);
        assert_eq!(parser.lines_too_long(), 1);
        assert_eq!(parser.events_discarded(), 1);

        // A too-long comment is dropped alone; the event around it survives.
        let mut parser = Parser::new().with_line_bytes_max(8);
        let mut out = Vec::new();
        parser.feed(b"data: a\n: long comment\r\ndata: b\n\n", &mut out);
        assert_eq!(out, vec![ev("message", "a\nb", "")]);
        assert_eq!(parser.lines_too_long(), 1);
        assert_eq!(parser.events_discarded(), 0);
    }

    #[test]
    fn parser_bounds_event_data() {
        let mut parser = Parser::new().with_data_bytes_max(4);
        let mut out = Vec::new();
        // "ab\n" is 3 bytes; a second line would make 6.
        parser.feed(b"data: ab\n\ndata: ab\ndata: cd\n\ndata: xyz\n\n", &mut out);
        assert_eq!(out, vec![ev("message", "ab", ""), ev("message", "xyz", "")]);
        assert_eq!(parser.events_discarded(), 1);
        assert_eq!(parser.lines_too_long(), 0);
    }

    #[test]
    fn frames_concatenate_into_a_stream() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&encode_comment("connected"));
        for (i, data) in ["x", "y\nz"].iter().enumerate() {
            let e = Event {
                id: Some(i.to_string()),
                ..event(data)
            };
            encode_into(&e, &mut wire).unwrap();
            wire.extend_from_slice(&encode_comment("hb"));
        }
        assert_eq!(
            parse_both_ways(&wire),
            vec![
                comment("connected"),
                ev("message", "x", "0"),
                comment("hb"),
                ev("message", "y\nz", "1"),
                comment("hb"),
            ]
        );
    }
}
