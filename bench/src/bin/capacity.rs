//! stentor-capacity: the capacity-planning sweep behind `just bench`.
//!
//! ```text
//! stentor-capacity [--quick] [--subscribers 1000,10000] [--rates 10,100,400]
//!                  [--payloads 128] [--duration-s S] [--max-p99-ms MS] [--max-loss R]
//!                  [--ceiling-seconds S] [--out-dir DIR] [--bin-dir DIR] [--server-arg ARG]...
//! ```
//!
//! For each payload and subscriber count: starts a fresh stentor on
//! loopback (port 0), runs stentor-loadgen at increasing event rates until
//! one misses the SLO, samples the server's RSS and CPU, then runs
//! stentor-ceiling over the same number of sockets. Writes
//! `report.md`, `report.html` and `report.json` to the output directory
//! (`target/capacity`). Every child process is killed by its PID when the
//! sweep ends, on error too. `docs/measurements/capacity-planning.md` explains the report.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stentor_bench::capacity::{self, Ceiling, Report, Run, Slo};
use stentor_bench::ceiling as machine;

const USAGE: &str = "\
usage: stentor-capacity [--quick] [--subscribers N,N..] [--rates R,R..] [--payloads B,B..]
                        [--duration-s S] [--max-p99-ms MS] [--max-loss RATIO]
                        [--ceiling-seconds S] [--out-dir DIR] [--bin-dir DIR]
                        [--pub-inflight N] [--min-published RATIO]
                        [--server-arg ARG]...
Runs stentor + stentor-loadgen over the sweep, finds the highest rate meeting
the SLO per (subscribers, payload), runs stentor-ceiling for the same socket
counts, writes DIR/report.{md,html,json} (default target/capacity).
The publisher is sequential by default (--pub-inflight 1: one request in flight,
waits for each answer); a rate counts only if >= --min-published (0.99) of its
events were accepted, so the max rate is what a sequential publisher sustains.
Full sweep: a few minutes; --quick: about one minute. See docs/measurements/capacity-planning.md.";

/// The full sweep: subscriber counts a 2-core box with a 20000-descriptor
/// cap can still compare with its ceiling (one process holds ≤ 19,900 pairs).
const FULL_SUBSCRIBERS: &[u32] = &[1000, 5000, 10_000, 19_000];
const FULL_RATES: &[f64] = &[10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];
const FULL_PAYLOADS: &[u32] = &[128, 1024];
const FULL_DURATION_S: f64 = 5.0;
const FULL_CEILING_S: f64 = 4.0;
const QUICK_SUBSCRIBERS: &[u32] = &[1000, 10_000];
const QUICK_RATES: &[f64] = &[10.0, 30.0, 100.0, 300.0, 1000.0];
const QUICK_PAYLOADS: &[u32] = &[128];
const QUICK_DURATION_S: f64 = 3.0;
const QUICK_CEILING_S: f64 = 2.0;

/// Bounds on what the flags may ask for, so a typo cannot run for hours.
const SWEEP_POINTS_MAX: usize = 32;
const DURATION_S_MAX: f64 = 300.0;
/// loadgen's own ramp rate (its default): the ramp lasts subscribers ÷ this.
const CONNECT_PER_S: f64 = 10_000.0;
/// Slack on top of a loadgen run's expected time before it is killed.
const LOADGEN_SLACK: Duration = Duration::from_secs(40);
const SERVER_START_DEADLINE: Duration = Duration::from_secs(15);
const SERVER_STOP_DEADLINE: Duration = Duration::from_secs(10);
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of a `/metrics` answer read at most.
const METRICS_BYTES_MAX: u64 = 1 << 20;

struct Options {
    mode: &'static str,
    subscribers: Vec<u32>,
    rates: Vec<f64>,
    payloads: Vec<u32>,
    duration_s: f64,
    ceiling_s: f64,
    slo: Slo,
    out_dir: PathBuf,
    bin_dir: Option<PathBuf>,
    server_args: Vec<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("stentor-capacity: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match sweep(&options) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("stentor-capacity: {message}");
            ExitCode::from(1)
        }
    }
}

