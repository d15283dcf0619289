//! One subscriber as the engine sees it: its connection state, the op in
//! flight on its fixed slot, and the ledger that outlives reconnects.

use crate::scenario::SlowMode;
use crate::stream::{StreamReader, SubLedger};

/// Where a subscriber's current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected yet (ramp not reached it) or between attempts.
    Idle,
    Connecting,
    Sending,
    /// Request sent, reading the response head.
    Head,
    Streaming,
    /// A stalled slow subscriber: no reads, only a poll for the server's close.
    Stalled,
    /// A stalled subscriber saw the server's close: reading what was sent before it.
    Draining,
    /// After the drain: a stalled subscriber reads again to see whether it was closed.
    Verdict,
    /// Cancelling the op in flight before closing the slot.
    Closing,
    /// Close submitted; the slot is free once it completes.
    CloseSent,
    Closed,
}

#[derive(Debug)]
pub struct Sub {
    pub topic: u32,
    /// Node it connects to (`--url` order).
    pub node: u16,
    /// Expectation channel (`RunConfig::channel`): what it is owed.
    pub channel: u32,
    pub gen: u32,
    pub state: State,
    /// user_data of the one read/write op in flight on the slot.
    pub op: Option<u64>,
    /// The request while its send is in flight.
    pub req: Option<Box<[u8]>>,
    pub req_off: usize,
    pub reader: Option<StreamReader>,
    pub ledger: SubLedger,
    /// Own read buffer, slow subscribers only (their reads are sized by credit).
    pub slow_buf: Option<Box<[u8]>>,
    /// Trickle credit, bytes.
    pub credit: u64,
    /// Chosen slow by `--slow-fraction`: its first connection reads slowly
    /// for the whole run.
    pub flag_slow: bool,
    /// Scenario stages (a bit each) in which it reads slowly.
    pub slow_stages: u32,
    /// How this connection misbehaves right now (`None`: reads normally). A
    /// flag-slow subscriber's first connection, or a connection during a
    /// stage that slows it; after a drop it reconnects as a normal reader,
    /// so the resume is tested, not the slowness again.
    pub slow_mode: Option<SlowMode>,
    /// This connection was made slow: the server closing it is a slow drop.
    pub slow_conn: bool,
    /// The last stage that made it slow, and the stages whose slow
    /// connection the server closed.
    pub slow_stage: Option<u16>,
    pub slowed_stages: u32,
    pub slow_dropped_stages: u32,
    /// Opened by a stage's ramp (which stage, due how long after publishing
    /// began) instead of before publishing.
    pub ramp: Option<(u16, u64)>,
    /// Owed events by sequence number from where publishing stood when its
    /// first stream opened (a subscriber that joined while publishing went on).
    pub owed_by_seq: bool,
    /// Counted in the shared live-fast drain arithmetic (a fast subscriber
    /// connected before publishing); the others are checked by sequence.
    pub counted_live: bool,
    /// Will not come back (gave up, or not reconnecting).
    pub gone: bool,
    /// What it is owed once publishing is over (computed once, then).
    pub owed_total: Option<u64>,
    pub attempt_start_ns: u64,
    pub streaming_since_ns: u64,
    pub attempts: u16,
    pub ever_connected: bool,
    /// Connected again after a drop.
    pub resumed: bool,
    /// First attempt ended (ramp gate).
    pub resolved: bool,
    pub dropped: bool,
    /// When a stalled subscriber saw the server's close (ns since epoch).
    pub drop_seen_ns: Option<u64>,
    pub reconnect_wanted: bool,
    /// In the engine's reconnect queue (closed, waiting for its retry time).
    pub reconnect_queued: bool,
    /// connect() refused the source pair (EADDRNOTAVAIL): once the slot is
    /// closed, try again at once from the next pair.
    pub pair_retry: bool,
    /// Such retries of the current attempt.
    pub pair_retries: u16,
    /// Disconnected by a scenario stage's churn or storm (when, which
    /// stage), until it streams again.
    pub dropped_at: Option<(u64, u16)>,
    /// When its last stream ended (ns since epoch), while it is reconnecting:
    /// the resume time runs from here to streaming again, across failed
    /// attempts (a refused or timed-out reconnect does not restart it).
    pub ended_at_ns: Option<u64>,
}

impl Sub {
    pub fn new(
        topic: u32,
        node: u16,
        channel: u32,
        flag_slow: bool,
        slow_stages: u32,
        ramp: Option<(u16, u64)>,
    ) -> Self {
        let slow = flag_slow || slow_stages != 0;
        Self {
            topic,
            node,
            channel,
            gen: 0,
            state: State::Idle,
            op: None,
            req: None,
            req_off: 0,
            reader: None,
            ledger: SubLedger {
                slow,
                ..SubLedger::default()
            },
            slow_buf: None,
            credit: 0,
            flag_slow,
            slow_stages,
            slow_mode: None,
            slow_conn: false,
            slow_stage: None,
            slowed_stages: 0,
            slow_dropped_stages: 0,
            ramp,
            owed_by_seq: false,
            counted_live: !slow && ramp.is_none(),
            gone: false,
            owed_total: None,
            attempt_start_ns: 0,
            streaming_since_ns: 0,
            attempts: 0,
            ever_connected: false,
            resumed: false,
            resolved: false,
            dropped: false,
            drop_seen_ns: None,
            reconnect_wanted: false,
            reconnect_queued: false,
            pair_retry: false,
            pair_retries: 0,
            dropped_at: None,
            ended_at_ns: None,
        }
    }

    /// A new connection attempt on the (free) slot; `flag_mode` is how a
    /// flag-slow subscriber's first connection reads.
    pub fn begin_attempt(&mut self, now_ns: u64, flag_mode: SlowMode) {
        debug_assert!(
            matches!(self.state, State::Idle | State::Closed),
            "attempt started in state {:?}",
            self.state
        );
        debug_assert!(self.op.is_none(), "attempt started with an op in flight");
        self.gen = self.gen.wrapping_add(1);
        self.attempts = self.attempts.saturating_add(1);
        self.attempt_start_ns = now_ns;
        self.reader = None;
        self.req = None;
        self.req_off = 0;
        self.credit = 0;
        self.slow_mode = (self.flag_slow && !self.ever_connected).then_some(flag_mode);
        self.slow_conn = self.slow_mode.is_some();
        if self.slow_mode.is_none() {
            self.slow_buf = None;
        }
    }
}
