//! The request path on the open internet, against the real binary: every
//! connection on a clock, TCP backpressure for pipelining, refusals decided
//! before a body is read, buffers given back, the tokenless publish rule
//! behind proxies and browsers, and PROXY protocol. Each test names the
//! defect it would have caught.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use support::{exchange, metric, rss_kib, scrape, shrink_rcvbuf, status_of, Server, IO_TIMEOUT};

const TOKEN: &str = "safety-test-token-0123456789";

fn publish_raw(extra: &str, body: &str) -> String {
    format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// Wait until `check` holds, polling; false at the deadline.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// Read everything until the peer closes or resets; whether it ended.
fn drain_to_end(s: &mut TcpStream, within: Duration) -> (usize, bool) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 65536];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (total, true),
            Err(_) => return (total, false),
        }
    }
}

/// Defect: `respond()` cleared the deadline on close-after-send and the
/// queue-age check looked only at streams, so a client that pipelined
/// requests and never read the answers held its slot and queue forever.
#[test]
fn a_client_that_never_reads_its_answers_is_dropped_by_the_clock() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--queue-age-ms-max",
        "1000",
        "--idle-timeout-ms",
        "600000",
        "--request-timeout-ms",
        "600000",
    ]);
    let mut s = server.connect();
    shrink_rcvbuf(&s, 4096);
    let mut many = String::new();
    for _ in 0..60 {
        many.push_str("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    s.write_all(many.as_bytes()).unwrap();
    let started = Instant::now();
    let dropped = eventually(Duration::from_secs(8), || {
        metric(
            &scrape(server.addr),
            "stentor_connections_closed_total{reason=\"slow_queue_age\"}",
        ) >= 1.0
    });
    assert!(dropped, "the non-reading client is still open");
    assert!(started.elapsed() < Duration::from_secs(6));
    // Abortive: the client learns at once, its unread answers are gone.
    let (_, ended) = drain_to_end(&mut s, Duration::from_secs(5));
    assert!(ended, "the dropped client was not told");
}

/// Defect: a connection whose unread requests or unsent answers passed a
/// limit was answered 429 and closed, losing every request in flight on
/// it. Now reading stops until the answers drain: every request sent in
/// order gets its answer.
#[test]
fn a_pipelining_client_is_slowed_by_tcp_not_cut_off() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = server.connect();
    let mut reader = s.try_clone().unwrap();
    const REQUESTS: usize = 4000;
    let writer = std::thread::spawn(move || {
        let one = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
        let mut batch = Vec::new();
        for _ in 0..REQUESTS {
            batch.extend_from_slice(one);
        }
        s.write_all(&batch).unwrap();
        s
    });
    // Read slowly at first so answers pile up on the server.
    std::thread::sleep(Duration::from_millis(500));
    reader.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let needle = b"HTTP/1.1 200 ";
    let count = |b: &[u8]| b.windows(needle.len()).filter(|w| w == needle).count();
    while count(&got) < REQUESTS {
        let n = reader.read(&mut buf).expect("read answers");
        assert!(n > 0, "closed after {} answers", count(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let _s = writer.join().unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(" 429 "), "a pipelined request was refused");
    let m = scrape(server.addr);
    assert!(
        metric(&m, "stentor_reads_paused_total") >= 1.0,
        "never paused"
    );
}

/// Defects: the body was read (and buffered in full) before routing and
/// authorization, and `100 Continue` went out before authorization.
#[test]
fn refusals_come_before_the_body_and_continue_after_authorization() {
    let server = Server::start(&["--publish-token", TOKEN]);
    // A wrong token on a 1 MB publish: 401 at once, without the body.
    let mut s = server.connect();
    s.write_all(
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nAuthorization: Bearer wrong\r\n\r\n",
    )
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert_eq!(status_of(&text), 401, "{text}");
    // The unread body is too large to skip: the connection closes.
    let (_, ended) = drain_to_end(&mut s, Duration::from_secs(5));
    assert!(ended);
    // Expect: 100-continue with a wrong token: 401, never 100.
    let mut s = server.connect();
    s.write_all(
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 30\r\nExpect: 100-continue\r\nAuthorization: Bearer wrong\r\n\r\n",
    )
    .unwrap();
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert_eq!(status_of(&text), 401, "{text}");
    // With the right token: 100 first, then the body, then 200.
    let body = r#"{"topic":"t","data":"continued"}"#;
    let mut s = server.connect();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let n = s.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    s.write_all(body.as_bytes()).unwrap();
    let n = s.read(&mut answer).unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&answer[..n])), 200);
    // A small unread body of a refused request is skipped: the connection
    // stays usable for the next request.
    let mut s = server.connect();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\nok\n") {
        let n = s.read(&mut answer).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&answer[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
}

