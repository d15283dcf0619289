//! Small inline SVG line charts, shared by the loadgen's HTML report and
//! the bench's capacity report: no script, no fonts to fetch, no CDN; the
//! pages open offline. One renderer, one escape, one palette.

use std::fmt::Write;

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// (x, y) points; drawn in x order, points with a non-finite coordinate
    /// (or ≤ 0 on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
    /// Dashed: a reference (the machine's ceiling), not a measurement.
    pub dashed: bool,
}

/// A chart's axes and labels.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub log_y: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 180.0;
const MARGIN_TOP: f64 = 36.0;
const MARGIN_BOTTOM: f64 = 52.0;
const TICKS: usize = 5;
/// Colour-blind-safe palette (Okabe–Ito, then Tol's muted), cycled: the
/// full sweep draws 8 latency lines (4 subscriber counts × 2 payloads).
const COLOURS: [&str; 10] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255",
    "#44AA99", "#999933",
];

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            return Axis {
                lo: 1.0,
                hi: 10.0,
                log,
            };
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil());
            if hi <= lo {
                hi = lo * 10.0;
            }
        } else {
            lo = lo.min(0.0);
            hi = if hi <= lo { lo + 1.0 } else { hi * 1.08 };
            // Round the top up to a whole number of "nice" steps.
            let step = nice_step((hi - lo) / TICKS as f64);
            hi = lo + (((hi - lo) / step).ceil() * step);
        }
        Axis { lo, hi, log }
    }

    fn accepts(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    /// Position of `v` in [0, 1] along the axis.
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            // Few decades: 1-2-5 ticks inside each, so the axis is readable.
            let steps: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            (a..=b)
                .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
                .filter(|v| *v <= self.hi * 1.0001)
                .collect()
        } else {
            let step = nice_step((self.hi - self.lo) / TICKS as f64);
            let count = ((self.hi - self.lo) / step).round() as usize;
            (0..=count).map(|i| self.lo + step * i as f64).collect()
        }
    }
}

/// The 1, 2 or 5 × 10^k step nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let unit = raw / magnitude;
    let nice = if unit <= 1.0 {
        1.0
    } else if unit <= 2.0 {
        2.0
    } else if unit <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A number as a short tick label: 1.2k, 3.4M, 0.5.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// Text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Render a line chart with markers as one `<svg>` element.
pub fn line_chart(chart: &Chart, series: &[Series]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_axis = Axis::fit(all().map(|p| p.0), chart.log_x);
    let y_axis = Axis::fit(all().map(|p| p.1), chart.log_y);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |x: f64| MARGIN_LEFT + x_axis.unit(x) * plot_w;
    let py = |y: f64| MARGIN_TOP + (1.0 - y_axis.unit(y)) * plot_h;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        MARGIN_LEFT,
        escape(chart.title)
    );
    let _ = write!(
        out,
        r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    for t in x_axis.ticks() {
        let x = px(t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 14.0,
            short_number(t)
        );
    }
    for t in y_axis.ticks() {
        let y = py(t);
        let _ = write!(
            out,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            short_number(t)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        escape(chart.x_label)
    );
    let _ = write!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        MARGIN_TOP + plot_h / 2.0,
        escape(chart.y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| x_axis.accepts(x) && y_axis.accepts(y))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        if path.len() > 1 {
            let _ = write!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
        }
        for &(x, y) in &points {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} , {}</title></circle>"#,
                px(x),
                py(y),
                escape(&s.name),
                short_number(x),
                short_number(y)
            );
        }
        let ly = MARGIN_TOP + 10.0 + i as f64 * 16.0;
        let lx = WIDTH - MARGIN_RIGHT + 12.0;
        let _ = write!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers_read_like_tick_labels() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(2_000_000.0), "2M");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(123_456.0), "123k");
    }

    #[test]
    fn linear_ticks_are_round_numbers() {
        let axis = Axis::fit([0.0, 19.4].into_iter(), false);
        assert_eq!(axis.ticks(), [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]);
        assert_eq!(nice_step(2160.0), 5000.0);
        assert_eq!(nice_step(0.3), 0.5);
        let log = Axis::fit([150.0, 900.0].into_iter(), true);
        assert_eq!(log.ticks(), [100.0, 200.0, 500.0, 1000.0]);
    }

    #[test]
    fn a_chart_has_one_polyline_per_series_and_escapes_names() {
        let series = [
            Series {
                name: "a<b".into(),
                points: vec![(1.0, 2.0), (10.0, 20.0), (100.0, 5.0)],
                dashed: false,
            },
            Series {
                name: "ceiling".into(),
                points: vec![(1.0, 30.0), (100.0, 30.0), (f64::NAN, 1.0)],
                dashed: true,
            },
        ];
        let chart = Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            log_x: true,
            log_y: false,
        };
        let svg = line_chart(&chart, &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("<circle").count(),
            5,
            "the NaN point is skipped"
        );
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn empty_charts_still_render() {
        let chart = Chart {
            title: "none",
            x_label: "x",
            y_label: "y",
            log_x: true,
            log_y: true,
        };
        let svg = line_chart(&chart, &[]);
        assert!(svg.contains("none") && svg.ends_with("</svg>"));
    }
}
