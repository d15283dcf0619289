//! The node: plans capacity, binds one SO_REUSEPORT listener per worker,
//! starts the workers, waits for SIGTERM/SIGINT, then drains them.
//!
//! [`Shared`] is the only state the workers share: the hub (ids, topics,
//! history) behind one lock, and one inbox per worker. Delivery itself takes
//! no lock: each worker walks its own index.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::Config;
use crate::hub::id::ResumePoint;
use crate::hub::publish::{PublishError, PublishRequest};
use crate::hub::topic::Topic;
use crate::hub::{Hub, HubLimits, HubStats, Replay};
use crate::wire::sse::Frame;
use crate::worker::{self, WorkerSetup};

/// Why the node could not start or stopped with an error. The binary prints
/// it as one line and exits non-zero.
#[derive(Debug)]
pub struct NodeError {
    pub message: String,
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl NodeError {
    fn new(message: impl Into<String>) -> NodeError {
        NodeError {
            message: message.into(),
        }
    }
}

/// Most fixed-file slots one ring is given, whatever RLIMIT_NOFILE says
/// (the kernel table costs memory; past this, add workers instead).
pub const FIXED_SLOTS_PER_RING_CAP: u64 = 1 << 16;
/// Slots of each ring kept free of ordinary connections so a full worker can
/// still accept, answer 503 and close instead of leaving clients hanging in
/// the backlog.
pub const REJECT_HEADROOM_SLOTS: u32 = 32;
/// Most worker threads (the `--workers` flag's own bound).
pub const WORKERS_MAX: usize = 256;
/// Kernel send buffer of every connection (SO_SNDBUF; Linux doubles it for
/// its bookkeeping). Frames beyond it wait in our send queue, where
/// `--queue-bytes-max` and `--queue-age-ms-max` see them.
pub const SOCKET_SEND_BUFFER_BYTES: i32 = 65_536;
/// Listen backlog per worker socket.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Most rings one worker thread owns.
pub const RINGS_PER_WORKER_MAX: usize = 64;

/// How many connections the node can hold, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub workers: usize,
    pub rings_per_worker: usize,
    pub fixed_slots_per_ring: u32,
    pub connections_per_ring: u32,
    pub connections_max: u32,
    pub nofile_soft: u64,
    pub reason: String,
}

/// A ring's fixed-file table holds at most RLIMIT_NOFILE (soft) entries, but
/// each ring has its own: the node holds more connections than the
/// descriptor limit by giving each worker thread as many rings as needed,
/// while keeping one thread per core.
pub fn plan_capacity(workers_flag: usize, max_connections: u32, nofile_soft: u64) -> Capacity {
    let fixed = nofile_soft.clamp(64, FIXED_SLOTS_PER_RING_CAP) as u32;
    let per_ring = fixed - REJECT_HEADROOM_SLOTS;
    let workers = workers_flag.clamp(1, WORKERS_MAX);
    let rings_needed = (max_connections as usize)
        .div_ceil(per_ring as usize)
        .max(1);
    let rings_per_worker = rings_needed
        .div_ceil(workers)
        .clamp(1, RINGS_PER_WORKER_MAX);
    let held = (workers as u64 * rings_per_worker as u64 * u64::from(per_ring))
        .min(u64::from(u32::MAX)) as u32;
    let connections_max = max_connections.min(held);
    let shape = format!("{workers} workers x {rings_per_worker} rings x {per_ring} slots");
    let reason = if connections_max < max_connections {
        format!(
            "{shape} (RLIMIT_NOFILE={nofile_soft}, at most {RINGS_PER_WORKER_MAX} rings per worker) \
             hold fewer than --max-connections={max_connections}; raise the descriptor limit or --workers"
        )
    } else if rings_per_worker > 1 {
        format!(
            "a ring's fixed-file table is capped by RLIMIT_NOFILE={nofile_soft}, so {shape} \
             hold --max-connections={max_connections}"
        )
    } else {
        format!("--max-connections={max_connections} within {shape}")
    };
    Capacity {
        workers,
        rings_per_worker,
        fixed_slots_per_ring: fixed,
        connections_per_ring: per_ring,
        connections_max,
        nofile_soft,
        reason,
    }
}

