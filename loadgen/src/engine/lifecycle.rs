//! How a subscriber's connection ends and what follows: failed attempts,
//! streams the server ended, the slot closed only once nothing is in flight
//! on it, and the reconnect (with `Last-Event-ID`) scheduled after.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use io_uring::opcode;
use io_uring::types::Fixed;

use super::sub::State;
use super::{
    user_data, Engine, OP_CANCEL, OP_CLOSE, RECONNECTS_MAX, RETRY_MS_DEFAULT, RETRY_MS_MAX,
};
use crate::stats::bump;

impl Engine {
    /// An attempt could not even start: the subscriber is gone for this run.
    pub(super) fn attempt_lost(&mut self, idx: usize) {
        if self.subs[idx].ever_connected {
            self.leave_live(idx);
        }
        self.resolve(idx);
    }

    /// Mark subscriber `idx`'s first attempt as ended (for the ramp gate).
    pub(super) fn resolve(&mut self, idx: usize) {
        let s = &mut self.subs[idx];
        if !s.resolved {
            s.resolved = true;
            self.shared.resolved.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A connection attempt failed before the stream opened.
    pub(super) fn fail_attempt(&mut self, idx: usize, kind: &str, now: u64) {
        self.connect_error(idx, kind, now);
        self.pending = self.pending.saturating_sub(1);
        let was_connected = self.subs[idx].ever_connected;
        let reconnect = was_connected && self.wants_reconnect(idx);
        self.subs[idx].reconnect_wanted = reconnect;
        if !was_connected {
            self.resolve(idx);
        } else if !reconnect {
            self.subs[idx].ended_at_ns = None;
            self.leave_live(idx);
        }
        self.begin_close(idx, now);
    }

    /// connect() found the 4-tuple taken: close the slot and try the next
    /// pair as soon as the close completes (same attempt, not an error).
    pub(super) fn retry_source_pair(&mut self, idx: usize, now: u64) {
        self.stats.source_pair_retries += 1;
        self.pending = self.pending.saturating_sub(1);
        let s = &mut self.subs[idx];
        s.pair_retry = true;
        s.pair_retries += 1;
        self.begin_close(idx, now);
    }

    /// A connect error of `kind` for subscriber `idx`: its node's count and the second's.
    pub(super) fn connect_error(&mut self, idx: usize, kind: &str, now: u64) {
        bump(&mut self.node_stats(idx).connect_errors, kind);
        self.stats.series.at(super::second_of(now)).error(kind);
    }

    /// A fast subscriber that will not come back leaves the drain arithmetic.
    pub(super) fn leave_live(&mut self, idx: usize) {
        self.subs[idx].gone = true;
        if !self.subs[idx].counted_live {
            return;
        }
        self.flush_counters();
        let s = &self.subs[idx];
        self.shared.live_fast[s.channel as usize].fetch_sub(1, Ordering::AcqRel);
        self.shared
            .live_unique
            .fetch_sub(s.ledger.tracker.unique(), Ordering::AcqRel);
    }

    pub(super) fn wants_reconnect(&self, idx: usize) -> bool {
        self.cfg.reconnect
            && self.subs[idx].attempts <= RECONNECTS_MAX
            && (!self.shared.flag(&self.shared.verdict) || self.shared.flag(&self.shared.catchup))
            && !self.shared.flag(&self.shared.stop)
    }

    /// An open stream ended (server close, error, protocol error).
    pub(super) fn end_stream(&mut self, idx: usize, cause: &str, now: u64) {
        bump(&mut self.node_stats(idx).disconnects, cause);
        self.stats.series.at(super::second_of(now)).disconnects += 1;
        self.shared.streaming.fetch_sub(1, Ordering::AcqRel);
        let reconnect = self.wants_reconnect(idx);
        let node = self.subs[idx].node as usize;
        let s = &mut self.subs[idx];
        if s.slow_conn {
            // A slowed connection the server closed (a loadgen drop clears
            // the mark first): a slow drop, not loss; it resumes as a
            // normal reader.
            s.slow_conn = false;
            s.dropped = true;
            if let (Some(stage), false) = (s.slow_stage, s.flag_slow) {
                s.slow_dropped_stages |= 1 << stage;
                self.nodes[node].stage_slow_dropped[stage as usize] += 1;
            }
            self.stats.slow_clients_dropped += 1;
            self.stats.series.at(super::second_of(now)).slow_drops += 1;
            if s.state == State::Verdict {
                self.stats.slow_drops_seen_at_end += 1;
                self.shared.verdicts_pending.fetch_sub(1, Ordering::AcqRel);
            } else {
                let since = s.ledger.behind_since_ns.unwrap_or(s.streaming_since_ns);
                let seen = s.drop_seen_ns.unwrap_or(now);
                self.stats
                    .slow_drop_after_us
                    .saturating_record((seen.saturating_sub(since) / 1_000).max(1));
            }
        }
        s.reconnect_wanted = reconnect;
        if reconnect {
            s.ended_at_ns = Some(now);
        } else {
            s.ended_at_ns = None;
            self.leave_live(idx);
        }
        self.begin_close(idx, now);
    }

    pub(super) fn begin_close(&mut self, idx: usize, _now: u64) {
        let s = &mut self.subs[idx];
        if matches!(s.state, State::Closing | State::CloseSent | State::Closed) {
            return;
        }
        s.state = State::Closing;
        s.reader = None;
        if let Some(op) = s.op {
            self.cancel(idx, op);
        }
        self.maybe_close(idx);
    }

    /// Cancel subscriber `idx`'s op `op` (its completion says when it is gone).
    pub(super) fn cancel(&mut self, idx: usize, op: u64) {
        let e = opcode::AsyncCancel::new(op)
            .build()
            .user_data(user_data(OP_CANCEL, 0, idx as u32));
        self.push(e);
    }

    /// Close the slot once no op is in flight on it.
    pub(super) fn maybe_close(&mut self, idx: usize) {
        let s = &mut self.subs[idx];
        if s.state == State::Closing && s.op.is_none() {
            s.state = State::CloseSent;
            let e = opcode::Close::new(Fixed(idx as u32))
                .build()
                .user_data(user_data(OP_CLOSE, s.gen, idx as u32));
            self.push(e);
        }
    }

    pub(super) fn on_closed(&mut self, idx: usize) {
        let now = self.shared.now_ns();
        let s = &mut self.subs[idx];
        debug_assert!(
            s.state == State::CloseSent,
            "close completed in state {:?}",
            s.state
        );
        s.state = State::Closed;
        s.req = None;
        if s.pair_retry {
            s.pair_retry = false;
            if !self.shared.flag(&self.shared.stop) {
                self.start_connect(idx, now);
            }
            return;
        }
        if s.reconnect_wanted && !self.shared.flag(&self.shared.stop) {
            s.reconnect_wanted = false;
            s.reconnect_queued = true;
            let retry = s
                .ledger
                .retry_ms
                .unwrap_or(RETRY_MS_DEFAULT)
                .min(RETRY_MS_MAX);
            self.reconnects
                .push(Reverse((now + retry * 1_000_000, idx as u32)));
        }
    }
}
