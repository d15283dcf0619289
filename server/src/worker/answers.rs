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
use crate::bus::Answer;
use crate::conn::Phase;
use crate::hub::publish::PublishRequest;
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
