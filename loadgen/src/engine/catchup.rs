//! The catch-up after the final read (`--reconnect` only): slow subscribers
//! the server dropped that have not resumed yet reconnect with
//! `Last-Event-ID` and are checked for every event exactly once.
//!
//! Why: a server that closes gracefully behind unread data gives a stalled
//! client no signal until it reads everything, so its drop shows only in
//! the final read; and a drop seen late in the run may have its reconnect
//! held back by that read. Without this phase, neither would be resumed,
//! and the resume check would say nothing about them.

use std::sync::atomic::Ordering;

use super::sub::{State, Sub};
use super::Engine;

impl Engine {
    /// Reconnect, now, every dropped slow subscriber that is closed, not
    /// queued for a reconnect, and still misses events.
    pub(super) fn start_catchup(&mut self, now: u64) {
        self.catchup_started = true;
        for idx in 0..self.subs.len() {
            let accepted = self.accepted(idx);
            let s = &self.subs[idx];
            let idle = matches!(s.state, State::Closed | State::Idle) && !s.reconnect_queued;
            if !(behind_after_drop(s, accepted) && idle) {
                continue;
            }
            self.stats.reconnects += 1;
            self.stats.catchup_reconnects += 1;
            self.start_connect(idx, now);
        }
        let left = self.catchup_left();
        self.shared.catchup_left[self.thread_idx].store(left, Ordering::Release);
    }

    /// Dropped slow subscribers still missing events that have a way to get
    /// them (connected, connecting, or about to reconnect). One that gave up
    /// (reconnects exhausted, refused) no longer counts: the resume check
    /// reports its loss.
    pub(super) fn catchup_left(&self) -> u64 {
        (0..self.subs.len())
            .filter(|&idx| {
                let s = &self.subs[idx];
                let gave_up = matches!(s.state, State::Closed | State::Idle) && !s.reconnect_queued;
                behind_after_drop(s, self.accepted(idx)) && !gave_up
            })
            .count() as u64
    }

    fn accepted(&self, idx: usize) -> u64 {
        self.shared.accepted[self.subs[idx].channel as usize].load(Ordering::Acquire)
    }
}

fn behind_after_drop(s: &Sub, accepted: u64) -> bool {
    s.flag_slow && s.dropped && s.ledger.tracker.unique() < accepted
}
