//! The publishing side of a node: assigns ids, encodes each event once,
//! keeps every topic's history, and answers "what does a resuming client get".
//!
//! One `Hub` per node. The data plane holds it behind a lock and calls
//! [`Hub::publish`] / [`Hub::publish_batch`] on every publish and
//! [`Hub::replay_snapshot`] on every subscribe; both are bounded (a batch by
//! `batch_events_max`; a snapshot is O(topics) plus fewer than
//! `CHUNK_EVENTS` frame refcounts per topic), so the lock is never held for
//! long. The replay itself (up to `replay_events_max` frames and a merge) is
//! built from the snapshot after the lock is released
//! ([`ReplaySnapshot::replay`]).
//!
//! # The seam between replay and live
//!
//! A subscriber is registered for live frames and its replay is cut under
//! the same lock as publishes. `Replay::through_id` is the last id the node
//! had handed out at that moment: every event with an id at or below it is
//! either in the replay (if it is one of the stream's topics and still kept)
//! or is covered by the missed notice; every event above it was published
//! after and reaches the stream live. The snapshot holds immutable history
//! chunks, so building it later gives the replay of that moment. So the
//! live side drops frames with `id <= through_id` (some may already sit in
//! a worker's inbox) and the client sees each event once, in order, with no
//! gap.

use std::collections::{BinaryHeap, HashMap, HashSet};

use super::history::{Entries, History, HistoryLimits, HistoryView};
use super::id::{wire_id, IdOrigin, IdSeq, ResumePoint};
use super::publish::{PublishError, PublishRequest};
use super::topic::Topic;
use crate::wire::sse::{encode, EncodeError, Event, Frame};

/// Topics a node keeps when the operator sets nothing else. With the default
/// history bounds this caps history memory at topics × 1 MiB in the worst
/// case; lower it (or the history bounds) on small machines.
pub const TOPICS_MAX_DEFAULT: usize = 10_000;

/// Events one replay may carry when the operator sets nothing else: ten
/// topics' worth of default history (1000 each). It bounds the time the hub
/// lock is held by one subscribe; the byte bound usually bites first.
pub const REPLAY_EVENTS_MAX_DEFAULT: usize = 10_000;

/// The event type of the notice a client gets when it may have missed events.
pub const MISSED_EVENT_TYPE: &str = "stentor.missed";

/// Every bound the hub enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Longest topic name in bytes.
    pub topic_bytes_max: usize,
    /// Topics (with state in the hub) a node holds; a publish to a new topic
    /// past it is refused with 503.
    pub topics_max: usize,
    /// Each topic's history bounds.
    pub history: HistoryLimits,
    /// Most events one replay sends; past it the client gets the newest ones
    /// and a `too_far_behind` notice.
    pub replay_events_max: usize,
    /// Most frame bytes one replay sends (same rule).
    pub replay_bytes_max: usize,
}

/// One published event: its id and its wire bytes, to hand to every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: u64,
    pub frame: Frame,
    /// For streams whose token covers the topic only.
    pub private: bool,
}

/// Why a client may have missed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissedReason {
    /// Events after the client's id were dropped from history.
    Evicted,
    /// The id is not one this node could have handed out.
    UnknownId,
    /// The id is from before this node's current run.
    Restarted,
    /// More events are kept after the id than one replay may carry; the
    /// client got the newest ones.
    TooFarBehind,
    /// Fleet mode: Redis lost its data (or this node's reader fell behind
    /// its log) after the client's id; what happened in between is unknown.
    BrokerReset,
}

impl MissedReason {
    /// The `reason` in the notice and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedReason::Evicted => "evicted",
            MissedReason::UnknownId => "unknown_id",
            MissedReason::Restarted => "restarted",
            MissedReason::TooFarBehind => "too_far_behind",
            MissedReason::BrokerReset => "broker_reset",
        }
    }
}

/// What a subscribing client is sent before it goes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The frames to write, in order: the `stentor.missed` notice first when
    /// `missed` is set, then the kept events after the client's id, in id
    /// order, each once.
    pub frames: Vec<Frame>,
    pub missed: Option<MissedReason>,
    /// Highest id this replay accounts for; the live stream must skip frames
    /// with `id <= through_id` (see the module docs).
    pub through_id: u64,
}

impl Replay {
    /// The replayed events, without the notice.
    pub fn events(&self) -> &[Frame] {
        let skip = usize::from(self.missed.is_some());
        self.frames.get(skip..).unwrap_or(&[])
    }
}

/// A replay cut from the hub but not yet built: see [`Hub::replay_snapshot`].
/// Holds shared handles on the history chunks it needs, so build it soon
/// (each one pins up to its topics' histories as they were).
#[derive(Debug, Clone)]
pub struct ReplaySnapshot {
    through_id: u64,
    /// The client's `Last-Event-ID` as it goes in the notice.
    echo: String,
    missed: Option<MissedReason>,
    /// The requested topics holding events after the resume id.
    views: Vec<HistoryView>,
    /// Per view: whether the stream gets the topic's private events.
    private_ok: Vec<bool>,
    replay_events_max: usize,
    replay_bytes_max: usize,
    /// A subscribe without a resume id: nothing to replay.
    live: bool,
}

impl ReplaySnapshot {
    /// Highest id the replay will account for (see [`Replay::through_id`]).
    pub fn through_id(&self) -> u64 {
        self.through_id
    }

    /// Build the replay: merge the topics' entries newest first within the
    /// replay bounds and copy their frames (a refcount each). Needs no lock.
    pub fn replay(self) -> Replay {
        if self.live {
            return Replay {
                frames: Vec::new(),
                missed: None,
                through_id: self.through_id,
            };
        }
        let mut missed = self.missed;
        let (events, truncated) = self.newest_within_bounds();
        if truncated && missed.is_none() {
            missed = Some(MissedReason::TooFarBehind);
        }
        let mut frames = Vec::with_capacity(events.len() + 1);
        if let Some(reason) = missed {
            // The notice carries an id only when no event follows it: then
            // the client's next reconnect resumes exactly from `through_id`
            // instead of repeating the same notice.
            let notice_id = events.is_empty().then_some(self.through_id);
            frames.push(missed_notice(reason, &self.echo, notice_id));
        }
        frames.extend(events);
        debug_assert!(frames.len() <= self.replay_events_max + 1);
        Replay {
            frames,
            missed,
            through_id: self.through_id,
        }
    }

