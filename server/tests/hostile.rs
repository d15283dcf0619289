//! Hostile input against the real binary: request smuggling, oversize and
//! malformed requests, garbage, half-open and abandoned connections, a
//! client sending one byte per second. Every case gets its status or a
//! close, the server never panics, an unrelated stream keeps receiving, and
//! memory comes back once the abandoned connections have timed out.
//! Every wait is bounded; the server is killed by its PID at the end.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::{connect_from, exchange, rss_kib, scrape, Server};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Status of every answer in `text` (pipelined answers follow each other).
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12))
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Send `raw` on a fresh connection, read until the server closes.
fn answers(server: &Server, raw: &[u8]) -> Vec<u16> {
    statuses(&exchange(server.addr, raw))
}

/// An open stream on `topic` that has read its head and `: connected`.
fn witness(server: &Server, topic: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(s, "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_until(&mut s, ": connected");
    s
}

fn read_until(s: &mut TcpStream, needle: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn publish(server: &Server, topic: &str, data: &str) {
    let body = format!("topic={topic}&data={data}");
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(answers(server, raw.as_bytes()), [200]);
}

/// The server is alive and logged no panic; its log lines since the last
/// call come back.
fn assert_healthy(server: &mut Server) -> Vec<String> {
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the server exited"
    );
    let lines: Vec<String> = server.log.try_iter().collect();
    let panics: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("panicked") || l.contains("level=error"))
        .collect();
    assert!(panics.is_empty(), "{panics:#?}");
    lines
}