fn list<T: std::str::FromStr>(flag: &str, value: &str) -> Result<Vec<T>, String> {
    let items: Result<Vec<T>, _> = value.split(',').map(|v| v.trim().parse::<T>()).collect();
    let items =
        items.map_err(|_| format!("{flag}: not a comma-separated list of numbers: {value:?}"))?;
    if items.is_empty() || items.len() > SWEEP_POINTS_MAX {
        return Err(format!("{flag}: 1..={SWEEP_POINTS_MAX} values"));
    }
    Ok(items)
}

fn number(flag: &str, value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{flag}: not a non-negative number: {value:?}"))
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        mode: if quick { "quick" } else { "full" },
        subscribers: (if quick {
            QUICK_SUBSCRIBERS
        } else {
            FULL_SUBSCRIBERS
        })
        .to_vec(),
        rates: (if quick { QUICK_RATES } else { FULL_RATES }).to_vec(),
        payloads: (if quick { QUICK_PAYLOADS } else { FULL_PAYLOADS }).to_vec(),
        duration_s: if quick {
            QUICK_DURATION_S
        } else {
            FULL_DURATION_S
        },
        ceiling_s: if quick {
            QUICK_CEILING_S
        } else {
            FULL_CEILING_S
        },
        slo: Slo {
            max_p99_ms: 100.0,
            max_loss: 0.0,
            min_published: 0.99,
            pub_inflight: 1,
        },
        out_dir: PathBuf::from("target/capacity"),
        bin_dir: None,
        server_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err("help".into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--subscribers" => o.subscribers = list(flag, value)?,
            "--rates" => o.rates = list(flag, value)?,
            "--payloads" => o.payloads = list(flag, value)?,
            "--duration-s" => o.duration_s = number(flag, value)?,
            "--ceiling-seconds" => o.ceiling_s = number(flag, value)?,
            "--max-p99-ms" => o.slo.max_p99_ms = number(flag, value)?,
            "--max-loss" => o.slo.max_loss = number(flag, value)?,
            "--min-published" => o.slo.min_published = number(flag, value)?.min(1.0),
            "--pub-inflight" => {
                o.slo.pub_inflight = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| format!("{flag}: an integer in 1..=10000: {value:?}"))?
            }
            "--out-dir" => o.out_dir = value.into(),
            "--bin-dir" => o.bin_dir = Some(value.into()),
            "--server-arg" => o.server_args.push(value.clone()),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(o.duration_s > 0.0 && o.duration_s <= DURATION_S_MAX) {
        return Err(format!("--duration-s must be in (0, {DURATION_S_MAX}]"));
    }
    if !(o.ceiling_s > 0.0 && o.ceiling_s <= DURATION_S_MAX) {
        return Err(format!(
            "--ceiling-seconds must be in (0, {DURATION_S_MAX}]"
        ));
    }
    if o.subscribers.contains(&0) || o.payloads.contains(&0) || o.rates.iter().any(|r| *r <= 0.0) {
        return Err("subscribers, rates and payloads must be positive".into());
    }
    o.rates.sort_by(|a, b| a.total_cmp(b));
    Ok(o)
}

// --- child processes --------------------------------------------------------

/// A child that is killed by its PID when dropped, whatever path drops it.
struct Proc {
    child: Option<Child>,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Poll until it exits or `deadline` passes; kill it then.
    fn wait_until(&mut self, deadline: Instant) -> Result<i32, String> {
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} already reaped", self.name));
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Ok(status.code().unwrap_or(-1));
                }
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.child = None;
                    return Err(format!(
                        "{} did not finish in time and was killed",
                        self.name
                    ));
                }
                Ok(None) => std::thread::sleep(SAMPLE_INTERVAL),
                Err(e) => return Err(format!("waiting for {}: {e}", self.name)),
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited by the deadline.
    fn stop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: signalling our own child by its PID.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let _ = self.wait_until(Instant::now() + SERVER_STOP_DEADLINE);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Bins {
    stentor: PathBuf,
    loadgen: PathBuf,
    ceiling: PathBuf,
}

