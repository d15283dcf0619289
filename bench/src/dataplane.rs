//! Inputs and operations for the data-plane and hub benches, shared by the
//! gate's workloads and the criterion benches so both measure the same work.
//!
//! - fan-out planning: [`deliver`] does what a worker does per published
//!   frame (`Worker::deliver` in the server): look the topic up in its index,
//!   push a clone of the frame (a refcount, not a copy) onto each
//!   subscriber's send queue, and list the queues that became non-empty;
//! - send-queue coalescing: [`coalesce_cycle`] and [`partial_send_cycle`]
//!   build the iovec batches a `SendMsg` carries and account for full and
//!   partial completions;
//! - tokens, history append and replay lookup use the server's types directly.

use stentor::hub::history::{History, HistoryLimits};
use stentor::hub::id::ResumePoint;
use stentor::hub::index::Index;
use stentor::hub::topic::Topic;
use stentor::hub::{Hub, HubLimits, Replay, REPLAY_EVENTS_MAX_DEFAULT, TOPICS_MAX_DEFAULT};
use stentor::ring::sendq::SendQueue;
use stentor::wire::sse::{self, Frame};

/// The topic every benched subscriber is on.
pub const TOPIC: &str = "news";
/// Other topics in the index, so the lookup is not in a one-entry map.
pub const OTHER_TOPICS: u32 = 99;
pub const OTHER_TOPIC_SUBSCRIBERS: u32 = 10;
/// iovecs per `SendMsg`: the server's `IOVECS_PER_SEND_MAX`.
pub const IOVECS_PER_SEND_MAX: usize = 64;
/// A connection's send budget (`--queue-bytes-max` default order).
pub const QUEUE_BYTES_MAX: u32 = 1 << 20;
/// Bytes the kernel takes per send in the partial-send cycle: less than a
/// batch, so every batch is completed in several pieces at odd offsets.
pub const PARTIAL_SEND_BYTES: u32 = 1000;

/// One encoded 128 B event, as a publish produces it.
pub fn frame_128b() -> Frame {
    let event = sse::Event {
        event: Some("update".into()),
        id: Some("1234567".into()),
        data: "x".repeat(128),
        retry: None,
    };
    match sse::encode(&event) {
        Ok(frame) => frame,
        // Built from constants: refusing it is a bug here, not input.
        Err(error) => panic!("bench event must encode: {error}"),
    }
}

/// An index with `subscribers` keys (0..n) on [`TOPIC`] and a few small topics.
pub fn index_with_subscribers(subscribers: u32) -> Index {
    let mut index = Index::new();
    for key in 0..subscribers {
        index.subscribe(TOPIC, key);
    }
    for t in 0..OTHER_TOPICS {
        let name = format!("other-{t}");
        for k in 0..OTHER_TOPIC_SUBSCRIBERS {
            index.subscribe(&name, subscribers + t * OTHER_TOPIC_SUBSCRIBERS + k);
        }
    }
    index
}

/// Empty send queues for every key of [`index_with_subscribers`].
pub fn fresh_queues(subscribers: u32) -> Vec<SendQueue> {
    let total = subscribers + OTHER_TOPICS * OTHER_TOPIC_SUBSCRIBERS;
    (0..total).map(|_| SendQueue::new()).collect()
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub deliveries: u32,
    /// Queues that went from empty to non-empty: they need a send started.
    pub became_dirty: u32,
    /// Queues past [`QUEUE_BYTES_MAX`]: the worker would close them.
    pub over_budget: u32,
}

/// Who gets `frame`: every subscriber of `topic` gets a refcounted clone on
/// its queue; `dirty` collects the keys whose queue was empty (the worker
/// starts one send for each after the batch). The worker's loop, minus the
/// connection slab around the queue.
pub fn deliver(
    index: &Index,
    topic: &str,
    frame: &Frame,
    queues: &mut [SendQueue],
    dirty: &mut Vec<u32>,
    now_tick: u32,
) -> Delivered {
    let mut out = Delivered::default();
    for &key in index.subscribers(topic) {
        let queue = &mut queues[key as usize];
        let was_empty = queue.is_empty();
        let queued = queue.push(frame.clone(), now_tick);
        out.deliveries += 1;
        if queued > QUEUE_BYTES_MAX {
            out.over_budget += 1;
        } else if was_empty {
            out.became_dirty += 1;
            dirty.push(key);
        }
    }
    out
}

/// Fill `iovecs` with the queue's next batch; returns the bytes it covers.
pub fn build_iovecs(queue: &SendQueue, iovecs: &mut Vec<libc::iovec>) -> u32 {
    iovecs.clear();
    let mut bytes = 0u32;
    for slice in queue.batch(IOVECS_PER_SEND_MAX) {
        iovecs.push(libc::iovec {
            iov_base: slice.as_ptr() as *mut libc::c_void,
            iov_len: slice.len(),
        });
        bytes += slice.len() as u32;
    }
    debug_assert!(iovecs.len() <= IOVECS_PER_SEND_MAX);
    bytes
}

/// One connection's burst: `frames` pushed, one `SendMsg` batch built, the
/// kernel takes it all. Returns the frames finished (= `frames` when they
/// fit one batch).
pub fn coalesce_cycle(
    queue: &mut SendQueue,
    frame: &Frame,
    frames: usize,
    iovecs: &mut Vec<libc::iovec>,
) -> usize {
    for _ in 0..frames {
        queue.push(frame.clone(), 0);
    }
    let mut finished = 0;
    while !queue.is_empty() {
        let bytes = build_iovecs(queue, iovecs);
        queue.start(bytes);
        finished += queue.complete(bytes);
    }
    finished
}

