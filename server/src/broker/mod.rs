//! Where published events come from when a node is one of a fleet.
//!
//! The embedded broker (the default) is the hub itself: ids, history and
//! fan-out live in one process. In fleet mode (`--broker redis://…`) every
//! node appends to and reads from one Redis, so a publish on any node reaches
//! subscribers on every node and a client resumes on any node. See
//! `docs/design/cluster.md` for the design (keys, the total order, failures).
//!
//! This module holds what does not depend on the broker's protocol: the
//! event shapes, the errors (with a kind for metrics labels), the options
//! with their limits, and the reconnect backoff. [`redis`] is the client.
//!
//! Threads and connections: a node runs exactly three broker threads, each
//! with one connection: a reader ([`redis::spawn_reader`]) that follows the
//! log, a publisher ([`redis::spawn_publisher`]) that pipelines the batches
//! workers hand it, and a range thread ([`node`]) that reads resumes the
//! node's memory does not cover. None ever runs on a worker ring: the
//! fan-out hot path makes no broker call. [`node`] ties them to the bus.

pub mod node;
pub mod redis;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Default for [`BrokerOptions::connect_timeout_ms`]: a Redis on the same
/// network answers a TCP handshake in well under a millisecond; a second
/// means it is not there.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// Default for [`BrokerOptions::io_timeout_ms`]: the longest a command may
/// take beyond any time it blocks on purpose. A publish of a full batch takes
/// a few milliseconds; two seconds is a Redis that is stuck (or swapping).
pub const IO_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default for [`BrokerOptions::read_block_ms`]: how long one `XREAD BLOCK`
/// waits for new entries. Also bounds how late the reader notices a stop.
pub const READ_BLOCK_MS_DEFAULT: u64 = 500;
/// Default for [`BrokerOptions::read_count_max`]: log entries per `XREAD`.
/// Bounds the reader's memory per round trip and the size of one hand-off
/// to the workers.
pub const READ_COUNT_MAX_DEFAULT: usize = 1_000;
/// Default for [`BrokerOptions::log_events_max`]: entries kept in the shared
/// log that every node follows (`XADD … MAXLEN ~`). A node that falls further
/// behind than this reports a gap instead of silently skipping events.
pub const LOG_EVENTS_MAX_DEFAULT: u64 = 100_000;
/// Default for [`BrokerOptions::batch_events_max`]: the hub's own batch limit
/// (`hub::publish::BATCH_EVENTS_MAX_DEFAULT`), so any batch the node accepts
/// goes to Redis in one script call.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = crate::api::publish::BATCH_EVENTS_MAX_DEFAULT;
/// Default for [`BrokerOptions::pipeline_events_max`]: events the publisher
/// thread sends in one round trip, over all the batches it collected.
pub const PIPELINE_EVENTS_MAX_DEFAULT: usize = 10_000;
/// Default for [`BrokerOptions::namespace`].
pub const NAMESPACE_DEFAULT: &str = "default";
/// Longest namespace: it is part of every key.
pub const NAMESPACE_BYTES_MAX: usize = 64;

/// First wait after a failed connection or command; doubled on each failure
/// in a row up to [`BACKOFF_MS_MAX`], and drawn at random between half and
/// all of it so a fleet does not reconnect in lockstep after a Redis restart.
pub const BACKOFF_MS_MIN: u64 = 50;
/// Longest wait between two connection attempts: a Redis that comes back is
/// used again within this (plus the connect timeout).
pub const BACKOFF_MS_MAX: u64 = 2_000;

