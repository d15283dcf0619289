//! One worker thread: one listener, one slab of connections, one topic
//! index, and as many rings as its share of the connections needs (each
//! ring has its own fixed-file table; see docs/design/architecture.md).
//!
//! The loop, top to bottom: flush SQEs that did not fit last turn, submit
//! (secondary rings without waiting, then the primary ring, waiting for a
//! completion); dispatch each completion on its token; then deliver the
//! inbox, close what must close and start one send per connection that has
//! frames waiting. Every SQE made in a turn goes to the kernel in the next
//! turn's enters: that is how broadcasts go out in batches.
//!
//! The `impl Worker` is split by what it handles: this file (setup, the
//! loop, submission), [`completions`] (what the kernel reports), [`requests`]
//! (plain HTTP and opening streams), [`fanout`] (inbox to send queues,
//! heartbeats, queue ages), [`close`] (closing, draining, stopping) and
//! [`ops`] (picking up a reload, spreading reconnects on a drain).

mod abort;
mod answers;
mod close;
mod completions;
mod fanout;
mod ops;
mod patterns;
mod private;
mod requests;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use crate::api::{stream_preamble, ApiConfig, Headers};
use crate::bus::{Delivery, Shared};
use crate::conn::{flag, CloseReason, Conn, Phase};
use crate::hub::index::Index;
use crate::metrics::{self, WorkerStats, COUNTERS};
use crate::ring::bufring::{BufRing, BUFS_PER_RING, BUF_BYTES};
use crate::ring::msgpool::{MsgPool, IOVECS_PER_SEND_MAX};
use crate::ring::token::{OpKind, Token};
use crate::wire::http::Limits;
use crate::wire::sse::{self, Frame};

/// Length of one coarse tick: deadlines, heartbeats and stall checks are
/// accurate to about this much.
pub const TICK_MS: u64 = 100;
/// Ticks between sweeps over all streams (heartbeats, queue ages).
pub const SWEEP_TICKS: u32 = 5;
/// Accept SQEs kept in flight per worker.
pub const ACCEPTS_IN_FLIGHT: usize = 16;
/// Pipelined requests handled in one go before the connection yields to
/// the others (the rest wait in its buffer for the next turn).
pub const REQUESTS_PER_TURN_MAX: usize = 64;
/// Answer bytes queued on a plain HTTP connection past which the worker
/// stops reading it (cancels its recv) until they drain to half: a client
/// pipelining faster than it reads is slowed by TCP, not refused.
pub const ANSWER_BYTES_PAUSE: u32 = 64 * 1024;
/// Body bytes of a refused request read and thrown away to keep the
/// connection; a larger (or chunked) body closes it after the answer.
pub const BODY_DISCARD_BYTES_MAX: usize = 64 * 1024;
/// A request buffer up to this size is never refused for the worker's
/// request-buffer budget: heads and small publishes (and `/metrics`, and
/// health checks) keep working while large uploads are turned away.
pub const REQ_BUF_SMALL_BYTES: usize = 16 * 1024;
/// How long a stopping worker waits for the kernel to finish with what its
/// in-flight operations point at before freeing it.
pub const QUIESCE_MS: u64 = 2_000;
/// Consecutive failures of `io_uring_enter` before the worker gives up.
pub const ENTER_ERRORS_MAX: u32 = 100;
/// Repeated warnings of a worker are logged at most once per this many ticks.
pub const LOG_EVERY_TICKS: u32 = 50;
/// Stream sends started per turn (one `io_uring_enter` runs them inline,
/// about 4 µs each here, so ~1 ms per chunk). Control work (answers,
/// accepts, request heads) goes ahead of each chunk, so a publisher waits
/// for at most one chunk of a broadcast, not all of it. Measured in
/// docs/measurements/performance.md (section 6): no cost in CPU per delivery.
pub const FANOUT_SENDS_PER_SUBMIT: usize = 256;
/// Measurement hook (`STENTOR_FANOUT_SENDS_PER_SUBMIT=N`): another chunk
/// size, e.g. to compare with an uncut fan-out. Unset in production.
const FANOUT_SENDS_ENV: &str = "STENTOR_FANOUT_SENDS_PER_SUBMIT";
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
    /// The CPU this worker's thread is kept on (`--pin-workers`).
    pub cpu: Option<usize>,
}

