//! Counters and histograms one subscriber thread fills without locks, merged
//! into one at the end. Latencies in microseconds.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::series::PartCursor;

/// Highest latency a histogram holds (one hour, µs); larger values saturate.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Seconds on the per-second timeline (the run length is capped to match).
pub const TIMELINE_S_MAX: usize = crate::cli::DURATION_S_MAX as usize + 120;

pub fn new_histogram(sigfig: u8) -> Histogram<u64> {
    // Bounds are constants in range: construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, sigfig)
        .expect("constant histogram bounds are valid")
}

/// One second of the timeline.
#[derive(Debug, Clone)]
pub struct Second {
    pub deliveries: u64,
    pub latency_us: Histogram<u64>,
}

/// Per-kind counts (error kinds, statuses, causes), sorted for stable output.
pub type Counts = BTreeMap<String, u64>;

pub fn bump(c: &mut Counts, kind: &str) {
    *c.entry(kind.to_string()).or_insert(0) += 1;
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of deliveries to fast (not deliberately slow) subscribers.
    pub fast_latency_us: Histogram<u64>,
    /// Latency of every delivery, slow subscribers included.
    pub all_latency_us: Histogram<u64>,
    /// Connect start to response head, per subscriber.
    pub connect_us: Histogram<u64>,
    /// Seconds since publishing began → deliveries and latency.
    pub timeline: Vec<Second>,

    pub subscribers_connected: u64,
    pub connect_errors: Counts,
    pub http_statuses: Counts,
    pub disconnects: Counts,

    pub deliveries_received: u64,
    pub deliveries_expected: u64,
    pub loss: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Events whose data was not ours (no `seq=`), e.g. a peer's own frames.
    pub foreign_events: u64,
    pub comments: u64,
    pub bytes_received: u64,
    /// Multishot reads that ended because every provided buffer was in use.
    pub recv_no_buffers: u64,

    pub slow_clients: u64,
    pub slow_clients_dropped: u64,
    pub slow_deliveries_received: u64,
    /// From falling behind to the server's close, per dropped slow client.
    pub slow_drop_after_us: Histogram<u64>,
    /// Stalled subscribers found closed only when they read again after the drain.
    pub slow_drops_seen_at_end: u64,

    pub reconnects: u64,
    /// Connects tried again from a fresh source pair because connect() found
    /// the 4-tuple still taken (EADDRNOTAVAIL); not errors.
    pub source_pair_retries: u64,
    /// Reconnects of dropped slow subscribers started by the catch-up.
    pub catchup_reconnects: u64,
    pub resumed_subscribers: u64,
    pub resumed_exactly_once: u64,
    pub resumed_loss: u64,
    pub resumed_duplicates: u64,
    /// Every resume: from the stream's end (whatever ended it: the server,
    /// a dead node, a scenario's drop) to streaming again, µs.
    pub resume_us: Histogram<u64>,

    /// CPU time used by subscriber threads (user + system), seconds.
    pub thread_cpu_s: Vec<f64>,
    /// Where each scenario stage ends (offsets from publishing start, ns);
    /// empty: no per-stage figures.
    pub stage_ends_ns: Vec<u64>,
    /// Per stage: fast subscribers' latency of events scheduled in it.
    pub stage_fast_us: Vec<Histogram<u64>>,
    /// Per stage: subscribers its churn or storm disconnected.
    pub stage_churned: Vec<u64>,
    pub stage_stormed: Vec<u64>,
    /// Per stage: disconnect (churn or storm) to streaming again, µs.
    pub stage_resume_us: Vec<Histogram<u64>>,
    /// Per stage: subscribers it disconnected that never streamed again.
    pub stage_not_resumed: Vec<u64>,
    /// Per stage: subscribers its connect ramp started, and of those, connected.
    pub stage_ramped: Vec<u64>,
    pub stage_ramp_connected: Vec<u64>,
    /// Per stage: connections it made slow, those of them the server closed
    /// (slow drops), and subscribers it slowed that were never dropped and
    /// had every event they were owed, exactly once, by the end.
    pub stage_slowed: Vec<u64>,
    pub stage_slow_dropped: Vec<u64>,
    pub stage_slow_recovered: Vec<u64>,
    /// Events owed to subscribers slowed by a stage that they never got
    /// (not in the fast subscribers' `loss`).
    pub stage_slow_missing: u64,
    /// This thread's current second for the `series` (and finished ones not shipped yet).
    pub series: PartCursor,
    /// The same, per node (`--url` order), for what happens to a
    /// subscriber (connects, deliveries, loss); empty inside a node's own.
    pub per_node: Vec<Stats>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            fast_latency_us: new_histogram(3),
            all_latency_us: new_histogram(3),
            connect_us: new_histogram(3),
            timeline: Vec::new(),
            subscribers_connected: 0,
            connect_errors: Counts::new(),
            http_statuses: Counts::new(),
            disconnects: Counts::new(),
            deliveries_received: 0,
            deliveries_expected: 0,
            loss: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign_events: 0,
            comments: 0,
            bytes_received: 0,
            recv_no_buffers: 0,
            slow_clients: 0,
            slow_clients_dropped: 0,
            slow_deliveries_received: 0,
            slow_drop_after_us: new_histogram(3),
            slow_drops_seen_at_end: 0,
            reconnects: 0,
            source_pair_retries: 0,
            catchup_reconnects: 0,
            resumed_subscribers: 0,
            resumed_exactly_once: 0,
            resumed_loss: 0,
            resumed_duplicates: 0,
            resume_us: new_histogram(3),
            thread_cpu_s: Vec::new(),
            per_node: Vec::new(),
            series: PartCursor::default(),
            stage_ends_ns: Vec::new(),
            stage_fast_us: Vec::new(),
            stage_churned: Vec::new(),
            stage_stormed: Vec::new(),
            stage_resume_us: Vec::new(),
            stage_not_resumed: Vec::new(),
            stage_ramped: Vec::new(),
            stage_ramp_connected: Vec::new(),
            stage_slowed: Vec::new(),
            stage_slow_dropped: Vec::new(),
            stage_slow_recovered: Vec::new(),
            stage_slow_missing: 0,
        }
    }
}

