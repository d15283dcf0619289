//! The run second by second: what each subscriber thread saw in each second
//! (deliveries and their latency, fast and slow apart; connects, resumes,
//! errors by kind, disconnects, slow drops), merged across threads on the
//! main thread as the run goes, plus gauges it samples itself (connected
//! subscribers, events sent).
//!
//! Why merged as it goes: a thread ships a second's histograms once that
//! second is over and the collector reduces a second to percentiles once no
//! thread can still be in it, so memory holds a few seconds of histograms,
//! not one per second of an hour-long run.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::shared::Shared;
use crate::stats::{bump, Counts, LATENCY_US_MAX};

/// Seconds a second stays open for late parts before it is reduced (threads
/// ship a finished second within one tick, 100 ms).
const OPEN_S: u32 = 2;

/// One thread's view of one second of the run (seconds since the run began).
#[derive(Debug, Clone)]
pub struct SeriesPart {
    pub second: u32,
    pub deliveries_fast: u64,
    pub deliveries_slow: u64,
    pub fast_us: Option<Histogram<u64>>,
    pub slow_us: Option<Histogram<u64>>,
    pub connects: u64,
    pub resumes: u64,
    pub errors: Counts,
    pub disconnects: u64,
    pub slow_drops: u64,
}

fn second_histogram() -> Histogram<u64> {
    // Constant bounds in range: construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 2).expect("constant histogram bounds are valid")
}

impl SeriesPart {
    pub fn new(second: u32) -> Self {
        Self {
            second,
            deliveries_fast: 0,
            deliveries_slow: 0,
            fast_us: None,
            slow_us: None,
            connects: 0,
            resumes: 0,
            errors: Counts::new(),
            disconnects: 0,
            slow_drops: 0,
        }
    }

    pub fn record(&mut self, latency_us: u64, slow: bool) {
        let (n, h) = if slow {
            (&mut self.deliveries_slow, &mut self.slow_us)
        } else {
            (&mut self.deliveries_fast, &mut self.fast_us)
        };
        *n += 1;
        h.get_or_insert_with(second_histogram)
            .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
    }

    pub fn error(&mut self, kind: &str) {
        bump(&mut self.errors, kind);
    }

    fn merge(&mut self, o: SeriesPart) {
        self.deliveries_fast += o.deliveries_fast;
        self.deliveries_slow += o.deliveries_slow;
        for (mine, theirs) in [
            (&mut self.fast_us, o.fast_us),
            (&mut self.slow_us, o.slow_us),
        ] {
            if let Some(t) = theirs {
                // Same bounds: add cannot fail.
                let _ = mine.get_or_insert_with(second_histogram).add(&t);
            }
        }
        self.connects += o.connects;
        self.resumes += o.resumes;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        self.disconnects += o.disconnects;
        self.slow_drops += o.slow_drops;
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries_fast
            + self.deliveries_slow
            + self.connects
            + self.disconnects
            + self.slow_drops
            == 0
            && self.errors.is_empty()
    }
}

/// A thread's current second and the seconds it has finished but not shipped.
#[derive(Debug, Clone)]
pub struct PartCursor {
    current: SeriesPart,
    done: Vec<SeriesPart>,
}

impl Default for PartCursor {
    fn default() -> Self {
        Self {
            current: SeriesPart::new(0),
            done: Vec::new(),
        }
    }
}

impl PartCursor {
    /// The part for `second`, closing the current one if it is older.
    pub fn at(&mut self, second: u32) -> &mut SeriesPart {
        if second > self.current.second {
            let old = std::mem::replace(&mut self.current, SeriesPart::new(second));
            if !old.is_empty() {
                self.done.push(old);
            }
        }
        &mut self.current
    }

    /// Ship finished seconds (and, with `all`, the current one) to the collector.
    pub fn ship(&mut self, shared: &Shared, now_second: u32, all: bool) {
        self.at(now_second);
        if all {
            let cur = std::mem::replace(&mut self.current, SeriesPart::new(now_second));
            if !cur.is_empty() {
                self.done.push(cur);
            }
        }
        if self.done.is_empty() {
            return;
        }
        if let Ok(mut q) = shared.series_parts.lock() {
            q.append(&mut self.done);
        }
    }
}

/// Latency percentiles of one second, µs (0 when nothing was delivered).
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct SecondLatency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl SecondLatency {
    fn of(h: &Option<Histogram<u64>>) -> Self {
        match h {
            Some(h) if !h.is_empty() => Self {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            },
            _ => Self::default(),
        }
    }
}

/// One second of the run in the report's `series`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since the run began (the ramp's start).
    pub t_s: u32,
    /// Subscribers streaming at the end of the second.
    pub connected: u64,
    /// Streams opened in the second (first connects and reconnects).
    pub connects: u64,
    /// Of `connects`, reconnects that resumed with Last-Event-ID.
    pub resumes: u64,
    /// Connect errors by kind.
    pub errors: Counts,
    pub disconnects: u64,
    pub slow_drops: u64,
    /// Publish requests sent in the second.
    pub events_sent: u64,
    pub deliveries_fast: u64,
    pub deliveries_slow: u64,
    /// Fast (normally reading) subscribers' latency, µs.
    pub fast_latency_us: SecondLatency,
    /// Deliberately slow subscribers' latency, µs (their backlog lands late).
    pub slow_latency_us: SecondLatency,
}

