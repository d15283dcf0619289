//! Event ids and resume points.
//!
//! # Format
//!
//! An id is one `u64`, written in decimal on the wire (`id: 1764361697000042`).
//! One node hands out one strictly increasing sequence across all its topics,
//! so a single `Last-Event-ID` resumes a stream of several topics.
//!
//! Each run of a node starts its sequence at `base = epoch_ms * 1000`, where
//! `epoch_ms` is the node's start time in Unix milliseconds (passed in; this
//! module reads no clock). The first event of a run gets `base + 1`. So:
//! - ids stay strictly increasing across restarts as long as a run averages
//!   fewer than 1000 events per millisecond of its life (1M events/s) and
//!   the clock does not step back between runs;
//! - an id below `base` was handed out before this run: the hub can tell
//!   "from before my restart" from "evicted" without any persisted state;
//! - ids stay below 2^53 until the year 2255, so a JavaScript client that
//!   reads the ids of a publish response as JSON numbers loses no precision;
//! - the id reads as the time the run started, which helps when debugging.
//!
//! A publisher does not choose ids: a publish carrying `id` is refused with
//! 400 (see `hub::publish`). Server ids are what make resume exact.

use std::fmt::Write as _;

/// Ids a run may hand out per millisecond of its lifetime before its ids
/// could reach those of a run started later (see the module docs).
pub const IDS_PER_EPOCH_MS: u64 = 1000;

/// Longest unknown `Last-Event-ID` we keep to echo back in a missed notice;
/// a longer one is cut at a char boundary. Bounds the notice frame whatever
/// a client sends.
pub const LAST_EVENT_ID_ECHO_BYTES_MAX: usize = 128;

/// Longest decimal `u64` (`18446744073709551615`).
const U64_DIGITS_MAX: usize = 20;

/// Where an id sits relative to the run that sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdOrigin {
    /// Handed out by this run (`base <= id <= last`), or in a range an
    /// earlier run's history file carried in; `base` itself means "before
    /// this run's first event", which is still exact.
    ThisRun,
    /// Below this run's base: handed out before a restart (or by another
    /// node that started earlier).
    BeforeThisRun,
    /// Above anything this run handed out: not ours.
    NotYetAssigned,
}

/// The node's id sequence.
#[derive(Debug, Clone)]
pub struct IdSeq {
    base: u64,
    last: u64,
    /// Id ranges `(base, last)` of earlier runs whose history this run
    /// loaded (`--history-file`), oldest first, at most
    /// [`RESTORED_RANGES_MAX`]: an id in one of them is resumed exactly,
    /// like one of this run's; an id between them was handed out by a run
    /// whose history is lost (a crash) and gets the `restarted` notice.
    restored: Vec<(u64, u64)>,
}

/// Earlier runs' id ranges one sequence remembers (a history file carries
/// them on); the oldest is forgotten first, its ids then get `restarted`.
pub const RESTORED_RANGES_MAX: usize = 16;

impl IdSeq {
    /// A sequence for a run that started at `epoch_ms` (Unix milliseconds).
    pub fn new(epoch_ms: u64) -> IdSeq {
        // Saturating: a clock far in the future is not worth a panic; such a
        // run just cannot hand out ids and publishes get a 503.
        let base = epoch_ms.saturating_mul(IDS_PER_EPOCH_MS);
        IdSeq {
            base,
            last: base,
            restored: Vec::new(),
        }
    }

    /// Take `ranges` (from a history file) as covered: each `(base, last)`
    /// must lie below this run's base, else it is not added and `false`
    /// comes back (a clock stepped back, or a file from the future).
    pub fn restore(&mut self, ranges: &[(u64, u64)]) -> bool {
        if ranges.iter().any(|&(b, l)| b > l || l >= self.base) {
            return false;
        }
        self.restored.extend_from_slice(ranges);
        self.restored.sort_unstable();
        self.restored.dedup();
        let excess = self.restored.len().saturating_sub(RESTORED_RANGES_MAX - 1);
        self.restored.drain(..excess);
        true
    }