/// Defect: `read_buf` kept its grown capacity (up to ~2 MiB) on a
/// keep-alive connection that then idled: 1,000 of them held ~2 GiB.
#[test]
fn request_buffers_shrink_back_after_use() {
    let server = Server::start(&["--workers", "1", "--publish-token", TOKEN]);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(server.pid());
    const CONNECTIONS: usize = 150;
    let data = "x".repeat(900_000);
    let body = format!(r#"{{"topic":"big","data":"{data}"}}"#);
    let head = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        body.len()
    );
    let mut held = Vec::new();
    for i in 0..CONNECTIONS {
        let mut s = support::connect_from(Ipv4Addr::new(127, 0, 0, 2 + (i % 3) as u8), server.addr)
            .unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // In pieces, so the server's buffer grows the way a real upload makes it.
        s.write_all(head.as_bytes()).unwrap();
        for piece in body.as_bytes().chunks(64 * 1024) {
            s.write_all(piece).unwrap();
        }
        let mut answer = [0u8; 512];
        let n = s.read(&mut answer).unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&answer[..n])), 200);
        held.push(s); // keep-alive, now idle
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(server.pid());
    eprintln!("rss_before_kib={rss_before} rss_after_kib={rss_after} connections={CONNECTIONS}");
    // History keeps one copy of each event (1 MiB per topic at most, so
    // one event here); buffers kept would be ~1 MiB per connection.
    assert!(
        rss_after < rss_before + 40 * 1024,
        "{CONNECTIONS} idle keep-alive connections hold {} KiB",
        rss_after.saturating_sub(rss_before)
    );
}