/// Gathers parts and gauges into points, on the main thread.
#[derive(Debug, Default)]
pub struct Collector {
    open: BTreeMap<u32, SeriesPart>,
    points: Vec<SeriesPoint>,
    /// Next second whose end-of-second gauges are due.
    next_gauge_s: u32,
    gauges: BTreeMap<u32, (u64, u64)>,
    events_sent_before: u64,
}

impl Collector {
    /// Take shipped parts, sample gauges for every second that ended, reduce
    /// seconds no thread can still be in.
    pub fn poll(&mut self, shared: &Shared) {
        self.poll_until((shared.now_ns() / 1_000_000_000) as u32, shared);
    }

    fn poll_until(&mut self, now_s: u32, shared: &Shared) {
        while self.next_gauge_s < now_s {
            let sent = shared.events_sent.load(Ordering::Relaxed);
            let streaming = shared.streaming.load(Ordering::Relaxed);
            self.gauges.insert(
                self.next_gauge_s,
                (streaming, sent - self.events_sent_before),
            );
            self.events_sent_before = sent;
            self.next_gauge_s += 1;
        }
        self.take_parts(shared);
        self.reduce(now_s.saturating_sub(OPEN_S));
    }

    /// Everything left, once every thread has shipped its last part.
    pub fn finish(mut self, shared: &Shared) -> Vec<SeriesPoint> {
        // The current second too: the run is over, its gauges are final.
        self.poll_until((shared.now_ns() / 1_000_000_000) as u32 + 1, shared);
        self.take_parts(shared);
        self.reduce(u32::MAX);
        self.points
    }

    fn take_parts(&mut self, shared: &Shared) {
        let parts = match shared.series_parts.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        for p in parts {
            let s = p.second as usize;
            if s < self.points.len() {
                // A late part for a reduced second: its counts still count.
                let pt = &mut self.points[s];
                pt.deliveries_fast += p.deliveries_fast;
                pt.deliveries_slow += p.deliveries_slow;
                pt.connects += p.connects;
                pt.resumes += p.resumes;
                pt.disconnects += p.disconnects;
                pt.slow_drops += p.slow_drops;
                for (k, v) in p.errors {
                    *pt.errors.entry(k).or_insert(0) += v;
                }
                continue;
            }
            match self.open.get_mut(&p.second) {
                Some(o) => o.merge(p),
                None => {
                    self.open.insert(p.second, p);
                }
            }
        }
    }

    /// Reduce every second before `until` (and any with data up to the last gauge).
    fn reduce(&mut self, until: u32) {
        let last = self
            .open
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.next_gauge_s.saturating_sub(1));
        while (self.points.len() as u32) < until.min(last + 1) {
            let s = self.points.len() as u32;
            let part = self.open.remove(&s).unwrap_or_else(|| SeriesPart::new(s));
            let (connected, events_sent) = self.gauges.remove(&s).unwrap_or((0, 0));
            self.points.push(SeriesPoint {
                t_s: s,
                connected,
                connects: part.connects,
                resumes: part.resumes,
                errors: part.errors.clone(),
                disconnects: part.disconnects,
                slow_drops: part.slow_drops,
                events_sent,
                deliveries_fast: part.deliveries_fast,
                deliveries_slow: part.deliveries_slow,
                fast_latency_us: SecondLatency::of(&part.fast_us),
                slow_latency_us: SecondLatency::of(&part.slow_us),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_merge_into_points_fast_and_slow_apart() {
        let shared = Shared::new(1, 1);
        let mut a = PartCursor::default();
        let mut b = PartCursor::default();
        a.at(0).record(1_000, false);
        a.at(0).connects += 1;
        b.at(0).record(3_000, false);
        b.at(1).record(8_000_000, true);
        b.at(1).error("econnrefused");
        a.ship(&shared, 2, true);
        b.ship(&shared, 2, true);
        let mut c = Collector::default();
        c.take_parts(&shared);
        c.reduce(u32::MAX);
        let pts = c.points;
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].deliveries_fast, pts[0].connects), (2, 1));
        assert!(pts[0].fast_latency_us.p99 >= 2_900 && pts[0].fast_latency_us.max >= 2_900);
        assert_eq!(pts[0].slow_latency_us, SecondLatency::default());
        assert_eq!(pts[1].deliveries_slow, 1);
        assert!(pts[1].slow_latency_us.max >= 7_900_000);
        assert_eq!(
            pts[1].fast_latency_us.p99, 0,
            "a slow backlog never lands on the fast line"
        );
        assert_eq!(pts[1].errors.get("econnrefused"), Some(&1));
    }

    #[test]
    fn a_late_part_still_counts() {
        let shared = Shared::new(1, 1);
        let mut c = Collector::default();
        let mut p = PartCursor::default();
        p.at(0).record(10, false);
        p.ship(&shared, 1, true);
        c.take_parts(&shared);
        c.reduce(1);
        let mut late = PartCursor::default();
        late.at(0).record(10, false);
        late.ship(&shared, 1, true);
        c.take_parts(&shared);
        assert_eq!(c.points[0].deliveries_fast, 2);
    }
}
