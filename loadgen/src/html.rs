//! A self-contained HTML report: key figures, the latency distribution and
//! the run second by second, drawn as inline SVG by the chart module shared
//! with the bench (no scripts, no CDN).

use std::fmt::Write;

use stentor_loadgen::svg::{self, Chart, Series};

use crate::report::Report;

fn esc(s: &str) -> String {
    svg::escape(s)
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        points,
        dashed: false,
    }
}

fn chart(title: &str, y_label: &str, log_y: bool, lines: &[Series]) -> String {
    let c = Chart {
        title,
        x_label: "second since the run began",
        y_label,
        log_x: false,
        log_y,
    };
    format!("<figure>{}</figure>", svg::line_chart(&c, lines))
}

/// The per-second charts: fast and slow subscribers' latency apart, on a
/// log axis so a 10 ms fast p99 and an 8 s slow backlog both show.
fn series_charts(r: &Report) -> String {
    let pts = |f: &dyn Fn(&crate::series::SeriesPoint) -> f64| -> Vec<(f64, f64)> {
        r.series.iter().map(|p| (f64::from(p.t_s), f(p))).collect()
    };
    let ms = |us: u64| us as f64 / 1e3;
    let mut h = String::new();
    h += &chart(
        "Latency per second (log scale; seconds without deliveries are gaps)",
        "ms",
        true,
        &[
            series("fast p50", pts(&|p| ms(p.fast_latency_us.p50))),
            series("fast p99", pts(&|p| ms(p.fast_latency_us.p99))),
            series("fast max", pts(&|p| ms(p.fast_latency_us.max))),
            series("slow p99", pts(&|p| ms(p.slow_latency_us.p99))),
            series("slow max", pts(&|p| ms(p.slow_latency_us.max))),
        ],
    );
    h += &chart(
        "Deliveries and publishes per second",
        "per second",
        false,
        &[
            series("fast deliveries", pts(&|p| p.deliveries_fast as f64)),
            series("slow deliveries", pts(&|p| p.deliveries_slow as f64)),
        ],
    );
    h += &chart(
        "Subscribers",
        "subscribers, per second",
        false,
        &[
            series("connected", pts(&|p| p.connected as f64)),
            series("connects/s", pts(&|p| p.connects as f64)),
            series("resumes/s", pts(&|p| p.resumes as f64)),
        ],
    );
    h += &chart(
        "Errors, disconnects and slow drops per second",
        "per second",
        false,
        &[
            series(
                "connect errors",
                pts(&|p| p.errors.values().sum::<u64>() as f64),
            ),
            series("disconnects", pts(&|p| p.disconnects as f64)),
            series("slow drops", pts(&|p| p.slow_drops as f64)),
            series("events sent", pts(&|p| p.events_sent as f64)),
        ],
    );
    h
}

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    h += r#"<!doctype html><html><head><meta charset="utf-8"><title>stentor-loadgen report</title><style>body{font-family:system-ui,sans-serif;max-width:780px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}figure{margin:1.5em 0}figcaption{font-weight:600}.warn{color:#a40}</style></head><body>"#;
    let _ = write!(h, "<h1>stentor-loadgen</h1><p>{}</p>", esc(&r.url));
    let slo = if r.slo.met {
        "met".to_string()
    } else {
        format!("NOT met: {}", esc(&r.slo.failures.join("; ")))
    };
    let l = &r.fast_latency_us;
    let rows = [
        (
            "subscribers",
            format!(
                "{} / {} connected in {:.2} s",
                r.subscribers_connected,
                r.subscribers_requested,
                r.connect_time_ms / 1000.0
            ),
        ),
        (
            "publishing",
            format!(
                "{} events at {} ev/s, {} B, {} accepted; lag max {:.2} ms",
                r.events_published,
                r.rate,
                r.payload_bytes,
                r.events_accepted,
                r.publish_lag_ms_max
            ),
        ),
        (
            "deliveries",
            format!(
                "{} / {} ({:.0}/s)",
                r.deliveries_received, r.deliveries_expected, r.deliveries_per_s
            ),
        ),
        (
            "loss / duplicates / out of order",
            format!("{} / {} / {}", r.loss, r.duplicates, r.out_of_order),
        ),
        (
            "latency (fast) p50 / p90 / p99 / p99.9 / max",
            format!(
                "{:.3} / {:.3} / {:.3} / {:.3} / {:.3} ms",
                l.p50 as f64 / 1e3,
                l.p90 as f64 / 1e3,
                l.p99 as f64 / 1e3,
                l.p999 as f64 / 1e3,
                l.max as f64 / 1e3
            ),
        ),
        (
            "slow clients / dropped",
            format!("{} / {}", r.slow_clients, r.slow_clients_dropped),
        ),
        (
            "loadgen",
            format!(
                "{} threads, {:.2} cores busy of {}",
                r.loadgen.threads, r.loadgen.cpu_cores_busy, r.loadgen.cores
            ),
        ),
        ("SLO", slo),
    ];
    h += "<table>";
    for (k, v) in rows {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
    }
    h += "</table>";
    for w in &r.warnings {
        let _ = write!(h, r#"<p class="warn">warning: {}</p>"#, esc(w));
    }
    h += &stage_table(r);
    // Percentile p drawn at 1 / (1 - p): 10 = p90, 100 = p99, 1000 = p99.9,
    // so the tail gets the room it deserves on a log axis.
    let dist: Vec<(f64, f64)> = r
        .latency_distribution
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| {
            (
                1.0 / (1.0 - p.percentile / 100.0),
                p.latency_us as f64 / 1e3,
            )
        })
        .collect();
    let c = Chart {
        title: "Latency distribution (fast subscribers)",
        x_label: "1 / (1 - percentile): 10 = p90, 100 = p99, 1000 = p99.9",
        y_label: "ms",
        log_x: true,
        log_y: true,
    };
    let _ = write!(
        h,
        "<figure>{}</figure>",
        svg::line_chart(&c, &[series("latency", dist)])
    );
    h += &series_charts(r);
    h += "</body></html>\n";
    h
}

