//! The regression gate's decisions, separate from running valgrind so they
//! are unit-tested: the baseline file format, reading callgrind's totals,
//! comparing, and the table a CI log shows.
//!
//! The baseline (`bench/baselines/callgrind.tsv`) is tab-separated, one line
//! per workload: `workload  instructions  threshold_pct`. Lines starting with
//! `#` are comments; the gate writes what the counts were measured with
//! (toolchain, valgrind, CPU) there, and warns when the current run differs,
//! because those change counts without any change to our code.

use std::fmt;

/// Threshold given to a workload that has none yet (a new baseline line).
pub const THRESHOLD_PCT_DEFAULT: f64 = 10.0;

/// The most lines a baseline file may have: a bound on what we parse, far
/// above the handful of workloads we keep.
pub const BASELINE_LINES_MAX: usize = 10_000;

/// One committed baseline line.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineEntry {
    pub name: String,
    pub instructions: u64,
    /// A rise above this many percent fails the gate; a fall below minus this
    /// many percent passes with a note to update the baseline.
    pub threshold_pct: f64,
}

/// A parsed baseline file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// `key: value` pairs from `# key: value` comment lines (environment the
    /// counts were taken in), in file order.
    pub environment: Vec<(String, String)>,
    pub entries: Vec<BaselineEntry>,
}

impl Baseline {
    pub fn get(&self, name: &str) -> Option<&BaselineEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn environment_value(&self, key: &str) -> Option<&str> {
        self.environment
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a baseline file or a callgrind output could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum GateError {
    /// A baseline line is not `name<TAB>instructions<TAB>threshold_pct`.
    BaselineLine { line_number: usize, why: String },
    /// The same workload appears twice in the baseline.
    BaselineDuplicate { name: String },
    /// The baseline file has more than [`BASELINE_LINES_MAX`] lines.
    BaselineTooLong,
    /// The callgrind output has no `totals:` or `summary:` line.
    CallgrindNoTotals,
    /// The callgrind output counts an event other than `Ir` first.
    CallgrindEvents { events: String },
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::BaselineLine { line_number, why } => write!(
                f,
                "baseline line {line_number}: {why} (expected `workload<TAB>instructions<TAB>threshold_pct`)"
            ),
            GateError::BaselineDuplicate { name } => {
                write!(f, "baseline lists workload `{name}` twice")
            }
            GateError::BaselineTooLong => {
                write!(f, "baseline has more than {BASELINE_LINES_MAX} lines")
            }
            GateError::CallgrindNoTotals => {
                write!(f, "callgrind output has no `totals:` or `summary:` line")
            }
            GateError::CallgrindEvents { events } => write!(
                f,
                "callgrind output counts `{events}`, expected `Ir` first (was a cache simulation turned on?)"
            ),
        }
    }
}

impl std::error::Error for GateError {}

/// Header line of the data section, so the file reads as a table.
const BASELINE_COLUMNS: &str = "workload\tinstructions\tthreshold_pct";

/// Parse a baseline file.
pub fn parse_baseline(text: &str) -> Result<Baseline, GateError> {
    let mut baseline = Baseline::default();
    for (index, line) in text.lines().enumerate() {
        if index >= BASELINE_LINES_MAX {
            return Err(GateError::BaselineTooLong);
        }
        let line_number = index + 1;
        let line = line.trim_end();
        if line.is_empty() || line == BASELINE_COLUMNS {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some((key, value)) = comment.split_once(':') {
                let key = key.trim();
                if !key.is_empty() && !key.contains(' ') {
                    baseline
                        .environment
                        .push((key.to_string(), value.trim().to_string()));
                }
            }
            continue;
        }
        let bad = |why: &str| GateError::BaselineLine {
            line_number,
            why: why.to_string(),
        };
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, instructions, threshold] = fields[..] else {
            return Err(bad(&format!("{} fields", fields.len())));
        };
        if name.is_empty() {
            return Err(bad("empty workload name"));
        }
        let instructions: u64 = instructions
            .parse()
            .map_err(|_| bad(&format!("instructions `{instructions}` is not a count")))?;
        if instructions == 0 {
            return Err(bad("instructions is 0: nothing was measured"));
        }
        let threshold_pct: f64 = threshold
            .parse()
            .map_err(|_| bad(&format!("threshold `{threshold}` is not a number")))?;
        if !(threshold_pct.is_finite() && threshold_pct > 0.0 && threshold_pct <= 100.0) {
            return Err(bad("threshold_pct must be in (0, 100]"));
        }
        if baseline.get(name).is_some() {
            return Err(GateError::BaselineDuplicate {
                name: name.to_string(),
            });
        }
        baseline.entries.push(BaselineEntry {
            name: name.to_string(),
            instructions,
            threshold_pct,
        });
    }
    Ok(baseline)
}