impl Stats {
    /// Record one delivery `latency_us` that arrived `second` seconds after
    /// publishing began.
    pub fn record_delivery(&mut self, latency_us: u64, second: usize, run_second: u32, slow: bool) {
        let v = latency_us.clamp(1, LATENCY_US_MAX);
        self.series.at(run_second).record(v, slow);
        self.all_latency_us.saturating_record(v);
        if slow {
            self.slow_deliveries_received += 1;
        } else {
            self.fast_latency_us.saturating_record(v);
            self.deliveries_received += 1;
        }
        if second < TIMELINE_S_MAX {
            if self.timeline.len() <= second {
                self.timeline.resize_with(second + 1, || Second {
                    deliveries: 0,
                    latency_us: new_histogram(2),
                });
            }
            let s = &mut self.timeline[second];
            s.deliveries += 1;
            s.latency_us.saturating_record(v);
        }
    }

    /// Per-stage vectors sized for `stages`.
    pub fn with_stages(mut self, ends_ns: Vec<u64>) -> Self {
        let n = ends_ns.len();
        self.stage_ends_ns = ends_ns;
        self.stage_fast_us = (0..n).map(|_| new_histogram(3)).collect();
        self.stage_resume_us = (0..n).map(|_| new_histogram(3)).collect();
        self.stage_churned = vec![0; n];
        self.stage_stormed = vec![0; n];
        self.stage_not_resumed = vec![0; n];
        for v in self.stage_counts_mut() {
            *v = vec![0; n];
        }
        self
    }

    /// The per-stage counters added since the storm and churn ones.
    fn stage_counts_mut(&mut self) -> [&mut Vec<u64>; 5] {
        [
            &mut self.stage_ramped,
            &mut self.stage_ramp_connected,
            &mut self.stage_slowed,
            &mut self.stage_slow_dropped,
            &mut self.stage_slow_recovered,
        ]
    }

    /// A fast delivery of an event scheduled `offset_ns` after publishing began.
    pub fn record_stage(&mut self, offset_ns: u64, latency_us: u64) {
        let Some(i) = self.stage_ends_ns.iter().position(|&e| offset_ns < e) else {
            return;
        };
        self.stage_fast_us[i].saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
    }

