//! One run, phase by phase, each with a deadline: ramp the subscribers,
//! publish the schedule, drain, give stalled subscribers their verdict, stop
//! and merge. Every phase ends by itself.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::RunConfig;
use crate::engine;
use crate::publisher;
use crate::report::{self, Report, RunTimes};
use crate::series::Collector;
use crate::shared::{interrupted, Shared};
use crate::stats::Stats;

/// How often the run loop looks at the shared counters.
const POLL: Duration = Duration::from_millis(20);
/// Extra time the ramp may take beyond its schedule and connect timeout.
const RAMP_SLACK: Duration = Duration::from_secs(2);
/// How long stalled subscribers get to show whether the server closed them.
const VERDICT_MAX: Duration = Duration::from_secs(2);
/// How long subscriber threads get to stop and hand back their stats.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a run could not produce a report (exit code 2).
#[derive(Debug)]
pub struct RunError(pub String);

pub fn run(cfg: RunConfig, url: &str) -> Result<Report, RunError> {
    let cfg = Arc::new(cfg);
    for p in &cfg.publish {
        publisher::probe(p).map_err(|e| {
            RunError(format!(
                "cannot connect to publish endpoint {}: {e}",
                p.server
            ))
        })?;
    }
    let mut shared = Shared::new(cfg.groups() * cfg.topics.len(), cfg.threads);
    if cfg.schedule.has_ramp() {
        // Subscribers that join while publishing goes on are owed what was
        // sent after they joined: track accepted events by sequence number.
        let per_topic = cfg.schedule.events_bound() / cfg.topics.len() as u64 + 1;
        shared = shared.with_seq_tracking(cfg.topics.len(), per_topic.min(crate::track::SEQ_MAX));
    }
    let shared = Arc::new(shared);
    if let Some(addr) = cfg.prometheus_listen {
        let bound = crate::prom::serve(addr, shared.clone())
            .map_err(|e| RunError(format!("--prometheus-listen {addr}: {e}")))?;
        if !cfg.quiet {
            eprintln!("stentor-loadgen: live figures at http://{bound}/metrics");
        }
    }
    let progress = Progress::new(&cfg, shared.clone());
    let cpu_start = engine::process_cpu_s();
    let wall_start = Instant::now();
    let started = std::time::SystemTime::now();

    // Ramp.
    let mut handles = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        match engine::spawn(t, cfg.clone(), shared.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.set(&shared.stop);
                return Err(RunError(format!("cannot start subscriber thread: {e}")));
            }
        }
    }
    // Subscribers a stage's ramp opens connect while publishing goes on.
    let before = cfg.ramp.before;
    let ramp_s = before as f64 / cfg.connect_rate;
    let ramp_deadline =
        wall_start + Duration::from_secs_f64(ramp_s) + cfg.connect_timeout + RAMP_SLACK;
    while shared.resolved.load(Ordering::Acquire) < before as u64 {
        if Instant::now() >= ramp_deadline
            || handles.iter().any(|h| h.is_finished())
            || interrupted()
        {
            break;
        }
        progress.tick("connect");
        std::thread::sleep(POLL);
    }
    shared.set(&shared.ramp_over);
    let connect_s = wall_start.elapsed().as_secs_f64();
    if before > 0 && shared.streaming.load(Ordering::Acquire) == 0 {
        let stats = stop(&shared, handles);
        progress.finish();
        let why = stats
            .map(|s| format!("{:?}", s.connect_errors))
            .unwrap_or_else(|e| e.0);
        return Err(RunError(format!(
            "no subscriber connected to {url} (errors: {why})"
        )));
    }

    // Publish, on its own threads, from a start slightly in the future so
    // event 0 is not already late.
    let start_ns = shared.now_ns() + 10_000_000;
    let machine_start = engine::machine_jiffies();
    shared.publish_start_ns.store(start_ns, Ordering::Release);
    let publisher = {
        let cfg = cfg.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || publisher::run(cfg, shared, start_ns))
            .map_err(|e| RunError(format!("cannot start publisher: {e}")))?
    };
    while !publisher.is_finished() {
        progress.tick("publish");
        std::thread::sleep(POLL);
    }
    let pub_stats = publisher.join().unwrap_or_default();
    shared.set(&shared.publish_done);

    // Drain: until every live fast subscriber has every accepted event.
    let drain_deadline = Instant::now() + cfg.drain;
    while !shared.all_delivered() && Instant::now() < drain_deadline && !interrupted() {
        progress.tick("drain");
        std::thread::sleep(POLL);
    }
    let publish_s = shared.now_ns().saturating_sub(start_ns) as f64 / 1e9;
    let machine_busy = stentor::sys::busy_share(machine_start, engine::machine_jiffies());

    // Verdict for slow subscribers: were they closed by the server?
    if cfg.slow_fraction > 0.0 {
        shared.set(&shared.verdict);
        let deadline = Instant::now() + VERDICT_MAX;
        while Instant::now() < deadline && !interrupted() {
            let acked = shared.verdict_acks.load(Ordering::Acquire) as usize >= cfg.threads;
            if acked && shared.verdicts_pending.load(Ordering::Acquire) == 0 {
                break;
            }
            progress.tick("verdict");
            std::thread::sleep(POLL);
        }
    }

    // Catch-up: dropped slow subscribers that have not resumed yet (their
    // drop was seen only by the final read, or their reconnect fell in the
    // verdict) reconnect with Last-Event-ID; wait, up to the drain deadline,
    // until each has every accepted event.
    if cfg.slow_fraction > 0.0 && cfg.reconnect {
        shared.set(&shared.catchup);
        let deadline = Instant::now() + cfg.drain;
        while !shared.all_caught_up() && Instant::now() < deadline && !interrupted() {
            progress.tick("catch-up");
            std::thread::sleep(POLL);
        }
    }

    let stats = stop(&shared, handles)?;
    progress.finish();
    let series = progress.series.take().finish(&shared);
    let times = RunTimes {
        connect_s,
        publish_s: publish_s.max(1e-3),
        wall_s: wall_start.elapsed().as_secs_f64(),
        cpu_s: engine::process_cpu_s() - cpu_start,
        machine_busy,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut report = report::build(&cfg, url, &stats, &pub_stats, &times);
    report.publish_start_s = start_ns as f64 / 1e9;
    report.series = series;
    report.started_unix_s = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Some(path) = &cfg.histogram_out {
        crate::merge::write_log(
            path,
            started,
            wall_start.elapsed(),
            &[
                ("fast_latency_us", &stats.fast_latency_us),
                ("all_latency_us", &stats.all_latency_us),
                ("connect_us", &stats.connect_us),
                ("publish_round_trip_us", &pub_stats.round_trip_us),
            ],
        )
        .map_err(RunError)?;
        report.histogram_file = Some(path.display().to_string());
    }
    if interrupted() {
        report
            .warnings
            .push("interrupted: the run was cut short, figures cover what was measured".into());
        report.slo.failures.push("run interrupted".into());
        report.slo.met = false;
    }
    Ok(report)
}