    /// Merge the views newest first until either replay bound would be
    /// passed; return the chosen frames oldest first, and whether any were
    /// left out. The newest are kept because the live stream continues from
    /// the newest: dropping old ones leaves one gap, before the replay, which
    /// the notice announces.
    fn newest_within_bounds(&self) -> (Vec<Frame>, bool) {
        if let [view] = &self.views[..] {
            return self.newest_of_one(view.entries(), self.private_ok[0]);
        }
        let mut ranges: Vec<Entries<'_>> = self.views.iter().map(HistoryView::entries).collect();
        // Max-heap of (id of the range's newest remaining entry, range index).
        let mut heap: BinaryHeap<(u64, usize)> = ranges
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.peek_back().map(|e| (e.id, i)))
            .collect();
        let mut chosen: Vec<Frame> = Vec::new();
        let mut bytes = 0usize;
        let mut truncated = false;
        let mut last_id = u64::MAX;
        while let Some((id, i)) = heap.pop() {
            let range = &mut ranges[i];
            let Some(entry) = range.next_back() else {
                break;
            };
            debug_assert_eq!(entry.id, id);
            debug_assert!(id < last_id, "ids are unique across topics");
            last_id = id;
            if entry.private && !self.private_ok[i] {
                // Not this stream's: passed over, and costs it nothing.
                if let Some(next) = range.peek_back() {
                    heap.push((next.id, i));
                }
                continue;
            }
            if chosen.len() == self.replay_events_max
                || bytes + entry.frame.len() > self.replay_bytes_max
            {
                truncated = true;
                break;
            }
            bytes += entry.frame.len();
            chosen.push(entry.frame.clone());
            if let Some(next) = range.peek_back() {
                heap.push((next.id, i));
            }
        }
        chosen.reverse();
        (chosen, truncated)
    }

    /// [`ReplaySnapshot::newest_within_bounds`] for one topic (the common
    /// resume): no merge, so no heap.
    fn newest_of_one(&self, entries: Entries<'_>, private_ok: bool) -> (Vec<Frame>, bool) {
        let mut chosen: Vec<Frame> = Vec::with_capacity(entries.len().min(self.replay_events_max));
        let mut bytes = 0usize;
        for entry in entries.rev().filter(|e| private_ok || !e.private) {
            if chosen.len() == self.replay_events_max
                || bytes + entry.frame.len() > self.replay_bytes_max
            {
                chosen.reverse();
                return (chosen, true);
            }
            bytes += entry.frame.len();
            chosen.push(entry.frame.clone());
        }
        chosen.reverse();
        (chosen, false)
    }
}

/// Figures for `/metrics`, kept up to date on every publish (O(1) to read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    pub topics: usize,
    pub history_events: usize,
    pub history_bytes: usize,
    pub published_total: u64,
    pub evicted_events_total: u64,
    pub evicted_bytes_total: u64,
    pub topics_dropped_total: u64,
    pub last_id: u64,
}

#[derive(Debug)]
pub struct Hub {
    limits: HubLimits,
    ids: IdSeq,
    topics: HashMap<Topic, History>,
    /// Highest id of any topic dropped by [`Hub::drop_idle_topics`]. A topic
    /// the hub no longer (or not yet) knows may have had events up to here,
    /// so resuming before it reports a gap rather than risking a silent one.
    forgotten_through_id: u64,
    /// Fleet mode: the last id before the broker lost its data; a resume
    /// from at or before it may have missed events nobody can replay.
    broker_reset_through_id: u64,
    stats: HubStats,
}

impl Hub {
    /// A hub for a run started at `epoch_ms` (Unix milliseconds; see
    /// `hub::id` for why the start time is part of every id).
    pub fn new(limits: HubLimits, epoch_ms: u64) -> Hub {
        let ids = IdSeq::new(epoch_ms);
        Hub {
            limits,
            stats: HubStats {
                last_id: ids.last(),
                ..HubStats::default()
            },
            ids,
            topics: HashMap::new(),
            forgotten_through_id: 0,
            broker_reset_through_id: 0,
        }
    }

    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    /// A reload's limits: topic names, topic count and replay size apply
    /// from the next publish or subscribe; each topic's history bounds size
    /// rings already built and stay (they need a restart).
    pub fn set_live_limits(&mut self, new: HubLimits) {
        self.limits = HubLimits {
            history: self.limits.history,
            ..new
        };
    }

    /// Everything a history file keeps (`hub::persist`): the id ranges
    /// covered, each topic's kept events and eviction mark.
    pub fn export(&self, written_ms: u64) -> crate::hub::persist::Saved {
        let mut topics: Vec<crate::hub::persist::SavedTopic> = self
            .topics
            .iter()
            .map(|(topic, h)| crate::hub::persist::SavedTopic {
                topic: topic.clone(),
                evicted_through: h.evicted_through_id(),
                events: h.after(0).map(|e| (e.id, e.frame.clone())).collect(),
            })
            .collect();
        // Newest topics first: if the file bound cuts, it cuts the stalest.
        topics.sort_by_key(|t| std::cmp::Reverse(t.events.last().map_or(0, |e| e.0)));
        crate::hub::persist::Saved {
            written_ms,
            ranges: self.ids.covered(),
            forgotten_through: self.forgotten_through_id,
            topics,
        }
    }

