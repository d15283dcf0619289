//! Criterion's wall-clock results as ratios to a calibration bench of the
//! same run.
//!
//! On a shared 2-core machine a bench's absolute time moves with whatever
//! else runs; a fixed piece of plain CPU work (the `calibration` benches)
//! measured in the same session moves with it. "encode 128 B costs 0.9x an
//! integer chain of 1000 steps" is comparable across runs and machines in a
//! way that "87 ns" is not. This is for reading, not for the CI decision
//! (that is the callgrind gate).
//!
//! Criterion keeps each bench's results in
//! `<criterion_dir>/<bench directory>/<baseline>/{benchmark,estimates}.json`,
//! where `<baseline>` is `new` for the latest run, or a name given with
//! `--save-baseline`. The calibration benches are run before *and* after the
//! others (`before`, `after`), so their drift over the session shows how
//! steady the machine was.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The criterion group holding the calibration benches.
pub const CALIBRATION_GROUP: &str = "calibration";

/// The bench others are divided by unless told otherwise: plain dependent
/// integer work, which tracks CPU speed and contention and not memory.
pub const REFERENCE_DEFAULT: &str = "calibration/int_chain_1k";

/// Bound on the directory walk: criterion nests `group/function/value/baseline`.
const WALK_DEPTH_MAX: usize = 6;
/// Bound on the benches read, far above what we have.
const BENCHES_MAX: usize = 10_000;

/// One bench result as criterion recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// `group/function[/value]`, as criterion prints it.
    pub id: String,
    /// Median time per iteration in nanoseconds.
    pub median_ns: f64,
    /// Bytes or elements per iteration, when the bench declared a throughput.
    pub throughput: Option<Throughput>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throughput {
    Bytes(u64),
    Elements(u64),
}

#[derive(Debug)]
pub enum RatiosError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Json {
        path: PathBuf,
        why: String,
    },
    TooManyBenches,
}

impl fmt::Display for RatiosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RatiosError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            RatiosError::Json { path, why } => write!(f, "{}: {why}", path.display()),
            RatiosError::TooManyBenches => write!(f, "more than {BENCHES_MAX} benches"),
        }
    }
}

impl std::error::Error for RatiosError {}

/// Every bench result saved under `baseline` (`new`, `before`, ...) in
/// `criterion_dir`, sorted by id.
pub fn read_results(criterion_dir: &Path, baseline: &str) -> Result<Vec<BenchResult>, RatiosError> {
    let mut results = Vec::new();
    walk(criterion_dir, baseline, 0, &mut results)?;
    results.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(results)
}

