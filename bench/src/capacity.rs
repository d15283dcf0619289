//! The capacity report (`just bench`): what one sweep measured, which load
//! met the SLO, and every figure as a fraction of the machine's own loopback
//! `send()` ceiling. Pure: the `stentor-capacity` bin runs the processes and
//! fills these types; this module decides and renders (Markdown, HTML with
//! inline SVG, JSON).

use std::fmt::Write;

use serde::Serialize;

use crate::svg::{self, Chart, Series};

/// The service level a load must meet to count.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Slo {
    /// Fast subscribers' p99 delivery latency, ms.
    pub max_p99_ms: f64,
    /// Lost deliveries ÷ expected deliveries.
    pub max_loss: f64,
    /// Scheduled events the publisher got accepted (0.99: it kept up).
    pub min_published: f64,
    /// Publish requests in flight per connection (1: a sequential
    /// publisher that waits for each answer, as application servers do).
    pub pub_inflight: u32,
}

/// One loadgen run against a fresh server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub subscribers: u32,
    /// Events per second offered (all subscribers get each event).
    pub rate: f64,
    pub payload_bytes: u32,
    pub duration_s: f64,
    pub connected: u64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub deliveries_per_s: f64,
    pub loss_ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub events_scheduled: u64,
    pub events_accepted: u64,
    /// Publish request written to its answer, ms.
    pub publish_rtt_p50_ms: f64,
    pub publish_rtt_p99_ms: f64,
    pub publish_rtt_max_ms: f64,
    /// How far the publisher fell behind its schedule, ms.
    pub publish_lag_p99_ms: f64,
    pub publish_lag_max_ms: f64,
    /// Server user + system CPU over the loadgen run.
    pub server_cpu_s: f64,
    pub server_cpu_us_per_delivery: f64,
    /// The server's own counters (`/metrics`) after the run.
    pub server_sends: u64,
    pub server_deliveries: u64,
    pub events_per_send: f64,
    pub rss_before_kib: u64,
    /// Lowest VmRSS seen while every subscriber was connected (settled
    /// after the connection burst).
    pub rss_connected_kib: Option<u64>,
    pub rss_peak_kib: u64,
    /// loadgen's exit code: 0 SLO met, 1 missed, 2 could not run.
    pub loadgen_exit: i32,
    pub slo_met: bool,
    pub slo_failures: Vec<String>,
    /// loadgen's warnings (a saturated load tool says so here).
    pub warnings: Vec<String>,
    pub machine_cpu_busy: Option<f64>,
    /// Set when the run could not be measured (server did not start, ...).
    pub error: Option<String>,
}

impl Run {
    /// Offered deliveries per second: what the SLO is asked to carry.
    pub fn offered_deliveries_per_s(&self) -> f64 {
        self.rate * f64::from(self.subscribers)
    }

    /// RSS growth per connected subscriber, bytes.
    pub fn rss_bytes_per_subscriber(&self) -> Option<f64> {
        let connected = self.rss_connected_kib?;
        (self.connected > 0).then(|| {
            (connected.saturating_sub(self.rss_before_kib) as f64 * 1024.0) / self.connected as f64
        })
    }
}

/// One `stentor-ceiling` run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ceiling {
    /// Subscriber count this stands for (pairs may be capped below it).
    pub subscribers: u32,
    pub pairs: u32,
    pub payload_bytes: u32,
    pub sends_per_s: f64,
    pub events_per_s: f64,
    pub bytes_per_s: f64,
    pub cpu_us_per_send: f64,
    pub cpu_us_per_send_both_sides: f64,
    pub machine_cpu_busy: Option<f64>,
    pub error: Option<String>,
}

/// The best load one (subscribers, payload) carried within the SLO.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub subscribers: u32,
    pub payload_bytes: u32,
    /// Highest rate that met the SLO (None: even the lowest missed).
    pub rate: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Publish round trip p99 at that rate, ms.
    pub publish_rtt_p99_ms: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Lowest rate tried that missed it (the capacity lies below).
    pub first_failing_rate: Option<f64>,
    pub ceiling_events_per_s: Option<f64>,
    pub ceiling_cpu_us_per_send: Option<f64>,
    /// deliveries/s ÷ ceiling events/s.
    pub share_of_ceiling: Option<f64>,
    /// server CPU per delivery ÷ ceiling CPU per send (< 1: cheaper than a send() each).
    pub cpu_vs_ceiling: Option<f64>,
}