    /// Take in a history file's events, before (a restart) or after (an
    /// upgrade, see `node`) this run published its own: the file's ids
    /// must all be below this run's base. A topic this run already evicted
    /// from keeps only its own events (the file's are older than the gap).
    /// Topics past `--topics-max` are skipped. Returns (topics, events)
    /// taken, or why nothing was.
    pub fn restore(&mut self, saved: crate::hub::persist::Saved) -> Result<(usize, usize), String> {
        if !self.ids.restore(&saved.ranges) {
            return Err(format!(
                "the file's ids (through {}) are not below this run's first id {}: a clock that \
                 stepped back, or a file from another node",
                saved.last_id(),
                self.ids.base()
            ));
        }
        self.forgotten_through_id = self.forgotten_through_id.max(saved.forgotten_through);
        let (mut topics, mut events) = (0, 0);
        for t in saved.topics {
            let existing = self.topics.get(t.topic.as_str());
            if existing.is_some_and(|h| h.evicted_through_id() > 0) {
                continue;
            }
            if existing.is_none() && self.topics.len() >= self.limits.topics_max {
                continue;
            }
            let mut h = History::with_evicted_through(self.limits.history, t.evicted_through);
            for (id, frame) in t.events {
                let _ = h.push(id, frame);
                events += 1;
            }
            if let Some(own) = self.topics.get(t.topic.as_str()) {
                for e in own.after(0) {
                    let _ = h.push(e.id, e.frame.clone());
                }
            }
            self.topics.insert(t.topic, h);
            topics += 1;
        }
        self.stats.topics = self.topics.len();
        self.stats.history_events = self.topics.values().map(History::len).sum();
        self.stats.history_bytes = self.topics.values().map(History::bytes).sum();
        Ok((topics, events))
    }

    /// The last id handed out (the run's base before the first publish).
    pub fn last_id(&self) -> u64 {
        self.ids.last()
    }

    /// Every id of this run is greater than this.
    pub fn base_id(&self) -> u64 {
        self.ids.base()
    }

    pub fn stats(&self) -> HubStats {
        self.stats
    }

    /// A topic's history, if the hub holds the topic.
    pub fn history(&self, topic: &str) -> Option<&History> {
        self.topics.get(topic)
    }

    /// Publish one event: assign the next id, set `event.id`, encode once,
    /// keep the frame in the topic's history. `event.id` must be `None`.
    pub fn publish(&mut self, topic: &Topic, event: Event) -> Result<Published, PublishError> {
        let id = self.check_room(std::iter::once(topic))?;
        let frame = encode_with_id(event, id)?;
        self.commit(topic, id, frame.clone(), false);
        Ok(Published {
            id,
            frame,
            private: false,
        })
    }

    /// Publish a batch in order, all or nothing: every event is checked and
    /// encoded before the first one is given an id.
    pub fn publish_batch(
        &mut self,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<Published>, PublishError> {
        let first_id = self.check_room(requests.iter().map(|r| &r.topic))?;
        let mut prepared = Vec::with_capacity(requests.len());
        for (i, request) in requests.into_iter().enumerate() {
            let id = first_id + i as u64;
            let private = request.private;
            let frame = encode_with_id(request.event, id).map_err(|e| PublishError {
                message: format!("events[{i}]: {}", e.message),
                ..e
            })?;
            prepared.push((request.topic, Published { id, frame, private }));
        }
        let mut published = Vec::with_capacity(prepared.len());
        for (topic, p) in prepared {
            self.commit(&topic, p.id, p.frame.clone(), p.private);
            published.push(p);
        }
        Ok(published)
    }

    /// Keep an event the fleet's broker gave `id` (fleet mode: the hub
    /// assigns no ids, it follows the broker's). `id` must be above every
    /// id the hub holds, or the event is refused (ids never go back for a
    /// client); so are events past `topics_max` (see `bus`).
    pub fn publish_with_id(
        &mut self,
        topic: &Topic,
        event: Event,
        id: u64,
        private: bool,
    ) -> Result<Published, PublishError> {
        if id <= self.ids.last() {
            return Err(PublishError::new(
                503,
                None,
                format!("id {id} is not above the last id {}", self.ids.last()),
            ));
        }
        self.check_room(std::iter::once(topic))?;
        let frame = encode_with_id(event, id)?;
        let advanced = self.ids.advance_to(id);
        debug_assert!(advanced);
        self.commit_with_id(topic, id, frame.clone(), private);
        Ok(Published { id, frame, private })
    }

    /// The fleet's broker lost its data: a resume from an id up to now is
    /// told `broker_reset`. Returns the notice every open stream gets.
    pub fn note_broker_reset(&mut self) -> Frame {
        self.broker_reset_through_id = self.ids.last();
        missed_notice(MissedReason::BrokerReset, "", None)
    }

    /// The notice every open stream gets when this node lost events of the
    /// fleet's log (its reader fell behind the log's trimming).
    pub fn note_broker_gap(&mut self) -> Frame {
        self.broker_reset_through_id = self.ids.last();
        missed_notice(MissedReason::Evicted, "", None)
    }

    /// Check that events for `topics` can be published (ids left, room for
    /// new topics) and return the id the first of them will get.
    fn check_room<'a>(&self, topics: impl Iterator<Item = &'a Topic>) -> Result<u64, PublishError> {
        let mut count = 0u64;
        let mut new_topics: HashSet<&str> = HashSet::new();
        for topic in topics {
            count += 1;
            if !self.topics.contains_key(topic.as_str()) {
                new_topics.insert(topic.as_str());
            }
        }
        if self.topics.len() + new_topics.len() > self.limits.topics_max {
            return Err(PublishError::new(
                503,
                Some("topic"),
                format!(
                    "this node holds its maximum of {} topics; publish to an existing topic or retry later",
                    self.limits.topics_max
                ),
            ));
        }
        if !self.ids.has_room_for(count) {
            return Err(PublishError::new(
                503,
                None,
                "this node's id sequence is exhausted; restart it",
            ));
        }
        Ok(self.ids.last() + 1)
    }

