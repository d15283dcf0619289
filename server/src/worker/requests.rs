//! Plain HTTP on a connection: assembling requests from received bytes,
//! answering them (keep-alive, pipelining, 100-continue, errors), opening
//! streams, and the request/idle deadlines.

use super::*;
use crate::limit::rate::Verdict;

impl Worker {
    pub(super) fn on_request_bytes(&mut self, key: u32) {
        for _ in 0..REQUESTS_PER_READ_MAX {
            let conn = &mut self.conns[key as usize];
            if conn.phase != Phase::Request || conn.has(flag::CLOSE_AFTER_SEND) {
                conn.read_buf = Vec::new();
                return;
            }
            if conn.read_buf.is_empty() {
                return;
            }
            if conn.read_buf.len() > self.read_bytes_max
                || conn.sendq.bytes_queued() > self.queue_bytes_max
            {
                // A client pipelining faster than it reads its answers.
                let mut r = Response::text(429, "too many pipelined requests", false);
                r.limit = Some(Limit::Pipelined);
                self.respond(key, r);
                return;
            }
            if conn.has(flag::DEADLINE_IDLE) {
                // A new request began on a keep-alive connection: it now
                // has the request deadline, not the idle one.
                self.set_deadline(key, false);
            }
            let conn = &mut self.conns[key as usize];
            let (head, head_len) = match http::parse_head(&conn.read_buf, &self.limits) {
                Err(e) => {
                    self.respond(key, Response::text(e.status(), e.reason(), false));
                    return;
                }
                Ok(HeadStatus::Partial) => return,
                Ok(HeadStatus::Complete { head, head_len }) => (head, head_len),
            };
            let (body, consumed) = match head.body {
                BodyFraming::None => (Vec::new(), 0),
                framing => match http::read_body(framing, &conn.read_buf[head_len..], &self.limits)
                {
                    Err(e) => {
                        self.respond(key, Response::text(e.status(), e.reason(), false));
                        return;
                    }
                    Ok(BodyStatus::Partial) => {
                        if head.expect_continue && !conn.has(flag::CONTINUE_SENT) {
                            conn.set(flag::CONTINUE_SENT);
                            conn.sendq
                                .push(Frame::from_static(http::CONTINUE_100), self.now);
                            self.mark_dirty(key);
                        }
                        return;
                    }
                    Ok(BodyStatus::Complete { body, consumed }) => (body, consumed),
                },
            };
            conn.read_buf.drain(..head_len + consumed);
            conn.clear(flag::CONTINUE_SENT);
            self.stats.requests += 1;
            if conn.has(flag::REFUSE) {
                let mut r = Response::text(503, "server full, retry later", false);
                r.retry_after_s = Some(1);
                r.limit = Some(Limit::MaxConnections);
                self.respond(key, r);
                return;
            }
            if conn.has(flag::REFUSE_PER_IP) {
                let mut r = Response::text(
                    429,
                    "too many connections from this address, retry later",
                    false,
                );
                r.retry_after_s = Some(1);
                r.limit = Some(Limit::PerIp);
                self.respond(key, r);
                return;
            }
            self.handle_request(key, &head, &body);
        }
    }

    pub(super) fn handle_request(&mut self, key: u32, head: &RequestHead, body: &[u8]) {
        let peer_loopback = self.conns[key as usize].has(flag::PEER_LOOPBACK);
        match route::route(head, body, peer_loopback, &self.route_cfg) {
            Action::Respond(r) => self.respond(key, r),
            Action::Stream {
                topics,
                resume,
                headers,
            } => self.start_stream(key, &topics, &resume, &headers),
            Action::Metrics {
                keep_alive,
                headers,
            } => {
                let mut text = String::with_capacity(8192);
                self.shared.render_metrics(&mut text);
                render_hub_stats(&self.shared.hub_stats(), &mut text);
                let mut r = Response::text(200, "", keep_alive);
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r.body = text.into_bytes();
                r.headers = headers;
                self.respond(key, r);
            }
            Action::Publish {
                requests,
                keep_alive,
                headers,
            } => {
                // One bucket per publish token, else per client IP, shared
                // by every worker; a request (a batch too) spends one token.
                // Only a configured token names a publisher (routing has
                // checked it by now): without one, the header is whatever
                // the client made up and would buy a fresh bucket per request.
                let rate_key = match (
                    &self.shared.config.publish_token,
                    head.header("authorization"),
                ) {
                    (Some(_), Some(token)) => limit::token_key(token.as_bytes()),
                    _ => self.conns[key as usize].peer_key,
                };
                if let Verdict::Limited { retry_after_s } = self.shared.publish_rate.check(rate_key)
                {
                    let mut r = Response::text(429, "publish rate limit, retry later", keep_alive);
                    r.retry_after_s = Some(retry_after_s);
                    r.limit = Some(Limit::PublishRate);
                    r.headers = headers;
                    self.respond(key, r);
                    return;
                }
                let mut r = match self.shared.publish_batch(requests) {
                    Ok(ids) => Response::json(200, ids_json(&ids), keep_alive),
                    Err(e) => Response::publish_error(&e, keep_alive),
                };
                r.headers = headers;
                self.respond(key, r);
            }
        }
    }

