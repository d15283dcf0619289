//! Load profiles: a run as ordered stages, each with a duration, a publish
//! rate and its shape (constant, step, spike, Poisson), a payload size,
//! churn (subscribers disconnecting and resuming with `Last-Event-ID`), an
//! optional reconnect storm at its start (every subscriber, or every one of
//! a node, dropped at once: what a node restart looks like to clients), a
//! connect ramp (subscribers opened at a rate during the stage), a share of
//! subscribers that read slowly during the stage only, and its own SLOs. `--scenario FILE` reads them from TOML; the flags of a
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
/// Highest connect ramp rate of a stage, subscribers/s.
const CONNECT_PER_S_MAX: f64 = 1_000_000.0;

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
    /// Open this many subscribers per second during the stage (a ramp);
    /// subscribers no stage opens connect before publishing begins.
    connect_per_s: Option<f64>,
    /// This share of the subscribers reads slowly during the stage only
    /// (`slow_mode` as `--slow-mode`), and normally again after it.
    slow_fraction: Option<f64>,
    slow_mode: Option<String>,
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
    /// Subscribers opened per second during the stage.
    pub connect_per_s: Option<f64>,
    /// Share of subscribers slow during the stage, and how (0: none).
    pub slow_fraction: f64,
    pub slow_mode: Option<SlowMode>,
    pub max_p99_ms: Option<f64>,
    pub max_resume_s: Option<f64>,
}

impl Stage {
    /// Subscribers this stage's ramp can open: the last one is due before the stage ends.
    pub fn ramp_capacity(&self) -> usize {
        self.connect_per_s.map_or(0, |r| {
            (r * (self.end_ns - self.start_ns) as f64 / 1e9).ceil() as usize
        })
    }
}

/// How a slow subscriber reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum SlowMode {
    /// Reads nothing (after the response head, or from the stage's start).
    Stall,
    /// Reads at most this many bytes per second.
    Trickle { bytes_per_s: u64 },
}

impl SlowMode {
    /// `stall` or `trickle:BYTES_PER_S` (the `--slow-mode` syntax).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "stall" {
            return Ok(Self::Stall);
        }
        if let Some(rate) = s.strip_prefix("trickle:") {
            return match rate.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self::Trickle { bytes_per_s: n }),
                _ => Err(format!(
                    "{s:?}: trickle's BYTES_PER_S must be a positive integer"
                )),
            };
        }
        Err(format!("{s:?}: expected `stall` or `trickle:BYTES_PER_S`"))
    }
}

/// One stage's connect ramp: subscribers `first..end` (global indices), the
/// k-th of them due `start_ns + k * interval_ns` after publishing began.
#[derive(Debug, Clone, PartialEq)]
pub struct RampStage {
    pub stage: usize,
    pub first: usize,
    pub end: usize,
    pub start_ns: u64,
    pub interval_ns: f64,
}

/// Which subscribers connect before publishing and which a stage opens.
#[derive(Debug, Clone, PartialEq)]
pub struct RampPlan {
    /// Subscribers `0..before` connect before publishing, at `--connect-rate`.
    pub before: usize,
    pub stages: Vec<RampStage>,
}