/// The fleet-mode knobs. Every table and queue the broker threads hold is
/// bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// TCP connect (and handshake: AUTH, SELECT) timeout.
    pub connect_timeout_ms: u64,
    /// Read and write timeout of every command, on top of `read_block_ms`
    /// for the reader's blocking read.
    pub io_timeout_ms: u64,
    /// `XREAD BLOCK` time of the reader.
    pub read_block_ms: u64,
    /// `XREAD COUNT`: log entries per read.
    pub read_count_max: usize,
    /// Events kept per topic stream (`MAXLEN ~`): the node's
    /// `--history-events-max`, so Redis keeps what a node would.
    pub history_events_max: u64,
    /// Entries kept in the shared log (`MAXLEN ~`).
    pub log_events_max: u64,
    /// Most events in one publish batch; a longer one is refused.
    pub batch_events_max: usize,
    /// Most events the publisher sends in one pipelined round trip.
    pub pipeline_events_max: usize,
    /// Part of every key (`stentor:{<namespace>}:…`): fleets sharing one
    /// Redis keep apart by namespace.
    pub namespace: String,
    /// CA certificates (PEM file) a `rediss://` server must present a
    /// certificate from; `None`: the system's trust store.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for BrokerOptions {
    fn default() -> BrokerOptions {
        BrokerOptions {
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            io_timeout_ms: IO_TIMEOUT_MS_DEFAULT,
            read_block_ms: READ_BLOCK_MS_DEFAULT,
            read_count_max: READ_COUNT_MAX_DEFAULT,
            history_events_max: 1_000,
            log_events_max: LOG_EVENTS_MAX_DEFAULT,
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            pipeline_events_max: PIPELINE_EVENTS_MAX_DEFAULT,
            namespace: NAMESPACE_DEFAULT.to_string(),
            tls_ca_file: None,
        }
    }
}

impl BrokerOptions {
    /// Refuses options no broker thread could work with, naming the knob.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("io_timeout_ms", self.io_timeout_ms),
            ("read_block_ms", self.read_block_ms),
            ("read_count_max", self.read_count_max as u64),
            ("history_events_max", self.history_events_max),
            ("log_events_max", self.log_events_max),
            ("batch_events_max", self.batch_events_max as u64),
            ("pipeline_events_max", self.pipeline_events_max as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(BrokerError::config(format!(
                "broker option {name} must be at least 1"
            )));
        }
        let ns = &self.namespace;
        let ns_ok = !ns.is_empty()
            && ns.len() <= NAMESPACE_BYTES_MAX
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ns_ok {
            return Err(BrokerError::config(format!(
                "broker namespace must be 1 to {NAMESPACE_BYTES_MAX} bytes of A-Z a-z 0-9 - _ . (got {ns:?})"
            )));
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms)
    }
}

/// An event to publish: what a node validated, before Redis gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub topic: String,
    /// `event:` type; `None` is the default `message`, and stays distinct
    /// from `Some("")` through Redis.
    pub event: Option<String>,
    pub data: String,
    /// `retry:` in milliseconds.
    pub retry: Option<u64>,
    /// Only for subscribers authorized for private events (kept for the
    /// authorization feature; the broker only carries it).
    pub private: bool,
}

/// An event as stored in Redis, with its cluster id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEvent {
    /// Unique and strictly increasing across all topics of the fleet.
    pub id: u64,
    pub topic: String,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub private: bool,
}

impl NewEvent {
    /// A validated publish, as the broker stores it, private flag included
    /// (`"private": true` in the publish body).
    pub fn from_request(req: &crate::hub::publish::PublishRequest) -> NewEvent {
        NewEvent {
            topic: req.topic.as_str().to_string(),
            event: req.event.event.clone(),
            data: req.event.data.clone(),
            retry: req.event.retry,
            private: req.private,
        }
    }
}

impl BrokerEvent {
    /// The SSE event to encode, with the cluster id as its `id:`: the frame
    /// is encoded once per node, like an embedded publish.
    pub fn to_sse(&self) -> crate::wire::sse::Event {
        crate::wire::sse::Event {
            event: self.event.clone(),
            id: Some(self.id.to_string()),
            data: self.data.clone(),
            retry: self.retry,
        }
    }
}

/// What one read of the shared log gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The events right after the id asked for, in id order, none missing.
    /// Empty when the blocking read expired with nothing new.
    Events(Vec<BrokerEvent>),
    /// The log was trimmed past the id asked for before this reader got
    /// there: ids `after_id + 1 ..= first_id - 1` are lost to this node
    /// (subscribers get `stentor.missed`). `events` follow the gap, in order.
    Gap {
        after_id: u64,
        first_id: u64,
        events: Vec<BrokerEvent>,
    },
    /// Redis lost its data (restart without persistence, `FLUSHALL`,
    /// failover to an empty replica): the id sequence was started again,
    /// above every id handed out before as far as the fleet knows. Events
    /// of the old run not yet read are lost (`stentor.missed`, reason
    /// `broker_reset`). `events` are the first of the new run, in order.
    Reset {
        epoch: String,
        events: Vec<BrokerEvent>,
    },
}

