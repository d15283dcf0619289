//! The report: what a run measured, as JSON (a contract: field names are
//! stable), as a human summary, and the SLO verdict that sets the exit code.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{RunConfig, SlowMode};
use crate::publisher::PubStats;
use crate::stats::{Counts, Stats};

/// The loadgen counts as saturated above this share of the cores it can use.
const SATURATED_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                count: 0,
            };
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: usize,
    pub deliveries: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistributionPoint {
    pub percentile: f64,
    pub latency_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    pub mode: Option<SlowMode>,
    pub fraction: f64,
    pub deliveries_received: u64,
    /// Time from falling behind to the server's close, for drops seen while running.
    pub drop_after_ms: Percentiles,
    /// Drops seen only when stalled subscribers read again after the drain
    /// (the server closed with unread data queued, so no signal reached us earlier).
    pub drops_seen_at_end: u64,
    /// Events owed to subscribers a stage slowed (reading normally after
    /// it, or resumed after a drop) that never arrived; kept out of `loss`.
    pub stage_slowed_missing: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub enabled: bool,
    pub reconnects: u64,
    /// Of `reconnects`, those made after the final read (drops seen only
    /// then, or held back by it), checked within the drain deadline.
    pub after_final_read: u64,
    pub resumed_subscribers: u64,
    pub resumed_exactly_once: u64,
    /// Every resumed subscriber got every accepted event exactly once.
    pub all_exactly_once: bool,
    pub loss: u64,
    pub duplicates: u64,
    /// Every resume, from the stream's end to streaming again (failed
    /// attempts in between included), ms: with a node killed, `max` is how
    /// long until the last of its clients streamed again elsewhere.
    pub resume_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadgenReport {
    pub threads: usize,
    pub slots_per_ring: usize,
    pub cores: usize,
    pub cpu_s: f64,
    pub wall_s: f64,
    /// Average cores busy over the run (cpu_s / wall_s).
    pub cpu_cores_busy: f64,
    /// Share of the whole machine's CPU busy (server included) while publishing.
    pub machine_cpu_busy: Option<f64>,
    /// Reads re-armed because all provided read buffers were in use (data waits in the socket meanwhile).
    pub recv_no_buffers: u64,
    pub subscriber_thread_cpu_s: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slo {
    pub max_p99_ms: Option<f64>,
    pub max_loss: Option<f64>,
    pub min_connected: Option<f64>,
    pub min_published: Option<f64>,
    pub max_publish_p99_ms: Option<f64>,
    pub met: bool,
    pub failures: Vec<String>,
}

/// One scenario stage (a plain run is one stage named `run`).
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: String,
    pub profile: String,
    /// Offsets from the start of publishing, s.
    pub start_s: f64,
    pub duration_s: f64,
    pub payload_bytes: usize,
    pub churn_per_s: f64,
    /// `all`, `node N`, or absent.
    pub storm: Option<String>,
    /// Subscribers opened per second during the stage, how many its ramp
    /// started, and of those how many streamed.
    pub connect_per_s: Option<f64>,
    pub ramped: u64,
    pub ramp_connected: u64,
    /// Share of subscribers slow during the stage, and how.
    pub slow_fraction: f64,
    pub slow_mode: Option<SlowMode>,
    /// Connections the stage made slow; of those, closed by the server
    /// (slow drops, not loss); subscribers it slowed that were never
    /// dropped and had every event exactly once by the end.
    pub slowed: u64,
    pub slow_dropped: u64,
    pub slow_recovered: u64,
    /// Fast subscribers' latency of events scheduled in this stage.
    pub fast_latency_us: Percentiles,
    /// Subscribers its churn and its storm disconnected.
    pub churned: u64,
    pub stormed: u64,
    /// Disconnect (churn or storm) to streaming again, ms.
    pub resume_ms: Percentiles,
    /// Disconnected by this stage and never streaming again by the end.
    pub not_resumed: u64,
    pub max_p99_ms: Option<f64>,
    pub max_resume_s: Option<f64>,
    pub slo_met: bool,
    pub slo_failures: Vec<String>,
}

/// One node's share of the run (`--url` order).
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub url: String,
    pub weight: u32,
    pub subscribers_requested: u64,
    pub subscribers_connected: u64,
    pub connect_errors: Counts,
    pub disconnects: Counts,
    /// What this node's fast subscribers were owed: events accepted where
    /// they reach this node (its own publishes when independent, all in a cluster).
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub loss: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub fast_latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    /// How events published on one node reach the others' subscribers.
    pub topology: crate::cli::Topology,
    /// Per node; the top-level figures are their total.
    pub nodes: Vec<NodeReport>,
    /// Per stage of the schedule, with its SLOs.
    pub stages: Vec<StageReport>,
    pub subscribers_requested: usize,
    pub subscribers_connected: u64,
    pub connect_time_ms: f64,
    pub connect_latency_us: Percentiles,
    pub connect_errors: Counts,
    /// Connects tried again from a fresh source pair because the last one's
    /// 4-tuple was still taken (not errors; see docs/reference/loadgen.md).
    pub source_pair_retries: u64,
    /// Source addresses the subscribers connected from (empty: the kernel chose).
    pub source_ips: Vec<std::net::IpAddr>,
    /// Source pairs earlier connections still held toward the server at the start (skipped).
    pub source_pairs_busy_at_start: usize,
    pub http_statuses: Counts,
    pub topics: usize,
    pub rate: f64,
    pub duration_s: u64,
    pub payload_bytes: usize,
    pub events_scheduled: u64,
    pub events_published: u64,
    pub events_accepted: u64,
    pub publish_errors: Counts,
    pub publish_lag_ms_max: f64,
    pub publish_lag_ms_p99: f64,
    pub publish_lag_ms_p50: f64,
    /// Requests in flight per publish connection (1 = sequential publisher).
    pub publish_inflight: usize,
    /// Publish request written to its response parsed, µs.
    pub publish_round_trip_us: Percentiles,
    /// Events never sent because the schedule was over (by 10% of the run,
    /// at least 1 s): the publisher could not keep up with the rate.
    pub events_behind_schedule: u64,
    /// Events accepted per second of the publishing window.
    pub publish_rate_achieved: f64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub loss: u64,
    pub loss_ratio: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign_events: u64,
    /// Where an event's latency ends (`--latency-at`): the kernel's receive
    /// timestamp, or the loadgen's read.
    pub latency_at: crate::cli::LatencyAt,
    pub latency_us: Percentiles,
    pub fast_latency_us: Percentiles,
    pub deliveries_per_s: f64,
    pub bytes_received: u64,
    pub disconnects: Counts,
    pub slow_clients: u64,
    pub slow_clients_dropped: u64,
    pub slow: SlowReport,
    pub resume: ResumeReport,
    pub loadgen: LoadgenReport,
    pub timeline: Vec<TimelinePoint>,
    /// Wall clock when the run began, s since the Unix epoch (`merge` states
    /// the offsets between runs from it).
    pub started_unix_s: f64,
    /// The `--histogram-out` file, for `merge`.
    pub histogram_file: Option<String>,
    /// When publishing began, seconds since the run began (`series` time base).
    pub publish_start_s: f64,
    /// The run second by second since it began (see docs/reference/loadgen.md).
    pub series: Vec<crate::series::SeriesPoint>,
    pub latency_distribution: Vec<DistributionPoint>,
    pub slo: Slo,
    pub warnings: Vec<String>,
}

