//! One connection's send queue: shared frames waiting to go out, the offset
//! into the first one, and what is in flight. Pure: no sockets, no clocks
//! (the caller passes its coarse tick), so coalescing and partial sends are
//! tested exhaustively here.
//!
//! The queue holds `Frame`s (refcounted `Bytes`): pushing the same event to
//! 100k queues bumps refcounts, it never copies. Frames stay in the queue
//! until the kernel says they were sent, so the memory an in-flight SQE
//! points at is alive until its completion.

use std::collections::VecDeque;

use crate::wire::sse::Frame;

#[derive(Debug)]
struct Queued {
    frame: Frame,
    /// Worker tick when the frame was queued: the age limit reads it.
    queued_tick: u32,
}

/// Frames waiting for one connection. Empty = no heap (a `VecDeque::new()`
/// does not allocate), which is what keeps idle subscribers cheap.
#[derive(Debug, Default)]
pub struct SendQueue {
    frames: VecDeque<Queued>,
    /// Bytes of the front frame already sent.
    offset: u32,
    /// Bytes queued and not yet sent (includes in-flight bytes).
    bytes: u32,
    /// Bytes handed to the kernel by the send in flight; 0 = none in flight.
    in_flight: u32,
    /// Bytes of a resume replay still queued: a resuming client is behind by
    /// its replay on purpose, so those bytes do not count against the
    /// slow-client budget ([`Self::budget_bytes`]). Always ≤ `bytes`.
    exempt: u32,
    /// Frames of a resume replay still queued (their entries are exempt
    /// from the budget like their bytes).
    exempt_frames: u32,
}

/// What one queued frame costs besides its bytes (the queue entry), so the
/// budget counts a queue of a million 1-byte frames for what it is.
pub const QUEUE_ENTRY_BYTES: u32 = std::mem::size_of::<Queued>() as u32;

impl SendQueue {
    pub const fn new() -> SendQueue {
        SendQueue {
            frames: VecDeque::new(),
            offset: 0,
            bytes: 0,
            in_flight: 0,
            exempt: 0,
            exempt_frames: 0,
        }
    }

    /// Append a frame. Returns the bytes queued afterwards, so the caller can
    /// compare it with its budget. Empty frames are ignored (nothing to send,
    /// and a zero-length iovec would confuse the offset arithmetic).
    pub fn push(&mut self, frame: Frame, now_tick: u32) -> u32 {
        if frame.is_empty() {
            return self.bytes;
        }
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_add(len);
        self.frames.push_back(Queued {
            frame,
            queued_tick: now_tick,
        });
        self.bytes
    }

    /// Append a frame of a resume replay: queued like any other, but not
    /// counted by [`Self::budget_bytes`] until it is sent.
    pub fn push_exempt(&mut self, frame: Frame, now_tick: u32) -> u32 {
        let before = self.bytes;
        let after = self.push(frame, now_tick);
        if after > before {
            self.exempt = self.exempt.saturating_add(after - before);
            self.exempt_frames += 1;
        }
        after
    }

    /// What the queue costs against the slow-client budget: the bytes and
    /// the entries of everything but a replay not yet sent.
    pub fn budget_cost(&self) -> u32 {
        let entries = (self.frames.len() as u32).saturating_sub(self.exempt_frames);
        self.budget_bytes()
            .saturating_add(entries.saturating_mul(QUEUE_ENTRY_BYTES))
    }

