//! Fleet mode on a worker: publishes handed to the broker's publisher
//! thread and their answers coming back through the inbox, and the
//! stream-wide `stentor.missed` notices of a broker reset or gap.
//!
//! A connection whose publish is with the broker waits for its answer
//! (`ReqState::awaiting_answer`): its later pipelined requests are not
//! handled until then, so answers leave in request order. The worker never
//! waits: the answer arrives like a delivery, with the inbox's wake-up.

use super::Worker;
use crate::api::publish::ids_json;
use crate::api::{Headers, Response};
use crate::broker::node::RangeJob;
use crate::bus::{Answer, RangeAnswer};
use crate::conn::{Held, Phase};
use crate::hub::id::ResumePoint;
use crate::hub::publish::PublishRequest;
use crate::hub::topic::Topic;
use crate::hub::{missed_notice, MissedReason, Replay};
use crate::limit::Limit;
use crate::metrics::{self, COUNTERS};
use crate::wire::sse::Frame;

impl Worker {
    /// Hand an authorized, parsed publish to the broker for connection
    /// `key`. `None`: handed off, the answer comes later; `Some`: the
    /// answer now (rate limit, publisher queue full).
    pub(super) fn publish_via_broker(
        &mut self,
        key: u32,
        rate_key: u64,
        requests: &[PublishRequest],
        headers: Headers,
        keep_alive: bool,
    ) -> Option<Response> {
        let generation = self.conns[key as usize].generation;
        let handed = self.shared.check_publish_rate(rate_key).and_then(|()| {
            crate::broker::node::publish(&self.shared, self.id, key, generation, requests)
        });
        match handed {
            Ok(()) => {
                self.clear_deadline(key);
                if let Some(req) = self.conns[key as usize].req.as_mut() {
                    req.awaiting_answer = Some((headers, keep_alive));
                }
                None
            }
            Err(e) => {
                let mut r = Response::publish_error(&e, keep_alive);
                if e.status == 503 {
                    r.limit = Some(Limit::BrokerUnavailable);
                }
                r.headers = headers;
                Some(r)
            }
        }
    }

    /// Send each publish answer to its connection, if that connection is
    /// still the one that asked, then go on with its buffered requests.
    pub(super) fn answer_publishes(&mut self, answers: Vec<Answer>) {
        for a in answers {
            let Some(conn) = self.conns.get_mut(a.key as usize) else {
                continue; // closed meanwhile: the answer is stale
            };
            if conn.generation != a.generation || conn.phase != Phase::Request {
                continue;
            }
            let Some((headers, keep_alive)) =
                conn.req.as_mut().and_then(|r| r.awaiting_answer.take())
            else {
                debug_assert!(false, "an answer for a connection that awaits none");
                continue;
            };
            let mut r = match a.result {
                Ok(ids) => Response::json(200, ids_json(&ids), keep_alive),
                Err(e) => {
                    let mut r = Response::publish_error(&e, keep_alive);
                    if e.status == 503 {
                        r.limit = Some(Limit::BrokerUnavailable);
                    }
                    r
                }
            };
            r.headers = headers;
            self.respond(a.key, r);
            self.on_request_bytes(a.key);
        }
    }

    /// Queue a `stentor.missed` notice on every open stream (the broker
    /// lost events this node's streams may have wanted).
    pub(super) fn notify_streams(&mut self, frame: &Frame) {
        let now = self.now;
        let mut keys = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase == Phase::Streaming {
                conn.sendq.push(frame.clone(), now);
                keys.push(key as u32);
            }
        }
        metrics::add(&COUNTERS.missed_notices_total, keys.len() as u64);
        for key in keys {
            self.mark_dirty(key);
        }
    }
}

