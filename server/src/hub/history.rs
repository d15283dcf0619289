//! One topic's history: the last events published to it, kept as their
//! already-encoded frames so a resuming client is served the exact bytes live
//! clients got (a refcount each, never a re-encode).
//!
//! The ring is bounded by count *and* bytes. Count alone would let a topic of
//! 1 MiB events hold gigabytes; bytes alone would let a topic of tiny events
//! hold millions of entries whose per-entry overhead (an id and a `Bytes`
//! handle, 40 bytes) dwarfs the frames. Bytes are the frames' lengths; the
//! per-entry overhead is bounded by the count.
//!
//! # Immutable chunks, so replays are cut outside the lock
//!
//! The entries live in frozen chunks (`Arc<Vec<Entry>>`, never changed once
//! shared) plus one mutable tail. The tail is frozen into a chunk when it holds
//! [`CHUNK_EVENTS`] events or [`CHUNK_BYTES`] bytes; eviction moves a cursor
//! over the oldest chunk and drops the chunk when the cursor passes its end.
//! The list of chunks is itself behind an `Arc`, copied on write, so a
//! [`HistoryView`] costs two refcounts plus a copy of the tail entries after
//! the resume id (fewer than [`CHUNK_EVENTS`]), whatever the history holds.
//! The data plane takes views under its lock and merges and copies the up to
//! `--replay-events-max` frames after releasing it (see `hub::state`).
//!
//! The price: evicted entries of the oldest chunk stay in memory until the
//! whole chunk is evicted, at most one chunk per topic ([`CHUNK_EVENTS`]
//! entries, [`CHUNK_BYTES`] plus one frame), and a view pins the chunks it
//! saw until its replay is built (one view per worker at a time).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::wire::sse::Frame;

/// Most events in one chunk: the most entries a view copies (the tail), and
/// the most evicted entries a topic keeps in memory.
pub const CHUNK_EVENTS: usize = 64;

/// Frame bytes after which the tail is frozen even if it holds fewer than
/// [`CHUNK_EVENTS`] events: with large frames, the evicted entries a chunk
/// keeps alive would otherwise be up to 63 of them.
pub const CHUNK_BYTES: usize = 64 << 10;

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

/// One frozen chunk: never changed while shared (only its last owner
/// takes its buffer back, see [`History::push`]).
type Chunk = Arc<Vec<Entry>>;

/// Frozen chunks, oldest first; shared with views, copied on write.
type Chunks = Arc<VecDeque<Chunk>>;