/// One row per scenario stage (none for a plain one-stage run): its
/// window, fast latency, ramp, slow subscribers, churn and storm, SLO.
fn stage_table(r: &Report) -> String {
    let plain = r.stages.len() == 1
        && r.stages.iter().all(|s| {
            s.connect_per_s.is_none() && s.slow_fraction == 0.0 && s.churned + s.stormed == 0
        });
    if plain {
        return String::new();
    }
    let mut h = String::from(
        "<table><tr><th>stage</th><th>s</th><th>fast p50 / p99 / max ms</th>\
         <th>ramp opened / streamed</th><th>slowed / slow drops / recovered</th>\
         <th>churned / stormed / resume max ms / not resumed</th><th>SLO</th></tr>",
    );
    for s in &r.stages {
        let l = &s.fast_latency_us;
        let slo = if s.slo_met {
            "met".to_string()
        } else {
            s.slo_failures.join("; ")
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.0}&ndash;{:.0}</td><td>{:.3} / {:.3} / {:.3}</td>\
             <td>{} / {}</td><td>{} / {} / {}</td><td>{} / {} / {} / {}</td><td>{}</td></tr>",
            esc(&s.name),
            s.start_s,
            s.start_s + s.duration_s,
            l.p50 as f64 / 1e3,
            l.p99 as f64 / 1e3,
            l.max as f64 / 1e3,
            s.ramped,
            s.ramp_connected,
            s.slowed,
            s.slow_dropped,
            s.slow_recovered,
            s.churned,
            s.stormed,
            s.resume_ms.max,
            s.not_resumed,
            esc(&slo),
        );
    }
    h += "</table>";
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_draws() {
        assert_eq!(esc("<a&>"), "&lt;a&amp;&gt;");
        let svg = chart("t", "y", true, &[series("a", vec![(0.0, 1.0), (1.0, 2.0)])]);
        assert!(svg.contains("<polyline") && svg.ends_with("</figure>"));
    }
}
