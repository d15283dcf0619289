//! One worker thread: one listener, one slab of connections, one topic
//! index, and as many rings as its share of the connections needs (each
//! ring has its own fixed-file table; see docs/architecture.md).
//!
//! The loop, top to bottom: submit what the last turn produced (secondary
//! rings without waiting, then the primary ring, waiting for a completion);
//! dispatch each completion on its token; then deliver the inbox, close
//! what must close and start one send per connection that has frames
//! waiting. Every SQE made in a turn goes to the kernel in the next turn's
//! enters: that is how broadcasts go out in batches.

mod abort;
mod fanout;
mod requests;
mod route;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use crate::conn::{flag, CloseReason, Conn, Phase, DEADLINE_NONE, MSG_SLOT_NONE};
use crate::hub::id::ResumePoint;
use crate::hub::index::Index;
use crate::hub::publish::{ids_json, PublishRules};
use crate::hub::topic::Topic;
use crate::limit::{self, Limit};
use crate::metrics::{self, WorkerStats, COUNTERS};
use crate::node::{Delivery, Shared};
use crate::ring::bufring::{BufRing, BUFS_PER_RING, BUF_BYTES};
use crate::ring::msgpool::{MsgPool, IOVECS_PER_SEND_MAX};
use crate::ring::token::{next_generation, OpKind, Token};
use crate::wire::http::{self, BodyFraming, BodyStatus, HeadStatus, Limits, RequestHead};
use crate::wire::sse::{self, Frame};
use route::{Action, Response, RouteConfig};

/// Length of one coarse tick: deadlines, heartbeats and stall checks are
/// accurate to about this much.
pub const TICK_MS: u64 = 100;
/// Ticks between sweeps over all streams (heartbeats, queue ages).
pub const SWEEP_TICKS: u32 = 5;
/// Accept SQEs kept in flight per worker.
pub const ACCEPTS_IN_FLIGHT: usize = 16;
/// Pipelined requests handled per received chunk. A chunk is at most one
/// provided buffer, so this covers the smallest possible requests in it; the
/// read buffer is capped anyway (`read_bytes_max`).
pub const REQUESTS_PER_READ_MAX: usize = 128;
/// Consecutive failures of `io_uring_enter` before the worker gives up.
pub const ENTER_ERRORS_MAX: u32 = 100;
/// Repeated warnings of a worker are logged at most once per this many ticks.
pub const LOG_EVERY_TICKS: u32 = 50;
/// Buffer group id of the worker's provided-buffer ring.
const BUF_GROUP: u16 = 0;

/// What the node hands a worker.
pub struct WorkerSetup {
    pub id: usize,
    pub listener: TcpListener,
    /// Rings this worker owns (one fixed-file table each).
    pub rings: usize,
    /// Size of each ring's sparse fixed-file table.
    pub fixed_slots: u32,
    /// Connections one ring holds before answering 503.
    pub connections_per_ring: u32,
}

