//! Scenario stages as the subscribers live them: a reconnect storm when a
//! stage that has one begins (every fast subscriber, or every one of a node,
//! dropped at once, as clients see a node restart), and churn (a share of
//! the fast subscribers per second disconnecting). Both reconnect after the
//! server's `retry:` with `Last-Event-ID`, are checked for exactly-once like
//! any resume, and the time from the drop to streaming again is recorded
//! per stage.

use std::sync::atomic::Ordering;

use super::sub::State;
use super::{Engine, TICK_NS};
use crate::shared::NOT_STARTED;

impl Engine {
    /// Called every tick: enter a new stage (its storm) and churn.
    pub(super) fn drive_stages(&mut self, now: u64) {
        let start = self.shared.publish_start_ns.load(Ordering::Acquire);
        if start == NOT_STARTED || now < start || self.shared.flag(&self.shared.publish_done) {
            return;
        }
        let offset = now - start;
        if offset >= self.cfg.schedule.duration_ns() {
            return;
        }
        let stage = self.cfg.schedule.stage_of(offset);
        if self.stage_entered != Some(stage) {
            self.stage_entered = Some(stage);
            self.churn_credit = 0.0;
            if let Some(node) = self.cfg.schedule.stages[stage].storm {
                self.storm(stage, node, now);
            }
        }
        let churn = self.cfg.schedule.stages[stage].churn_per_s;
        if churn > 0.0 {
            self.churn_credit += churn * self.subs.len() as f64 * TICK_NS as f64 / 1e9;
            let mut looked = 0;
            while self.churn_credit >= 1.0 && looked < self.subs.len() {
                let idx = self.churn_cursor % self.subs.len();
                self.churn_cursor = self.churn_cursor.wrapping_add(1);
                looked += 1;
                if self.droppable(idx) {
                    self.churn_credit -= 1.0;
                    self.nodes[self.subs[idx].node as usize].stage_churned[stage] += 1;
                    self.drop_for_stage(idx, stage, "churn", now);
                }
            }
            // Credit never piles up while nobody can be churned.
            self.churn_credit = self.churn_credit.min(1.0);
        }
    }

    fn storm(&mut self, stage: usize, node: Option<usize>, now: u64) {
        for idx in 0..self.subs.len() {
            let on_node = node.is_none_or(|n| self.subs[idx].node as usize == n);
            if on_node && self.droppable(idx) {
                self.nodes[self.subs[idx].node as usize].stage_stormed[stage] += 1;
                self.drop_for_stage(idx, stage, "storm", now);
            }
        }
    }

    /// A fast subscriber streaming now, not already resuming.
    fn droppable(&self, idx: usize) -> bool {
        let s = &self.subs[idx];
        s.state == State::Streaming && !s.ledger.slow && s.dropped_at.is_none()
    }

    fn drop_for_stage(&mut self, idx: usize, stage: usize, cause: &str, now: u64) {
        self.subs[idx].dropped_at = Some((now, stage as u16));
        self.end_stream(idx, cause, now);
    }

    /// Subscriber `idx` streams again: how long its resume took.
    pub(super) fn resumed_after_drop(&mut self, idx: usize, now: u64) {
        if let Some((at, stage)) = self.subs[idx].dropped_at.take() {
            let us = now.saturating_sub(at) / 1_000;
            self.nodes[self.subs[idx].node as usize].stage_resume_us[stage as usize]
                .saturating_record(us.max(1));
        }
    }
}
