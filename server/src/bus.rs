//! The bus: the publish state every worker and the node share. Ids,
//! history and topics (the hub) behind one lock, one inbox per worker, and
//! every publish refusal with its counter. Delivery itself takes no lock:
//! each worker walks its own index.
//!
//! Used by the node (which creates it and asks it to shut down) and by the
//! workers (which publish, subscribe and drain their inbox through it); it
//! knows neither.

pub mod presence;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::api::jwt::Keys;
use crate::config::Config;
use crate::hub::id::ResumePoint;
use crate::hub::publish::{PublishError, PublishRequest};
use crate::hub::topic::Topic;
use crate::hub::{Hub, HubStats, Replay};
use crate::wire::sse::Frame;

/// How often the node may warn that a per-IP limit refused a proxy it
/// does not trust (the fix is the same every time).
const UNTRUSTED_PROXY_HINT_EVERY_MS: u64 = 60_000;

/// Most worker threads (the `--workers` flag's own bound).
pub const WORKERS_MAX: usize = 256;

/// One published frame on its way to a worker. The id travels with the
/// frame so the worker can skip, for a stream that just resumed, the frames
/// its replay already covered (`id <= through_id`: the seam).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub topic: Topic,
    pub frame: Frame,
    /// For the streams whose token covers the topic only.
    pub private: bool,
}

/// The answer to a publish the fleet's broker stored (or refused), for the
/// connection that asked: named by slab key and generation, so an answer
/// for a connection that closed meanwhile (its slot maybe reused) is
/// dropped.
#[derive(Debug)]
pub struct Answer {
    pub key: u32,
    pub generation: u32,
    pub result: Result<Vec<u64>, PublishError>,
}

/// What Redis holds for a stream that resumed from an id the node's memory
/// does not cover, for the connection that asked (see [`Answer`]).
#[derive(Debug)]
pub struct RangeAnswer {
    pub key: u32,
    pub generation: u32,
    pub result: Result<crate::broker::RangeResult, crate::broker::BrokerError>,
}

/// The frames waiting in one inbox and what they cost.
#[derive(Default)]
struct InboxQueue {
    items: Vec<Delivery>,
    /// Fleet mode: notices for every open stream (`stentor.missed` after a
    /// broker reset or gap), each with the number of `items` queued before
    /// it, so it reaches the streams between the same frames everywhere.
    notices: Vec<(usize, Frame)>,
    /// Fleet mode: publish answers for this worker's connections.
    answers: Vec<Answer>,
    /// Fleet mode: resume replays read from Redis.
    ranges: Vec<RangeAnswer>,
    /// Frame bytes plus entry size of every item (frames are shared with
    /// history and other inboxes: this is what the node would hold for
    /// this worker alone if it fell behind).
    bytes: usize,
}

/// What one delivery costs an inbox besides its frame bytes.
const DELIVERY_BYTES: usize = std::mem::size_of::<Delivery>();

/// Workers whose inbox a publish made non-empty, still to be woken (see
/// [`Shared::publish_deferred`]). Dropping it without firing would leave
/// their events waiting for the next wake-up.
#[must_use = "the workers must be woken"]
#[derive(Debug)]
pub struct Wakeups([bool; WORKERS_MAX]);

impl Default for Wakeups {
    fn default() -> Self {
        Self([false; WORKERS_MAX])
    }
}

impl Wakeups {
    /// Add `other`'s workers to these.
    pub fn merge(&mut self, other: Wakeups) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    /// Wake every worker named, except `me` (a worker drains its own inbox
    /// at the end of every turn, so it needs no eventfd write to notice).
    pub fn fire_except(&mut self, shared: &Shared, me: usize) {
        for (i, inbox) in shared.inboxes.iter().enumerate() {
            if std::mem::take(&mut self.0[i]) && i != me {
                inbox.wake();
            }
        }
    }

    /// Wake every worker named.
    pub fn fire(mut self, shared: &Shared) {
        self.fire_except(shared, usize::MAX);
    }
}