/// The worker's request buffers have one budget (--request-buffers-bytes-max):
/// past it a request gets 503 + Retry-After instead of more memory.
#[test]
fn request_buffers_have_a_budget_per_worker() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--publish-token",
        TOKEN,
        "--request-buffers-bytes-max",
        "1048576",
    ]);
    let head = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 900000\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let mut socks = Vec::new();
    let mut refused = 0;
    for _ in 0..4 {
        let mut s = server.connect();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b' '; 400_000]).unwrap();
        socks.push(s);
        std::thread::sleep(Duration::from_millis(200));
    }
    for s in socks.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut answer = [0u8; 512];
        if let Ok(n) = s.read(&mut answer) {
            let text = String::from_utf8_lossy(&answer[..n]);
            if status_of(&text) == 503 {
                assert!(text.contains("Retry-After: 1"), "{text}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 1, "no request was refused over the budget");
    let m = scrape(server.addr);
    assert!(
        metric(
            &m,
            "stentor_refusals_total{status=\"503\",limit=\"request_buffers\"}"
        ) >= 1.0
    );
}

/// Defect: the tokenless loopback rule trusted the TCP peer, so the nginx
/// set-up the docs recommended let every internet client publish, and a
/// page in a browser on the node could send a form POST to 127.0.0.1.
#[test]
fn tokenless_publishing_through_proxies_and_browsers_is_refused() {
    let body = r#"{"topic":"p","data":"x"}"#;
    let server = Server::start(&[]);
    for (extra, want) in [
        ("", 200),
        ("X-Forwarded-For: 203.0.113.9\r\n", 403),
        ("X-Real-IP: 203.0.113.9\r\n", 403),
        ("Via: 1.1 proxy\r\n", 403),
        ("Origin: https://evil.example\r\n", 403),
        ("Sec-Fetch-Site: cross-site\r\n", 403),
    ] {
        let answer = exchange(server.addr, publish_raw(extra, body).as_bytes());
        assert_eq!(status_of(&answer), want, "{extra:?}: {answer}");
    }
    // Form bodies too: what a cross-site <form> sends.
    let form = "topic=p&data=csrf";
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    assert_eq!(status_of(&exchange(server.addr, raw.as_bytes())), 403);
    // Behind a trusted proxy, the client it names decides.
    let server = Server::start(&["--trusted-proxy", "127.0.0.1/32"]);
    for (extra, want) in [
        ("X-Forwarded-For: 203.0.113.9\r\n", 403),
        ("X-Forwarded-For: 127.0.0.1, 203.0.113.9\r\n", 403),
        ("X-Forwarded-For: 127.0.0.1\r\n", 200),
        ("Forwarded: for=\"[::1]:5000\"\r\n", 200),
        ("Forwarded: for=unknown\r\n", 403),
    ] {
        let answer = exchange(server.addr, publish_raw(extra, body).as_bytes());
        assert_eq!(status_of(&answer), want, "{extra:?}: {answer}");
    }
    let m = scrape(server.addr);
    assert!(
        metric(
            &m,
            "stentor_refusals_total{status=\"403\",limit=\"forbidden\"}"
        ) >= 3.0
    );
}

/// A real nginx in front, configured the way operators do: without
/// `--trusted-proxy` its forwarded requests cannot publish without a token;
/// with it, the internet client it names is refused and a token works.
#[test]
fn behind_a_real_nginx_only_a_token_publishes() {
    if !support::require_program("nginx", "apt-get install nginx") {
        return;
    }
    let body = r#"{"topic":"n","data":"x"}"#;
    for trusted in [false, true] {
        let mut args = vec!["--publish-token", TOKEN];
        if trusted {
            args.extend(["--trusted-proxy", "127.0.0.1"]);
        }
        let server = Server::start(&args);
        let proxy = support::Nginx::start_proxy(server.addr);
        // The client connects to nginx from 127.0.0.1, but nginx says who it is.
        let answer = exchange(proxy.addr, publish_raw("", body).as_bytes());
        assert_eq!(status_of(&answer), 401, "{answer}");
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
        let answer = exchange(proxy.addr, publish_raw(&auth, body).as_bytes());
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
    // Without a token configured, nothing forwarded by nginx publishes.
    let server = Server::start(&[]);
    let proxy = support::Nginx::start_proxy(server.addr);
    let answer = exchange(proxy.addr, publish_raw("", body).as_bytes());
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(answer.contains("proxy"), "{answer}");
}

/// `--proxy-protocol`: a trusted load balancer's PROXY header (v1 or v2)
/// names the client; without one, the connection is refused.
#[test]
fn proxy_protocol_names_the_client() {
    let server = Server::start(&["--trusted-proxy", "127.0.0.1", "--proxy-protocol"]);
    let body = r#"{"topic":"pp","data":"x"}"#;
    let v1 = |src: &str| {
        format!(
            "PROXY TCP4 {src} 127.0.0.1 40000 80\r\n{}",
            publish_raw("", body)
        )
    };
    assert_eq!(
        status_of(&exchange(server.addr, v1("203.0.113.9").as_bytes())),
        403
    );
    assert_eq!(
        status_of(&exchange(server.addr, v1("127.0.0.5").as_bytes())),
        200
    );
    // Version 2, binary, naming 127.0.0.2.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 127, 0, 0, 2, 127, 0, 0, 1, 0x9c, 0x40, 0, 80,
    ]);
    v2.extend_from_slice(publish_raw("", body).as_bytes());
    assert_eq!(status_of(&exchange(server.addr, &v2)), 200);
    // No header from a trusted peer: refused, named.
    let answer = exchange(server.addr, publish_raw("", body).as_bytes());
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("PROXY"), "{answer}");
}

/// Smaller defects: a 408 followed answers already queued, and the
/// keep-alive idle timer started when an answer was queued, not sent.
#[test]
fn the_idle_clock_starts_when_the_answer_is_sent() {
    let server = Server::start(&["--idle-timeout-ms", "1500", "--request-timeout-ms", "1500"]);
    let mut s = server.connect();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 512];
    let n = s.read(&mut answer).unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&answer[..n])), 200);
    let answered = Instant::now();
    // Idle: closed quietly (no 408) about 1.5 s after the answer.
    let n = s.read(&mut answer).unwrap_or(0);
    let waited = answered.elapsed();
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&answer[..n]));
    assert!(waited >= Duration::from_millis(1200), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
}

/// Defect: the per-connection read cap was below what a valid chunked body
/// needs on the wire, so a 1 MiB publish in small chunks got 429. Now only
/// the body limits apply: it is published.
#[test]
fn a_large_chunked_publish_in_small_chunks_is_accepted() {
    let server = Server::start(&["--workers", "1"]);
    // Just under --body-bytes-max (1 MiB) decoded, in 128-byte chunks: the
    // framing (~49 KB) takes the wire past the old cap (head + body + one
    // receive buffer) while staying within the chunked framing bound.
    let data = "z".repeat(1_040_000);
    let body = format!(r#"{{"topic":"chunky","data":"{data}"}}"#);
    let mut wire = Vec::new();
    for piece in body.as_bytes().chunks(128) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut s = server.connect();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for part in wire.chunks(8192) {
        s.write_all(part).unwrap();
    }
    let mut answer = [0u8; 512];
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert_eq!(status_of(&text), 200, "{text}");
}
