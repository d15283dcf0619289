//! Closing connections, draining on shutdown, and stopping: a slot is
//! freed only when nothing the kernel may still touch points into it.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};

use super::{abort, Worker, ACCEPTS_IN_FLIGHT, LOG_EVERY_TICKS, QUIESCE_MS};
use crate::conn::{flag, CloseReason, Phase, MSG_SLOT_NONE};
use crate::limit;
use crate::metrics::{self, COUNTERS};
use crate::ring::token::{OpKind, Token};

impl Worker {
    /// Unsubscribe, cancel whatever is in flight and close the fixed slot.
    /// The slab slot is freed once every op has completed.
    pub(super) fn close_conn(&mut self, key: u32, reason: CloseReason) {
        // First: once closing, the slot's entry is gone and a second close
        // finds nothing.
        self.access_stream_close(key, reason);
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        match reason {
            CloseReason::SlowQueueBytes => {
                metrics::add(&COUNTERS.dropped_slow_bytes_total, 1);
                limit::note_drop(limit::SlowDrop::QueueBytes);
            }
            CloseReason::SlowQueueAge => {
                metrics::add(&COUNTERS.dropped_slow_age_total, 1);
                limit::note_drop(limit::SlowDrop::QueueAge);
            }
            _ => {}
        }
        self.stats.closed[reason.index()] += 1;
        let subs = std::mem::take(&mut conn.subs);
        if !subs.is_empty() {
            // Node-wide stream counts per topic (topic forgetting).
            let index = &self.index;
            self.shared
                .unsubscribe(subs.iter().map(|sub| index.name(sub.topic)));
        }
        if conn.phase == Phase::Streaming {
            self.shared.presence_close(crate::bus::presence::StreamId {
                worker: self.id as u16,
                key,
                generation: conn.generation,
            });
        }
        let freed = conn.start_closing();
        self.private.close(key);
        self.patterns.close(key);
        let (fixed, ring, generation) = (conn.fixed, conn.ring, conn.generation);
        // A recv being cancelled for a pause still completes on its own;
        // cancelling it again is harmless (the cancel finds nothing).
        let recv_armed = conn.has(flag::RECV_ARMED);
        let sending = conn.sendq.is_sending();
        debug_assert!(
            conn.ops_in_flight >= u8::from(recv_armed) + u8::from(sending),
            "ops in flight besides recv, send and a pause"
        );
        self.req_buf_bytes -= freed;
        self.clear_deadline(key);
        let conns = &mut self.conns;
        for sub in subs.iter() {
            self.index.unsubscribe(*sub, key, |other, topic, pos| {
                for s in conns[other as usize].subs.iter_mut() {
                    if s.topic == topic {
                        s.pos = pos;
                    }
                }
            });
        }
        // Cancel the recv and a pending send first: a closed fixed slot alone
        // would leave them, and the socket, alive. Each is cancelled by its
        // user_data, a hash lookup; cancelling by file would scan every
        // pending request of the ring, quadratic when thousands close at
        // once (shutdown). Hard-linked so the close runs whatever they find.
        // A dropped slow client is closed abortively (RST): see `abort`.
        let mut entries = Vec::with_capacity(4);
        if abort::wanted(reason) {
            let ud = Token::new(OpKind::Linger, key, generation).pack();
            entries.push(abort::entry(fixed, ud));
        }
        for (armed, kind) in [(recv_armed, OpKind::Recv), (sending, OpKind::Send)] {
            if armed {
                let target = Token::new(kind, key, generation).pack();
                entries.push(
                    opcode::AsyncCancel::new(target)
                        .build()
                        .flags(squeue::Flags::IO_HARDLINK)
                        .user_data(Token::new(OpKind::Cancel, key, generation).pack()),
                );
            }
        }
        entries.push(
            opcode::Close::new(types::Fixed(fixed))
                .build()
                .user_data(Token::new(OpKind::Close, key, generation).pack()),
        );
        let conn = &mut self.conns[key as usize];
        for _ in 0..entries.len() {
            conn.op_started();
        }
        self.push(ring, &entries);
    }

    pub(super) fn maybe_free(&mut self, key: u32) {
        if !self.conns[key as usize].can_free() {
            return;
        }
        let conn = self.conns.remove(key as usize);
        assert_eq!(conn.ops_in_flight, 0, "slot freed with ops in flight");
        let ring = &mut self.rings[usize::from(conn.ring)];
        debug_assert!(ring.conns > 0);
        ring.conns -= 1;
        debug_assert_eq!(conn.msg_slot, MSG_SLOT_NONE);
        self.shared.connection_closed(&conn);
        if self.accepts_parked && self.draining_until.is_none() {
            self.unpark_accepts();
        }
    }

    pub(super) fn unpark_accepts(&mut self) {
        self.accepts_parked = false;
        for slot in 0..ACCEPTS_IN_FLIGHT {
            if !self.accepts[slot].armed {
                self.arm_accept(slot);
            }
        }
    }

    /// Rate limit for repeated warnings: one per `LOG_EVERY_TICKS`.
    pub(super) fn log_allowed(&mut self) -> bool {
        if self.last_log_tick == 0 || self.now.wrapping_sub(self.last_log_tick) >= LOG_EVERY_TICKS {
            self.last_log_tick = self.now;
            return true;
        }
        false
    }