    /// Queue a response; keep the connection for the next request or close
    /// it once the response is sent.
    pub(super) fn respond(&mut self, key: u32, response: Response) {
        if response.status >= 400 {
            limit::note_refusal(
                response
                    .limit
                    .unwrap_or_else(|| Limit::from_status(response.status)),
            );
        }
        let bytes = Bytes::from(response.encode());
        let conn = &mut self.conns[key as usize];
        conn.sendq.push(bytes, self.now);
        if response.keep_alive && self.draining_until.is_none() {
            if conn.read_buf.is_empty() {
                self.set_deadline(key, true);
            }
        } else {
            let conn = &mut self.conns[key as usize];
            conn.set(flag::CLOSE_AFTER_SEND);
            conn.read_buf = Vec::new();
            self.clear_deadline(key);
        }
        self.mark_dirty(key);
    }

    /// Open a stream: replay what the client missed and register it for
    /// live frames in one step under the hub lock, then queue the head,
    /// `: connected`, `retry:` and the replay. Live frames at or below the
    /// replay's `through_id` (already in the inbox) are skipped by
    /// `deliver`, so the client gets each event once, with no gap.
    pub(super) fn start_stream(
        &mut self,
        key: u32,
        topics: &[Topic],
        resume: &ResumePoint,
        headers: &route::Headers,
    ) {
        let index = &mut self.index;
        let (replay, subs) = self.shared.subscribe(topics, resume, || {
            topics
                .iter()
                .map(|t| index.subscribe(t.as_str(), key))
                .collect::<Box<[_]>>()
        });
        self.clear_deadline(key);
        let now = self.now;
        let preamble = if headers.is_empty() {
            self.stream_preamble.clone()
        } else {
            Bytes::from(stream_preamble(self.shared.config.retry_ms, headers))
        };
        let conn = &mut self.conns[key as usize];
        conn.subs = subs;
        conn.phase = Phase::Streaming;
        conn.live_after_id = replay.through_id;
        // A stream never reads another request: free the buffer now.
        conn.read_buf = Vec::new();
        conn.sendq.push(preamble, now);
        // The replay is exempt from the slow-client budget until sent (a
        // client dropped for being over it must be able to catch up in one
        // replay); live events arriving while it drains count as usual.
        // Answers to requests pipelined before this one may still be queued
        // (a client's choice): the budget applies to them as for any stream.
        for frame in &replay.frames {
            conn.sendq.push_exempt(frame.clone(), now);
        }
        metrics::add(&COUNTERS.streams_opened_total, 1);
        if !matches!(resume, ResumePoint::Live) {
            metrics::add(&COUNTERS.streams_resumed_total, 1);
            metrics::add(
                &COUNTERS.replayed_events_total,
                replay.events().len() as u64,
            );
        }
        if replay.missed.is_some() {
            metrics::add(&COUNTERS.missed_notices_total, 1);
        }
        self.mark_dirty(key);
    }

    pub(super) fn set_deadline(&mut self, key: u32, idle: bool) {
        self.clear_deadline(key);
        let tick = self.now
            + if idle {
                self.ticks.idle
            } else {
                self.ticks.request
            };
        let conn = &mut self.conns[key as usize];
        conn.deadline_tick = tick;
        if idle {
            conn.set(flag::DEADLINE_IDLE);
        } else {
            conn.clear(flag::DEADLINE_IDLE);
        }
        self.deadlines.insert((tick, key));
    }

    pub(super) fn clear_deadline(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        if conn.deadline_tick != DEADLINE_NONE {
            self.deadlines.remove(&(conn.deadline_tick, key));
            conn.deadline_tick = DEADLINE_NONE;
        }
    }

    pub(super) fn expire_deadlines(&mut self) {
        while let Some(&(tick, key)) = self.deadlines.first() {
            if tick > self.now {
                break;
            }
            self.deadlines.pop_first();
            let conn = &mut self.conns[key as usize];
            debug_assert_eq!(conn.deadline_tick, tick);
            conn.deadline_tick = DEADLINE_NONE;
            if conn.has(flag::DEADLINE_IDLE) {
                self.close_conn(key, CloseReason::IdleTimeout);
            } else {
                self.respond(key, Response::text(408, "request timeout", false));
            }
        }
    }
}

/// The hub's gauges and counters in Prometheus text, after the node's.
fn render_hub_stats(s: &crate::hub::HubStats, out: &mut String) {
    use std::fmt::Write as _;
    for (name, kind, help, value) in [
        (
            "hub_topics",
            "gauge",
            "Topics the hub holds (history or not).",
            s.topics as u64,
        ),
        (
            "history_events",
            "gauge",
            "Events kept in history, all topics.",
            s.history_events as u64,
        ),
        (
            "history_bytes",
            "gauge",
            "Frame bytes kept in history, all topics.",
            s.history_bytes as u64,
        ),
        (
            "history_evicted_events_total",
            "counter",
            "Events evicted from history by --history-events-max or --history-bytes-max.",
            s.evicted_events_total,
        ),
        (
            "history_evicted_bytes_total",
            "counter",
            "Frame bytes evicted from history.",
            s.evicted_bytes_total,
        ),
        (
            "last_event_id",
            "gauge",
            "The last event id handed out.",
            s.last_id,
        ),
    ] {
        let _ = writeln!(out, "# HELP stentor_{name} {help}");
        let _ = writeln!(out, "# TYPE stentor_{name} {kind}");
        let _ = writeln!(out, "stentor_{name} {value}");
    }
}
