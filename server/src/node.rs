//! The node: the control plane only. It plans capacity, binds one
//! SO_REUSEPORT listener per worker, creates the [`bus`](crate::bus) the
//! workers share, starts them, reloads on SIGHUP ([`reload`], the JWT
//! keys included), and on SIGTERM/SIGINT fails readiness, waits
//! `--drain-delay-ms`, then drains them ([`drain`]).

use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::bus::{Shared, WORKERS_MAX};
use crate::config::Config;
use crate::sys;
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

/// Which CPU each worker is kept on (`--pin-workers`), out of the CPUs the
/// process may use, and what the startup line says about it. A fan-out is
/// two workers' sends at once only if they run on two CPUs: left to
/// itself, the scheduler often wakes the second worker on the busy CPU of
/// the first (they share a cache) while the other CPU idles, and the
/// event's last subscribers wait for both halves (performance.md,
/// section 11). Pinned only with one worker per allowed CPU (the default
/// `--workers 0`): with more workers, two pinned to one CPU could not move
/// off it when another is free; with fewer, every process of a host that
/// runs several (or shares it with a proxy) would crowd its first CPUs.
pub fn plan_pins(
    mode: crate::config::PinWorkers,
    workers: usize,
    allowed: &[usize],
) -> (Option<Vec<usize>>, String) {
    match mode {
        crate::config::PinWorkers::Off => (None, "off (--pin-workers off)".into()),
        crate::config::PinWorkers::Auto if allowed.len() != workers || workers == 0 => (
            None,
            format!(
                "off ({workers} workers, {} CPUs allowed: pinned only with one worker per CPU)",
                allowed.len()
            ),
        ),
        crate::config::PinWorkers::Auto => {
            let cpus = allowed[..workers].to_vec();
            let list = cpus
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",");
            (Some(cpus), format!("cpus {list}"))
        }
    }
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

