//! Slow subscribers: trickle credit, the poll that sees a stalled
//! subscriber's connection reset, and the verdict read after the drain.

use std::sync::atomic::Ordering;

use io_uring::opcode;
use io_uring::types::Fixed;

use super::sub::State;
use super::{user_data, Engine, OP_POLL, SLOW_BUF_BYTES, TICK_NS};
use crate::scenario::SlowMode;

impl Engine {
    /// Every 100 ms a trickling subscriber may read `bytes_per_s / 10` more
    /// bytes (credit capped at its buffer), one single-shot recv at a time.
    pub(super) fn give_trickle_credit(&mut self) {
        for idx in 0..self.subs.len() {
            let s = &mut self.subs[idx];
            let Some(SlowMode::Trickle { bytes_per_s }) = s.slow_mode else {
                continue;
            };
            if s.state != State::Streaming {
                continue;
            }
            let per_tick = (bytes_per_s * TICK_NS / 1_000_000_000).max(1);
            s.credit = (s.credit + per_tick).min(SLOW_BUF_BYTES as u64);
            if s.op.is_none() {
                let credit = s.credit as usize;
                self.arm_recv_one(idx, credit);
            }
        }
    }

    pub(super) fn arm_poll(&mut self, idx: usize) {
        let s = &mut self.subs[idx];
        let ud = user_data(OP_POLL, s.gen, idx as u32);
        s.op = Some(ud);
        let mask = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32;
        let e = opcode::PollAdd::new(Fixed(idx as u32), mask)
            .build()
            .user_data(ud);
        self.push(e);
    }

    /// Slow subscribers read everything once more, at full speed, to learn
    /// whether the server closed them: a close queued behind unread data (or
    /// a reset behind it) is invisible until the data before it is read.
    pub(super) fn start_verdict(&mut self) {
        self.verdict_started = true;
        let mut n = 0;
        for idx in 0..self.subs.len() {
            let s = &mut self.subs[idx];
            let trickling = s.slow_mode.is_some() && s.state == State::Streaming;
            if s.state != State::Stalled && !trickling {
                continue;
            }
            s.state = State::Verdict;
            n += 1;
            match s.op {
                Some(op) => self.cancel(idx, op),
                None => self.arm_recv_one(idx, SLOW_BUF_BYTES),
            }
        }
        self.shared.verdicts_pending.fetch_add(n, Ordering::AcqRel);
        self.shared.verdict_acks.fetch_add(1, Ordering::AcqRel);
    }
}