/// Write a baseline file: a comment that says what it is, the environment
/// the counts were taken in, then one line per entry.
pub fn format_baseline(environment: &[(String, String)], entries: &[BaselineEntry]) -> String {
    let mut out = String::new();
    out.push_str(
        "# stentor-gate baseline: instructions (callgrind Ir) per workload run.\n\
         # Written by `just bench-gate --update`; edit thresholds by hand if needed.\n\
         # See docs/measurements/benchmarks.md before updating.\n",
    );
    for (key, value) in environment {
        out.push_str(&format!("# {key}: {value}\n"));
    }
    out.push_str(BASELINE_COLUMNS);
    out.push('\n');
    for entry in entries {
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            entry.name, entry.instructions, entry.threshold_pct
        ));
    }
    out
}

/// The instruction count of a callgrind output file: the first number of its
/// `totals:` line (or `summary:`, which older valgrinds write instead).
pub fn parse_callgrind_totals(text: &str) -> Result<u64, GateError> {
    let mut summary = None;
    for line in text.lines() {
        if let Some(events) = line.strip_prefix("events:") {
            let first = events.split_whitespace().next().unwrap_or("");
            if first != "Ir" {
                return Err(GateError::CallgrindEvents {
                    events: events.trim().to_string(),
                });
            }
        } else if let Some(rest) = line.strip_prefix("totals:") {
            return first_count(rest);
        } else if let Some(rest) = line.strip_prefix("summary:") {
            summary = Some(first_count(rest)?);
        }
    }
    summary.ok_or(GateError::CallgrindNoTotals)
}

fn first_count(rest: &str) -> Result<u64, GateError> {
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(GateError::CallgrindNoTotals)
}

/// What the gate says about one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the threshold either way.
    Pass,
    /// Faster beyond the threshold: passes, but the baseline should be
    /// updated so the gate keeps guarding the new level.
    Improved,
    /// Slower beyond the threshold: fails the gate.
    Regressed,
    /// Measured but has no baseline line: fails, so every workload is guarded.
    NoBaseline,
    /// Has a baseline line but was not measured (renamed or removed): fails,
    /// so a baseline never silently stops guarding anything.
    NotMeasured,
}

impl Verdict {
    pub fn fails(self) -> bool {
        matches!(
            self,
            Verdict::Regressed | Verdict::NoBaseline | Verdict::NotMeasured
        )
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Improved => "PASS (faster: update baseline?)",
            Verdict::Regressed => "FAIL",
            Verdict::NoBaseline => "FAIL (no baseline line)",
            Verdict::NotMeasured => "FAIL (in baseline, not measured)",
        }
    }
}

/// One measured workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: String,
    pub instructions: u64,
    /// Operations in one run, for the per-operation column.
    pub iterations: u32,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub baseline: Option<u64>,
    pub current: Option<u64>,
    pub iterations: Option<u32>,
    pub threshold_pct: f64,
    pub verdict: Verdict,
}

impl Row {
    /// Relative change from the baseline in percent, when both exist.
    pub fn change_pct(&self) -> Option<f64> {
        match (self.baseline, self.current) {
            (Some(base), Some(current)) => Some(change_pct(base, current)),
            _ => None,
        }
    }
}

/// Relative change from `base` to `current`, in percent.
pub fn change_pct(base: u64, current: u64) -> f64 {
    debug_assert!(base > 0, "a baseline of 0 instructions is refused at parse");
    (current as f64 - base as f64) / base as f64 * 100.0
}

