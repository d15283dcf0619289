//! Server-Sent Events on the wire (`text/event-stream`).
//!
//! CONTRACT (filled in by the wire-sse work; signatures are fixed because the
//! server, the load generator and the benches are written against them).

use bytes::Bytes;

/// The exact wire bytes of one event or comment, encoded once and shared by
/// every subscriber (cloning is a refcount bump, never a copy).
pub type Frame = Bytes;

/// One event as a publisher describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field; `None` means the default type `message`.
    pub event: Option<String>,
    /// `id:` field; `None` leaves the client's last event id unchanged.
    pub id: Option<String>,
    /// The payload; split into `data:` lines on LF, CR and CRLF.
    pub data: String,
    /// `retry:` field, reconnection time in milliseconds.
    pub retry: Option<u64>,
}

/// Why an event cannot be put on the wire without a browser misreading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    Todo,
}

/// Validate `event` and write its wire bytes once.
pub fn encode(event: &Event) -> Result<Frame, EncodeError> {
    let _ = event;
    todo!()
}

/// A comment frame (`: text`), e.g. heartbeats and `: connected`.
pub fn encode_comment(text: &str) -> Frame {
    let _ = text;
    todo!()
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

/// Incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct Parser {}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bytes of the stream; complete items are pushed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        let _ = (chunk, out);
        todo!()
    }

    /// The last event id buffer (persists across events, as in browsers).
    pub fn last_event_id(&self) -> &str {
        todo!()
    }

    /// The reconnection time the stream asked for with `retry:`, if any.
    pub fn retry_ms(&self) -> Option<u64> {
        todo!()
    }
}