/// Run the server until SIGTERM/SIGINT, then drain and return.
pub fn run(config: &Config) -> Result<(), NodeError> {
    // Probe io_uring once, up front, for a clear message instead of one per worker.
    if let Err(e) = io_uring::IoUring::new(4) {
        return Err(NodeError::new(crate::ring::unavailable_message(&e)));
    }
    let nofile = sys::nofile_soft();
    let mut capacity = plan_capacity(config.workers_effective(), config.max_connections, nofile);
    // Test hook: a tiny fixed-file table, so a test fills it with a few
    // dozen connections. Unset in production.
    if let Some(slots) = std::env::var("STENTOR_FAULT_FIXED_SLOTS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n > REJECT_HEADROOM_SLOTS && n < capacity.fixed_slots_per_ring)
    {
        capacity.fixed_slots_per_ring = slots;
        capacity.connections_per_ring = slots - REJECT_HEADROOM_SLOTS;
    }

    // The first listener picks the port when asked for port 0; the others
    // bind to the same one.
    let mut listeners = Vec::with_capacity(capacity.workers);
    let first = sys::bind_listener(config.listen, SOCKET_SEND_BUFFER_BYTES, LISTEN_BACKLOG)
        .map_err(|e| NodeError::new(format!("cannot listen on {}: {e}", config.listen)))?;
    let bound = first
        .local_addr()
        .map_err(|e| NodeError::new(format!("cannot read the bound address: {e}")))?;
    listeners.push(first);
    for _ in 1..capacity.workers {
        listeners.push(
            sys::bind_listener(bound, SOCKET_SEND_BUFFER_BYTES, LISTEN_BACKLOG)
                .map_err(|e| NodeError::new(format!("cannot listen on {bound}: {e}")))?,
        );
    }

    let signals = sys::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    let mut bus = Shared::new(config.clone(), capacity.workers, capacity.connections_max)
        .map_err(|e| NodeError::new(format!("cannot create eventfd: {e}")))?;
    // Fleet mode: the hub follows the broker's ids instead of giving its own
    // (see `broker::node`); the threads start once the bus is shared.
    let mut broker_queues = None;
    if let Some(url) = config.broker_url() {
        let (link, rx) =
            crate::broker::node::link(url, &config.broker_options()).map_err(NodeError::new)?;
        bus = bus.for_broker(link);
        broker_queues = Some(rx);
    }
    let shared = Arc::new(bus);
    let broker_threads = match (config.broker_url(), broker_queues) {
        (Some(url), Some(rx)) => Some(
            crate::broker::node::start(url, config.broker_options(), &shared, rx)
                .map_err(NodeError::new)?,
        ),
        _ => None,
    };
    // History first, before any worker can publish: a plain restart then
    // continues the old history (an upgrade merges it later, see
    // `history_file`).
    let mut history = config
        .history_file
        .clone()
        .map(crate::history_file::HistoryFile::new);
    if let Some(h) = history.as_mut() {
        h.try_load(&shared);
    }
    let (pins, pinned) = plan_pins(config.pin_workers, capacity.workers, &sys::allowed_cpus());
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(capacity.workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let setup = WorkerSetup {
            id,
            listener,
            rings: capacity.rings_per_worker,
            fixed_slots: capacity.fixed_slots_per_ring,
            connections_per_ring: capacity.connections_per_ring,
            cpu: pins.as_ref().map(|cpus| cpus[id]),
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
                stop_broker(broker_threads);
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
        stop_broker(broker_threads);
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
        pinned = pinned,
        broker = shared
            .broker
            .as_ref()
            .map_or("embedded", |l| l.url_redacted.as_str()),
    );
    if let Ok(Some(keys)) = crate::api::jwt::Keys::load(&config.jwt_config()) {
        crate::info!(
            "jwt keys loaded",
            keys = format!("{:?}", keys.describe()),
            subscribe_auth = format!("{:?}", config.subscribe_auth_effective()).to_lowercase()
        );
    }

    if let Some(addr) = config.admin_listen {
        match crate::admin::serve(addr, shared.clone()) {
            Ok(bound) => crate::info!("admin listening", addr = bound),
            Err(e) => {
                shared.request_shutdown();
                join_all(handles);
                return Err(NodeError::new(format!(
                    "cannot listen on --admin-listen {addr}: {e}"
                )));
            }
        }
    }

    // Wait for a signal; also notice workers that died on their own.
    // A worker that stopped (an invariant broke, or its ring kept failing)
    // has dropped its ring and listener on the way out: its connections are
    // closed and new ones go to the other workers, which carry on.
    let mut reported = vec![false; handles.len()];
    let mut running = config.clone();
    let signal = loop {
        match sys::wait_signal(&signals, Duration::from_millis(500)) {
            Some(libc::SIGHUP) => {
                reload(config, &mut running, &shared);
                reload_keys(&running, &shared);
                continue;
            }
            Some(sig) => break Some(sig),
            None => {}
        }
        if let Some(h) = history.as_mut() {
            h.try_load(&shared);
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
            drain(&running, &shared, &signals, name);
            join_all(handles);
            // Every worker has stopped: nothing publishes any more, so the
            // file holds every id this run handed out.
            if let Some(h) = history.as_mut() {
                h.save(&shared);
            }
            stop_broker(broker_threads);
            crate::info!("stopped");
            Ok(())
        }
        None => {
            join_all(handles);
            stop_broker(broker_threads);
            Err(NodeError::new(
                "every worker stopped on an error (see the log lines above)",
            ))
        }
    }
}

/// SIGHUP: read the JWT key flags again (a rotated `@PATH` file) and put
/// the new keys in force for requests from now on. Open streams keep
/// going with what they were granted. A key that no longer loads leaves
/// the old keys in force and says why.
fn reload_keys(config: &Config, shared: &Shared) {
    match crate::api::jwt::Keys::load(&config.jwt_config()) {
        Ok(keys) => {
            let described = keys
                .as_ref()
                .map_or_else(|| "none".to_string(), |k| k.describe());
            shared.set_keys(keys.map(Arc::new));
            crate::info!(
                "jwt keys reloaded",
                signal = "SIGHUP",
                keys = format!("{described:?}")
            );
        }
        Err(e) => {
            crate::error!(
                "jwt keys not reloaded; the previous keys stay in force",
                signal = "SIGHUP",
                error = format!("{:?}", e.to_string())
            );
        }
    }
}

fn stop_broker(threads: Option<crate::broker::node::Threads>) {
    if let Some(t) = threads {
        t.stop();
    }
}

/// SIGTERM/SIGINT: `/readyz` answers 503 at once while the node keeps
/// serving for `--drain-delay-ms`, so a load balancer that probes it stops
/// sending new streams here before the listeners close; then the workers
/// stop accepting and drain (each stream gets its spread `retry:` and has
/// `--shutdown-ms` to flush). A second signal ends the wait early.
pub fn drain(config: &Config, shared: &Shared, signals: &libc::sigset_t, signal: &str) {
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    crate::info!(
        "draining",
        signal = signal,
        readyz = 503,
        drain_delay_ms = config.drain_delay_ms,
        reconnect_spread_ms = config.reconnect_spread_ms
    );
    let until = std::time::Instant::now() + Duration::from_millis(u64::from(config.drain_delay_ms));
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match sys::wait_signal(signals, left) {
            Some(libc::SIGHUP) | None => {}
            Some(_) => {
                crate::info!("second signal: draining now");
                break;
            }
        }
    }
    // The listeners close, the streams drain.
    crate::info!("shutting down", shutdown_ms = config.shutdown_ms);
    shared.request_shutdown();
}

/// SIGHUP: read the configuration again as at start (flags, STENTOR_*
/// variables, the `--config` file) and apply what can change live: the log
/// settings here and now, tokens, CORS and limits through the bus, which
/// the workers pick up on their next tick. What needs a restart is logged
/// and keeps its running value. A configuration that does not load changes
/// nothing. Other reloadable state (keys, say) is one more call here.
pub fn reload(started: &Config, running: &mut Config, shared: &Shared) {
    let loaded = match crate::config::load(std::env::args_os()) {
        Ok(l) => l,
        Err(e) => {
            let why = match e {
                crate::config::LoadError::Invalid(m) => m,
                crate::config::LoadError::Display(e) => e.to_string(),
            };
            crate::error!(
                "reload failed; the running configuration stays",
                error = why
            );
            return;
        }
    };
    let new = loaded.config;
    let (live, _) = Config::reload_diff(running, &new);
    // Against the configuration the process started with: a setting
    // changed twice back to its start value needs no restart any more.
    let (_, needs_restart) = Config::reload_diff(started, &new);
    if live.iter().any(|k| k == "log-level") {
        if let Err(e) = crate::log::set_filter(&new.log_level) {
            crate::error!("reload: bad --log-level kept the old one", error = e);
        }
    }
    crate::log::set_format(new.log_format);
    crate::log::set_access(new.access_log, new.access_log_lines_per_s_max);
    shared.publish_reload(new.clone());
    crate::info!(
        "configuration reloaded",
        applied = live.join(","),
        needs_restart = needs_restart.join(",")
    );
    *running = new;
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
    fn workers_are_pinned_one_per_allowed_cpu_when_there_are_enough() {
        use crate::config::PinWorkers::{Auto, Off};
        assert_eq!(
            plan_pins(Auto, 2, &[0, 1]),
            (Some(vec![0, 1]), "cpus 0,1".into())
        );
        // A cpuset of a container: its own CPUs, in order.
        assert_eq!(plan_pins(Auto, 3, &[4, 6, 7]).0, Some(vec![4, 6, 7]));
        // More or fewer workers than CPUs, or off: the scheduler places them.
        let (pins, said) = plan_pins(Auto, 3, &[0, 1]);
        assert_eq!(pins, None);
        assert_eq!(
            said,
            "off (3 workers, 2 CPUs allowed: pinned only with one worker per CPU)"
        );
        assert_eq!(plan_pins(Auto, 2, &[4, 6, 7]).0, None);
        assert_eq!(plan_pins(Auto, 1, &[]).0, None);
        assert_eq!(plan_pins(Off, 2, &[0, 1]).0, None);
    }

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
}