fn walk(
    dir: &Path,
    baseline: &str,
    depth: usize,
    results: &mut Vec<BenchResult>,
) -> Result<(), RatiosError> {
    if depth > WALK_DEPTH_MAX {
        return Ok(());
    }
    let io = |error| RatiosError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let saved = dir.join(baseline);
    if saved.join("estimates.json").is_file() && saved.join("benchmark.json").is_file() {
        if results.len() >= BENCHES_MAX {
            return Err(RatiosError::TooManyBenches);
        }
        results.push(read_one(&saved)?);
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for entry in entries {
        // criterion's HTML report lives beside the results; it has none.
        if entry.file_name().is_some_and(|n| n == "report") {
            continue;
        }
        walk(&entry, baseline, depth + 1, results)?;
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, RatiosError> {
    let text = std::fs::read_to_string(path).map_err(|error| RatiosError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    serde_json::from_str(&text).map_err(|e| RatiosError::Json {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn read_one(saved: &Path) -> Result<BenchResult, RatiosError> {
    let benchmark_path = saved.join("benchmark.json");
    let estimates_path = saved.join("estimates.json");
    let benchmark = read_json(&benchmark_path)?;
    let estimates = read_json(&estimates_path)?;
    let missing = |path: &Path, what: &str| RatiosError::Json {
        path: path.to_path_buf(),
        why: format!("no {what}"),
    };
    let id = benchmark["full_id"]
        .as_str()
        .ok_or_else(|| missing(&benchmark_path, "full_id"))?
        .to_string();
    let median_ns = estimates["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| missing(&estimates_path, "median.point_estimate"))?;
    let throughput = match &benchmark["throughput"] {
        Value::Object(map) => {
            if let Some(n) = map.get("Bytes").and_then(Value::as_u64) {
                Some(Throughput::Bytes(n))
            } else {
                map.get("Elements")
                    .and_then(Value::as_u64)
                    .map(Throughput::Elements)
            }
        }
        _ => None,
    };
    Ok(BenchResult {
        id,
        median_ns,
        throughput,
    })
}

/// The reference time: the mean of the calibration medians taken before and
/// after the session when both exist, else whichever exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub median_ns: f64,
    /// `(after - before) / before` in percent, when both were taken.
    pub drift_pct: Option<f64>,
}

pub fn reference(before: Option<f64>, after: Option<f64>) -> Option<Reference> {
    match (before, after) {
        (Some(b), Some(a)) if b > 0.0 && a > 0.0 => Some(Reference {
            median_ns: (a + b) / 2.0,
            drift_pct: Some((a - b) / b * 100.0),
        }),
        (Some(t), _) | (_, Some(t)) if t > 0.0 => Some(Reference {
            median_ns: t,
            drift_pct: None,
        }),
        _ => None,
    }
}

/// The report: every non-calibration bench with its median, throughput and
/// ratio to the reference.
pub fn render(results: &[BenchResult], reference_id: &str, reference: Reference) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "reference: {reference_id} = {} (median{})\n\n",
        format_ns(reference.median_ns),
        match reference.drift_pct {
            Some(d) => format!(" of before/after; drifted {d:+.1}% over the session"),
            None => String::new(),
        }
    ));
    let rows: Vec<[String; 4]> = results
        .iter()
        .filter(|r| !r.id.starts_with(&format!("{CALIBRATION_GROUP}/")))
        .map(|r| {
            [
                r.id.clone(),
                format_ns(r.median_ns),
                r.throughput
                    .map_or("-".to_string(), |t| format_throughput(t, r.median_ns)),
                format!("{:.4}", r.median_ns / reference.median_ns),
            ]
        })
        .collect();
    let header = ["bench", "median", "throughput", "x reference"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = format!("{:<w$}", cells[0], w = widths[0]);
        for (cell, w) in cells[1..].iter().zip(&widths[1..]) {
            s.push_str(&format!("  {cell:>w$}"));
        }
        s.push('\n');
        s
    };
    out.push_str(&line(&header.map(String::from)));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

fn format_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

fn format_throughput(throughput: Throughput, median_ns: f64) -> String {
    let per_s = |n: u64| n as f64 / (median_ns * 1e-9);
    match throughput {
        Throughput::Bytes(n) => {
            let bytes_per_s = per_s(n);
            if bytes_per_s >= (1u64 << 30) as f64 {
                format!("{:.2} GiB/s", bytes_per_s / (1u64 << 30) as f64)
            } else {
                format!("{:.1} MiB/s", bytes_per_s / (1u64 << 20) as f64)
            }
        }
        Throughput::Elements(n) => format!("{:.2} M/s", per_s(n) / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bench(root: &Path, dir: &str, baseline: &str, full_id: &str, median: f64, bytes: u64) {
        let saved = root.join(dir).join(baseline);
        std::fs::create_dir_all(&saved).expect("temp dir");
        std::fs::write(
            saved.join("benchmark.json"),
            format!(r#"{{"full_id":"{full_id}","throughput":{{"Bytes":{bytes}}}}}"#),
        )
        .expect("write");
        std::fs::write(
            saved.join("estimates.json"),
            format!(r#"{{"median":{{"point_estimate":{median}}}}}"#),
        )
        .expect("write");
    }

    #[test]
    fn results_are_read_per_baseline_and_divided_by_the_reference() {
        let root = std::env::temp_dir().join(format!("stentor-ratios-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write_bench(
            &root,
            "sse_encode/128B",
            "new",
            "sse_encode/128B",
            100.0,
            128,
        );
        write_bench(
            &root,
            "calibration/int_chain_1k",
            "before",
            "calibration/int_chain_1k",
            190.0,
            0,
        );
        write_bench(
            &root,
            "calibration/int_chain_1k",
            "after",
            "calibration/int_chain_1k",
            210.0,
            0,
        );
        write_bench(
            &root,
            "calibration/int_chain_1k",
            "new",
            "calibration/int_chain_1k",
            210.0,
            0,
        );

        let new = read_results(&root, "new").expect("read");
        assert_eq!(new.len(), 2);
        assert_eq!(new[1].id, "sse_encode/128B");
        assert_eq!(new[1].throughput, Some(Throughput::Bytes(128)));
        let before = read_results(&root, "before").expect("read");
        assert_eq!(before.len(), 1);

        let r = reference(Some(190.0), Some(210.0)).expect("reference");
        assert_eq!(r.median_ns, 200.0);
        let drift = r.drift_pct.expect("drift");
        assert!((drift - 10.526).abs() < 0.01, "{drift}");
        let report = render(&new, REFERENCE_DEFAULT, r);
        assert!(report.contains("0.5000"), "{report}");
        assert!(
            !report.contains("\ncalibration/"),
            "calibration is not a row: {report}"
        );
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn reference_falls_back_to_whichever_run_exists() {
        assert_eq!(
            reference(None, Some(5.0)),
            Some(Reference {
                median_ns: 5.0,
                drift_pct: None
            })
        );
        assert_eq!(reference(None, None), None);
        assert_eq!(reference(Some(0.0), None), None);
    }
}