#[derive(Debug, Clone)]
pub struct History {
    limits: HistoryLimits,
    /// Frozen chunks, oldest first, each ascending by id (ids are handed
    /// out increasing and appended in order). Never empty chunks.
    chunks: Chunks,
    /// Entries of `chunks[0]` already evicted (`< chunks[0].len()`).
    front_skip: usize,
    /// The newest entries, not yet frozen: fewer than [`CHUNK_EVENTS`].
    tail: Vec<Entry>,
    /// The buffer of the last chunk dropped while no view held it, emptied,
    /// to become the next tail: a chunk's memory is reused, not freed and
    /// allocated again, once per [`CHUNK_EVENTS`] publishes.
    spare: Vec<Entry>,
    /// Sum of `tail[..].frame.len()`.
    tail_bytes: usize,
    /// Entries kept (not evicted), in the chunks and the tail.
    len: usize,
    /// Sum of the kept entries' `frame.len()`.
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
            chunks: Arc::new(VecDeque::new()),
            front_skip: 0,
            tail: Vec::new(),
            spare: Vec::new(),
            tail_bytes: 0,
            len: 0,
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
    /// each entry is pushed once and evicted at most once, a chunk is
    /// frozen once per [`CHUNK_EVENTS`] pushes at most (or per
    /// [`CHUNK_BYTES`]), and the chunk list is copied only when a view still
    /// holds it.
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
        let frame_bytes = frame.len();
        self.bytes += frame_bytes;
        self.len += 1;
        self.tail_bytes += frame_bytes;
        if self.tail.capacity() == 0 {
            self.new_tail();
        }
        self.tail.push(Entry { id, frame, private });
        let evicted = if self.len > self.limits.events_max || self.bytes > self.limits.bytes_max {
            self.evict()
        } else {
            Evicted::default()
        };
        if self.tail.len() >= CHUNK_EVENTS || self.tail_bytes >= CHUNK_BYTES {
            self.freeze_tail();
        }
        self.evicted_events_total += evicted.events as u64;
        self.evicted_bytes_total += evicted.bytes as u64;
        debug_assert!(self.len <= self.limits.events_max);
        debug_assert!(self.bytes <= self.limits.bytes_max);
        debug_assert!(self.tail.len() < CHUNK_EVENTS);
        debug_assert!(self
            .chunks
            .front()
            .is_none_or(|c| self.front_skip < c.len()));
        evicted
    }

    /// Evict from the front until both bounds hold again.
    fn evict(&mut self) -> Evicted {
        let mut evicted = Evicted::default();
        // Bounded by the entries kept: every turn evicts one.
        while self.len > self.limits.events_max || self.bytes > self.limits.bytes_max {
            let Some(chunk) = self.chunks.front() else {
                self.evict_from_tail(&mut evicted);
                break;
            };
            let Some(old) = chunk.get(self.front_skip) else {
                break;
            };
            let (old_id, old_bytes, chunk_len) = (old.id, old.frame.len(), chunk.len());
            self.front_skip += 1;
            if self.front_skip == chunk_len {
                self.drop_front_chunk();
            }
            self.len -= 1;
            self.bytes -= old_bytes;
            self.evicted_through_id = old_id;
            evicted.events += 1;
            evicted.bytes += old_bytes;
        }
        evicted
    }

    /// Every frozen chunk is evicted: evict from the tail until the bounds
    /// hold. Only a history smaller than a chunk (or of frames near its
    /// byte bound) gets here; at most [`CHUNK_EVENTS`] entries move.
    #[cold]
    fn evict_from_tail(&mut self, evicted: &mut Evicted) {
        let mut n = 0;
        while self.len > self.limits.events_max || self.bytes > self.limits.bytes_max {
            let Some(old) = self.tail.get(n) else {
                break;
            };
            n += 1;
            self.tail_bytes -= old.frame.len();
            self.len -= 1;
            self.bytes -= old.frame.len();
            self.evicted_through_id = old.id;
            evicted.events += 1;
            evicted.bytes += old.frame.len();
        }
        self.tail.drain(..n);
    }

    /// The oldest chunk is wholly evicted: drop it, and keep its buffer for
    /// the next tail when no view holds it any more.
    #[cold]
    fn drop_front_chunk(&mut self) {
        let done = Arc::make_mut(&mut self.chunks).pop_front();
        self.front_skip = 0;
        if let Some(mut buffer) = done.and_then(Arc::into_inner) {
            buffer.clear();
            self.spare = buffer;
        }
    }

    #[cold]
    fn new_tail(&mut self) {
        self.tail = std::mem::take(&mut self.spare);
        self.tail.reserve_exact(CHUNK_EVENTS);
    }

    /// Freeze the tail into a chunk views may share.
    #[cold]
    fn freeze_tail(&mut self) {
        let frozen: Chunk = Arc::new(std::mem::take(&mut self.tail));
        Arc::make_mut(&mut self.chunks).push_back(frozen);
        self.tail_bytes = 0;
    }

    /// The kept entries as slices, oldest first.
    fn slices(&self) -> Slices<'_> {
        slices(&self.chunks, self.front_skip, &self.tail)
    }

    /// Index of the first kept entry with an id greater than `id` (`len()`
    /// when none): a binary search per chunk, the history being sorted by id.
    pub fn index_after(&self, id: u64) -> usize {
        let mut index = 0;
        for slice in self.slices() {
            let n = slice.partition_point(|e| e.id <= id);
            index += n;
            if n < slice.len() {
                break;
            }
        }
        index
    }

    /// The kept entries with an id greater than `id`, oldest first.
    pub fn after(&self, id: u64) -> Entries<'_> {
        Entries::after(self.slices(), id)
    }

    /// The kept entry at `index` (0 is the oldest). O(chunks): for tests and
    /// tools, not the data plane.
    pub fn get(&self, index: usize) -> Option<&Entry> {
        let mut index = index;
        for slice in self.slices() {
            match slice.get(index) {
                Some(e) => return Some(e),
                None => index -= slice.len(),
            }
        }
        None
    }

    /// What a client resuming after `id` may be sent from this topic, cut
    /// so it can be read without the hub: the frozen chunks are shared (two
    /// refcounts), the tail entries after `id` are copied (fewer than
    /// [`CHUNK_EVENTS`]).
    pub fn view_after(&self, id: u64) -> HistoryView {
        let from = self.tail.partition_point(|e| e.id <= id);
        HistoryView {
            chunks: Arc::clone(&self.chunks),
            front_skip: self.front_skip,
            tail: self.tail.get(from..).unwrap_or(&[]).to_vec(),
            after: id,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        self.get(0).map(|e| e.id)
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

/// One topic's kept entries after a resume id, as they were when the view
/// was taken, readable without the hub (see the module docs). Later
/// publishes and evictions do not change it.
#[derive(Debug, Clone)]
pub struct HistoryView {
    chunks: Chunks,
    front_skip: usize,
    /// The tail's entries with an id above `after`.
    tail: Vec<Entry>,
    after: u64,
}

impl HistoryView {
    /// The entries with an id above the view's resume id, oldest first.
    pub fn entries(&self) -> Entries<'_> {
        Entries::after(
            slices(&self.chunks, self.front_skip, &self.tail),
            self.after,
        )
    }
}

/// Up to chunks + 1 slices; a topic rarely has more than a few dozen chunks.
type Slices<'a> = VecDeque<&'a [Entry]>;

fn slices<'a>(chunks: &'a VecDeque<Chunk>, front_skip: usize, tail: &'a [Entry]) -> Slices<'a> {
    let mut out = VecDeque::with_capacity(chunks.len() + 1);
    for (i, chunk) in chunks.iter().enumerate() {
        let from = if i == 0 { front_skip } else { 0 };
        out.push_back(chunk.get(from..).unwrap_or(&[]));
    }
    out.push_back(tail);
    out.retain(|s| !s.is_empty());
    out
}

/// Kept entries in id order, from either end: the iterator of
/// [`History::after`] and [`HistoryView::entries`].
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    slices: Slices<'a>,
    len: usize,
}

impl<'a> Entries<'a> {
    /// The entries of `slices` (ascending by id, each non-empty) with an id
    /// above `id`.
    fn after(mut slices: Slices<'a>, id: u64) -> Entries<'a> {
        while let Some(first) = slices.front_mut() {
            let n = first.partition_point(|e| e.id <= id);
            if n < first.len() {
                *first = &first[n..];
                break;
            }
            slices.pop_front();
        }
        let len = slices.iter().map(|s| s.len()).sum();
        Entries { slices, len }
    }

    /// The entry `next_back` would return, without taking it.
    pub fn peek_back(&self) -> Option<&'a Entry> {
        self.slices.back().and_then(|s| s.last())
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        let first = self.slices.front_mut()?;
        let (entry, rest) = first.split_first()?;
        *first = rest;
        if rest.is_empty() {
            self.slices.pop_front();
        }
        self.len -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len, Some(self.len))
    }
}

impl DoubleEndedIterator for Entries<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let last = self.slices.back_mut()?;
        let (entry, rest) = last.split_last()?;
        *last = rest;
        if rest.is_empty() {
            self.slices.pop_back();
        }
        self.len -= 1;
        Some(entry)
    }
}

impl ExactSizeIterator for Entries<'_> {}

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