    /// Every range this sequence covers, its own last: what a history file
    /// written now must carry.
    pub fn covered(&self) -> Vec<(u64, u64)> {
        let mut all = self.restored.clone();
        all.push((self.base, self.last));
        all
    }

    /// Every id of this run is greater than this.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The last id handed out (`base` before the first).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether `n` more ids can be handed out (false only at the end of u64).
    pub fn has_room_for(&self, n: u64) -> bool {
        self.last.checked_add(n).is_some()
    }

    /// Hand out the next id, or `None` when the sequence is exhausted.
    pub fn next_id(&mut self) -> Option<u64> {
        let id = self.last.checked_add(1)?;
        debug_assert!(id > self.last);
        self.last = id;
        Some(id)
    }

    /// Take `id`, given out elsewhere (the fleet's broker), as the last
    /// one: false, and nothing changes, unless it is above the last one.
    /// A sequence that has handed out nothing yet starts its run just
    /// before `id`, so everything after `id - 1` counts as this run's.
    pub fn advance_to(&mut self, id: u64) -> bool {
        if id <= self.last {
            return false;
        }
        if self.last == self.base {
            self.base = id - 1;
        }
        self.last = id;
        true
    }

    pub fn classify(&self, id: u64) -> IdOrigin {
        if id < self.base {
            if self.restored.iter().any(|&(b, l)| (b..=l).contains(&id)) {
                return IdOrigin::ThisRun;
            }
            IdOrigin::BeforeThisRun
        } else if id <= self.last {
            IdOrigin::ThisRun
        } else {
            IdOrigin::NotYetAssigned
        }
    }
}

/// An id as written after `id: ` on the wire.
pub fn wire_id(id: u64) -> String {
    let mut s = String::with_capacity(U64_DIGITS_MAX);
    // Writing to a String cannot fail.
    let _ = write!(s, "{id}");
    s
}

/// Where a subscriber wants its stream to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePoint {
    /// No `Last-Event-ID`: start live, replay nothing.
    Live,
    /// A decimal id: replay the events after it.
    After(u64),
    /// Something that is not one of our ids (garbage, another server's
    /// format). Holds the client's value, cut to
    /// [`LAST_EVENT_ID_ECHO_BYTES_MAX`], to echo in the missed notice.
    Unknown(String),
}

impl ResumePoint {
    /// Read one `Last-Event-ID` value. Empty (what a browser has before it
    /// saw any id) means [`ResumePoint::Live`].
    pub fn parse(raw: &str) -> ResumePoint {
        let value = raw.trim_matches([' ', '\t']);
        if value.is_empty() {
            return ResumePoint::Live;
        }
        // Only plain ASCII digits: `u64::from_str` would also take `+42`,
        // which we never write, so it is not one of our ids.
        let digits_only =
            value.len() <= U64_DIGITS_MAX && value.bytes().all(|b| b.is_ascii_digit());
        if digits_only {
            if let Ok(id) = value.parse::<u64>() {
                return ResumePoint::After(id);
            }
        }
        ResumePoint::Unknown(truncate_at_char(value, LAST_EVENT_ID_ECHO_BYTES_MAX).to_owned())
    }

    /// The resume point of a subscribe request: the `Last-Event-ID` header
    /// wins over the `lastEventId` query parameter. Why: a page that opened
    /// `EventSource("/events?lastEventId=5")` keeps that URL, and when the
    /// browser reconnects by itself it sends the newer id in the header; the
    /// query value is then stale.
    pub fn from_request(header: Option<&str>, query: Option<&str>) -> ResumePoint {
        match header.map(ResumePoint::parse) {
            Some(ResumePoint::Live) | None => query.map_or(ResumePoint::Live, ResumePoint::parse),
            Some(point) => point,
        }
    }
}

