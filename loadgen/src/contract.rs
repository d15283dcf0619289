//! The report fields other tools read, as types: `stentor-capacity` (the
//! bench) parses a run's `--json` into [`RunReport`] instead of looking
//! fields up by string keys, so a renamed or retyped field breaks the build
//! or the loadgen's own contract test (a real report must parse), not a
//! sweep at run time. Every field is required: a report that lacks one is
//! refused with its name.

use serde::Deserialize;

/// Latency percentiles as the report writes them, µs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Slo {
    pub met: bool,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Loadgen {
    pub machine_cpu_busy: Option<f64>,
    pub cpu_cores_busy: f64,
    pub wall_s: f64,
}

/// One `stentor-loadgen run --json` report (the fields tools rely on).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunReport {
    pub subscribers_requested: u64,
    pub subscribers_connected: u64,
    pub events_scheduled: u64,
    pub events_published: u64,
    pub events_accepted: u64,
    pub events_behind_schedule: u64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub deliveries_per_s: f64,
    pub loss: u64,
    pub loss_ratio: f64,
    pub duplicates: u64,
    pub fast_latency_us: Percentiles,
    pub latency_us: Percentiles,
    pub publish_inflight: u64,
    pub publish_round_trip_us: Percentiles,
    pub publish_lag_ms_p99: f64,
    pub publish_lag_ms_max: f64,
    pub loadgen: Loadgen,
    pub warnings: Vec<String>,
    pub slo: Slo,
}

impl RunReport {
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a stentor-loadgen report: {e}"))
    }
}