/// One published frame on its way to a worker. The id travels with the
/// frame so the worker can skip, for a stream that just resumed, the frames
/// its replay already covered (`id <= through_id`: the seam).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub topic: Topic,
    pub frame: Frame,
}

/// One worker's inbox: frames published anywhere, waiting for that worker,
/// plus the eventfd its ring keeps a read pending on.
pub struct Inbox {
    events: Mutex<Vec<Delivery>>,
    wake: OwnedFd,
    /// Its worker stopped: nobody drains it, so publishes skip it (else it
    /// would fill to `INBOX_FRAMES_MAX` and refuse every publish).
    closed: AtomicBool,
}

impl Inbox {
    fn new() -> io::Result<Inbox> {
        // Blocking eventfd on purpose: io_uring polls it; O_NONBLOCK would
        // make the ring's read complete at once with EAGAIN.
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Inbox {
            events: Mutex::new(Vec::new()),
            // SAFETY: fd was just created and is owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            closed: AtomicBool::new(false),
        })
    }

    /// Its worker stopped for good: drop what waits and take no more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.events).clear();
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Move every waiting frame into `out` (which the worker reuses).
    pub fn take_into(&self, out: &mut Vec<Delivery>) {
        let mut events = lock(&self.events);
        if out.is_empty() {
            std::mem::swap(&mut *events, out);
        } else {
            out.append(&mut events);
        }
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A failure
        // (counter overflow, impossible here) only delays delivery to the
        // next tick, which drains the inbox anyway.
        unsafe {
            libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// Frames one worker's inbox may hold before publishing is refused.
pub const INBOX_FRAMES_MAX: usize = 65_536;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub capacity: Capacity,
    /// Ids, history and topics. Publishes fill the inboxes while holding
    /// it, and subscribes replay and register while holding it: history
    /// order = inbox order = id order, which is what makes the seam between
    /// replay and live exact.
    hub: Mutex<HubState>,
    pub inboxes: Vec<Inbox>,
    pub shutdown: AtomicBool,
    pub connections_open: AtomicU32,
    /// Per-worker and publish figures for `GET /metrics`.
    pub metrics: crate::metrics::NodeMetrics,
    /// Connections per client IP, node-wide (`--max-connections-per-ip`).
    pub per_ip: crate::limit::PerIp,
    /// Publish token buckets per token or IP (`--publish-rate-per-s-max`).
    pub publish_rate: crate::limit::PublishRate,
}

/// The hub and who listens to which topic, node-wide: a topic nobody
/// subscribes to may be forgotten when the node holds `--topics-max` topics.
struct HubState {
    hub: Hub,
    /// Streams subscribed to each topic, over all workers. Changed on
    /// subscribe and close only, never per delivery.
    streams: HashMap<Topic, u32>,
}

impl HubState {
    /// Make room for the new topics of `requests` when they would pass
    /// `topics_max`: forget every topic no stream listens to (a resume from
    /// before one of its events then gets an `evicted` notice, never a
    /// silent gap). O(topics), and only when the node is full of topics.
    fn make_room_for(&mut self, requests: &[PublishRequest]) {
        let limits = *self.hub.limits();
        if self.hub.stats().topics + requests.len() <= limits.topics_max {
            return; // the common case: cheap, no lookups
        }
        let mut new_topics: Vec<&str> = requests
            .iter()
            .map(|r| r.topic.as_str())
            .filter(|t| self.hub.history(t).is_none())
            .collect();
        new_topics.sort_unstable();
        new_topics.dedup();
        if self.hub.stats().topics + new_topics.len() <= limits.topics_max {
            return;
        }
        let streams = &self.streams;
        let dropped = self
            .hub
            .drop_idle_topics(|t| streams.contains_key(t.as_str()), true);
        crate::debug!("topics forgotten to make room", dropped = dropped);
    }
}

/// A poisoned lock means a thread panicked while holding it; the data (a
/// Vec of frames, the hub whose every mutation completes before it can
/// panic) is still consistent, so carry on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix time in milliseconds: the start of this run's id sequence.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    pub fn new(config: Config, capacity: Capacity) -> io::Result<Shared> {
        Self::with_epoch_ms(config, capacity, unix_ms_now())
    }

    /// A node whose ids start at `epoch_ms * 1000` (see `hub::id`).
    pub fn with_epoch_ms(config: Config, capacity: Capacity, epoch_ms: u64) -> io::Result<Shared> {
        let inboxes = (0..capacity.workers)
            .map(|_| Inbox::new())
            .collect::<io::Result<Vec<_>>>()?;
        let hub = HubState {
            hub: Hub::new(HubLimits::from_config(&config), epoch_ms),
            streams: HashMap::new(),
        };
        Ok(Shared {
            hub: Mutex::new(hub),
            inboxes,
            shutdown: AtomicBool::new(false),
            connections_open: AtomicU32::new(0),
            metrics: crate::metrics::NodeMetrics::new(capacity.workers),
            per_ip: crate::limit::PerIp::new(config.max_connections_per_ip),
            publish_rate: crate::limit::PublishRate::new(config.publish_rate_per_s_max),
            config,
            capacity,
        })
    }

    /// Publish `requests` in order, all or nothing: the hub gives them ids,
    /// encodes each once and keeps it in history; every worker's inbox gets
    /// every frame. Ids, history and inbox order are decided under one lock.
    pub fn publish_batch(&self, requests: Vec<PublishRequest>) -> Result<Vec<u64>, PublishError> {
        let started = std::time::Instant::now();
        let mut woken = [false; WORKERS_MAX];
        let ids = {
            let mut state = lock(&self.hub);
            // A worker that stopped draining must not make the node's memory
            // grow without bound: refuse (503) until it catches up.
            let room = INBOX_FRAMES_MAX.saturating_sub(requests.len());
            if self.inboxes.iter().any(|inbox| {
                !inbox.closed.load(Ordering::SeqCst) && lock(&inbox.events).len() > room
            }) {
                return Err(PublishError::new(
                    503,
                    None,
                    "busy: subscribers are behind, retry later",
                ));
            }
            let topics: Vec<Topic> = requests.iter().map(|r| r.topic.clone()).collect();
            state.make_room_for(&requests);
            let published = state.hub.publish_batch(requests)?;
            debug_assert_eq!(published.len(), topics.len());
            for (i, inbox) in self.inboxes.iter().enumerate() {
                let mut events = lock(&inbox.events);
                if inbox.closed.load(Ordering::SeqCst) {
                    continue;
                }
                woken[i] = events.is_empty();
                events.extend(published.iter().zip(&topics).map(|(p, t)| Delivery {
                    id: p.id,
                    topic: t.clone(),
                    frame: p.frame.clone(),
                }));
            }
            published.iter().map(|p| p.id).collect::<Vec<u64>>()
        };
        // Wake outside the lock: a syscall per worker would lengthen it. An
        // inbox that was not empty already has a wake-up on its way.
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if woken[i] {
                inbox.wake();
            }
        }
        crate::metrics::add(
            &crate::metrics::COUNTERS.events_published_total,
            ids.len() as u64,
        );
        self.metrics
            .publish_ns
            .observe(started.elapsed().as_nanos() as u64);
        Ok(ids)
    }

    /// What a stream on `topics` resuming from `resume` is sent before it
    /// goes live. `register` (the worker adding the stream to its index) runs
    /// under the same lock as the replay, so no publish falls between them:
    /// every later frame reaches the worker's inbox with an id above
    /// `Replay::through_id`, every earlier one is in the replay or announced
    /// by its notice.
    pub fn subscribe<R>(
        &self,
        topics: &[Topic],
        resume: &ResumePoint,
        register: impl FnOnce() -> R,
    ) -> (Replay, R) {
        let mut state = lock(&self.hub);
        let replay = state.hub.replay(topics, resume);
        let registered = register();
        for t in topics {
            *state.streams.entry(t.clone()).or_insert(0) += 1;
        }
        (replay, registered)
    }

    /// A stream subscribed to `topics` (each once, as given to
    /// [`Shared::subscribe`]) closed.
    pub fn unsubscribe<'a>(&self, topics: impl Iterator<Item = &'a str>) {
        let mut state = lock(&self.hub);
        for t in topics {
            match state.streams.get_mut(t) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    state.streams.remove(t);
                }
                None => debug_assert!(false, "unsubscribe from {t} without a subscribe"),
            }
        }
    }

    /// The hub's figures, for `/metrics`.
    pub fn hub_stats(&self) -> HubStats {
        lock(&self.hub).hub.stats()
    }

    /// The node's metrics in Prometheus text format 0.0.4.
    pub fn render_metrics(&self, out: &mut String) {
        let snapshot = crate::metrics::Snapshot {
            connections_max: u64::from(self.capacity.connections_max),
        };
        crate::metrics::render(out, &self.metrics, &snapshot);
    }

    /// Flag shutdown and wake every worker so it notices.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for inbox in &self.inboxes {
            inbox.wake();
        }
    }
}