    /// Bytes queued that count against the slow-client budget: everything
    /// but a replay not yet sent.
    pub fn budget_bytes(&self) -> u32 {
        self.bytes - self.exempt
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn frames_len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes still to send, counting those in flight.
    pub fn bytes_queued(&self) -> u32 {
        self.bytes
    }

    /// Whether a send is in flight (at most one per connection: two unlinked
    /// sends on one socket may interleave).
    pub fn is_sending(&self) -> bool {
        self.in_flight > 0
    }

    /// Tick at which the oldest frame still queued was queued.
    pub fn oldest_tick(&self) -> Option<u32> {
        self.frames.front().map(|q| q.queued_tick)
    }

    /// The slices the next send should carry: at most `slices_max`, the
    /// first one starting at the current offset. Call [`Self::start`] with
    /// the bytes they add up to once the SQE is made.
    pub fn batch(&self, slices_max: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let offset = self.offset as usize;
        self.frames
            .iter()
            .take(slices_max)
            .enumerate()
            .map(move |(i, q)| {
                if i == 0 {
                    &q.frame[offset..]
                } else {
                    &q.frame[..]
                }
            })
    }

    /// Record that a send of `bytes` (from [`Self::batch`]) is in flight.
    pub fn start(&mut self, bytes: u32) {
        assert!(!self.is_sending(), "a second send on one connection");
        assert!(
            bytes > 0 && bytes <= self.bytes,
            "send of {bytes} B past the queue"
        );
        self.in_flight = bytes;
    }

    /// The send in flight completed with `sent` bytes (possibly fewer than
    /// handed over: a partial send). Drops the frames wholly sent and moves
    /// the offset into the next one; returns how many frames were finished.
    pub fn complete(&mut self, sent: u32) -> usize {
        assert!(self.is_sending(), "completion without a send in flight");
        assert!(
            sent <= self.in_flight,
            "kernel sent more than was handed over"
        );
        self.in_flight = 0;
        self.bytes -= sent;
        // Frames go out in order and the replay was queued right after the
        // stream head, so sent bytes pay the exemption off first (early by
        // at most the head: the budget errs on the strict side).
        self.exempt = self.exempt.saturating_sub(sent).min(self.bytes);
        let mut left = sent as usize;
        let mut finished = 0;
        while left > 0 {
            let front_left = match self.frames.front() {
                Some(q) => q.frame.len() - self.offset as usize,
                None => break,
            };
            if left >= front_left {
                left -= front_left;
                self.frames.pop_front();
                self.offset = 0;
                finished += 1;
            } else {
                self.offset += left as u32;
                left = 0;
            }
        }
        debug_assert_eq!(left, 0, "sent bytes beyond the queue");
        self.exempt_frames = self.exempt_frames.saturating_sub(finished as u32);
        if self.exempt == 0 {
            self.exempt_frames = 0;
        }
        if self.frames.is_empty() {
            // Give the ring buffer back: a drained queue costs no heap.
            self.frames = VecDeque::new();
        }
        finished
    }

    /// The send in flight failed: nothing was sent, the queue is unchanged.
    pub fn abort(&mut self) {
        self.in_flight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::copy_from_slice(text.as_bytes())
    }

    fn batch_bytes(q: &SendQueue, slices_max: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut n = 0;
        for s in q.batch(slices_max) {
            out.extend_from_slice(s);
            n += 1;
        }
        (out, n)
    }

    #[test]
    fn an_empty_queue_holds_no_heap() {
        let q = SendQueue::new();
        assert_eq!(q.frames.capacity(), 0);
        assert!(q.is_empty() && !q.is_sending());
        assert_eq!(q.batch(64).count(), 0);
    }

    #[test]
    fn coalesces_up_to_the_slice_limit() {
        let mut q = SendQueue::new();
        for i in 0..10 {
            q.push(frame(&format!("f{i};")), i);
        }
        let (bytes, n) = batch_bytes(&q, 4);
        assert_eq!(n, 4);
        assert_eq!(bytes, b"f0;f1;f2;f3;");
        q.start(bytes.len() as u32);
        assert_eq!(q.complete(bytes.len() as u32), 4);
        let (bytes, n) = batch_bytes(&q, 64);
        assert_eq!(n, 6);
        assert_eq!(bytes, b"f4;f5;f6;f7;f8;f9;");
        assert_eq!(q.oldest_tick(), Some(4));
    }

    #[test]
    fn partial_sends_resume_at_every_offset_of_a_multi_frame_batch() {
        let parts = ["alpha\n", "b\n", "", "gamma-gamma\n", "d\n"];
        let whole: Vec<u8> = parts.concat().into_bytes();
        for first in 0..=whole.len() {
            for slices_max in [1, 2, 3, 64] {
                let mut q = SendQueue::new();
                for (i, p) in parts.iter().enumerate() {
                    q.push(frame(p), i as u32);
                }
                assert_eq!(q.bytes_queued() as usize, whole.len());
                let mut sent_all = Vec::new();
                let mut cut = first;
                let mut rounds = 0;
                while !q.is_empty() {
                    rounds += 1;
                    assert!(rounds < 100, "no progress");
                    let (bytes, _) = batch_bytes(&q, slices_max);
                    assert!(!bytes.is_empty());
                    q.start(bytes.len() as u32);
                    // First round sends `first` bytes (clamped), later rounds all.
                    let sent = cut.min(bytes.len());
                    cut = usize::MAX;
                    let before = q.frames_len();
                    let finished = q.complete(sent as u32);
                    assert_eq!(before - finished, q.frames_len());
                    sent_all.extend_from_slice(&bytes[..sent]);
                    assert_eq!(q.bytes_queued() as usize, whole.len() - sent_all.len());
                }
                assert_eq!(sent_all, whole, "first={first} slices_max={slices_max}");
                assert_eq!(q.frames.capacity(), 0);
            }
        }
    }

    #[test]
    fn zero_byte_completion_changes_nothing() {
        let mut q = SendQueue::new();
        q.push(frame("abc"), 0);
        q.start(3);
        assert_eq!(q.complete(0), 0);
        assert_eq!(batch_bytes(&q, 8).0, b"abc");
        q.start(3);
        q.abort();
        assert!(!q.is_sending());
        assert_eq!(q.bytes_queued(), 3);
    }

    #[test]
    #[should_panic(expected = "second send")]
    fn two_sends_in_flight_are_a_bug() {
        let mut q = SendQueue::new();
        q.push(frame("abc"), 0);
        q.start(3);
        q.start(3);
    }

    #[test]
    fn a_replay_is_exempt_from_the_budget_until_sent() {
        let mut q = SendQueue::new();
        q.push(frame("head;"), 0);
        q.push_exempt(frame("replay-1;"), 0);
        q.push_exempt(frame("replay-2;"), 0);
        assert_eq!(q.bytes_queued(), 23);
        assert_eq!(q.budget_bytes(), 5);
        q.push(frame("live;"), 0);
        assert_eq!(q.budget_bytes(), 10);
        q.start(14);
        q.complete(14);
        assert_eq!(q.bytes_queued(), 14);
        assert_eq!(
            q.budget_bytes(),
            14 - 4,
            "the head paid off part of the exemption"
        );
        q.start(14);
        q.complete(14);
        assert_eq!((q.bytes_queued(), q.budget_bytes()), (0, 0));
    }

    #[test]
    fn frames_are_shared_not_copied() {
        let f = frame("shared");
        let mut a = SendQueue::new();
        let mut b = SendQueue::new();
        a.push(f.clone(), 0);
        b.push(f.clone(), 0);
        let pa = a.batch(1).next().unwrap().as_ptr();
        let pb = b.batch(1).next().unwrap().as_ptr();
        assert_eq!(pa, pb);
        assert_eq!(pa, f.as_ptr());
    }
}
