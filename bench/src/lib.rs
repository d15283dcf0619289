//! stentor-bench: criterion benches of the hot path and the regression gate.
//!
//! - `benches/`: criterion benches (wall-clock), read as ratios to the
//!   `calibration` bench of the same run (`stentor-bench-ratios`);
//! - [`workloads`]: fixed amounts of hot-path work for the gate;
//! - [`gate`]: the gate's decisions (baseline format, comparison, report);
//! - [`ratios`]: reading criterion's results and expressing them as ratios;
//! - `src/bin/gate.rs` (`stentor-gate`): runs the workloads under callgrind.
//!
//! `docs/benchmarks.md` says how to run, read and update all of it.

pub mod capacity;
pub mod ceiling;
pub mod gate;
pub mod ratios;
pub mod svg;
pub mod workloads;