/// One worker's inbox: frames published anywhere, waiting for that worker,
/// plus the eventfd its ring keeps a read pending on.
pub struct Inbox {
    events: Mutex<InboxQueue>,
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
            events: Mutex::new(InboxQueue::default()),
            // SAFETY: fd was just created and is owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            closed: AtomicBool::new(false),
        })
    }

    /// Its worker stopped for good: drop what waits and take no more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        *lock(&self.events) = InboxQueue::default();
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Move every waiting frame into `out` (which the worker reuses).
    pub fn take_into(&self, out: &mut Vec<Delivery>) {
        let mut events = lock(&self.events);
        events.bytes = 0;
        if out.is_empty() {
            std::mem::swap(&mut events.items, out);
        } else {
            out.append(&mut events.items);
        }
    }

    /// [`Inbox::take_into`] into an empty `out`, plus the stream-wide
    /// notices with their position in `out`, and the publish answers.
    pub fn take_all(
        &self,
        out: &mut Vec<Delivery>,
        notices: &mut Vec<(usize, Frame)>,
        answers: &mut Vec<Answer>,
        ranges: &mut Vec<RangeAnswer>,
    ) {
        debug_assert!(out.is_empty());
        let mut events = lock(&self.events);
        events.bytes = 0;
        std::mem::swap(&mut events.items, out);
        notices.append(&mut events.notices);
        answers.append(&mut events.answers);
        ranges.append(&mut events.ranges);
    }

    /// Hand a resume's Redis range to this inbox's worker and wake it.
    pub fn post_range(&self, range: RangeAnswer) {
        {
            let mut events = lock(&self.events);
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            events.ranges.push(range);
        }
        // Rare (one per resume from Redis): always wake.
        self.wake();
    }

    /// Hand a publish answer to this inbox's worker and wake it.
    pub fn post_answer(&self, answer: Answer) {
        let was_empty = {
            let mut events = lock(&self.events);
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let was_empty = events.items.is_empty() && events.answers.is_empty();
            events.answers.push(answer);
            was_empty
        };
        if was_empty {
            self.wake();
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
/// Bytes one worker's inbox may hold (frames and entries) before publishing
/// is refused: large events reach this long before the frame count.
pub const INBOX_BYTES_MAX: usize = 64 << 20;

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    /// Connections the node holds at most (the capacity plan's answer).
    pub connections_max: u32,
    /// Ids, history and topics. Publishes fill the inboxes while holding
    /// it, and subscribes cut their replay snapshot and register while
    /// holding it: history order = inbox order = id order, which is what
    /// makes the seam between replay and live exact.
    hub: Mutex<HubState>,
    pub inboxes: Vec<Inbox>,
    pub shutdown: AtomicBool,
    /// SIGTERM arrived: `/readyz` fails while the node still serves, so a
    /// load balancer stops sending new streams before `shutdown` closes
    /// the listeners (`--drain-delay-ms` later).
    pub draining: AtomicBool,
    pub connections_open: AtomicU32,
    /// The settings a SIGHUP reload changed, for the workers: they compare
    /// `reload_generation` with their own once per tick, never per delivery.
    reloaded: Mutex<Option<std::sync::Arc<Config>>>,
    pub reload_generation: AtomicU64,
    /// Per-worker and publish figures for `GET /metrics`.
    pub metrics: crate::metrics::NodeMetrics,
    /// Connections per client IP, node-wide (`--max-connections-per-ip`).
    pub per_ip: crate::limit::PerIp,
    /// Publish token buckets per token or IP (`--publish-rate-per-s-max`).
    pub publish_rate: crate::limit::PublishRate,
    /// Resume token buckets per client IP (`--resume-rate-per-ip`).
    pub resume_rate: crate::limit::PublishRate,
    /// The warning that a per-IP limit refused an untrusted proxy's
    /// request: once a minute for the whole node.
    pub untrusted_proxy_hint: crate::log::OncePer,
    /// The JWT keys in force, swapped whole on SIGHUP; workers take them
    /// when `keys_generation` moves (checked per request, never per
    /// delivery).
    keys: Mutex<Option<Arc<Keys>>>,
    keys_generation: AtomicU64,
    /// Every open stream with its topics, for `GET /subscriptions`.
    presence: Mutex<presence::Registry>,
    /// Fleet mode (`--broker redis://…`): where publishes go; `None`: the
    /// embedded broker (the hub gives ids and delivers at publish time).
    pub broker: Option<crate::broker::node::BrokerLink>,
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
    /// The bus of a node with `workers` workers holding at most
    /// `connections_max` connections.
    pub fn new(config: Config, workers: usize, connections_max: u32) -> io::Result<Shared> {
        Self::with_epoch_ms(config, workers, connections_max, unix_ms_now())
    }

    /// A node whose ids start at `epoch_ms * 1000` (see `hub::id`).
    pub fn with_epoch_ms(
        config: Config,
        workers: usize,
        connections_max: u32,
        epoch_ms: u64,
    ) -> io::Result<Shared> {
        let inboxes = (0..workers)
            .map(|_| Inbox::new())
            .collect::<io::Result<Vec<_>>>()?;
        let hub = HubState {
            hub: Hub::new(config.hub_limits(), epoch_ms),
            streams: HashMap::new(),
        };
        Ok(Shared {
            hub: Mutex::new(hub),
            inboxes,
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reloaded: Mutex::new(None),
            reload_generation: AtomicU64::new(0),
            connections_open: AtomicU32::new(0),
            metrics: crate::metrics::NodeMetrics::new(workers),
            per_ip: crate::limit::PerIp::new(config.max_connections_per_ip),
            publish_rate: crate::limit::PublishRate::new(config.publish_rate_per_s_max),
            resume_rate: crate::limit::PublishRate::new(config.resume_rate_per_ip),
            untrusted_proxy_hint: crate::log::OncePer::new(UNTRUSTED_PROXY_HINT_EVERY_MS),
            // Validated at startup: a key that fails here failed there.
            keys: Mutex::new(
                Keys::load(&config.jwt_config())
                    .ok()
                    .flatten()
                    .map(Arc::new),
            ),
            keys_generation: AtomicU64::new(1),
            presence: Mutex::new(presence::Registry::default()),
            broker: None,
            connections_max,
            config,
        })
    }

    /// This bus in fleet mode: the hub starts with no run of its own (its
    /// ids are the broker's, see [`Hub::publish_with_id`]) and publishes go
    /// to `link`.
    pub fn for_broker(mut self, link: crate::broker::node::BrokerLink) -> Shared {
        let limits = self.config.hub_limits();
        lock(&self.hub).hub = Hub::new(limits, 0);
        self.broker = Some(link);
        self
    }

    /// Whether the node takes new streams: `Err` names why not. The one
    /// place `/readyz` is decided (on the public and the admin port); a new
    /// condition (a broker link, say) is one more line here.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) || self.shutdown.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if self.connections_open.load(Ordering::Relaxed) >= self.connections_max {
            return Err("at --max-connections");
        }
        match &self.broker {
            Some(link) if !link.connected() => Err("broker unavailable"),
            _ => Ok(()),
        }
    }

    /// The history to write to `--history-file`.
    pub fn export_history(&self) -> crate::hub::persist::Saved {
        lock(&self.hub).hub.export(unix_ms_now())
    }

    /// Take in a history file's events (see `Hub::restore`).
    pub fn restore_history(
        &self,
        saved: crate::hub::persist::Saved,
    ) -> Result<(usize, usize), String> {
        lock(&self.hub).hub.restore(saved)
    }

    /// Hand the workers a reloaded configuration: each picks it up on its
    /// next tick (see [`Shared::reloaded_since`]).
    pub fn publish_reload(&self, config: Config) {
        let mut reloaded = lock(&self.reloaded);
        let before = reloaded.as_deref().unwrap_or(&self.config);
        if before.max_connections_per_ip != config.max_connections_per_ip {
            self.per_ip.set_limit(config.max_connections_per_ip);
        }
        if before.publish_rate_per_s_max != config.publish_rate_per_s_max {
            self.publish_rate.set_rate(config.publish_rate_per_s_max);
        }
        lock(&self.hub).hub.set_live_limits(config.hub_limits());
        *reloaded = Some(std::sync::Arc::new(config));
        self.reload_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The reloaded configuration when it is newer than `generation` (the
    /// worker's last), with its generation. One atomic load when nothing
    /// changed.
    pub fn reloaded_since(&self, generation: u64) -> Option<(u64, std::sync::Arc<Config>)> {
        let now = self.reload_generation.load(Ordering::Acquire);
        if now == generation {
            return None;
        }
        let config = lock(&self.reloaded).clone()?;
        Some((now, config))
    }

    /// Publish for the publisher whose rate bucket is `rate_key` (its token
    /// or its client IP; one token per request, a batch too): refused with
    /// 429 past `--publish-rate-per-s-max`, else [`Shared::publish_deferred`].
    pub fn publish(
        &self,
        rate_key: u64,
        requests: Vec<PublishRequest>,
    ) -> Result<(Vec<u64>, Wakeups), PublishError> {
        if let crate::limit::rate::Verdict::Limited { retry_after_s } =
            self.publish_rate.check(rate_key)
        {
            let mut e = PublishError::new(429, None, "publish rate limit, retry later");
            e.retry_after_s = Some(retry_after_s);
            return Err(e);
        }
        self.publish_deferred(requests)
    }

    /// The rate check of [`Shared::publish`] alone (fleet mode publishes
    /// through the broker after it).
    pub fn check_publish_rate(&self, rate_key: u64) -> Result<(), PublishError> {
        if let crate::limit::rate::Verdict::Limited { retry_after_s } =
            self.publish_rate.check(rate_key)
        {
            let mut e = PublishError::new(429, None, "publish rate limit, retry later");
            e.retry_after_s = Some(retry_after_s);
            return Err(e);
        }
        Ok(())
    }

    /// Fleet mode: keep events the broker stored (in its id order, ids
    /// above everything the hub holds) and hand each to every worker, under
    /// the hub lock like a local publish, so the seam stays exact. Waits
    /// (the reader thread, never a worker) while a worker's inbox is full,
    /// until the node shuts down. Returns how many were kept; an event the
    /// hub refuses (an id that went back, `--topics-max`) is counted and
    /// dropped.
    pub fn deliver_from_broker(&self, events: Vec<crate::broker::BrokerEvent>) -> usize {
        let started = std::time::Instant::now();
        while self.inboxes_full(events.len()) {
            if self.shutdown.load(Ordering::SeqCst) {
                return 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut woken = [false; WORKERS_MAX];
        let mut kept = Vec::with_capacity(events.len());
        {
            let mut state = lock(&self.hub);
            for e in events {
                let Ok(topic) = Topic::parse(&e.topic, usize::MAX) else {
                    crate::metrics::add(&crate::broker::node::METRICS.events_dropped_total, 1);
                    continue;
                };
                let sse = e.to_sse();
                let event = crate::wire::sse::Event { id: None, ..sse };
                let request = PublishRequest {
                    topic: topic.clone(),
                    event: event.clone(),
                    private: e.private,
                };
                state.make_room_for(std::slice::from_ref(&request));
                match state.hub.publish_with_id(&topic, event, e.id, e.private) {
                    Ok(p) => kept.push((topic, p)),
                    Err(err) => {
                        crate::metrics::add(&crate::broker::node::METRICS.events_dropped_total, 1);
                        crate::warn!("broker event dropped", id = e.id, reason = err.message);
                    }
                }
            }
            for (i, inbox) in self.inboxes.iter().enumerate() {
                let mut q = lock(&inbox.events);
                if inbox.closed.load(Ordering::SeqCst) {
                    continue;
                }
                woken[i] = q.items.is_empty() && q.answers.is_empty();
                for (t, p) in &kept {
                    q.bytes += p.frame.len() + DELIVERY_BYTES;
                    q.items.push(Delivery {
                        id: p.id,
                        topic: t.clone(),
                        frame: p.frame.clone(),
                        private: p.private,
                    });
                }
            }
        }
        Wakeups(woken).fire(self);
        crate::metrics::add(
            &crate::metrics::COUNTERS.events_published_total,
            kept.len() as u64,
        );
        self.metrics
            .publish_ns
            .observe(started.elapsed().as_nanos() as u64);
        kept.len()
    }

    /// Fleet mode: the broker lost its data (`reset`) or this node lost
    /// part of its log (a gap): every open stream gets a `stentor.missed`
    /// notice, in order with the frames around it, and resumes from an id
    /// up to now get one too.
    pub fn broker_notice(&self, reset: bool) {
        let mut woken = [false; WORKERS_MAX];
        {
            let mut state = lock(&self.hub);
            let frame = if reset {
                state.hub.note_broker_reset()
            } else {
                state.hub.note_broker_gap()
            };
            for (i, inbox) in self.inboxes.iter().enumerate() {
                let mut q = lock(&inbox.events);
                if inbox.closed.load(Ordering::SeqCst) {
                    continue;
                }
                woken[i] = q.items.is_empty() && q.answers.is_empty();
                let at = q.items.len();
                q.notices.push((at, frame.clone()));
            }
        }
        Wakeups(woken).fire(self);
    }

    fn inboxes_full(&self, adding: usize) -> bool {
        let room = INBOX_FRAMES_MAX.saturating_sub(adding);
        self.inboxes.iter().any(|inbox| {
            let q = lock(&inbox.events);
            !inbox.closed.load(Ordering::SeqCst)
                && (q.items.len() > room || q.bytes > INBOX_BYTES_MAX)
        })
    }

    /// Publish `requests` in order, all or nothing: the hub gives them ids,
    /// encodes each once and keeps it in history; every worker's inbox gets
    /// every frame. Ids, history and inbox order are decided under one lock.
    pub fn publish_batch(&self, requests: Vec<PublishRequest>) -> Result<Vec<u64>, PublishError> {
        let (ids, wakeups) = self.publish_deferred(requests)?;
        wakeups.fire(self);
        Ok(ids)
    }

    /// [`Shared::publish_batch`], leaving the wake-ups to the caller: a
    /// worker answers its publisher first and wakes the other workers
    /// after, so their fan-out does not take the cores while the answer is
    /// on its way (on a node where the publisher, or a proxy relaying its
    /// answer, shares those cores).
    pub fn publish_deferred(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<(Vec<u64>, Wakeups), PublishError> {
        let started = std::time::Instant::now();
        let mut woken = [false; WORKERS_MAX];
        let ids = {
            let mut state = lock(&self.hub);
            // A worker that stopped draining must not make the node's memory
            // grow without bound: refuse (503) until it catches up.
            let room = INBOX_FRAMES_MAX.saturating_sub(requests.len());
            let full = |q: &InboxQueue| q.items.len() > room || q.bytes > INBOX_BYTES_MAX;
            if self
                .inboxes
                .iter()
                .any(|inbox| !inbox.closed.load(Ordering::SeqCst) && full(&lock(&inbox.events)))
            {
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
                woken[i] = events.items.is_empty();
                for (p, t) in published.iter().zip(&topics) {
                    events.bytes += p.frame.len() + DELIVERY_BYTES;
                    events.items.push(Delivery {
                        id: p.id,
                        topic: t.clone(),
                        frame: p.frame.clone(),
                        private: p.private,
                    });
                }
            }
            published.iter().map(|p| p.id).collect::<Vec<u64>>()
        };
        crate::metrics::add(
            &crate::metrics::COUNTERS.events_published_total,
            ids.len() as u64,
        );
        self.metrics
            .publish_ns
            .observe(started.elapsed().as_nanos() as u64);
        // Woken outside the lock (a syscall per worker would lengthen it),
        // by the caller. An inbox that was not empty already has a wake-up
        // on its way.
        Ok((ids, Wakeups(woken)))
    }

    /// What a stream on `topics` resuming from `resume` is sent before it
    /// goes live. The replay is cut (`Hub::replay_snapshot`: the through id,
    /// the eviction facts and shared handles on the topics' history chunks,
    /// O(topics)) and `register` (the worker adding the stream to its index)
    /// runs under the same lock, so no publish falls between them: every
    /// later frame reaches the worker's inbox with an id above
    /// `Replay::through_id`, every earlier one is in the replay or announced
    /// by its notice. The replay itself is built after the lock is released,
    /// so resumes do not stall publishes.
    pub fn subscribe<R>(
        &self,
        topics: &[Topic],
        resume: &ResumePoint,
        register: impl FnOnce() -> R,
    ) -> (Replay, R) {
        self.subscribe_for(topics, resume, &|_| false, register)
    }

    /// [`Self::subscribe`] for a stream that gets the private events of the
    /// topics `private_ok` accepts, in its replay as live.
    pub fn subscribe_for<R>(
        &self,
        topics: &[Topic],
        resume: &ResumePoint,
        private_ok: &dyn Fn(&str) -> bool,
        register: impl FnOnce() -> R,
    ) -> (Replay, R) {
        let (snapshot, registered) = {
            let mut state = lock(&self.hub);
            let snapshot = state.hub.replay_snapshot_for(topics, resume, private_ok);
            let registered = register();
            for t in topics {
                *state.streams.entry(t.clone()).or_insert(0) += 1;
            }
            (snapshot, registered)
        };
        // The merge and the up to `--replay-events-max` frame copies run
        // without the lock: the snapshot is immutable, so publishes that
        // land meanwhile change neither it nor the seam.
        (snapshot.replay(), registered)
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
            connections_max: u64::from(self.connections_max),
        };
        crate::metrics::render(out, &self.metrics, &snapshot);
        if let Some(link) = &self.broker {
            crate::broker::node::render(out, link);
        }
    }

    /// A connection was accepted: count it node-wide and in its client's
    /// per-IP count. Returns (whether the node has room, whether the
    /// client's IP has room); `peer_key` 0 is not counted per IP (a trusted
    /// proxy's connection: its clients are counted when they are known).
    pub fn connection_opened(&self, peer_key: u64) -> (bool, bool) {
        crate::metrics::add(&crate::metrics::COUNTERS.connections_accepted_total, 1);
        crate::metrics::add(&crate::metrics::COUNTERS.connections_open, 1);
        let open_before = self.connections_open.fetch_add(1, Ordering::Relaxed);
        let ip_room = peer_key == 0 || self.per_ip.acquire(peer_key);
        (open_before < self.connections_max, ip_room)
    }

    /// The connection's slot was freed: give back what
    /// [`Shared::connection_opened`] took. The one place the open count
    /// goes down.
    pub fn connection_closed(&self, conn: &crate::conn::Conn) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::COUNTERS
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        if conn.peer_key != 0 && !conn.has(crate::conn::flag::REFUSE_PER_IP) {
            self.per_ip.release(conn.peer_key);
        }
    }

    /// Put `keys` in force (a reload): requests decided from now on use
    /// them; open streams keep what they were granted.
    pub fn set_keys(&self, keys: Option<Arc<Keys>>) {
        *lock(&self.keys) = keys;
        self.keys_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The keys in force when they changed since generation `seen`, with
    /// their generation (one atomic load when they did not).
    pub fn keys_if_newer(&self, seen: u64) -> Option<(u64, Option<Arc<Keys>>)> {
        if self.keys_generation.load(Ordering::Acquire) == seen {
            return None;
        }
        let keys = lock(&self.keys);
        Some((self.keys_generation.load(Ordering::Acquire), keys.clone()))
    }

    /// A stream opened: list it for presence.
    pub fn presence_open(&self, id: presence::StreamId, entry: presence::Entry) {
        lock(&self.presence).open(id, entry);
    }

    /// A stream closed.
    pub fn presence_close(&self, id: presence::StreamId) {
        lock(&self.presence).close(id);
    }

    /// One page of `GET /subscriptions` (JSON).
    pub fn presence_page(&self, query: &presence::Query) -> String {
        lock(&self.presence).page_json(query)
    }

    /// Open streams listed for presence (a gauge).
    pub fn presence_len(&self) -> usize {
        lock(&self.presence).len()
    }

    /// Flag shutdown and wake every worker so it notices.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for inbox in &self.inboxes {
            inbox.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH_MS: u64 = 1_764_361_697_000;

    fn shared(workers: usize) -> Shared {
        use clap::Parser;
        let config = Config::try_parse_from(["stentor"]).unwrap();
        Shared::with_epoch_ms(config, workers, 1000, EPOCH_MS).unwrap()
    }

    fn request(topic: &str, data: &str) -> PublishRequest {
        PublishRequest {
            topic: Topic::parse(topic, 128).unwrap(),
            event: crate::wire::sse::Event {
                data: data.into(),
                ..Default::default()
            },
            private: false,
        }
    }

    /// Whether worker `i`'s wake-up eventfd has a count waiting.
    fn woken(s: &Shared, i: usize) -> bool {
        let mut p = libc::pollfd {
            fd: s.inboxes[i].wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn a_deferred_publish_wakes_the_other_workers_only_when_fired() {
        let s = shared(3);
        let (ids, mut wakeups) = s.publish_deferred(vec![request("t", "a")]).unwrap();
        assert_eq!(ids.len(), 1);
        // Every inbox holds the event, nobody was woken yet.
        assert!((0..3).all(|i| !woken(&s, i)));
        let (_, more) = s.publish_deferred(vec![request("t", "b")]).unwrap();
        wakeups.merge(more);
        wakeups.fire_except(&s, 1);
        assert!(woken(&s, 0) && woken(&s, 2));
        assert!(!woken(&s, 1), "the publishing worker drains its own inbox");
        // Fired once: a second fire writes nothing more.
        wakeups.fire_except(&s, usize::MAX);
        assert!(!woken(&s, 1));
        let mut items = Vec::new();
        let (mut n, mut a, mut r) = (Vec::new(), Vec::new(), Vec::new());
        s.inboxes[1].take_all(&mut items, &mut n, &mut a, &mut r);
        assert_eq!(items.len(), 2);
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

    /// Defect: the inbox was bounded by frame count only, so large events
    /// filled a stalled worker's inbox with gigabytes. Now bytes bound it too.
    #[test]
    fn a_full_inbox_by_bytes_refuses_publishing() {
        let s = shared(1);
        let big = "x".repeat(1 << 20);
        let mut published = 0;
        let refused = loop {
            match s.publish_batch(vec![request("t", &big)]) {
                Ok(_) => published += 1,
                Err(e) => break e,
            }
            assert!(published <= 100, "never refused");
        };
        assert_eq!(refused.status, 503);
        assert!(published * (1 << 20) >= INBOX_BYTES_MAX);
        assert!(published < INBOX_FRAMES_MAX);
        let mut drained = Vec::new();
        s.inboxes[0].take_into(&mut drained);
        assert!(s.publish_batch(vec![request("t", &big)]).is_ok());
    }

    #[test]
    fn a_full_node_forgets_topics_nobody_listens_to() {
        use clap::Parser;
        let config = Config::try_parse_from(["stentor", "--topics-max", "2"]).unwrap();
        let s = Shared::with_epoch_ms(config, 1, 1000, EPOCH_MS).unwrap();
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

    fn broker_event(id: u64, topic: &str, data: &str) -> crate::broker::BrokerEvent {
        crate::broker::BrokerEvent {
            id,
            topic: topic.into(),
            event: None,
            data: data.into(),
            retry: None,
            private: false,
        }
    }

    #[test]
    fn broker_events_keep_their_ids_in_every_inbox_and_never_go_back() {
        let s = shared(2);
        let limits = s.config.hub_limits();
        lock(&s.hub).hub = Hub::new(limits, 0);
        let base = 1_764_361_697_000_000;
        let kept = s.deliver_from_broker(vec![
            broker_event(base + 5, "t", "a"),
            broker_event(base + 9, "u", "b"),
        ]);
        assert_eq!(kept, 2);
        // An id at or below the last one is dropped, never delivered.
        assert_eq!(
            s.deliver_from_broker(vec![broker_event(base + 9, "t", "c")]),
            0
        );
        s.broker_notice(true);
        assert_eq!(
            s.deliver_from_broker(vec![broker_event(base + 20, "t", "d")]),
            1
        );
        for inbox in &s.inboxes {
            let (mut got, mut notices, mut answers, mut ranges) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            inbox.take_all(&mut got, &mut notices, &mut answers, &mut ranges);
            let ids: Vec<u64> = got.iter().map(|d| d.id).collect();
            assert_eq!(ids, [base + 5, base + 9, base + 20]);
            assert!(got[0]
                .frame
                .starts_with(format!("id: {}\n", base + 5).as_bytes()));
            // The reset notice sits between the old run and the new one.
            assert_eq!(notices.len(), 1);
            assert_eq!(notices[0].0, 2);
            assert!(String::from_utf8_lossy(&notices[0].1).contains("broker_reset"));
        }
        // The node's run starts just before the first id it read: a resume
        // from before the reset is told so; one from before the run too.
        let t = [Topic::parse("t", 128).unwrap()];
        let (r, ()) = s.subscribe(&t, &ResumePoint::After(base + 5), || ());
        assert_eq!(r.missed, Some(crate::hub::MissedReason::BrokerReset));
        let (r, ()) = s.subscribe(&t, &ResumePoint::After(base + 1), || ());
        assert_eq!(r.missed, Some(crate::hub::MissedReason::Restarted));
        let (r, ()) = s.subscribe(&t, &ResumePoint::After(base + 20), || ());
        assert_eq!((r.missed, r.through_id), (None, base + 20));
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
}
