//! One topic's history: the last events published to it, kept as their
//! already-encoded frames so a resuming client is served the exact bytes live
//! clients got (a refcount each, never a re-encode).
//!
//! The ring is bounded by count *and* bytes. Count alone would let a topic of
//! 1 MiB events hold gigabytes; bytes alone would let a topic of tiny events
//! hold millions of entries whose per-entry overhead (an id and a `Bytes`
//! handle, 40 bytes) dwarfs the frames. Bytes are the frames' lengths; the
//! per-entry overhead is bounded by the count.

use std::collections::VecDeque;

use crate::wire::sse::Frame;

/// The two bounds of one topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most events kept (`--history-events-max`); 0 keeps none.
    pub events_max: usize,
    /// Most frame bytes kept (`--history-bytes-max`); a frame larger than
    /// this is never kept.
    pub bytes_max: usize,
}

/// One kept event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub frame: Frame,
    /// A private event: replayed only to streams whose token covers its
    /// topic.
    pub private: bool,
}

/// What one append pushed out of the ring, for the node-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub events: usize,
    pub bytes: usize,
}

#[derive(Debug, Clone)]
pub struct History {
    limits: HistoryLimits,
    /// Ascending by id (ids are handed out increasing and appended in order).
    entries: VecDeque<Entry>,
    /// Sum of `entries[..].frame.len()`.
    bytes: usize,
    /// Highest id ever evicted from this topic; 0 when none was. A resume
    /// after `k < evicted_through_id` has a gap, whatever is kept now.
    evicted_through_id: u64,
    /// Highest id ever appended; 0 when none was.
    newest_id: u64,
    evicted_events_total: u64,
    evicted_bytes_total: u64,
}

impl History {
    pub fn new(limits: HistoryLimits) -> History {
        History {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
            evicted_through_id: 0,
            newest_id: 0,
            evicted_events_total: 0,
            evicted_bytes_total: 0,
        }
    }

    /// A history for a topic the hub may have dropped before: resuming before
    /// `evicted_through_id` reports a gap, as if those events were evicted
    /// here (they may have been published to this topic's earlier life).
    pub fn with_evicted_through(limits: HistoryLimits, evicted_through_id: u64) -> History {
        History {
            evicted_through_id,
            newest_id: evicted_through_id,
            ..History::new(limits)
        }
    }

    /// Append the event `id` (greater than every id appended before) and
    /// evict from the front until both bounds hold again. O(1) amortised:
    /// each entry is pushed once and popped at most once.
    pub fn push(&mut self, id: u64, frame: Frame) -> Evicted {
        self.push_flagged(id, frame, false)
    }

    /// [`Self::push`] of an event that is private or not.
    pub fn push_flagged(&mut self, id: u64, frame: Frame, private: bool) -> Evicted {
        assert!(
            id > self.newest_id,
            "history ids must increase: {id} after {}",
            self.newest_id
        );
        self.newest_id = id;
        self.bytes += frame.len();
        self.entries.push_back(Entry { id, frame, private });
        let mut evicted = Evicted::default();
        // Bounded by the entries just counted: every turn pops one.
        while self.entries.len() > self.limits.events_max || self.bytes > self.limits.bytes_max {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.frame.len();
            self.evicted_through_id = old.id;
            evicted.events += 1;
            evicted.bytes += old.frame.len();
        }
        self.evicted_events_total += evicted.events as u64;
        self.evicted_bytes_total += evicted.bytes as u64;
        debug_assert!(self.entries.len() <= self.limits.events_max);
        debug_assert!(self.bytes <= self.limits.bytes_max);
        debug_assert_eq!(
            self.bytes,
            self.entries.iter().map(|e| e.frame.len()).sum::<usize>()
        );
        evicted
    }

    /// Index of the first kept entry with an id greater than `id` (`len()`
    /// when none): a binary search, the ring being sorted by id.
    pub fn index_after(&self, id: u64) -> usize {
        self.entries.partition_point(|e| e.id <= id)
    }

