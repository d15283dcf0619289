//! The publishing side of a node: assigns ids, encodes each event once,
//! keeps every topic's history, and answers "what does a resuming client get".
//!
//! One `Hub` per node. The data plane holds it behind a lock and calls
//! [`Hub::publish`] / [`Hub::publish_batch`] on every publish and
//! [`Hub::replay`] on every subscribe; both are bounded (a batch by
//! `batch_events_max`, a replay by `replay_events_max`/`replay_bytes_max`),
//! so the lock is never held for an unbounded time.
//!
//! # The seam between replay and live
//!
//! A subscriber is registered for live frames and then replayed under the
//! same lock as publishes. `Replay::through_id` is the last id the node had
//! handed out at that moment: every event with an id at or below it is either
//! in the replay (if it is one of the stream's topics and still kept) or is
//! covered by the missed notice; every event above it was published after and
//! reaches the stream live. So the live side drops frames with
//! `id <= through_id` (some may already sit in a worker's inbox) and the
//! client sees each event once, in order, with no gap.

use std::collections::{BinaryHeap, HashMap, HashSet};

use super::history::{History, HistoryLimits};
use super::id::{wire_id, IdOrigin, IdSeq, ResumePoint};
use super::publish::{PublishError, PublishRequest};
use super::topic::Topic;
use crate::config::Config;
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

impl HubLimits {
    /// The limits a node runs with. `replay_bytes_max` is the connection's
    /// send budget (`--queue-bytes-max`): a replay larger than that would get
    /// the fresh connection dropped as a slow client before it caught up.
    pub fn from_config(config: &Config) -> HubLimits {
        HubLimits {
            topic_bytes_max: usize::from(config.topic_bytes_max),
            topics_max: TOPICS_MAX_DEFAULT,
            history: HistoryLimits {
                events_max: config.history_events_max as usize,
                bytes_max: config.history_bytes_max as usize,
            },
            replay_events_max: REPLAY_EVENTS_MAX_DEFAULT,
            replay_bytes_max: config.queue_bytes_max as usize,
        }
    }
}

/// One published event: its id and its wire bytes, to hand to every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: u64,
    pub frame: Frame,
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
}

