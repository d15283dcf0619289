//! Counters, gauges and histograms, rendered as Prometheus text format
//! 0.0.4 (`GET /metrics`).
//!
//! Two kinds of storage, by how often they change:
//! - hot-path figures (deliveries, sends, bytes, ring operations, busy
//!   time, frames per send) are kept by each worker in plain fields and
//!   written once per tick into that worker's [`WorkerMetrics`], whose
//!   atomics only that worker writes (a load and a store, no locked
//!   instruction); a scrape sums the workers;
//! - rare events (accepts, publishes, refusals, drops) go straight to the
//!   node-wide [`COUNTERS`] or the limit module's counters.
//!
//! Names follow the Prometheus conventions: `_total` for counters,
//! `_bytes` / `_seconds` for units, no per-topic labels (cardinality stays
//! fixed whatever clients do).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::conn::CloseReason;
use crate::limit::{self, Limit};

/// Node-wide counters of rare events (a shared atomic each).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_accepted_total: AtomicU64,
    /// Connections open now (a gauge).
    pub connections_open: AtomicU64,
    pub streams_opened_total: AtomicU64,
    pub streams_resumed_total: AtomicU64,
    pub replayed_events_total: AtomicU64,
    pub missed_notices_total: AtomicU64,
    pub events_published_total: AtomicU64,
    pub dropped_slow_bytes_total: AtomicU64,
    pub dropped_slow_age_total: AtomicU64,
    pub worker_errors_total: AtomicU64,
    pub reads_paused_total: AtomicU64,
}

/// The node's counters.
pub static COUNTERS: Counters = Counters {
    connections_accepted_total: AtomicU64::new(0),
    connections_open: AtomicU64::new(0),
    streams_opened_total: AtomicU64::new(0),
    streams_resumed_total: AtomicU64::new(0),
    replayed_events_total: AtomicU64::new(0),
    missed_notices_total: AtomicU64::new(0),
    events_published_total: AtomicU64::new(0),
    dropped_slow_bytes_total: AtomicU64::new(0),
    dropped_slow_age_total: AtomicU64::new(0),
    worker_errors_total: AtomicU64::new(0),
    reads_paused_total: AtomicU64::new(0),
};

/// Add to a shared counter (any thread).
pub fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Add to an atomic only one thread writes: a plain load and store, so the
/// owner never pays for a locked read-modify-write; readers see whole values.
fn owned_add(a: &AtomicU64, n: u64) {
    if n > 0 {
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// Upper bounds of the frames-per-send histogram (a `SendMsg` carries at
/// most `IOVECS_PER_SEND_MAX` = 64 frames).
pub const FRAMES_PER_SEND_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Upper bounds of the publish latency histogram, in nanoseconds.
pub const PUBLISH_NS_BOUNDS: [u64; 12] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];
/// Topic sizes (subscribers on one worker) the topic gauges group by.
pub const TOPIC_SUBSCRIBERS_BOUNDS: [u64; 5] = [1, 10, 100, 1_000, 10_000];
/// Slots of the topic-size gauges: one per bound plus "more".
pub const TOPIC_SLOTS: usize = TOPIC_SUBSCRIBERS_BOUNDS.len() + 1;

/// Which slot of `bounds` (or the overflow slot) `value` falls in.
pub fn bucket_of(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len())
}

