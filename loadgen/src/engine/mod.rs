//! Subscriber engine: one thread, one io_uring, one fixed-file table holding
//! this thread's share of the subscribers as direct descriptors.
//!
//! Why direct descriptors: the process may hold only 20000 descriptors, but
//! each ring's fixed table takes up to RLIMIT_NOFILE entries of its own. A
//! socket is created normally, bound to its source address, installed in the
//! table (`register_files_update`) and its ordinary fd closed at once, so the
//! process never holds more than one ordinary socket fd per thread.
//!
//! Each subscriber owns fixed slot == its local index for life; a slot is
//! reused (on reconnect) only after its Close completed, and each connection
//! attempt bumps a generation carried in user_data, so a late completion can
//! never touch the next attempt. At most one I/O op per subscriber is in
//! flight (connect, then send, then recv or poll), plus cancel/close.

pub(crate) mod busy;
mod catchup;
mod lifecycle;
mod owed;
pub(crate) mod ports;
mod slow;
mod stages;
mod sub;
pub(crate) mod sys;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use io_uring::types::{self, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use stentor::ring::token::{pack_raw, unpack_raw, GENERATION_MAX};

use crate::cli::{LatencyAt, RunConfig, SlowMode};
use crate::shared::{Shared, NOT_STARTED};
use crate::stats::Stats;
use crate::stream::{Clock, Step, StreamReader};
use ports::PortCursor;
use stentor::ring::bufring::BufRing;
pub use stentor::sys::machine_jiffies;
use sub::{State, Sub};
use sys::open_socket;
pub use sys::{errno_name, process_cpu_s, thread_cpu_s};

/// Submission queue entries per ring.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries per ring: a fan-out of one event to every local
/// subscriber completes at once.
const CQ_ENTRIES: u32 = 32_768;
/// Provided read buffers per ring, and their size.
const READ_BUFS: u16 = 1024;
const READ_BUF_BYTES: u32 = 4096;
const BUF_GROUP: u16 = 1;
/// Read buffer of a slow subscriber (its recvs are single-shot, sized by its credit).
const SLOW_BUF_BYTES: usize = 4096;
/// Housekeeping period: deadlines, trickle credit, progress.
const TICK_NS: u64 = 100_000_000;
/// Longest sleep in the ring wait, so flags are seen promptly.
const WAIT_NS_MAX: u64 = 20_000_000;
/// Fresh source pairs tried when connect() says a pair's 4-tuple is still
/// taken (another process's connection: ours are skipped up front).
const PAIR_RETRIES_MAX: u16 = 64;
/// Reconnect attempts per subscriber over a run.
const RECONNECTS_MAX: u16 = 1000;
/// Reconnect delay when the stream gave no `retry:`, and the cap on what it gave.
const RETRY_MS_DEFAULT: u64 = 1000;
const RETRY_MS_MAX: u64 = 5000;

// Op kinds in user_data (packed by stentor's token module).
const OP_CONNECT: u8 = 1;
const OP_SEND: u8 = 2;
const OP_RECV_MULTI: u8 = 3;
const OP_RECV_ONE: u8 = 4;
const OP_POLL: u8 = 5;
const OP_CLOSE: u8 = 6;
const OP_CANCEL: u8 = 7;

/// Second of the run (since the epoch) `now_ns` falls in.
fn second_of(now_ns: u64) -> u32 {
    (now_ns / 1_000_000_000) as u32
}

/// An op's user_data: its kind, the subscriber's attempt generation (a
/// late completion of an earlier attempt is recognised and dropped) and
/// the subscriber's slot.
fn user_data(kind: u8, gen: u32, idx: u32) -> u64 {
    pack_raw(kind, gen, idx)
}

fn split_user_data(ud: u64) -> (u8, u32, u32) {
    unpack_raw(ud)
}

/// Start one subscriber thread; it returns its statistics when `stop` is set.
pub fn spawn(
    thread_idx: usize,
    cfg: Arc<RunConfig>,
    shared: Arc<Shared>,
) -> io::Result<std::thread::JoinHandle<Result<Stats, String>>> {
    std::thread::Builder::new()
        .name(format!("sub-{thread_idx}"))
        .spawn(move || {
            // The ring is created on the thread that submits (SINGLE_ISSUER).
            let mut engine =
                Engine::new(thread_idx, cfg, shared).map_err(|e| format!("ring setup: {e}"))?;
            engine.run().map_err(|e| format!("ring: {e}"))?;
            Ok(engine.finish())
        })
}

/// The server's ring setup (DEFER_TASKRUN where the kernel has it, with its
/// fallbacks), with the loadgen's queue sizes.
fn build_ring() -> io::Result<IoUring> {
    stentor::ring::build_ring(SQ_ENTRIES, CQ_ENTRIES).map(|(ring, _)| ring)
}

struct Engine {
    // Field order matters: the ring is dropped (closing every direct
    // descriptor) before the buffer memory it points into is freed.
    ring: IoUring,
    bufs: BufRing,
    /// What a multishot recvmsg reads into each buffer besides the
    /// payload: no name, one receive-timestamp control message
    /// (`--latency-at kernel`).
    msghdr: Box<libc::msghdr>,
    cfg: Arc<RunConfig>,
    shared: Arc<Shared>,
    thread_idx: usize,
    subs: Vec<Sub>,
    /// Per node (`--url` order), the address connects go to. Never resized
    /// after setup: in-flight Connect SQEs point into it.
    /// Each node's address as connect() takes it.
    servers: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    /// Explicit source pairs, when source addresses are given.
    ports: Option<PortCursor>,
    stats: Stats,
    /// Per node: what happens to its subscribers (merged into the total at the end).
    nodes: Vec<Stats>,
    backlog: VecDeque<squeue::Entry>,
    cqes: Vec<(u64, i32, u32)>,
    items: Vec<stentor::wire::sse::Item>,
    /// Next subscriber of the ramp, and when the ramp began. Subscribers
    /// `..ramp_before` (local) connect before publishing; the rest are
    /// opened by stages' ramps, in order.
    ramp_next: usize,
    ramp_before: usize,
    ramp_start_ns: u64,
    ramp_interval_ns: f64,
    reconnects: BinaryHeap<Reverse<(u64, u32)>>,
    /// Subscribers in connect/send/head (deadline sweep only when > 0).
    pending: usize,
    next_tick_ns: u64,
    verdict_started: bool,
    catchup_started: bool,
    /// Unique deliveries not yet added to the shared counters.
    unflushed_live: u64,
    unflushed_all: u64,
    /// Scenario stage whose start this thread has acted on.
    stage_entered: Option<usize>,
    /// Subscribers owed a churn disconnect (fractional), and where to look next.
    churn_credit: f64,
    churn_cursor: usize,
    /// The stage whose slow subscribers are slow now.
    slow_active: Option<usize>,
    /// Some subscriber may trickle (credit is handed out every tick).
    trickles: bool,
}

impl Engine {
    fn new(thread_idx: usize, cfg: Arc<RunConfig>, shared: Arc<Shared>) -> io::Result<Self> {
        let ring = build_ring()?;
        let globals: Vec<usize> = (thread_idx..cfg.subscribers).step_by(cfg.threads).collect();
        let slots = globals.len().max(1) as u32;
        ring.submitter().register_files_sparse(slots)?;
        let bufs = BufRing::new(&ring.submitter(), BUF_GROUP, READ_BUFS, READ_BUF_BYTES)?;
        let subs = globals
            .iter()
            .map(|&g| {
                let (topic, node) = (g % cfg.topics.len(), cfg.node_of(g));
                let channel = cfg.channel(node, topic);
                let ramp = cfg.ramp.opens(g).map(|(stage, at)| (stage as u16, at));
                Sub::new(
                    topic as u32,
                    node as u16,
                    channel as u32,
                    cfg.is_slow(g),
                    cfg.slow_stages(g),
                    ramp,
                )
            })
            .collect();
        let ramp_before = globals.iter().filter(|&&g| g < cfg.ramp.before).count();
        let trickles = matches!(cfg.slow_mode, SlowMode::Trickle { .. }) && cfg.slow_fraction > 0.0
            || cfg
                .schedule
                .stages
                .iter()
                .any(|s| matches!(s.slow_mode, Some(SlowMode::Trickle { .. })));
        let servers = cfg
            .nodes
            .iter()
            .map(|n| stentor::sys::sockaddr_of(n.server))
            .collect();
        let ports = (!cfg.source_ips.is_empty()).then(|| {
            PortCursor::new(
                cfg.source_ips.clone(),
                thread_idx,
                cfg.threads,
                cfg.busy_pairs.clone(),
            )
            .starting_at(std::process::id() as u64)
        });
        let now = shared.now_ns();
        let ramp_interval_ns = 1e9 * cfg.threads as f64 / cfg.connect_rate;
        // SAFETY: an all-zero msghdr is valid (no name, no iovec).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_controllen = sys::TIMESTAMP_CONTROL_BYTES as _;
        Ok(Self {
            ring,
            bufs,
            msghdr,
            thread_idx,
            subs,
            servers,
            nodes: (0..cfg.nodes.len())
                .map(|_| {
                    let ends = cfg.schedule.stages.iter().map(|s| s.end_ns).collect();
                    Stats::default().with_stages(ends)
                })
                .collect(),
            stage_entered: None,
            churn_credit: 0.0,
            churn_cursor: thread_idx,
            slow_active: None,
            trickles,
            ramp_before,
            ports,
            stats: Stats::default(),
            backlog: VecDeque::new(),
            cqes: Vec::with_capacity(CQ_ENTRIES as usize),
            items: Vec::new(),
            ramp_next: 0,
            ramp_start_ns: now,
            ramp_interval_ns,
            reconnects: BinaryHeap::new(),
            pending: 0,
            next_tick_ns: now,
            verdict_started: false,
            catchup_started: false,
            unflushed_live: 0,
            unflushed_all: 0,
            cfg,
            shared,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            let now = self.shared.now_ns();
            if self.shared.flag(&self.shared.stop) {
                return Ok(());
            }
            self.ramp(now);
            self.start_due_reconnects(now);
            if now >= self.next_tick_ns {
                self.tick(now);
                self.next_tick_ns = now + TICK_NS;
            }
            if !self.verdict_started && self.shared.flag(&self.shared.verdict) {
                self.start_verdict();
            }
            if !self.catchup_started && self.shared.flag(&self.shared.catchup) {
                self.start_catchup(now);
            }
            self.wait(now)?;
            self.reap();
            self.flush_counters();
        }
    }

    /// Submit what is queued and wait for a completion or the next due time.
    fn wait(&mut self, now: u64) -> io::Result<()> {
        while let Some(e) = self.backlog.pop_front() {
            // SAFETY: every entry points at memory owned by a Sub or the
            // engine that lives until its completion.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push_front(e);
                break;
            }
        }
        let mut due = self.next_tick_ns.min(now + WAIT_NS_MAX);
        if let Some(t) = self.next_open_due() {
            due = due.min(t);
        }
        if let Some(Reverse((t, _))) = self.reconnects.peek() {
            due = due.min(*t);
        }
        let wait_ns = if self.backlog.is_empty() {
            due.saturating_sub(now)
        } else {
            0
        };
        let ts = Timespec::from(std::time::Duration::from_nanos(wait_ns.max(1)));
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn push(&mut self, e: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(e);
            return;
        }
        // SAFETY: see `wait`.
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            self.backlog.push_back(e);
        }
    }

    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            self.on_cqe(ud, res, flags);
        }
        self.cqes = cqes;
    }

    fn ramp_due(&self, n: usize) -> u64 {
        self.ramp_start_ns + (n as f64 * self.ramp_interval_ns) as u64
    }

    /// When the next subscriber is due to open (`None`: none is waiting).
    fn next_open_due(&self) -> Option<u64> {
        let n = self.ramp_next;
        if n < self.ramp_before {
            return (!self.shared.flag(&self.shared.ramp_over)).then(|| self.ramp_due(n));
        }
        let (_, at) = self.subs.get(n)?.ramp?;
        let start = self.shared.publish_start_ns.load(Ordering::Acquire);
        (start != NOT_STARTED).then(|| start + at)
    }

    fn ramp(&mut self, now: u64) {
        if self.shared.flag(&self.shared.ramp_over) {
            // Never started: counted once, as a connect error of its own kind.
            while self.ramp_next < self.ramp_before {
                self.never_started(self.ramp_next, now);
                self.ramp_next += 1;
            }
        }
        while self.ramp_next < self.ramp_before && self.ramp_due(self.ramp_next) <= now {
            let idx = self.ramp_next;
            self.ramp_next += 1;
            self.start_connect(idx, now);
        }
        if self.ramp_next < self.ramp_before || self.ramp_next >= self.subs.len() {
            return;
        }
        // Stages' ramps: due from the start of publishing; what publishing
        // ended (or a stop cut short) before it was due never starts.
        if self.shared.flag(&self.shared.publish_done) || self.shared.flag(&self.shared.stop) {
            while self.ramp_next < self.subs.len() {
                self.never_started(self.ramp_next, now);
                self.ramp_next += 1;
            }
            return;
        }
        while self.next_open_due().is_some_and(|t| t <= now) {
            let idx = self.ramp_next;
            self.ramp_next += 1;
            if let Some((stage, _)) = self.subs[idx].ramp {
                self.nodes[self.subs[idx].node as usize].stage_ramped[stage as usize] += 1;
            }
            self.start_connect(idx, now);
        }
    }

    fn never_started(&mut self, idx: usize, now: u64) {
        self.connect_error(idx, "not_started", now);
        self.resolve(idx);
    }

    fn start_due_reconnects(&mut self, now: u64) {
        while let Some(&Reverse((t, idx))) = self.reconnects.peek() {
            if t > now {
                break;
            }
            self.reconnects.pop();
            self.subs[idx as usize].reconnect_queued = false;
            if self.shared.flag(&self.shared.verdict) && !self.shared.flag(&self.shared.catchup) {
                // Held back while the final read runs; the catch-up
                // reconnects it if it still misses events.
                continue;
            }
            self.stats.reconnects += 1;
            self.start_connect(idx as usize, now);
        }
    }

    fn start_connect(&mut self, idx: usize, now: u64) {
        // Every connection of a slow subscriber asks for the small receive
        // buffer, so the server sees it fall behind whenever it is slow.
        let slow = self.subs[idx].ledger.slow;
        let mut opened = Err("no_source_port".to_string());
        // A port another program holds (any socket bound without
        // SO_REUSEADDR: every kernel-chosen client port of this host, and
        // a busy host can fill most of ip_local_port_range) fails bind at
        // once; the cursor moves past it for good, so the walk may cover
        // the whole cycle and still costs each port at most once per lap.
        let tries = self.ports.as_ref().map_or(1, |p| p.capacity() as usize);
        let node = self.subs[idx].node as usize;
        let v6 = self.cfg.nodes[node].server.is_ipv6();
        for _ in 0..tries {
            let source = match self.ports.as_mut().map(|p| p.next_pair()) {
                Some(None) => break,
                Some(Some((ip, port))) => Some(SocketAddr::new(ip, port)),
                None => None,
            };
            let timestamps = self.cfg.latency_at == LatencyAt::Kernel;
            opened = open_socket(v6, source, slow, timestamps);
            match &opened {
                Err(k) if k == "bind_eaddrinuse" && source.is_some() => continue,
                _ => break,
            }
        }
        let fd = match opened {
            Ok(fd) => fd,
            Err(kind) => {
                self.connect_error(idx, &kind, now);
                self.attempt_lost(idx);
                return;
            }
        };
        let installed = self
            .ring
            .submitter()
            .register_files_update(idx as u32, &[fd]);
        // SAFETY: fd is ours; the table holds its own reference now.
        unsafe { libc::close(fd) };
        if let Err(e) = installed {
            let kind = format!("install_{}", errno_name(e.raw_os_error().unwrap_or(0)));
            self.connect_error(idx, &kind, now);
            self.attempt_lost(idx);
            return;
        }
        let s = &mut self.subs[idx];
        s.begin_attempt(now, self.cfg.slow_mode);
        let ud = user_data(OP_CONNECT, s.gen, idx as u32);
        s.op = Some(ud);
        s.state = State::Connecting;
        self.pending += 1;
        let (sa, len) = &self.servers[node];
        let addr = sa as *const libc::sockaddr_storage as *const libc::sockaddr;
        let e = opcode::Connect::new(Fixed(idx as u32), addr, *len)
            .build()
            .user_data(ud);
        self.push(e);
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32) {
        let (kind, gen, idx) = split_user_data(ud);
        let idx = idx as usize;
        if kind == OP_CANCEL {
            return;
        }
        if idx >= self.subs.len() {
            debug_assert!(false, "completion for unknown subscriber {idx}");
            return;
        }
        if kind == OP_CLOSE {
            self.on_closed(idx);
            return;
        }
        let s = &mut self.subs[idx];
        if s.gen & GENERATION_MAX != gen {
            // Cannot happen by construction (one attempt at a time per slot),
            // but a stale buffer must still go back to the kernel.
            debug_assert!(false, "stale completion kind {kind} for {idx}");
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.give_back(bid);
            }
            return;
        }
        if !cqueue::more(flags) && s.op == Some(ud) {
            s.op = None;
        }
        let now = self.shared.now_ns();
        match kind {
            OP_CONNECT => self.on_connected_tcp(idx, res, now),
            OP_SEND => self.on_sent(idx, res, now),
            OP_RECV_MULTI => {
                let mut res = res;
                if let Some(bid) = cqueue::buffer_select(flags) {
                    let mut data = if res > 0 {
                        self.bufs.get(bid, res as usize)
                    } else {
                        &[][..]
                    };
                    let mut at = now;
                    if self.cfg.latency_at == LatencyAt::Kernel && res > 0 {
                        // A recvmsg buffer: header, control, then payload
                        // (none: the peer closed). Latency ends at the
                        // kernel's receive time of the last segment read,
                        // so earlier events in it count late, never early.
                        match types::RecvMsgOut::parse(data, &self.msghdr) {
                            Ok(out) => {
                                at = sys::arrival_ns(
                                    now,
                                    sys::receive_timestamp_ns(out.control_data()),
                                );
                                let payload = out.payload_data();
                                let start = payload.as_ptr() as usize - data.as_ptr() as usize;
                                let len = payload.len();
                                data = &data[start..start + len];
                                res = len as i32;
                            }
                            Err(()) => res = -libc::EPROTO,
                        }
                    }
                    if res > 0 {
                        let node = self.subs[idx].node as usize;
                        // No copy: split borrows of the engine's fields.
                        let step = feed(
                            &mut self.subs[idx],
                            data,
                            at,
                            &self.shared,
                            &mut self.nodes[node],
                            &mut self.items,
                            &self.cfg.seq_source,
                        );
                        self.bufs.give_back(bid);
                        self.count_new(idx, step.1);
                        self.after_feed(idx, step.0, now);
                    } else {
                        self.bufs.give_back(bid);
                    }
                }
                self.after_read(idx, res, flags, now, OP_RECV_MULTI);
            }
            OP_RECV_ONE => {
                if res > 0 {
                    // The verdict read parses too, as a client would: a
                    // drop it finds is resumed from the last id it parsed.
                    let node = self.subs[idx].node as usize;
                    let s = &mut self.subs[idx];
                    if let Some(buf) = s.slow_buf.take() {
                        let n = (res as usize).min(buf.len());
                        s.credit = s.credit.saturating_sub(n as u64);
                        let step = feed(
                            s,
                            &buf[..n],
                            now,
                            &self.shared,
                            &mut self.nodes[node],
                            &mut self.items,
                            &self.cfg.seq_source,
                        );
                        self.subs[idx].slow_buf = Some(buf);
                        self.count_new(idx, step.1);
                        self.after_feed(idx, step.0, now);
                    }
                }
                self.after_read(idx, res, flags, now, OP_RECV_ONE);
            }
            OP_POLL => {
                let (state, idle) = (self.subs[idx].state, self.subs[idx].op.is_none());
                if res > 0 && state == State::Stalled {
                    // RDHUP/HUP/ERR while we were not reading: the server
                    // closed us. Read (and count) what it had already sent,
                    // as a client would, so a resume starts from the right id.
                    let s = &mut self.subs[idx];
                    s.state = State::Draining;
                    s.drop_seen_ns = Some(now);
                    self.arm_recv_one(idx, SLOW_BUF_BYTES);
                } else if state == State::Verdict && idle {
                    self.arm_recv_one(idx, SLOW_BUF_BYTES);
                } else if state == State::Streaming && idle && self.subs[idx].slow_mode.is_none() {
                    // A slow stage ended while we polled: read normally
                    // again (a close it saw shows up as EOF or an error).
                    self.arm_recv_multi(idx);
                }
            }
            _ => debug_assert!(false, "unknown op kind {kind}"),
        }
        self.maybe_close(idx);
    }

    fn on_connected_tcp(&mut self, idx: usize, res: i32, now: u64) {
        if self.subs[idx].state == State::Closing {
            return;
        }
        if res == -libc::EADDRNOTAVAIL
            && self.ports.is_some()
            && self.subs[idx].pair_retries < PAIR_RETRIES_MAX
        {
            self.retry_source_pair(idx, now);
            return;
        }
        if res < 0 {
            self.fail_attempt(idx, &errno_name(-res), now);
            return;
        }
        self.subs[idx].pair_retries = 0;
        let topic = self.subs[idx].topic as usize;
        let node = self.subs[idx].node as usize;
        let mut req = self.cfg.nodes[node].sub_requests[topic].clone();
        if let Some(id) = &self.subs[idx].ledger.last_event_id {
            req.push_str("Last-Event-ID: ");
            req.push_str(id);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let s = &mut self.subs[idx];
        s.req = Some(req.into_bytes().into_boxed_slice());
        s.req_off = 0;
        s.state = State::Sending;
        self.send_request(idx);
    }

    fn send_request(&mut self, idx: usize) {
        let s = &mut self.subs[idx];
        let Some(req) = &s.req else { return };
        let ud = user_data(OP_SEND, s.gen, idx as u32);
        let rest = &req[s.req_off..];
        let e = opcode::Send::new(Fixed(idx as u32), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data(ud);
        s.op = Some(ud);
        self.push(e);
    }

    fn on_sent(&mut self, idx: usize, res: i32, now: u64) {
        if self.subs[idx].state == State::Closing {
            return;
        }
        if res < 0 {
            self.fail_attempt(idx, &format!("send_{}", errno_name(-res)), now);
            return;
        }
        let s = &mut self.subs[idx];
        s.req_off += res as usize;
        if s.req.as_ref().is_some_and(|r| s.req_off < r.len()) {
            self.send_request(idx);
            return;
        }
        s.req = None;
        s.state = State::Head;
        s.reader = Some(StreamReader::new());
        if s.slow_mode.is_some() {
            self.arm_recv_one(idx, SLOW_BUF_BYTES);
        } else {
            self.arm_recv_multi(idx);
        }
    }

    fn arm_recv_multi(&mut self, idx: usize) {
        let s = &mut self.subs[idx];
        let ud = user_data(OP_RECV_MULTI, s.gen, idx as u32);
        s.op = Some(ud);
        let e = if self.cfg.latency_at == LatencyAt::Kernel {
            opcode::RecvMsgMulti::new(Fixed(idx as u32), &*self.msghdr, self.bufs.group())
                .build()
                .user_data(ud)
        } else {
            opcode::RecvMulti::new(Fixed(idx as u32), self.bufs.group())
                .build()
                .user_data(ud)
        };
        self.push(e);
    }

    fn arm_recv_one(&mut self, idx: usize, len: usize) {
        let s = &mut self.subs[idx];
        let buf = s
            .slow_buf
            .get_or_insert_with(|| vec![0u8; SLOW_BUF_BYTES].into_boxed_slice());
        let len = len.min(buf.len()) as u32;
        let ud = user_data(OP_RECV_ONE, s.gen, idx as u32);
        s.op = Some(ud);
        let e = opcode::Recv::new(Fixed(idx as u32), buf.as_mut_ptr(), len)
            .build()
            .user_data(ud);
        self.push(e);
    }

    fn after_feed(&mut self, idx: usize, step: Step, now: u64) {
        match step {
            Step::More => {}
            Step::Connected => self.on_stream_open(idx, now),
            Step::Close(cause) => {
                if self.subs[idx].state == State::Head {
                    self.fail_attempt(idx, cause, now);
                } else {
                    self.end_stream(idx, cause, now);
                }
            }
        }
    }

    /// A read completed (`res` bytes, 0 = EOF, < 0 = error): keep reading or end.
    fn after_read(&mut self, idx: usize, res: i32, flags: u32, now: u64, kind: u8) {
        let state = self.subs[idx].state;
        if matches!(state, State::Closing | State::CloseSent | State::Closed) {
            return;
        }
        if res == -libc::ECANCELED && state == State::Verdict {
            // A trickling read cancelled to start the verdict read.
            if self.subs[idx].op.is_none() {
                self.arm_recv_one(idx, SLOW_BUF_BYTES);
            }
            return;
        }
        if res == -libc::ECANCELED && matches!(state, State::Stalled | State::Streaming) {
            // A read cancelled because a slow stage began (or ended): read
            // the new way.
            if self.subs[idx].op.is_none() {
                self.rearm_read(idx);
            }
            return;
        }
        if res == -libc::ENOBUFS {
            self.stats.recv_no_buffers += 1;
        }
        if res == 0 || (res < 0 && res != -libc::ENOBUFS) {
            let cause = if res == 0 {
                "eof".to_string()
            } else {
                errno_name(-res)
            };
            match state {
                State::Head => self.fail_attempt(idx, &cause, now),
                State::Verdict | State::Draining => {
                    self.end_stream(idx, "closed_while_stalled", now)
                }
                _ => self.end_stream(idx, &cause, now),
            }
            return;
        }
        if self.subs[idx].op.is_some() || cqueue::more(flags) {
            return;
        }
        let s = &self.subs[idx];
        match (kind, s.state) {
            (OP_RECV_ONE, State::Head) => self.arm_recv_one(idx, SLOW_BUF_BYTES),
            (OP_RECV_ONE, State::Verdict | State::Draining) => {
                self.arm_recv_one(idx, SLOW_BUF_BYTES)
            }
            (_, State::Head | State::Streaming | State::Stalled) => self.rearm_read(idx),
            _ => {}
        }
    }

    /// The read a connection with nothing in flight needs now: a poll for
    /// the server's close while stalled, nothing while trickling (the tick
    /// re-arms by credit), else a multishot read.
    fn rearm_read(&mut self, idx: usize) {
        let s = &self.subs[idx];
        match (s.state, s.slow_mode) {
            (State::Stalled, _) => self.arm_poll(idx),
            (State::Head | State::Streaming, Some(_)) => {}
            (State::Head | State::Streaming, None) => self.arm_recv_multi(idx),
            _ => {}
        }
    }

    /// The response head said 200: the subscriber is connected.
    fn on_stream_open(&mut self, idx: usize, now: u64) {
        self.pending = self.pending.saturating_sub(1);
        let s = &mut self.subs[idx];
        let first = !s.ever_connected;
        s.ever_connected = true;
        if !first {
            s.resumed = true;
        }
        s.state = State::Streaming;
        s.streaming_since_ns = now;
        let slow_mode = s.slow_mode;
        let connect_us = now.saturating_sub(s.attempt_start_ns) / 1_000;
        if let Some(ended) = s.ended_at_ns.take() {
            let us = now.saturating_sub(ended) / 1_000;
            self.stats.resume_us.saturating_record(us.max(1));
        }
        if first && s.ramp.is_some() {
            // Joined while publishing goes on: owed every event whose send
            // began after now (the server took it in before answering).
            let mark = self.shared.seq_started.get(s.topic as usize);
            let from = mark.map_or(0, |m| m.load(Ordering::Acquire));
            s.ledger.tracker.owe_from(from);
            s.owed_by_seq = true;
        }
        self.resumed_after_drop(idx, now);
        let part = self.stats.series.at(second_of(now));
        part.connects += 1;
        part.resumes += u64::from(!first);
        self.stats.connect_us.saturating_record(connect_us.max(1));
        self.shared.streaming.fetch_add(1, Ordering::AcqRel);
        if first {
            let s = &self.subs[idx];
            if s.counted_live {
                self.shared.live_fast[s.channel as usize].fetch_add(1, Ordering::AcqRel);
            }
            if let Some((stage, _)) = s.ramp {
                self.nodes[s.node as usize].stage_ramp_connected[stage as usize] += 1;
            }
            self.resolve(idx);
        }
        match slow_mode {
            Some(SlowMode::Stall) => {
                let s = &mut self.subs[idx];
                s.state = State::Stalled;
                s.ledger.behind_since_ns = Some(now);
                if s.op.is_none() {
                    self.arm_poll(idx);
                }
            }
            Some(SlowMode::Trickle { .. }) => {}
            // A subscriber the current stage slows is slow from its start.
            None => {
                if let Some(stage) = self.slow_active {
                    self.enter_slow(idx, stage, now);
                }
            }
        }
    }

    fn count_new(&mut self, idx: usize, new: u64) {
        self.unflushed_all += new;
        if self.subs[idx].counted_live {
            self.unflushed_live += new;
        }
    }

    fn tick(&mut self, now: u64) {
        if self.pending > 0 {
            let timeout = self.cfg.connect_timeout.as_nanos() as u64;
            let ramp_over = self.shared.flag(&self.shared.ramp_over);
            for idx in 0..self.subs.len() {
                let s = &self.subs[idx];
                let connecting =
                    matches!(s.state, State::Connecting | State::Sending | State::Head);
                let late = now.saturating_sub(s.attempt_start_ns) > timeout;
                let abandoned = ramp_over && !s.resolved && s.ramp.is_none();
                if connecting && (late || abandoned) {
                    self.fail_attempt(idx, "timeout", now);
                }
            }
        }
        if self.trickles {
            self.give_trickle_credit();
        }
        if self.shared.flag(&self.shared.publish_done) {
            let behind = self.owed_behind();
            self.shared.owed_behind[self.thread_idx].store(behind, Ordering::Release);
        }
        if self.catchup_started {
            let left = self.catchup_left();
            self.shared.catchup_left[self.thread_idx].store(left, Ordering::Release);
        }
        self.drive_stages(now);
        let second = second_of(now);
        self.stats.series.ship(&self.shared, second, false);
        for n in &mut self.nodes {
            n.series.ship(&self.shared, second, false);
        }
        let p99 = self
            .nodes
            .iter()
            .map(|n| n.fast_latency_us.value_at_quantile(0.99))
            .max()
            .unwrap_or(0);
        self.shared.p99_us[self.thread_idx].store(p99, Ordering::Relaxed);
    }

    fn flush_counters(&mut self) {
        if self.unflushed_live > 0 {
            self.shared
                .live_unique
                .fetch_add(self.unflushed_live, Ordering::AcqRel);
            self.unflushed_live = 0;
        }
        if self.unflushed_all > 0 {
            self.shared
                .deliveries
                .fetch_add(self.unflushed_all, Ordering::Relaxed);
            self.unflushed_all = 0;
        }
    }

    /// Per-subscriber totals: expected deliveries, loss, resume verdicts.
    /// The stats of subscriber `idx`'s node.
    fn node_stats(&mut self, idx: usize) -> &mut Stats {
        &mut self.nodes[self.subs[idx].node as usize]
    }

    fn finish(mut self) -> Stats {
        let second = second_of(self.shared.now_ns());
        self.stats.series.ship(&self.shared, second, true);
        for n in &mut self.nodes {
            n.series.ship(&self.shared, second, true);
        }
        let mut nodes = std::mem::take(&mut self.nodes);
        for s in &self.subs {
            if !s.ever_connected {
                continue;
            }
            let st = &mut nodes[s.node as usize];
            st.subscribers_connected += 1;
            if let Some((_, stage)) = s.dropped_at {
                st.stage_not_resumed[stage as usize] += 1;
            }
            let (owed, got) = self.owed(s);
            let lost = owed.saturating_sub(got);
            if s.ledger.slow {
                st.slow_clients += 1;
                if !s.flag_slow {
                    // Slowed by a stage, reading normally after it: owed
                    // everything, but apart from the fast subscribers' loss.
                    st.stage_slow_missing += lost;
                    let clean = lost == 0 && s.ledger.tracker.duplicates() == 0;
                    let recovered = s.slowed_stages & !s.slow_dropped_stages;
                    for (k, n) in st.stage_slow_recovered.iter_mut().enumerate() {
                        *n += u64::from(clean && recovered & (1 << k) != 0);
                    }
                }
            } else {
                st.deliveries_expected += owed;
                st.loss += lost;
            }
            if s.resumed {
                st.resumed_subscribers += 1;
                st.resumed_loss += lost;
                st.resumed_duplicates += s.ledger.tracker.duplicates();
                if lost == 0 && s.ledger.tracker.duplicates() == 0 {
                    st.resumed_exactly_once += 1;
                }
            }
        }
        let mut st = std::mem::take(&mut self.stats);
        for n in &nodes {
            st.merge(n.clone());
        }
        st.per_node = nodes;
        st.thread_cpu_s.push(thread_cpu_s());
        st
    }
}

/// Feed bytes to a subscriber's reader and count its new unique deliveries.
fn feed(
    s: &mut Sub,
    data: &[u8],
    now: u64,
    shared: &Shared,
    stats: &mut Stats,
    items: &mut Vec<stentor::wire::sse::Item>,
    seq: &crate::seq::SeqSource,
) -> (Step, u64) {
    stats.bytes_received += data.len() as u64;
    let Some(reader) = s.reader.as_mut() else {
        return (Step::More, 0);
    };
    let clock = Clock {
        now_ns: now,
        publish_start_ns: shared.publish_start_ns.load(Ordering::Relaxed),
    };
    let before = s.ledger.tracker.unique();
    let step = reader.feed(data, clock, &mut s.ledger, stats, items, seq);
    (step, s.ledger.tracker.unique() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (kind, gen, idx) in [
            (OP_CONNECT, 0, 0),
            (OP_CLOSE, GENERATION_MAX, u32::MAX),
            (OP_POLL, 12345, 99_999),
        ] {
            assert_eq!(split_user_data(user_data(kind, gen, idx)), (kind, gen, idx));
        }
        // The generation wraps within its bits, never into the kind.
        assert_eq!(
            split_user_data(user_data(OP_SEND, u32::MAX, 7)),
            (OP_SEND, GENERATION_MAX, 7)
        );
    }
}
