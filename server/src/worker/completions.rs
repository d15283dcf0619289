//! What the kernel reports: one handler per kind of operation, dispatched
//! on the completion's token, and the end-of-batch work (inbox, closes,
//! sends).

use std::sync::atomic::Ordering;

use io_uring::cqueue;

use super::{abort, live, Worker, SWEEP_TICKS};
use crate::conn::{flag, CloseReason, Conn, Deadline, Phase, ReqState, MSG_SLOT_NONE};
use crate::limit;
use crate::metrics::{self, COUNTERS};
use crate::ring::token::{next_generation, OpKind, Token};

impl Worker {
    pub(super) fn on_completion(&mut self, ring: u8, user_data: u64, result: i32, flags: u32) {
        let Some(token) = Token::unpack(user_data) else {
            crate::error!(
                "completion with an unknown token",
                worker = self.id,
                user_data = user_data
            );
            metrics::add(&COUNTERS.worker_errors_total, 1);
            return;
        };
        match token.kind {
            OpKind::Accept => self.on_accept(token.key as usize, result),
            OpKind::Recv => self.on_recv(ring, token, result, flags),
            OpKind::Send => self.on_send(token, result),
            OpKind::Cancel | OpKind::Close => self.on_conn_op_done(token),
            OpKind::Pause => self.on_paused(token),
            OpKind::Linger => {
                abort::on_done(self.id, result);
                self.on_conn_op_done(token);
            }
            OpKind::Wake => self.on_wake(),
            OpKind::Tick => self.on_tick(),
            OpKind::AcceptCancel => {
                self.accept_cancels_in_flight = self.accept_cancels_in_flight.saturating_sub(1)
            }
        }
    }

    fn on_accept(&mut self, slot: usize, result: i32) {
        let Some(a) = self.accepts.get_mut(slot) else {
            return;
        };
        a.armed = false;
        let armed_on = &mut self.rings[usize::from(a.ring)].accepts_armed;
        debug_assert!(*armed_on > 0);
        *armed_on = armed_on.saturating_sub(1);
        if result < 0 {
            match -result {
                libc::ECANCELED => {}
                libc::ENFILE | libc::EMFILE | libc::ENOMEM | libc::ENOBUFS => {
                    // The fixed table (or memory) is full: park this accept
                    // until a connection frees a slot or the next tick.
                    self.accepts_parked = true;
                    if self.log_allowed() {
                        crate::warn!(
                            "accept paused: no free slot",
                            worker = self.id,
                            connections = self.conns.len(),
                            errno = -result
                        );
                    }
                }
                libc::EINTR | libc::EAGAIN | libc::ECONNABORTED | libc::EPROTO | libc::EPERM => {
                    if self.draining_until.is_none() {
                        self.arm_accept(slot);
                    }
                }
                errno => {
                    // Unexpected: retry at the next tick, not in a hot loop.
                    metrics::add(&COUNTERS.worker_errors_total, 1);
                    self.accepts_parked = true;
                    if self.log_allowed() {
                        crate::warn!("accept failed", worker = self.id, errno = errno);
                    }
                }
            }
            return;
        }
        let fixed = result as u32;
        let ring = a.ring;
        let peer = crate::sys::socket_addr(&a.addr)
            .map(|s| s.ip())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        // A trusted proxy's connections carry many clients: each is counted
        // per IP when it is known (the stream it opens), not the proxy.
        let trusted = self.api.trusted_proxies.contains(peer);
        let peer_key = if trusted { 0 } else { limit::ip_key(peer) };
        self.generation = next_generation(self.generation);
        let key = self.conns.vacant_key() as u32;
        let req = ReqState::new(peer, trusted && self.proxy_protocol);
        let mut conn = Conn::new(fixed, ring, self.generation, req);
        conn.peer_key = peer_key;
        let (node_room, ip_room) = self.shared.connection_opened(peer_key);
        if !ip_room {
            conn.set(flag::REFUSE_PER_IP);
        }
        self.conns.insert(conn);
        let ring_conns = {
            let r = &mut self.rings[usize::from(ring)];
            r.conns += 1;
            r.conns
        };
        if self.draining_until.is_some() {
            self.close_conn(key, CloseReason::Shutdown);
            return;
        }
        if !node_room || ring_conns > self.connections_per_ring {
            // Read the request first, then answer 503: closing with unread
            // bytes would reset the connection and lose the answer.
            self.conns[key as usize].set(flag::REFUSE);
        }
        self.arm_recv(key);
        self.set_deadline(key, Deadline::Request);
        self.arm_accept(slot);
    }