/// A histogram of non-negative integers (per-bucket counts, not cumulative;
/// cumulated when rendered).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one value from any thread.
    pub fn observe(&self, value: u64) {
        self.buckets[bucket_of(self.bounds, value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Add counts gathered locally by the one thread that writes this
    /// histogram (`counts.len()` = bounds + 1).
    fn owned_merge(&self, counts: &[u64], sum: u64) {
        debug_assert_eq!(counts.len(), self.buckets.len());
        for (b, n) in self.buckets.iter().zip(counts) {
            owned_add(b, *n);
        }
        owned_add(&self.sum, sum);
        owned_add(&self.count, counts.iter().sum());
    }

    fn snapshot(&self) -> (Vec<u64>, u64, u64) {
        let counts = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        (
            counts,
            self.sum.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// Number of close reasons (`CloseReason::ALL`).
const CLOSE_REASONS: usize = CloseReason::ALL.len();

/// What one worker counts, written by that worker only.
#[derive(Debug)]
pub struct WorkerMetrics {
    pub deliveries_total: AtomicU64,
    pub sends_total: AtomicU64,
    pub sent_bytes_total: AtomicU64,
    pub heartbeats_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub stale_completions_total: AtomicU64,
    pub ring_submissions_total: AtomicU64,
    pub ring_completions_total: AtomicU64,
    pub busy_ns_total: AtomicU64,
    pub fanout_cuts_total: AtomicU64,
    pub closed_total: [AtomicU64; CLOSE_REASONS],
    pub frames_per_send: Histogram,
    // Gauges, set at each sweep.
    pub streams: AtomicU64,
    pub queue_bytes: AtomicU64,
    pub request_buffer_bytes: AtomicU64,
    pub topics_by_subscribers: [AtomicU64; TOPIC_SLOTS],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            deliveries_total: AtomicU64::new(0),
            sends_total: AtomicU64::new(0),
            sent_bytes_total: AtomicU64::new(0),
            heartbeats_total: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            stale_completions_total: AtomicU64::new(0),
            ring_submissions_total: AtomicU64::new(0),
            ring_completions_total: AtomicU64::new(0),
            busy_ns_total: AtomicU64::new(0),
            fanout_cuts_total: AtomicU64::new(0),
            closed_total: [const { AtomicU64::new(0) }; CLOSE_REASONS],
            frames_per_send: Histogram::new(&FRAMES_PER_SEND_BOUNDS),
            streams: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            request_buffer_bytes: AtomicU64::new(0),
            topics_by_subscribers: [const { AtomicU64::new(0) }; TOPIC_SLOTS],
        }
    }
}

/// A worker's counts since its last flush, in plain fields (the hot path
/// touches only these).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub deliveries: u64,
    pub sends: u64,
    pub sent_bytes: u64,
    pub heartbeats: u64,
    pub requests: u64,
    pub stale: u64,
    pub ring_submissions: u64,
    pub ring_completions: u64,
    pub busy_ns: u64,
    /// Turns whose stream sends were cut at the per-turn limit.
    pub fanout_cuts: u64,
    pub closed: [u64; CLOSE_REASONS],
    pub frames_per_send: [u64; FRAMES_PER_SEND_BOUNDS.len() + 1],
    pub frames_sent: u64,
}

impl WorkerStats {
    /// One send completed carrying `frames` frames.
    pub fn send_done(&mut self, frames: usize, bytes: u64) {
        self.sends += 1;
        self.sent_bytes += bytes;
        self.frames_per_send[bucket_of(&FRAMES_PER_SEND_BOUNDS, frames as u64)] += 1;
        self.frames_sent += frames as u64;
    }
}

impl WorkerMetrics {
    /// Move `stats` into the shared figures (by the owning worker only).
    pub fn flush(&self, stats: &mut WorkerStats) {
        let s = std::mem::take(stats);
        owned_add(&self.deliveries_total, s.deliveries);
        owned_add(&self.sends_total, s.sends);
        owned_add(&self.sent_bytes_total, s.sent_bytes);
        owned_add(&self.heartbeats_total, s.heartbeats);
        owned_add(&self.requests_total, s.requests);
        owned_add(&self.stale_completions_total, s.stale);
        owned_add(&self.ring_submissions_total, s.ring_submissions);
        owned_add(&self.ring_completions_total, s.ring_completions);
        owned_add(&self.busy_ns_total, s.busy_ns);
        owned_add(&self.fanout_cuts_total, s.fanout_cuts);
        for (a, n) in self.closed_total.iter().zip(s.closed) {
            owned_add(a, n);
        }
        self.frames_per_send
            .owned_merge(&s.frames_per_send, s.frames_sent);
    }

    /// Set the request-buffer gauge (each sweep).
    pub fn set_request_buffer_bytes(&self, bytes: u64) {
        self.request_buffer_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Set the gauges the sweep measures.
    pub fn set_gauges(&self, streams: u64, queue_bytes: u64, topics: &[u64; TOPIC_SLOTS]) {
        self.streams.store(streams, Ordering::Relaxed);
        self.queue_bytes.store(queue_bytes, Ordering::Relaxed);
        for (a, n) in self.topics_by_subscribers.iter().zip(topics) {
            a.store(*n, Ordering::Relaxed);
        }
    }
}

/// Everything the node measures besides [`COUNTERS`].
#[derive(Debug)]
pub struct NodeMetrics {
    pub workers: Box<[WorkerMetrics]>,
    /// Time `POST /publish` spends assigning the id, encoding and handing
    /// the frame to every worker, in nanoseconds.
    pub publish_ns: Histogram,
}

impl NodeMetrics {
    pub fn new(workers: usize) -> NodeMetrics {
        NodeMetrics {
            workers: (0..workers).map(|_| WorkerMetrics::default()).collect(),
            publish_ns: Histogram::new(&PUBLISH_NS_BOUNDS),
        }
    }
}

/// Figures the node reads at scrape time from elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub connections_max: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP stentor_{name} {help}");
    let _ = writeln!(out, "# TYPE stentor_{name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "stentor_{name} {value}");
}

fn sum_of(m: &NodeMetrics, f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
    m.workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
}

/// Render a histogram; stored units are divided by `divisor` (1e9 for
/// nanoseconds → seconds; a power of ten keeps bounds printed exactly).
fn histogram(out: &mut String, name: &str, help: &str, parts: &[&Histogram], divisor: f64) {
    family(out, name, "histogram", help);
    let Some(first) = parts.first() else { return };
    let mut counts = vec![0u64; first.bounds.len() + 1];
    let (mut sum, mut count) = (0u64, 0u64);
    for h in parts {
        let (c, s, n) = h.snapshot();
        for (a, b) in counts.iter_mut().zip(c) {
            *a += b;
        }
        sum += s;
        count += n;
    }
    let mut cumulative = 0u64;
    for (i, bound) in first.bounds.iter().enumerate() {
        cumulative += counts[i];
        let le = *bound as f64 / divisor;
        let _ = writeln!(out, "stentor_{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    // Buckets and count are read one by one while workers write: make the
    // exposition self-consistent (+Inf = count ≥ every finite bucket).
    let total = count.max(cumulative + counts[first.bounds.len()]);
    let _ = writeln!(out, "stentor_{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "stentor_{name}_sum {}", sum as f64 / divisor);
    let _ = writeln!(out, "stentor_{name}_count {total}");
}

/// The whole exposition.
pub fn render(out: &mut String, m: &NodeMetrics, snap: &Snapshot) {
    let c = &COUNTERS;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);

    one(
        out,
        "connections",
        "gauge",
        "Connections open now.",
        get(&c.connections_open),
    );
    one(
        out,
        "connections_max",
        "gauge",
        "Connections the node admits (--max-connections within the rings' capacity).",
        snap.connections_max,
    );
    one(
        out,
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        get(&c.connections_accepted_total),
    );
    family(
        out,
        "connections_closed_total",
        "counter",
        "Connections closed, by reason.",
    );
    for (i, reason) in CloseReason::ALL.iter().enumerate() {
        let v: u64 = m.workers.iter().map(|w| get(&w.closed_total[i])).sum();
        let _ = writeln!(
            out,
            "stentor_connections_closed_total{{reason=\"{}\"}} {v}",
            reason.name()
        );
    }
    one(
        out,
        "requests_total",
        "counter",
        "HTTP requests parsed.",
        sum_of(m, |w| &w.requests_total),
    );
    family(
        out,
        "refusals_total",
        "counter",
        "Requests and connections refused, by limit and status.",
    );
    for l in Limit::ALL {
        let _ = writeln!(
            out,
            "stentor_refusals_total{{status=\"{}\",limit=\"{}\"}} {}",
            l.status(),
            l.name(),
            limit::refused_total(l)
        );
    }
    one(
        out,
        "access_log_suppressed_total",
        "counter",
        "Access-log lines left out by --access-log-lines-per-s-max.",
        crate::log::access_suppressed_total(),
    );

    one(
        out,
        "streams",
        "gauge",
        "SSE streams open now (as of the last sweep).",
        sum_of(m, |w| &w.streams),
    );
    one(
        out,
        "streams_opened_total",
        "counter",
        "SSE streams opened.",
        get(&c.streams_opened_total),
    );
    one(
        out,
        "streams_resumed_total",
        "counter",
        "SSE streams opened with a Last-Event-ID (header or lastEventId query).",
        get(&c.streams_resumed_total),
    );
    one(
        out,
        "reads_paused_total",
        "counter",
        "Times a connection stopped being read because its answers were not read (pipelining backpressure).",
        get(&c.reads_paused_total),
    );
    one(
        out,
        "replayed_events_total",
        "counter",
        "Events replayed from history to resuming streams.",
        get(&c.replayed_events_total),
    );
    one(
        out,
        "missed_notices_total",
        "counter",
        "stentor.missed notices sent (the client may have missed events).",
        get(&c.missed_notices_total),
    );
    let topics: u64 = (0..TOPIC_SLOTS)
        .map(|i| sum_of(m, |w| &w.topics_by_subscribers[i]))
        .sum();
    one(out, "topics", "gauge", "Topics with subscribers, counted per worker (a topic subscribed on two workers counts twice).", topics);
    family(
        out,
        "topics_by_subscribers",
        "gauge",
        "Topics (per worker) grouped by their subscriber count.",
    );
    for i in 0..TOPIC_SLOTS {
        let low = if i == 0 {
            1
        } else {
            TOPIC_SUBSCRIBERS_BOUNDS[i - 1] + 1
        };
        let range = match TOPIC_SUBSCRIBERS_BOUNDS.get(i) {
            Some(&high) if high == low => high.to_string(),
            Some(high) => format!("{low}-{high}"),
            None => format!("{low}+"),
        };
        let v = sum_of(m, |w| &w.topics_by_subscribers[i]);
        let _ = writeln!(
            out,
            "stentor_topics_by_subscribers{{subscribers=\"{range}\"}} {v}"
        );
    }

    one(
        out,
        "events_published_total",
        "counter",
        "Events accepted by POST /publish.",
        get(&c.events_published_total),
    );
    histogram(
        out,
        "publish_seconds",
        "Time a publish takes to get its id and reach every worker's inbox.",
        &[&m.publish_ns],
        1e9,
    );
    one(
        out,
        "deliveries_total",
        "counter",
        "Frames queued to subscribers (one per event per subscriber).",
        sum_of(m, |w| &w.deliveries_total),
    );
    one(
        out,
        "heartbeats_total",
        "counter",
        "Heartbeat comments queued.",
        sum_of(m, |w| &w.heartbeats_total),
    );
    one(
        out,
        "sends_total",
        "counter",
        "Send operations completed (Send or SendMsg).",
        sum_of(m, |w| &w.sends_total),
    );
    one(
        out,
        "sent_bytes_total",
        "counter",
        "Bytes the kernel accepted from sends.",
        sum_of(m, |w| &w.sent_bytes_total),
    );
    let parts: Vec<&Histogram> = m.workers.iter().map(|w| &w.frames_per_send).collect();
    histogram(
        out,
        "frames_per_send",
        "Frames (events, heartbeats, answers) carried by one completed send.",
        &parts,
        1.0,
    );
    one(
        out,
        "queue_bytes",
        "gauge",
        "Bytes waiting in send queues (as of the last sweep).",
        sum_of(m, |w| &w.queue_bytes),
    );
    one(
        out,
        "request_buffer_bytes",
        "gauge",
        "Bytes held by request buffers, all workers (bounded per worker by --request-buffers-bytes-max).",
        sum_of(m, |w| &w.request_buffer_bytes),
    );
    family(
        out,
        "slow_clients_dropped_total",
        "counter",
        "Streams closed because they fell behind, by the budget they exceeded.",
    );
    let _ = writeln!(
        out,
        "stentor_slow_clients_dropped_total{{reason=\"queue_bytes\"}} {}",
        get(&c.dropped_slow_bytes_total)
    );
    let _ = writeln!(
        out,
        "stentor_slow_clients_dropped_total{{reason=\"queue_age\"}} {}",
        get(&c.dropped_slow_age_total)
    );

    one(
        out,
        "ring_submissions_total",
        "counter",
        "Submission queue entries queued to io_uring.",
        sum_of(m, |w| &w.ring_submissions_total),
    );
    one(
        out,
        "ring_completions_total",
        "counter",
        "Completion queue entries handled.",
        sum_of(m, |w| &w.ring_completions_total),
    );
    one(
        out,
        "fanout_cuts_total",
        "counter",
        "Turns whose stream sends were cut at the per-turn limit (the rest went out on the next turns, after the control work).",
        sum_of(m, |w| &w.fanout_cuts_total),
    );
    family(
        out,
        "worker_busy_seconds_total",
        "counter",
        "Time each worker spent handling completions (not waiting in io_uring_enter).",
    );
    for (i, w) in m.workers.iter().enumerate() {
        let s = get(&w.busy_ns_total) as f64 * 1e-9;
        let _ = writeln!(
            out,
            "stentor_worker_busy_seconds_total{{worker=\"{i}\"}} {s}"
        );
    }
    one(
        out,
        "stale_completions_total",
        "counter",
        "Completions for a reused slot, recognised and dropped.",
        sum_of(m, |w| &w.stale_completions_total),
    );
    one(
        out,
        "worker_errors_total",
        "counter",
        "Unexpected errors a worker logged and survived.",
        get(&c.worker_errors_total),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        assert_eq!(bucket_of(&FRAMES_PER_SEND_BOUNDS, 1), 0);
        assert_eq!(bucket_of(&FRAMES_PER_SEND_BOUNDS, 3), 2);
        assert_eq!(bucket_of(&FRAMES_PER_SEND_BOUNDS, 64), 6);
        assert_eq!(bucket_of(&FRAMES_PER_SEND_BOUNDS, 65), 7);
    }

    #[test]
    fn renders_summed_workers_and_cumulative_histograms() {
        let m = NodeMetrics::new(2);
        let mut s = WorkerStats::default();
        s.send_done(1, 100);
        s.send_done(3, 300);
        s.deliveries = 4;
        m.workers[0].flush(&mut s);
        let mut s = WorkerStats::default();
        s.send_done(100, 50);
        s.deliveries = 1;
        m.workers[1].flush(&mut s);
        m.publish_ns.observe(30_000);
        let mut out = String::new();
        render(&mut out, &m, &Snapshot { connections_max: 7 });
        for want in [
            "# TYPE stentor_deliveries_total counter\nstentor_deliveries_total 5\n",
            "stentor_sends_total 3\n",
            "stentor_sent_bytes_total 450\n",
            "stentor_frames_per_send_bucket{le=\"1\"} 1\n",
            "stentor_frames_per_send_bucket{le=\"4\"} 2\n",
            "stentor_frames_per_send_bucket{le=\"64\"} 2\n",
            "stentor_frames_per_send_bucket{le=\"+Inf\"} 3\n",
            "stentor_frames_per_send_sum 104\n",
            "stentor_publish_seconds_bucket{le=\"0.00005\"} 1\n",
            "stentor_publish_seconds_bucket{le=\"0.000025\"} 0\n",
            "stentor_connections_max 7\n",
            "stentor_refusals_total{status=\"429\",limit=\"per_ip\"} ",
            "# TYPE stentor_connections gauge\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        // Every sample line belongs to a family declared just before.
        let mut declared = std::collections::HashSet::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| declared.contains(*b)))
                    .unwrap_or(name);
                assert!(declared.contains(base), "{name} undeclared");
            }
        }
    }
}