/// Compare measurements with the baseline: one row per measured workload, in
/// measurement order, then one per baseline line nothing measured.
pub fn compare(baseline: &Baseline, measured: &[Measurement]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(measured.len() + baseline.entries.len());
    for m in measured {
        let row = match baseline.get(&m.name) {
            None => Row {
                name: m.name.clone(),
                baseline: None,
                current: Some(m.instructions),
                iterations: Some(m.iterations),
                threshold_pct: THRESHOLD_PCT_DEFAULT,
                verdict: Verdict::NoBaseline,
            },
            Some(entry) => {
                let change = change_pct(entry.instructions, m.instructions);
                let verdict = if change > entry.threshold_pct {
                    Verdict::Regressed
                } else if change < -entry.threshold_pct {
                    Verdict::Improved
                } else {
                    Verdict::Pass
                };
                Row {
                    name: m.name.clone(),
                    baseline: Some(entry.instructions),
                    current: Some(m.instructions),
                    iterations: Some(m.iterations),
                    threshold_pct: entry.threshold_pct,
                    verdict,
                }
            }
        };
        rows.push(row);
    }
    for entry in &baseline.entries {
        if !measured.iter().any(|m| m.name == entry.name) {
            rows.push(Row {
                name: entry.name.clone(),
                baseline: Some(entry.instructions),
                current: None,
                iterations: None,
                threshold_pct: entry.threshold_pct,
                verdict: Verdict::NotMeasured,
            });
        }
    }
    rows
}

/// The baseline entries an `--update` writes: every measured workload with
/// its new count, keeping a threshold someone set by hand.
pub fn updated_entries(baseline: &Baseline, measured: &[Measurement]) -> Vec<BaselineEntry> {
    measured
        .iter()
        .map(|m| BaselineEntry {
            name: m.name.clone(),
            instructions: m.instructions,
            threshold_pct: baseline
                .get(&m.name)
                .map_or(THRESHOLD_PCT_DEFAULT, |e| e.threshold_pct),
        })
        .collect()
}

