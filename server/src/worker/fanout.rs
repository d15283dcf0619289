//! Fan-out: frames from the inbox to every local subscriber's queue (a
//! refcount each, no copy), and the periodic sweep that sends heartbeats
//! and drops connections whose oldest queued frame is too old.

use super::Worker;
use crate::conn::{flag, CloseReason, Phase};
use crate::metrics;
use crate::wire::sse::Frame;

impl Worker {
    pub(super) fn drain_inbox(&mut self) {
        let mut batch = std::mem::take(&mut self.inbox_batch);
        // Fleet mode only: both stay empty (no allocation) otherwise.
        let (mut notices, mut answers, mut ranges) = (Vec::new(), Vec::new(), Vec::new());
        self.shared.inboxes[self.id].take_all(&mut batch, &mut notices, &mut answers, &mut ranges);
        // Replays first: a held stream's live frames below come after it.
        for range in ranges {
            self.release_held(range);
        }
        let mut notices = notices.into_iter().peekable();
        for (i, d) in batch.drain(..).enumerate() {
            while let Some((_, notice)) = notices.next_if(|(at, _)| *at <= i) {
                self.notify_streams(&notice);
            }
            self.deliver(d.id, d.topic.as_str(), d.private, &d.frame);
        }
        for (_, notice) in notices {
            self.notify_streams(&notice);
        }
        self.inbox_batch = batch;
        if !answers.is_empty() {
            self.answer_publishes(answers);
        }
    }

    /// Queue `frame` (a refcount, not a copy) for every local subscriber
    /// whose replay did not already cover event `id` (of a private event:
    /// every subscriber whose token covered the topic at open). A subscriber whose
    /// queue passes its budget is marked at once and gets nothing more: its
    /// close is on the way, and until then it costs no more memory.
    pub(super) fn deliver(&mut self, id: u64, topic: &str, private: bool, frame: &Frame) {
        let now = self.now;
        let subscribers = if private {
            self.private.index.subscribers(topic)
        } else {
            self.index.subscribers(topic)
        };
        // Streams with a pattern naming the topic: one trie walk per event
        // (none while the worker holds no pattern). A stream never holds a
        // topic its own pattern names, so no key comes twice.
        let mut hits = std::mem::take(&mut self.pattern_hits);
        hits.clear();
        if !self.patterns.is_empty() {
            self.patterns.matches(topic, private, &mut hits);
        }
        for &key in subscribers.iter().chain(hits.iter()) {
            let conn = &mut self.conns[key as usize];
            debug_assert_eq!(conn.phase, Phase::Streaming);
            if id <= conn.live_after_id || conn.has(flag::OVER_BUDGET) {
                // The seam: this frame was in the inbox when the stream
                // subscribed, and its replay (or notice) accounted for it.
                continue;
            }
            // Empty unless resumes are being read from Redis: no lookup.
            let held = match self.held.is_empty() {
                true => None,
                false => self
                    .held
                    .get_mut(&key)
                    .filter(|h| h.generation == conn.generation),
            };
            if let Some(held) = held {
                // Fleet mode: its replay is on its way from Redis; live
                // frames wait behind it (bounded like a queue).
                held.live.push((id, frame.clone()));
                held.live_bytes += frame.len();
                if held.live_bytes > self.queue_bytes_max as usize {
                    conn.set(flag::OVER_BUDGET);
                    self.to_close.push((key, CloseReason::SlowQueueBytes));
                }
                continue;
            }
            conn.sendq.push(frame.clone(), now);
            self.stats.deliveries += 1;
            // A resume replay still queued does not count: the client is
            // behind by it on purpose.
            if conn.sendq.budget_cost() > self.queue_bytes_max {
                conn.set(flag::OVER_BUDGET);
                self.to_close.push((key, CloseReason::SlowQueueBytes));
            } else if !conn.has(flag::DIRTY) {
                conn.set(flag::DIRTY);
                self.fanout_ready.push_back(key);
            }
        }
        self.pattern_hits = hits;
    }