/// Stop every subscriber thread and merge their stats (bounded wait).
fn stop(
    shared: &Shared,
    handles: Vec<std::thread::JoinHandle<Result<Stats, String>>>,
) -> Result<Stats, RunError> {
    shared.set(&shared.stop);
    let deadline = Instant::now() + STOP_GRACE;
    while handles.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let mut total = Stats::default();
    let mut errors = Vec::new();
    for h in handles {
        if !h.is_finished() {
            errors.push("a subscriber thread did not stop in time".to_string());
            continue;
        }
        match h.join() {
            Ok(Ok(s)) => total.merge(s),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a subscriber thread panicked".to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(RunError(errors.join("; ")));
    }
    Ok(total)
}

/// The live progress line (only on a terminal), and the per-second series
/// collected at the same pace.
struct Progress {
    series: std::cell::RefCell<Collector>,
    bar: Option<ProgressBar>,
    shared: Arc<Shared>,
    requested: usize,
    events_total: u64,
}

impl Progress {
    fn new(cfg: &RunConfig, shared: Arc<Shared>) -> Self {
        let bar = (!cfg.quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                b.set_style(style);
            }
            b
        });
        Self {
            series: Default::default(),
            bar,
            shared,
            requested: cfg.subscribers,
            events_total: cfg.events_total(),
        }
    }

    fn tick(&self, phase: &str) {
        self.series.borrow_mut().poll(&self.shared);
        let Some(bar) = &self.bar else { return };
        let s = &self.shared;
        let p99 = s
            .p99_us
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        bar.set_message(format!(
            "{phase:7} subs {}/{} events {}/{} deliv {} p99 {:.1}ms",
            s.streaming.load(Ordering::Relaxed),
            self.requested,
            s.events_sent.load(Ordering::Relaxed),
            self.events_total,
            s.deliveries.load(Ordering::Relaxed),
            p99 as f64 / 1000.0
        ));
        bar.tick();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