/// What a resume finds in Redis for some topics after an id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Events of the topics after the id, merged in id order, at most the
    /// count asked for (the oldest ones).
    pub events: Vec<BrokerEvent>,
    /// A topic's stream was trimmed past the id: some events after it are
    /// gone (`stentor.missed`, reason `evicted`).
    pub evicted: bool,
    /// More events follow `events` than the count asked for.
    pub more: bool,
    /// The id is from before the current run of the id sequence (Redis lost
    /// its data since): what happened in between is unknown
    /// (`stentor.missed`, reason `broker_reset`).
    pub before_reset: bool,
}

/// Why a broker call failed; [`BrokerErrorKind::as_str`] is the metrics
/// label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerErrorKind {
    /// The URL or an option is unusable: fix the configuration.
    Config,
    /// Could not reach or authenticate to Redis, or the connection dropped.
    Connect,
    /// Redis did not answer in time. For a publish, the events may or may
    /// not have been stored.
    Timeout,
    /// Redis answered something this client does not understand, or keys it
    /// uses hold foreign data.
    Protocol,
    /// Redis refused a command (out of memory, read-only replica, loading).
    Server,
    /// The publish script failed.
    Script,
    /// Redis lost its data. No call returns it (a reader reports
    /// [`Read::Reset`]); it is here so the node counts resets under the
    /// same `broker_errors{kind}` metric as every other broker trouble.
    Reset,
}

impl BrokerErrorKind {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerErrorKind::Config => "config",
            BrokerErrorKind::Connect => "connect",
            BrokerErrorKind::Timeout => "timeout",
            BrokerErrorKind::Protocol => "protocol",
            BrokerErrorKind::Server => "server",
            BrokerErrorKind::Script => "script",
            BrokerErrorKind::Reset => "reset",
        }
    }

    /// Every kind, for metrics that list each label from the start.
    pub const ALL: [BrokerErrorKind; 7] = [
        BrokerErrorKind::Config,
        BrokerErrorKind::Connect,
        BrokerErrorKind::Timeout,
        BrokerErrorKind::Protocol,
        BrokerErrorKind::Server,
        BrokerErrorKind::Script,
        BrokerErrorKind::Reset,
    ];
}

/// A failed broker call: a kind for metrics, a message for logs and `503`
/// bodies (never the password of the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    pub kind: BrokerErrorKind,
    pub message: String,
}

impl BrokerError {
    pub fn new(kind: BrokerErrorKind, message: impl Into<String>) -> BrokerError {
        BrokerError {
            kind,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> BrokerError {
        BrokerError::new(BrokerErrorKind::Config, message)
    }

    pub fn protocol(message: impl Into<String>) -> BrokerError {
        BrokerError::new(BrokerErrorKind::Protocol, message)
    }

    /// Whether the connection that gave this error can still be used: a
    /// refusal by Redis leaves it in step; a timeout or a reply we could not
    /// read may leave an answer in flight, so the connection is dropped.
    pub fn keeps_connection(&self) -> bool {
        matches!(
            self.kind,
            BrokerErrorKind::Server | BrokerErrorKind::Script | BrokerErrorKind::Config
        )
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broker {}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for BrokerError {}

/// State the node shares with its two broker threads.
#[derive(Debug, Default)]
pub struct BrokerShared {
    /// Set to make both threads return (each notices within its blocking
    /// read or backoff slice).
    pub stop: AtomicBool,
    /// Highest id this node has seen (read or published). A publish that
    /// finds the id counter gone (Redis lost its data) starts the new
    /// sequence above it, so this node's clients never see ids go back.
    pub id_seen_max: AtomicU64,
    /// The reader's connection is up (`/readyz`, `broker_connected`).
    pub reader_connected: AtomicBool,
    /// The publisher's connection is up.
    pub publisher_connected: AtomicBool,
}

impl BrokerShared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn note_id(&self, id: u64) {
        self.id_seen_max.fetch_max(id, Ordering::Relaxed);
    }
}

/// What the reader thread reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderMsg {
    /// The reader (re)connected; it resumes after the last id it read.
    Connected,
    /// A connection attempt or a read failed; the reader retries after a
    /// backoff. Streams stay open meanwhile.
    Disconnected(BrokerError),
    /// New events, in id order, none missing since the previous ones.
    Events(Vec<BrokerEvent>),
    /// Events after `after_id` up to `first_id` (excluded) are lost to this
    /// node: the log was trimmed before the reader got to them.
    Gap { after_id: u64, first_id: u64 },
    /// Redis lost its data; the next events are of a new run of ids.
    Reset { epoch: String },
}

/// One publisher's batch for the publisher thread, and where its answer goes.
pub struct PublishJob {
    pub batch: Vec<NewEvent>,
    /// Called once, on the publisher thread, with the batch's ids in order
    /// or why it was not stored. Must not block.
    pub reply: Box<dyn FnOnce(Result<Vec<u64>, BrokerError>) + Send>,
}

impl fmt::Debug for PublishJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishJob")
            .field("batch", &self.batch.len())
            .finish_non_exhaustive()
    }
}

