//! The node's side of fleet mode: what ties the broker threads to the bus.
//!
//! - Publishing: a worker hands the parsed batch to the publisher thread
//!   ([`publish`]) and goes on; the publisher's reply posts the answer to
//!   that worker's inbox ([`crate::bus::Inbox::post_answer`]), naming the
//!   connection by slab key and generation. A worker never waits on Redis.
//! - Delivery: the reader thread's events go through
//!   [`Shared::deliver_from_broker`] into the same inboxes an embedded
//!   publish fills, so a node's own publishes come back through the log
//!   like everyone else's: one order for every node.
//! - Readiness and metrics: whether both connections are up, errors by
//!   kind, the publish round trip, how far the reader is behind.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::{BrokerErrorKind, BrokerOptions, BrokerShared, NewEvent, PublishJob, ReaderMsg};
use crate::bus::{Answer, Shared};
use crate::hub::publish::{PublishError, PublishRequest};
use crate::metrics::{family, histogram, one, Histogram};

/// Publish batches waiting for the publisher thread, node-wide. Past it a
/// publish is refused with 503 at once instead of queueing behind a Redis
/// that is slow: each job holds its parsed batch in memory.
pub const PUBLISH_JOBS_MAX: usize = 4_096;

/// Resumes waiting for the range thread, node-wide. Past it a resume the
/// node's memory does not cover gets what memory has (with its notice)
/// instead of waiting: a resume storm must not queue without bound.
pub const RANGE_JOBS_MAX: usize = 1_024;

/// Upper bounds of the publish round-trip histogram, in microseconds.
pub const PUBLISH_RTT_US_BOUNDS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000, 10_000_000,
];

/// Fleet-mode figures for `GET /metrics` (one node per process).
#[derive(Debug)]
pub struct BrokerMetrics {
    /// `broker_errors_total{kind}`, in [`BrokerErrorKind::ALL`] order.
    pub errors_total: [AtomicU64; 7],
    /// Events the reader read that the hub refused (an id that went back,
    /// `--topics-max` full of subscribed topics).
    pub events_dropped_total: AtomicU64,
    /// Events read from the log.
    pub events_read_total: AtomicU64,
    /// Highest id the reader handed to the hub.
    pub last_read_id: AtomicU64,
    /// Highest id this node's publishes were given.
    pub last_published_id: AtomicU64,
    /// Gaps and resets announced to streams.
    pub gaps_total: AtomicU64,
    pub resets_total: AtomicU64,
    /// Publishes refused because the job queue was full.
    pub publish_queue_full_total: AtomicU64,
    /// Resumes served from Redis (the node's memory did not cover them).
    pub resumes_from_redis_total: AtomicU64,
    /// Resumes that wanted Redis but got the node's memory (range queue
    /// full, or Redis failed).
    pub resumes_fallback_total: AtomicU64,
    /// Round trip of a publish to Redis, from the worker's hand-off to the
    /// publisher's reply, in microseconds.
    pub publish_rtt_us: Histogram,
}

/// The node's broker figures.
pub static METRICS: std::sync::LazyLock<BrokerMetrics> =
    std::sync::LazyLock::new(|| BrokerMetrics {
        errors_total: Default::default(),
        events_dropped_total: AtomicU64::new(0),
        events_read_total: AtomicU64::new(0),
        last_read_id: AtomicU64::new(0),
        last_published_id: AtomicU64::new(0),
        gaps_total: AtomicU64::new(0),
        resets_total: AtomicU64::new(0),
        publish_queue_full_total: AtomicU64::new(0),
        resumes_from_redis_total: AtomicU64::new(0),
        resumes_fallback_total: AtomicU64::new(0),
        publish_rtt_us: Histogram::new(&PUBLISH_RTT_US_BOUNDS),
    });

