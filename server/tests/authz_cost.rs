//! What private events cost the data plane, measured on the real binary:
//! the node's CPU per delivery while every event is public, then while
//! half are private, in the same run (same streams, same node). Half the
//! streams hold a token covering the topic, half are anonymous, so a
//! private event reaches half the streams through the worker's private
//! index and a public one reaches all of them through the topic index.
//!
//! A measurement, not a pass/fail test: `#[ignore]`d, run it with
//! `cargo test --release -p stentor --test authz_cost -- --ignored --nocapture`
//! (figures in docs/measurements/benchmarks.md). Bounded: 400 streams, 40,000 events.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{exchange, read_stream_head, scrape, status_of, Server};

const SECRET: &str = "stentor-cost-secret-0123456789-abcdefghijk";
const STREAMS: usize = 400;
const BATCHES: usize = 200;
const BATCH_EVENTS: usize = 100;

fn token(mercure: serde_json::Value) -> String {
    let claims = serde_json::json!({"exp": 4_102_444_800u64, "mercure": mercure});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode a token")
}

/// The node's user + system CPU in seconds (/proc/PID/stat).
fn cpu_s(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) in parens.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn deliveries(server: &Server) -> f64 {
    support::metric(&scrape(server.addr), "stentor_deliveries_total")
}

/// Publish `BATCHES` batches, every `private_every`-th event private (0:
/// none); returns (events, deliveries, node CPU seconds).
fn phase(server: &Server, publisher: &str, topic: &str, private_every: usize) -> (usize, f64, f64) {
    let d0 = deliveries(server);
    let c0 = cpu_s(server.pid());
    for _ in 0..BATCHES {
        let events: Vec<serde_json::Value> = (0..BATCH_EVENTS)
            .map(|i| {
                let private = private_every > 0 && i % private_every == 0;
                serde_json::json!({"topic": topic, "data": "x".repeat(64), "private": private})
            })
            .collect();
        let body = serde_json::Value::Array(events).to_string();
        let a = exchange(
            server.addr,
            format!(
                "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {publisher}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(status_of(&a), 200, "{a}");
    }
    // Let the workers finish the fan-out before reading the figures.
    std::thread::sleep(Duration::from_millis(500));
    (
        BATCHES * BATCH_EVENTS,
        deliveries(server) - d0,
        cpu_s(server.pid()) - c0,
    )
}

/// Open `STREAMS` streams, stream `i` on `request(i)` (target, extra
/// header lines), and drain them all from one thread until the returned
/// guard is dropped.
fn open_streams(server: &Server, request: impl Fn(usize) -> (String, String)) -> Drainer {
    let mut socks = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let (target, extra) = request(i);
        let mut s = server.connect();
        write!(s, "GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
        read_stream_head(&mut s);
        s.set_nonblocking(true).unwrap();
        socks.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut socks: Vec<TcpStream> = socks;
            while !stop.load(Ordering::Relaxed) {
                let mut idle = true;
                for s in socks.iter_mut() {
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        idle = false;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    Drainer {
        stop,
        thread: Some(thread),
    }
}

struct Drainer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn cpu_per_delivery_with_half_private_events_vs_none() {
    let server = Server::start(&["--jwt-key", SECRET, "--workers", "1"]);
    let publisher = token(serde_json::json!({"publish": ["*"]}));
    let subscriber = token(serde_json::json!({"subscribe": ["t"]}));
    let drainer = open_streams(&server, |i| {
        let auth = if i % 2 == 0 {
            format!("Authorization: Bearer {subscriber}\r\n")
        } else {
            String::new()
        };
        ("/events?topic=t".to_string(), auth)
    });
    let started = Instant::now();
    let (e_pub, d_pub, c_pub) = phase(&server, &publisher, "t", 0);
    let (e_half, d_half, c_half) = phase(&server, &publisher, "t", 2);
    drop(drainer);
    let ns = |c: f64, d: f64| c * 1e9 / d;
    println!("streams={STREAMS} (half with a token covering the topic), one worker");
    println!(
        "all public:   events={e_pub} deliveries={d_pub} node_cpu_s={c_pub:.3} ns_per_delivery={:.0}",
        ns(c_pub, d_pub)
    );
    println!(
        "half private: events={e_half} deliveries={d_half} node_cpu_s={c_half:.3} ns_per_delivery={:.0}",
        ns(c_half, d_half)
    );
    println!("run took {:.1} s", started.elapsed().as_secs_f64());
    // Every delivery counted: public events to all, private to half.
    assert_eq!(d_pub as usize, e_pub * STREAMS);
    assert_eq!(
        d_half as usize,
        e_half / 2 * STREAMS + e_half / 2 * STREAMS / 2
    );
}

/// The same node, streams on `orders/42` exactly or on a pattern that
/// matches it (`orders/*`, `orders/{id}`), one per stream in turn; then
/// publishes to `orders/42` (every stream) and to `users/1` (a topic no
/// stream and no pattern names: what the trie walk costs a miss).
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn cpu_per_delivery_through_patterns_vs_exact_topics() {
    let server = Server::start(&["--jwt-key", SECRET, "--workers", "1"]);
    let publisher = token(serde_json::json!({"publish": ["*"]}));
    let exact = open_streams(&server, |_| {
        ("/events?topic=orders/42".to_string(), String::new())
    });
    let (e_exact, d_exact, c_exact) = phase(&server, &publisher, "orders/42", 0);
    drop(exact);
    let patterns = open_streams(&server, |i| {
        let topic = ["orders/*", "orders/%7Bid%7D"][i % 2];
        (format!("/events?topic={topic}"), String::new())
    });
    let (e_pat, d_pat, c_pat) = phase(&server, &publisher, "orders/42", 0);
    let (e_miss, d_miss, c_miss) = phase(&server, &publisher, "users/1", 0);
    drop(patterns);
    let ns = |c: f64, d: f64| c * 1e9 / d;
    println!("streams={STREAMS}, one worker");
    println!(
        "exact topic:      events={e_exact} deliveries={d_exact} node_cpu_s={c_exact:.3} ns_per_delivery={:.0}",
        ns(c_exact, d_exact)
    );
    println!(
        "through patterns: events={e_pat} deliveries={d_pat} node_cpu_s={c_pat:.3} ns_per_delivery={:.0}",
        ns(c_pat, d_pat)
    );
    println!(
        "no match:         events={e_miss} deliveries={d_miss} node_cpu_s={c_miss:.3} us_per_event={:.2}",
        c_miss * 1e6 / e_miss as f64
    );
    assert_eq!(d_exact as usize, e_exact * STREAMS);
    assert_eq!(d_pat as usize, e_pat * STREAMS);
    assert_eq!(d_miss, 0.0);
}
