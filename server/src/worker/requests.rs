//! Plain HTTP on a connection: requests decided from their head (bodies
//! read only for authorized publishes), answers with keep-alive,
//! pipelining with backpressure, opening streams, and the deadlines.
//!
//! A connection has exactly one clock in every phase: while it reads a
//! request, the request deadline (408); while answers are queued, the age
//! of the oldest one (the sweep drops a client that does not read them,
//! abortively); while idle between requests, the idle deadline, which
//! starts when the last answer was sent; a stream, the queue age.

use bytes::Bytes;
use io_uring::opcode;

use super::{
    Worker, ANSWER_BYTES_PAUSE, BODY_DISCARD_BYTES_MAX, REQUESTS_PER_TURN_MAX, REQ_BUF_SMALL_BYTES,
};
use crate::api::authz::{private_allowed, StreamRights};
use crate::api::publish::ids_json;
use crate::api::selector::Pattern;
use crate::api::{self, client_key, Decision, Headers, PublishGrant, Response};
use crate::bus::presence;
use crate::conn::{flag, CloseReason, Deadline, Phase, DEADLINE_NONE};
use crate::hub::id::ResumePoint;
use crate::hub::topic::Topic;
use crate::limit::rate::Verdict;
use crate::limit::{self, Limit};
use crate::metrics::{self, COUNTERS};
use crate::ring::token::{OpKind, Token};
use crate::wire::http::{self, BodyFraming, BodyStatus, HeadStatus, RequestHead};
use crate::wire::proxy::{self, ProxyStatus};
use crate::wire::sse::Frame;

/// What a stream asked for and may have: exact topics, patterns, and the
/// rights of its token (decided from the head by `api::decide`).
pub(super) struct Interest {
    pub topics: Vec<Topic>,
    pub patterns: Vec<Pattern>,
    pub rights: StreamRights,
}

impl Worker {
    /// Handle what the connection's buffer holds, in order: a PROXY header
    /// when one is due, body bytes of a refused request to skip, then whole
    /// requests, at most `REQUESTS_PER_TURN_MAX` before the others get a
    /// turn. Reading stops (TCP slows the client) while the answers queued
    /// pass `ANSWER_BYTES_PAUSE`.
    pub(super) fn on_request_bytes(&mut self, key: u32) {
        for _ in 0..REQUESTS_PER_TURN_MAX {
            if !self.handle_one(key) {
                self.settle_deadline(key);
                return;
            }
        }
        // More may be buffered: the next turn goes on with them.
        self.more_requests.push(key);
        self.settle_deadline(key);
    }