fn nofile_soft() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    rl.rlim_cur
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A listening socket with SO_REUSEPORT, so every worker has its own and
/// the kernel spreads new connections across them.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; checked below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned here; the OwnedFd closes it on error.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: no
    // Nagle delay for small event frames (and no per-socket syscall, which a
    // direct descriptor could not take anyway).
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // A fixed kernel send buffer, also inherited: with autotuning the kernel
    // would hold up to tcp_wmem max (4 MB) for each stalled client before
    // our queue even starts to grow, so neither memory nor the queue budget
    // would be bounded by us.
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        SOCKET_SEND_BUFFER_BYTES,
    )?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: pointer and length of a live sockaddr_in.
            unsafe {
                libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: pointer and length of a live sockaddr_in6.
            unsafe {
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscall on our socket.
    if unsafe { libc::listen(fd, LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(owned))
}

/// Block SIGTERM and SIGINT in this thread and every thread it starts, so
/// they are only ever taken by `sigtimedwait` in [`run`].
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, then the thread mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait up to `timeout` for one of `set`; the signal number, if any.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: set and ts are live; a null siginfo is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Run the server until SIGTERM/SIGINT, then drain and return.
pub fn run(config: &Config) -> Result<(), NodeError> {
    // Probe io_uring once, up front, for a clear message instead of one per worker.
    if let Err(e) = io_uring::IoUring::new(4) {
        return Err(NodeError::new(crate::ring::unavailable_message(&e)));
    }
    let nofile = nofile_soft();
    let capacity = plan_capacity(config.workers_effective(), config.max_connections, nofile);

    // The first listener picks the port when asked for port 0; the others
    // bind to the same one.
    let mut listeners = Vec::with_capacity(capacity.workers);
    let first = bind_listener(config.listen)
        .map_err(|e| NodeError::new(format!("cannot listen on {}: {e}", config.listen)))?;
    let bound = first
        .local_addr()
        .map_err(|e| NodeError::new(format!("cannot read the bound address: {e}")))?;
    listeners.push(first);
    for _ in 1..capacity.workers {
        listeners.push(
            bind_listener(bound)
                .map_err(|e| NodeError::new(format!("cannot listen on {bound}: {e}")))?,
        );
    }

    let signals = block_signals();
    let shared = Arc::new(
        Shared::new(config.clone(), capacity.clone())
            .map_err(|e| NodeError::new(format!("cannot create eventfd: {e}")))?,
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(capacity.workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let setup = WorkerSetup {
            id,
            listener,
            rings: capacity.rings_per_worker,
            fixed_slots: capacity.fixed_slots_per_ring,
            connections_per_ring: capacity.connections_per_ring,
        };
        let for_worker = shared.clone();
        let ready = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("stentor-w{id}"))
            .spawn(move || worker::run(setup, for_worker, ready));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.request_shutdown();
                join_all(handles);
                return Err(NodeError::new(format!("cannot start worker {id}: {e}")));
            }
        }
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                failure.get_or_insert(message);
            }
            Err(_) => {
                failure.get_or_insert("a worker exited during startup".to_string());
            }
        }
    }
    if let Some(message) = failure {
        shared.request_shutdown();
        join_all(handles);
        return Err(NodeError::new(message));
    }

    crate::info!(
        "listening",
        addr = bound,
        workers = capacity.workers,
        rings_per_worker = capacity.rings_per_worker,
        connections_max = capacity.connections_max,
        fixed_slots_per_ring = capacity.fixed_slots_per_ring,
        connections_per_ring = capacity.connections_per_ring,
        nofile_soft = capacity.nofile_soft,
        reason = capacity.reason,
    );

    // Wait for a signal; also notice workers that died on their own.
    // A worker that stopped (an invariant broke, or its ring kept failing)
    // has dropped its ring and listener on the way out: its connections are
    // closed and new ones go to the other workers, which carry on.
    let mut reported = vec![false; handles.len()];
    let signal = loop {
        if let Some(sig) = wait_signal(&signals, Duration::from_millis(500)) {
            break Some(sig);
        }
        for (id, h) in handles.iter().enumerate() {
            if h.is_finished() && !reported[id] {
                reported[id] = true;
                crate::error!(
                    "a worker stopped unexpectedly; its connections were closed, the other workers carry on",
                    worker = id
                );
            }
        }
        if reported.iter().all(|r| *r) {
            break None;
        }
    };
    match signal {
        Some(sig) => {
            let name = if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            crate::info!(
                "shutting down",
                signal = name,
                shutdown_ms = config.shutdown_ms
            );
            shared.request_shutdown();
            join_all(handles);
            crate::info!("stopped");
            Ok(())
        }
        None => {
            join_all(handles);
            Err(NodeError::new(
                "every worker stopped on an error (see the log lines above)",
            ))
        }
    }
}

