//! Load profiles: a run as ordered stages, each with a duration, a publish
//! rate and its shape (constant, step, spike, Poisson), a payload size,
//! churn (subscribers disconnecting and resuming with `Last-Event-ID`), an
//! optional reconnect storm at its start (every subscriber, or every one of
//! a node, dropped at once: what a node restart looks like to clients) and
//! its own SLOs. `--scenario FILE` reads them from TOML; the flags of a
//! plain run are the one-stage shorthand. Pure: the publisher walks the
//! schedule, the engine asks which stage it is in.

use serde::{Deserialize, Serialize};

/// Stages in one scenario.
pub const STAGES_MAX: usize = 32;
/// Segments of constant rate one stage may be cut into (steps).
const STEPS_MAX: u32 = 100;
/// Longest scenario, seconds (the per-second series stays bounded).
pub const SCENARIO_S_MAX: f64 = crate::cli::DURATION_S_MAX as f64;
/// Highest rate of any segment, events/s.
const RATE_MAX: f64 = 1_000_000.0;

/// A scenario file as written (see `loadgen/scenarios/*.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    stage: Vec<StageFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    name: Option<String>,
    duration_s: f64,
    /// Events per second (the base rate of a spike, the first of a step).
    rate: f64,
    /// `constant` (default), `step`, `spike` or `poisson`.
    profile: Option<String>,
    /// step: the last rate, reached in `steps` equal steps.
    to_rate: Option<f64>,
    steps: Option<u32>,
    /// spike: this rate from `spike_at_s` for `spike_for_s` seconds.
    spike_rate: Option<f64>,
    spike_at_s: Option<f64>,
    spike_for_s: Option<f64>,
    payload_bytes: Option<usize>,
    /// Share of the fast subscribers that disconnect and resume per second.
    churn_per_s: Option<f64>,
    /// Drop every subscriber at the stage's start (of `storm_node` only, a
    /// `--url` index, when given); they reconnect after the server's `retry:`.
    storm: Option<bool>,
    storm_node: Option<usize>,
    /// SLO: fast subscribers' p99 for events scheduled in this stage, ms.
    max_p99_ms: Option<f64>,
    /// SLO: every subscriber dropped by this stage's storm streams again within this many seconds.
    max_resume_s: Option<f64>,
}

/// A stretch of constant rate (or a Poisson process of that mean rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Segment {
    /// Offsets from the start of publishing, ns.
    pub start_ns: u64,
    pub end_ns: u64,
    pub rate: f64,
    pub poisson: bool,
}

/// One stage, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub profile: String,
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(skip)]
    pub segments: Vec<Segment>,
    pub payload_bytes: usize,
    pub churn_per_s: f64,
    /// `Some(None)`: storm on every node; `Some(Some(n))`: on node n.
    pub storm: Option<Option<usize>>,
    pub max_p99_ms: Option<f64>,
    pub max_resume_s: Option<f64>,
}

/// The whole publish schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub stages: Vec<Stage>,
}

fn bad<T>(msg: String) -> Result<T, String> {
    Err(msg)
}

fn ns(s: f64) -> u64 {
    (s * 1e9).round() as u64
}

impl Schedule {
    /// The flags' shorthand: one constant stage.
    pub fn constant(rate: f64, duration_s: u64, payload_bytes: usize) -> Self {
        let end_ns = duration_s * 1_000_000_000;
        Self {
            stages: vec![Stage {
                name: "run".into(),
                profile: "constant".into(),
                start_ns: 0,
                end_ns,
                segments: vec![Segment {
                    start_ns: 0,
                    end_ns,
                    rate,
                    poisson: false,
                }],
                payload_bytes,
                churn_per_s: 0.0,
                storm: None,
                max_p99_ms: None,
                max_resume_s: None,
            }],
        }
    }