impl Worker {
    /// Fleet mode: a resume the node's memory does not cover (the id is
    /// from before this node read the log, or memory evicted what follows
    /// it) is served from Redis. The stream is registered live already; its
    /// live frames are held ([`Held`]) until the range thread's answer,
    /// which [`Self::release_held`] queues first. False: serve `replay`
    /// (memory) now, as in embedded mode.
    pub(super) fn hold_for_redis(
        &mut self,
        key: u32,
        topics: &[Topic],
        resume: &ResumePoint,
        replay: &Replay,
    ) -> bool {
        let Some(link) = &self.shared.broker else {
            return false;
        };
        let ResumePoint::After(after_id) = *resume else {
            return false;
        };
        let from_redis = matches!(
            replay.missed,
            Some(MissedReason::Restarted | MissedReason::UnknownId | MissedReason::Evicted)
        );
        if !from_redis {
            return false;
        }
        let mut names: Vec<String> = topics.iter().map(|t| t.as_str().to_string()).collect();
        names.sort_unstable();
        names.dedup();
        let job = RangeJob {
            worker: self.id,
            key,
            generation: self.conns[key as usize].generation,
            topics: names,
            after_id,
            count_max: self.shared.config.replay_events_max as usize,
        };
        if !crate::broker::node::request_range(link, job) {
            return false;
        }
        let held = Held {
            generation: self.conns[key as usize].generation,
            fallback: replay.frames.clone(),
            after_id,
            ..Held::default()
        };
        self.held.insert(key, held);
        true
    }

    /// A held stream's replay came from Redis (or failed): queue it (or
    /// what memory had), then the live frames held meanwhile that it did
    /// not already carry.
    pub(super) fn release_held(&mut self, range: RangeAnswer) {
        let now = self.now;
        // Every hold gets exactly one answer: this is where its entry goes,
        // whether its stream is still there or not.
        let held = match self.held.remove(&range.key) {
            Some(h) if h.generation == range.generation => h,
            Some(other) => {
                // A newer stream on the reused slot holds: not this answer's.
                self.held.insert(range.key, other);
                return;
            }
            None => return,
        };
        let Some(conn) = self.conns.get_mut(range.key as usize) else {
            return; // closed meanwhile
        };
        if conn.generation != range.generation || conn.phase != Phase::Streaming {
            return;
        }
        let echo = held.after_id.to_string();
        let mut through_id = 0;
        let mut frames: Vec<Frame> = Vec::new();
        match range.result {
            Ok(r) if !r.more => {
                let missed = if r.before_reset {
                    Some(MissedReason::BrokerReset)
                } else if r.evicted {
                    Some(MissedReason::Evicted)
                } else {
                    None
                };
                if let Some(reason) = missed {
                    frames.push(missed_notice(reason, &echo, None));
                }
                for e in &r.events {
                    match crate::wire::sse::encode(&e.to_sse()) {
                        Ok(f) => frames.push(f),
                        Err(_) => debug_assert!(false, "a stored event must encode"),
                    }
                    through_id = e.id;
                }
                metrics::add(&COUNTERS.replayed_events_total, r.events.len() as u64);
                metrics::add(&crate::broker::node::METRICS.resumes_from_redis_total, 1);
            }
            Ok(_) => {
                // More after the id than one replay carries: the newest,
                // from memory, as an embedded node does.
                frames.push(missed_notice(MissedReason::TooFarBehind, &echo, None));
                frames.extend(held.fallback.into_iter().skip(1));
                metrics::add(&crate::broker::node::METRICS.resumes_fallback_total, 1);
            }
            Err(_) => {
                frames = held.fallback;
                metrics::add(&crate::broker::node::METRICS.resumes_fallback_total, 1);
            }
        }
        if frames
            .first()
            .is_some_and(|f| f.starts_with(b"event: stentor.missed"))
        {
            metrics::add(&COUNTERS.missed_notices_total, 1);
        }
        let conn = &mut self.conns[range.key as usize];
        for f in frames {
            conn.sendq.push_exempt(f, now);
        }
        conn.live_after_id = conn.live_after_id.max(through_id);
        for (id, frame) in held.live {
            if id > through_id {
                conn.sendq.push(frame, now);
                self.stats.deliveries += 1;
            }
        }
        self.mark_dirty(range.key);
    }
}
