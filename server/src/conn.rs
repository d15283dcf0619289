//! One connection's state: where it is in its life (reading a request,
//! streaming, closing), what it has in flight on the ring, and its send
//! queue. Kept small on purpose: 100k idle subscribers must cost well under
//! 1 KiB each, so an idle stream is this struct and its topic entries only
//! (no read buffer, no queue heap, no msghdr).

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
    /// The peer is on loopback (publishing is allowed without a token).
    pub const PEER_LOOPBACK: u8 = 1 << 3;
    /// The current deadline is the keep-alive idle one, not a request one.
    pub const DEADLINE_IDLE: u8 = 1 << 4;
    /// `100 Continue` was sent for the request being read.
    pub const CONTINUE_SENT: u8 = 1 << 5;
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

#[derive(Debug)]
pub struct Conn {
    pub sendq: SendQueue,
    /// Bytes of a request being assembled; empty (no heap) once streaming.
    pub read_buf: Vec<u8>,
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

impl Conn {
    pub fn new(fixed: u32, ring: u8, generation: u32, peer_loopback: bool) -> Conn {
        Conn {
            sendq: SendQueue::new(),
            read_buf: Vec::new(),
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
            flags: if peer_loopback {
                flag::PEER_LOOPBACK
            } else {
                0
            },
        }
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
        // The budget is 1 KiB per idle subscriber all in; the struct itself
        // must leave most of it for the slab entry, index entry and kernel.
        // 128 bytes today (x86_64): at the bound, so a new field needs a
        // trade (a flag bit, a narrower type) or a reason to raise it.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 128, "Conn grew to {size} bytes");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(size, 128, "update the comment above");
        let c = Conn::new(3, 0, 1, true);
        assert_eq!(c.read_buf.capacity(), 0);
        assert!(c.sendq.is_empty());
        assert!(c.has(flag::PEER_LOOPBACK));
    }

    #[test]
    fn close_reasons_index_their_table() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn slot_frees_only_when_nothing_is_in_flight() {
        let mut c = Conn::new(0, 0, 0, false);
        c.op_started();
        c.phase = Phase::Closing;
        assert!(!c.can_free());
        c.op_finished();
        assert!(c.can_free());
    }

    #[test]
    #[should_panic(expected = "nothing in flight")]
    fn a_completion_too_many_is_a_bug() {
        let mut c = Conn::new(0, 0, 0, false);
        c.op_finished();
    }
}