    /// Give `id` out and keep `frame` in `topic`'s history.
    fn commit(&mut self, topic: &Topic, id: u64, frame: Frame, private: bool) {
        let next = self.ids.next_id();
        assert_eq!(next, Some(id), "ids are committed in the order checked");
        self.commit_with_id(topic, id, frame, private);
    }

    /// Keep `frame` (event `id`, already the sequence's last) in `topic`'s
    /// history.
    fn commit_with_id(&mut self, topic: &Topic, id: u64, frame: Frame, private: bool) {
        debug_assert_eq!(self.ids.last(), id);
        let frame_bytes = frame.len();
        let history = match self.topics.get_mut(topic.as_str()) {
            Some(h) => h,
            None => {
                self.stats.topics += 1;
                self.topics.entry(topic.clone()).or_insert_with(|| {
                    History::with_evicted_through(self.limits.history, self.forgotten_through_id)
                })
            }
        };
        let evicted = history.push_flagged(id, frame, private);
        self.stats.published_total += 1;
        self.stats.last_id = id;
        self.stats.history_events = self.stats.history_events + 1 - evicted.events;
        self.stats.history_bytes = self.stats.history_bytes + frame_bytes - evicted.bytes;
        self.stats.evicted_events_total += evicted.events as u64;
        self.stats.evicted_bytes_total += evicted.bytes as u64;
        debug_assert_eq!(self.stats.topics, self.topics.len());
    }

    /// What a client subscribing to `topics` from `resume` is sent before it
    /// goes live. Duplicate topics count once. See `docs/design/architecture.md` for each case.
    /// The same as [`Hub::replay_snapshot`] then [`ReplaySnapshot::replay`].
    pub fn replay(&self, topics: &[Topic], resume: &ResumePoint) -> Replay {
        self.replay_snapshot(topics, resume).replay()
    }

    /// Everything [`Hub::replay`] needs, cut so the replay can be built after
    /// the hub's lock is released: the through id, whether something is
    /// missed (the eviction facts as of now), and a [`HistoryView`] per
    /// requested topic. O(topics) plus fewer than `CHUNK_EVENTS` frame
    /// refcounts per topic, whatever the history holds; the merge and the
    /// up to `replay_events_max` frame copies happen in
    /// [`ReplaySnapshot::replay`]. Publishes after this call do not change
    /// what the snapshot replays.
    pub fn replay_snapshot(&self, topics: &[Topic], resume: &ResumePoint) -> ReplaySnapshot {
        self.replay_snapshot_for(topics, resume, &|_| false)
    }

