//! Distributed runs: `--histogram-out` writes a run's latency histograms in
//! HdrHistogram's interval-log format (V2, deflated, base64; readable by
//! HdrHistogram's own tools), and `stentor-loadgen merge` combines the
//! reports of runs made on several machines at once into one.
//!
//! Why histograms: percentiles cannot be averaged (the p99 of two runs is
//! not the mean of their p99s); adding the histograms and reading the
//! percentile from the sum is exact to the histograms' precision. Counts
//! are summed. Latency needs no clock sync across machines: each loadgen
//! times only its own events against its own clock (give each machine its
//! own `--topic-prefix`, so it never receives another's events); the wall
//! clock at each run's start is recorded and the merged report states the
//! offsets between runs, since the runs overlapping is what makes their sum
//! a load.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::report::Percentiles;
use crate::stats::new_histogram;

/// Runs one merge takes at most.
const RUNS_MAX: usize = 256;

/// Write `hists` (tag, histogram) as one interval of an HdrHistogram log
/// starting at `start` and lasting `length`.
pub fn write_log(
    path: &Path,
    start: SystemTime,
    length: Duration,
    hists: &[(&str, &Histogram<u64>)],
) -> Result<(), String> {
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("stentor-loadgen latency histograms (µs)")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut ser)
            .map_err(|e| format!("histogram log: {e}"))?;
        for (tag, h) in hists {
            let tag = Tag::new(tag).ok_or("histogram log: bad tag")?;
            w.write_histogram(h, Duration::ZERO, length, Some(tag))
                .map_err(|e| format!("histogram log: {e:?}"))?;
        }
    }
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(&out)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Every histogram of a log, added up per tag.
pub fn read_log(path: &Path) -> Result<BTreeMap<String, Histogram<u64>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry =
            entry.map_err(|e| format!("{}: not an HdrHistogram log: {e:?}", path.display()))?;
        let LogEntry::Interval(h) = entry else {
            continue;
        };
        let Some(tag) = h.tag() else { continue };
        let raw = base64_decode(h.encoded_histogram())
            .ok_or_else(|| format!("{}: bad base64 in {}", path.display(), tag.as_str()))?;
        let hist: Histogram<u64> = de
            .deserialize(&mut raw.as_slice())
            .map_err(|e| format!("{}: {}: {e:?}", path.display(), tag.as_str()))?;
        let sum = out
            .entry(tag.as_str().to_string())
            .or_insert_with(|| new_histogram(3));
        sum.add(&hist)
            .map_err(|e| format!("{}: {}: {e:?}", path.display(), tag.as_str()))?;
    }
    Ok(out)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

/// One run as the merged report lists it.
#[derive(Debug, Serialize)]
pub struct MergedRun {
    pub report: String,
    pub url: String,
    pub started_unix_s: f64,
    /// Start relative to the earliest run, s.
    pub offset_s: f64,
    pub wall_s: f64,
    pub subscribers_connected: u64,
    pub fast_latency_p99_us: u64,
}

#[derive(Debug, Serialize)]
pub struct Merged {
    pub runs: Vec<MergedRun>,
    /// How the runs' clocks relate (stated, not corrected).
    pub clock_note: String,
    /// Largest start offset between two runs, s.
    pub start_spread_s: f64,
    /// Summed over the runs.
    pub counts: BTreeMap<String, u64>,
    pub loss_ratio: f64,
    pub deliveries_per_s: f64,
    /// Recomputed from the summed histograms.
    pub fast_latency_us: Percentiles,
    pub latency_us: Percentiles,
    pub connect_latency_us: Percentiles,
    pub publish_round_trip_us: Percentiles,
    pub warnings: Vec<String>,
}

/// Counts the merged report sums (top-level report fields).
const SUMMED: [&str; 16] = [
    "subscribers_requested",
    "subscribers_connected",
    "events_scheduled",
    "events_published",
    "events_accepted",
    "events_behind_schedule",
    "deliveries_expected",
    "deliveries_received",
    "loss",
    "duplicates",
    "out_of_order",
    "foreign_events",
    "bytes_received",
    "slow_clients",
    "slow_clients_dropped",
    "source_pair_retries",
];