/// Measurements the run loop took outside the per-thread stats.
#[derive(Debug, Clone, Default)]
pub struct RunTimes {
    pub connect_s: f64,
    pub publish_s: f64,
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Share of the machine's CPU busy (all processes) while publishing.
    pub machine_busy: Option<f64>,
    pub cores: usize,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn build(cfg: &RunConfig, url: &str, st: &Stats, ps: &PubStats, t: &RunTimes) -> Report {
    let fast = Percentiles::of(&st.fast_latency_us);
    let loss_ratio = if st.deliveries_expected == 0 {
        0.0
    } else {
        st.loss as f64 / st.deliveries_expected as f64
    };
    let total_received = st.deliveries_received + st.slow_deliveries_received;
    let deliveries_per_s = total_received as f64 / t.publish_s.max(1e-9);
    let drop_after_us = Percentiles::of(&st.slow_drop_after_us);
    let to_ms = |p: Percentiles| Percentiles {
        p50: p.p50 / 1000,
        p90: p.p90 / 1000,
        p99: p.p99 / 1000,
        p999: p.p999 / 1000,
        max: p.max / 1000,
        count: p.count,
    };
    let mut warnings = Vec::new();
    let cpu_cores_busy = t.cpu_s / t.wall_s.max(1e-9);
    let usable = cfg.threads.min(t.cores).max(1) as f64;
    if cpu_cores_busy > SATURATED_SHARE * usable {
        warnings.push(format!(
            "loadgen saturated: it used {cpu_cores_busy:.2} of the {usable} cores it can use; latency may be the loadgen's, not the server's"
        ));
    }
    let run_s = (t.connect_s + t.publish_s).max(1e-9);
    for (i, cpu) in st.thread_cpu_s.iter().enumerate() {
        if *cpu > SATURATED_SHARE * run_s {
            warnings.push(format!(
                "subscriber thread {i} was busy {:.0}% of the run: add --threads",
                cpu / run_s * 100.0
            ));
        }
    }
    if let Some(busy) = t.machine_busy.filter(|b| *b > SATURATED_SHARE) {
        warnings.push(format!(
            "the machine's CPU was {:.0}% busy while publishing (server, loadgen and anything else): figures include that contention",
            busy * 100.0
        ));
    }
    let lag_max_ms = ms(ps.lag_us.max());
    if lag_max_ms > 100.0 {
        warnings.push(format!(
            "publisher ran up to {lag_max_ms:.0} ms behind schedule (server slow to answer, or loadgen saturated); latency is still measured from the schedule"
        ));
    }
    if ps.behind_schedule > 0 {
        warnings.push(format!(
            "{} of {} events were never sent: with {} request(s) in flight per connection the publisher fell behind the schedule (publish round trip p50 {:.2} ms)",
            ps.behind_schedule,
            cfg.events_total(),
            cfg.publish.iter().map(|p| p.inflight * p.conns).sum::<usize>(),
            ms(ps.round_trip_us.value_at_quantile(0.5)),
        ));
    }
    if st.subscribers_connected < cfg.subscribers as u64 {
        warnings.push(format!(
            "only {} of {} subscribers connected",
            st.subscribers_connected, cfg.subscribers
        ));
    }
    if st.foreign_events > 0 {
        warnings.push(format!(
            "{} events did not carry our seq/t_ns payload (not counted)",
            st.foreign_events
        ));
    }
    if ps.accepted < ps.sent {
        warnings.push(format!(
            "{} of {} publishes were not accepted",
            ps.sent - ps.accepted,
            ps.sent
        ));
    }

    let timeline = st
        .timeline
        .iter()
        .enumerate()
        .map(|(i, s)| TimelinePoint {
            second: i,
            deliveries: s.deliveries,
            p99_us: if s.latency_us.is_empty() {
                0
            } else {
                s.latency_us.value_at_quantile(0.99)
            },
        })
        .collect();
    let latency_distribution = if st.fast_latency_us.is_empty() {
        Vec::new()
    } else {
        [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
        ]
        .iter()
        .map(|&p| DistributionPoint {
            percentile: p,
            latency_us: st.fast_latency_us.value_at_percentile(p),
        })
        .collect()
    };

    let nodes = cfg
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let empty = Stats::default();
            let s = st.per_node.get(i).unwrap_or(&empty);
            NodeReport {
                url: n.url.clone(),
                weight: n.weight,
                subscribers_requested: (0..cfg.subscribers)
                    .filter(|&g| cfg.node_of(g) == i)
                    .count() as u64,
                subscribers_connected: s.subscribers_connected,
                connect_errors: s.connect_errors.clone(),
                disconnects: s.disconnects.clone(),
                deliveries_expected: s.deliveries_expected,
                deliveries_received: s.deliveries_received,
                loss: s.loss,
                duplicates: s.duplicates,
                out_of_order: s.out_of_order,
                fast_latency_us: Percentiles::of(&s.fast_latency_us),
            }
        })
        .collect();
    let stages = cfg
        .schedule
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let empty = crate::stats::new_histogram(3);
            let fast = Percentiles::of(st.stage_fast_us.get(i).unwrap_or(&empty));
            let resume_us = Percentiles::of(st.stage_resume_us.get(i).unwrap_or(&empty));
            let resume_ms = Percentiles {
                p50: resume_us.p50 / 1000,
                p90: resume_us.p90 / 1000,
                p99: resume_us.p99 / 1000,
                p999: resume_us.p999 / 1000,
                max: resume_us.max / 1000,
                count: resume_us.count,
            };
            let not_resumed = st.stage_not_resumed.get(i).copied().unwrap_or(0);
            let mut failures = Vec::new();
            if let Some(max) = s.max_p99_ms {
                let p99 = ms(fast.p99);
                if fast.count == 0 {
                    failures.push(format!("stage {:?}: no deliveries to measure p99", s.name));
                } else if p99 > max {
                    failures.push(format!(
                        "stage {:?}: p99 {p99:.3} ms > max_p99_ms {max}",
                        s.name
                    ));
                }
            }
            if let Some(max) = s.max_resume_s {
                let worst = resume_us.max as f64 / 1e6;
                if not_resumed > 0 {
                    failures.push(format!(
                        "stage {:?}: {not_resumed} disconnected subscribers never streamed again",
                        s.name
                    ));
                } else if worst > max {
                    failures.push(format!(
                        "stage {:?}: slowest resume {worst:.3} s > max_resume_s {max}",
                        s.name
                    ));
                }
            }
            let count = |v: &Vec<u64>| v.get(i).copied().unwrap_or(0);
            StageReport {
                connect_per_s: s.connect_per_s,
                ramped: count(&st.stage_ramped),
                ramp_connected: count(&st.stage_ramp_connected),
                slow_fraction: s.slow_fraction,
                slow_mode: s.slow_mode,
                slowed: count(&st.stage_slowed),
                slow_dropped: count(&st.stage_slow_dropped),
                slow_recovered: count(&st.stage_slow_recovered),
                name: s.name.clone(),
                profile: s.profile.clone(),
                start_s: s.start_ns as f64 / 1e9,
                duration_s: (s.end_ns - s.start_ns) as f64 / 1e9,
                payload_bytes: s.payload_bytes,
                churn_per_s: s.churn_per_s,
                storm: s
                    .storm
                    .map(|n| n.map_or("all".to_string(), |n| format!("node {n}"))),
                fast_latency_us: fast,
                churned: st.stage_churned.get(i).copied().unwrap_or(0),
                stormed: st.stage_stormed.get(i).copied().unwrap_or(0),
                resume_ms,
                not_resumed,
                max_p99_ms: s.max_p99_ms,
                max_resume_s: s.max_resume_s,
                slo_met: failures.is_empty(),
                slo_failures: failures,
            }
        })
        .collect();
    let mut r = Report {
        url: url.to_string(),
        topology: cfg.topology,
        nodes,
        stages,
        subscribers_requested: cfg.subscribers,
        subscribers_connected: st.subscribers_connected,
        connect_time_ms: t.connect_s * 1000.0,
        connect_latency_us: Percentiles::of(&st.connect_us),
        connect_errors: st.connect_errors.clone(),
        source_pair_retries: st.source_pair_retries,
        source_ips: cfg.source_ips.clone(),
        source_pairs_busy_at_start: cfg.busy_pairs.len(),
        http_statuses: st.http_statuses.clone(),
        topics: cfg.topics.len(),
        rate: cfg.rate,
        duration_s: cfg.duration_s,
        payload_bytes: cfg.payload_bytes,
        events_scheduled: ps.scheduled,
        events_published: ps.sent,
        events_accepted: ps.accepted,
        publish_errors: ps.errors.clone(),
        publish_lag_ms_max: lag_max_ms,
        publish_lag_ms_p99: if ps.lag_us.is_empty() {
            0.0
        } else {
            ms(ps.lag_us.value_at_quantile(0.99))
        },
        publish_lag_ms_p50: if ps.lag_us.is_empty() {
            0.0
        } else {
            ms(ps.lag_us.value_at_quantile(0.5))
        },
        publish_inflight: cfg.publish[0].inflight,
        publish_round_trip_us: Percentiles::of(&ps.round_trip_us),
        events_behind_schedule: ps.behind_schedule,
        publish_rate_achieved: ps.accepted as f64 / t.publish_s,
        deliveries_expected: st.deliveries_expected,
        deliveries_received: st.deliveries_received,
        loss: st.loss,
        loss_ratio,
        duplicates: st.duplicates,
        out_of_order: st.out_of_order,
        foreign_events: st.foreign_events,
        latency_at: cfg.latency_at,
        latency_us: Percentiles::of(&st.all_latency_us),
        fast_latency_us: fast,
        deliveries_per_s,
        bytes_received: st.bytes_received,
        disconnects: st.disconnects.clone(),
        slow_clients: st.slow_clients,
        slow_clients_dropped: st.slow_clients_dropped,
        slow: SlowReport {
            mode: (cfg.slow_fraction > 0.0).then_some(cfg.slow_mode),
            fraction: cfg.slow_fraction,
            deliveries_received: st.slow_deliveries_received,
            drop_after_ms: to_ms(drop_after_us),
            drops_seen_at_end: st.slow_drops_seen_at_end,
            stage_slowed_missing: st.stage_slow_missing,
        },
        resume: ResumeReport {
            enabled: cfg.reconnect,
            reconnects: st.reconnects,
            after_final_read: st.catchup_reconnects,
            resumed_subscribers: st.resumed_subscribers,
            resumed_exactly_once: st.resumed_exactly_once,
            all_exactly_once: st.resumed_exactly_once == st.resumed_subscribers,
            loss: st.resumed_loss,
            duplicates: st.resumed_duplicates,
            resume_ms: to_ms(Percentiles::of(&st.resume_us)),
        },
        loadgen: LoadgenReport {
            threads: cfg.threads,
            slots_per_ring: cfg.slots_per_thread,
            cores: t.cores,
            cpu_s: t.cpu_s,
            wall_s: t.wall_s,
            cpu_cores_busy,
            machine_cpu_busy: t.machine_busy,
            recv_no_buffers: st.recv_no_buffers,
            subscriber_thread_cpu_s: st.thread_cpu_s.clone(),
        },
        timeline,
        publish_start_s: 0.0,
        started_unix_s: 0.0,
        histogram_file: None,
        series: Vec::new(),
        latency_distribution,
        slo: Slo {
            max_p99_ms: cfg.max_p99_ms,
            max_loss: cfg.max_loss,
            min_connected: cfg.min_connected,
            min_published: cfg.min_published,
            max_publish_p99_ms: cfg.max_publish_p99_ms,
            met: true,
            failures: Vec::new(),
        },
        warnings,
    };
    r.slo.failures = slo_failures(cfg, &r);
    let stage_failures: Vec<String> = r
        .stages
        .iter()
        .flat_map(|s| s.slo_failures.clone())
        .collect();
    r.slo.failures.extend(stage_failures);
    r.slo.met = r.slo.failures.is_empty();
    r
}

