//! One connection's state: where it is in its life (reading a request,
//! streaming, closing), what it has in flight on the ring, and its send
//! queue. Kept small on purpose: 100k idle subscribers must cost well under
//! 1 KiB each, so an idle stream is this struct and its topic entries only
//! (no read buffer, no queue heap, no msghdr).

use std::net::IpAddr;

use crate::hub::index::Sub;
use crate::ring::sendq::SendQueue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading (or answering) plain HTTP requests; keep-alive loops here.
    Request,
    /// An SSE stream: frames flow out, input is ignored.
    Streaming,
    /// Cancel/close submitted; the slot is freed when nothing is in flight.
    Closing,
}

/// Why a connection was closed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    Error,
    Done,
    RequestTimeout,
    IdleTimeout,
    SlowQueueBytes,
    SlowQueueAge,
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::PeerClosed,
        CloseReason::Error,
        CloseReason::Done,
        CloseReason::RequestTimeout,
        CloseReason::IdleTimeout,
        CloseReason::SlowQueueBytes,
        CloseReason::SlowQueueAge,
        CloseReason::Shutdown,
    ];

    /// Position in [`Self::ALL`] (the metrics' slot).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label of `stentor_connections_closed_total`.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Error => "error",
            CloseReason::Done => "done",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowQueueBytes => "slow_queue_bytes",
            CloseReason::SlowQueueAge => "slow_queue_age",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Bit flags of a connection (one byte instead of six bools).
pub mod flag {
    /// A multishot recv is armed.
    pub const RECV_ARMED: u8 = 1 << 0;
    /// Close once the send queue drains (error answers, 503, `Connection: close`).
    pub const CLOSE_AFTER_SEND: u8 = 1 << 1;
    /// In the worker's list of connections to start a send for.
    pub const DIRTY: u8 = 1 << 2;
    /// Over its queue budget: a close is on its way, nothing more is queued.
    pub const OVER_BUDGET: u8 = 1 << 3;
    /// Reading stopped (recv cancelled) until the answers queued drain:
    /// a client pipelining faster than it reads is slowed by TCP.
    pub const PAUSED: u8 = 1 << 4;
    /// A recv cancel is in flight (pausing).
    pub const RECV_CANCELLING: u8 = 1 << 5;
    /// The node was full at accept: answer the first request 503 and close.
    pub const REFUSE: u8 = 1 << 6;
    /// The client's IP held `--max-connections-per-ip` at accept: answer
    /// the first request 429 and close.
    pub const REFUSE_PER_IP: u8 = 1 << 7;
}

/// No `SendMsg` slot taken.
pub const MSG_SLOT_NONE: u32 = u32::MAX;
/// No deadline armed.
pub const DEADLINE_NONE: u32 = 0;

/// What a connection's one deadline stands for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Reading a request (head or body): 408.
    Request,
    /// Keep-alive, nothing buffered, nothing to send: close quietly.
    Idle,
}

/// A connection's request-phase state, boxed so that a stream (which never
/// reads another request) carries one pointer, not a buffer and an address.
#[derive(Debug)]
pub struct ReqState {
    /// Bytes of requests received and not yet handled.
    pub buf: Vec<u8>,
    /// The TCP peer, or the client a PROXY protocol header named.
    pub peer: IpAddr,
    /// A PROXY protocol header must come first (`--proxy-protocol`).
    pub proxy_pending: bool,
    /// `100 Continue` was sent for the request being read.
    pub continue_sent: bool,
    /// Body bytes of a refused request still to skip before the next one.
    pub discard_bytes: usize,
    /// What the current deadline stands for.
    pub deadline: Deadline,
    /// Fleet mode: a publish of this connection is with the broker; its
    /// answer's headers and keep-alive wait here. No further (pipelined)
    /// request is handled until it is answered, so answers stay in order.
    pub awaiting_answer: Option<(crate::api::Headers, bool)>,
}

