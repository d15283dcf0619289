//! stentor-bench: criterion benches of the hot path and the regression gate.
//!
//! - `benches/`: criterion benches (wall-clock), read as ratios to the
//!   `calibration` bench of the same run (`stentor-bench-ratios`);
//! - [`workloads`]: fixed amounts of hot-path work for the gate;
//! - [`dataplane`]: the fan-out, send-queue, history and replay operations
//!   both the gate and the criterion benches measure;
//! - [`gate`]: the gate's decisions (baseline format, comparison, report);
//! - [`ratios`]: reading criterion's results and expressing them as ratios;
//! - `src/bin/gate.rs` (`stentor-gate`): runs the workloads under callgrind;
//! - [`ceiling`], `src/bin/ceiling.rs` (`stentor-ceiling`): the machine's
//!   loopback `send()` ceiling;
//! - [`capacity`], `src/bin/capacity.rs` (`stentor-capacity`): the
//!   `just bench` capacity sweep and its report; its charts come from
//!   [`svg`], the chart module it shares with `stentor-loadgen`'s HTML report.
//!
//! `docs/measurements/benchmarks.md` says how to run, read and update all of it.

pub mod capacity;
pub mod ceiling;
pub mod dataplane;
pub mod gate;
pub mod ratios;
pub use stentor_loadgen::svg;
pub mod workloads;