fn join_all(handles: Vec<std::thread::JoinHandle<()>>) {
    for h in handles {
        if h.join().is_err() {
            crate::error!("a worker thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_flags_reach_100k_under_a_20000_descriptor_cap() {
        let c = plan_capacity(2, 120_000, 20_000);
        assert_eq!(c.fixed_slots_per_ring, 20_000);
        assert_eq!(c.connections_per_ring, 19_968);
        // One thread per core; 7 rings needed, 4 per worker.
        assert_eq!((c.workers, c.rings_per_worker), (2, 4));
        assert_eq!(c.connections_max, 120_000);
        assert!(
            c.reason.contains("2 workers x 4 rings x 19968 slots"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn more_workers_than_needed_are_kept() {
        let c = plan_capacity(16, 1000, 20_000);
        assert_eq!((c.workers, c.rings_per_worker), (16, 1));
        assert_eq!(c.connections_max, 1000);
    }

    #[test]
    fn a_tiny_limit_is_reported_not_hidden() {
        let c = plan_capacity(1, 4_000_000, 1024);
        assert_eq!((c.workers, c.rings_per_worker), (1, RINGS_PER_WORKER_MAX));
        assert!(c.connections_max < 4_000_000);
        assert!(c.reason.contains("hold fewer"), "{}", c.reason);
    }

    const EPOCH_MS: u64 = 1_764_361_697_000;

    fn shared(workers: usize) -> Shared {
        use clap::Parser;
        let config = Config::try_parse_from(["stentor"]).unwrap();
        Shared::with_epoch_ms(config, plan_capacity(workers, 1000, 20_000), EPOCH_MS).unwrap()
    }

    fn request(topic: &str, data: &str) -> PublishRequest {
        PublishRequest {
            topic: Topic::parse(topic, 128).unwrap(),
            event: crate::wire::sse::Event {
                data: data.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn publish_gives_increasing_ids_and_every_inbox_the_same_order() {
        let s = shared(3);
        let a = s.publish_batch(vec![request("t", "a")]).unwrap();
        let b = s
            .publish_batch(vec![request("u", "b"), request("t", "c")])
            .unwrap();
        let base = EPOCH_MS * 1000;
        assert_eq!(a, [base + 1]);
        assert_eq!(b, [base + 2, base + 3]);
        for inbox in &s.inboxes {
            let mut got = Vec::new();
            inbox.take_into(&mut got);
            let seen: Vec<(u64, &str)> = got.iter().map(|d| (d.id, d.topic.as_str())).collect();
            assert_eq!(seen, [(base + 1, "t"), (base + 2, "u"), (base + 3, "t")]);
            let first = format!("id: {}\n", base + 1);
            assert!(got[0].frame.starts_with(first.as_bytes()));
        }
        assert_eq!(s.hub_stats().published_total, 3);
    }

    #[test]
    fn a_full_inbox_refuses_publishing_instead_of_growing() {
        let s = shared(2);
        for _ in 0..INBOX_FRAMES_MAX {
            s.publish_batch(vec![request("t", "x")]).unwrap();
        }
        let e = s.publish_batch(vec![request("t", "x")]).unwrap_err();
        assert_eq!(e.status, 503);
        let mut drained = Vec::new();
        s.inboxes[0].take_into(&mut drained);
        s.inboxes[1].take_into(&mut drained);
        assert!(s.publish_batch(vec![request("t", "x")]).is_ok());
    }

    #[test]
    fn a_full_node_forgets_topics_nobody_listens_to() {
        use clap::Parser;
        let config = Config::try_parse_from(["stentor", "--topics-max", "2"]).unwrap();
        let s = Shared::with_epoch_ms(config, plan_capacity(1, 1000, 20_000), EPOCH_MS).unwrap();
        let kept = [Topic::parse("kept", 128).unwrap()];
        s.subscribe(&kept, &ResumePoint::Live, || ());
        s.publish_batch(vec![request("kept", "k"), request("a", "1")])
            .unwrap();
        // "a" has no stream: forgotten to make room for "b".
        s.publish_batch(vec![request("b", "2")]).unwrap();
        assert_eq!(s.hub_stats().topics, 2);
        assert_eq!(s.hub_stats().topics_dropped_total, 1);
        // Both held topics have streams now: a third is refused.
        let b = [Topic::parse("b", 128).unwrap()];
        s.subscribe(&b, &ResumePoint::Live, || ());
        let e = s.publish_batch(vec![request("c", "3")]).unwrap_err();
        assert_eq!((e.status, e.field), (503, Some("topic")));
        // The stream on "b" closes: "b" may go.
        s.unsubscribe(["b"].into_iter());
        s.publish_batch(vec![request("c", "3")]).unwrap();
        assert!(
            lock(&s.hub).hub.history("kept").is_some(),
            "a listened topic is kept"
        );
    }

    #[test]
    fn subscribe_registers_under_the_replay_lock() {
        let s = shared(1);
        s.publish_batch(vec![request("t", "a"), request("t", "b")])
            .unwrap();
        let t = [Topic::parse("t", 128).unwrap()];
        let first = EPOCH_MS * 1000 + 1;
        let (replay, registered) = s.subscribe(&t, &ResumePoint::After(first), || 7);
        assert_eq!(registered, 7);
        assert_eq!(replay.through_id, first + 1);
        assert_eq!(replay.events().len(), 1);
        assert_eq!(replay.missed, None);
    }

    #[test]
    fn listeners_share_a_kernel_picked_port() {
        let a = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = bind_listener(addr).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
    }
}
