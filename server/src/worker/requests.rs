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
            Action::Stream { topics } => self.start_stream(key, &topics),
            Action::Metrics { keep_alive } => {
                let mut text = String::with_capacity(8192);
                self.shared.render_metrics(&mut text);
                let mut r = Response::text(200, "", keep_alive);
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r.body = text.into_bytes();
                self.respond(key, r);
            }
            Action::Publish {
                topic,
                event,
                keep_alive,
            } => {
                // One bucket per publish token, else per client IP; shared
                // by every worker.
                let rate_key = match head.header("authorization") {
                    Some(token) => limit::token_key(token.as_bytes()),
                    None => self.conns[key as usize].peer_key,
                };
                if let Verdict::Limited { retry_after_s } = self.shared.publish_rate.check(rate_key)
                {
                    let mut r = Response::text(429, "publish rate limit, retry later", keep_alive);
                    r.retry_after_s = Some(retry_after_s);
                    r.limit = Some(Limit::PublishRate);
                    self.respond(key, r);
                    return;
                }
                let r = match self.shared.publish(&topic, event) {
                    Ok(id) => Response::json(200, format!("{{\"id\":\"{id}\"}}"), keep_alive),
                    Err(PublishError::Invalid(e)) => {
                        Response::text(400, &format!("invalid event: {e}"), keep_alive)
                    }
                    Err(PublishError::Busy) => {
                        let mut r = Response::text(
                            503,
                            "busy: subscribers are behind, retry later",
                            keep_alive,
                        );
                        r.retry_after_s = Some(1);
                        r.limit = Some(Limit::PublishBacklog);
                        r
                    }
                };
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

    pub(super) fn start_stream(&mut self, key: u32, topics: &[String]) {
        let subs: Box<[_]> = topics
            .iter()
            .map(|t| self.index.subscribe(t, key))
            .collect();
        self.clear_deadline(key);
        let conn = &mut self.conns[key as usize];
        conn.subs = subs;
        conn.phase = Phase::Streaming;
        // A stream never reads another request: free the buffer now.
        conn.read_buf = Vec::new();
        conn.sendq.push(self.stream_preamble.clone(), self.now);
        metrics::add(&COUNTERS.streams_opened_total, 1);
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