fn slo_failures(cfg: &RunConfig, r: &Report) -> Vec<String> {
    let mut f = Vec::new();
    let any_slo = cfg.max_p99_ms.is_some()
        || cfg.max_loss.is_some()
        || cfg.min_connected.is_some()
        || cfg.min_published.is_some()
        || cfg.max_publish_p99_ms.is_some();
    if let Some(min) = cfg.min_published {
        let share = r.events_accepted as f64 / r.events_scheduled.max(1) as f64;
        if share < min {
            f.push(format!(
                "published {} of {} scheduled events ({:.1}%) < --min-published {min}",
                r.events_accepted,
                r.events_scheduled,
                share * 100.0
            ));
        }
    }
    if let Some(max) = cfg.max_publish_p99_ms {
        let p99 = ms(r.publish_round_trip_us.p99);
        if p99 > max {
            f.push(format!(
                "publish round trip p99 {p99:.3} ms > --max-publish-p99-ms {max}"
            ));
        }
    }
    if let Some(max) = cfg.max_p99_ms {
        let p99 = ms(r.fast_latency_us.p99);
        if r.fast_latency_us.count == 0 {
            f.push("p99: no deliveries to measure".to_string());
        } else if p99 > max {
            f.push(format!("p99 {p99:.3} ms > --max-p99-ms {max}"));
        }
    }
    if let Some(max) = cfg.max_loss {
        if r.loss_ratio > max {
            f.push(format!(
                "loss {:.6} ({} of {}) > --max-loss {max}",
                r.loss_ratio, r.loss, r.deliveries_expected
            ));
        }
    }
    if any_slo && r.events_accepted < r.events_published {
        // Loss is counted against accepted events; refused ones would hide it.
        f.push(format!(
            "{} of {} publishes were not accepted",
            r.events_published - r.events_accepted,
            r.events_published
        ));
    }
    let min_connected = cfg.min_connected.or(any_slo.then_some(1.0));
    if let Some(min) = min_connected {
        let share = r.subscribers_connected as f64 / r.subscribers_requested.max(1) as f64;
        if share < min {
            f.push(format!(
                "connected {} of {} < --min-connected {min}",
                r.subscribers_connected, r.subscribers_requested
            ));
        }
    }
    f
}