fn gauge(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn malformed_and_smuggling_requests_each_get_their_status() {
    let mut server = Server::start(&[
        "--workers",
        "2",
        "--head-bytes-max",
        "4096",
        "--uri-bytes-max",
        "512",
        "--body-bytes-max",
        "1024",
        "--request-timeout-ms",
        "2000",
        "--heartbeat-ms",
        "3600000",
    ]);
    let mut w = witness(&server, "w");
    let post = |extra: &str, body: &str| {
        format!("POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra}\r\n{body}")
    };
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-A: b\r\n".repeat(100)
    );
    let long_uri = format!(
        "GET /events?topic={} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(600)
    );
    let big_chunked = {
        let chunk = "x".repeat(1000);
        post(
            "Transfer-Encoding: chunked\r\n",
            &format!("3e8\r\n{chunk}\r\n3e8\r\n{chunk}\r\n0\r\n\r\n"),
        )
    };
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        // ---- smuggling ------------------------------------------------
        ("CL + TE", post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n").into(), &[400]),
        ("TE + CL", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n").into(), &[400]),
        ("TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n").into(), &[400, 501]),
        ("TE chunked, identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n").into(), &[400, 501]),
        ("TE chunked twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n").into(), &[400]),
        ("TE space before colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n").into(), &[400]),
        ("TE obs-fold", post("X-A: b\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n").into(), &[400]),
        ("TE vertical tab", post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n").into(), &[400]),
        ("TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n").into(), &[501]),
        ("TE in HTTP/1.0", b"POST /publish HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        ("CL duplicated, disagreeing", post("Content-Length: 5\r\nContent-Length: 6\r\n", "topic").into(), &[400]),
        ("CL list", post("Content-Length: 5, 6\r\n", "topic").into(), &[400]),
        ("CL signed", post("Content-Length: +5\r\n", "topic").into(), &[400]),
        ("CL huge", post("Content-Length: 99999999999999999999999\r\n", "").into(), &[400, 413]),
        ("bare LF", b"GET /healthz HTTP/1.1\nHost: t\n\n".to_vec(), &[400]),
        ("two Hosts", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), &[400]),
        // ---- sizes ----------------------------------------------------
        ("head too large", big_header.into_bytes(), &[431]),
        ("too many headers", many_headers.into_bytes(), &[431]),
        ("URI too long", long_uri.into_bytes(), &[414]),
        ("body too large (CL)", post("Content-Length: 2000\r\n", "").into(), &[413]),
        ("body too large (chunked)", big_chunked.into_bytes(), &[413]),
        // ---- bytes ----------------------------------------------------
        ("invalid UTF-8 in the query", b"GET /events?topic=%FF%FE HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        ("raw 0xFF in the target", b"GET /events?topic=\xff HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        ("bad percent escape", b"GET /events?topic=%G1 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        ("NUL in the target", b"GET /healthz\0 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        ("NUL in a header", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n".to_vec(), &[400]),
        ("NUL in a topic", b"GET /events?topic=a%00b HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        ("TLS hello on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(), &[400]),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[400, 505]),
        ("HTTP/0.9", b"GET /healthz\r\n\r\n".to_vec(), &[400]),
        ("HTTP/3.0", b"GET /healthz HTTP/3.0\r\nHost: t\r\n\r\n".to_vec(), &[505]),
        ("Expect: gzip", b"GET /healthz HTTP/1.1\r\nHost: t\r\nExpect: gzip\r\n\r\n".to_vec(), &[417]),
        // ---- pipelining ------------------------------------------------
        ("pipelined garbage after a good request", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\x00\x01\x02 garbage\r\n\r\n".to_vec(), &[200, 400]),
        ("two good requests then garbage", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET\x7f/ HTTP/1.1\r\n\r\n".to_vec(), &[200, 404, 400]),
    ];
    let battery_started = Instant::now();
    let mut failures = Vec::new();
    for (name, raw, want) in &cases {
        let got = answers(&server, raw);
        // One answer per request: for single requests exactly one status
        // (from `want`); for pipelines the statuses in order.
        let ok = if want.len() > 1 && name.contains("pipelined") || name.starts_with("two good") {
            got == *want
        } else {
            got.len() == 1 && want.contains(&got[0])
        };
        if !ok {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Half-open: a request then FIN still gets its answer; a partial head
    // then FIN gets a close, nothing else.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert_eq!(statuses(&text), [200], "{text}");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)) || matches!(&n, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{n:?} {rest:?}"
    );

    // The refusals were counted by limit.
    let metrics = scrape(server.addr);
    for (limit, at_least) in [
        ("head_bytes", 2),
        ("uri_bytes", 1),
        ("body_bytes", 2),
        ("malformed", 20),
        ("transfer_coding", 1),
        ("http_version", 1),
    ] {
        let line = metrics
            .lines()
            .find(|l| l.contains(&format!("limit=\"{limit}\"")))
            .unwrap_or_else(|| panic!("no refusals for {limit}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= at_least, "{line}");
    }

    // The bystander stream still works.
    publish(&server, "w", "after-the-battery");
    read_until(&mut w, "data: after-the-battery");
    // Each limit that bit is logged, at most once per 10 s with a count:
    // some twenty malformed requests make one line.
    std::thread::sleep(Duration::from_millis(200));
    let lines = assert_healthy(&mut server);
    let bites = |limit: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains("msg=\"limit refused requests\"")
                    && l.contains(&format!("limit={limit} "))
            })
            .count()
    };
    let periods = 1 + battery_started.elapsed().as_secs() as usize / 10;
    for limit in ["malformed", "head_bytes"] {
        let n = bites(limit);
        assert!(
            (1..=periods).contains(&n),
            "{n} lines for {limit}: {lines:#?}"
        );
    }
}

#[test]
fn a_client_sending_one_byte_per_second_gets_408_at_the_deadline() {
    let mut server = Server::start(&["--workers", "1", "--request-timeout-ms", "2000"]);
    let mut w = witness(&server, "w");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    // At most 8 s: one byte a second, reading in between.
    'outer: for byte in request.iter().take(8) {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        let next = Instant::now() + Duration::from_secs(1);
        while Instant::now() < next {
            match s.read(&mut buf) {
                Ok(0) => break 'outer,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break 'outer,
            }
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert_eq!(statuses(&text), [408], "{text}");
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(5),
        "408 after {elapsed:?}; the deadline counts from the first byte, not the last"
    );
    publish(&server, "w", "still-here");
    read_until(&mut w, "data: still-here");
    assert_healthy(&mut server);
}

/// Connections abandoned mid-head per round, from five source addresses.
const ABANDONED: usize = 10_000;
/// RSS the first round may leave over the cold baseline: memory touched
/// once and kept for reuse (each ring's 512 KiB of provided buffers and
/// its SQ/CQ pages, 8 rings by default; the slab's grown capacity) and
/// what the allocator retains. Measured: ~11.7 MiB with 16,384-entry CQs;
/// 16.7 MiB since each CQ holds a full broadcast of its ring (65,536
/// entries, 1 MiB, its pages touched as the CQ head goes round).
const RSS_WARM_KIB_MAX: u64 = 22 * 1024;
/// RSS the fifth, identical round may leave over the higher of the second
/// and third: none is the expectation (memory returns). The allocator's
/// RSS climbs for the first three or four rounds and then holds (measured:
/// rounds 4 to 10 within 0.6 MiB of each other, rounds 2 and 3 up to
/// 4.5 MiB below that plateau), so the early rounds are the baseline only
/// at their higher. A leak of 320 B per connection (3.2 MiB per round of
/// 10,000) adds at least 6.4 MiB over the two rounds after it and fails.
const RSS_ROUND_GROWTH_KIB_MAX: u64 = 4 * 1024;

/// Open `ABANDONED` connections that each send half a head, wait until the
/// server has answered every one 408 and closed it, check a sample got its
/// 408. Returns the peak RSS seen.
fn abandon_a_round(server: &Server) -> u64 {
    let started = Instant::now();
    let mut held = Vec::with_capacity(ABANDONED);
    for i in 0..ABANDONED {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i % 5) as u8);
        let mut s = match connect_from(from, server.addr) {
            Ok(s) => s,
            Err(e) => panic!("connection {i}: {e}"),
        };
        s.write_all(b"GET /events?topic=x HTTP/1.1\r\nHost: t\r\nX-Half: ")
            .unwrap();
        held.push(s);
    }
    let opened_in = started.elapsed();
    let mut rss_peak = 0;
    // Every one times out (--request-timeout-ms 2000) and is closed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut open = u64::MAX;
    while Instant::now() < deadline {
        rss_peak = rss_peak.max(rss_kib(server.pid()));
        open = gauge(&scrape(server.addr), "stentor_connections");
        if open <= 2 && started.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        open <= 2,
        "{open} connections still open long after the deadline"
    );
    // Each abandoned client has its 408 waiting in its socket.
    let mut sample = [0u8; 64];
    for s in held.iter_mut().step_by(997) {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let n = s.read(&mut sample).unwrap_or(0);
        assert!(
            sample[..n].starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            &sample[..n]
        );
    }
    eprintln!(
        "abandoned={ABANDONED} opened_in={opened_in:?} all_closed_after={:?} rss_peak_kib={rss_peak}",
        started.elapsed()
    );
    rss_peak
}