/// Merge the reports at `paths` (each written with `--json` and
/// `--histogram-out`).
pub fn merge(paths: &[PathBuf]) -> Result<Merged, String> {
    if paths.is_empty() || paths.len() > RUNS_MAX {
        return Err(format!("merge takes 1..={RUNS_MAX} reports"));
    }
    let mut sums: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut runs = Vec::new();
    let mut warnings = Vec::new();
    let mut deliveries_per_s = 0.0;
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let r: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a loadgen report: {e}", path.display()))?;
        let hist_file = r["histogram_file"].as_str().ok_or_else(|| {
            format!(
                "{}: no histogram_file: run it with --histogram-out FILE",
                path.display()
            )
        })?;
        // A relative histogram path is relative to the report's directory.
        let hist_path = match path.parent() {
            Some(dir) if Path::new(hist_file).is_relative() => {
                let beside = dir.join(Path::new(hist_file).file_name().unwrap_or_default());
                if beside.exists() {
                    beside
                } else {
                    PathBuf::from(hist_file)
                }
            }
            _ => PathBuf::from(hist_file),
        };
        for (tag, h) in read_log(&hist_path)? {
            sums.entry(tag)
                .or_insert_with(|| new_histogram(3))
                .add(&h)
                .map_err(|e| format!("{}: {e:?}", hist_path.display()))?;
        }
        for k in SUMMED {
            *counts.entry(k.to_string()).or_insert(0) += r[k].as_u64().unwrap_or(0);
        }
        deliveries_per_s += r["deliveries_per_s"].as_f64().unwrap_or(0.0);
        for w in r["warnings"].as_array().into_iter().flatten() {
            if let Some(w) = w.as_str() {
                warnings.push(format!("{}: {w}", path.display()));
            }
        }
        if r["foreign_events"].as_u64().unwrap_or(0) > 0 {
            warnings.push(format!(
                "{}: received other runs' events (give each machine its own --topic-prefix)",
                path.display()
            ));
        }
        runs.push(MergedRun {
            report: path.display().to_string(),
            url: r["url"].as_str().unwrap_or("").to_string(),
            started_unix_s: r["started_unix_s"].as_f64().unwrap_or(0.0),
            offset_s: 0.0,
            wall_s: r["loadgen"]["wall_s"].as_f64().unwrap_or(0.0),
            subscribers_connected: r["subscribers_connected"].as_u64().unwrap_or(0),
            fast_latency_p99_us: r["fast_latency_us"]["p99"].as_u64().unwrap_or(0),
        });
    }
    let first = runs
        .iter()
        .map(|r| r.started_unix_s)
        .fold(f64::INFINITY, f64::min);
    for r in &mut runs {
        r.offset_s = r.started_unix_s - first;
    }
    let start_spread_s = runs.iter().map(|r| r.offset_s).fold(0.0, f64::max);
    let shortest = runs.iter().map(|r| r.wall_s).fold(f64::INFINITY, f64::min);
    if start_spread_s > shortest / 2.0 {
        warnings.push(format!(
            "the runs started {start_spread_s:.1} s apart, more than half the shortest run ({shortest:.1} s): they overlapped little, so their sum is not one load"
        ));
    }
    let p = |tag: &str| {
        sums.get(tag)
            .map_or_else(|| Percentiles::of(&new_histogram(3)), Percentiles::of)
    };
    let expected = counts.get("deliveries_expected").copied().unwrap_or(0);
    let loss = counts.get("loss").copied().unwrap_or(0);
    Ok(Merged {
        clock_note: "latency is measured by each loadgen against its own clock for its own events; \
                     start offsets come from each machine's wall clock (NTP-synced hosts: ms accuracy), \
                     stated here, not corrected for"
            .into(),
        start_spread_s,
        runs,
        counts,
        loss_ratio: if expected > 0 { loss as f64 / expected as f64 } else { 0.0 },
        deliveries_per_s,
        fast_latency_us: p("fast_latency_us"),
        latency_us: p("all_latency_us"),
        connect_latency_us: p("connect_us"),
        publish_round_trip_us: p("publish_round_trip_us"),
        warnings,
    })
}

/// The merged report as a self-contained page.
pub fn html(m: &Merged) -> String {
    use stentor_loadgen::svg;
    let esc = svg::escape;
    let mut h = String::from(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>stentor-loadgen merged report</title><style>body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}.warn{color:#a40}</style></head><body><h1>stentor-loadgen: merged runs</h1>"#,
    );
    h += "<table><tr><th>report</th><th>url</th><th>start offset s</th><th>wall s</th><th>connected</th><th>fast p99 ms</th></tr>";
    for r in &m.runs {
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.1}</td><td>{}</td><td>{:.3}</td></tr>",
            esc(&r.report),
            esc(&r.url),
            r.offset_s,
            r.wall_s,
            r.subscribers_connected,
            r.fast_latency_p99_us as f64 / 1e3
        );
    }
    h += "</table><table>";
    for (k, v) in &m.counts {
        h += &format!("<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    let l = &m.fast_latency_us;
    h += &format!(
        "<tr><th>loss ratio</th><td>{:.6}</td></tr><tr><th>deliveries/s (sum)</th><td>{:.0}</td></tr><tr><th>fast latency p50 / p90 / p99 / p99.9 / max (merged histograms)</th><td>{:.3} / {:.3} / {:.3} / {:.3} / {:.3} ms</td></tr></table>",
        m.loss_ratio,
        m.deliveries_per_s,
        l.p50 as f64 / 1e3,
        l.p90 as f64 / 1e3,
        l.p99 as f64 / 1e3,
        l.p999 as f64 / 1e3,
        l.max as f64 / 1e3
    );
    h += &format!("<p>{}</p>", esc(&m.clock_note));
    for w in &m.warnings {
        h += &format!(r#"<p class="warn">warning: {}</p>"#, esc(w));
    }
    h += "</body></html>\n";
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_round_trip_and_add_up() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("loadgen-hist-{}.hlog", std::process::id()));
        let mut a = new_histogram(3);
        let mut b = new_histogram(3);
        for v in 1..=1000u64 {
            a.record(v).expect("in range");
            b.record(v * 1000).expect("in range");
        }
        write_log(
            &path,
            SystemTime::now(),
            Duration::from_secs(3),
            &[("fast_latency_us", &a), ("connect_us", &b)],
        )
        .expect("written");
        let back = read_log(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert_eq!(back["fast_latency_us"].len(), 1000);
        assert_eq!(
            back["fast_latency_us"].value_at_quantile(0.99),
            a.value_at_quantile(0.99)
        );
        assert_eq!(back["connect_us"].max(), b.max());
    }
}