    /// [`Self::replay_snapshot`] for a stream that gets the private events
    /// of the topics `private_ok` accepts (and only the public ones of the
    /// others).
    pub fn replay_snapshot_for(
        &self,
        topics: &[Topic],
        resume: &ResumePoint,
        private_ok: &dyn Fn(&str) -> bool,
    ) -> ReplaySnapshot {
        let through_id = self.ids.last();
        let (after, echo, mut missed) = match resume {
            ResumePoint::Live => {
                return ReplaySnapshot {
                    through_id,
                    echo: String::new(),
                    missed: None,
                    views: Vec::new(),
                    private_ok: Vec::new(),
                    replay_events_max: self.limits.replay_events_max,
                    replay_bytes_max: self.limits.replay_bytes_max,
                    live: true,
                }
            }
            ResumePoint::After(k) => match self.ids.classify(*k) {
                IdOrigin::ThisRun if *k <= self.broker_reset_through_id => {
                    (*k, wire_id(*k), Some(MissedReason::BrokerReset))
                }
                IdOrigin::ThisRun => (*k, wire_id(*k), None),
                IdOrigin::BeforeThisRun => (0, wire_id(*k), Some(MissedReason::Restarted)),
                IdOrigin::NotYetAssigned => (0, wire_id(*k), Some(MissedReason::UnknownId)),
            },
            ResumePoint::Unknown(raw) => (0, raw.clone(), Some(MissedReason::UnknownId)),
        };

        let mut distinct: Vec<&str> = topics.iter().map(Topic::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();

        let mut views: Vec<HistoryView> = Vec::with_capacity(distinct.len());
        let mut private: Vec<bool> = Vec::with_capacity(distinct.len());
        for name in &distinct {
            match self.topics.get(*name) {
                Some(h) => {
                    if h.evicted_after(after) && missed.is_none() {
                        missed = Some(MissedReason::Evicted);
                    }
                    if h.newest_id() > after && !h.is_empty() {
                        views.push(h.view_after(after));
                        private.push(private_ok(name));
                    }
                }
                None => {
                    if self.forgotten_through_id > after && missed.is_none() {
                        missed = Some(MissedReason::Evicted);
                    }
                }
            }
        }
        ReplaySnapshot {
            through_id,
            echo,
            missed,
            views,
            private_ok: private,
            replay_events_max: self.limits.replay_events_max,
            replay_bytes_max: self.limits.replay_bytes_max,
            live: false,
        }
    }

    /// Drop topics nobody is subscribed to (`is_subscribed` answers for the
    /// whole node) and whose history is empty, or every unsubscribed topic
    /// when `with_history` (e.g. when `topics_max` is near). O(topics): call
    /// it from a coarse timer, not per publish. Returns how many were dropped.
    pub fn drop_idle_topics(
        &mut self,
        mut is_subscribed: impl FnMut(&Topic) -> bool,
        with_history: bool,
    ) -> usize {
        let mut forgotten = self.forgotten_through_id;
        let mut dropped_events = 0usize;
        let mut dropped_bytes = 0usize;
        let before = self.topics.len();
        self.topics.retain(|topic, h| {
            let idle = (with_history || h.is_empty()) && !is_subscribed(topic);
            if idle {
                forgotten = forgotten.max(h.newest_id()).max(h.evicted_through_id());
                dropped_events += h.len();
                dropped_bytes += h.bytes();
            }
            !idle
        });
        let dropped = before - self.topics.len();
        self.forgotten_through_id = forgotten;
        self.stats.topics = self.topics.len();
        self.stats.history_events -= dropped_events;
        self.stats.history_bytes -= dropped_bytes;
        self.stats.topics_dropped_total += dropped as u64;
        dropped
    }
}

/// Set the server's id on `event` and encode it.
fn encode_with_id(mut event: Event, id: u64) -> Result<Frame, PublishError> {
    if event.id.is_some() {
        return Err(PublishError::new(
            400,
            Some("id"),
            "ids are assigned by the server; omit `id`",
        ));
    }
    event.id = Some(wire_id(id));
    encode(&event).map_err(encode_error)
}

fn encode_error(e: EncodeError) -> PublishError {
    PublishError::new(400, Some(e.field()), e.to_string())
}

/// The `stentor.missed` notice: `{"reason":"…","last_event_id":"…"}`.
///
/// The data is JSON from serde_json, which escapes every control character,
/// so it is one `data:` line whatever the client's `Last-Event-ID` held.
pub fn missed_notice(reason: MissedReason, last_event_id: &str, id: Option<u64>) -> Frame {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        reason: &'static str,
        last_event_id: &'a str,
    }
    let data = serde_json::to_string(&Data {
        reason: reason.as_str(),
        last_event_id,
    })
    .unwrap_or_else(|_| format!(r#"{{"reason":"{}"}}"#, reason.as_str()));
    debug_assert!(!data.contains(['\r', '\n']));
    let notice = Event {
        event: Some(MISSED_EVENT_TYPE.to_owned()),
        id: id.map(wire_id),
        data,
        retry: None,
    };
    // Cannot fail: the type is a constant and the id is digits. The fallback
    // keeps the notice (minus details) rather than a panic or a silent gap.
    encode(&notice).unwrap_or_else(|_| {
        debug_assert!(false, "the missed notice must encode");
        Frame::from_static(b"event: stentor.missed\ndata: {}\n\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sse::{Item, Parser};

    const EPOCH_MS: u64 = 1; // ids start at 1001

    fn limits() -> HubLimits {
        HubLimits {
            topic_bytes_max: 64,
            topics_max: 8,
            history: HistoryLimits {
                events_max: 4,
                bytes_max: 1 << 20,
            },
            replay_events_max: 100,
            replay_bytes_max: 1 << 20,
        }
    }

    fn t(name: &str) -> Topic {
        Topic::parse(name, 64).unwrap()
    }

    fn ev(data: &str) -> Event {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    fn publish(hub: &mut Hub, topic: &str, data: &str) -> Published {
        hub.publish(&t(topic), ev(data)).unwrap()
    }

    fn text(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    /// What a browser dispatches for `frames`: (type, data, last id).
    fn dispatched(frames: &[Frame]) -> Vec<(String, String, String)> {
        let mut parser = Parser::new();
        let mut items = Vec::new();
        for f in frames {
            parser.feed(f, &mut items);
        }
        items
            .into_iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some((e.event_type, e.data, e.last_event_id)),
                Item::Comment(_) => None,
            })
            .collect()
    }

    #[test]
    fn private_events_are_replayed_only_where_allowed() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        let req = |topic: &str, data: &str, private: bool| PublishRequest {
            topic: t(topic),
            event: ev(data),
            private,
        };
        hub.publish_batch(vec![
            req("a", "a1", false),
            req("a", "a2", true),
            req("b", "b1", true),
            req("b", "b2", false),
        ])
        .unwrap();
        let data = |topics: &[Topic], ok: &dyn Fn(&str) -> bool| -> Vec<String> {
            let replay = hub
                .replay_snapshot_for(topics, &ResumePoint::After(1000), ok)
                .replay();
            assert_eq!(replay.missed, None);
            dispatched(&replay.frames)
                .into_iter()
                .map(|(_, d, _)| d)
                .collect()
        };
        // One topic (no merge) and two (the merge), each way.
        assert_eq!(data(&[t("a")], &|_| false), ["a1"]);
        assert_eq!(data(&[t("a")], &|_| true), ["a1", "a2"]);
        assert_eq!(data(&[t("a"), t("b")], &|_| false), ["a1", "b2"]);
        assert_eq!(data(&[t("a"), t("b")], &|t| t == "b"), ["a1", "b1", "b2"]);
        assert_eq!(data(&[t("a"), t("b")], &|_| true), ["a1", "a2", "b1", "b2"]);
        // The plain replay is the public one.
        let public = hub.replay(&[t("a"), t("b")], &ResumePoint::After(1000));
        assert_eq!(dispatched(&public.frames).len(), 2);
    }

    #[test]
    fn publish_assigns_ids_encodes_once_and_keeps_the_frame() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        assert_eq!(hub.last_id(), 1000);
        let a = publish(&mut hub, "a", "one\ntwo");
        let b = hub
            .publish(
                &t("b"),
                Event {
                    event: Some("order".into()),
                    retry: Some(500),
                    ..ev("x")
                },
            )
            .unwrap();
        assert_eq!((a.id, b.id), (1001, 1002));
        assert_eq!(
            text(&[a.frame.clone(), b.frame.clone()]),
            [
                "id: 1001\ndata: one\ndata: two\n\n",
                "event: order\nid: 1002\nretry: 500\ndata: x\n\n"
            ]
        );
        let kept = hub.history("a").unwrap().after(0).next().unwrap();
        assert_eq!(kept.id, 1001);
        assert_eq!(kept.frame.as_ptr(), a.frame.as_ptr(), "shared, not copied");
        let s = hub.stats();
        assert_eq!(
            (s.topics, s.history_events, s.published_total, s.last_id),
            (2, 2, 2, 1002)
        );
        assert_eq!(s.history_bytes, a.frame.len() + b.frame.len());
    }

    #[test]
    fn refused_publishes_consume_no_id() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        let e = hub
            .publish(
                &t("a"),
                Event {
                    id: Some("mine".into()),
                    ..ev("x")
                },
            )
            .unwrap_err();
        assert_eq!((e.status, e.field), (400, Some("id")));
        let e = hub
            .publish(
                &t("a"),
                Event {
                    event: Some("a\nb".into()),
                    ..ev("x")
                },
            )
            .unwrap_err();
        assert_eq!((e.status, e.field), (400, Some("event")));
        assert_eq!(hub.last_id(), 1000);
        assert!(hub.history("a").is_none());
        assert_eq!(publish(&mut hub, "a", "x").id, 1001);
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        let req = |topic: &str, event: Event| PublishRequest {
            topic: t(topic),
            event,
            private: false,
        };
        let bad = vec![
            req("a", ev("1")),
            req(
                "b",
                Event {
                    event: Some("x\ry".into()),
                    ..ev("2")
                },
            ),
        ];
        let e = hub.publish_batch(bad).unwrap_err();
        assert_eq!((e.status, e.field), (400, Some("event")));
        assert!(e.message.starts_with("events[1]: "), "{e}");
        assert_eq!(hub.stats().published_total, 0);
        assert!(hub.history("a").is_none());

        let ok = vec![req("a", ev("1")), req("b", ev("2")), req("a", ev("3"))];
        let published = hub.publish_batch(ok).unwrap();
        let ids: Vec<u64> = published.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1001, 1002, 1003]);
        let got = dispatched(
            &hub.replay(&[t("a"), t("b")], &ResumePoint::After(1000))
                .frames,
        );
        let data: Vec<&str> = got.iter().map(|(_, d, _)| d.as_str()).collect();
        assert_eq!(data, ["1", "2", "3"]);
    }