/// Start the worker on this thread: report startup success or failure on
/// `ready`, then run until shutdown.
pub fn run(setup: WorkerSetup, shared: Arc<Shared>, ready: mpsc::Sender<Result<(), String>>) {
    let id = setup.id;
    let mut worker = match Worker::new(setup, shared) {
        Ok(w) => w,
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    if let Err(message) = worker.run_loop() {
        crate::error!("worker stopped on an error", worker = id, error = message);
        metrics::add(&COUNTERS.worker_errors_total, 1);
    }
}

/// Storage a pending accept writes the peer address into.
struct AcceptSlot {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
    armed: bool,
    /// The ring the accept is armed on (its table gets the connection).
    ring: u8,
}

/// One ring of a worker: its fixed-file table holds the connections
/// accepted on it, its provided buffers serve their reads.
struct RingIo {
    // Declared first so it is dropped before the buffers it points at.
    ring: IoUring,
    bufs: BufRing,
    /// Connections whose fixed slot is in this ring's table.
    conns: u32,
}

/// Limits converted to ticks once.
struct Ticks {
    request: u32,
    idle: u32,
    heartbeat: u32,
    queue_age: u32,
    shutdown: u32,
}

fn ms_to_ticks(ms: u32) -> u32 {
    (u64::from(ms).div_ceil(TICK_MS)).max(1) as u32
}

struct Worker {
    // The ring is declared first so it is dropped first: the buffers,
    // msghdrs and addresses below are memory the kernel may still touch
    // until the ring is gone.
    rings: Vec<RingIo>,
    msgs: MsgPool,
    accepts: Box<[AcceptSlot]>,
    wake_buf: Box<u64>,
    tick_ts: Box<types::Timespec>,

    id: usize,
    shared: Arc<Shared>,
    listener: TcpListener,
    wake_fd: i32,
    conns: Slab<Conn>,
    index: Index,
    generation: u32,
    connections_per_ring: u32,
    limits: Limits,
    route_cfg: RouteConfig,
    ticks: Ticks,
    queue_bytes_max: u32,
    /// Most request bytes buffered for one connection: a whole head and
    /// body at their limits, plus one receive buffer.
    read_bytes_max: usize,
    started: Instant,
    now: u32,
    next_sweep: u32,
    /// (deadline tick, slab key) of connections reading a request or idle
    /// between keep-alive requests. Streams have none, so idle subscribers
    /// cost nothing here.
    deadlines: BTreeSet<(u32, u32)>,
    dirty: Vec<u32>,
    to_close: Vec<(u32, CloseReason)>,
    inbox_batch: Vec<Delivery>,
    cqes: Vec<(u8, cqueue::Entry)>,
    heartbeat: Frame,
    stream_preamble: Bytes,
    draining_until: Option<u32>,
    accept_cancels_in_flight: u32,
    accepts_parked: bool,
    last_log_tick: u32,
    /// Hot-path counts, moved into this worker's metrics each tick.
    stats: WorkerStats,
}

impl Worker {
    fn new(setup: WorkerSetup, shared: Arc<Shared>) -> Result<Worker, String> {
        let id = setup.id;
        let wake_fd = shared.inboxes[id].wake_fd();
        let rings = (0..setup.rings.max(1))
            .map(|r| make_ring(id, r, setup.fixed_slots, wake_fd))
            .collect::<Result<Vec<_>, String>>()?;
        let config = &shared.config;
        let heartbeat = sse::encode_comment("");
        let preamble = stream_preamble(config.retry_ms, &route::Headers::new());
        let accepts = (0..ACCEPTS_IN_FLIGHT)
            .map(|_| AcceptSlot {
                // SAFETY: sockaddr_storage is plain data; zero is valid.
                addr: unsafe { std::mem::zeroed() },
                len: 0,
                armed: false,
                ring: 0,
            })
            .collect();
        let mut w = Worker {
            rings,
            msgs: MsgPool::new(),
            accepts,
            wake_buf: Box::new(0),
            tick_ts: Box::new(types::Timespec::new().nsec((TICK_MS * 1_000_000) as u32)),
            id,
            listener: setup.listener,
            wake_fd,
            conns: Slab::new(),
            index: Index::new(),
            generation: 0,
            connections_per_ring: setup.connections_per_ring,
            limits: config.http_limits(),
            route_cfg: RouteConfig {
                topics_per_stream_max: usize::from(config.topics_per_stream_max),
                topic_bytes_max: usize::from(config.topic_bytes_max),
                publish_rules: PublishRules {
                    topic_bytes_max: usize::from(config.topic_bytes_max),
                    batch_events_max: config.publish_batch_events_max as usize,
                },
                publish_token: config.publish_token.clone(),
                subscribe_token: config.subscribe_token.clone(),
                cors: route::Cors::from_list(&config.cors_origin),
            },
            ticks: Ticks {
                request: ms_to_ticks(config.request_timeout_ms),
                idle: ms_to_ticks(config.idle_timeout_ms),
                heartbeat: ms_to_ticks(config.heartbeat_ms),
                queue_age: ms_to_ticks(config.queue_age_ms_max),
                shutdown: (u64::from(config.shutdown_ms) / TICK_MS) as u32,
            },
            queue_bytes_max: config.queue_bytes_max,
            read_bytes_max: config.head_bytes_max as usize
                + config.body_bytes_max as usize
                + BUF_BYTES as usize,
            started: Instant::now(),
            now: 1,
            next_sweep: 1,
            deadlines: BTreeSet::new(),
            dirty: Vec::new(),
            to_close: Vec::new(),
            inbox_batch: Vec::new(),
            cqes: Vec::with_capacity(crate::ring::CQ_ENTRIES as usize),
            heartbeat,
            stream_preamble: Bytes::from(preamble),
            draining_until: None,
            accept_cancels_in_flight: 0,
            accepts_parked: false,
            last_log_tick: 0,
            stats: WorkerStats::default(),
            shared,
        };
        for slot in 0..ACCEPTS_IN_FLIGHT {
            w.arm_accept(slot);
        }
        w.arm_wake();
        w.arm_tick();
        for r in &w.rings {
            r.ring
                .submit()
                .map_err(|e| format!("worker {id}: first submit failed: {e}"))?;
        }
        Ok(w)
    }

    fn run_loop(&mut self) -> Result<(), String> {
        let mut enter_errors = 0;
        let mut backlog = false;
        loop {
            // Secondary rings first, without waiting: their completions
            // wake us through the eventfd the primary ring is reading.
            for r in self.rings.iter_mut().skip(1) {
                // Enter when there is something to submit, or completions
                // the kernel kept aside when the CQ overflowed: only an
                // enter flushes them (io-uring adds GETEVENTS for that).
                let (idle, overflow) = {
                    let sq = r.ring.submission();
                    (sq.is_empty(), sq.cq_overflow())
                };
                if idle && !overflow {
                    continue;
                }
                if let Err(e) = r.ring.submit() {
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                    ) {
                        crate::error!("io_uring_enter failed", worker = self.id, error = e);
                    }
                }
            }
            // With completions still held back by an overflow, do not sleep.
            let want = usize::from(!backlog);
            match crate::ring::submit_and_reap(&mut self.rings[0].ring, want) {
                Ok(_) => enter_errors = 0,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                    ) => {}
                Err(e) => {
                    enter_errors += 1;
                    crate::error!("io_uring_enter failed", worker = self.id, error = e);
                    if enter_errors >= ENTER_ERRORS_MAX {
                        return Err(format!("io_uring_enter keeps failing: {e}"));
                    }
                }
            }
            let woke = Instant::now();
            self.now = 1 + (woke.duration_since(self.started).as_millis() as u64 / TICK_MS) as u32;
            let mut batch = std::mem::take(&mut self.cqes);
            for (r, ring) in self.rings.iter_mut().enumerate() {
                batch.extend(ring.ring.completion().map(|c| (r as u8, c)));
            }
            self.stats.ring_completions += batch.len() as u64;
            for (r, cqe) in batch.drain(..) {
                self.on_completion(r, cqe.user_data(), cqe.result(), cqe.flags());
            }
            backlog = self
                .rings
                .iter_mut()
                .any(|r| r.ring.submission().cq_overflow());
            self.cqes = batch;
            self.after_batch();
            self.stats.busy_ns += woke.elapsed().as_nanos() as u64;
            if self.finished() {
                crate::debug!("worker stopped", worker = self.id);
                return Ok(());
            }
        }
    }

    // ---- submission helpers -------------------------------------------

    /// Queue one SQE; if the SQ is full, submit what is there and retry:
    /// an SQE is never dropped.
    fn push(&mut self, ring: u8, entries: &[squeue::Entry]) {
        self.stats.ring_submissions += entries.len() as u64;
        let ring = &mut self.rings[usize::from(ring)].ring;
        for attempt in 0..ENTER_ERRORS_MAX {
            // SAFETY: every entry points only at memory that outlives its
            // completion: frames held in send queues until the send
            // completes, msghdrs in the pool, buffers and addresses owned by
            // this worker (dropped after the ring).
            let pushed = unsafe { ring.submission().push_multiple(entries) };
            if pushed.is_ok() {
                return;
            }
            if let Err(e) = ring.submit() {
                if attempt + 1 == ENTER_ERRORS_MAX {
                    crate::error!("cannot submit", worker = self.id, error = e);
                }
            }
        }
        metrics::add(&COUNTERS.worker_errors_total, 1);
        crate::error!(
            "submission queue stuck: an operation was lost",
            worker = self.id
        );
    }

    /// Arm accept `slot` on the ring with the fewest connections, so the
    /// worker's rings fill evenly.
    fn arm_accept(&mut self, slot: usize) {
        let ring = self
            .rings
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.conns)
            .map(|(i, _)| i as u8)
            .unwrap_or(0);
        let a = &mut self.accepts[slot];
        debug_assert!(!a.armed);
        a.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        a.armed = true;
        a.ring = ring;
        let entry = opcode::Accept::new(
            types::Fd(self.listener.as_raw_fd()),
            (&mut a.addr as *mut libc::sockaddr_storage).cast(),
            &mut a.len,
        )
        // No SOCK_CLOEXEC: the kernel refuses it for direct descriptors,
        // which are never inherited by exec anyway.
        .file_index(Some(types::DestinationSlot::auto_target()))
        .build()
        .user_data(Token::new(OpKind::Accept, slot as u32, 0).pack());
        self.push(ring, &[entry]);
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Token::new(OpKind::Wake, 0, 0).pack());
        self.push(0, &[entry]);
    }

    fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick_ts)
            .build()
            .user_data(Token::new(OpKind::Tick, 0, 0).pack());
        self.push(0, &[entry]);
    }

    fn arm_recv(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        debug_assert!(!conn.has(flag::RECV_ARMED));
        conn.set(flag::RECV_ARMED);
        conn.op_started();
        let entry = opcode::RecvMulti::new(types::Fixed(conn.fixed), BUF_GROUP)
            .build()
            .user_data(Token::new(OpKind::Recv, key, conn.generation).pack());
        let ring = conn.ring;
        self.push(ring, &[entry]);
    }

    /// Start one send for `key` if it has frames and none in flight: a
    /// `Send` for one frame, a `SendMsg` coalescing up to
    /// `IOVECS_PER_SEND_MAX` frames otherwise.
    fn start_send(&mut self, key: u32) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if conn.phase == Phase::Closing || conn.sendq.is_sending() || conn.sendq.is_empty() {
            return;
        }
        let token = Token::new(OpKind::Send, key, conn.generation).pack();
        let slot = if conn.sendq.frames_len() > 1 {
            self.msgs.take()
        } else {
            None
        };
        let entry = match slot {
            Some(slot) => {
                let (hdr, bytes) = self.msgs.fill(slot, conn.sendq.batch(IOVECS_PER_SEND_MAX));
                conn.sendq.start(bytes);
                conn.msg_slot = slot;
                opcode::SendMsg::new(types::Fixed(conn.fixed), hdr).build()
            }
            None => {
                let Some(first) = conn.sendq.batch(1).next() else {
                    return;
                };
                let (ptr, len) = (first.as_ptr(), first.len() as u32);
                conn.sendq.start(len);
                opcode::Send::new(types::Fixed(conn.fixed), ptr, len).build()
            }
        };
        conn.op_started();
        conn.last_send_tick = now;
        let ring = conn.ring;
        self.push(ring, &[entry.user_data(token)]);
    }

    // ---- completions -----------------------------------------------------

    fn on_completion(&mut self, ring: u8, user_data: u64, result: i32, flags: u32) {
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
        let peer_loopback = peer_is_loopback(&a.addr);
        let peer_key = peer_ip(&a.addr).map(limit::ip_key).unwrap_or(1);
        self.generation = next_generation(self.generation);
        let key = self.conns.vacant_key() as u32;
        let mut conn = Conn::new(fixed, ring, self.generation, peer_loopback);
        conn.peer_key = peer_key;
        // Counted node-wide: one IP's connections spread over every worker.
        if !self.shared.per_ip.acquire(peer_key) {
            conn.set(flag::REFUSE_PER_IP);
        }
        self.conns.insert(conn);
        let ring_conns = {
            let r = &mut self.rings[usize::from(ring)];
            r.conns += 1;
            r.conns
        };
        metrics::add(&COUNTERS.connections_accepted_total, 1);
        metrics::add(&COUNTERS.connections_open, 1);
        let open_before = self.shared.connections_open.fetch_add(1, Ordering::Relaxed);
        if self.draining_until.is_some() {
            self.close_conn(key, CloseReason::Shutdown);
            return;
        }
        let full = open_before >= self.shared.capacity.connections_max
            || ring_conns > self.connections_per_ring;
        if full {
            // Read the request first, then answer 503: closing with unread
            // bytes would reset the connection and lose the answer.
            self.conns[key as usize].set(flag::REFUSE);
        }
        self.arm_recv(key);
        self.set_deadline(key, false);
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
            if result > 0 && conn.phase == Phase::Request && !conn.has(flag::CLOSE_AFTER_SEND) {
                conn.read_buf
                    .extend_from_slice(bufs.get(bid, result as usize));
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
                    conn.read_buf = Vec::new();
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
            if !more && conn.phase != Phase::Closing && !conn.has(flag::RECV_ARMED) {
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
        if !conn.sendq.is_empty() {
            self.mark_dirty(key);
        } else if conn.has(flag::CLOSE_AFTER_SEND) {
            self.close_conn(key, CloseReason::Done);
        }
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

    fn after_batch(&mut self) {
        self.drain_inbox();
        let mut to_close = std::mem::take(&mut self.to_close);
        for (key, reason) in to_close.drain(..) {
            self.close_conn(key, reason);
        }
        self.to_close = to_close;
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            if let Some(conn) = self.conns.get_mut(key as usize) {
                conn.clear(flag::DIRTY);
                self.start_send(key);
            }
        }
        self.dirty = dirty;
    }

    // ---- closing -----------------------------------------------------------

    /// Unsubscribe, cancel whatever is in flight and close the fixed slot.
    /// The slab slot is freed once every op has completed.
    fn close_conn(&mut self, key: u32, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        match reason {
            CloseReason::SlowQueueBytes => {
                metrics::add(&COUNTERS.dropped_slow_bytes_total, 1);
                limit::note_drop(limit::SlowDrop::QueueBytes);
            }
            CloseReason::SlowQueueAge => {
                metrics::add(&COUNTERS.dropped_slow_age_total, 1);
                limit::note_drop(limit::SlowDrop::QueueAge);
            }
            _ => {}
        }
        self.stats.closed[reason.index()] += 1;
        let subs = std::mem::take(&mut conn.subs);
        if !subs.is_empty() {
            // Node-wide stream counts per topic (topic forgetting).
            let index = &self.index;
            self.shared
                .unsubscribe(subs.iter().map(|sub| index.name(sub.topic)));
        }
        conn.phase = Phase::Closing;
        conn.read_buf = Vec::new();
        let (fixed, ring, generation) = (conn.fixed, conn.ring, conn.generation);
        let recv_armed = conn.has(flag::RECV_ARMED);
        let sending = conn.sendq.is_sending();
        debug_assert_eq!(
            conn.ops_in_flight,
            u8::from(recv_armed) + u8::from(sending),
            "ops in flight besides recv and send"
        );
        self.clear_deadline(key);
        let conns = &mut self.conns;
        for sub in subs.iter() {
            self.index.unsubscribe(*sub, key, |other, topic, pos| {
                for s in conns[other as usize].subs.iter_mut() {
                    if s.topic == topic {
                        s.pos = pos;
                    }
                }
            });
        }
        // Cancel the recv and a pending send first: a closed fixed slot alone
        // would leave them, and the socket, alive. Each is cancelled by its
        // user_data, a hash lookup; cancelling by file would scan every
        // pending request of the ring, quadratic when thousands close at
        // once (shutdown). Hard-linked so the close runs whatever they find.
        // A dropped slow client is closed abortively (RST): see `abort`.
        let mut entries = Vec::with_capacity(4);
        if abort::wanted(reason) {
            let ud = Token::new(OpKind::Linger, key, generation).pack();
            entries.push(abort::entry(fixed, ud));
        }
        for (armed, kind) in [(recv_armed, OpKind::Recv), (sending, OpKind::Send)] {
            if armed {
                let target = Token::new(kind, key, generation).pack();
                entries.push(
                    opcode::AsyncCancel::new(target)
                        .build()
                        .flags(squeue::Flags::IO_HARDLINK)
                        .user_data(Token::new(OpKind::Cancel, key, generation).pack()),
                );
            }
        }
        entries.push(
            opcode::Close::new(types::Fixed(fixed))
                .build()
                .user_data(Token::new(OpKind::Close, key, generation).pack()),
        );
        let conn = &mut self.conns[key as usize];
        for _ in 0..entries.len() {
            conn.op_started();
        }
        self.push(ring, &entries);
    }

    fn maybe_free(&mut self, key: u32) {
        if !self.conns[key as usize].can_free() {
            return;
        }
        let conn = self.conns.remove(key as usize);
        assert_eq!(conn.ops_in_flight, 0, "slot freed with ops in flight");
        let ring = &mut self.rings[usize::from(conn.ring)];
        debug_assert!(ring.conns > 0);
        ring.conns -= 1;
        debug_assert_eq!(conn.msg_slot, MSG_SLOT_NONE);
        self.shared.connections_open.fetch_sub(1, Ordering::Relaxed);
        COUNTERS.connections_open.fetch_sub(1, Ordering::Relaxed);
        if !conn.has(flag::REFUSE_PER_IP) {
            self.shared.per_ip.release(conn.peer_key);
        }
        if self.accepts_parked && self.draining_until.is_none() {
            self.unpark_accepts();
        }
    }

    fn unpark_accepts(&mut self) {
        self.accepts_parked = false;
        for slot in 0..ACCEPTS_IN_FLIGHT {
            if !self.accepts[slot].armed {
                self.arm_accept(slot);
            }
        }
    }

    /// Rate limit for repeated warnings: one per `LOG_EVERY_TICKS`.
    fn log_allowed(&mut self) -> bool {
        if self.last_log_tick == 0 || self.now.wrapping_sub(self.last_log_tick) >= LOG_EVERY_TICKS {
            self.last_log_tick = self.now;
            return true;
        }
        false
    }

    fn begin_drain(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.now + self.ticks.shutdown);
        self.accepts_parked = false;
        for ring in 0..self.rings.len() as u8 {
            if !self.accepts.iter().any(|a| a.armed && a.ring == ring) {
                continue;
            }
            self.accept_cancels_in_flight += 1;
            let entry = opcode::AsyncCancel2::new(
                types::CancelBuilder::fd(types::Fd(self.listener.as_raw_fd())).all(),
            )
            .build()
            .user_data(Token::new(OpKind::AcceptCancel, 0, 0).pack());
            self.push(ring, &[entry]);
        }
        // Idle and request connections close now; streams and pending
        // answers close once their queue is flushed (or at the deadline).
        let mut close_now = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase == Phase::Closing {
                continue;
            }
            if conn.sendq.is_empty() {
                close_now.push(key as u32);
            } else {
                conn.set(flag::CLOSE_AFTER_SEND);
            }
        }
        for key in close_now {
            self.close_conn(key, CloseReason::Shutdown);
        }
    }

    fn finished(&self) -> bool {
        self.draining_until.is_some()
            && self.conns.is_empty()
            && self.accept_cancels_in_flight == 0
            && self.accepts.iter().all(|a| !a.armed)
    }

    fn flush_stats(&mut self) {
        self.shared.metrics.workers[self.id].flush(&mut self.stats);
    }
}