/// Everything one sweep produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub started_utc: String,
    pub machine: Vec<(String, String)>,
    pub slo: Slo,
    pub server_args: Vec<String>,
    pub runs: Vec<Run>,
    pub ceilings: Vec<Ceiling>,
    pub capacities: Vec<Capacity>,
    pub notes: Vec<String>,
}

/// Per (subscribers, payload): the highest passing rate, and how it compares
/// with the ceiling measured for the same socket count and payload.
pub fn capacities(runs: &[Run], ceilings: &[Ceiling]) -> Vec<Capacity> {
    let mut keys: Vec<(u32, u32)> = runs
        .iter()
        .map(|r| (r.subscribers, r.payload_bytes))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(subscribers, payload_bytes)| {
            let of_key = || {
                runs.iter().filter(move |r| {
                    r.subscribers == subscribers && r.payload_bytes == payload_bytes
                })
            };
            let best = of_key()
                .filter(|r| r.slo_met)
                .max_by(|a, b| a.rate.total_cmp(&b.rate));
            let first_failing_rate = of_key()
                .filter(|r| !r.slo_met)
                .map(|r| r.rate)
                .min_by(|a, b| a.total_cmp(b));
            let ceiling = ceilings.iter().find(|c| {
                c.subscribers == subscribers
                    && c.payload_bytes == payload_bytes
                    && c.error.is_none()
            });
            let share_of_ceiling = match (best, ceiling) {
                (Some(b), Some(c)) if c.events_per_s > 0.0 => {
                    Some(b.deliveries_per_s / c.events_per_s)
                }
                _ => None,
            };
            let cpu_vs_ceiling = match (best, ceiling) {
                (Some(b), Some(c)) if c.cpu_us_per_send > 0.0 => {
                    Some(b.server_cpu_us_per_delivery / c.cpu_us_per_send)
                }
                _ => None,
            };
            Capacity {
                subscribers,
                payload_bytes,
                rate: best.map(|b| b.rate),
                deliveries_per_s: best.map(|b| b.deliveries_per_s),
                p99_ms: best.map(|b| b.p99_ms),
                publish_rtt_p99_ms: best.map(|b| b.publish_rtt_p99_ms),
                server_cpu_us_per_delivery: best.map(|b| b.server_cpu_us_per_delivery),
                first_failing_rate,
                ceiling_events_per_s: ceiling.map(|c| c.events_per_s),
                ceiling_cpu_us_per_send: ceiling.map(|c| c.cpu_us_per_send),
                share_of_ceiling,
                cpu_vs_ceiling,
            }
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

fn opt_short(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), svg::short_number)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{:.0}%", v * 100.0))
}