/// Start the worker on this thread: report startup success or failure on
/// `ready`, then run until shutdown.
pub fn run(setup: WorkerSetup, shared: Arc<Shared>, ready: mpsc::Sender<Result<(), String>>) {
    let id = setup.id;
    if let Some(cpu) = setup.cpu {
        // Not fatal: the worker runs wherever the scheduler puts it.
        if let Err(e) = crate::sys::pin_thread(cpu) {
            crate::warn!(
                "cannot pin worker to its CPU",
                worker = id,
                cpu = cpu,
                error = e
            );
        }
    }
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
    /// Accepts armed on this ring: each will take a slot of its table.
    accepts_armed: u32,
    /// Size of its fixed-file table.
    fixed_slots: u32,
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
    /// Other workers to wake once this turn's answers are submitted.
    wakeups: crate::bus::Wakeups,
    conns: Slab<Conn>,
    index: Index,
    /// The streams that get each topic's private events.
    private: private::PrivateSubs,
    /// Pattern subscriptions (`orders/*`), matched once per delivery.
    patterns: patterns::PatternSubs,
    /// Reused by each delivery for the streams its patterns reach.
    pattern_hits: Vec<u32>,
    generation: u32,
    connections_per_ring: u32,
    limits: Limits,
    api: ApiConfig,
    /// `--proxy-protocol`: trusted peers start with a PROXY header.
    proxy_protocol: bool,
    ticks: Ticks,
    queue_bytes_max: u32,
    /// Capacity of every request buffer of this worker, in bytes, and its
    /// bound (`--request-buffers-bytes-max`).
    req_buf_bytes: usize,
    req_buf_bytes_max: usize,
    /// SQEs that did not fit their ring's SQ, in order, one group per push
    /// (a hard-linked chain stays whole); flushed first on the next turn.
    backlog: Vec<std::collections::VecDeque<Vec<squeue::Entry>>>,
    /// Test hook (`STENTOR_FAULT_SQ_FULL_EVERY=N`): every Nth push finds the
    /// SQ "full", so the backlog path runs under real traffic.
    fault_sq_full_every: u64,
    pushes: u64,
    started: Instant,
    now: u32,
    next_sweep: u32,
    /// (deadline tick, slab key) of connections reading a request or idle
    /// between keep-alive requests. Streams have none, so idle subscribers
    /// cost nothing here.
    deadlines: BTreeSet<(u32, u32)>,
    /// Connections with control sends to start (answers, stream heads):
    /// all of them, first, at the end of the turn.
    dirty: Vec<u32>,
    /// Streams with frames to send, oldest first, started at most
    /// `fanout_sends_per_submit` per turn (bounded by the connections:
    /// each is queued once, while it is marked DIRTY).
    fanout_ready: std::collections::VecDeque<u32>,
    fanout_sends_per_submit: usize,
    /// Connections with requests still buffered after their turn's share.
    more_requests: Vec<u32>,
    to_close: Vec<(u32, CloseReason)>,
    inbox_batch: Vec<Delivery>,
    /// Fleet mode: streams whose resume replay is being read from Redis,
    /// by slab key (at most one per stream; empty otherwise).
    held: std::collections::HashMap<u32, crate::conn::Held>,
    cqes: Vec<(u8, cqueue::Entry)>,
    heartbeat: Frame,
    stream_preamble: Bytes,
    draining_until: Option<u32>,
    /// The last configuration reload this worker applied (`ops`).
    reload_generation: u64,
    /// `--retry-ms` and `--reconnect-spread-ms`, live on reload.
    retry_ms: u32,
    reconnect_spread_ms: u32,
    /// Streams opened while `--access-log` was on: peer and start, for
    /// their close line. Empty otherwise; at most one entry per connection.
    access_streams: std::collections::HashMap<u32, (std::net::IpAddr, Instant)>,
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
        let rings_len = rings.len();
        let config = &shared.config;
        let heartbeat = sse::encode_comment("");
        let preamble = stream_preamble(config.retry_ms, &Headers::new());
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
            wakeups: crate::bus::Wakeups::default(),
            conns: Slab::new(),
            index: Index::new(),
            private: private::PrivateSubs::default(),
            patterns: patterns::PatternSubs::default(),
            pattern_hits: Vec::new(),
            generation: 0,
            connections_per_ring: setup.connections_per_ring,
            limits: config.http_limits(),
            api: ApiConfig::from_config(config),
            proxy_protocol: config.proxy_protocol,
            ticks: Ticks {
                request: ms_to_ticks(config.request_timeout_ms),
                idle: ms_to_ticks(config.idle_timeout_ms),
                heartbeat: ms_to_ticks(config.heartbeat_ms),
                queue_age: ms_to_ticks(config.queue_age_ms_max),
                shutdown: (u64::from(config.shutdown_ms) / TICK_MS) as u32,
            },
            queue_bytes_max: config.queue_bytes_max,
            req_buf_bytes: 0,
            req_buf_bytes_max: usize::try_from(config.request_buffers_bytes_max)
                .unwrap_or(usize::MAX),
            backlog: (0..rings_len).map(|_| Default::default()).collect(),
            fault_sq_full_every: std::env::var("STENTOR_FAULT_SQ_FULL_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            pushes: 0,
            started: Instant::now(),
            now: 1,
            next_sweep: 1,
            deadlines: BTreeSet::new(),
            dirty: Vec::new(),
            fanout_ready: Default::default(),
            fanout_sends_per_submit: std::env::var(FANOUT_SENDS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or(FANOUT_SENDS_PER_SUBMIT),
            more_requests: Vec::new(),
            to_close: Vec::new(),
            inbox_batch: Vec::new(),
            held: std::collections::HashMap::new(),
            cqes: Vec::with_capacity(1024),
            heartbeat,
            stream_preamble: Bytes::from(preamble),
            draining_until: None,
            reload_generation: 0,
            retry_ms: config.retry_ms,
            reconnect_spread_ms: config.reconnect_spread_ms,
            access_streams: std::collections::HashMap::new(),
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
            if self.turn(&mut enter_errors, &mut backlog)? {
                crate::debug!("worker stopped", worker = self.id);
                return Ok(());
            }
        }
    }

    /// One turn of the loop: submit, wait (unless work is pending), handle
    /// what completed, then the end-of-batch work. True once the worker
    /// has finished draining.
    fn turn(&mut self, enter_errors: &mut u32, backlog: &mut bool) -> Result<bool, String> {
        {
            self.flush_backlog();
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
            let held = self.backlog.iter().any(|b| !b.is_empty());
            let want = usize::from(
                !*backlog && !held && self.more_requests.is_empty() && self.fanout_ready.is_empty(),
            );
            match crate::ring::submit_and_reap(&mut self.rings[0].ring, want) {
                Ok(_) => *enter_errors = 0,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                    ) => {}
                Err(e) => {
                    *enter_errors += 1;
                    crate::error!("io_uring_enter failed", worker = self.id, error = e);
                    if *enter_errors >= ENTER_ERRORS_MAX {
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
            *backlog = self
                .rings
                .iter_mut()
                .any(|r| r.ring.submission().cq_overflow());
            self.cqes = batch;
            self.after_batch();
            self.stats.busy_ns += woke.elapsed().as_nanos() as u64;
            Ok(self.finished())
        }
    }

    // ---- submission ----------------------------------------------------

    /// Queue one group of SQEs (a hard-linked chain stays whole) on `ring`.
    /// When its SQ is full, the SQ is submitted and, if still full, the
    /// group waits in the ring's backlog for the next turn: an SQE is never
    /// dropped, and order is kept (nothing jumps the backlog).
    pub(super) fn push(&mut self, ring: u8, entries: &[squeue::Entry]) {
        self.stats.ring_submissions += entries.len() as u64;
        self.pushes += 1;
        let r = usize::from(ring);
        let fault = self.fault_sq_full_every > 0 && self.pushes % self.fault_sq_full_every == 0;
        let ring = &mut self.rings[r].ring;
        let queued = !fault
            && self.backlog[r].is_empty()
            && (try_push(ring, entries) || (ring.submit().is_ok() && try_push(ring, entries)));
        if !queued {
            self.backlog[r].push_back(entries.to_vec());
        }
    }

    /// Submit what every ring holds now, without waiting (what completes
    /// is reaped on the next turn). Errors are left to the loop's enter.
    pub(super) fn submit_now(&mut self) {
        for r in self.rings.iter_mut() {
            if !r.ring.submission().is_empty() {
                let _ = r.ring.submit();
            }
        }
    }

    /// Move backlogged SQEs into their rings, oldest first, submitting a
    /// full SQ as often as needed; what still does not fit waits again.
    pub(super) fn flush_backlog(&mut self) {
        for (r, backlog) in self.backlog.iter_mut().enumerate() {
            let ring = &mut self.rings[r].ring;
            while let Some(group) = backlog.front() {
                if try_push(ring, group) {
                    backlog.pop_front();
                    continue;
                }
                if ring.submit().is_err() || !try_push(ring, group) {
                    break; // the kernel is busy: next turn
                }
                backlog.pop_front();
            }
        }
    }

    /// Arm accept `slot` on the ring with the fewest connections, so the
    /// worker's rings fill evenly, and only on a ring whose table has a
    /// free slot for it and for every accept already armed there: an
    /// accept that finds the table full fails with ENFILE after the kernel
    /// took the connection, which drops that client unanswered. With no
    /// such ring the accept is parked (the client waits in the listen
    /// backlog) until a connection is freed.
    pub(super) fn arm_accept(&mut self, slot: usize) {
        let ring = self
            .rings
            .iter()
            .enumerate()
            .filter(|(_, r)| r.conns + r.accepts_armed < r.fixed_slots)
            .min_by_key(|(_, r)| r.conns)
            .map(|(i, _)| i as u8);
        let Some(ring) = ring else {
            self.accepts_parked = true;
            return;
        };
        self.rings[usize::from(ring)].accepts_armed += 1;
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

    pub(super) fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Token::new(OpKind::Wake, 0, 0).pack());
        self.push(0, &[entry]);
    }

    pub(super) fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick_ts)
            .build()
            .user_data(Token::new(OpKind::Tick, 0, 0).pack());
        self.push(0, &[entry]);
    }

    pub(super) fn arm_recv(&mut self, key: u32) {
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
    pub(super) fn start_send(&mut self, key: u32) {
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

    pub(super) fn flush_stats(&mut self) {
        self.shared.metrics.workers[self.id].flush(&mut self.stats);
    }
}

/// Push `entries` onto `ring`'s SQ if they all fit.
fn try_push(ring: &mut IoUring, entries: &[squeue::Entry]) -> bool {
    // SAFETY: every entry points only at memory that outlives its
    // completion: frames held in send queues until the send completes,
    // msghdrs in the pool, buffers and addresses owned by the worker, which
    // waits for in-flight operations before freeing them (`quiesce`).
    unsafe { ring.submission().push_multiple(entries).is_ok() }
}

/// Build ring `r` of worker `id`: its fixed-file table and provided
/// buffers. Ring 0 is the primary (DEFER_TASKRUN, the one the thread sleeps
/// on); the others register the worker's wake-up eventfd so their
/// completions wake the thread (the primary always has a read pending on it).
fn make_ring(id: usize, r: usize, fixed_slots: u32, wake_fd: i32) -> Result<RingIo, String> {
    // Every slot of the table may complete in the same turn.
    let (sq_entries, cq_entries) = crate::ring::ring_entries(fixed_slots);
    let ring = if r == 0 {
        let (ring, mode) = crate::ring::with_smaller_cq_on_enomem(id, cq_entries, |cq| {
            crate::ring::build_ring(sq_entries, cq)
        })
        .map_err(|e| crate::ring::unavailable_message(&e))?;
        crate::debug!("worker ring", worker = id, ring_mode = format!("{mode:?}"));
        ring
    } else {
        let ring = crate::ring::with_smaller_cq_on_enomem(id, cq_entries, |cq| {
            crate::ring::build_secondary_ring(sq_entries, cq)
        })
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
        accepts_armed: 0,
        fixed_slots,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ReqState;
    use crate::hub::id::ResumePoint;
    use crate::limit;

    /// A worker `id` of a node of `workers`, configured by `args`, on a
    /// listener of its own (one ring, 64 slots, unpinned); the listener's
    /// address for a test that connects.
    fn test_worker(
        args: &[&str],
        workers: usize,
        id: usize,
    ) -> (Worker, Arc<Shared>, std::net::SocketAddr) {
        use clap::Parser;
        let config = crate::config::Config::try_parse_from(
            std::iter::once("stentor").chain(args.iter().copied()),
        )
        .unwrap();
        let shared = Arc::new(Shared::new(config, workers, 1000).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let setup = WorkerSetup {
            id,
            listener,
            rings: 1,
            fixed_slots: 64,
            connections_per_ring: 32,
            cpu: None,
        };
        let worker = Worker::new(setup, shared.clone()).unwrap();
        (worker, shared, addr)
    }

    /// A worker that stops (an error out of its loop, or a panic) must
    /// give back what its connections hold node-wide, and its inbox must
    /// stop filling: nobody will ever drain it, and a full inbox refuses
    /// every publish of the node.
    #[test]
    fn a_stopped_worker_releases_its_connections_and_inbox() {
        let (mut worker, shared, _) = test_worker(&["--max-connections-per-ip", "1"], 2, 1);
        // A stream as `on_accept` + `start_stream` leave it.
        let topic = crate::hub::topic::Topic::parse("t", 128).unwrap();
        let peer_key = limit::ip_key("10.0.0.1".parse().unwrap());
        assert_eq!(shared.connection_opened(peer_key), (true, true));
        let key = worker.conns.vacant_key() as u32;
        let index = &mut worker.index;
        let (_, subs) = shared.subscribe(std::slice::from_ref(&topic), &ResumePoint::Live, || {
            Box::new([index.subscribe("t", key)]) as Box<[_]>
        });
        let mut conn = Conn::new(0, 0, 1, ReqState::new([10, 0, 0, 1].into(), false));
        conn.peer_key = peer_key;
        conn.subs = subs;
        conn.start_streaming();
        worker.conns.insert(conn);
        worker.rings[0].conns = 1;
        // Gauges as its sweep leaves them.
        worker.conns[key as usize]
            .sendq
            .push(sse::encode_comment("x"), 1);
        worker.sweep();
        let gauges = |shared: &Shared| {
            let m = &shared.metrics.workers[1];
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            (
                load(&m.streams),
                load(&m.queue_bytes),
                m.topics_by_subscribers.iter().map(load).sum::<u64>(),
            )
        };
        let (streams, queue_bytes, topics) = gauges(&shared);
        assert_eq!((streams, topics), (1, 1));
        assert!(queue_bytes > 0);
        drop(worker);
        // A stopped worker reports nothing open, not its last sweep.
        assert_eq!(gauges(&shared), (0, 0, 0));
        assert_eq!(
            shared
                .connections_open
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(shared.per_ip.held(peer_key), 0);
        // Worker 0 drains its inbox; the stopped worker 1 cannot.
        let request = || crate::hub::publish::PublishRequest {
            topic: topic.clone(),
            event: sse::Event {
                data: "x".into(),
                ..Default::default()
            },
            private: false,
        };
        let mut drained = Vec::new();
        for _ in 0..=crate::bus::INBOX_FRAMES_MAX {
            shared.publish_batch(vec![request()]).unwrap();
            shared.inboxes[0].take_into(&mut drained);
            drained.clear();
        }
    }

    /// Stopping cancels and waits for every op in flight (an accept, a
    /// stream's multishot recv, a send stuck on a full socket buffer)
    /// before the memory they point at is freed.
    #[test]
    fn a_stopping_worker_waits_for_its_ops_in_flight() {
        use std::io::Write;
        let (mut worker, _shared, addr) = test_worker(&["--queue-bytes-max", "4194304"], 1, 0);
        let client = std::net::TcpStream::connect(addr).unwrap();
        // Small receive window, never read: the send below stays in flight.
        crate::sys::setsockopt_int(client.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096)
            .unwrap();
        (&client)
            .write_all(b"GET /events?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (mut errors, mut backlog) = (0, false);
        let started = Instant::now();
        while worker.index.subscribers("t").is_empty() {
            assert!(started.elapsed().as_secs() < 5, "stream never opened");
            worker.turn(&mut errors, &mut backlog).unwrap();
        }
        let key = worker.index.subscribers("t")[0];
        let frame = sse::encode_comment(&"x".repeat(400 << 10));
        // Until the socket buffers are full and a send waits in the kernel.
        for _ in 0..40 {
            let conn = &worker.conns[key as usize];
            if conn.sendq.is_sending() && conn.sendq.bytes_queued() > 0 {
                break;
            }
            worker.deliver(u64::MAX, "t", false, &frame);
            worker.turn(&mut errors, &mut backlog).unwrap();
            worker.turn(&mut errors, &mut backlog).unwrap();
        }
        let conn = &worker.conns[key as usize];
        assert!(
            conn.sendq.is_sending(),
            "the send should be stuck in flight: {} queued, {} ops",
            conn.sendq.bytes_queued(),
            conn.ops_in_flight
        );
        assert!(conn.has(flag::RECV_ARMED));
        assert!(worker.accepts.iter().any(|a| a.armed));
        assert_eq!(worker.quiesce(), 0, "ops left in flight");
        drop(worker);
        drop(client);
    }

    /// Defect: within one inbox drain, a subscriber past its budget kept
    /// getting frames (and a close entry per frame). Now it is marked on the
    /// first overflow, gets nothing more, and is closed once; the budget
    /// counts queue entries as well as bytes.
    #[test]
    fn fan_out_stops_at_the_first_overflow() {
        let (mut worker, shared, _) = test_worker(&["--queue-bytes-max", "4096"], 1, 0);
        let topic = crate::hub::topic::Topic::parse("t", 128).unwrap();
        let open = |worker: &mut Worker| {
            let key = worker.conns.vacant_key() as u32;
            let index = &mut worker.index;
            let (_, subs) =
                shared.subscribe(std::slice::from_ref(&topic), &ResumePoint::Live, || {
                    Box::new([index.subscribe("t", key)]) as Box<[_]>
                });
            let mut conn = Conn::new(0, 0, 1, ReqState::new([10, 0, 0, 1].into(), false));
            conn.subs = subs;
            conn.start_streaming();
            worker.conns.insert(conn);
            key
        };
        let big = open(&mut worker);
        let frame = Frame::from(vec![b'x'; 1000]);
        for id in 1..=100 {
            worker.deliver(id, "t", false, &frame);
        }
        let queued = worker.conns[big as usize].sendq.frames_len();
        assert_eq!(
            queued, 4,
            "3 frames fit 4096 B with their entries, the 4th overflows"
        );
        assert_eq!(worker.to_close, vec![(big, CloseReason::SlowQueueBytes)]);
        // Many tiny frames: the entries are what costs.
        worker.to_close.clear();
        let tiny = open(&mut worker);
        let one = Frame::from(vec![b'y'; 1]);
        for id in 101..=10_000 {
            worker.deliver(id, "t", false, &one);
        }
        let per_entry = crate::ring::sendq::QUEUE_ENTRY_BYTES as usize;
        let queued = worker.conns[tiny as usize].sendq.frames_len();
        assert!(
            queued <= 4096 / per_entry + 1,
            "{queued} tiny frames queued"
        );
        assert_eq!(worker.to_close, vec![(tiny, CloseReason::SlowQueueBytes)]);
        worker.conns.clear();
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ms_to_ticks(1), 1);
        assert_eq!(ms_to_ticks(100), 1);
        assert_eq!(ms_to_ticks(101), 2);
        assert_eq!(ms_to_ticks(15_000), 150);
    }
}
