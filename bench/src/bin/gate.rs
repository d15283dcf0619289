//! stentor-gate: the CI regression gate on instruction counts.
//!
//! Wall-clock time on a shared 2-core machine moves by tens of percent from
//! run to run; the number of instructions a fixed piece of work executes does
//! not. So CI decides on callgrind's instruction count (Ir) of each workload
//! in `stentor_bench::workloads`, compared with the committed baseline.
//!
//! ```text
//! stentor-gate list                     workloads, one per line
//! stentor-gate run <workload>           run one workload once (what valgrind runs)
//! stentor-gate check [options]          measure every workload under callgrind, compare
//! stentor-gate check --update [...]     ... and rewrite the baseline with the new counts
//! ```
//!
//! Usually run through `.ci/bench-gate` (= `just bench-gate`), which builds
//! this binary with the same profile the baseline was taken with.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use stentor_bench::gate::{self, Measurement};
use stentor_bench::workloads::{self, Workload, WORKLOADS};

/// A workload under valgrind takes well under a second; one that takes this
/// long is stuck, and the gate says so instead of hanging CI.
const VALGRIND_RUN_TIMEOUT: Duration = Duration::from_secs(300);
const VALGRIND_POLL_INTERVAL: Duration = Duration::from_millis(20);

const USAGE: &str = "\
usage:
  stentor-gate list
  stentor-gate run <workload>
  stentor-gate check [--update] [--baseline PATH] [--out-dir DIR] [--valgrind PATH]
                     [--build NOTE] [--only WORKLOAD]...

check measures every workload's instruction count under callgrind and compares
it with the baseline (default bench/baselines/callgrind.tsv): exit 0 when none
rose beyond its threshold, 1 when one did, 2 on a usage or setup error.
--update rewrites the baseline with the new counts (keeping thresholds).
--build NOTE records how the binary was built in the baseline header.
See docs/measurements/benchmarks.md.";

/// Exit status for a regression: what CI acts on.
const EXIT_REGRESSED: u8 = 1;
/// Exit status for a usage or setup error (no verdict reached).
const EXIT_USAGE: u8 = 2;