/// Capped exponential backoff with jitter, for reconnecting.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ms: u64,
    seed: u64,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next_ms: BACKOFF_MS_MIN,
            seed: random_u64() | 1,
        }
    }

    /// After a success: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.next_ms = BACKOFF_MS_MIN;
    }

    /// The wait after one more failure in a row: between half and all of
    /// the current step, which then doubles up to [`BACKOFF_MS_MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next_ms;
        self.next_ms = (step * 2).min(BACKOFF_MS_MAX);
        // xorshift64: jitter needs no quality, only no lockstep.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = step / 2;
        Duration::from_millis(half + self.seed % (step - half + 1))
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// A random-enough `u64` from the standard library alone (the hasher's
/// per-process random keys, the time and the thread): for run ids and
/// jitter, not for secrets.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_within_bounds() {
        let mut b = Backoff::new();
        let mut step = BACKOFF_MS_MIN;
        for _ in 0..20 {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= step / 2 && d <= step,
                "{d} not in [{}, {step}]",
                step / 2
            );
            step = (step * 2).min(BACKOFF_MS_MAX);
        }
        b.reset();
        assert!(b.next_delay().as_millis() as u64 <= BACKOFF_MS_MIN);
    }

    #[test]
    fn options_refuse_zero_limits_and_bad_namespaces() {
        assert_eq!(BrokerOptions::default().validate(), Ok(()));
        let zero = BrokerOptions {
            read_count_max: 0,
            ..BrokerOptions::default()
        };
        let err = zero.validate().unwrap_err();
        assert_eq!(err.kind, BrokerErrorKind::Config);
        assert!(err.message.contains("read_count_max"), "{err}");
        for ns in ["", "a}b", "a b", &"x".repeat(NAMESPACE_BYTES_MAX + 1)] {
            let o = BrokerOptions {
                namespace: ns.to_string(),
                ..BrokerOptions::default()
            };
            assert!(o.validate().is_err(), "{ns:?} accepted");
        }
    }

    #[test]
    fn a_publish_request_round_trips_to_the_frame_an_embedded_publish_sends() {
        use crate::api::publish::{parse_publish, PublishRules};
        let rules = PublishRules {
            topic_bytes_max: 64,
            batch_events_max: 10,
        };
        let body = br#"{"topic":"a","data":"x\ny","event":"tick","retry":1000}"#;
        let reqs = parse_publish(Some("application/json"), body, &rules).unwrap();
        let new = NewEvent::from_request(&reqs[0]);
        assert_eq!((new.topic.as_str(), new.data.as_str()), ("a", "x\ny"));
        let stored = BrokerEvent {
            id: 1764361697000042,
            topic: new.topic,
            event: new.event,
            data: new.data,
            retry: new.retry,
            private: new.private,
        };
        let mut expect = reqs[0].event.clone();
        expect.id = Some("1764361697000042".into());
        assert_eq!(stored.to_sse(), expect);
    }

    #[test]
    fn random_u64_differs_between_calls() {
        assert_ne!(random_u64(), random_u64());
    }
}