impl MissedReason {
    /// The `reason` in the notice and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedReason::Evicted => "evicted",
            MissedReason::UnknownId => "unknown_id",
            MissedReason::Restarted => "restarted",
            MissedReason::TooFarBehind => "too_far_behind",
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
        }
    }

    pub fn limits(&self) -> &HubLimits {
        &self.limits
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
        self.commit(topic, id, frame.clone());
        Ok(Published { id, frame })
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
            let frame = encode_with_id(request.event, id).map_err(|e| PublishError {
                message: format!("events[{i}]: {}", e.message),
                ..e
            })?;
            prepared.push((request.topic, Published { id, frame }));
        }
        let mut published = Vec::with_capacity(prepared.len());
        for (topic, p) in prepared {
            self.commit(&topic, p.id, p.frame.clone());
            published.push(p);
        }
        Ok(published)
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
    fn commit(&mut self, topic: &Topic, id: u64, frame: Frame) {
        let next = self.ids.next_id();
        assert_eq!(next, Some(id), "ids are committed in the order checked");
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
        let evicted = history.push(id, frame);
        self.stats.published_total += 1;
        self.stats.last_id = id;
        self.stats.history_events = self.stats.history_events + 1 - evicted.events;
        self.stats.history_bytes = self.stats.history_bytes + frame_bytes - evicted.bytes;
        self.stats.evicted_events_total += evicted.events as u64;
        self.stats.evicted_bytes_total += evicted.bytes as u64;
        debug_assert_eq!(self.stats.topics, self.topics.len());
    }

    /// What a client subscribing to `topics` from `resume` is sent before it
    /// goes live. Duplicate topics count once. See `docs/hub.md` for each case.
    pub fn replay(&self, topics: &[Topic], resume: &ResumePoint) -> Replay {
        let through_id = self.ids.last();
        let (after, echo, mut missed) = match resume {
            ResumePoint::Live => {
                return Replay {
                    frames: Vec::new(),
                    missed: None,
                    through_id,
                }
            }
            ResumePoint::After(k) => match self.ids.classify(*k) {
                IdOrigin::ThisRun => (*k, wire_id(*k), None),
                IdOrigin::BeforeThisRun => (0, wire_id(*k), Some(MissedReason::Restarted)),
                IdOrigin::NotYetAssigned => (0, wire_id(*k), Some(MissedReason::UnknownId)),
            },
            ResumePoint::Unknown(raw) => (0, raw.clone(), Some(MissedReason::UnknownId)),
        };

        let mut distinct: Vec<&str> = topics.iter().map(Topic::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();

        // Per topic, the kept entries after `after`, walked newest first.
        let mut ranges: Vec<(&History, usize, usize)> = Vec::with_capacity(distinct.len());
        for name in &distinct {
            match self.topics.get(*name) {
                Some(h) => {
                    if h.evicted_after(after) && missed.is_none() {
                        missed = Some(MissedReason::Evicted);
                    }
                    let start = h.index_after(after);
                    if start < h.len() {
                        ranges.push((h, start, h.len()));
                    }
                }
                None => {
                    if self.forgotten_through_id > after && missed.is_none() {
                        missed = Some(MissedReason::Evicted);
                    }
                }
            }
        }

        let (events, truncated) = self.newest_within_bounds(&mut ranges);
        if truncated && missed.is_none() {
            missed = Some(MissedReason::TooFarBehind);
        }

        let mut frames = Vec::with_capacity(events.len() + 1);
        if let Some(reason) = missed {
            // The notice carries an id only when no event follows it: then
            // the client's next reconnect resumes exactly from `through_id`
            // instead of repeating the same notice.
            let notice_id = events.is_empty().then_some(through_id);
            frames.push(missed_notice(reason, &echo, notice_id));
        }
        frames.extend(events);
        debug_assert!(frames.len() <= self.limits.replay_events_max + 1);
        Replay {
            frames,
            missed,
            through_id,
        }
    }

    /// Merge `ranges` newest first until either replay bound would be
    /// passed; return the chosen frames oldest first, and whether any were
    /// left out. The newest are kept because the live stream continues from
    /// the newest: dropping old ones leaves one gap, before the replay, which
    /// the notice announces.
    fn newest_within_bounds(&self, ranges: &mut [(&History, usize, usize)]) -> (Vec<Frame>, bool) {
        // Max-heap of (id of the range's newest remaining entry, range index).
        let mut heap: BinaryHeap<(u64, usize)> = ranges
            .iter()
            .enumerate()
            .filter_map(|(i, (h, _, end))| h.get(end - 1).map(|e| (e.id, i)))
            .collect();
        let mut chosen: Vec<Frame> = Vec::new();
        let mut bytes = 0usize;
        let mut truncated = false;
        let mut last_id = u64::MAX;
        while let Some((id, i)) = heap.pop() {
            let (h, start, end) = &mut ranges[i];
            let Some(entry) = h.get(*end - 1) else {
                break;
            };
            debug_assert_eq!(entry.id, id);
            debug_assert!(id < last_id, "ids are unique across topics");
            last_id = id;
            if chosen.len() == self.limits.replay_events_max
                || bytes + entry.frame.len() > self.limits.replay_bytes_max
            {
                truncated = true;
                break;
            }
            bytes += entry.frame.len();
            chosen.push(entry.frame.clone());
            *end -= 1;
            if *end > *start {
                if let Some(next) = h.get(*end - 1) {
                    heap.push((next.id, i));
                }
            }
        }
        chosen.reverse();
        (chosen, truncated)
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
    PublishError::new(400, None, format!("event cannot be encoded: {e:?}"))
}

/// The `stentor.missed` notice: `{"reason":"…","last_event_id":"…"}`.
///
/// Written here rather than through `wire::sse::encode` because every byte of
/// it is ours: the type is a constant, the id is digits, and the data is JSON
/// from serde_json, which escapes every control character, so the data is
/// one line whatever the client's `Last-Event-ID` held.
fn missed_notice(reason: MissedReason, last_event_id: &str, id: Option<u64>) -> Frame {
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
    let mut text = String::with_capacity(data.len() + 64);
    text.push_str("event: ");
    text.push_str(MISSED_EVENT_TYPE);
    text.push('\n');
    if let Some(id) = id {
        text.push_str("id: ");
        text.push_str(&wire_id(id));
        text.push('\n');
    }
    text.push_str("data: ");
    text.push_str(&data);
    text.push_str("\n\n");
    Frame::from(text)
}