struct CheckOptions {
    update: bool,
    baseline_path: PathBuf,
    out_dir: Option<PathBuf>,
    valgrind: PathBuf,
    build_note: Option<String>,
    only: Vec<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") if args.len() == 1 => {
            for w in WORKLOADS {
                println!("{}\t{}", w.name, w.what);
            }
            ExitCode::SUCCESS
        }
        Some("run") if args.len() == 2 => match workloads::find(&args[1]) {
            Some(workload) => {
                workload.run();
                ExitCode::SUCCESS
            }
            None => usage_error(&format!("no workload named `{}`", args[1])),
        },
        Some("check") => match parse_check_options(&args[1..]) {
            Ok(options) => match check(&options) {
                Ok(code) => code,
                Err(message) => {
                    eprintln!("stentor-gate: {message}");
                    ExitCode::from(EXIT_USAGE)
                }
            },
            Err(message) => usage_error(&message),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage_error("expected a command"),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("stentor-gate: {message}\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

fn parse_check_options(args: &[String]) -> Result<CheckOptions, String> {
    let mut options = CheckOptions {
        update: false,
        baseline_path: PathBuf::from("bench/baselines/callgrind.tsv"),
        out_dir: None,
        valgrind: PathBuf::from("valgrind"),
        build_note: None,
        only: Vec::new(),
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--update" => options.update = true,
            "--baseline" => options.baseline_path = value(arg)?.into(),
            "--out-dir" => options.out_dir = Some(value(arg)?.into()),
            "--valgrind" => options.valgrind = value(arg)?.into(),
            "--build" => options.build_note = Some(value(arg)?),
            "--only" => {
                let name = value(arg)?;
                if workloads::find(&name).is_none() {
                    return Err(format!("no workload named `{name}`"));
                }
                options.only.push(name);
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if options.update && !options.only.is_empty() {
        // A partial update would drop every other line from the baseline.
        return Err("--update measures every workload; it cannot be combined with --only".into());
    }
    Ok(options)
}

fn check(options: &CheckOptions) -> Result<ExitCode, String> {
    if cfg!(debug_assertions) {
        return Err(
            "this is a debug build: its counts say nothing about the release hot path; \
             build it with .ci/bench-gate (release settings)"
                .into(),
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let valgrind_version = tool_version(&options.valgrind).ok_or_else(|| {
        format!(
            "cannot run `{} --version`: install valgrind (apt-get install -y valgrind)",
            options.valgrind.display()
        )
    })?;
    let out_dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("stentor-gate-{}", std::process::id())),
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;

    let old_baseline = match std::fs::read_to_string(&options.baseline_path) {
        Ok(text) => gate::parse_baseline(&text)
            .map_err(|e| format!("{}: {e}", options.baseline_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && options.update => {
            gate::Baseline::default()
        }
        Err(e) => {
            return Err(format!(
                "cannot read {}: {e}",
                options.baseline_path.display()
            ))
        }
    };

    let selected: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| options.only.is_empty() || options.only.iter().any(|n| n == w.name))
        .collect();
    let mut measured = Vec::with_capacity(selected.len());
    for workload in selected {
        let started = Instant::now();
        let instructions = measure(&options.valgrind, &exe, workload, &out_dir)?;
        eprintln!(
            "stentor-gate: {:<32} {:>14} Ir  ({:.1}s under callgrind)",
            workload.name,
            gate::group_thousands(instructions),
            started.elapsed().as_secs_f64()
        );
        measured.push(Measurement {
            name: workload.name.to_string(),
            instructions,
            iterations: workload.iterations,
        });
    }

    let mut environment = vec![
        (
            "rustc".to_string(),
            env!("STENTOR_BENCH_RUSTC_VERSION").to_string(),
        ),
        ("valgrind".to_string(), valgrind_version),
        ("cpu".to_string(), cpu_model()),
    ];
    if let Some(note) = &options.build_note {
        environment.push(("build".to_string(), note.clone()));
    }

    // With --only, compare just those: the others were not measured on
    // purpose, not lost.
    let baseline = if options.only.is_empty() {
        old_baseline.clone()
    } else {
        gate::Baseline {
            environment: old_baseline.environment.clone(),
            entries: old_baseline
                .entries
                .iter()
                .filter(|e| options.only.contains(&e.name))
                .cloned()
                .collect(),
        }
    };
    let rows = gate::compare(&baseline, &measured);
    println!();
    print!("{}", gate::render_table(&rows));
    println!();
    print_environment_drift(&old_baseline, &environment);

    if options.update {
        let entries = gate::updated_entries(&old_baseline, &measured);
        let text = gate::format_baseline(&environment, &entries);
        std::fs::write(&options.baseline_path, text)
            .map_err(|e| format!("cannot write {}: {e}", options.baseline_path.display()))?;
        println!(
            "baseline updated: {} ({} workloads). Commit it with a message that says why.",
            options.baseline_path.display(),
            entries.len()
        );
        return Ok(ExitCode::SUCCESS);
    }

    let failed: Vec<&gate::Row> = rows.iter().filter(|r| r.verdict.fails()).collect();
    if rows.iter().any(|r| r.verdict == gate::Verdict::Improved) {
        println!(
            "note: a workload got faster beyond its threshold; if that is the intended effect \
             of this change, run `just bench-gate --update` and commit the baseline so the gate \
             guards the new level."
        );
    }
    if failed.is_empty() {
        println!("bench gate: PASS ({} workloads)", rows.len());
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<&str> = failed.iter().map(|r| r.name.as_str()).collect();
    println!("bench gate: FAIL: {}", names.join(", "));
    for row in failed {
        match row.verdict {
            gate::Verdict::Regressed => println!(
                "  {}: more instructions than the baseline allows; see where with\n    \
                 callgrind_annotate {}",
                row.name,
                callgrind_out_file(&out_dir, &row.name).display()
            ),
            gate::Verdict::NoBaseline => println!(
                "  {}: new workload without a baseline line; add it with `just bench-gate --update`",
                row.name
            ),
            _ => println!(
                "  {}: baseline line for a workload that no longer exists; \
                 `just bench-gate --update` drops it",
                row.name
            ),
        }
    }
    println!(
        "If the change in cost is intended, update the baseline on purpose: \
         docs/measurements/benchmarks.md, \"Updating a baseline\"."
    );
    Ok(ExitCode::from(EXIT_REGRESSED))
}

/// Run one workload under callgrind, counting only inside
/// `stentor_gate_measure`, and return the instruction count.
fn measure(
    valgrind: &Path,
    exe: &Path,
    workload: &Workload,
    out_dir: &Path,
) -> Result<u64, String> {
    let out_file = out_dir.join(format!(
        "{}.callgrind.out",
        workload.name.replace('/', "__")
    ));
    let mut child = Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg("--quiet")
        // Count nothing until the measured function is entered, and stop on
        // its return: setup and process start-up are not part of the number.
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={}", workloads::TOGGLE_PATTERN))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .arg("run")
        .arg(workload.name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", valgrind.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > VALGRIND_RUN_TIMEOUT => {
                // Our own child, by handle: never anything else.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{}: valgrind did not finish within {}s",
                    workload.name,
                    VALGRIND_RUN_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(VALGRIND_POLL_INTERVAL),
            Err(e) => return Err(format!("{}: waiting for valgrind: {e}", workload.name)),
        }
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        return Err(format!(
            "{}: valgrind exited with {status}:\n{stderr}",
            workload.name
        ));
    }
    let text = std::fs::read_to_string(&out_file)
        .map_err(|e| format!("cannot read {}: {e}", out_file.display()))?;
    let instructions = gate::parse_callgrind_totals(&text)
        .map_err(|e| format!("{}: {}: {e}", workload.name, out_file.display()))?;
    if instructions == 0 {
        return Err(format!(
            "{}: callgrind counted 0 instructions: no function matched `{}` \
             (was `stentor_gate_measure` inlined or renamed?)",
            workload.name,
            workloads::TOGGLE_PATTERN
        ));
    }
    Ok(instructions)
}

/// Where callgrind writes a workload's profile (`/` in names becomes `__`).
fn callgrind_out_file(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join(format!("{}.callgrind.out", name.replace('/', "__")))
}

fn tool_version(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The CPU model: glibc picks its `memcpy`/`memchr` by CPU features, so two
/// machines can count differently for the same binary.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Say when this run's toolchain, valgrind or CPU differs from the
/// baseline's: counts may then differ for reasons outside our code.
fn print_environment_drift(baseline: &gate::Baseline, current: &[(String, String)]) {
    for (key, value) in current {
        if let Some(recorded) = baseline.environment_value(key) {
            if recorded != value {
                println!(
                    "warning: {key} differs from the baseline's ({recorded:?} then, {value:?} now): \
                     counts can move for that reason alone"
                );
            }
        }
    }
}
