//! Reconnects per second while a node restarts: the measurement behind
//! `--reconnect-spread-ms` in docs/measurements/performance.md.
//!
//! ```sh
//! cargo build -p stentor && cargo run -p stentor --example restart_storm -- \
//!     target/debug/stentor 1000 0        # spread off: every client waits --retry-ms
//! cargo run -p stentor --example restart_storm -- target/debug/stentor 1000 10000
//! ```
//!
//! It starts the old node on 127.0.0.1 (kernel-chosen port), opens N
//! streams (one thread each, behaving like EventSource: on close, wait the
//! last `retry:` then reconnect), starts the new node on the same address
//! (SO_REUSEPORT), SIGTERMs the old one, and records when each client's
//! reconnect lands. Bounded: N <= 4000, every socket has a timeout, the run
//! stops 40 s after the signal at the latest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CLIENTS_MAX: usize = 4000;
const RUN_AFTER_SIGNAL_MAX: Duration = Duration::from_secs(40);

fn start(bin: &str, listen: &str, spread_ms: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .args(["--listen", listen, "--workers", "1", "--retry-ms", "3000"])
        .args(["--reconnect-spread-ms", spread_ms])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stentor");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(15)) else {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("stentor did not report its address within 15 s");
            std::process::exit(1);
        };
        if line.contains("msg=\"listening\"") || line.contains("msg=listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .expect("addr=")
                .trim_matches('"')
                .parse()
                .expect("an address");
            // Keep draining its stderr so it never blocks.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, addr);
        }
    }
}

fn open(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(RUN_AFTER_SIGNAL_MAX)).ok()?;
    s.write_all(b"GET /events?topic=storm HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    head.starts_with(b"HTTP/1.1 200").then_some(s)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: restart_storm STENTOR_BIN CLIENTS SPREAD_MS");
        std::process::exit(2);
    }
    let (bin, clients, spread) = (&args[1], &args[2], &args[3]);
    let clients: usize = clients
        .parse::<usize>()
        .expect("CLIENTS")
        .clamp(1, CLIENTS_MAX);
    let (mut old, addr) = start(bin, "127.0.0.1:0", spread);
    let (tx, rx) = mpsc::channel::<Option<Instant>>();
    let (opened_tx, opened_rx) = mpsc::channel::<bool>();
    for _ in 0..clients {
        let (tx, opened_tx) = (tx.clone(), opened_tx.clone());
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let Some(mut s) = open(addr) else {
                    let _ = opened_tx.send(false);
                    return;
                };
                let _ = opened_tx.send(true);
                // Read to the close; keep the last retry: (EventSource's rule).
                let mut text = Vec::new();
                let _ = s.read_to_end(&mut text);
                let retry_ms = String::from_utf8_lossy(&text)
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("retry: ")?.parse::<u64>().ok())
                    .unwrap_or(3000);
                std::thread::sleep(Duration::from_millis(retry_ms));
                let landed = open(addr).map(|_| Instant::now());
                let _ = tx.send(landed);
            })
            .expect("client thread");
    }
    drop((tx, opened_tx));
    let opened = opened_rx.iter().take(clients).filter(|ok| *ok).count();
    let (mut new, _) = start(bin, &addr.to_string(), spread);
    let signalled = Instant::now();
    // SAFETY: signals the child we started, by its PID.
    unsafe {
        libc::kill(old.id() as i32, libc::SIGTERM);
    }
    let mut landed = Vec::with_capacity(opened);
    let mut failed = 0;
    while landed.len() + failed < opened {
        let left = RUN_AFTER_SIGNAL_MAX.saturating_sub(signalled.elapsed());
        match rx.recv_timeout(left) {
            Ok(Some(t)) => landed.push(t.duration_since(signalled)),
            Ok(None) => failed += 1,
            Err(_) => break,
        }
    }
    let _ = old.wait();
    let _ = new.kill();
    let _ = new.wait();
    landed.sort();
    let mut per_s = std::collections::BTreeMap::<u64, usize>::new();
    for d in &landed {
        *per_s.entry(d.as_secs()).or_default() += 1;
    }
    let peak = per_s.values().max().copied().unwrap_or(0);
    let pct = |p: f64| {
        landed
            .get(((landed.len() as f64 * p) as usize).min(landed.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64())
    };
    println!(
        "spread_ms={spread} streams={opened} reconnected={} failed={failed} \
         peak_connects_per_s={peak} first_s={:.2} p50_s={:.2} last_s={:.2}",
        landed.len(),
        pct(0.0),
        pct(0.5),
        pct(1.0)
    );
    let histogram: Vec<String> = per_s.iter().map(|(s, n)| format!("{s}s:{n}")).collect();
    println!("connects per second after SIGTERM: {}", histogram.join(" "));
}