/// However the worker stops (its loop returns, an error, a panic), what its
/// connections hold node-wide goes back: its rings close their sockets as
/// they drop, but the open-connection and per-IP counts, the topics' stream
/// counts and its inbox are shared, and the other workers carry on.
impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.inboxes[self.id].close();
        for (_, conn) in self.conns.iter_mut() {
            let subs = std::mem::take(&mut conn.subs);
            if !subs.is_empty() {
                let index = &self.index;
                self.shared
                    .unsubscribe(subs.iter().map(|sub| index.name(sub.topic)));
            }
            self.shared.connections_open.fetch_sub(1, Ordering::Relaxed);
            COUNTERS.connections_open.fetch_sub(1, Ordering::Relaxed);
            if !conn.has(flag::REFUSE_PER_IP) {
                self.shared.per_ip.release(conn.peer_key);
            }
        }
        self.conns.clear();
    }
}

/// The first bytes of every stream: the response head (with `extra`
/// headers, e.g. CORS), `: connected` and the reconnection delay.
fn stream_preamble(retry_ms: u32, extra: &route::Headers) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = route::STREAM_HEADERS.to_vec();
    headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
    let mut preamble = Vec::with_capacity(200);
    http::write_stream_head(&mut preamble, 200, &headers);
    preamble.extend_from_slice(&sse::encode_comment("connected"));
    preamble.extend_from_slice(format!("retry: {retry_ms}\n\n").as_bytes());
    preamble
}