    pub fn merge(&mut self, mut o: Stats) {
        if self.stage_ends_ns.len() < o.stage_ends_ns.len() {
            let n = o.stage_ends_ns.len();
            self.stage_ends_ns = o.stage_ends_ns.clone();
            self.stage_fast_us.resize_with(n, || new_histogram(3));
            self.stage_resume_us.resize_with(n, || new_histogram(3));
            self.stage_churned.resize(n, 0);
            self.stage_stormed.resize(n, 0);
            self.stage_not_resumed.resize(n, 0);
        }
        for (i, h) in o.stage_fast_us.iter().enumerate() {
            let _ = self.stage_fast_us[i].add(h);
        }
        for (i, h) in o.stage_resume_us.iter().enumerate() {
            let _ = self.stage_resume_us[i].add(h);
        }
        for (i, v) in o.stage_churned.iter().enumerate() {
            self.stage_churned[i] += v;
        }
        for (i, v) in o.stage_stormed.iter().enumerate() {
            self.stage_stormed[i] += v;
        }
        for (i, v) in o.stage_not_resumed.iter().enumerate() {
            self.stage_not_resumed[i] += v;
        }
        for (mine, theirs) in self
            .stage_counts_mut()
            .into_iter()
            .zip(o.stage_counts_mut())
        {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                *m += t;
            }
        }
        self.stage_slow_missing += o.stage_slow_missing;
        // Histograms share bounds, so add cannot fail; a failure would only
        // lose the other thread's samples, never panic.
        let _ = self.fast_latency_us.add(&o.fast_latency_us);
        let _ = self.all_latency_us.add(&o.all_latency_us);
        let _ = self.connect_us.add(&o.connect_us);
        let _ = self.slow_drop_after_us.add(&o.slow_drop_after_us);
        let _ = self.resume_us.add(&o.resume_us);
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize_with(o.timeline.len(), || Second {
                deliveries: 0,
                latency_us: new_histogram(2),
            });
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(o.timeline) {
            mine.deliveries += theirs.deliveries;
            let _ = mine.latency_us.add(&theirs.latency_us);
        }
        for (k, v) in o.connect_errors {
            *self.connect_errors.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.http_statuses {
            *self.http_statuses.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.disconnects {
            *self.disconnects.entry(k).or_insert(0) += v;
        }
        self.subscribers_connected += o.subscribers_connected;
        self.deliveries_received += o.deliveries_received;
        self.deliveries_expected += o.deliveries_expected;
        self.loss += o.loss;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.foreign_events += o.foreign_events;
        self.comments += o.comments;
        self.bytes_received += o.bytes_received;
        self.recv_no_buffers += o.recv_no_buffers;
        self.slow_clients += o.slow_clients;
        self.slow_clients_dropped += o.slow_clients_dropped;
        self.slow_deliveries_received += o.slow_deliveries_received;
        self.slow_drops_seen_at_end += o.slow_drops_seen_at_end;
        self.reconnects += o.reconnects;
        self.source_pair_retries += o.source_pair_retries;
        self.catchup_reconnects += o.catchup_reconnects;
        self.resumed_subscribers += o.resumed_subscribers;
        self.resumed_exactly_once += o.resumed_exactly_once;
        self.resumed_loss += o.resumed_loss;
        self.resumed_duplicates += o.resumed_duplicates;
        self.thread_cpu_s.extend(o.thread_cpu_s);
        if self.per_node.len() < o.per_node.len() {
            self.per_node.resize_with(o.per_node.len(), Stats::default);
        }
        for (mine, theirs) in self.per_node.iter_mut().zip(o.per_node) {
            mine.merge(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        a.record_delivery(1000, 0, 0, false);
        bump(&mut a.disconnects, "eof");
        let mut b = Stats::default();
        b.record_delivery(3000, 2, 0, false);
        b.record_delivery(5000, 2, 0, true);
        bump(&mut b.disconnects, "eof");
        a.merge(b);
        assert_eq!(a.deliveries_received, 2);
        assert_eq!(a.slow_deliveries_received, 1);
        assert_eq!(a.fast_latency_us.len(), 2);
        assert_eq!(a.all_latency_us.len(), 3);
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.timeline[2].deliveries, 2);
        assert_eq!(a.disconnects["eof"], 2);
    }
}