    /// Parse and check a scenario file's text; `nodes` bounds `storm_node`,
    /// `payload_default` fills stages that give none.
    pub fn parse(text: &str, nodes: usize, payload_default: usize) -> Result<Self, String> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.stage.is_empty() || file.stage.len() > STAGES_MAX {
            return bad(format!("a scenario has 1..={STAGES_MAX} [[stage]] tables"));
        }
        let mut stages = Vec::with_capacity(file.stage.len());
        let mut t = 0.0f64;
        for (i, s) in file.stage.into_iter().enumerate() {
            let name = s.name.clone().unwrap_or_else(|| format!("stage {}", i + 1));
            let ctx = |m: &str| format!("[[stage]] {name:?}: {m}");
            if !(s.duration_s.is_finite() && s.duration_s > 0.0) {
                return bad(ctx("duration_s must be positive"));
            }
            let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= RATE_MAX;
            if !rate_ok(s.rate) {
                return bad(ctx(&format!("rate must be in (0, {RATE_MAX}]")));
            }
            let (start, end) = (t, t + s.duration_s);
            t = end;
            if t > SCENARIO_S_MAX {
                return bad(format!("the stages last more than {SCENARIO_S_MAX} s"));
            }
            let profile = s.profile.clone().unwrap_or_else(|| "constant".into());
            let seg = |a: f64, b: f64, rate: f64, poisson: bool| Segment {
                start_ns: ns(a),
                end_ns: ns(b),
                rate,
                poisson,
            };
            let segments = match profile.as_str() {
                "constant" => vec![seg(start, end, s.rate, false)],
                "poisson" => vec![seg(start, end, s.rate, true)],
                "step" => {
                    let (Some(to), steps) = (s.to_rate, s.steps.unwrap_or(4)) else {
                        return bad(ctx("profile \"step\" needs to_rate (and optionally steps)"));
                    };
                    if !rate_ok(to) || steps == 0 || steps > STEPS_MAX {
                        return bad(ctx(&format!(
                            "to_rate must be in (0, {RATE_MAX}], steps in 1..={STEPS_MAX}"
                        )));
                    }
                    let n = f64::from(steps);
                    (0..steps)
                        .map(|k| {
                            let k = f64::from(k);
                            let rate = if steps == 1 {
                                to
                            } else {
                                s.rate + (to - s.rate) * k / (n - 1.0)
                            };
                            let a = start + s.duration_s * k / n;
                            seg(a, start + s.duration_s * (k + 1.0) / n, rate, false)
                        })
                        .collect()
                }
                "spike" => {
                    let (Some(peak), Some(at), Some(len)) =
                        (s.spike_rate, s.spike_at_s, s.spike_for_s)
                    else {
                        return bad(ctx(
                            "profile \"spike\" needs spike_rate, spike_at_s and spike_for_s",
                        ));
                    };
                    if !(rate_ok(peak) && at >= 0.0 && len > 0.0 && at + len <= s.duration_s) {
                        return bad(ctx(
                            "the spike must lie inside the stage, with a rate in range",
                        ));
                    }
                    let mut v = Vec::new();
                    if at > 0.0 {
                        v.push(seg(start, start + at, s.rate, false));
                    }
                    v.push(seg(start + at, start + at + len, peak, false));
                    if at + len < s.duration_s {
                        v.push(seg(start + at + len, end, s.rate, false));
                    }
                    v
                }
                p => {
                    return bad(ctx(&format!(
                        "profile {p:?}: expected constant, step, spike or poisson"
                    )))
                }
            };
            let payload_bytes = s.payload_bytes.unwrap_or(payload_default);
            if payload_bytes > crate::cli::PAYLOAD_BYTES_MAX {
                return bad(ctx("payload_bytes too large"));
            }
            let churn_per_s = s.churn_per_s.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&churn_per_s) {
                return bad(ctx("churn_per_s must be in [0, 1]"));
            }
            if let Some(n) = s.storm_node {
                if n >= nodes {
                    return bad(ctx(&format!("storm_node {n}: there are {nodes} node(s)")));
                }
            }
            let storm = match (s.storm.unwrap_or(false), s.storm_node) {
                (true, node) => Some(node),
                (false, Some(_)) => return bad(ctx("storm_node without storm = true")),
                (false, None) => None,
            };
            for (what, v) in [
                ("max_p99_ms", s.max_p99_ms),
                ("max_resume_s", s.max_resume_s),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return bad(ctx(&format!("{what} must be a non-negative number")));
                }
            }
            stages.push(Stage {
                name,
                profile,
                start_ns: ns(start),
                end_ns: ns(end),
                segments,
                payload_bytes,
                churn_per_s,
                storm,
                max_p99_ms: s.max_p99_ms,
                max_resume_s: s.max_resume_s,
            });
        }
        Ok(Self { stages })
    }

    pub fn duration_ns(&self) -> u64 {
        self.stages.last().map_or(0, |s| s.end_ns)
    }

    /// Events the schedule holds (exact for deterministic profiles, the
    /// mean for Poisson ones).
    pub fn events_estimate(&self) -> u64 {
        self.stages
            .iter()
            .flat_map(|s| &s.segments)
            .map(|g| {
                (g.rate * (g.end_ns - g.start_ns) as f64 / 1e9)
                    .round()
                    .max(0.0) as u64
            })
            .sum::<u64>()
            .max(1)
    }

    /// Stage an offset from the start of publishing falls in (the last one after the end).
    pub fn stage_of(&self, offset_ns: u64) -> usize {
        self.stages
            .iter()
            .position(|s| offset_ns < s.end_ns)
            .unwrap_or(self.stages.len().saturating_sub(1))
    }

    pub fn needs_reconnect(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.churn_per_s > 0.0 || s.storm.is_some())
    }

    /// Every event in order: (offset from publishing start in ns, stage).
    /// Deterministic (a Poisson segment draws from a fixed seed), so every
    /// publisher thread walks the same sequence and takes its own events.
    pub fn iter(&self) -> ScheduleIter<'_> {
        ScheduleIter {
            schedule: self,
            stage: 0,
            segment: 0,
            j: 0,
            t_ns: None,
            rng: 0x005E_ED0F_5CE4_A210,
        }
    }
}