fn kinds(c: &Counts) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human summary printed at the end of a run.
pub fn summary(r: &Report) -> String {
    let l = &r.fast_latency_us;
    let mut s = format!(
        "stentor-loadgen: {url}\n\
         subscribers  {conn}/{req} connected{when} (connect p50 {cp50:.2} ms, p99 {cp99:.2} ms); errors: {cerr}\n\
         publishing   {pubd}/{sched} events sent, {acc} accepted at {rate} ev/s over {dur} s x {bytes} B; lag max {lag:.2} ms; errors: {perr}\n\
         publish rtt  p50 {rt50:.3} ms  p99 {rt99:.3} ms  max {rtmax:.3} ms  ({inflight} in flight per connection; {behind} not sent, behind schedule)\n\
         deliveries   {recv}/{exp} received ({dps:.0}/s); loss {loss} ({lr:.6}), duplicates {dup}, out of order {ooo}\n\
         latency      p50 {p50:.3} ms  p90 {p90:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms  max {max:.3} ms  (fast subscribers, at {at})\n\
         disconnects  {disc}\n",
        url = r.url,
        at = match r.latency_at {
            crate::cli::LatencyAt::Kernel => "kernel receive",
            crate::cli::LatencyAt::Read => "read",
        },
        conn = r.subscribers_connected,
        req = r.subscribers_requested,
        when = match r.stages.iter().map(|s| s.ramped).sum::<u64>() {
            0 => format!(" in {:.2} s", r.connect_time_ms / 1000.0),
            ramped => format!(
                ", {ramped} opened by stage ramps while publishing (the others in {:.2} s before)",
                r.connect_time_ms / 1000.0
            ),
        },
        cp50 = ms(r.connect_latency_us.p50),
        cp99 = ms(r.connect_latency_us.p99),
        cerr = kinds(&r.connect_errors),
        pubd = r.events_published,
        sched = r.events_scheduled,
        acc = r.events_accepted,
        rate = r.rate,
        dur = r.duration_s,
        bytes = r.payload_bytes,
        lag = r.publish_lag_ms_max,
        rt50 = ms(r.publish_round_trip_us.p50),
        rt99 = ms(r.publish_round_trip_us.p99),
        rtmax = ms(r.publish_round_trip_us.max),
        inflight = r.publish_inflight,
        behind = r.events_behind_schedule,
        perr = kinds(&r.publish_errors),
        recv = r.deliveries_received,
        exp = r.deliveries_expected,
        dps = r.deliveries_per_s,
        loss = r.loss,
        lr = r.loss_ratio,
        dup = r.duplicates,
        ooo = r.out_of_order,
        p50 = ms(l.p50),
        p90 = ms(l.p90),
        p99 = ms(l.p99),
        p999 = ms(l.p999),
        max = ms(l.max),
        disc = kinds(&r.disconnects),
    );
    if r.slow_clients > 0 {
        let timing = if r.slow.drop_after_ms.count > 0 {
            format!(
                "{} seen while running, after falling behind: p50 {} ms, max {} ms; ",
                r.slow.drop_after_ms.count, r.slow.drop_after_ms.p50, r.slow.drop_after_ms.max
            )
        } else {
            String::new()
        };
        s += &format!(
            "slow         {} slow clients, {} dropped by the server ({timing}{} seen only by the final read); all-subscriber p99 {:.3} ms\n",
            r.slow_clients,
            r.slow_clients_dropped,
            r.slow.drops_seen_at_end,
            ms(r.latency_us.p99)
        );
        if r.slow.stage_slowed_missing > 0 {
            s += &format!(
                "slow         {} events owed to subscribers a stage slowed never arrived\n",
                r.slow.stage_slowed_missing
            );
        }
    }
    if r.resume.enabled {
        s += &format!(
            "resume       {} reconnects ({} after the final read); {} of {} resumed subscribers got every event exactly once (loss {}, duplicates {})\n",
            r.resume.reconnects,
            r.resume.after_final_read,
            r.resume.resumed_exactly_once,
            r.resume.resumed_subscribers,
            r.resume.loss,
            r.resume.duplicates
        );
        if r.resume.resume_ms.count > 0 {
            s += &format!(
                "             stream end to streaming again: p50 {} ms, p99 {} ms, max {} ms ({} resumes)\n",
                r.resume.resume_ms.p50,
                r.resume.resume_ms.p99,
                r.resume.resume_ms.max,
                r.resume.resume_ms.count
            );
        }
    }
    s += &format!(
        "loadgen      {} threads, {:.2} CPU s over {:.2} s ({:.2} cores busy of {})\n",
        r.loadgen.threads,
        r.loadgen.cpu_s,
        r.loadgen.wall_s,
        r.loadgen.cpu_cores_busy,
        r.loadgen.cores
    );
    if r.stages.len() > 1 || r.stages.iter().any(|s| s.churned + s.stormed > 0) {
        for st in &r.stages {
            if st.connect_per_s.is_some() {
                s += &format!(
                    "stage ramp   {:?}: {} of {} subscribers it opened streamed ({}/s)\n",
                    st.name,
                    st.ramp_connected,
                    st.ramped,
                    st.connect_per_s.unwrap_or(0.0),
                );
            }
            if st.slow_fraction > 0.0 {
                s += &format!(
                    "stage slow   {:?}: {} connections slowed ({}), {} dropped by the server (slow drops), {} recovered with every event\n",
                    st.name,
                    st.slowed,
                    match st.slow_mode {
                        Some(SlowMode::Trickle { bytes_per_s }) => format!("trickle:{bytes_per_s}"),
                        _ => "stall".to_string(),
                    },
                    st.slow_dropped,
                    st.slow_recovered,
                );
            }
            s += &format!(
                "stage        {:?} ({}, {:.0}-{:.0} s): p50 {:.3} ms p99 {:.3} ms max {:.3} ms; churned {} stormed {}, resumed p50 {} ms max {} ms, {} not resumed; SLO {}\n",
                st.name,
                st.profile,
                st.start_s,
                st.start_s + st.duration_s,
                ms(st.fast_latency_us.p50),
                ms(st.fast_latency_us.p99),
                ms(st.fast_latency_us.max),
                st.churned,
                st.stormed,
                st.resume_ms.p50,
                st.resume_ms.max,
                st.not_resumed,
                if st.slo_met { "met" } else { "NOT met" },
            );
        }
    }
    if r.nodes.len() > 1 {
        for n in &r.nodes {
            s += &format!(
                "node         {} (weight {}): {}/{} connected, {}/{} received, loss {}, duplicates {}, p50 {:.3} ms p99 {:.3} ms max {:.3} ms; errors: {}\n",
                n.url,
                n.weight,
                n.subscribers_connected,
                n.subscribers_requested,
                n.deliveries_received,
                n.deliveries_expected,
                n.loss,
                n.duplicates,
                ms(n.fast_latency_us.p50),
                ms(n.fast_latency_us.p99),
                ms(n.fast_latency_us.max),
                kinds(&n.connect_errors),
            );
        }
        s += &format!("topology     {:?} ({} nodes)\n", r.topology, r.nodes.len()).to_lowercase();
    }
    for w in &r.warnings {
        s += &format!("warning      {w}\n");
    }
    let any_slo = r.slo.max_p99_ms.is_some()
        || r.slo.max_loss.is_some()
        || r.slo.min_connected.is_some()
        || r.slo.min_published.is_some()
        || r.slo.max_publish_p99_ms.is_some();
    s += &if r.slo.met && !any_slo {
        "SLO          none set (--max-p99-ms, --max-loss, --min-connected)\n".to_string()
    } else if r.slo.met {
        "SLO          met\n".to_string()
    } else {
        format!("SLO          NOT met: {}\n", r.slo.failures.join("; "))
    };
    s
}
