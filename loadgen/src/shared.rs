//! What the threads of one run share: the clock epoch, phase flags and a few
//! counters for the progress line and the drain decision. Atomics only; the
//! detailed statistics stay thread-local until the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::series::SeriesPart;

/// Sentinel for "publishing has not started".
pub const NOT_STARTED: u64 = u64::MAX;

/// Set by SIGINT/SIGTERM: cut the run short and report what was measured.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Release);
}

/// Route SIGINT and SIGTERM to [`interrupted`] (a second signal still
/// kills: the handler is reset after the first).
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int) = on_signal;
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Acquire)
}

#[derive(Debug)]
pub struct Shared {
    pub epoch: Instant,
    /// Ramp deadline passed: abandon connects still pending, start no new ones.
    pub ramp_over: AtomicBool,
    /// ns since epoch when event 0 was due; [`NOT_STARTED`] before.
    pub publish_start_ns: AtomicU64,
    /// The publisher has finished and every response is in (or given up on).
    pub publish_done: AtomicBool,
    /// Drain over: stalled subscribers read once more to learn whether the server closed them.
    pub verdict: AtomicBool,
    /// Verdict over, `--reconnect`: dropped slow subscribers that have not
    /// resumed (drops seen only by the final read, reconnects the verdict
    /// held back) reconnect now and catch up from history.
    pub catchup: AtomicBool,
    /// Everything over: subscriber threads return their stats.
    pub stop: AtomicBool,

    /// Subscribers whose first attempt has ended (connected or failed).
    pub resolved: AtomicU64,
    /// Subscribers currently streaming.
    pub streaming: AtomicU64,
    /// Events accepted (2xx) per expectation channel (`RunConfig::channel`:
    /// a topic, per node when the nodes are independent).
    pub accepted: Vec<AtomicU64>,
    pub events_sent: AtomicU64,
    /// Fast subscribers alive (streaming or about to reconnect), per channel.
    pub live_fast: Vec<AtomicU64>,
    /// Unique deliveries to the live fast subscribers.
    pub live_unique: AtomicU64,
    /// Unique deliveries, all subscribers (progress line).
    pub deliveries: AtomicU64,
    /// Stalled subscribers whose verdict (closed or not) is still open.
    pub verdicts_pending: AtomicU64,
    /// Subscriber threads that have started their verdict.
    pub verdict_acks: AtomicU64,
    /// Each subscriber thread's fast p99 so far, µs (progress line).
    pub p99_us: Vec<AtomicU64>,
    /// Per subscriber thread: dropped subscribers still catching up;
    /// [`NOT_STARTED`] until the thread has started its catch-up.
    pub catchup_left: Vec<AtomicU64>,
    /// Per subscriber thread: subscribers owed events by sequence number
    /// (opened by a stage's ramp, or slow in a stage and reading normally
    /// again) that still miss some; [`NOT_STARTED`] until the thread has
    /// looked after publishing ended.
    pub owed_behind: Vec<AtomicU64>,
    /// Per topic: one past the highest sequence number a publisher has
    /// begun to send. Read when a late subscriber's stream opens, it says
    /// which events were certainly sent after the server took it in.
    pub seq_started: Vec<AtomicU64>,
    /// Per expectation channel, a bitmap of the accepted (2xx) sequence
    /// numbers; empty unless some subscriber joins while publishing goes on.
    pub accepted_seqs: Vec<Box<[AtomicU64]>>,
    /// Finished seconds shipped by the subscriber threads for the `series`.
    pub series_parts: Mutex<Vec<SeriesPart>>,
    /// Closed seconds of the series, for `--prometheus-listen`.
    pub live: crate::prom::LiveCell,
}

impl Shared {
    pub fn new(channels: usize, threads: usize) -> Self {
        Self {
            epoch: Instant::now(),
            ramp_over: AtomicBool::new(false),
            publish_start_ns: AtomicU64::new(NOT_STARTED),
            publish_done: AtomicBool::new(false),
            verdict: AtomicBool::new(false),
            catchup: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            resolved: AtomicU64::new(0),
            streaming: AtomicU64::new(0),
            accepted: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            events_sent: AtomicU64::new(0),
            live_fast: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            live_unique: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            verdicts_pending: AtomicU64::new(0),
            verdict_acks: AtomicU64::new(0),
            p99_us: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            catchup_left: (0..threads).map(|_| AtomicU64::new(NOT_STARTED)).collect(),
            owed_behind: (0..threads).map(|_| AtomicU64::new(NOT_STARTED)).collect(),
            seq_started: Vec::new(),
            accepted_seqs: Vec::new(),
            series_parts: Mutex::new(Vec::new()),
            live: Default::default(),
        }
    }

    /// Track sequence numbers for late joiners: `topics` per-topic send
    /// marks, and for each channel a bitmap of `seqs` accepted sequence numbers.
    pub fn with_seq_tracking(mut self, topics: usize, seqs: u64) -> Self {
        let words = seqs.div_ceil(64) as usize;
        self.seq_started = (0..topics).map(|_| AtomicU64::new(0)).collect();
        self.accepted_seqs = (0..self.accepted.len())
            .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
            .collect();
        self
    }

    /// Record that `seq` was accepted on `channel` (beyond the bitmap: not
    /// recorded; the bitmap is sized from the schedule's bound).
    pub fn mark_accepted(&self, channel: usize, seq: u64) {
        if let Some(w) = self
            .accepted_seqs
            .get(channel)
            .and_then(|b| b.get((seq / 64) as usize))
        {
            w.fetch_or(1 << (seq % 64), Ordering::AcqRel);
        }
    }

    /// Accepted events of `channel` with sequence number >= `from`.
    pub fn accepted_from(&self, channel: usize, from: u64) -> u64 {
        let Some(bits) = self.accepted_seqs.get(channel) else {
            return 0;
        };
        let first = (from / 64) as usize;
        bits.iter()
            .enumerate()
            .skip(first)
            .map(|(i, w)| {
                let mut v = w.load(Ordering::Acquire);
                if i == first {
                    v &= u64::MAX << (from % 64);
                }
                u64::from(v.count_ones())
            })
            .sum()
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn flag(&self, f: &AtomicBool) -> bool {
        f.load(Ordering::Acquire)
    }

    pub fn set(&self, f: &AtomicBool) {
        f.store(true, Ordering::Release);
    }

    /// Whether every subscriber thread has started its catch-up and has no
    /// dropped subscriber left behind.
    pub fn all_caught_up(&self) -> bool {
        self.catchup_left
            .iter()
            .all(|l| l.load(Ordering::Acquire) == 0)
    }

    /// Whether every live fast subscriber has every accepted event (and
    /// every subscriber owed events by sequence number has them).
    pub fn all_delivered(&self) -> bool {
        let owed_done = self
            .owed_behind
            .iter()
            .all(|l| l.load(Ordering::Acquire) == 0);
        if !owed_done {
            return false;
        }
        let expected: u64 = self
            .accepted
            .iter()
            .zip(&self.live_fast)
            .map(|(a, l)| a.load(Ordering::Acquire) * l.load(Ordering::Acquire))
            .sum();
        self.live_unique.load(Ordering::Acquire) >= expected
    }
}