/// A table as rows of cells; rendered as Markdown or HTML.
struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.head.join(" | "));
        for _ in &self.head {
            out.push_str("---|");
        }
        out.push('\n');
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }

    fn html(&self) -> String {
        let mut out = String::from("<table><tr>");
        for h in &self.head {
            let _ = write!(out, "<th>{}</th>", html_escape(h));
        }
        out.push_str("</tr>");
        for row in &self.rows {
            out.push_str("<tr>");
            for cell in row {
                let _ = write!(out, "<td>{}</td>", html_escape(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        out
    }
}

fn html_escape(text: &str) -> String {
    svg::escape(text)
}

fn capacity_table(report: &Report) -> Table {
    Table {
        head: vec![
            "subscribers",
            "payload",
            "max rate within SLO (ev/s)",
            "deliveries/s",
            "p99 ms",
            "publish rtt p99 ms",
            "server CPU µs/delivery",
            "first rate missing SLO",
            "ceiling events/s (send() each)",
            "share of ceiling",
            "CPU/delivery ÷ ceiling CPU/send",
        ],
        rows: report
            .capacities
            .iter()
            .map(|c| {
                vec![
                    c.subscribers.to_string(),
                    format!("{} B", c.payload_bytes),
                    opt(c.rate, 0),
                    opt_short(c.deliveries_per_s),
                    opt(c.p99_ms, 1),
                    opt(c.publish_rtt_p99_ms, 1),
                    opt(c.server_cpu_us_per_delivery, 2),
                    opt(c.first_failing_rate, 0),
                    opt_short(c.ceiling_events_per_s),
                    pct(c.share_of_ceiling),
                    opt(c.cpu_vs_ceiling, 2),
                ]
            })
            .collect(),
    }
}

fn runs_table(report: &Report) -> Table {
    Table {
        head: vec![
            "subs",
            "rate",
            "payload",
            "connected",
            "offered deliveries/s",
            "deliveries/s",
            "loss",
            "p50 / p99 / max ms",
            "published",
            "publish rtt p50 / p99 / max ms",
            "publish lag p99 / max ms",
            "server CPU µs/delivery",
            "events/send",
            "RSS peak MiB",
            "SLO",
        ],
        rows: report
            .runs
            .iter()
            .map(|r| {
                let verdict = match (&r.error, r.slo_met) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, true) => "met".into(),
                    (None, false) => format!("missed: {}", r.slo_failures.join("; ")),
                };
                vec![
                    r.subscribers.to_string(),
                    format!("{:.0}", r.rate),
                    format!("{} B", r.payload_bytes),
                    r.connected.to_string(),
                    svg::short_number(r.offered_deliveries_per_s()),
                    svg::short_number(r.deliveries_per_s),
                    format!("{:.2e}", r.loss_ratio),
                    format!("{:.1} / {:.1} / {:.1}", r.p50_ms, r.p99_ms, r.max_ms),
                    format!("{}/{}", r.events_accepted, r.events_scheduled),
                    format!(
                        "{:.1} / {:.1} / {:.1}",
                        r.publish_rtt_p50_ms, r.publish_rtt_p99_ms, r.publish_rtt_max_ms
                    ),
                    format!("{:.0} / {:.0}", r.publish_lag_p99_ms, r.publish_lag_max_ms),
                    format!("{:.2}", r.server_cpu_us_per_delivery),
                    format!("{:.1}", r.events_per_send),
                    format!("{:.1}", r.rss_peak_kib as f64 / 1024.0),
                    verdict,
                ]
            })
            .collect(),
    }
}

/// RSS per subscriber: from each subscriber count's first run (lowest rate).
fn memory_rows(report: &Report) -> Vec<(u32, &Run)> {
    let mut rows: Vec<(u32, &Run)> = Vec::new();
    for run in &report.runs {
        if run.rss_connected_kib.is_some() && !rows.iter().any(|(s, _)| *s == run.subscribers) {
            rows.push((run.subscribers, run));
        }
    }
    rows.sort_by_key(|(s, _)| *s);
    rows
}

fn memory_table(report: &Report) -> Table {
    Table {
        head: vec![
            "subscribers",
            "RSS before (KiB)",
            "RSS connected (KiB)",
            "growth per subscriber",
            "× 1 KiB budget",
            "marginal per subscriber (vs previous row)",
        ],
        rows: {
            let rows = memory_rows(report);
            let mut previous: Option<(u32, u64)> = None;
            rows.into_iter()
                .map(|(s, r)| {
                    let per = r.rss_bytes_per_subscriber();
                    let marginal = match (previous, r.rss_connected_kib) {
                        (Some((s0, kib0)), Some(kib)) if s > s0 => {
                            Some((kib as f64 - kib0 as f64) * 1024.0 / f64::from(s - s0))
                        }
                        _ => None,
                    };
                    previous = r.rss_connected_kib.map(|kib| (s, kib));
                    vec![
                        s.to_string(),
                        r.rss_before_kib.to_string(),
                        r.rss_connected_kib.map_or("–".into(), |v| v.to_string()),
                        per.map_or("–".into(), |b| format!("{b:.0} B")),
                        opt(per.map(|b| b / 1024.0), 2),
                        marginal.map_or("–".into(), |b| format!("{b:.0} B")),
                    ]
                })
                .collect()
        },
    }
}

fn ceiling_table(report: &Report) -> Table {
    Table {
        head: vec![
            "subscribers",
            "pairs",
            "payload",
            "sends/s",
            "MB/s",
            "CPU µs/send (sender)",
            "CPU µs/send (both sides)",
            "machine busy",
        ],
        rows: report
            .ceilings
            .iter()
            .map(|c| match &c.error {
                Some(e) => vec![
                    c.subscribers.to_string(),
                    c.pairs.to_string(),
                    format!("{} B", c.payload_bytes),
                    format!("error: {e}"),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                None => vec![
                    c.subscribers.to_string(),
                    c.pairs.to_string(),
                    format!("{} B", c.payload_bytes),
                    svg::short_number(c.sends_per_s),
                    format!("{:.1}", c.bytes_per_s / 1e6),
                    format!("{:.2}", c.cpu_us_per_send),
                    format!("{:.2}", c.cpu_us_per_send_both_sides),
                    pct(c.machine_cpu_busy),
                ],
            })
            .collect(),
    }
}

fn machine_lines(report: &Report) -> Vec<String> {
    let mut lines: Vec<String> = report
        .machine
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    lines.push(format!(
        "SLO: p99 ≤ {} ms, loss ≤ {}, ≥ {:.0}% of scheduled events published",
        report.slo.max_p99_ms,
        report.slo.max_loss,
        report.slo.min_published * 100.0
    ));
    lines.push(if report.slo.pub_inflight == 1 {
        "publisher: sequential (one request in flight on a keep-alive connection, waits for each answer, as application servers publish): the max rate is the highest a sequential publisher sustains".to_string()
    } else {
        format!(
            "publisher: {} requests in flight per connection (pipelined)",
            report.slo.pub_inflight
        )
    });
    lines.push(format!("server flags: {}", report.server_args.join(" ")));
    lines
}

const READING: &str = "Each row of the first table is the highest event rate (to every subscriber) that met the SLO \
(latency, loss, and the publisher got at least the stated share of the schedule accepted) in this sweep, so the node's real capacity lies between it and the first rate that missed (`–`: none missed, rerun with higher \
`--rates`). \
`share of ceiling` divides stentor's deliveries/s by what a bare loop of one `send()` per event reaches over the same \
number of loopback sockets on this machine (`stentor-ceiling`); it can exceed 100% because stentor coalesces \
several events into one send under load. `CPU/delivery ÷ ceiling CPU/send` below 1 means a delivery costs the server \
less than one plain `send()` per event. The load generator runs on the same machine and competes for the same cores: \
read warnings before trusting a latency. See docs/measurements/capacity-planning.md.";

const MEMORY_READING: &str = "RSS is the server's VmRSS before the first subscriber, and the lowest VmRSS seen \
(sampled every 100 ms) while all were connected, during the run at the lowest rate: the allocator holds the \
connection burst's transient memory for a second or two, so a single sample right after the burst reads high. The growth includes memory the node touches once, whatever \
the count (rings, provided buffers, send-message pool), spread over the subscribers: small counts look expensive. \
The marginal column, the growth between two subscriber counts, is what one more subscriber costs.";

/// The Markdown report.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# stentor capacity report ({} sweep, {})\n\n",
        report.mode, report.started_utc
    );
    for line in machine_lines(report) {
        let _ = writeln!(out, "- {line}");
    }
    let _ = write!(
        out,
        "\n## Capacity within the SLO\n\n{}\n{READING}\n\n",
        capacity_table(report).markdown()
    );
    let _ = write!(
        out,
        "## Memory per subscriber\n\n{}\n{MEMORY_READING}\n\n",
        memory_table(report).markdown()
    );
    let _ = write!(
        out,
        "## The machine's ceiling (`stentor-ceiling`, one send() per event)\n\n{}\n",
        ceiling_table(report).markdown()
    );
    let _ = write!(out, "## Every run\n\n{}\n", runs_table(report).markdown());
    let warnings: Vec<String> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.warnings.iter().map(move |w| {
                format!(
                    "{} subs × {:.0} ev/s × {} B: {w}",
                    r.subscribers, r.rate, r.payload_bytes
                )
            })
        })
        .collect();
    if !warnings.is_empty() || !report.notes.is_empty() {
        out.push_str("## Notes and warnings\n\n");
        for line in report.notes.iter().chain(&warnings) {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

fn charts(report: &Report) -> Vec<String> {
    // Latency vs offered load, one line per (subscribers, payload).
    let mut latency = Vec::new();
    for c in &report.capacities {
        let points = report
            .runs
            .iter()
            .filter(|r| {
                r.subscribers == c.subscribers
                    && r.payload_bytes == c.payload_bytes
                    && r.error.is_none()
            })
            .map(|r| (r.offered_deliveries_per_s(), r.p99_ms))
            .collect();
        latency.push(Series {
            name: format!(
                "p99 {} subs {} B",
                svg::short_number(f64::from(c.subscribers)),
                c.payload_bytes
            ),
            points,
            dashed: false,
        });
    }
    let mut payloads: Vec<u32> = report.capacities.iter().map(|c| c.payload_bytes).collect();
    payloads.sort_unstable();
    payloads.dedup();
    let mut throughput = Vec::new();
    for &p in &payloads {
        throughput.push(Series {
            name: format!("stentor {p} B"),
            points: report
                .capacities
                .iter()
                .filter(|c| c.payload_bytes == p)
                .filter_map(|c| Some((f64::from(c.subscribers), c.deliveries_per_s?)))
                .collect(),
            dashed: false,
        });
        throughput.push(Series {
            name: format!("ceiling {p} B"),
            points: report
                .ceilings
                .iter()
                .filter(|c| c.payload_bytes == p && c.error.is_none())
                .map(|c| (f64::from(c.subscribers), c.events_per_s))
                .collect(),
            dashed: true,
        });
    }
    let memory = vec![
        Series {
            name: "RSS growth".into(),
            points: memory_rows(report)
                .iter()
                .filter_map(|(s, r)| {
                    let kib = r.rss_connected_kib? as f64 - r.rss_before_kib as f64;
                    Some((f64::from(*s), kib / 1024.0))
                })
                .collect(),
            dashed: false,
        },
        Series {
            name: "1 KiB/sub budget".into(),
            points: memory_rows(report)
                .iter()
                .map(|(s, _)| (f64::from(*s), f64::from(*s) / 1024.0))
                .collect(),
            dashed: true,
        },
    ];
    vec![
        svg::line_chart(
            &Chart {
                title: "p99 latency vs offered load",
                x_label: "offered deliveries/s (rate × subscribers)",
                y_label: "p99 latency, ms",
                log_x: true,
                log_y: true,
            },
            &latency,
        ),
        svg::line_chart(
            &Chart {
                title: "deliveries/s within the SLO vs subscribers",
                x_label: "subscribers",
                y_label: "deliveries/s",
                log_x: true,
                log_y: true,
            },
            &throughput,
        ),
        svg::line_chart(
            &Chart {
                title: "server memory vs subscribers",
                x_label: "subscribers",
                y_label: "RSS growth, MiB",
                log_x: false,
                log_y: false,
            },
            &memory,
        ),
    ]
}

/// The HTML report: the same tables plus three inline SVG charts.
pub fn html(report: &Report) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>stentor capacity report</title>\
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}\
.charts{display:flex;flex-wrap:wrap;gap:1em}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>stentor capacity report</h1><p>{} sweep, {}</p><ul>",
        html_escape(&report.mode),
        html_escape(&report.started_utc)
    );
    for line in machine_lines(report) {
        let _ = write!(out, "<li>{}</li>", html_escape(&line));
    }
    out.push_str("</ul><div class=\"charts\">");
    for chart in charts(report) {
        out.push_str(&chart);
    }
    let _ = write!(
        out,
        "</div><h2>Capacity within the SLO</h2>{}<p>{}</p>",
        capacity_table(report).html(),
        html_escape(READING)
    );
    let _ = write!(
        out,
        "<h2>Memory per subscriber</h2>{}<p>{}</p>",
        memory_table(report).html(),
        html_escape(MEMORY_READING)
    );
    let _ = write!(
        out,
        "<h2>The machine's ceiling (one send() per event)</h2>{}",
        ceiling_table(report).html()
    );
    let _ = write!(out, "<h2>Every run</h2>{}", runs_table(report).html());
    if !report.notes.is_empty() {
        out.push_str("<h2>Notes</h2><ul>");
        for note in &report.notes {
            let _ = write!(out, "<li>{}</li>", html_escape(note));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(subscribers: u32, rate: f64, met: bool, deliveries_per_s: f64) -> Run {
        Run {
            subscribers,
            rate,
            payload_bytes: 128,
            connected: u64::from(subscribers),
            deliveries_per_s,
            server_cpu_us_per_delivery: 2.0,
            slo_met: met,
            rss_before_kib: 1000,
            rss_connected_kib: Some(1000 + u64::from(subscribers) / 4),
            ..Run::default()
        }
    }

    fn ceiling(subscribers: u32) -> Ceiling {
        Ceiling {
            subscribers,
            pairs: subscribers,
            payload_bytes: 128,
            events_per_s: 200_000.0,
            cpu_us_per_send: 4.0,
            ..Ceiling::default()
        }
    }

    #[test]
    fn capacity_is_the_highest_passing_rate_against_its_own_ceiling() {
        let runs = [
            run(1000, 10.0, true, 10_000.0),
            run(1000, 100.0, true, 100_000.0),
            run(1000, 400.0, false, 150_000.0),
            run(10_000, 10.0, false, 90_000.0),
        ];
        let caps = capacities(&runs, &[ceiling(1000), ceiling(10_000)]);
        assert_eq!(caps.len(), 2);
        assert_eq!(caps[0].rate, Some(100.0));
        assert_eq!(caps[0].first_failing_rate, Some(400.0));
        assert_eq!(caps[0].share_of_ceiling, Some(0.5));
        assert_eq!(caps[0].cpu_vs_ceiling, Some(0.5));
        assert_eq!(caps[1].rate, None, "nothing passed at 10k");
        assert_eq!(caps[1].share_of_ceiling, None);
    }

    #[test]
    fn memory_per_subscriber_comes_from_connected_rss() {
        let r = run(4096, 10.0, true, 1.0);
        assert_eq!(r.rss_bytes_per_subscriber(), Some(256.0));
        let mut unmeasured = r.clone();
        unmeasured.rss_connected_kib = None;
        assert_eq!(unmeasured.rss_bytes_per_subscriber(), None);
    }

    #[test]
    fn reports_render_every_section() {
        let runs = vec![
            run(1000, 10.0, true, 10_000.0),
            run(10_000, 10.0, true, 100_000.0),
        ];
        let ceilings = vec![ceiling(1000), ceiling(10_000)];
        let report = Report {
            mode: "quick".into(),
            started_utc: "2026-01-01T00:00:00Z".into(),
            machine: vec![("cores".into(), "2".into())],
            slo: Slo {
                max_p99_ms: 100.0,
                max_loss: 0.0,
                min_published: 0.99,
                pub_inflight: 1,
            },
            server_args: vec!["--listen".into(), "127.0.0.1:0".into()],
            capacities: capacities(&runs, &ceilings),
            runs,
            ceilings,
            notes: vec!["a note".into()],
        };
        let md = markdown(&report);
        for section in [
            "Capacity within the SLO",
            "Memory per subscriber",
            "ceiling",
            "Every run",
            "a note",
        ] {
            assert!(md.contains(section), "{section}");
        }
        assert!(md.contains("| 1000 | 128 B | 10 |"), "{md}");
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(
            !page.contains("http://")
                || page.matches("http://").count()
                    == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["runs"].as_array().map(Vec::len), Some(2));
    }
}