    /// `key` has an answer (or a stream's first bytes) to send: control
    /// work, started at the end of this turn ahead of any fan-out.
    pub(super) fn mark_dirty(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        if !conn.has(flag::DIRTY) {
            conn.set(flag::DIRTY);
            self.dirty.push(key);
        }
    }

    /// Start every control send (answers, stream heads) now. True when
    /// one was started.
    pub(super) fn start_control_sends(&mut self) -> bool {
        let mut dirty = std::mem::take(&mut self.dirty);
        let started = !dirty.is_empty();
        for key in dirty.drain(..) {
            if let Some(conn) = self.conns.get_mut(key as usize) {
                conn.clear(flag::DIRTY);
                self.start_send(key);
            }
        }
        self.dirty = dirty;
        started
    }

    /// Stream `key` has frames to send: fan-out work, started in turn, at
    /// most `fanout_sends_per_submit` per turn.
    pub(super) fn mark_fanout(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        if !conn.has(flag::DIRTY) {
            conn.set(flag::DIRTY);
            self.fanout_ready.push_back(key);
        }
    }

    /// Start the sends this turn may: every control send first (answers,
    /// stream heads), then at most `fanout_sends_per_submit` stream sends,
    /// oldest first; the rest wait for the next turn, which comes without
    /// sleeping. The kernel runs a turn's sends in SQ order inside one
    /// `io_uring_enter` and reports nothing (no recv, no accept) until it
    /// has run them all, so an unbounded fan-out would make a publisher's
    /// next request, an accept or a health check wait for every send of a
    /// broadcast; with the cut, they wait for one chunk at most.
    pub(super) fn start_sends(&mut self) {
        self.start_control_sends();
        let mut budget = self.fanout_sends_per_submit;
        while budget > 0 {
            let Some(key) = self.fanout_ready.pop_front() else {
                break;
            };
            if let Some(conn) = self.conns.get_mut(key as usize) {
                conn.clear(flag::DIRTY);
                self.start_send(key);
                budget -= 1;
            }
        }
        if !self.fanout_ready.is_empty() {
            self.stats.fanout_cuts += 1;
        }
    }

    /// Heartbeats for quiet streams, and the queue-age clock of every
    /// connection with something queued: a stream that stalled, or a plain
    /// HTTP client that does not read its answers, is dropped.
    pub(super) fn sweep(&mut self) {
        crate::log::access_tick();
        let now = self.now;
        let (mut streams, mut queue_bytes) = (0u64, 0u64);
        for (key, conn) in self.conns.iter_mut() {
            queue_bytes += u64::from(conn.sendq.bytes_queued());
            if conn.phase == Phase::Closing {
                continue;
            }
            if let Some(oldest) = conn.sendq.oldest_tick() {
                if now.saturating_sub(oldest) >= self.ticks.queue_age
                    && !conn.has(flag::OVER_BUDGET)
                {
                    conn.set(flag::OVER_BUDGET);
                    self.to_close.push((key as u32, CloseReason::SlowQueueAge));
                }
            }
            if conn.phase != Phase::Streaming {
                continue;
            }
            streams += 1;
            if conn.sendq.is_empty()
                && now.saturating_sub(conn.last_send_tick) >= self.ticks.heartbeat
            {
                conn.sendq.push(self.heartbeat.clone(), now);
                self.stats.heartbeats += 1;
                if !conn.has(flag::DIRTY) {
                    conn.set(flag::DIRTY);
                    self.fanout_ready.push_back(key as u32);
                }
            }
        }
        let mut topics = [0u64; metrics::TOPIC_SLOTS];
        for n in self.index.topic_sizes() {
            topics[metrics::bucket_of(&metrics::TOPIC_SUBSCRIBERS_BOUNDS, n as u64)] += 1;
        }
        let metrics = &self.shared.metrics.workers[self.id];
        metrics.set_gauges(streams, queue_bytes, &topics);
        metrics.set_request_buffer_bytes(self.req_buf_bytes as u64);
    }
}
