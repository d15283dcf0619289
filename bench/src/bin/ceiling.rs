//! stentor-ceiling: the machine's loopback `send()` ceiling.
//!
//! ```text
//! stentor-ceiling [--pairs N] [--bytes B] [--coalesce E] [--seconds S]
//!                 [--sender-threads T] [--processes P] [--json]
//! ```
//!
//! Opens N loopback TCP pairs, then for S seconds sends, on every pair in
//! turn, one `send()` carrying E events of B bytes (E = 1: one send per
//! event, what a server without coalescing does), while a child process
//! drains the other ends with epoll. Reports sends/s, events/s, bytes/s and
//! CPU per send (`getrusage` of both processes over the sending phase).
//! That is the most a server could deliver here if it did nothing but send:
//! `just bench` and `docs/measurements/performance.md` show stentor as a fraction of it.
//!
//! The receiving side runs in a child process (`stentor-ceiling receive`,
//! internal) so each process holds N descriptors, not 2N, under the
//! per-process cap. Beyond one process's limit (19,900 pairs here) the run
//! spreads over P copies of itself, each with its own receiver, which start
//! sending together and whose figures are added up. Every phase has a deadline; the child is killed by its
//! PID if it does not finish.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stentor_bench::ceiling::{self, SendTally};

const USAGE: &str = "\
usage: stentor-ceiling [--pairs N] [--bytes B] [--coalesce E] [--seconds S]
                       [--sender-threads T] [--processes P] [--json]
  N loopback TCP pairs (default 1000, at most the descriptor limit - 100),
  one send() of E events x B bytes per pair per pass (default 1 x 128),
  for S seconds (default 5), from T sender threads (default 1) in each of
  P sending processes (default: as many as the descriptor limit needs, each
  process and its receiver hold at most the limit - 100 pairs).
  --json prints one JSON object instead of the summary.";

/// Longest run accepted (a typo must not hold the machine for an hour).
const SECONDS_MAX: f64 = 600.0;
const COALESCE_MAX: u32 = 1024;
const BYTES_MAX: u32 = 1 << 20;
const SENDER_THREADS_MAX: usize = 64;
/// Sending processes one run may spread over (each holds ≤ nofile − 100 pairs).
const PROCESSES_MAX: usize = 64;
/// Time the child gets to connect every pair.
const CONNECT_DEADLINE: Duration = Duration::from_secs(120);
/// Time the child gets to drain and report after `stop`.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// The receiver is drained once nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