impl RampPlan {
    /// The stage ramp that opens subscriber `g` and when it is due (ns
    /// after publishing began); `None`: it connects before publishing.
    pub fn opens(&self, g: usize) -> Option<(usize, u64)> {
        let r = self.stages.iter().find(|r| (r.first..r.end).contains(&g))?;
        Some((
            r.stage,
            r.start_ns + ((g - r.first) as f64 * r.interval_ns) as u64,
        ))
    }
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
                connect_per_s: None,
                slow_fraction: 0.0,
                slow_mode: None,
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
            if let Some(r) = s.connect_per_s {
                if !(r.is_finite() && r > 0.0 && r <= CONNECT_PER_S_MAX) {
                    return bad(ctx(&format!(
                        "connect_per_s must be in (0, {CONNECT_PER_S_MAX}] subscribers/s"
                    )));
                }
            }
            let slow_fraction = s.slow_fraction.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&slow_fraction) {
                return bad(ctx("slow_fraction must be in [0, 1]"));
            }
            let slow_mode = match (&s.slow_mode, slow_fraction > 0.0) {
                (Some(m), true) => {
                    Some(SlowMode::parse(m).map_err(|e| ctx(&format!("slow_mode {e}")))?)
                }
                (None, true) => Some(SlowMode::Stall),
                (Some(_), false) => return bad(ctx("slow_mode without slow_fraction > 0")),
                (None, false) => None,
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
                connect_per_s: s.connect_per_s,
                slow_fraction,
                slow_mode,
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

    /// Churn, storms and slow stages end streams that must resume: they
    /// turn `--reconnect` on.
    pub fn needs_reconnect(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.churn_per_s > 0.0 || s.storm.is_some() || s.slow_fraction > 0.0)
    }

    pub fn has_ramp(&self) -> bool {
        self.stages.iter().any(|s| s.connect_per_s.is_some())
    }

    pub fn has_slow_stage(&self) -> bool {
        self.stages.iter().any(|s| s.slow_fraction > 0.0)
    }

    /// Who opens which of `subscribers` subscribers: the stages' ramps take
    /// the last ones, in stage order, each as many as its rate and length
    /// allow; the rest (from index 0) connect before publishing begins.
    pub fn ramp_plan(&self, subscribers: usize) -> RampPlan {
        let capacity: usize = self.stages.iter().map(Stage::ramp_capacity).sum();
        let before = subscribers.saturating_sub(capacity);
        let mut next = before;
        let mut stages = Vec::new();
        for (i, s) in self.stages.iter().enumerate() {
            let Some(rate) = s.connect_per_s else {
                continue;
            };
            let take = s.ramp_capacity().min(subscribers - next);
            stages.push(RampStage {
                stage: i,
                first: next,
                end: next + take,
                start_ns: s.start_ns,
                interval_ns: 1e9 / rate,
            });
            next += take;
        }
        RampPlan { before, stages }
    }

    /// An upper bound on the events the schedule holds (Poisson segments:
    /// the mean plus ten standard deviations), for tables sized up front.
    pub fn events_bound(&self) -> u64 {
        self.stages
            .iter()
            .flat_map(|s| &s.segments)
            .map(|g| {
                let mean = g.rate * (g.end_ns - g.start_ns) as f64 / 1e9;
                let bound = if g.poisson {
                    mean + 10.0 * mean.sqrt() + 16.0
                } else {
                    mean + 1.0
                };
                bound.ceil().max(0.0) as u64
            })
            .sum()
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
    fn ramps_take_the_last_subscribers_in_stage_order() {
        let text = r#"
            [[stage]]
            name = "ramp"
            duration_s = 2
            rate = 10
            connect_per_s = 100
            [[stage]]
            duration_s = 5
            rate = 10
            slow_fraction = 0.25
            slow_mode = "trickle:500"
            [[stage]]
            duration_s = 1.5
            rate = 10
            connect_per_s = 2
        "#;
        let s = Schedule::parse(text, 1, 128).expect("valid");
        assert_eq!(
            (s.stages[0].ramp_capacity(), s.stages[2].ramp_capacity()),
            (200, 3)
        );
        assert_eq!(
            s.stages[1].slow_mode,
            Some(SlowMode::Trickle { bytes_per_s: 500 })
        );
        assert!(s.has_ramp() && s.has_slow_stage() && s.needs_reconnect());
        // 1000 subscribers: 797 before publishing, 200 by the first ramp, 3 by the last.
        let plan = s.ramp_plan(1000);
        assert_eq!(plan.before, 797);
        assert_eq!(plan.opens(796), None);
        assert_eq!(plan.opens(797), Some((0, 0)));
        assert_eq!(plan.opens(996), Some((0, 1_990_000_000)));
        assert_eq!(plan.opens(997), Some((2, 7_000_000_000)));
        // 0.5 s apart: the third is due at 8.0 s, inside the 7..8.5 s stage.
        assert_eq!(plan.opens(999), Some((2, 8_000_000_000)));
        // Fewer subscribers than the ramps can open: all by the ramps, in order.
        let plan = s.ramp_plan(150);
        assert_eq!(plan.before, 0);
        assert_eq!(plan.opens(149), Some((0, 1_490_000_000)));
        assert_eq!(
            plan.stages[1].first, plan.stages[1].end,
            "nothing left for the last"
        );
        // Without ramps everyone connects before publishing.
        assert_eq!(Schedule::constant(1.0, 1, 8).ramp_plan(5).before, 5);
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
            assert!(s.duration_ns() as f64 <= SCENARIO_S_MAX * 1e9);
        }
    }

    #[test]
    fn shipped_soak_ramps_and_spike_slows() {
        let soak = Schedule::parse(include_str!("../scenarios/soak.toml"), 1, 128).expect("soak");
        assert_eq!(
            soak.ramp_plan(20_000).before,
            0,
            "the ramp opens all 20,000"
        );
        let spike =
            Schedule::parse(include_str!("../scenarios/spike.toml"), 1, 128).expect("spike");
        assert_eq!(spike.stages[1].slow_mode, Some(SlowMode::Stall));
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
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nconnect_per_s = 0",
                "connect_per_s",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nconnect_per_s = -3",
                "connect_per_s",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nslow_fraction = 1.5",
                "slow_fraction",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nslow_fraction = 0.1\nslow_mode = \"crawl\"",
                "slow_mode",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nslow_fraction = 0.1\nslow_mode = \"trickle:0\"",
                "trickle",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nslow_mode = \"stall\"",
                "slow_fraction",
            ),
            (
                "[[stage]]\nduration_s = 1\nrate = 1\nslow_fraction = \"lots\"",
                "slow_fraction",
            ),
        ] {
            let e = Schedule::parse(text, 1, 128).expect_err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
