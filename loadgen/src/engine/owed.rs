//! What a subscriber is owed, and the drain's check for the subscribers the
//! shared arithmetic cannot cover.
//!
//! A fast subscriber connected before publishing is owed every accepted
//! event of its channel; the run loop checks those with a few shared
//! counters. Two kinds need their own figure: a subscriber a stage's ramp
//! opened while publishing went on is owed only the events whose send began
//! after its stream opened (by sequence number, from the publishers' mark),
//! and one a stage slowed is owed everything but kept out of the fast
//! figures. Each thread counts its own that still miss events once
//! publishing is over, so the drain ends as soon as they are complete.

use std::sync::atomic::Ordering;

use super::sub::Sub;
use super::Engine;

impl Engine {
    /// (owed, distinct events received of those) for subscriber `s`.
    pub(super) fn owed(&self, s: &Sub) -> (u64, u64) {
        let channel = s.channel as usize;
        if s.owed_by_seq {
            let owed = s.owed_total.unwrap_or_else(|| {
                self.shared
                    .accepted_from(channel, s.ledger.tracker.owed_from())
            });
            (owed, s.ledger.tracker.unique_owed())
        } else {
            let owed = self.shared.accepted[channel].load(Ordering::Acquire);
            (owed, s.ledger.tracker.unique())
        }
    }

    /// Subscribers of this thread outside the shared arithmetic (joined
    /// late, or slowed by a stage) that are still coming and miss events.
    /// Called once publishing is over, when what they are owed is final.
    pub(super) fn owed_behind(&mut self) -> u64 {
        let mut behind = 0;
        for idx in 0..self.subs.len() {
            let s = &self.subs[idx];
            let checked = s.owed_by_seq || (s.ledger.slow && !s.flag_slow);
            if !checked || !s.ever_connected || s.gone {
                continue;
            }
            if s.owed_by_seq && s.owed_total.is_none() {
                let owed = self.owed(s).0;
                self.subs[idx].owed_total = Some(owed);
            }
            let (owed, got) = self.owed(&self.subs[idx]);
            behind += u64::from(got < owed);
        }
        behind
    }
}
