//! stentor-bench-ratios: criterion's latest results as ratios to the
//! calibration bench of the same session (see `stentor_bench::ratios`).
//!
//! ```text
//! stentor-bench-ratios [--criterion-dir DIR] [--reference GROUP/BENCH]
//! ```
//!
//! Run by `bench/scripts/criterion-ratios`, which runs the calibration
//! benches before and after the others so the report can show the drift.

use std::path::PathBuf;
use std::process::ExitCode;

use stentor_bench::ratios::{self, BenchResult};

const USAGE: &str = "usage: stentor-bench-ratios [--criterion-dir DIR] [--reference GROUP/BENCH]
  DIR defaults to target/criterion; the reference to calibration/int_chain_1k.";

fn main() -> ExitCode {
    let mut criterion_dir = PathBuf::from("target/criterion");
    let mut reference_id = ratios::REFERENCE_DEFAULT.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--criterion-dir", Some(v)) => criterion_dir = v.into(),
            ("--reference", Some(v)) => reference_id = v,
            _ => {
                eprintln!("stentor-bench-ratios: bad arguments\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match report(&criterion_dir, &reference_id) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("stentor-bench-ratios: {message}");
            ExitCode::FAILURE
        }
    }
}

fn report(criterion_dir: &std::path::Path, reference_id: &str) -> Result<String, String> {
    let median_of = |baseline: &str| -> Result<Option<f64>, String> {
        let results = ratios::read_results(criterion_dir, baseline).map_err(|e| e.to_string())?;
        Ok(find(&results, reference_id).map(|r| r.median_ns))
    };
    let reference = ratios::reference(median_of("before")?, median_of("after")?)
        .or_else(|| {
            median_of("new")
                .ok()
                .flatten()
                .and_then(|m| ratios::reference(Some(m), None))
        })
        .ok_or_else(|| {
            format!(
                "no result for `{reference_id}` under {}: run `cargo bench -p stentor-bench --bench calibration` first",
                criterion_dir.display()
            )
        })?;
    let latest = ratios::read_results(criterion_dir, "new").map_err(|e| e.to_string())?;
    Ok(ratios::render(&latest, reference_id, reference))
}

fn find<'a>(results: &'a [BenchResult], id: &str) -> Option<&'a BenchResult> {
    results.iter().find(|r| r.id == id)
}