/// The report table, aligned for a CI log.
pub fn render_table(rows: &[Row]) -> String {
    let header = [
        "workload",
        "baseline Ir",
        "current Ir",
        "Ir/op",
        "change",
        "threshold",
        "verdict",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            let per_op = match (row.current, row.iterations) {
                (Some(current), Some(n)) if n > 0 => format!("{:.1}", current as f64 / n as f64),
                _ => "-".to_string(),
            };
            [
                row.name.clone(),
                row.baseline.map_or("-".to_string(), group_thousands),
                row.current.map_or("-".to_string(), group_thousands),
                per_op,
                row.change_pct()
                    .map_or("-".to_string(), |c| format!("{c:+.2}%")),
                format!("±{}%", row.threshold_pct),
                row.verdict.label().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |row: &[String]| {
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let pad = width - cell.chars().count();
            // Text columns left-aligned, numbers right-aligned.
            if i == 0 || i == 6 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
            out.push_str(if i + 1 < row.len() { "  " } else { "\n" });
        }
    };
    push_row(&header.map(String::from));
    push_row(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        push_row(row);
    }
    // The last column is left-aligned: trim the padding it leaves.
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// `1234567` as `1,234,567`, so counts of different sizes read at a glance.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(entries: &[(&str, u64, f64)]) -> Baseline {
        Baseline {
            environment: vec![],
            entries: entries
                .iter()
                .map(|&(name, instructions, threshold_pct)| BaselineEntry {
                    name: name.into(),
                    instructions,
                    threshold_pct,
                })
                .collect(),
        }
    }

    fn measured(name: &str, instructions: u64) -> Measurement {
        Measurement {
            name: name.into(),
            instructions,
            iterations: 1000,
        }
    }

    #[test]
    fn baseline_round_trips_through_its_file_format() {
        let env = vec![
            (
                "rustc".to_string(),
                "rustc 1.95.0 (abc 2026-04-14)".to_string(),
            ),
            ("valgrind".to_string(), "valgrind-3.19.0".to_string()),
        ];
        let base = baseline(&[("sse_encode/128B", 123_456, 10.0), ("b/c", 7, 2.5)]);
        let text = format_baseline(&env, &base.entries);
        let parsed = parse_baseline(&text).expect("own output parses");
        assert_eq!(parsed.entries, base.entries);
        assert_eq!(parsed.environment, env);
        assert_eq!(
            parsed.environment_value("valgrind"),
            Some("valgrind-3.19.0")
        );
    }

    #[test]
    fn bad_baseline_lines_are_refused_with_their_line_number() {
        let cases = [
            ("a\t1\n", "2 fields"),
            ("a\tmany\t10\n", "not a count"),
            ("a\t0\t10\n", "is 0"),
            ("a\t5\tten\n", "not a number"),
            ("a\t5\t0\n", "(0, 100]"),
            ("a\t5\tNaN\n", "(0, 100]"),
            ("\t5\t10\n", "empty workload"),
        ];
        for (text, why) in cases {
            let text = format!("# comment\n{text}");
            match parse_baseline(&text) {
                Err(GateError::BaselineLine {
                    line_number: 2,
                    why: got,
                }) => {
                    assert!(got.contains(why), "{text:?}: {got}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            parse_baseline("a\t5\t10\na\t6\t10\n"),
            Err(GateError::BaselineDuplicate { name: "a".into() })
        );
    }

    #[test]
    fn callgrind_totals_are_read_from_totals_or_summary() {
        let out = "version: 1\ncmd: x\nevents: Ir\nsummary: 999\nfn=foo\n0 5\ntotals: 12345\n";
        assert_eq!(parse_callgrind_totals(out), Ok(12345));
        assert_eq!(parse_callgrind_totals("events: Ir\nsummary: 77\n"), Ok(77));
        assert_eq!(
            parse_callgrind_totals("events: Ir\n"),
            Err(GateError::CallgrindNoTotals)
        );
        assert!(matches!(
            parse_callgrind_totals("events: Dr Ir\ntotals: 1 2\n"),
            Err(GateError::CallgrindEvents { .. })
        ));
    }

    #[test]
    fn verdicts_follow_the_threshold_both_ways() {
        let base = baseline(&[
            ("same", 1000, 10.0),
            ("up", 1000, 10.0),
            ("down", 1000, 10.0),
        ]);
        let rows = compare(
            &base,
            &[
                measured("same", 1100), // exactly +10%: still within
                measured("up", 1101),
                measured("down", 899),
            ],
        );
        let verdicts: Vec<_> = rows.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Pass, Verdict::Regressed, Verdict::Improved]
        );
        assert!(rows[1].verdict.fails() && !rows[2].verdict.fails());
    }

    #[test]
    fn a_doubled_workload_fails() {
        let rows = compare(
            &baseline(&[("sse_encode/128B", 500_000, 10.0)]),
            &[measured("sse_encode/128B", 1_000_000)],
        );
        assert_eq!(rows[0].verdict, Verdict::Regressed);
        assert_eq!(rows[0].change_pct(), Some(100.0));
    }

    #[test]
    fn missing_and_stale_baseline_lines_fail() {
        let rows = compare(&baseline(&[("old", 10, 10.0)]), &[measured("new", 10)]);
        let verdicts: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.verdict)).collect();
        assert_eq!(
            verdicts,
            [("new", Verdict::NoBaseline), ("old", Verdict::NotMeasured)]
        );
        assert!(rows.iter().all(|r| r.verdict.fails()));
    }

    #[test]
    fn update_keeps_hand_set_thresholds_and_drops_stale_lines() {
        let base = baseline(&[("a", 10, 3.0), ("gone", 10, 10.0)]);
        let entries = updated_entries(&base, &[measured("a", 20), measured("b", 30)]);
        assert_eq!(
            entries,
            baseline(&[("a", 20, 3.0), ("b", 30, THRESHOLD_PCT_DEFAULT)]).entries
        );
    }

    #[test]
    fn table_is_aligned_and_says_what_failed() {
        let rows = compare(
            &baseline(&[("sse_encode/128B", 1_000_000, 10.0), ("x", 10, 10.0)]),
            &[measured("sse_encode/128B", 2_000_000), measured("x", 10)],
        );
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("workload"));
        assert!(lines[2].contains("1,000,000") && lines[2].contains("2,000,000"));
        assert!(lines[2].contains("+100.00%") && lines[2].ends_with("FAIL"));
        assert!(lines[3].ends_with("PASS"));
        // Right-aligned numeric columns end at the same place on every row.
        let end_of_change = |l: &str| l.find('%').expect("change column");
        assert_eq!(end_of_change(lines[2]), end_of_change(lines[3]));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(12_345_678), "12,345,678");
    }
}