    /// The kept entries with an id greater than `id`, oldest first.
    pub fn after(&self, id: u64) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.range(self.index_after(id)..)
    }

    /// The kept entry at `index` (0 is the oldest).
    pub fn get(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frame bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Id of the oldest kept event.
    pub fn oldest_id(&self) -> Option<u64> {
        self.entries.front().map(|e| e.id)
    }

    /// Highest id ever appended (0 when none), kept or not.
    pub fn newest_id(&self) -> u64 {
        self.newest_id
    }

    /// Highest id ever evicted (0 when none).
    pub fn evicted_through_id(&self) -> u64 {
        self.evicted_through_id
    }

    /// Whether an event with an id greater than `id` was evicted: a client
    /// resuming after `id` has a gap in this topic.
    pub fn evicted_after(&self, id: u64) -> bool {
        self.evicted_through_id > id
    }

    pub fn evicted_events_total(&self) -> u64 {
        self.evicted_events_total
    }

    pub fn evicted_bytes_total(&self) -> u64 {
        self.evicted_bytes_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::from(vec![b'x'; n])
    }

    fn ids(h: &History, after: u64) -> Vec<u64> {
        h.after(after).map(|e| e.id).collect()
    }

    #[test]
    fn count_bound_evicts_from_the_front() {
        let mut h = History::new(HistoryLimits {
            events_max: 3,
            bytes_max: 1 << 20,
        });
        for id in 1..=3 {
            assert_eq!(h.push(id, frame(10)), Evicted::default());
        }
        assert_eq!(
            h.push(4, frame(10)),
            Evicted {
                events: 1,
                bytes: 10
            }
        );
        assert_eq!(ids(&h, 0), [2, 3, 4]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.bytes(), 30);
        assert_eq!(h.oldest_id(), Some(2));
        assert_eq!(h.newest_id(), 4);
        assert_eq!(h.evicted_through_id(), 1);
        assert_eq!(h.evicted_events_total(), 1);
        assert_eq!(h.evicted_bytes_total(), 10);
    }

    #[test]
    fn byte_bound_evicts_as_many_as_needed() {
        let mut h = History::new(HistoryLimits {
            events_max: 100,
            bytes_max: 25,
        });
        h.push(1, frame(10));
        h.push(2, frame(10));
        // 10 + 10 + 20 > 25: both older frames go.
        assert_eq!(
            h.push(3, frame(20)),
            Evicted {
                events: 2,
                bytes: 20
            }
        );
        assert_eq!(ids(&h, 0), [3]);
        assert_eq!(h.bytes(), 20);
        assert!(h.evicted_after(1) && h.evicted_after(0) && !h.evicted_after(2));
    }

    #[test]
    fn a_frame_larger_than_the_byte_bound_is_not_kept() {
        let mut h = History::new(HistoryLimits {
            events_max: 100,
            bytes_max: 8,
        });
        h.push(1, frame(4));
        let e = h.push(2, frame(9));
        assert_eq!(e.events, 2);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.evicted_through_id(), 2);
        assert_eq!(h.newest_id(), 2);
    }

    #[test]
    fn zero_events_keeps_nothing() {
        let mut h = History::new(HistoryLimits {
            events_max: 0,
            bytes_max: 1 << 20,
        });
        h.push(7, frame(1));
        assert!(h.is_empty());
        assert!(h.evicted_after(6));
        assert!(!h.evicted_after(7));
    }

    #[test]
    fn after_is_a_binary_search_over_sparse_ids() {
        let mut h = History::new(HistoryLimits {
            events_max: 100,
            bytes_max: 1 << 20,
        });
        for id in [10, 20, 30, 40] {
            h.push(id, frame(1));
        }
        assert_eq!(ids(&h, 0), [10, 20, 30, 40]);
        assert_eq!(ids(&h, 10), [20, 30, 40]);
        assert_eq!(ids(&h, 25), [30, 40]);
        assert_eq!(ids(&h, 40), Vec::<u64>::new());
        assert_eq!(ids(&h, u64::MAX), Vec::<u64>::new());
        assert_eq!(h.index_after(25), 2);
        assert_eq!(h.get(2).map(|e| e.id), Some(30));
        assert_eq!(h.after(15).len(), 3);
        assert_eq!(h.after(15).next_back().map(|e| e.id), Some(40));
    }

    #[test]
    fn replayed_frames_share_the_published_bytes() {
        let mut h = History::new(HistoryLimits {
            events_max: 4,
            bytes_max: 1 << 20,
        });
        let f = Frame::from_static(b"data: x\n\n");
        h.push(1, f.clone());
        let kept = &h.after(0).next().unwrap().frame;
        assert_eq!(kept.as_ptr(), f.as_ptr(), "no copy, no re-encode");
    }

    #[test]
    #[should_panic(expected = "history ids must increase")]
    fn out_of_order_ids_are_a_programmer_error() {
        let mut h = History::new(HistoryLimits {
            events_max: 4,
            bytes_max: 64,
        });
        h.push(2, frame(1));
        h.push(2, frame(1));
    }
}