/// Build ring `r` of worker `id`: its fixed-file table and provided
/// buffers. Ring 0 is the primary (DEFER_TASKRUN, the one the thread sleeps
/// on); the others register the worker's wake-up eventfd so their
/// completions wake the thread (the primary always has a read pending on it).
fn make_ring(id: usize, r: usize, fixed_slots: u32, wake_fd: i32) -> Result<RingIo, String> {
    let ring = if r == 0 {
        let (ring, mode) =
            crate::ring::build_ring().map_err(|e| crate::ring::unavailable_message(&e))?;
        crate::debug!("worker ring", worker = id, ring_mode = format!("{mode:?}"));
        ring
    } else {
        let ring = crate::ring::build_secondary_ring()
            .map_err(|e| crate::ring::unavailable_message(&e))?;
        ring.submitter()
            .register_eventfd(wake_fd)
            .map_err(|e| format!("worker {id}: cannot register the wake-up eventfd: {e}"))?;
        ring
    };
    ring.submitter()
        .register_files_sparse(fixed_slots)
        .map_err(|e| {
            format!(
                "worker {id}: cannot register a fixed-file table of {fixed_slots} slots: {e} \
                 (the table is capped by RLIMIT_NOFILE)"
            )
        })?;
    let bufs = BufRing::new(&ring.submitter(), BUF_GROUP, BUFS_PER_RING, BUF_BYTES)
        .map_err(|e| crate::ring::unavailable_message(&e))?;
    Ok(RingIo {
        ring,
        bufs,
        conns: 0,
    })
}