    /// One step of [`Self::on_request_bytes`]; false when nothing more can
    /// be done now.
    fn handle_one(&mut self, key: u32) -> bool {
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return false;
        };
        if conn.phase != Phase::Request || conn.has(flag::CLOSE_AFTER_SEND) {
            self.free_req_buf(key);
            return false;
        }
        if conn.sendq.bytes_queued() > ANSWER_BYTES_PAUSE {
            self.pause(key);
            return false;
        }
        let Some(req) = conn.req.as_mut() else {
            return false;
        };
        if req.awaiting_answer.is_some() {
            // Fleet mode: its publish's answer comes first. A client that
            // keeps sending meanwhile is paused like one that does not read
            // its answers; the answer's send resumes it.
            if req.buf.len() > ANSWER_BYTES_PAUSE as usize {
                self.pause(key);
            }
            return false;
        }
        if req.buf.is_empty() {
            self.free_req_buf(key);
            return false;
        }
        if self.req_buf_bytes > self.req_buf_bytes_max && req.buf.capacity() > REQ_BUF_SMALL_BYTES {
            let mut r =
                Response::text(503, "server busy: request buffers full, retry later", false);
            r.retry_after_s = Some(1);
            r.limit = Some(Limit::RequestBuffers);
            self.respond(key, r);
            return false;
        }
        if req.proxy_pending {
            return match proxy::parse(&req.buf) {
                Err(e) => {
                    let mut r = Response::text(400, &format!("PROXY protocol: {e}"), false);
                    r.limit = Some(Limit::ProxyProtocol);
                    self.respond(key, r);
                    false
                }
                Ok(ProxyStatus::Partial) => false,
                Ok(ProxyStatus::Complete { len, source }) => {
                    if let Some(source) = source {
                        req.peer = source.ip();
                    }
                    req.proxy_pending = false;
                    self.consume(key, len);
                    true
                }
            };
        }
        if req.discard_bytes > 0 {
            let n = req.discard_bytes.min(req.buf.len());
            req.discard_bytes -= n;
            self.consume(key, n);
            return true;
        }
        if req.deadline == Deadline::Idle {
            // A new request began on a keep-alive connection: its clock
            // is the request deadline now, from its first byte.
            self.set_deadline(key, Deadline::Request);
        }
        let req = self.conns[key as usize]
            .req
            .as_mut()
            .expect("request state");
        let (head, head_len) = match http::parse_head(&req.buf, &self.limits) {
            Err(e) => {
                self.respond(key, Response::text(e.status(), e.reason(), false));
                return false;
            }
            Ok(HeadStatus::Partial) => return false,
            Ok(HeadStatus::Complete { head, head_len }) => (head, head_len),
        };
        let peer = req.peer;
        let conn = &self.conns[key as usize];
        if conn.has(flag::REFUSE) {
            let mut r = Response::text(503, "server full, retry later", false);
            r.retry_after_s = Some(1);
            r.limit = Some(Limit::MaxConnections);
            self.respond(key, r);
            return false;
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
            self.hint_untrusted_proxy(&head, peer, Limit::PerIp);
            return false;
        }
        self.sync_keys();
        match api::decide(&head, peer, &self.api) {
            Decision::Respond(mut r) => {
                self.stats.requests += 1;
                r.keep_alive &= self.skip_body(key, &head, head_len);
                self.access_request(&head, peer, &r);
                self.respond(key, r);
            }
            Decision::Metrics {
                keep_alive,
                headers,
            } => {
                self.stats.requests += 1;
                let keep_alive = keep_alive && self.skip_body(key, &head, head_len);
                let r = crate::admin::metrics_response(&self.shared, keep_alive, headers);
                self.access_request(&head, peer, &r);
                self.respond(key, r);
            }
            Decision::Ready {
                keep_alive,
                headers,
            } => {
                self.stats.requests += 1;
                let keep_alive = keep_alive && self.skip_body(key, &head, head_len);
                let r = crate::admin::readiness_response(&self.shared, keep_alive, headers);
                self.access_request(&head, peer, &r);
                self.respond(key, r);
            }
            Decision::Presence {
                keep_alive,
                headers,
                query,
            } => {
                self.stats.requests += 1;
                let keep_alive = keep_alive && self.skip_body(key, &head, head_len);
                let mut r = Response::json(200, self.shared.presence_page(&query), keep_alive);
                r.headers = headers;
                self.access_request(&head, peer, &r);
                self.respond(key, r);
            }
            Decision::Stream {
                topics,
                patterns,
                resume,
                headers,
                client,
                rights,
            } => {
                self.stats.requests += 1;
                if head.body != BodyFraming::None {
                    self.respond(
                        key,
                        Response::text(400, "a stream request has no body", false),
                    );
                    return false;
                }
                self.consume(key, head_len);
                let interest = Interest {
                    topics,
                    patterns,
                    rights,
                };
                let refused =
                    self.start_stream(key, interest, &resume, &headers, client_key(&client));
                if let Some(limit) = refused {
                    self.hint_untrusted_proxy(&head, peer, limit);
                }
                self.access_stream_open(key, &head, peer);
                return false;
            }
            Decision::ReadBody(grant) => return self.read_publish(key, &head, head_len, grant),
        }
        true
    }

    /// Read an authorized publish's body (sending `100 Continue` first when
    /// the client waits for it), then publish.
    fn read_publish(
        &mut self,
        key: u32,
        head: &RequestHead,
        head_len: usize,
        grant: PublishGrant,
    ) -> bool {
        let now = self.now;
        let conn = &mut self.conns[key as usize];
        let req = conn.req.as_mut().expect("request state");
        let (body, consumed) = match head.body {
            BodyFraming::None => (Vec::new(), 0),
            framing => match http::read_body(framing, &req.buf[head_len..], &self.limits) {
                Err(e) => {
                    self.stats.requests += 1;
                    self.respond(key, Response::text(e.status(), e.reason(), false));
                    return false;
                }
                Ok(BodyStatus::Partial) => {
                    if head.expect_continue && !req.continue_sent {
                        req.continue_sent = true;
                        conn.sendq.push(Frame::from_static(http::CONTINUE_100), now);
                        self.mark_dirty(key);
                    }
                    return false;
                }
                Ok(BodyStatus::Complete { body, consumed }) => (body, consumed),
            },
        };
        req.continue_sent = false;
        self.stats.requests += 1;
        self.consume(key, head_len + consumed);
        let keep_alive = grant.keep_alive;
        // A refusal of the body carries the grant's headers already.
        let r = match api::publish_body(&grant, head, &body, &self.api) {
            Err(r) => r,
            Ok(requests) if self.shared.broker.is_some() => {
                let headers = grant.headers;
                match self.publish_via_broker(key, grant.rate_key, &requests, headers, keep_alive) {
                    None => return false, // answered when the broker has stored it
                    Some(r) => {
                        self.respond(key, r);
                        return true;
                    }
                }
            }
            Ok(requests) => {
                let mut r = match self.shared.publish(grant.rate_key, requests) {
                    Ok((ids, wakeups)) => {
                        // Fired after this turn's answers are submitted.
                        self.wakeups.merge(wakeups);
                        Response::json(200, ids_json(&ids), keep_alive)
                    }
                    Err(e) => Response::publish_error(&e, keep_alive),
                };
                r.headers = grant.headers;
                r
            }
        };
        if crate::log::access_enabled() {
            if let Some(peer) = self.conns[key as usize].req.as_ref().map(|q| q.peer) {
                self.access_request(head, peer, &r);
            }
        }
        self.respond(key, r);
        true
    }

    /// Drop the head of an answered request and decide what becomes of its
    /// body: a small one is skipped as it arrives, anything else (chunked,
    /// or past `BODY_DISCARD_BYTES_MAX`) closes the connection after the
    /// answer. Returns whether the connection may stay.
    fn skip_body(&mut self, key: u32, head: &RequestHead, head_len: usize) -> bool {
        self.consume(key, head_len);
        let keep = match head.body {
            BodyFraming::None => return true,
            BodyFraming::Length(n) if n <= BODY_DISCARD_BYTES_MAX => n,
            _ => return false,
        };
        if let Some(req) = self.conns[key as usize].req.as_mut() {
            req.discard_bytes = keep;
        }
        true
    }

    /// Drop the first `n` bytes of the request buffer; an emptied buffer
    /// gives its memory back (an idle keep-alive connection holds none).
    fn consume(&mut self, key: u32, n: usize) {
        let Some(req) = self.conns[key as usize].req.as_mut() else {
            return;
        };
        req.buf.drain(..n.min(req.buf.len()));
        if req.buf.is_empty() {
            self.free_req_buf(key);
        }
    }

    pub(super) fn free_req_buf(&mut self, key: u32) {
        if let Some(req) = self.conns[key as usize].req.as_mut() {
            self.req_buf_bytes -= req.buf.capacity();
            req.buf = Vec::new();
        }
    }

    /// Stop reading a connection whose answers pile up: its recv is
    /// cancelled, so the kernel's receive window closes on the client.
    /// Reading resumes once the answers are sent ([`Self::answers_sent`]).
    fn pause(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        if conn.has(flag::PAUSED) {
            return;
        }
        conn.set(flag::PAUSED);
        metrics::add(&COUNTERS.reads_paused_total, 1);
        if !conn.has(flag::RECV_ARMED) || conn.has(flag::RECV_CANCELLING) {
            return;
        }
        conn.set(flag::RECV_CANCELLING);
        conn.op_started();
        let target = Token::new(OpKind::Recv, key, conn.generation).pack();
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(Token::new(OpKind::Pause, key, conn.generation).pack());
        let ring = conn.ring;
        self.push(ring, &[entry]);
    }

    /// Every answer queued on a plain HTTP connection was sent: resume
    /// reading if it was paused, go on with requests already buffered, and
    /// start the idle (or request) clock.
    pub(super) fn answers_sent(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        if conn.phase != Phase::Request || !conn.sendq.is_empty() {
            return;
        }
        if conn.has(flag::PAUSED) {
            conn.clear(flag::PAUSED);
            if !conn.has(flag::RECV_ARMED) {
                self.arm_recv(key);
            }
            self.on_request_bytes(key);
            return;
        }
        self.settle_deadline(key);
    }

    /// Queue an answer; keep the connection for the next request or close
    /// it once the answer is sent. Until it is sent, the connection's clock
    /// is the answer's age.
    pub(super) fn respond(&mut self, key: u32, response: Response) {
        if response.status >= 400 {
            limit::note_refusal(
                response
                    .limit
                    .unwrap_or_else(|| Limit::from_status(response.status)),
            );
        }
        let bytes = Bytes::from(response.encode());
        let now = self.now;
        let conn = &mut self.conns[key as usize];
        conn.sendq.push(bytes, now);
        if !response.keep_alive || self.draining_until.is_some() {
            conn.set(flag::CLOSE_AFTER_SEND);
            self.free_req_buf(key);
        }
        self.clear_deadline(key);
        self.mark_dirty(key);
    }

    /// Open a stream: replay what the client missed and register it for
    /// live frames (see `Shared::subscribe` for the seam), then queue the
    /// head, `: connected`, `retry:` and the replay. `client_key` is the
    /// client's per-IP key (resumes are rate limited per client; a trusted
    /// proxy's streams are counted per client here). The per-IP limit
    /// that refused it, if one did.
    pub(super) fn start_stream(
        &mut self,
        key: u32,
        interest: Interest,
        resume: &ResumePoint,
        headers: &Headers,
        client_key: u64,
    ) -> Option<Limit> {
        let Interest {
            topics,
            patterns,
            rights,
        } = interest;
        let (topics, rights) = (&topics[..], &rights);
        if !matches!(resume, ResumePoint::Live) {
            if let Verdict::Limited { retry_after_s } = self.shared.resume_rate.check(client_key) {
                let mut r = Response::text(429, "resume rate limit, retry later", false);
                r.retry_after_s = Some(retry_after_s);
                r.limit = Some(Limit::ResumeRate);
                self.respond(key, r);
                return Some(Limit::ResumeRate);
            }
        }
        if self.conns[key as usize].peer_key == 0 {
            // Through a trusted proxy: the client is known only now.
            if !self.shared.per_ip.acquire(client_key) {
                let mut r = Response::text(
                    429,
                    "too many connections from this address, retry later",
                    false,
                );
                r.retry_after_s = Some(1);
                r.limit = Some(Limit::PerIp);
                self.respond(key, r);
                return Some(Limit::PerIp);
            }
            self.conns[key as usize].peer_key = client_key;
        }
        let listed = presence::Entry {
            topics: topics.into(),
            patterns: patterns.clone().into_boxed_slice(),
            payload: rights
                .as_ref()
                .and_then(|r| r.0.payload.as_ref())
                .map(|p| p.get().into()),
        };
        let (index, private) = (&mut self.index, &mut self.private);
        let by_pattern = &mut self.patterns;
        // Decided once, here: which topics' private events this stream gets.
        let private_ok = |t: &str| private_allowed(rights, t);
        let (replay, subs) = self.shared.subscribe_for(topics, resume, &private_ok, || {
            private.open(
                key,
                topics.iter().map(Topic::as_str).filter(|t| private_ok(t)),
            );
            by_pattern.open(
                key,
                patterns
                    .into_iter()
                    .map(|p| {
                        let ok = private_ok(p.as_str());
                        (p, ok)
                    })
                    .collect(),
            );
            topics
                .iter()
                .map(|t| index.subscribe(t.as_str(), key))
                .collect::<Box<[_]>>()
        });
        let generation = self.conns[key as usize].generation;
        self.shared
            .presence_open(self.stream_id(key, generation), listed);
        self.clear_deadline(key);
        let now = self.now;
        let preamble = if headers.is_empty() {
            self.stream_preamble.clone()
        } else {
            Bytes::from(api::stream_preamble(self.retry_ms, headers))
        };
        let conn = &mut self.conns[key as usize];
        conn.subs = subs;
        self.req_buf_bytes -= conn.start_streaming();
        conn.live_after_id = replay.through_id;
        conn.sendq.push(preamble, now);
        let held = self.hold_for_redis(key, topics, resume, &replay);
        let conn = &mut self.conns[key as usize];
        // The replay is exempt from the slow-client budget until sent (a
        // client dropped for being over it must be able to catch up in one
        // replay); live events arriving while it drains count as usual.
        for frame in replay.frames.iter().filter(|_| !held) {
            conn.sendq.push_exempt(frame.clone(), now);
        }
        metrics::add(&COUNTERS.streams_opened_total, 1);
        if !matches!(resume, ResumePoint::Live) {
            metrics::add(&COUNTERS.streams_resumed_total, 1);
            // A held stream's replay is counted when it arrives.
            let replayed = if held { 0 } else { replay.events().len() };
            metrics::add(&COUNTERS.replayed_events_total, replayed as u64);
        }
        if replay.missed.is_some() && !held {
            metrics::add(&COUNTERS.missed_notices_total, 1);
        }
        self.mark_dirty(key);
        None
    }

    /// A per-IP `limit` refused a request from `peer` that says it speaks
    /// for other clients (Forwarded, X-Forwarded-For, X-Real-IP or Via),
    /// though `peer` is no `--trusted-proxy`. Its headers are ignored, as
    /// they must be, so every client behind that proxy counts as the
    /// proxy's one address: a failover or a busy minute refuses them in
    /// bulk. The operator is told, with the fix, once a minute per node.
    fn hint_untrusted_proxy(&mut self, head: &RequestHead, peer: std::net::IpAddr, limit: Limit) {
        if self.api.trusted_proxies.contains(peer) || !api::client::has_proxy_headers(head) {
            return;
        }
        if !self.shared.untrusted_proxy_hint.allow() {
            return;
        }
        crate::warn!(
            "a per-IP limit refused a proxy's request: the proxy is not trusted, so all its clients share its address's limits",
            worker = self.id,
            peer = peer,
            limit = limit.name(),
            hint = "if it is your load balancer or CDN, name it in --trusted-proxy (STENTOR_TRUSTED_PROXY)"
        );
    }

    /// Give a plain HTTP connection the one clock its phase calls for:
    /// none of its own while answers are queued (their age is), the request
    /// deadline while part of a request is buffered (kept, never extended,
    /// so a byte now and then buys nothing), else the idle deadline.
    pub(super) fn settle_deadline(&mut self, key: u32) {
        let Some(conn) = self.conns.get(key as usize) else {
            return;
        };
        let Some(req) = conn.req.as_ref() else {
            return;
        };
        if conn.phase != Phase::Request
            || conn.has(flag::CLOSE_AFTER_SEND)
            || !conn.sendq.is_empty()
            || req.awaiting_answer.is_some()
        {
            return;
        }
        let want = if req.buf.is_empty() && req.discard_bytes == 0 && !req.proxy_pending {
            Deadline::Idle
        } else {
            Deadline::Request
        };
        if conn.deadline_tick == DEADLINE_NONE || req.deadline != want {
            self.set_deadline(key, want);
        }
    }

    pub(super) fn set_deadline(&mut self, key: u32, kind: Deadline) {
        self.clear_deadline(key);
        let tick = self.now
            + match kind {
                Deadline::Idle => self.ticks.idle,
                Deadline::Request => self.ticks.request,
            };
        let conn = &mut self.conns[key as usize];
        conn.deadline_tick = tick;
        if let Some(req) = conn.req.as_mut() {
            req.deadline = kind;
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
            let kind = conn.req.as_ref().map(|r| r.deadline);
            match kind {
                Some(Deadline::Request) if conn.sendq.is_empty() => {
                    self.respond(key, Response::text(408, "request timeout", false));
                }
                // Answers queued: their age is the clock (the sweep).
                Some(Deadline::Request) => {}
                Some(Deadline::Idle) | None => self.close_conn(key, CloseReason::IdleTimeout),
            }
        }
    }
}
