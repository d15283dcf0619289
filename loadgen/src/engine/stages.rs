//! Scenario stages as the subscribers live them: a reconnect storm when a
//! stage that has one begins (every fast subscriber, or every one of a node,
//! dropped at once, as clients see a node restart), and churn (a share of
//! the fast subscribers per second disconnecting). Both reconnect after the
//! server's `retry:` with `Last-Event-ID`, are checked for exactly-once like
//! any resume, and the time from the drop to streaming again is recorded
//! per stage.
//!
//! A stage with `slow_fraction` makes its share of the subscribers slow
//! from its start (stall: the read in flight is cancelled and only a poll
//! for the server's close stays; trickle: reads by credit) until its end,
//! when they read normally again. A slowed connection the server closes is
//! a slow drop of that stage; the subscriber resumes as a normal reader.

use std::sync::atomic::Ordering;

use super::sub::State;
use super::{Engine, TICK_NS};
use crate::scenario::SlowMode;
use crate::shared::NOT_STARTED;

impl Engine {
    /// Called every tick: enter a new stage (its storm, its slow
    /// subscribers; the last stage's slow ones recover) and churn.
    pub(super) fn drive_stages(&mut self, now: u64) {
        let start = self.shared.publish_start_ns.load(Ordering::Acquire);
        if start == NOT_STARTED || now < start {
            return;
        }
        let offset = now - start;
        if self.shared.flag(&self.shared.publish_done) || offset >= self.cfg.schedule.duration_ns()
        {
            if let Some(stage) = self.slow_active {
                self.end_slow(stage);
            }
            return;
        }
        let stage = self.cfg.schedule.stage_of(offset);
        if self.stage_entered != Some(stage) {
            self.stage_entered = Some(stage);
            self.churn_credit = 0.0;
            if let Some(old) = self.slow_active {
                self.end_slow(old);
            }
            if let Some(node) = self.cfg.schedule.stages[stage].storm {
                self.storm(stage, node, now);
            }
            if self.cfg.schedule.stages[stage].slow_mode.is_some() {
                self.slow_active = Some(stage);
                for idx in 0..self.subs.len() {
                    self.enter_slow(idx, stage, now);
                }
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

    /// A subscriber streaming now and reading normally, not already
    /// resuming, not one of `--slow-fraction`'s.
    fn droppable(&self, idx: usize) -> bool {
        let s = &self.subs[idx];
        s.state == State::Streaming
            && !s.flag_slow
            && s.slow_mode.is_none()
            && s.dropped_at.is_none()
    }

    fn drop_for_stage(&mut self, idx: usize, stage: usize, cause: &str, now: u64) {
        let s = &mut self.subs[idx];
        s.dropped_at = Some((now, stage as u16));
        // Our own drop, not the server's: not a slow drop.
        s.slow_conn = false;
        self.end_stream(idx, cause, now);
    }

    /// Make subscriber `idx` slow for `stage` if the stage slows it, it
    /// streams and reads normally now, and this stage has not slowed it
    /// before (a slowed connection the server dropped comes back normal).
    pub(super) fn enter_slow(&mut self, idx: usize, stage: usize, now: u64) {
        let Some(mode) = self.cfg.schedule.stages[stage].slow_mode else {
            return;
        };
        let s = &mut self.subs[idx];
        let eligible = s.slow_stages & (1 << stage) != 0
            && s.state == State::Streaming
            && s.slow_mode.is_none()
            && !s.flag_slow
            && s.slow_stage != Some(stage as u16);
        if !eligible {
            return;
        }
        s.slow_mode = Some(mode);
        s.slow_conn = true;
        s.slow_stage = Some(stage as u16);
        s.slowed_stages |= 1 << stage;
        s.credit = 0;
        match mode {
            SlowMode::Stall => {
                s.state = State::Stalled;
                s.ledger.behind_since_ns = Some(now);
            }
            SlowMode::Trickle { .. } => s.ledger.behind_since_ns = None,
        }
        let op = s.op;
        self.nodes[s.node as usize].stage_slowed[stage] += 1;
        match op {
            // The multishot read stops; its last completion re-arms the slow way.
            Some(op) => self.cancel(idx, op),
            None => self.rearm_read(idx),
        }
    }

    /// `stage` is over: its slowed connections read normally again.
    pub(super) fn end_slow(&mut self, stage: usize) {
        self.slow_active = None;
        for idx in 0..self.subs.len() {
            let s = &mut self.subs[idx];
            if s.slow_stage != Some(stage as u16) || s.slow_mode.is_none() || s.flag_slow {
                continue;
            }
            s.slow_mode = None;
            match (s.state, s.op) {
                (State::Stalled, Some(op)) => {
                    // The poll ends; its completion arms the normal read.
                    s.state = State::Streaming;
                    self.cancel(idx, op);
                }
                (State::Stalled | State::Streaming, None) => {
                    s.state = State::Streaming;
                    self.rearm_read(idx);
                }
                // A trickling read in flight re-arms normally when it completes;
                // a draining connection ends by itself.
                _ => {}
            }
        }
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