    pub(super) fn begin_drain(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.now + self.ticks.shutdown);
        self.accepts_parked = false;
        for ring in 0..self.rings.len() as u8 {
            if !self.accepts.iter().any(|a| a.armed && a.ring == ring) {
                continue;
            }
            self.accept_cancels_in_flight += 1;
            let entry = opcode::AsyncCancel2::new(
                types::CancelBuilder::fd(types::Fd(self.listener.as_raw_fd())).all(),
            )
            .build()
            .user_data(Token::new(OpKind::AcceptCancel, 0, 0).pack());
            self.push(ring, &[entry]);
        }
        self.queue_spread_retries();
        // Idle and request connections close now; streams and pending
        // answers close once their queue is flushed (or at the deadline).
        let mut close_now = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase == Phase::Closing {
                continue;
            }
            if conn.sendq.is_empty() {
                close_now.push(key as u32);
            } else {
                // Its one deadline now is the drain's (`on_tick`).
                conn.set(flag::CLOSE_AFTER_SEND);
            }
        }
        for key in close_now {
            self.close_conn(key, CloseReason::Shutdown);
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.draining_until.is_some()
            && self.conns.is_empty()
            && self.accept_cancels_in_flight == 0
            && self.accepts.iter().all(|a| !a.armed)
    }

    /// Stop everything in flight and wait (at most `QUIESCE_MS`) until the
    /// kernel has finished with it: sends read frames and msghdrs, accepts
    /// write addresses, recvs use the provided buffers. Only then may the
    /// worker's memory go. Completions are counted, not dispatched: this
    /// runs while stopping, maybe after a panic, when no handler should run.
    /// Returns how many operations were still in flight when it gave up
    /// (0: the memory may go).
    pub(super) fn quiesce(&mut self) -> u64 {
        let mut pending: u64 = self
            .conns
            .iter()
            .map(|(_, c)| u64::from(c.ops_in_flight))
            .sum::<u64>()
            + self.accepts.iter().filter(|a| a.armed).count() as u64;
        for (r, ring) in self.rings.iter_mut().enumerate() {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(Token::new(OpKind::AcceptCancel, 0, 0).pack());
            // Whatever waits in the backlog never reached the kernel.
            self.backlog[r].clear();
            // SAFETY: the cancel points at no memory.
            let _ = unsafe { ring.ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + Duration::from_millis(QUIESCE_MS);
        while pending > 0 && Instant::now() < deadline {
            for ring in self.rings.iter_mut() {
                let _ = crate::ring::submit_and_reap(&mut ring.ring, 0);
                for cqe in ring.ring.completion() {
                    let Some(token) = Token::unpack(cqe.user_data()) else {
                        continue;
                    };
                    let last = !(token.kind == OpKind::Recv && cqueue::more(cqe.flags()));
                    let counted = matches!(
                        token.kind,
                        OpKind::Accept
                            | OpKind::Recv
                            | OpKind::Send
                            | OpKind::Cancel
                            | OpKind::Close
                            | OpKind::Linger
                            | OpKind::Pause
                    );
                    if counted && last {
                        pending = pending.saturating_sub(1);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if pending > 0 {
            crate::error!(
                "stopping with operations still in flight",
                worker = self.id,
                ops_in_flight = pending
            );
        }
        pending
    }
}

/// However the worker stops (its loop returns, an error, a panic), what its
/// connections hold node-wide goes back, once the kernel is done with them:
/// the open-connection and per-IP counts, the topics' stream counts and its
/// inbox are shared, and the other workers carry on.
impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.inboxes[self.id].close();
        let left = self.quiesce();
        for (key, conn) in self.conns.iter_mut() {
            self.private.close(key as u32);
            if conn.phase == Phase::Streaming {
                let id = crate::bus::presence::StreamId {
                    worker: self.id as u16,
                    key: key as u32,
                    generation: conn.generation,
                };
                self.shared.presence_close(id);
            }
            self.patterns.close(key as u32);
            let subs = std::mem::take(&mut conn.subs);
            if !subs.is_empty() {
                let index = &self.index;
                self.shared
                    .unsubscribe(subs.iter().map(|sub| index.name(sub.topic)));
            }
            self.shared.connection_closed(conn);
        }
        if left > 0 {
            // The kernel may still write into these (a recv into the
            // provided buffers, an accept into its address, a send reading
            // frames and msghdrs): leaking them once, on a failing stop,
            // is better than a use after free.
            std::mem::forget(std::mem::take(&mut self.rings));
            std::mem::forget(std::mem::take(&mut self.accepts));
            std::mem::forget(std::mem::take(&mut self.msgs));
            std::mem::forget(std::mem::take(&mut self.conns));
        }
        self.conns.clear();
        // Its counts so far stay; its gauges would otherwise report the
        // streams, queues and topics of the last sweep forever.
        let m = &self.shared.metrics.workers[self.id];
        m.flush(&mut self.stats);
        m.set_gauges(0, 0, &[0; crate::metrics::TOPIC_SLOTS]);
    }
}
