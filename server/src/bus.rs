//! The bus: the publish state every worker and the node share. Ids,
//! history and topics (the hub) behind one lock, one inbox per worker, and
//! every publish refusal with its counter. Delivery itself takes no lock:
//! each worker walks its own index.
//!
//! Used by the node (which creates it and asks it to shut down) and by the
//! workers (which publish, subscribe and drain their inbox through it); it
//! knows neither.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::config::Config;
use crate::hub::id::ResumePoint;
use crate::hub::publish::{PublishError, PublishRequest};
use crate::hub::topic::Topic;
use crate::hub::{Hub, HubStats, Replay};
use crate::wire::sse::Frame;

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
}

/// The frames waiting in one inbox and what they cost.
#[derive(Default)]
struct InboxQueue {
    items: Vec<Delivery>,
    /// Frame bytes plus entry size of every item (frames are shared with
    /// history and other inboxes: this is what the node would hold for
    /// this worker alone if it fell behind).
    bytes: usize,
}

/// What one delivery costs an inbox besides its frame bytes.
const DELIVERY_BYTES: usize = std::mem::size_of::<Delivery>();

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
            connections_max,
            config,
        })
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
        Ok(())
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
    /// 429 past `--publish-rate-per-s-max`, else [`Shared::publish_batch`].
    pub fn publish(
        &self,
        rate_key: u64,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<u64>, PublishError> {
        if let crate::limit::rate::Verdict::Limited { retry_after_s } =
            self.publish_rate.check(rate_key)
        {
            let mut e = PublishError::new(429, None, "publish rate limit, retry later");
            e.retry_after_s = Some(retry_after_s);
            return Err(e);
        }
        self.publish_batch(requests)
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
                    });
                }
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
        let (snapshot, registered) = {
            let mut state = lock(&self.hub);
            let snapshot = state.hub.replay_snapshot(topics, resume);
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
