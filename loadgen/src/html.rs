//! A self-contained HTML report: key figures, the latency distribution and a
//! per-second timeline, drawn as inline SVG (no scripts, no CDN).

use std::fmt::Write;

use crate::report::Report;

const W: f64 = 720.0;
const H: f64 = 240.0;
/// Left margin (y tick labels), right margin (last x label), bottom margin.
const PAD: f64 = 60.0;
const PAD_RIGHT: f64 = 28.0;

/// A tick label short enough for the margin: 1.2M, 35k, 487, 3.5, 0.25.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A polyline chart of (x, y) points with axis labels; `y_max` 0 = auto.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    pts: &[(f64, f64)],
    log_x: bool,
) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{} ({})</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#,
        esc(title),
        esc(y_label)
    );
    let _ = write!(
        svg,
        r##"<rect x="{PAD}" y="8" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        W - PAD - PAD_RIGHT,
        H - PAD - 8.0
    );
    if pts.is_empty() {
        svg += r#"<text x="360" y="120" text-anchor="middle">no data</text></svg></figure>"#;
        return svg;
    }
    let fx = |x: f64| {
        if log_x {
            -(100.0 - x.min(99.9999)).log10()
        } else {
            x
        }
    };
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(fx(p.0)), b.max(fx(p.0)))
    });
    let y1 = pts.iter().fold(0.0f64, |m, p| m.max(p.1)).max(1e-9) * 1.05;
    let sx = |x: f64| PAD + (fx(x) - x0) / (x1 - x0).max(1e-9) * (W - PAD - PAD_RIGHT);
    let sy = |y: f64| 8.0 + (H - PAD - 8.0) * (1.0 - y / y1);
    let path: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for p in pts {
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#1f6feb"/>"##,
            sx(p.0),
            sy(p.1)
        );
    }
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text><line x1="{PAD}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            PAD - 4.0,
            sy(y) + 4.0,
            short(y),
            W - PAD_RIGHT,
            sy(y),
            sy(y)
        );
    }
    let ticks: Vec<f64> = if log_x {
        vec![0.0, 50.0, 90.0, 99.0, 99.9, 99.99]
    } else {
        let last = pts.last().map_or(0.0, |p| p.0);
        (0..=5).map(|i| (last * i as f64 / 5.0).round()).collect()
    };
    for t in ticks {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{t}</text>"#,
            sx(t),
            H - PAD + 16.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text></svg></figure>"#,
        W / 2.0,
        H - 8.0,
        esc(x_label),
    );
    svg
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
    let dist: Vec<(f64, f64)> = r
        .latency_distribution
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| (p.percentile, p.latency_us as f64 / 1e3))
        .collect();
    h += &line_chart(
        "Latency distribution (fast subscribers)",
        "percentile",
        "ms",
        &dist,
        true,
    );
    let dps: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|t| (t.second as f64, t.deliveries as f64))
        .collect();
    h += &line_chart(
        "Deliveries per second",
        "second since publishing began",
        "deliveries/s",
        &dps,
        false,
    );
    let p99: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|t| (t.second as f64, t.p99_us as f64 / 1e3))
        .collect();
    h += &line_chart(
        "p99 latency per second",
        "second since publishing began",
        "ms",
        &p99,
        false,
    );
    h += "</body></html>\n";
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_draws() {
        assert_eq!(esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
        let svg = line_chart("t", "x", "y", &[(0.0, 1.0), (1.0, 2.0)], false);
        assert!(svg.contains("<polyline") && svg.ends_with("</figure>"));
        assert!(line_chart("t", "x", "y", &[], true).contains("no data"));
    }
}