/// The longest prefix of `s` within `bytes_max` that ends on a char boundary.
fn truncate_at_char(s: &str, bytes_max: usize) -> &str {
    if s.len() <= bytes_max {
        return s;
    }
    let mut end = bytes_max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_after_the_epoch_base_and_increase() {
        let mut seq = IdSeq::new(1_764_361_697_000);
        assert_eq!(seq.base(), 1_764_361_697_000_000);
        assert_eq!(seq.last(), seq.base());
        let a = seq.next_id().unwrap();
        let b = seq.next_id().unwrap();
        assert_eq!(a, seq.base() + 1);
        assert_eq!(b, a + 1);
        assert_eq!(seq.last(), b);
        // JavaScript-safe for centuries.
        assert!(b < 1 << 53);
        assert_eq!(wire_id(b), "1764361697000002");
    }

    #[test]
    fn a_later_run_starts_above_an_earlier_one() {
        let mut first = IdSeq::new(1_000);
        for _ in 0..999 {
            first.next_id().unwrap();
        }
        // A run 1 ms later: every id of the first run (< 1000 per ms) is below
        // its base, so the later run recognises them as from before a restart.
        let second = IdSeq::new(1_001);
        assert!(first.last() < second.base());
        assert_eq!(second.classify(first.last()), IdOrigin::BeforeThisRun);
    }

    #[test]
    fn classify_tells_runs_apart() {
        let mut seq = IdSeq::new(5);
        seq.next_id().unwrap();
        seq.next_id().unwrap();
        assert_eq!(seq.classify(4_999), IdOrigin::BeforeThisRun);
        assert_eq!(seq.classify(0), IdOrigin::BeforeThisRun);
        assert_eq!(seq.classify(5_000), IdOrigin::ThisRun);
        assert_eq!(seq.classify(5_002), IdOrigin::ThisRun);
        assert_eq!(seq.classify(5_003), IdOrigin::NotYetAssigned);
        assert_eq!(seq.classify(u64::MAX), IdOrigin::NotYetAssigned);
    }

    #[test]
    fn the_sequence_ends_without_panicking() {
        let mut seq = IdSeq::new(u64::MAX);
        assert_eq!(seq.base(), u64::MAX);
        assert!(!seq.has_room_for(1));
        assert_eq!(seq.next_id(), None);
        let mut seq = IdSeq::new(0);
        assert!(seq.has_room_for(3));
        assert_eq!(seq.next_id(), Some(1));
    }

    #[test]
    fn resume_points_parse() {
        assert_eq!(ResumePoint::parse(""), ResumePoint::Live);
        assert_eq!(ResumePoint::parse("  "), ResumePoint::Live);
        assert_eq!(ResumePoint::parse("42"), ResumePoint::After(42));
        assert_eq!(ResumePoint::parse(" 42\t"), ResumePoint::After(42));
        assert_eq!(ResumePoint::parse("0042"), ResumePoint::After(42));
        assert_eq!(
            ResumePoint::parse("18446744073709551615"),
            ResumePoint::After(u64::MAX)
        );
        for garbage in [
            "18446744073709551616",
            "+42",
            "-1",
            "4 2",
            "evt-123",
            "1764361697000-0",
            "0x10",
            "٤٢",
        ] {
            assert_eq!(
                ResumePoint::parse(garbage),
                ResumePoint::Unknown(garbage.to_owned()),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn unknown_ids_are_cut_at_a_char_boundary() {
        let long = "é".repeat(200);
        match ResumePoint::parse(&long) {
            ResumePoint::Unknown(kept) => {
                assert!(kept.len() <= LAST_EVENT_ID_ECHO_BYTES_MAX);
                assert!(kept.len() >= LAST_EVENT_ID_ECHO_BYTES_MAX - 1);
                assert!(long.starts_with(&kept));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_header_wins_over_the_query() {
        use ResumePoint::*;
        assert_eq!(ResumePoint::from_request(Some("9"), Some("5")), After(9));
        assert_eq!(ResumePoint::from_request(None, Some("5")), After(5));
        assert_eq!(ResumePoint::from_request(Some(""), Some("5")), After(5));
        assert_eq!(
            ResumePoint::from_request(Some("x"), Some("5")),
            Unknown("x".into())
        );
        assert_eq!(ResumePoint::from_request(None, None), Live);
        assert_eq!(ResumePoint::from_request(None, Some("")), Live);
    }
}