impl ReqState {
    pub fn new(peer: IpAddr, proxy_pending: bool) -> ReqState {
        ReqState {
            buf: Vec::new(),
            peer,
            proxy_pending,
            continue_sent: false,
            discard_bytes: 0,
            deadline: Deadline::Request,
            awaiting_answer: None,
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    pub sendq: SendQueue,
    /// Request-phase state; `None` once streaming (or closing).
    pub req: Option<Box<ReqState>>,
    /// Topics this stream is subscribed to, with positions in the index.
    pub subs: Box<[Sub]>,
    /// The peer's key in the node's per-IP count (`limit::ip_key`), or 0
    /// when this connection is not counted there.
    pub peer_key: u64,
    /// The seam: live frames with an id at or below this were covered by
    /// the stream's replay (or its missed notice) and are skipped.
    pub live_after_id: u64,
    /// Index in the ring's fixed-file table.
    pub fixed: u32,
    /// Bumped on every reuse of the slab slot; carried in tokens.
    pub generation: u32,
    /// Tick at which the current deadline expires, or `DEADLINE_NONE`.
    pub deadline_tick: u32,
    /// Tick of the last send started (heartbeats go to quiet streams only).
    pub last_send_tick: u32,
    /// `SendMsg` storage slot of the send in flight, or `MSG_SLOT_NONE`.
    pub msg_slot: u32,
    /// Ops on the ring that will still post a completion for this slot.
    pub ops_in_flight: u8,
    /// Which of the worker's rings holds the fixed slot.
    pub ring: u8,
    pub phase: Phase,
    pub flags: u8,
}

/// Fleet mode: a stream waiting for its replay from Redis (see
/// `worker::answers`); until it arrives, its live frames wait here instead
/// of its send queue. Kept by the worker, by slab key, outside [`Conn`] so
/// an idle connection stays small.
#[derive(Debug, Default)]
pub struct Held {
    /// The connection's generation: a slot reused meanwhile is not it.
    pub generation: u32,
    /// Live frames delivered meanwhile, with their ids, in order.
    pub live: Vec<(u64, crate::wire::sse::Frame)>,
    pub live_bytes: usize,
    /// What the node's memory had (notice first): sent if Redis cannot do
    /// better.
    pub fallback: Vec<crate::wire::sse::Frame>,
    /// The client's `Last-Event-ID`.
    pub after_id: u64,
}

impl Conn {
    pub fn new(fixed: u32, ring: u8, generation: u32, req: ReqState) -> Conn {
        Conn {
            sendq: SendQueue::new(),
            req: Some(Box::new(req)),
            subs: Box::new([]),
            peer_key: 0,
            live_after_id: 0,
            fixed,
            generation,
            deadline_tick: DEADLINE_NONE,
            last_send_tick: 0,
            msg_slot: MSG_SLOT_NONE,
            ops_in_flight: 0,
            ring,
            phase: Phase::Request,
            flags: 0,
        }
    }

    /// The request buffer's capacity in bytes (what it costs the worker's
    /// request-buffer budget).
    pub fn req_buf_capacity(&self) -> usize {
        self.req.as_ref().map_or(0, |r| r.buf.capacity())
    }

    /// Become a stream: the request state (buffer, address) is freed and
    /// never comes back; returns its buffer capacity for the budget.
    pub fn start_streaming(&mut self) -> usize {
        debug_assert_eq!(self.phase, Phase::Request);
        let freed = self.req_buf_capacity();
        self.req = None;
        self.phase = Phase::Streaming;
        freed
    }

    /// Begin closing: nothing is read or queued any more; returns the
    /// request buffer capacity freed, for the budget.
    pub fn start_closing(&mut self) -> usize {
        let freed = self.req_buf_capacity();
        self.req = None;
        self.phase = Phase::Closing;
        freed
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u8) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u8) {
        self.flags &= !f;
    }

    /// One more op will complete for this slot.
    pub fn op_started(&mut self) {
        self.ops_in_flight = self
            .ops_in_flight
            .checked_add(1)
            .expect("ops in flight overflow: more than 255 ops on one connection");
    }

    /// An op completed for good (for multishot: its last completion).
    pub fn op_finished(&mut self) {
        assert!(
            self.ops_in_flight > 0,
            "completion for a connection with nothing in flight"
        );
        self.ops_in_flight -= 1;
    }

    /// The slab slot may be freed: closing and nothing left in flight.
    pub fn can_free(&self) -> bool {
        self.phase == Phase::Closing && self.ops_in_flight == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // The budget is 512 B per idle subscriber all in (1M on a node);
        // the struct must leave most of it for the slab entry, the index
        // entry and the kernel. 120 bytes today (x86_64): the request state
        // is boxed and gone once streaming.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 120, "Conn grew to {size} bytes");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(size, 120, "update the comment above");
        let mut c = Conn::new(3, 0, 1, ReqState::new([127, 0, 0, 1].into(), false));
        assert_eq!(c.req_buf_capacity(), 0);
        assert!(c.sendq.is_empty());
        c.req.as_mut().unwrap().buf.reserve(100);
        assert!(c.start_streaming() >= 100);
        assert!(c.req.is_none());
    }

    #[test]
    fn close_reasons_index_their_table() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn slot_frees_only_when_nothing_is_in_flight() {
        let mut c = Conn::new(0, 0, 0, ReqState::new([127, 0, 0, 1].into(), false));
        c.op_started();
        c.phase = Phase::Closing;
        assert!(!c.can_free());
        c.op_finished();
        assert!(c.can_free());
    }

    #[test]
    #[should_panic(expected = "nothing in flight")]
    fn a_completion_too_many_is_a_bug() {
        let mut c = Conn::new(0, 0, 0, ReqState::new([127, 0, 0, 1].into(), false));
        c.op_finished();
    }
}