pub struct ScheduleIter<'a> {
    schedule: &'a Schedule,
    stage: usize,
    segment: usize,
    /// Index of the next event within a constant segment.
    j: u64,
    /// Time of the last event within a Poisson segment.
    t_ns: Option<f64>,
    rng: u64,
}

impl ScheduleIter<'_> {
    /// splitmix64: a uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

impl Iterator for ScheduleIter<'_> {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        loop {
            let stage = self.schedule.stages.get(self.stage)?;
            let Some(seg) = stage.segments.get(self.segment).copied() else {
                self.stage += 1;
                self.segment = 0;
                continue;
            };
            let due = if seg.poisson {
                let t = self.t_ns.unwrap_or(seg.start_ns as f64);
                let gap = -self.uniform().ln() / seg.rate * 1e9;
                self.t_ns = Some(t + gap);
                t + gap
            } else {
                let t = seg.start_ns as f64 + self.j as f64 * 1e9 / seg.rate;
                self.j += 1;
                t
            };
            if due >= seg.end_ns as f64 {
                self.segment += 1;
                self.j = 0;
                self.t_ns = None;
                continue;
            }
            return Some((due as u64, self.stage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_make_the_events_they_say() {
        let text = r#"
            [[stage]]
            name = "warm"
            duration_s = 2
            rate = 10
            [[stage]]
            duration_s = 4
            rate = 10
            profile = "step"
            to_rate = 40
            steps = 4
            [[stage]]
            duration_s = 3
            rate = 10
            profile = "spike"
            spike_rate = 100
            spike_at_s = 1
            spike_for_s = 1
            storm = true
            max_p99_ms = 50
            [[stage]]
            duration_s = 20
            rate = 50
            profile = "poisson"
            churn_per_s = 0.01
        "#;
        let s = Schedule::parse(text, 1, 128).expect("valid");
        let per_stage = |i: usize| s.iter().filter(|e| e.1 == i).count();
        assert_eq!(per_stage(0), 20);
        // 10, 20, 30, 40 ev/s for 1 s each.
        assert_eq!(per_stage(1), 100);
        assert_eq!(per_stage(2), 10 + 100 + 10);
        let poisson = per_stage(3) as f64;
        assert!((800.0..1200.0).contains(&poisson), "{poisson}");
        // In order, inside their stage, and the same every time.
        let v: Vec<_> = s.iter().collect();
        assert!(v.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(v, s.iter().collect::<Vec<_>>());
        assert!(v.iter().all(|&(t, st)| s.stage_of(t) == st));
        assert_eq!(s.stages[2].storm, Some(None));
        assert!(s.needs_reconnect());
        assert_eq!(s.duration_ns(), 29_000_000_000);
        assert_eq!(Schedule::constant(100.0, 10, 128).iter().count(), 1000);
    }

    #[test]
    fn shipped_scenarios_parse() {
        for text in [
            include_str!("../scenarios/soak.toml"),
            include_str!("../scenarios/spike.toml"),
            include_str!("../scenarios/restart-storm.toml"),
        ] {
            let s = Schedule::parse(text, 1, 128).expect("shipped scenario");
            assert!(s.events_estimate() > 0);
        }
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, says) in [
            ("", "stage"),
            ("[[stage]]\nduration_s = 1\nrate = 0", "rate"),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nprofile = \"saw\"",
                "profile",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nprofile = \"step\"",
                "to_rate",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nstorm = true\nstorm_node = 3",
                "storm_node",
            ),
            ("[[stage]]\nduration_s = 1\nrate = 1\nbogus = 1", "bogus"),
        ] {
            let e = Schedule::parse(text, 1, 128).expect_err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