/// Like [`coalesce_cycle`], but the kernel takes at most
/// [`PARTIAL_SEND_BYTES`] per send, so batches resume mid-frame. Returns
/// the number of sends it took.
pub fn partial_send_cycle(
    queue: &mut SendQueue,
    frame: &Frame,
    frames: usize,
    iovecs: &mut Vec<libc::iovec>,
) -> usize {
    for _ in 0..frames {
        queue.push(frame.clone(), 0);
    }
    let mut sends = 0;
    while !queue.is_empty() {
        let bytes = build_iovecs(queue, iovecs);
        queue.start(bytes);
        queue.complete(bytes.min(PARTIAL_SEND_BYTES));
        sends += 1;
    }
    sends
}

/// History bounds for the append bench: a full ring, so every push evicts.
pub const HISTORY_EVENTS: usize = 1024;

/// A topic's history holding [`HISTORY_EVENTS`] frames (full); the next id is
/// `HISTORY_EVENTS + 1`.
pub fn full_history(frame: &Frame) -> History {
    let mut history = History::new(HistoryLimits {
        events_max: HISTORY_EVENTS,
        bytes_max: 64 << 20,
    });
    for id in 1..=HISTORY_EVENTS as u64 {
        history.push(id, frame.clone());
    }
    history
}

/// Events kept in the replay bench's hub and how many a client missed.
pub const REPLAY_KEPT: usize = 1000;
pub const REPLAY_MISSED: u64 = 100;

/// A hub that has published [`REPLAY_KEPT`] 128 B events on [`TOPIC`], the
/// topic, and a resume point [`REPLAY_MISSED`] events back.
pub fn hub_for_replay() -> (Hub, Topic, ResumePoint) {
    let limits = HubLimits {
        topic_bytes_max: 256,
        topics_max: TOPICS_MAX_DEFAULT,
        history: HistoryLimits {
            events_max: REPLAY_KEPT,
            bytes_max: 64 << 20,
        },
        replay_events_max: REPLAY_EVENTS_MAX_DEFAULT,
        replay_bytes_max: 64 << 20,
    };
    // A fixed epoch: ids (and so the work) do not depend on the clock.
    let mut hub = Hub::new(limits, 1_700_000_000_000);
    let topic = match Topic::parse(TOPIC, 256) {
        Ok(topic) => topic,
        Err(error) => panic!("bench topic must parse: {error:?}"),
    };
    for _ in 0..REPLAY_KEPT {
        let event = sse::Event {
            event: Some("update".into()),
            id: None,
            data: "x".repeat(128),
            retry: None,
        };
        if let Err(error) = hub.publish(&topic, event) {
            panic!("bench publish refused: {error:?}");
        }
    }
    let resume = ResumePoint::After(hub.last_id() - REPLAY_MISSED);
    (hub, topic, resume)
}

/// What a client resuming [`REPLAY_MISSED`] events back is sent.
pub fn replay(hub: &Hub, topic: &Topic, resume: &ResumePoint) -> Replay {
    hub.replay(std::slice::from_ref(topic), resume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_reaches_every_subscriber_of_the_topic_once() {
        let index = index_with_subscribers(1000);
        let mut queues = fresh_queues(1000);
        let mut dirty = Vec::new();
        let frame = frame_128b();
        let first = deliver(&index, TOPIC, &frame, &mut queues, &mut dirty, 1);
        assert_eq!(first.deliveries, 1000);
        assert_eq!(first.became_dirty, 1000);
        assert_eq!(dirty, (0..1000).collect::<Vec<u32>>());
        let second = deliver(&index, TOPIC, &frame, &mut queues, &mut dirty, 2);
        assert_eq!(second.became_dirty, 0, "already dirty");
        assert_eq!(queues[0].frames_len(), 2);
        assert!(
            queues[1000..].iter().all(SendQueue::is_empty),
            "other topics untouched"
        );
        assert_eq!(
            deliver(&index, "nobody", &frame, &mut queues, &mut dirty, 3).deliveries,
            0
        );
    }

    #[test]
    fn coalescing_sends_every_byte_and_partial_sends_resume() {
        let frame = frame_128b();
        let mut queue = SendQueue::new();
        let mut iovecs = Vec::with_capacity(IOVECS_PER_SEND_MAX);
        assert_eq!(coalesce_cycle(&mut queue, &frame, 16, &mut iovecs), 16);
        assert!(queue.is_empty() && iovecs.len() == 16);
        let total = frame.len() * 64;
        let sends = partial_send_cycle(&mut queue, &frame, 64, &mut iovecs);
        assert_eq!(sends, total.div_ceil(PARTIAL_SEND_BYTES as usize));
        assert!(queue.is_empty() && queue.bytes_queued() == 0);
    }

    #[test]
    fn history_is_full_and_replay_returns_what_was_missed() {
        let frame = frame_128b();
        let mut history = full_history(&frame);
        assert_eq!(history.len(), HISTORY_EVENTS);
        let evicted = history.push(HISTORY_EVENTS as u64 + 1, frame.clone());
        assert_eq!(evicted.events, 1);
        let (hub, topic, resume) = hub_for_replay();
        let replayed = replay(&hub, &topic, &resume);
        assert_eq!(replayed.missed, None);
        assert_eq!(replayed.events().len(), REPLAY_MISSED as usize);
    }
}