/// The live connection a token names, or `None` for a stale completion
/// (its slot was freed and reused since; the generation differs).
fn live<'a>(conns: &'a mut Slab<Conn>, stale: &mut u64, token: Token) -> Option<&'a mut Conn> {
    match conns.get_mut(token.key as usize) {
        Some(c) if c.generation == token.generation => Some(c),
        _ => {
            *stale += 1;
            None
        }
    }
}

/// The IP address of an accepted peer, if it is IPv4 or IPv6.
fn peer_ip(addr: &libc::sockaddr_storage) -> Option<std::net::IpAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

/// Whether an accepted peer is on loopback (127.0.0.0/8, ::1, or a
/// v4-mapped 127.x address).
fn peer_is_loopback(addr: &libc::sockaddr_storage) -> bool {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).is_loopback()
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers_are_recognised() {
        // SAFETY: plain data.
        let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        s.ss_family = libc::AF_INET as libc::sa_family_t;
        // SAFETY: we wrote the family; the cast matches it.
        let sin =
            unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 9)).to_be();
        assert!(peer_is_loopback(&s));
        assert_eq!(peer_ip(&s), Some("127.0.0.9".parse().unwrap()));
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)).to_be();
        assert!(!peer_is_loopback(&s));
    }

    /// A worker that stops (an error out of its loop, or a panic) must
    /// give back what its connections hold node-wide, and its inbox must
    /// stop filling: nobody will ever drain it, and a full inbox refuses
    /// every publish of the node.
    #[test]
    fn a_stopped_worker_releases_its_connections_and_inbox() {
        use clap::Parser;
        let config =
            crate::config::Config::try_parse_from(["stentor", "--max-connections-per-ip", "1"])
                .unwrap();
        let capacity = crate::node::plan_capacity(2, 1000, 20_000);
        let shared = Arc::new(Shared::new(config, capacity).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let setup = WorkerSetup {
            id: 1,
            listener,
            rings: 1,
            fixed_slots: 64,
            connections_per_ring: 32,
        };
        let mut worker = Worker::new(setup, shared.clone()).unwrap();
        // A stream as `on_accept` + `start_stream` leave it.
        let topic = crate::hub::topic::Topic::parse("t", 128).unwrap();
        let peer_key = limit::ip_key("10.0.0.1".parse().unwrap());
        assert!(shared.per_ip.acquire(peer_key));
        shared.connections_open.fetch_add(1, Ordering::Relaxed);
        COUNTERS.connections_open.fetch_add(1, Ordering::Relaxed);
        let key = worker.conns.vacant_key() as u32;
        let index = &mut worker.index;
        let (_, subs) = shared.subscribe(std::slice::from_ref(&topic), &ResumePoint::Live, || {
            Box::new([index.subscribe("t", key)]) as Box<[_]>
        });
        let mut conn = Conn::new(0, 0, 1, false);
        conn.peer_key = peer_key;
        conn.subs = subs;
        conn.phase = Phase::Streaming;
        worker.conns.insert(conn);
        worker.rings[0].conns = 1;
        drop(worker);
        assert_eq!(shared.connections_open.load(Ordering::Relaxed), 0);
        assert_eq!(shared.per_ip.held(peer_key), 0);
        // Worker 0 drains its inbox; the stopped worker 1 cannot.
        let request = || crate::hub::publish::PublishRequest {
            topic: topic.clone(),
            event: sse::Event {
                data: "x".into(),
                ..Default::default()
            },
        };
        let mut drained = Vec::new();
        for _ in 0..=crate::node::INBOX_FRAMES_MAX {
            shared.publish_batch(vec![request()]).unwrap();
            shared.inboxes[0].take_into(&mut drained);
            drained.clear();
        }
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ms_to_ticks(1), 1);
        assert_eq!(ms_to_ticks(100), 1);
        assert_eq!(ms_to_ticks(101), 2);
        assert_eq!(ms_to_ticks(15_000), 150);
    }
}
