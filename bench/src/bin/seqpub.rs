//! stentor-seqpub: a sequential publisher beside N subscribers, the way an
//! application server publishes (one `POST` at a time on a keep-alive
//! connection, waiting for each answer), against stentor or a peer.
//!
//! ```text
//! stentor-seqpub --addr 127.0.0.1:8080 [--sub-path /events?topic=t]
//!                [--pub-addr ADDR] [--pub-path /publish]
//!                [--pub-body '{"topic":"t","data":"{data}"}'] [--content-type application/json]
//!                [--subscribers 10000] [--rate 10] [--seconds 10] [--payload-bytes 128]
//!                [--pid PID[,PID...]] [--label NAME]
//! ```
//!
//! Event k is due at `start + k / rate`; the publisher sends it when it is
//! due, or at once when it is behind (a sequential publisher cannot send
//! ahead of its answers). After `--seconds` it stops and the subscribers
//! get 2 s more to drain. One JSON line reports: events published, their
//! round trip p50/p99/max (from the first byte written to the last byte of
//! the answer read), deliveries counted by the subscribers (`data:` lines,
//! so any server's framing counts the same), deliveries/s over the
//! publishing window, and with `--pid` the server processes' CPU (user + system)
//! per delivery. Subscribers are read with epoll on one thread, 64 KiB per
//! read. Every loop is bounded by the deadline; nothing outlives the run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Subscribers connected by one tool: under the usual descriptor limit.
const SUBSCRIBERS_MAX: usize = 19_000;
/// How long the subscribers keep reading after the last publish.
const DRAIN_MS: u64 = 2_000;
/// Longest publish answer read (head and body), in bytes.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

struct Args {
    addr: SocketAddr,
    sub_path: String,
    pub_addr: Option<SocketAddr>,
    pub_path: String,
    pub_body: String,
    content_type: String,
    subscribers: usize,
    rate: f64,
    seconds: f64,
    payload_bytes: usize,
    /// Server processes whose CPU is counted (nginx: master and workers).
    pids: Vec<i32>,
    label: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().unwrap(),
        sub_path: "/events?topic=t".into(),
        pub_addr: None,
        pub_path: "/publish".into(),
        pub_body: r#"{"topic":"t","data":"{data}"}"#.into(),
        content_type: "application/json".into(),
        subscribers: 10_000,
        rate: 10.0,
        seconds: 10.0,
        payload_bytes: 128,
        pids: Vec::new(),
        label: "server".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--addr" => a.addr = value()?.parse().map_err(|e| bad(&e))?,
            "--sub-path" => a.sub_path = value()?,
            "--pub-addr" => a.pub_addr = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--pub-path" => a.pub_path = value()?,
            "--pub-body" => a.pub_body = value()?,
            "--content-type" => a.content_type = value()?,
            "--subscribers" => a.subscribers = value()?.parse().map_err(|e| bad(&e))?,
            "--rate" => a.rate = value()?.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| bad(&e))?,
            "--payload-bytes" => a.payload_bytes = value()?.parse().map_err(|e| bad(&e))?,
            "--pid" => {
                for p in value()?.split(',') {
                    a.pids.push(p.trim().parse().map_err(|e| bad(&e))?);
                }
            }
            "--label" => a.label = value()?,
            "-h" | "--help" => {
                return Err("see the doc comment of bench/src/bin/seqpub.rs".into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.subscribers > SUBSCRIBERS_MAX {
        return Err(format!("--subscribers at most {SUBSCRIBERS_MAX}"));
    }
    if !(a.rate > 0.0 && a.rate <= 100_000.0 && a.seconds > 0.0 && a.seconds <= 120.0) {
        return Err("--rate in (0, 100000], --seconds in (0, 120]".into());
    }
    Ok(a)
}

/// User + system CPU of `pid` so far, in seconds.
fn cpu_s(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is 3rd.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 here.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn subscribe(args: &Args) -> Result<Vec<TcpStream>, String> {
    let mut subs = Vec::with_capacity(args.subscribers);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        args.sub_path, args.addr
    );
    for i in 0..args.subscribers {
        let mut s = TcpStream::connect(args.addr).map_err(|e| format!("subscriber {i}: {e}"))?;
        s.write_all(request.as_bytes())
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        subs.push(s);
    }
    Ok(subs)
}

/// Count `data:` lines on every subscriber until `stop`, into `deliveries`.
fn read_subscribers(subs: Vec<TcpStream>, deliveries: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    // SAFETY: plain epoll syscalls on descriptors this thread owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    for (i, s) in subs.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: see above.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
    }
    // The last 5 bytes of each stream, so a `data:` split across reads counts.
    let mut tails = vec![[0u8; 5]; subs.len()];
    let mut buf = vec![0u8; 64 * 1024 + 5];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `events` has room for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 50) };
        let mut counted = 0u64;
        for ev in events.iter().take(n.max(0) as usize) {
            let i = ev.u64 as usize;
            let mut s = &subs[i];
            buf[..5].copy_from_slice(&tails[i]);
            let Ok(got) = s.read(&mut buf[5..]) else {
                continue;
            };
            if got == 0 {
                // SAFETY: see above.
                unsafe {
                    libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, s.as_raw_fd(), std::ptr::null_mut())
                };
                continue;
            }
            let window = &buf[..5 + got];
            counted += window.windows(5).filter(|w| w == b"data:").count() as u64;
            tails[i].copy_from_slice(&window[window.len() - 5..]);
            // A `data:` wholly inside the kept tail was counted already.
            if &tails[i] == b"data:" {
                tails[i] = [0; 5];
            }
        }
        deliveries.fetch_add(counted, Ordering::Relaxed);
    }
    // SAFETY: closing our own epoll descriptor.
    unsafe { libc::close(ep) };
}