/// The server's RSS once a round's memory has had time to go back: the
/// lowest of 15 samples over 1.5 s. The allocator returns freed pages
/// lazily, on a later call from the thread that freed them, so each
/// sample follows a `/metrics` scrape (a request for some worker to
/// serve). A leak stays resident through every sample; a round's
/// leftovers that are merely not returned yet do not.
fn settled_rss(server: &Server) -> u64 {
    let mut low = u64::MAX;
    for _ in 0..15 {
        scrape(server.addr);
        std::thread::sleep(Duration::from_millis(100));
        low = low.min(rss_kib(server.pid()));
    }
    low
}

#[test]
fn ten_thousand_connections_abandoned_mid_head_time_out_and_memory_returns() {
    let mut server = Server::start(&[
        "--workers",
        "2",
        "--request-timeout-ms",
        "2000",
        "--heartbeat-ms",
        "3600000",
    ]);
    let mut w = witness(&server, "w");
    // Let startup allocations settle before taking the baseline.
    std::thread::sleep(Duration::from_millis(500));
    let rss_cold = rss_kib(server.pid());
    abandon_a_round(&server);
    let rss_warm = settled_rss(&server);
    abandon_a_round(&server);
    let rss_second = settled_rss(&server);
    abandon_a_round(&server);
    let rss_third = settled_rss(&server);
    // Two more identical rounds: a leak grows every round, the allocator's
    // arenas settle after the first ones.
    abandon_a_round(&server);
    abandon_a_round(&server);
    let rss_after = settled_rss(&server);
    eprintln!(
        "rss_cold_kib={rss_cold} rss_after_round1_kib={rss_warm} rss_after_round2_kib={rss_second} \
         rss_after_round3_kib={rss_third} rss_after_round5_kib={rss_after}"
    );
    assert!(
        rss_warm <= rss_cold + RSS_WARM_KIB_MAX,
        "RSS {rss_cold} KiB -> {rss_warm} KiB after the first round"
    );
    assert!(
        rss_after <= rss_second.max(rss_third) + RSS_ROUND_GROWTH_KIB_MAX,
        "RSS grew {rss_second} / {rss_third} KiB -> {rss_after} KiB over identical rounds"
    );
    publish(&server, "w", "survived");
    read_until(&mut w, "data: survived");
    assert_healthy(&mut server);
}