    fn on_recv(&mut self, ring: u8, token: Token, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        // The buffer belongs to the ring the completion came from.
        let bufs = &mut self.rings[usize::from(ring)].bufs;
        let Some(conn) = live(&mut self.conns, &mut self.stats.stale, token) else {
            if let Some(bid) = bid {
                bufs.give_back(bid);
            }
            return;
        };
        debug_assert_eq!(conn.ring, ring, "a connection's recv on another ring");
        if !more {
            conn.op_finished();
            conn.clear(flag::RECV_ARMED);
        }
        if let Some(bid) = bid {
            // Copy out and hand the buffer straight back: buffers are
            // shared by every connection of the worker.
            if result > 0 && !conn.has(flag::CLOSE_AFTER_SEND) {
                if let Some(req) = conn.req.as_mut() {
                    let before = req.buf.capacity();
                    req.buf.extend_from_slice(bufs.get(bid, result as usize));
                    self.req_buf_bytes += req.buf.capacity() - before;
                }
            }
            bufs.give_back(bid);
        }
        let key = token.key;
        if conn.phase == Phase::Closing {
            self.maybe_free(key);
            return;
        }
        match result {
            r if r > 0 => {
                if conn.phase == Phase::Request {
                    self.on_request_bytes(key);
                }
            }
            0 => {
                // A client may half-close right after its request: let the
                // answer already queued go out first.
                let conn = &mut self.conns[key as usize];
                if conn.phase == Phase::Request && !conn.sendq.is_empty() {
                    conn.set(flag::CLOSE_AFTER_SEND);
                    self.free_req_buf(key);
                } else {
                    self.close_conn(key, CloseReason::PeerClosed);
                }
                return;
            }
            r if -r == libc::ENOBUFS || -r == libc::ECANCELED => {}
            r => {
                let reason = if -r == libc::ECONNRESET {
                    CloseReason::PeerClosed
                } else {
                    CloseReason::Error
                };
                self.close_conn(key, reason);
                return;
            }
        }
        if let Some(conn) = self.conns.get(key as usize) {
            let rearm = !more
                && conn.phase != Phase::Closing
                && !conn.has(flag::RECV_ARMED)
                && !conn.has(flag::PAUSED);
            if rearm {
                self.arm_recv(key);
            }
        }
    }

    fn on_send(&mut self, token: Token, result: i32) {
        let Some(conn) = live(&mut self.conns, &mut self.stats.stale, token) else {
            return;
        };
        conn.op_finished();
        if conn.msg_slot != MSG_SLOT_NONE {
            self.msgs.give_back(conn.msg_slot);
            conn.msg_slot = MSG_SLOT_NONE;
        }
        if result >= 0 {
            let frames = conn.sendq.complete(result as u32);
            self.stats.send_done(frames, result as u64);
        } else {
            conn.sendq.abort();
        }
        let key = token.key;
        if conn.phase == Phase::Closing {
            self.maybe_free(key);
            return;
        }
        if result < 0 {
            let reason = match -result {
                libc::EPIPE | libc::ECONNRESET => CloseReason::PeerClosed,
                _ => CloseReason::Error,
            };
            self.close_conn(key, reason);
            return;
        }
        let request_phase = conn.phase == Phase::Request;
        if !conn.sendq.is_empty() {
            if request_phase {
                self.mark_dirty(key);
            } else {
                self.mark_fanout(key);
            }
        } else if conn.has(flag::CLOSE_AFTER_SEND) {
            self.close_conn(key, CloseReason::Done);
        } else if request_phase {
            self.answers_sent(key);
        }
    }

    /// A pause's recv cancel completed: the recv's own last completion
    /// comes (or came) separately.
    fn on_paused(&mut self, token: Token) {
        let Some(conn) = live(&mut self.conns, &mut self.stats.stale, token) else {
            return;
        };
        conn.op_finished();
        conn.clear(flag::RECV_CANCELLING);
        self.maybe_free(token.key);
    }

    fn on_conn_op_done(&mut self, token: Token) {
        let Some(conn) = live(&mut self.conns, &mut self.stats.stale, token) else {
            return;
        };
        conn.op_finished();
        self.maybe_free(token.key);
    }

    fn on_wake(&mut self) {
        if self.shared.shutdown.load(Ordering::SeqCst) {
            self.begin_drain();
        }
        self.arm_wake();
    }

    fn on_tick(&mut self) {
        self.arm_tick();
        self.pick_up_reload();
        self.expire_deadlines();
        if self.accepts_parked && self.draining_until.is_none() {
            self.unpark_accepts();
        }
        if self.now >= self.next_sweep {
            self.next_sweep = self.now + SWEEP_TICKS.min(self.ticks.heartbeat);
            self.sweep();
        }
        if self.shared.shutdown.load(Ordering::SeqCst) {
            self.begin_drain();
        }
        if let Some(until) = self.draining_until {
            if self.now >= until {
                let keys: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
                for key in keys {
                    self.close_conn(key, CloseReason::Shutdown);
                }
                if !self.conns.is_empty() && self.log_allowed() {
                    let ops: u32 = self
                        .conns
                        .iter()
                        .map(|(_, c)| u32::from(c.ops_in_flight))
                        .sum();
                    let recv = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.has(flag::RECV_ARMED))
                        .count();
                    let sending = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.sendq.is_sending())
                        .count();
                    crate::warn!(
                        "shutdown deadline passed; connections still closing",
                        worker = self.id,
                        connections = self.conns.len(),
                        ops_in_flight = ops,
                        recv_armed = recv,
                        sending = sending,
                        accepts_armed = self.accepts.iter().filter(|a| a.armed).count(),
                        accept_cancels = self.accept_cancels_in_flight
                    );
                }
            }
        }
        self.flush_stats();
    }

    pub(super) fn after_batch(&mut self) {
        let mut more = std::mem::take(&mut self.more_requests);
        for key in more.drain(..) {
            self.on_request_bytes(key);
        }
        if self.more_requests.is_empty() {
            self.more_requests = more;
        }
        // This turn's answers (a publish's among them) go to the kernel in
        // their own enter, before the inbox is fanned out into thousands of
        // queues: the publisher does not wait for its own event's fan-out.
        if self.start_control_sends() {
            self.submit_now();
        }
        // Only now the other workers start on this turn's publishes.
        self.wakeups.fire_except(&self.shared, self.id);
        self.drain_inbox();
        let mut to_close = std::mem::take(&mut self.to_close);
        for (key, reason) in to_close.drain(..) {
            self.close_conn(key, reason);
        }
        self.to_close = to_close;
        self.start_sends();
    }
}
