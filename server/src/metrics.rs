//! Counters and histograms, rendered as Prometheus text.
//!
//! Minimal for now: the node-wide counters the data plane keeps. Workers
//! count hot-path events in plain per-worker fields and add them here once
//! per tick, so a send never touches a shared cache line.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        /// Node-wide counters (monotonic unless named `_open`).
        #[derive(Debug, Default)]
        pub struct Counters { $(pub $name: AtomicU64,)* }

        impl Counters {
            pub const fn new() -> Counters { Counters { $($name: AtomicU64::new(0),)* } }

            /// Prometheus text exposition of every counter.
            pub fn render(&self, out: &mut String) {
                $(
                    let v = self.$name.load(Ordering::Relaxed);
                    let kind = if stringify!($name).ends_with("_open") { "gauge" } else { "counter" };
                    let _ = writeln!(out, "# HELP stentor_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE stentor_{} {}", stringify!($name), kind);
                    let _ = writeln!(out, "stentor_{} {}", stringify!($name), v);
                )*
            }
        }
    };
}

counters! {
    connections_accepted_total: "Connections accepted.",
    connections_open: "Connections open now.",
    connections_refused_total: "Connections answered 503 because the node was full.",
    requests_total: "HTTP requests parsed.",
    requests_timed_out_total: "Requests answered 408 (head or body not received in time).",
    streams_opened_total: "SSE streams opened.",
    streams_resumed_total: "SSE streams opened with a Last-Event-ID (header or lastEventId query).",
    replayed_events_total: "Events replayed from history to resuming streams.",
    missed_notices_total: "stentor.missed notices sent (the client may have missed events).",
    events_published_total: "Events accepted by POST /publish.",
    deliveries_total: "Frames queued to subscribers (one per event per subscriber).",
    sends_total: "Send operations completed (Send or SendMsg).",
    send_bytes_total: "Bytes the kernel accepted from sends.",
    heartbeats_total: "Heartbeat comments queued.",
    dropped_slow_bytes_total: "Connections dropped because their queue exceeded --queue-bytes-max.",
    dropped_slow_age_total: "Connections dropped because their oldest frame exceeded --queue-age-ms-max.",
    stale_completions_total: "Completions for a reused slot, recognised and dropped.",
    worker_errors_total: "Unexpected errors a worker logged and survived.",
}

/// The node's counters.
pub static COUNTERS: Counters = Counters::new();

pub fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let c = Counters::new();
        add(&c.sends_total, 3);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("# TYPE stentor_sends_total counter\nstentor_sends_total 3\n"));
        assert!(out.contains("# TYPE stentor_connections_open gauge"));
    }
}