fn count_error(kind: BrokerErrorKind) {
    if let Some(i) = BrokerErrorKind::ALL.iter().position(|k| *k == kind) {
        METRICS.errors_total[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// What the bus holds of the broker: the publisher's job queue and the
/// state both threads share.
pub struct BrokerLink {
    pub state: Arc<BrokerShared>,
    jobs: SyncSender<PublishJob>,
    ranges: SyncSender<RangeJob>,
    /// The URL without its password, for logs.
    pub url_redacted: String,
}

impl BrokerLink {
    /// Both connections are up (`/readyz`, `broker_connected`).
    pub fn connected(&self) -> bool {
        self.state.reader_connected.load(Ordering::Relaxed)
            && self.state.publisher_connected.load(Ordering::Relaxed)
    }
}

/// A resume for the range thread: the connection `(key, generation)` of
/// worker `worker` wants the events of `topics` after `after_id`.
pub struct RangeJob {
    pub worker: usize,
    pub key: u32,
    pub generation: u32,
    pub topics: Vec<String>,
    pub after_id: u64,
    pub count_max: usize,
}

/// The threads' ends of the queues the bus's link feeds, for [`start`].
pub struct Queues {
    publish: Receiver<PublishJob>,
    range: Receiver<RangeJob>,
}

/// The link for the bus and the threads' ends of its queues, for
/// [`start`]. Checks the URL and options without connecting.
pub fn link(url: &str, opts: &BrokerOptions) -> Result<(BrokerLink, Queues), String> {
    super::redis::RedisBroker::new(url, opts.clone()).map_err(|e| e.to_string())?;
    let (jobs, publish) = sync_channel(PUBLISH_JOBS_MAX);
    let (ranges, range) = sync_channel(RANGE_JOBS_MAX);
    let link = BrokerLink {
        state: Arc::new(BrokerShared::default()),
        jobs,
        ranges,
        url_redacted: super::redis::redact_url(url),
    };
    Ok((link, Queues { publish, range }))
}

/// Ask the range thread for a resume's events; false when its queue is
/// full (the caller serves what memory has).
pub fn request_range(link: &BrokerLink, job: RangeJob) -> bool {
    match link.ranges.try_send(job) {
        Ok(()) => true,
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            METRICS
                .resumes_fallback_total
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// The range thread: one more Redis connection, serving resumes in order.
/// A failure answers the job with the error (the stream gets what memory
/// has) and drops the connection; the next job reconnects.
fn spawn_ranger(
    url: &str,
    opts: BrokerOptions,
    state: Arc<BrokerShared>,
    shared: Arc<Shared>,
    rx: Receiver<RangeJob>,
) -> Result<JoinHandle<()>, String> {
    let mut broker = super::redis::RedisBroker::new(url, opts).map_err(|e| e.to_string())?;
    let spawned = std::thread::Builder::new()
        .name("broker-range".into())
        .spawn(move || {
            super::redis::block_async_signals();
            while !state.stopping() {
                let job = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Ok(job) => job,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let topics: Vec<&str> = job.topics.iter().map(String::as_str).collect();
                let result = broker
                    .ensure_connected()
                    .and_then(|()| broker.range(&topics, job.after_id, job.count_max));
                if let Err(e) = &result {
                    count_error(e.kind);
                }
                if let Some(inbox) = shared.inboxes.get(job.worker) {
                    inbox.post_range(crate::bus::RangeAnswer {
                        key: job.key,
                        generation: job.generation,
                        result,
                    });
                }
            }
        });
    spawned.map_err(|e| format!("cannot start the broker range thread: {e}"))
}

/// The broker threads of a running node.
pub struct Threads {
    state: Arc<BrokerShared>,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    /// Stop both threads and wait for them (each notices within its
    /// blocking read or backoff slice).
    pub fn stop(self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            if h.join().is_err() {
                crate::error!("a broker thread panicked");
            }
        }
    }
}

/// Start the reader (into `shared`'s inboxes) and the publisher (from
/// `rx`). `shared.broker` must be set.
pub fn start(
    url: &str,
    opts: BrokerOptions,
    shared: &Arc<Shared>,
    queues: Queues,
) -> Result<Threads, String> {
    let Queues { publish: rx, range } = queues;
    let Some(link) = &shared.broker else {
        return Err("fleet mode without a broker link".to_string());
    };
    let state = link.state.clone();
    let for_reader = shared.clone();
    let mut connected_before = false;
    let reader = super::redis::spawn_reader(url, opts.clone(), state.clone(), 0, move |msg| {
        on_reader_msg(&for_reader, &mut connected_before, msg)
    })
    .map_err(|e| e.to_string())?;
    let publisher = match super::redis::spawn_publisher(url, opts.clone(), state.clone(), rx) {
        Ok(h) => h,
        Err(e) => {
            Threads {
                state,
                handles: vec![reader],
            }
            .stop();
            return Err(e.to_string());
        }
    };
    let mut threads = Threads {
        state: state.clone(),
        handles: vec![reader, publisher],
    };
    match spawn_ranger(url, opts, state, shared.clone(), range) {
        Ok(h) => threads.handles.push(h),
        Err(e) => {
            threads.stop();
            return Err(e);
        }
    }
    Ok(threads)
}

/// What the reader thread reports, applied to the bus (on the reader
/// thread: it may wait for full inboxes, never a worker).
fn on_reader_msg(shared: &Shared, connected_before: &mut bool, msg: ReaderMsg) {
    match msg {
        ReaderMsg::Connected => {
            let url = shared
                .broker
                .as_ref()
                .map_or("", |l| l.url_redacted.as_str());
            if *connected_before {
                crate::info!("broker reader reconnected", url = url);
            } else {
                crate::info!("broker reader connected", url = url);
            }
            *connected_before = true;
        }
        ReaderMsg::Disconnected(e) => {
            count_error(e.kind);
            crate::warn!(
                "broker reader disconnected; streams stay open, retrying",
                kind = e.kind.as_str(),
                error = e.message
            );
        }
        ReaderMsg::Events(events) => {
            let n = events.len() as u64;
            let last = events.last().map_or(0, |e| e.id);
            shared.deliver_from_broker(events);
            METRICS.events_read_total.fetch_add(n, Ordering::Relaxed);
            METRICS.last_read_id.fetch_max(last, Ordering::Relaxed);
        }
        ReaderMsg::Gap { after_id, first_id } => {
            METRICS.gaps_total.fetch_add(1, Ordering::Relaxed);
            crate::warn!(
                "broker log trimmed past this node's reader; streams get stentor.missed",
                after_id = after_id,
                first_id = first_id
            );
            shared.broker_notice(false);
        }
        ReaderMsg::Reset { epoch } => {
            count_error(BrokerErrorKind::Reset);
            METRICS.resets_total.fetch_add(1, Ordering::Relaxed);
            crate::warn!(
                "broker lost its data; streams get stentor.missed (broker_reset)",
                epoch = epoch
            );
            shared.broker_notice(true);
        }
    }
}

/// Hand `requests` to the publisher thread for the connection `(key,
/// generation)` of worker `worker`; its answer comes back through that
/// worker's inbox. `Err` is an answer now: the publisher's queue is full
/// or gone (503).
pub fn publish(
    shared: &Arc<Shared>,
    worker: usize,
    key: u32,
    generation: u32,
    requests: &[PublishRequest],
) -> Result<(), PublishError> {
    let Some(link) = &shared.broker else {
        return Err(PublishError::new(503, None, "no broker"));
    };
    let batch: Vec<NewEvent> = requests.iter().map(NewEvent::from_request).collect();
    let started = Instant::now();
    let for_reply = shared.clone();
    let reply = move |result: Result<Vec<u64>, super::BrokerError>| {
        let result = match result {
            Ok(ids) => {
                METRICS
                    .publish_rtt_us
                    .observe(started.elapsed().as_micros() as u64);
                if let Some(last) = ids.last() {
                    METRICS
                        .last_published_id
                        .fetch_max(*last, Ordering::Relaxed);
                }
                Ok(ids)
            }
            Err(e) => {
                count_error(e.kind);
                Err(unavailable(&e.message))
            }
        };
        if let Some(inbox) = for_reply.inboxes.get(worker) {
            inbox.post_answer(Answer {
                key,
                generation,
                result,
            });
        }
    };
    let job = PublishJob {
        batch,
        reply: Box::new(reply),
    };
    match link.jobs.try_send(job) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => {
            METRICS
                .publish_queue_full_total
                .fetch_add(1, Ordering::Relaxed);
            Err(unavailable("too many publishes waiting for Redis"))
        }
        Err(TrySendError::Disconnected(_)) => Err(unavailable("the publisher stopped")),
    }
}

/// The 503 a publish gets when the broker did not store it.
fn unavailable(why: &str) -> PublishError {
    PublishError::new(503, None, format!("broker unavailable: {why}"))
}

/// The fleet-mode metrics, after the node's.
pub fn render(out: &mut String, link: &BrokerLink) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let m = &*METRICS;
    one(
        out,
        "broker_connected",
        "gauge",
        "1 when both broker connections (reader, publisher) are up.",
        u64::from(link.connected()),
    );
    family(
        out,
        "broker_errors_total",
        "counter",
        "Broker failures by kind (connect, timeout, protocol, server, script, reset, config).",
    );
    for (i, kind) in BrokerErrorKind::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "stentor_broker_errors_total{{kind=\"{}\"}} {}",
            kind.as_str(),
            get(&m.errors_total[i])
        );
    }
    let read = get(&m.last_read_id);
    let published = get(&m.last_published_id);
    for (name, kind, help, value) in [
        (
            "broker_events_read_total",
            "counter",
            "Events read from the fleet's log.",
            get(&m.events_read_total),
        ),
        (
            "broker_events_dropped_total",
            "counter",
            "Events read that the hub could not keep (id went back, topics full).",
            get(&m.events_dropped_total),
        ),
        (
            "broker_last_read_id",
            "gauge",
            "Highest id read from the fleet's log.",
            read,
        ),
        (
            "broker_last_published_id",
            "gauge",
            "Highest id this node's publishes were given.",
            published,
        ),
        (
            "broker_lag_ids",
            "gauge",
            "Ids this node published that its reader has not read back yet.",
            published.saturating_sub(read),
        ),
        (
            "broker_gaps_total",
            "counter",
            "Times the log was trimmed past this node's reader.",
            get(&m.gaps_total),
        ),
        (
            "broker_resets_total",
            "counter",
            "Times Redis lost its data.",
            get(&m.resets_total),
        ),
        (
            "broker_resumes_total",
            "counter",
            "Resumes served from Redis (the node's memory did not cover the id).",
            get(&m.resumes_from_redis_total),
        ),
        (
            "broker_resumes_fallback_total",
            "counter",
            "Resumes that wanted Redis but got the node's memory (queue full, Redis failed).",
            get(&m.resumes_fallback_total),
        ),
        (
            "broker_publish_queue_full_total",
            "counter",
            "Publishes refused because the publisher's queue was full.",
            get(&m.publish_queue_full_total),
        ),
    ] {
        one(out, name, kind, help, value);
    }
    histogram(
        out,
        "broker_publish_seconds",
        "Publish round trip through Redis, from the worker's hand-off to the answer.",
        &[&m.publish_rtt_us],
        1e6,
    );
}