/// Send one publish and read its whole answer; the status code.
fn publish_one(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<u16, String> {
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("publish connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > ANSWER_BYTES_MAX {
            return Err("publish answer too long".into());
        }
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or("bad status line")?;
        let body = &buf[head_end + 4..];
        if head.contains("transfer-encoding: chunked") {
            if body.ends_with(b"0\r\n\r\n") {
                return Ok(status);
            }
            continue;
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if body.len() >= len {
            return Ok(status);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(args: Args) -> Result<String, String> {
    let subs = subscribe(&args)?;
    // Let every stream open (and its answer head arrive) before publishing.
    std::thread::sleep(Duration::from_millis(1_000));
    let deliveries = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (d, s) = (deliveries.clone(), stop.clone());
        std::thread::spawn(move || read_subscribers(subs, d, s))
    };
    let pub_addr = args.pub_addr.unwrap_or(args.addr);
    let mut conn = TcpStream::connect(pub_addr).map_err(|e| format!("publisher: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let data: String = "x".repeat(args.payload_bytes);
    let body = args.pub_body.replace("{data}", &data);
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{}",
        args.pub_path,
        pub_addr,
        args.content_type,
        body.len(),
        body
    )
    .into_bytes();
    let cpu_before: f64 = args.pids.iter().map(|&p| cpu_s(p)).sum();
    let before = deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let window = Duration::from_secs_f64(args.seconds);
    let offered = (args.rate * args.seconds).round() as u64;
    let mut rtts_ms = Vec::with_capacity(offered as usize);
    let (mut refused, mut buf) = (0u64, Vec::new());
    for k in 0..offered {
        let due = started + Duration::from_secs_f64(k as f64 / args.rate);
        let now = Instant::now();
        if now >= started + window {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        let status = publish_one(&mut conn, &request, &mut buf)?;
        rtts_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        if !(200..300).contains(&status) {
            refused += 1;
        }
    }
    let published_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(DRAIN_MS));
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let delivered = deliveries.load(Ordering::Relaxed) - before;
    let cpu = args.pids.iter().map(|&p| cpu_s(p)).sum::<f64>() - cpu_before;
    let published = rtts_ms.len() as u64;
    let mut sorted = rtts_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(format!(
        "{{\"label\":\"{}\",\"subscribers\":{},\"rate\":{},\"seconds\":{},\"offered\":{},\
         \"published\":{},\"refused\":{},\"rtt_ms_p50\":{:.2},\"rtt_ms_p99\":{:.2},\"rtt_ms_max\":{:.2},\
         \"delivered\":{},\"expected\":{},\"deliveries_per_s\":{:.0},\"cpu_s\":{:.2},\"cpu_us_per_delivery\":{:.2}}}",
        args.label,
        args.subscribers,
        args.rate,
        args.seconds,
        offered,
        published,
        refused,
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(0.0),
        delivered,
        published * args.subscribers as u64,
        delivered as f64 / published_s,
        cpu,
        if delivered > 0 { cpu * 1e6 / delivered as f64 } else { 0.0 },
    ))
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stentor-seqpub: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stentor-seqpub: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