fn find_bins(options: &Options) -> Result<Bins, String> {
    let dir = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("current_exe: {e}"))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no directory for the current executable")?,
    };
    let bins = Bins {
        stentor: dir.join("stentor"),
        loadgen: dir.join("stentor-loadgen"),
        ceiling: dir.join("stentor-ceiling"),
    };
    for path in [&bins.stentor, &bins.loadgen, &bins.ceiling] {
        if !path.is_file() {
            return Err(format!(
                "{} is missing: build with `cargo build --release -p stentor -p stentor-loadgen -p stentor-bench` (just bench does)",
                path.display()
            ));
        }
    }
    Ok(bins)
}

struct Server {
    proc: Proc,
    port: u16,
}

fn start_server(bins: &Bins, options: &Options, log_path: &Path) -> Result<Server, String> {
    let log = File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let child = Command::new(&bins.stentor)
        .args(["--listen", "127.0.0.1:0", "--heartbeat-ms", "3600000"])
        .args(&options.server_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bins.stentor.display()))?;
    let mut proc = Proc {
        child: Some(child),
        name: "stentor",
    };
    let deadline = Instant::now() + SERVER_START_DEADLINE;
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        if let Some(port) = listening_port(&text) {
            return Ok(Server { proc, port });
        }
        if let Some(child) = proc.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                proc.child = None;
                return Err(format!(
                    "stentor exited at start ({status}); its log ({}):\n{}",
                    log_path.display(),
                    text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "stentor logged no addr= in {SERVER_START_DEADLINE:?} ({})",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port from the startup line: `msg="listening" addr=127.0.0.1:PORT ...`.
fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains("listening"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, seconds.
fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / ticks)
}

/// `GET /metrics` → the value of `stentor_<name>`.
fn metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(METRICS_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(METRICS_TIMEOUT)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream
        .take(METRICS_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Samples the server while loadgen runs: peak RSS, and the lowest RSS
/// while every subscriber is connected.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    connected_kib: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32, port: u16, subscribers: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let connected_kib = Arc::new(AtomicU64::new(0));
        let (s, p, c) = (
            Arc::clone(&stop),
            Arc::clone(&peak_kib),
            Arc::clone(&connected_kib),
        );
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                let open = metrics(port).and_then(|m| metric(&m, "stentor_connections_open"));
                // The publisher's and this sampler's connections are open too.
                if open.is_some_and(|n| n >= u64::from(subscribers)) {
                    // The lowest RSS while every subscriber is connected:
                    // right after the connection burst the allocator still
                    // holds the requests' transient memory (measured here:
                    // 36 MB at the burst, 26 MB two seconds later for 10k),
                    // which it returns within a second or two.
                    if let Some(rss) = rss_kib(pid) {
                        let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                            Some(if old == 0 { rss } else { old.min(rss) })
                        });
                    }
                }
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        });
        Sampler {
            stop,
            peak_kib,
            connected_kib,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (u64, Option<u64>) {
        self.halt();
        let connected = self.connected_kib.load(Ordering::Relaxed);
        (
            self.peak_kib.load(Ordering::Relaxed),
            (connected > 0).then_some(connected),
        )
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Sampler {
    /// An error path that never calls `finish` still stops the thread.
    fn drop(&mut self) {
        self.halt();
    }
}

// --- the sweep --------------------------------------------------------------

fn one_run(
    bins: &Bins,
    options: &Options,
    subscribers: u32,
    rate: f64,
    payload: u32,
    n: usize,
) -> Run {
    let mut run = Run {
        subscribers,
        rate,
        payload_bytes: payload,
        duration_s: options.duration_s,
        ..Run::default()
    };
    if let Err(e) = measure_run(bins, options, &mut run, n) {
        run.error = Some(e);
        run.slo_met = false;
    }
    run
}

fn measure_run(bins: &Bins, options: &Options, run: &mut Run, n: usize) -> Result<(), String> {
    let logs = options.out_dir.join("logs");
    let tag = format!(
        "{n:02}-{}subs-{}evs-{}B",
        run.subscribers, run.rate, run.payload_bytes
    );
    let mut server = start_server(bins, options, &logs.join(format!("{tag}-server.log")))?;
    let pid = server.proc.pid();
    run.rss_before_kib = rss_kib(pid).unwrap_or(0);
    let cpu_before = process_cpu_s(pid).unwrap_or(0.0);
    let json_path = logs.join(format!("{tag}-loadgen.json"));
    let loadgen_log = File::create(logs.join(format!("{tag}-loadgen.log")))
        .map_err(|e| format!("loadgen log: {e}"))?;
    let loadgen_err = loadgen_log
        .try_clone()
        .map_err(|e| format!("loadgen log: {e}"))?;
    let sampler = Sampler::start(pid, server.port, run.subscribers);
    let child = Command::new(&bins.loadgen)
        .arg("run")
        .args(["--url", &format!("http://127.0.0.1:{}", server.port)])
        .args(["--subscribers", &run.subscribers.to_string()])
        .args(["--rate", &run.rate.to_string()])
        .args(["--duration-s", &options.duration_s.to_string()])
        .args(["--payload-bytes", &run.payload_bytes.to_string()])
        .args(["--max-p99-ms", &options.slo.max_p99_ms.to_string()])
        .args(["--max-loss", &options.slo.max_loss.to_string()])
        .args(["--min-published", &options.slo.min_published.to_string()])
        .args(["--pub-inflight", &options.slo.pub_inflight.to_string()])
        .arg("--json")
        .arg(&json_path)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(loadgen_log)
        .stderr(loadgen_err)
        .spawn()
        .map_err(|e| format!("starting stentor-loadgen: {e}"))?;
    let mut loadgen = Proc {
        child: Some(child),
        name: "stentor-loadgen",
    };
    let expected = Duration::from_secs_f64(
        f64::from(run.subscribers) / CONNECT_PER_S + options.duration_s + 15.0,
    );
    let exit = loadgen.wait_until(Instant::now() + expected + LOADGEN_SLACK);
    let (peak, connected) = sampler.finish();
    run.rss_peak_kib = peak;
    run.rss_connected_kib = connected;
    run.server_cpu_s = process_cpu_s(pid).unwrap_or(0.0) - cpu_before;
    if let Some(text) = metrics(server.port) {
        run.server_sends = metric(&text, "stentor_sends_total").unwrap_or(0);
        run.server_deliveries = metric(&text, "stentor_deliveries_total").unwrap_or(0);
    }
    server.proc.stop();
    run.loadgen_exit = exit?;
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| format!("loadgen wrote no report (exit {}): {e}", run.loadgen_exit))?;
    let j = stentor_loadgen::contract::RunReport::from_json(&text)?;
    let ms = |us: u64| us as f64 / 1000.0;
    run.connected = j.subscribers_connected;
    run.deliveries_expected = j.deliveries_expected;
    run.deliveries_received = j.deliveries_received;
    run.deliveries_per_s = j.deliveries_per_s;
    run.loss_ratio = j.loss_ratio;
    run.p50_ms = ms(j.fast_latency_us.p50);
    run.p99_ms = ms(j.fast_latency_us.p99);
    run.max_ms = ms(j.fast_latency_us.max);
    run.events_scheduled = j.events_scheduled;
    run.events_accepted = j.events_accepted;
    run.publish_rtt_p50_ms = ms(j.publish_round_trip_us.p50);
    run.publish_rtt_p99_ms = ms(j.publish_round_trip_us.p99);
    run.publish_rtt_max_ms = ms(j.publish_round_trip_us.max);
    run.publish_lag_p99_ms = j.publish_lag_ms_p99;
    run.publish_lag_max_ms = j.publish_lag_ms_max;
    run.machine_cpu_busy = j.loadgen.machine_cpu_busy;
    run.warnings = j.warnings;
    run.slo_failures = j.slo.failures;
    run.slo_met = run.loadgen_exit == 0 && j.slo.met;
    if run.server_deliveries > 0 {
        run.server_cpu_us_per_delivery = run.server_cpu_s * 1e6 / run.server_deliveries as f64;
    }
    if run.server_sends > 0 {
        run.events_per_send = run.server_deliveries as f64 / run.server_sends as f64;
    }
    Ok(())
}

fn one_ceiling(bins: &Bins, options: &Options, subscribers: u32, payload: u32) -> Ceiling {
    // As many pairs as subscribers: past one process's descriptor limit
    // stentor-ceiling spreads them over several sending processes itself.
    let pairs = subscribers;
    let mut c = Ceiling {
        subscribers,
        pairs,
        payload_bytes: payload,
        ..Ceiling::default()
    };
    let result = (|| -> Result<serde_json::Value, String> {
        let out_path = options
            .out_dir
            .join("logs")
            .join(format!("ceiling-{subscribers}-{payload}B.json"));
        let out = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let child = Command::new(&bins.ceiling)
            .args([
                "--pairs",
                &pairs.to_string(),
                "--bytes",
                &payload.to_string(),
            ])
            .args(["--seconds", &options.ceiling_s.to_string(), "--json"])
            .stdin(Stdio::null())
            .stdout(out)
            .spawn()
            .map_err(|e| format!("starting stentor-ceiling: {e}"))?;
        let mut proc = Proc {
            child: Some(child),
            name: "stentor-ceiling",
        };
        let deadline =
            Instant::now() + Duration::from_secs_f64(options.ceiling_s) + Duration::from_secs(150);
        let code = proc.wait_until(deadline)?;
        let text = std::fs::read_to_string(&out_path).map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!("stentor-ceiling exited {code}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("stentor-ceiling output: {e}"))
    })();
    match result {
        Ok(j) => {
            let f = |k: &str| j[k].as_f64().unwrap_or(0.0);
            c.sends_per_s = f("sends_per_s");
            c.events_per_s = f("events_per_s");
            c.bytes_per_s = f("bytes_per_s");
            c.cpu_us_per_send = f("cpu_us_per_send");
            c.cpu_us_per_send_both_sides = f("cpu_us_per_send_both_sides");
            c.machine_cpu_busy = j["machine_cpu_busy"].as_f64();
        }
        Err(e) => c.error = Some(e),
    }
    c
}

fn machine_facts() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    vec![
        ("cores".into(), cores.to_string()),
        ("cpu".into(), cpu),
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        (
            "memory".into(),
            mem.trim_start_matches("MemTotal:").trim().to_string(),
        ),
        (
            "descriptors per process".into(),
            machine::raise_nofile().to_string(),
        ),
        (
            "load average at start".into(),
            read("/proc/loadavg").trim().to_string(),
        ),
        (
            "stentor commit".into(),
            command_line("git", &["rev-parse", "--short", "HEAD"]),
        ),
    ]
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn sweep(options: &Options) -> Result<Vec<PathBuf>, String> {
    let bins = find_bins(options)?;
    std::fs::create_dir_all(options.out_dir.join("logs"))
        .map_err(|e| format!("{}: {e}", options.out_dir.display()))?;
    let started = Instant::now();
    let mut report = Report {
        mode: options.mode.into(),
        started_utc: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        machine: machine_facts(),
        slo: options.slo,
        server_args: ["--listen", "127.0.0.1:0", "--heartbeat-ms", "3600000"]
            .iter()
            .map(|s| s.to_string())
            .chain(options.server_args.iter().cloned())
            .collect(),
        runs: Vec::new(),
        ceilings: Vec::new(),
        capacities: Vec::new(),
        notes: Vec::new(),
    };
    let pairs_max = machine::pairs_max(machine::raise_nofile());
    for &payload in &options.payloads {
        for &subscribers in &options.subscribers {
            for &rate in &options.rates {
                let n = report.runs.len() + 1;
                eprintln!(
                    "[{:>4}s] run {n}: {subscribers} subscribers x {rate} ev/s x {payload} B for {} s",
                    started.elapsed().as_secs(),
                    options.duration_s
                );
                let run = one_run(&bins, options, subscribers, rate, payload, n);
                eprintln!(
                    "        deliveries/s {:.0}, p99 {:.1} ms, loss {:.2e}, server {:.2} µs/delivery: SLO {}",
                    run.deliveries_per_s,
                    run.p99_ms,
                    run.loss_ratio,
                    run.server_cpu_us_per_delivery,
                    match (&run.error, run.slo_met) {
                        (Some(e), _) => format!("error ({e})"),
                        (None, true) => "met".into(),
                        (None, false) => "missed".into(),
                    }
                );
                let met = run.slo_met;
                report.runs.push(run);
                if !met {
                    // Higher rates only load the node more: the capacity lies below.
                    break;
                }
            }
            eprintln!(
                "[{:>4}s] ceiling: {} pairs x {payload} B for {} s",
                started.elapsed().as_secs(),
                subscribers,
                options.ceiling_s
            );
            let c = one_ceiling(&bins, options, subscribers, payload);
            if u64::from(subscribers) > pairs_max {
                let note = format!(
                    "the ceiling for {subscribers} subscribers ran in {} sending processes (one holds at most {pairs_max} pairs under its descriptor limit), their rates added: it had more than one sending thread, unlike the smaller counts",
                    u64::from(subscribers).div_ceil(pairs_max.max(1))
                );
                // Once per subscriber count, not once per payload.
                if !report.notes.contains(&note) {
                    report.notes.push(note);
                }
            }
            report.ceilings.push(c);
        }
    }
    report.capacities = capacity::capacities(&report.runs, &report.ceilings);
    report.notes.push(format!(
        "sweep took {} s; logs and each loadgen JSON in {}",
        started.elapsed().as_secs(),
        options.out_dir.join("logs").display()
    ));
    let md = options.out_dir.join("report.md");
    let html = options.out_dir.join("report.html");
    let json = options.out_dir.join("report.json");
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&md, capacity::markdown(&report))?;
    write(&html, capacity::html(&report))?;
    write(
        &json,
        serde_json::to_string_pretty(&report).map_err(|e| format!("report.json: {e}"))?,
    )?;
    Ok(vec![md, html, json])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_startup_line() {
        let log =
            "ts=1 level=info msg=\"listening\" addr=127.0.0.1:40123 workers=2 rings_per_worker=4\n";
        assert_eq!(listening_port(log), Some(40123));
        assert_eq!(listening_port("msg=\"starting\"\n"), None);
    }

    #[test]
    fn metrics_lines_are_read_by_exact_name() {
        let text =
            "# HELP stentor_sends_total x\nstentor_sends_total 12\nstentor_sends_total_bytes 99\n";
        assert_eq!(metric(text, "stentor_sends_total"), Some(12));
        assert_eq!(metric(text, "stentor_deliveries_total"), None);
    }

    #[test]
    fn flags_override_the_sweep_and_bad_ones_are_refused() {
        let args: Vec<String> = [
            "--quick",
            "--subscribers",
            "10,20",
            "--rates",
            "5,1",
            "--max-p99-ms",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_options(&args).expect("valid");
        assert_eq!(o.mode, "quick");
        assert_eq!(o.subscribers, [10, 20]);
        assert_eq!(o.rates, [1.0, 5.0], "rates are swept in ascending order");
        assert_eq!(o.slo.max_p99_ms, 50.0);
        for bad in [
            &["--rates", "x"][..],
            &["--duration-s", "0"],
            &["--subscribers", "0"],
            &["--what", "1"],
        ] {
            let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse_options(&args).is_err(), "{bad:?}");
        }
    }
}