struct Options {
    pairs: u32,
    bytes: u32,
    coalesce: u32,
    seconds: f64,
    sender_threads: usize,
    json: bool,
    /// Sending processes; 0 = as many as the descriptor limit requires.
    processes: usize,
    /// Internal (a spread run's child): report `ready` after connecting and
    /// wait for `go` on stdin before sending, so all children send together.
    wait_go: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("receive") {
        return match receive_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("stentor-ceiling receive: {message}");
                ExitCode::from(1)
            }
        };
    }
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("stentor-ceiling: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(report) => {
            if options.json {
                println!("{report}");
            } else {
                print_summary(&report);
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("stentor-ceiling: {message}");
            ExitCode::from(1)
        }
    }
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        pairs: 1000,
        bytes: 128,
        coalesce: 1,
        seconds: 5.0,
        sender_threads: 1,
        json: false,
        processes: 0,
        wait_go: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--json" {
            options.json = true;
            continue;
        }
        if flag == "--wait-go" {
            options.wait_go = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_: std::num::ParseIntError| format!("{flag}: not a number: {value:?}");
        match flag.as_str() {
            "--pairs" => options.pairs = value.parse().map_err(bad)?,
            "--bytes" => options.bytes = value.parse().map_err(bad)?,
            "--coalesce" => options.coalesce = value.parse().map_err(bad)?,
            "--seconds" => {
                options.seconds = value
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {value:?}"))?
            }
            "--sender-threads" => options.sender_threads = value.parse().map_err(bad)?,
            "--processes" => options.processes = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    if !(1..=BYTES_MAX).contains(&options.bytes) {
        return Err(format!("--bytes must be in 1..={BYTES_MAX}"));
    }
    if !(1..=COALESCE_MAX).contains(&options.coalesce) {
        return Err(format!("--coalesce must be in 1..={COALESCE_MAX}"));
    }
    if !(options.seconds > 0.0 && options.seconds <= SECONDS_MAX) {
        return Err(format!("--seconds must be in (0, {SECONDS_MAX}]"));
    }
    if !(1..=SENDER_THREADS_MAX).contains(&options.sender_threads) {
        return Err(format!(
            "--sender-threads must be in 1..={SENDER_THREADS_MAX}"
        ));
    }
    if options.processes > PROCESSES_MAX {
        return Err(format!("--processes must be in 0..={PROCESSES_MAX}"));
    }
    Ok(options)
}

/// Kills the child by its PID when dropped before it was waited for, so no
/// error path leaves a receiver behind.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(options: &Options) -> Result<serde_json::Value, String> {
    let nofile = ceiling::raise_nofile();
    let pairs_max = ceiling::pairs_max(nofile);
    let processes = match options.processes {
        0 => usize::try_from(u64::from(options.pairs).div_ceil(pairs_max.max(1)))
            .unwrap_or(usize::MAX),
        p => p,
    };
    if processes > 1 && !options.wait_go {
        return run_spread(options, processes);
    }
    if u64::from(options.pairs) > pairs_max {
        return Err(format!(
            "--pairs {} needs {} descriptors in each process; the limit is {nofile} (at most {pairs_max} pairs)",
            options.pairs,
            u64::from(options.pairs) + ceiling::FDS_RESERVED
        ));
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let backlog = i32::try_from(options.pairs).unwrap_or(i32::MAX).max(128);
    ceiling::configure_sender_listener(listener.as_raw_fd(), backlog)
        .map_err(|e| format!("listener options: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let server = match listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
    {
        SocketAddr::V4(addr) => addr,
        SocketAddr::V6(addr) => return Err(format!("expected an IPv4 listener, got {addr}")),
    };

    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let salt = (std::process::id() % 250) as u8;
    let child = Command::new(exe)
        .args(["receive", "--connect", &server.to_string()])
        .args([
            "--pairs",
            &options.pairs.to_string(),
            "--salt",
            &salt.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning the receiver: {e}"))?;
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().ok_or("receiver vanished")?;
    let mut to_child = child.stdin.take().ok_or("receiver has no stdin")?;
    let from_child = child.stdout.take().ok_or("receiver has no stdout")?;
    let lines = spawn_line_reader(from_child);

    // Accept every pair while the child connects.
    let mut senders = Vec::with_capacity(options.pairs as usize);
    let deadline = Instant::now() + CONNECT_DEADLINE;
    while senders.len() < options.pairs as usize {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(true)
                    .map_err(|e| format!("accepted socket: {e}"))?;
                senders.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(format!(
                        "only {} of {} pairs connected in {CONNECT_DEADLINE:?}",
                        senders.len(),
                        options.pairs
                    ));
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the receiver exited while connecting ({status})"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    let ready = lines
        .recv_timeout(CONNECT_DEADLINE)
        .map_err(|_| "the receiver did not report ready".to_string())?;
    if !ready.starts_with("ready") {
        return Err(format!("unexpected line from the receiver: {ready:?}"));
    }

    if options.wait_go {
        // A spread run's child: everyone connects first, then all send together.
        println!("ready");
        std::io::stdout()
            .flush()
            .map_err(|e| format!("stdout: {e}"))?;
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("waiting for go: {e}"))?;
        if line.trim() != "go" {
            return Err(format!("expected go, got {line:?}"));
        }
    }

    // The sending phase.
    let message = vec![b'x'; (options.bytes * options.coalesce) as usize];
    let fds: Vec<RawFd> = senders.iter().map(|s| s.as_raw_fd()).collect();
    tell(&mut to_child, "go")?;
    let jiffies_before = ceiling::machine_jiffies();
    let cpu_before = ceiling::cpu_seconds(libc::RUSAGE_SELF);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(options.seconds);
    let chunk = fds.len().div_ceil(options.sender_threads);
    let mut tally = SendTally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = fds
            .chunks(chunk)
            .map(|part| {
                let message = &message;
                scope.spawn(move || ceiling::send_loop(part, message, end))
            })
            .collect();
        for handle in handles {
            if let Ok(part) = handle.join() {
                tally.add(part);
            }
        }
    });
    let elapsed_s = started.elapsed().as_secs_f64();
    let sender_cpu_s = ceiling::cpu_seconds(libc::RUSAGE_SELF) - cpu_before;
    let machine_busy = ceiling::busy_share(jiffies_before, ceiling::machine_jiffies());
    tell(&mut to_child, "stop")?;

    let done = lines
        .recv_timeout(DRAIN_DEADLINE + Duration::from_secs(5))
        .map_err(|_| "the receiver did not report".to_string())?;
    let receiver: serde_json::Value =
        serde_json::from_str(&done).map_err(|e| format!("receiver report {done:?}: {e}"))?;
    drop(to_child);
    if let Some(mut child) = guard.0.take() {
        let _ = child.wait();
    }
    drop(senders);

    let received_bytes = receiver["bytes"].as_u64().unwrap_or(0);
    let receiver_cpu_s = receiver["cpu_s"].as_f64().unwrap_or(0.0);
    let event_bytes = u64::from(options.bytes);
    let events = tally.bytes / event_bytes;
    let per_send_us = |cpu: f64| {
        if tally.sends > 0 {
            cpu * 1e6 / tally.sends as f64
        } else {
            0.0
        }
    };
    Ok(json!({
        "pairs": options.pairs,
        "event_bytes": options.bytes,
        "events_per_send": options.coalesce,
        "sender_threads": options.sender_threads,
        "seconds": elapsed_s,
        "sends": tally.sends,
        "sends_per_s": tally.sends as f64 / elapsed_s,
        "events_per_s": events as f64 / elapsed_s,
        "bytes_per_s": tally.bytes as f64 / elapsed_s,
        "would_block": tally.would_block,
        "partial_sends": tally.partial,
        "send_errors": tally.errors,
        "passes": tally.rounds,
        "bytes_sent": tally.bytes,
        "bytes_received": received_bytes,
        "sender_cpu_s": sender_cpu_s,
        "receiver_cpu_s": receiver_cpu_s,
        "cpu_us_per_send": per_send_us(sender_cpu_s),
        "cpu_us_per_send_both_sides": per_send_us(sender_cpu_s + receiver_cpu_s),
        "machine_cpu_busy": machine_busy,
    }))
}

/// More pairs than one process may hold: run `processes` copies of this
/// tool (each with its own receiving child) on a share of the pairs each,
/// start their sending phases together, and add their figures up.
fn run_spread(options: &Options, processes: usize) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let total = options.pairs as usize;
    let mut guards = Vec::with_capacity(processes);
    let mut inputs = Vec::with_capacity(processes);
    let mut outputs = Vec::with_capacity(processes);
    for i in 0..processes {
        let share = total / processes + usize::from(i < total % processes);
        let mut child = Command::new(&exe)
            .args([
                "--pairs",
                &share.to_string(),
                "--bytes",
                &options.bytes.to_string(),
            ])
            .args(["--coalesce", &options.coalesce.to_string()])
            .args(["--seconds", &options.seconds.to_string()])
            .args(["--sender-threads", &options.sender_threads.to_string()])
            .args(["--processes", "1", "--json", "--wait-go"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning sender process {i}: {e}"))?;
        inputs.push(child.stdin.take().ok_or("sender has no stdin")?);
        outputs.push(spawn_line_reader(
            child.stdout.take().ok_or("sender has no stdout")?,
        ));
        guards.push(ChildGuard(Some(child)));
    }
    for (i, lines) in outputs.iter().enumerate() {
        let line = lines
            .recv_timeout(CONNECT_DEADLINE + Duration::from_secs(10))
            .map_err(|_| format!("sender process {i} did not report ready"))?;
        if line != "ready" {
            return Err(format!("sender process {i}: unexpected {line:?}"));
        }
    }
    let jiffies_before = ceiling::machine_jiffies();
    for input in &mut inputs {
        tell(input, "go")?;
    }
    let mut parts = Vec::with_capacity(processes);
    let wait = Duration::from_secs_f64(options.seconds) + DRAIN_DEADLINE + Duration::from_secs(20);
    for (i, lines) in outputs.iter().enumerate() {
        let line = lines
            .recv_timeout(wait)
            .map_err(|_| format!("sender process {i} did not report"))?;
        let part: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("sender process {i} report {line:?}: {e}"))?;
        parts.push(part);
    }
    let machine_busy = ceiling::busy_share(jiffies_before, ceiling::machine_jiffies());
    drop(inputs);
    for mut guard in guards {
        if let Some(mut child) = guard.0.take() {
            let _ = child.wait();
        }
    }
    let sum = |k: &str| {
        parts
            .iter()
            .map(|p| p[k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    let max = |k: &str| {
        parts
            .iter()
            .map(|p| p[k].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max)
    };
    let sends = sum("sends");
    let per_send_us = |cpu: f64| if sends > 0.0 { cpu * 1e6 / sends } else { 0.0 };
    Ok(json!({
        "pairs": options.pairs,
        "processes": processes,
        "event_bytes": options.bytes,
        "events_per_send": options.coalesce,
        "sender_threads": options.sender_threads,
        "seconds": max("seconds"),
        "sends": sends as u64,
        // The processes sent concurrently: their rates add up.
        "sends_per_s": sum("sends_per_s"),
        "events_per_s": sum("events_per_s"),
        "bytes_per_s": sum("bytes_per_s"),
        "would_block": sum("would_block") as u64,
        "partial_sends": sum("partial_sends") as u64,
        "send_errors": sum("send_errors") as u64,
        "passes": sum("passes") as u64,
        "bytes_sent": sum("bytes_sent") as u64,
        "bytes_received": sum("bytes_received") as u64,
        "sender_cpu_s": sum("sender_cpu_s"),
        "receiver_cpu_s": sum("receiver_cpu_s"),
        "cpu_us_per_send": per_send_us(sum("sender_cpu_s")),
        "cpu_us_per_send_both_sides": per_send_us(sum("sender_cpu_s") + sum("receiver_cpu_s")),
        "machine_cpu_busy": machine_busy,
    }))
}

fn tell(to_child: &mut ChildStdin, line: &str) -> Result<(), String> {
    writeln!(to_child, "{line}")
        .and_then(|_| to_child.flush())
        .map_err(|e| format!("telling the receiver {line:?}: {e}"))
}

fn spawn_line_reader(from_child: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_child).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn print_summary(report: &serde_json::Value) {
    let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
    println!(
        "pairs={} event_bytes={} events_per_send={} seconds={:.2}",
        report["pairs"],
        report["event_bytes"],
        report["events_per_send"],
        f("seconds")
    );
    println!(
        "sends/s={:.0} events/s={:.0} MB/s={:.1} would_block={} partial={} errors={}",
        f("sends_per_s"),
        f("events_per_s"),
        f("bytes_per_s") / 1e6,
        report["would_block"],
        report["partial_sends"],
        report["send_errors"]
    );
    println!(
        "cpu: sender {:.2} s, receiver {:.2} s; per send {:.2} µs (sender), {:.2} µs (both sides); machine busy {:.0}%",
        f("sender_cpu_s"),
        f("receiver_cpu_s"),
        f("cpu_us_per_send"),
        f("cpu_us_per_send_both_sides"),
        f("machine_cpu_busy") * 100.0
    );
}

// --- the receiving child -------------------------------------------------

const PHASE_WAIT: u8 = 0;
const PHASE_GO: u8 = 1;
const PHASE_STOP: u8 = 2;

fn receive_main(args: &[String]) -> Result<(), String> {
    let mut server: Option<SocketAddrV4> = None;
    let mut pairs: u32 = 0;
    let mut salt: u8 = 0;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--connect" => server = Some(value.parse().map_err(|e| format!("--connect: {e}"))?),
            "--pairs" => pairs = value.parse().map_err(|e| format!("--pairs: {e}"))?,
            "--salt" => salt = value.parse().map_err(|e| format!("--salt: {e}"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let server = server.ok_or("--connect is required")?;
    ceiling::raise_nofile();
    let mut fds = Vec::with_capacity(pairs as usize);
    for i in 0..pairs {
        fds.push(
            ceiling::connect_from(ceiling::source_of(i, salt), server)
                .map_err(|e| format!("connecting pair {i}: {e}"))?,
        );
    }
    let mut receiver = ceiling::Receiver::new(fds).map_err(|e| format!("epoll: {e}"))?;

    // Commands arrive on stdin; EOF (the parent is gone) counts as stop.
    let phase = Arc::new(AtomicU8::new(PHASE_WAIT));
    let phase_writer = Arc::clone(&phase);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("go") => phase_writer.store(PHASE_GO, Ordering::Release),
                Ok("stop") | Err(_) => break,
                Ok(_) => {}
            }
        }
        phase_writer.store(PHASE_STOP, Ordering::Release);
    });
    println!("ready {}", receiver.sockets());
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;

    let mut cpu_start = None;
    loop {
        let now_phase = phase.load(Ordering::Acquire);
        if now_phase == PHASE_GO && cpu_start.is_none() {
            cpu_start = Some(ceiling::cpu_seconds(libc::RUSAGE_SELF));
        }
        if now_phase == PHASE_STOP {
            break;
        }
        receiver
            .poll(POLL_INTERVAL)
            .map_err(|e| format!("epoll_wait: {e}"))?;
    }
    // Drain what is still in flight, then report.
    let drain_end = Instant::now() + DRAIN_DEADLINE;
    while Instant::now() < drain_end {
        if receiver
            .poll(DRAIN_QUIET)
            .map_err(|e| format!("epoll_wait: {e}"))?
            == 0
        {
            break;
        }
    }
    let cpu_s = ceiling::cpu_seconds(libc::RUSAGE_SELF) - cpu_start.unwrap_or(0.0);
    println!(
        "{}",
        json!({"bytes": receiver.bytes, "cpu_s": cpu_s, "eofs": receiver.eofs})
    );
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}