    #[test]
    fn topics_max_refuses_new_topics_only() {
        let mut hub = Hub::new(
            HubLimits {
                topics_max: 2,
                ..limits()
            },
            EPOCH_MS,
        );
        publish(&mut hub, "a", "x");
        let two_new = vec![
            PublishRequest {
                topic: t("b"),
                event: ev("1"),
                private: false,
            },
            PublishRequest {
                topic: t("c"),
                event: ev("2"),
                private: false,
            },
        ];
        let e = hub.publish_batch(two_new).unwrap_err();
        assert_eq!((e.status, e.field), (503, Some("topic")));
        assert_eq!(hub.stats().published_total, 1);
        // The same new topic twice counts once.
        let same_new = vec![
            PublishRequest {
                topic: t("b"),
                event: ev("1"),
                private: false,
            },
            PublishRequest {
                topic: t("b"),
                event: ev("2"),
                private: false,
            },
        ];
        hub.publish_batch(same_new).unwrap();
        assert_eq!(hub.publish(&t("c"), ev("x")).unwrap_err().status, 503);
        publish(&mut hub, "a", "still fine");
        assert_eq!(hub.stats().topics, 2);
    }

    #[test]
    fn live_subscribers_get_nothing_replayed() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        publish(&mut hub, "a", "x");
        let r = hub.replay(&[t("a")], &ResumePoint::Live);
        assert_eq!(r.frames, Vec::<Frame>::new());
        assert_eq!((r.missed, r.through_id), (None, 1001));
    }

    #[test]
    fn resume_merges_topics_in_id_order_once() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        publish(&mut hub, "a", "a1"); // 1001
        publish(&mut hub, "b", "b1"); // 1002
        publish(&mut hub, "c", "c1"); // 1003
        publish(&mut hub, "a", "a2"); // 1004
        publish(&mut hub, "b", "b2"); // 1005
        let r = hub.replay(
            &[t("b"), t("a"), t("b"), t("nope")],
            &ResumePoint::After(1001),
        );
        assert_eq!(r.missed, None);
        assert_eq!(r.through_id, 1005);
        assert_eq!(
            text(&r.frames),
            [
                "id: 1002\ndata: b1\n\n",
                "id: 1004\ndata: a2\n\n",
                "id: 1005\ndata: b2\n\n"
            ]
        );
        assert_eq!(r.events(), &r.frames[..]);
        // Up to date: nothing to send, nothing missed.
        let r = hub.replay(&[t("a")], &ResumePoint::After(1005));
        assert_eq!((r.frames.len(), r.missed), (0, None));
        // The run's base ("before the first event") is exact too.
        let r = hub.replay(&[t("c")], &ResumePoint::After(1000));
        assert_eq!(
            (text(&r.frames), r.missed),
            (vec!["id: 1003\ndata: c1\n\n".to_owned()], None)
        );
    }

    #[test]
    fn evicted_resume_gets_a_notice_then_what_is_kept() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        for i in 1..=6 {
            publish(&mut hub, "a", &format!("a{i}")); // 1001..=1006; keeps 1003..
        }
        publish(&mut hub, "b", "b1"); // 1007
        let r = hub.replay(&[t("a"), t("b")], &ResumePoint::After(1001));
        assert_eq!(r.missed, Some(MissedReason::Evicted));
        assert_eq!(
            text(&r.frames),
            [
                "event: stentor.missed\ndata: {\"reason\":\"evicted\",\"last_event_id\":\"1001\"}\n\n",
                "id: 1003\ndata: a3\n\n",
                "id: 1004\ndata: a4\n\n",
                "id: 1005\ndata: a5\n\n",
                "id: 1006\ndata: a6\n\n",
                "id: 1007\ndata: b1\n\n",
            ]
        );
        assert_eq!(r.events().len(), 5);
        // Resuming at the last evicted id misses nothing.
        let r = hub.replay(&[t("a")], &ResumePoint::After(1002));
        assert_eq!((r.missed, r.frames.len()), (None, 4));
        // Eviction in a topic the client did not ask for is no gap for it.
        let r = hub.replay(&[t("b")], &ResumePoint::After(1001));
        assert_eq!((r.missed, r.frames.len()), (None, 1));
    }

    #[test]
    fn a_history_file_carries_resume_across_runs_exactly() {
        // Run 1 (ids from 1001), then run 2 (base 2000) loads its export.
        let mut first = Hub::new(limits(), EPOCH_MS);
        for d in ["a1", "a2", "a3"] {
            publish(&mut first, "a", d);
        }
        let saved = first.export(0);
        assert_eq!(saved.ranges, [(1000, 1003)]);
        let bytes = crate::hub::persist::encode(&saved).0;
        let saved = crate::hub::persist::decode(&bytes, 64).unwrap();
        let mut second = Hub::new(limits(), 2);
        assert_eq!(second.restore(saved.clone()), Ok((1, 3)));
        // Covered: exact, no notice, then this run's own ids continue above.
        assert_eq!(publish(&mut second, "a", "b1").id, 2001);
        let r = second.replay(&[t("a")], &ResumePoint::After(1001));
        assert_eq!(r.missed, None);
        assert_eq!(
            text(&r.frames),
            [
                "id: 1002\ndata: a2\n\n",
                "id: 1003\ndata: a3\n\n",
                "id: 2001\ndata: b1\n\n"
            ]
        );
        // Not covered (a crashed run between 1003 and 2000): `restarted`.
        let r = second.replay(&[t("a")], &ResumePoint::After(1500));
        assert_eq!(r.missed, Some(MissedReason::Restarted));
        // A file whose ids are not below this run's base is refused whole.
        let mut earlier = Hub::new(limits(), 1);
        assert!(earlier.restore(saved).is_err());
        assert_eq!(earlier.stats().history_events, 0);
        // Both ranges travel on in the next file.
        assert_eq!(second.export(0).ranges, [(1000, 1003), (2000, 2001)]);
    }

    #[test]
    fn ids_from_before_a_restart_or_unknown_get_everything_kept() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        publish(&mut hub, "a", "a1");
        publish(&mut hub, "a", "a2");
        for (resume, reason, echo) in [
            (ResumePoint::After(999), MissedReason::Restarted, "999"),
            (ResumePoint::After(0), MissedReason::Restarted, "0"),
            (ResumePoint::After(5000), MissedReason::UnknownId, "5000"),
            (
                ResumePoint::parse("evt-123"),
                MissedReason::UnknownId,
                "evt-123",
            ),
        ] {
            let r = hub.replay(&[t("a")], &resume);
            assert_eq!(r.missed, Some(reason));
            assert_eq!(
                text(&r.frames),
                [
                    format!(
                        "event: stentor.missed\ndata: {{\"reason\":\"{}\",\"last_event_id\":\"{echo}\"}}\n\n",
                        reason.as_str()
                    ),
                    "id: 1001\ndata: a1\n\n".to_owned(),
                    "id: 1002\ndata: a2\n\n".to_owned(),
                ]
            );
        }
    }

    #[test]
    fn a_notice_alone_carries_the_through_id() {
        let mut hub = Hub::new(limits(), 2); // base 2000
        publish(&mut hub, "other", "x"); // 2001
        let r = hub.replay(&[t("a")], &ResumePoint::After(1500));
        assert_eq!(r.missed, Some(MissedReason::Restarted));
        assert_eq!(
            text(&r.frames),
            ["event: stentor.missed\nid: 2001\ndata: {\"reason\":\"restarted\",\"last_event_id\":\"1500\"}\n\n"]
        );
        // So a browser that reconnects now resumes exactly, without a notice.
        let got = dispatched(&r.frames);
        assert_eq!(got[0].2, "2001");
        let again = hub.replay(&[t("a")], &ResumePoint::parse(&got[0].2));
        assert_eq!((again.missed, again.frames.len()), (None, 0));
    }

    #[test]
    fn the_notice_reads_as_one_event_whatever_the_client_sent() {
        let hub = Hub::new(limits(), EPOCH_MS);
        let hostile = "x\r\nid: 5\n\ndata: injected\u{0}\"\\";
        let r = hub.replay(&[t("a")], &ResumePoint::Unknown(hostile.into()));
        let got = dispatched(&r.frames);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, MISSED_EVENT_TYPE);
        let data: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
        assert_eq!(data["reason"], "unknown_id");
        assert_eq!(data["last_event_id"], hostile);
        assert_eq!(
            got[0].2, "1000",
            "the notice moves the client to through_id"
        );
    }

    #[test]
    fn too_far_behind_sends_the_newest_within_bounds() {
        let mut hub = Hub::new(
            HubLimits {
                history: HistoryLimits {
                    events_max: 100,
                    bytes_max: 1 << 20,
                },
                replay_events_max: 3,
                ..limits()
            },
            EPOCH_MS,
        );
        for i in 1..=4 {
            publish(&mut hub, "a", &format!("a{i}"));
            publish(&mut hub, "b", &format!("b{i}"));
        }
        let r = hub.replay(&[t("a"), t("b")], &ResumePoint::After(1000));
        assert_eq!(r.missed, Some(MissedReason::TooFarBehind));
        assert_eq!(r.through_id, 1008);
        let data: Vec<String> = dispatched(&r.frames).into_iter().map(|e| e.1).collect();
        assert!(data[0].contains("too_far_behind"), "{data:?}");
        assert_eq!(&data[1..], ["b3", "a4", "b4"]);
        // Exactly at the bound: no notice.
        let r = hub.replay(&[t("a"), t("b")], &ResumePoint::After(1005));
        assert_eq!((r.missed, r.frames.len()), (None, 3));

        // The byte bound: each frame here is 19 bytes.
        let one = hub.history("a").unwrap().get(0).unwrap().frame.len();
        let mut small = Hub::new(
            HubLimits {
                replay_bytes_max: 2 * one,
                ..*hub.limits()
            },
            EPOCH_MS,
        );
        for i in 1..=3 {
            publish(&mut small, "a", &format!("a{i}"));
        }
        let r = small.replay(&[t("a")], &ResumePoint::After(1000));
        assert_eq!(r.missed, Some(MissedReason::TooFarBehind));
        assert_eq!(
            text(r.events()),
            ["id: 1002\ndata: a2\n\n", "id: 1003\ndata: a3\n\n"]
        );
    }

    #[test]
    fn evicted_wins_over_too_far_behind() {
        let mut hub = Hub::new(
            HubLimits {
                replay_events_max: 1,
                ..limits()
            },
            EPOCH_MS,
        );
        for i in 1..=6 {
            publish(&mut hub, "a", &format!("a{i}"));
        }
        let r = hub.replay(&[t("a")], &ResumePoint::After(1001));
        assert_eq!(r.missed, Some(MissedReason::Evicted));
        assert_eq!(text(r.events()), ["id: 1006\ndata: a6\n\n"]);
    }

    #[test]
    fn idle_topics_are_dropped_without_hiding_gaps() {
        let mut hub = Hub::new(
            HubLimits {
                history: HistoryLimits {
                    events_max: 0,
                    bytes_max: 1 << 20,
                },
                ..limits()
            },
            EPOCH_MS,
        );
        publish(&mut hub, "empty", "x"); // 1001, not kept
        publish(&mut hub, "watched", "y"); // 1002, not kept
        assert_eq!(hub.drop_idle_topics(|t| t.as_str() == "watched", false), 1);
        assert!(hub.history("empty").is_none());
        assert!(hub.history("watched").is_some());
        // The dropped topic had an event after 1000: resuming must say so,
        // whether the topic is gone or comes back.
        let r = hub.replay(&[t("empty")], &ResumePoint::After(1000));
        assert_eq!(r.missed, Some(MissedReason::Evicted));
        publish(&mut hub, "empty", "z"); // 1003
        let r = hub.replay(&[t("empty")], &ResumePoint::After(1000));
        assert_eq!(r.missed, Some(MissedReason::Evicted));
        let r = hub.replay(&[t("empty")], &ResumePoint::After(1002));
        assert_eq!(r.missed, Some(MissedReason::Evicted), "1003 was evicted");
        let r = hub.replay(&[t("empty")], &ResumePoint::After(1003));
        assert_eq!(r.missed, None);
        assert_eq!(hub.stats().topics_dropped_total, 1);
    }

    #[test]
    fn dropping_topics_with_history_keeps_stats_true() {
        let mut hub = Hub::new(limits(), EPOCH_MS);
        publish(&mut hub, "a", "x");
        publish(&mut hub, "b", "y");
        assert_eq!(hub.drop_idle_topics(|_| false, false), 0, "history kept");
        assert_eq!(hub.drop_idle_topics(|t| t.as_str() == "b", true), 1);
        let s = hub.stats();
        assert_eq!((s.topics, s.history_events), (1, 1));
        assert_eq!(s.history_bytes, hub.history("b").unwrap().bytes());
        let r = hub.replay(&[t("a")], &ResumePoint::After(1000));
        assert_eq!(r.missed, Some(MissedReason::Evicted));
    }

    #[test]
    fn the_seam_has_no_gap_and_no_duplicate() {
        // A worker's inbox may still hold frames published before the
        // subscribe; the live side skips `id <= through_id`.
        let mut hub = Hub::new(limits(), EPOCH_MS);
        let mut all = Vec::new();
        for i in 0..3 {
            all.push(publish(&mut hub, "a", &i.to_string()));
        }
        let in_flight = all.clone(); // not yet delivered when the client subscribes
        let r = hub.replay(&[t("a")], &ResumePoint::After(1001));
        for i in 3..5 {
            all.push(publish(&mut hub, "a", &i.to_string()));
        }
        let mut got: Vec<Frame> = r.events().to_vec();
        got.extend(
            in_flight
                .iter()
                .chain(&all[3..])
                .filter(|p| p.id > r.through_id)
                .map(|p| p.frame.clone()),
        );
        let want: Vec<Frame> = all[1..].iter().map(|p| p.frame.clone()).collect();
        assert_eq!(got, want);
    }

    /// The table in `docs/design/architecture.md`, byte for byte.
    #[test]
    fn the_documented_cases() {
        let mut hub = Hub::new(
            HubLimits {
                history: HistoryLimits {
                    events_max: 3,
                    bytes_max: 1 << 20,
                },
                ..limits()
            },
            1_764_361_697_000,
        );
        for i in 1..=5 {
            publish(&mut hub, "news", &format!("n{i}"));
        }
        let news = [t("news")];
        let ev = |n: u64| format!("id: 176436169700000{n}\ndata: n{n}\n\n");
        let notice = |reason: &str, echo: &str| {
            format!("event: stentor.missed\ndata: {{\"reason\":\"{reason}\",\"last_event_id\":\"{echo}\"}}\n\n")
        };
        let case = |raw: &str| text(&hub.replay(&news, &ResumePoint::parse(raw)).frames);
        assert_eq!(case(""), Vec::<String>::new());
        assert_eq!(case("1764361697000005"), Vec::<String>::new());
        assert_eq!(case("1764361697000003"), [ev(4), ev(5)]);
        assert_eq!(case("1764361697000002"), [ev(3), ev(4), ev(5)]);
        assert_eq!(
            case("1764361697000001"),
            [notice("evicted", "1764361697000001"), ev(3), ev(4), ev(5)]
        );
        assert_eq!(
            case("1764361690000123"),
            [notice("restarted", "1764361690000123"), ev(3), ev(4), ev(5)]
        );
        for raw in ["evt-123", "+5", "99999999999999999"] {
            assert_eq!(case(raw), [notice("unknown_id", raw), ev(3), ev(4), ev(5)]);
        }
        let tight = Hub {
            limits: HubLimits {
                replay_events_max: 1,
                ..hub.limits
            },
            ..hub
        };
        let r = tight.replay(&news, &ResumePoint::After(1_764_361_697_000_003));
        assert_eq!(
            text(&r.frames),
            [notice("too_far_behind", "1764361697000003"), ev(5)]
        );
        let r = tight.replay(&[t("other")], &ResumePoint::After(1_764_361_690_000_123));
        assert_eq!(
            text(&r.frames),
            ["event: stentor.missed\nid: 1764361697000005\ndata: {\"reason\":\"restarted\",\"last_event_id\":\"1764361690000123\"}\n\n"]
        );
    }
}
