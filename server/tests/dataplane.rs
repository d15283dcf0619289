//! The io_uring data plane end to end: the real `stentor` binary on a
//! kernel-picked loopback port, driven by plain blocking sockets. Every wait
//! is bounded; every child is killed by PID when its test ends.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stentor::wire::sse::{Item, Parser};

mod support;

use support::{Server, IO_TIMEOUT};

/// Read until `\r\n\r\n`; returns the head and whatever body bytes followed.
fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return (head, buf[end + 4..].to_vec());
        }
        let n = s.read(&mut chunk).expect("read head");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        assert!(buf.len() < 65536, "head too long");
    }
}

/// One request with `Connection: close`: status and body.
fn request(server: &Server, raw: &str) -> (u16, String) {
    let mut s = server.connect();
    s.write_all(raw.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read response");
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn publish(server: &Server, topic: &str, data: &str) -> u64 {
    let body = format!("topic={topic}&data={data}");
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // 503 is "retry later": tests running at --max-connections may see the
    // previous publisher's slot still closing.
    let mut attempt = 0;
    let (status, body) = loop {
        let (status, body) = request(server, &raw);
        attempt += 1;
        if status != 503 || attempt == 50 {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 200, "publish answered {body}");
    // {"id":N,"ids":[N]}
    body.split_once("\"id\":")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("id in {body}"))
}

/// An open SSE stream with its parser.
struct Stream {
    sock: TcpStream,
    parser: Parser,
    items: Vec<Item>,
}

impl Stream {
    fn open(server: &Server, topics: &[&str]) -> Stream {
        let mut sock = server.connect();
        let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
        write!(
            sock,
            "GET /events?{} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
            query.join("&")
        )
        .unwrap();
        Stream::after_request(sock)
    }

    /// The request is sent: read the 200 head and parse what came with it.
    fn after_request(mut sock: TcpStream) -> Stream {
        let (head, rest) = read_head(&mut sock);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let mut s = Stream {
            sock,
            parser: Parser::new(),
            items: Vec::new(),
        };
        s.parser.feed(&rest, &mut s.items);
        s
    }

    /// Read until `pred` holds for the items seen so far (bounded by the
    /// socket timeout); false if the stream ended first.
    fn read_until(&mut self, mut pred: impl FnMut(&[Item]) -> bool) -> bool {
        let mut chunk = [0u8; 16384];
        while !pred(&self.items) {
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.parser.feed(&chunk[..n], &mut self.items),
            }
        }
        true
    }

    fn event_ids(&self) -> Vec<u64> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => e.last_event_id.parse().ok(),
                _ => None,
            })
            .collect()
    }

    fn wait_connected(&mut self) {
        let ok = self.read_until(|items| {
            items
                .iter()
                .any(|i| matches!(i, Item::Comment(c) if c == "connected"))
        });
        assert!(ok, "no `: connected` comment");
    }
}

fn has_event(items: &[Item], id: u64) -> bool {
    let id = id.to_string();
    items
        .iter()
        .any(|i| matches!(i, Item::Event(e) if e.last_event_id == id))
}

#[test]
fn a_stream_gets_its_head_connected_retry_and_events() {
    let server = Server::start(&["--workers", "2", "--retry-ms", "1234"]);
    assert!(
        server.listening.contains("connections_max="),
        "{}",
        server.listening
    );
    let mut sock = server.connect();
    sock.write_all(b"GET /events?topic=news HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, rest) = read_head(&mut sock);
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        lower.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(lower.contains("cache-control: no-store\r\n"), "{head}");
    assert!(lower.contains("x-accel-buffering: no\r\n"), "{head}");
    let mut s = Stream {
        sock,
        parser: Parser::new(),
        items: Vec::new(),
    };
    s.parser.feed(&rest, &mut s.items);
    s.wait_connected();
    let id = publish(&server, "news", "hello%20world");
    assert!(s.read_until(|items| has_event(items, id)));
    assert_eq!(s.parser.retry_ms(), Some(1234));
    let ev = s
        .items
        .iter()
        .find_map(|i| match i {
            Item::Event(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ev.data, "hello world");
    assert_eq!(ev.event_type, "message");
}

#[test]
fn plain_requests_keep_alive_and_refusals_are_clear() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = server.connect();
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let (h1, rest) = read_head(&mut s);
    assert!(h1.starts_with("HTTP/1.1 200 "), "{h1}");
    // Two pipelined answers on one keep-alive connection.
    let mut seen = rest;
    let mut chunk = [0u8; 1024];
    while seen.windows(12).filter(|w| w == b"HTTP/1.1 200").count() < 1 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = request(&server, "GET /events HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("topic"), "{body}");
    let (status, _) = request(
        &server,
        "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
    let mut s = server.connect();
    s.write_all(b"DELETE /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    let (status, _) = request(&server, "GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n");
    assert!(status >= 400, "{status}");
    let (status, body) = request(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("stentor_connections_accepted_total "),
        "{body}"
    );
}

/// Read a counter from /metrics.
fn counter(server: &Server, name: &str) -> u64 {
    let (_, body) = request(
        server,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("stentor_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn a_slow_client_over_its_queue_budget_is_dropped_and_others_are_not() {
    let server = Server::start(&["--workers", "1", "--queue-bytes-max", "65536"]);
    let slow = stalled_stream(&server, "s");
    let mut fast = Stream::open(&server, &["s"]);
    fast.wait_connected();
    // The kernel buffers a few MB for the stalled socket before our own
    // queue grows; large events get there in a few rounds.
    let payload = "y".repeat(60 * 1024);
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(
        &server,
        "slow_clients_dropped_total{reason=\"queue_bytes\"}",
    ) == 0
    {
        assert!(
            Instant::now() < deadline,
            "the slow client was never dropped"
        );
        // One event at a time, read at once: the fast client never has more
        // than one event queued, the stalled one piles them up.
        let id = publish(&server, "s", &payload);
        ids.push(id);
        assert!(fast.read_until(|items| has_event(items, id)));
    }
    assert_eq!(fast.event_ids(), ids, "the fast client got everything");
    let id = publish(&server, "s", "after");
    assert!(fast.read_until(|items| has_event(items, id)));
    drop(slow);
}

#[test]
fn expect_100_continue_gets_continue_then_the_answer() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = server.connect();
    let body = "topic=a&data=x";
    write!(
        s,
        "POST /publish HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    s.write_all(body.as_bytes()).unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

#[test]
fn a_slow_head_gets_408_and_is_closed() {
    let server = Server::start(&["--workers", "1", "--request-timeout-ms", "300"]);
    let mut s = server.connect();
    s.write_all(b"GET /events?topic=a HTTP/1.1\r\nHo").unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("server closes");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn heartbeats_reach_quiet_streams() {
    let server = Server::start(&["--workers", "1", "--heartbeat-ms", "200"]);
    let mut s = Stream::open(&server, &["quiet"]);
    s.wait_connected();
    let ok = s.read_until(|items| {
        items
            .iter()
            .filter(|i| matches!(i, Item::Comment(c) if c.is_empty()))
            .count()
            >= 2
    });
    assert!(ok, "no heartbeats: {:?}", s.items);
}

#[test]
fn a_full_node_answers_503_with_retry_after() {
    let server = Server::start(&["--workers", "1", "--max-connections", "2"]);
    let mut a = Stream::open(&server, &["t"]);
    let mut b = Stream::open(&server, &["t"]);
    a.wait_connected();
    b.wait_connected();
    let mut c = server.connect();
    c.write_all(b"GET /events?topic=t HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
}

#[test]
fn a_thousand_streams_all_receive_a_broadcast() {
    const STREAMS: usize = 1000;
    let server = Server::start(&["--workers", "2"]);
    let mut socks = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut s = server.connect();
        s.write_all(b"GET /events?topic=all HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        socks.push(s);
    }
    let mut streams: Vec<Stream> = socks.into_iter().map(Stream::after_request).collect();
    for s in &mut streams {
        s.wait_connected();
    }
    let id = publish(&server, "all", "to-everyone");
    let mut got = 0;
    for s in &mut streams {
        if s.read_until(|items| has_event(items, id)) {
            got += 1;
        }
    }
    assert_eq!(got, STREAMS);
}

#[test]
fn a_client_gone_mid_send_disturbs_no_one_and_its_slot_is_reused() {
    // Four connections at most: B, C, D and one publisher; A's slot must be
    // freed for C and D to get in.
    let server = Server::start(&[
        "--workers",
        "1",
        "--max-connections",
        "4",
        "--queue-bytes-max",
        "67108864",
    ]);
    let mut a = {
        // A small receive buffer, and A never reads: the server's sends to
        // it stall with frames in flight.
        let sock = std::net::TcpStream::connect(server.addr).unwrap();
        support::shrink_rcvbuf(&sock, 4096);
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock
    };
    a.write_all(b"GET /events?topic=big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut b = Stream::open(&server, &["big"]);
    b.wait_connected();
    let payload = "x".repeat(32 * 1024);
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(publish(&server, "big", &payload));
    }
    // Read everything on B while A sits on ~2 MB it never reads.
    let last = *ids.last().unwrap();
    assert!(
        b.read_until(|items| has_event(items, last)),
        "B missed events"
    );
    assert_eq!(b.event_ids(), ids, "B got every event in order");
    // A goes away with unread data (a reset) while its send is pending.
    a.shutdown(Shutdown::Both).ok();
    drop(a);
    // C and D fit only once A's slot is freed; retry briefly, since the
    // close completes asynchronously.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut c, mut d) = loop {
        let mut c = server.connect();
        c.write_all(b"GET /events?topic=big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (head, _) = read_head(&mut c);
        if head.starts_with("HTTP/1.1 200 ") {
            let d = Stream::open(&server, &["big"]);
            let c = Stream {
                sock: c,
                parser: Parser::new(),
                items: Vec::new(),
            };
            break (c, d);
        }
        assert!(
            Instant::now() < deadline,
            "A's slot was never freed: {head}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let id = publish(&server, "big", "after");
    for s in [&mut b, &mut c, &mut d] {
        assert!(s.read_until(|items| has_event(items, id)));
    }
}

#[test]
fn churn_leaves_the_stable_streams_whole() {
    // Stale completions: connections that vanish at every stage (before the
    // head, mid-head, right after the head, mid-stream) while events flow.
    let mut server = Server::start(&["--workers", "2"]);
    let mut stable = Stream::open(&server, &["churn"]);
    stable.wait_connected();
    let mut ids = Vec::new();
    for round in 0..20 {
        let mut doomed = Vec::new();
        for i in 0..20 {
            let mut s = server.connect();
            match i % 4 {
                0 => {}
                1 => s.write_all(b"GET /events?to").unwrap(),
                _ => s
                    .write_all(b"GET /events?topic=churn HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap(),
            }
            doomed.push(s);
        }
        ids.push(publish(&server, "churn", &format!("round{round}")));
        for (i, s) in doomed.into_iter().enumerate() {
            if i % 2 == 0 {
                let _ = s.shutdown(Shutdown::Both);
            }
            drop(s);
        }
    }
    let last = *ids.last().unwrap();
    assert!(stable.read_until(|items| has_event(items, last)));
    assert_eq!(stable.event_ids(), ids);
    assert!(server.alive(), "the server died under churn");
    let (status, body) = request(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.trim()), (200, "ok"));
}

#[test]
fn sigterm_under_load_exits_zero_within_the_deadline() {
    let mut server = Server::start(&["--workers", "2", "--shutdown-ms", "1000"]);
    let mut streams: Vec<Stream> = (0..100).map(|_| Stream::open(&server, &["load"])).collect();
    for s in &mut streams {
        s.wait_connected();
    }
    let port = server.addr.port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 100_000 {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    break;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let body = "topic=load&data=tick";
                let raw = format!(
                    "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(raw.as_bytes()).is_err() {
                    break;
                }
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                sent += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = publisher.join();
    let status = status.expect("stentor did not exit within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // Streams were closed cleanly after what was queued.
    for s in &mut streams {
        assert!(!s.read_until(|_| false), "stream still open");
    }
}

/// A stream that does not read, with a tiny receive buffer.
fn stalled_stream(server: &Server, topic: &str) -> TcpStream {
    let sock = TcpStream::connect(server.addr).unwrap();
    support::shrink_rcvbuf(&sock, 4096);
    let mut sock = sock;
    write!(
        sock,
        "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    sock
}

#[test]
fn a_stalled_client_whose_oldest_frame_is_too_old_is_dropped() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--queue-bytes-max",
        "1073741824",
        "--queue-age-ms-max",
        "300",
    ]);
    let _stalled = stalled_stream(&server, "age");
    let mut fast = Stream::open(&server, &["age"]);
    fast.wait_connected();
    let payload = "z".repeat(60 * 1024);
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&server, "slow_clients_dropped_total{reason=\"queue_age\"}") == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never dropped"
        );
        // Enough to fill the kernel's buffers so frames wait in our queue.
        for _ in 0..10 {
            ids.push(publish(&server, "age", &payload));
        }
        let last = *ids.last().unwrap();
        assert!(fast.read_until(|items| has_event(items, last)));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        counter(
            &server,
            "slow_clients_dropped_total{reason=\"queue_bytes\"}"
        ),
        0
    );
    assert_eq!(fast.event_ids(), ids, "the fast client got everything");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(&["--workers", "1", "--idle-timeout-ms", "300"]);
    let mut s = server.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.contains("keep-alive"), "{head}");
    let started = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("closed by the server");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// With io_uring_setup forbidden by a seccomp filter (as container runtimes
/// do by default), the node exits 1 with one line naming cause and fix.
#[cfg(target_arch = "x86_64")]
#[test]
fn io_uring_forbidden_by_seccomp_exits_1_naming_the_cause() {
    use std::os::unix::process::CommandExt;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const SYS_IO_URING_SETUP: u32 = 425;
    fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: 0x05 | 0x10,
            jt: 0,
            jf,
            k,
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stentor"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; only prctl calls on a
    // filter that lives on this stack frame until they return.
    unsafe {
        cmd.pre_exec(|| {
            let mut filter = [
                stmt(0x20, 4),              // ld arch
                jeq(AUDIT_ARCH_X86_64, 3),  // other arch: allow
                stmt(0x20, 0),              // ld syscall nr
                jeq(SYS_IO_URING_SETUP, 1), // other syscall: allow
                stmt(0x06, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
                stmt(0x06, libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn under seccomp");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stentor did not exit under seccomp");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("io_uring") && err.contains("seccomp"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Idle subscribers held as io_uring direct descriptors on the client side
/// too, so one test process holds far more than its 20000-descriptor limit:
/// each socket is created, bound to a source address, connected and sent
/// its request as an ordinary descriptor, then moved into a ring's fixed
/// table and closed. 20000 connections per source address (127.0.0.2, .3,
/// ...) stay well under the ~28k ephemeral ports per address pair.
mod idle_clients {
    use std::os::fd::RawFd;
    use std::time::{Duration, Instant};

    use io_uring::{opcode, types, IoUring};

    pub const SLOTS_PER_RING: u32 = 19_000;
    pub const PER_SOURCE_ADDRESS: usize = 10_000;

    /// The client address of connection `i`: 127.77.B.H, away from the
    /// 127.0.0.x other tests and tools bind ports on (an explicitly bound
    /// port is taken for every destination, so sharing addresses with a
    /// concurrent run made connect() fail with EADDRNOTAVAIL).
    pub fn source_address(i: usize) -> [u8; 4] {
        let block = i / PER_SOURCE_ADDRESS;
        [127, 77, (block / 250) as u8, (block % 250 + 1) as u8]
    }
    const SCRATCH_BYTES: usize = 16 * 4096;

    pub struct Clients {
        rings: Vec<IoUring>,
        /// Bytes received so far, per connection (ring-major order).
        received: Vec<u32>,
        scratch: Vec<u8>,
    }

    fn connect_from(src: [u8; 4], port: u16, request: &[u8]) -> std::io::Result<RawFd> {
        // SAFETY: plain socket syscalls on a descriptor we own; every
        // pointer passed is to a live local of the right size.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let bind_addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_be_bytes(src).to_be(),
                },
                sin_zero: [0; 8],
            };
            let to = libc::sockaddr_in {
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                },
                ..bind_addr
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let one: i32 = 1;
            // Let many sockets share a source port pool across addresses.
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const i32).cast(),
                4,
            );
            if libc::bind(fd, (&bind_addr as *const libc::sockaddr_in).cast(), len) != 0
                || libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) != 0
                || libc::write(fd, request.as_ptr().cast(), request.len()) != request.len() as isize
            {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                return Err(e);
            }
            Ok(fd)
        }
    }

    impl Clients {
        /// Open `n` streams, `OPENERS` threads at a time (each fills whole
        /// rings of its own, so ring order is still connection order).
        pub fn open(port: u16, n: usize, request: &[u8], deadline: Instant) -> Clients {
            const OPENERS: usize = 4;
            let per_ring = SLOTS_PER_RING as usize;
            let rings_needed = n.div_ceil(per_ring);
            let mut handles = Vec::new();
            for t in 0..OPENERS {
                let request = request.to_vec();
                handles.push(std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for r in (t..rings_needed).step_by(OPENERS) {
                        let ring = IoUring::new(4096).expect("client ring");
                        ring.submitter()
                            .register_files_sparse(SLOTS_PER_RING)
                            .expect("client fixed table");
                        for i in r * per_ring..((r + 1) * per_ring).min(n) {
                            let slot = (i - r * per_ring) as u32;
                            let src = source_address(i);
                            let fd = connect_from(src, port, &request)
                                .unwrap_or_else(|e| panic!("connection {i} from {src:?}: {e}"));
                            ring.submitter()
                                .register_files_update(slot, &[fd])
                                .expect("install into fixed table");
                            // SAFETY: the ring holds its own reference now.
                            unsafe {
                                libc::close(fd);
                            }
                            assert!(Instant::now() < deadline, "opening took too long");
                        }
                        mine.push((r, ring));
                    }
                    mine
                }));
            }
            let mut rings: Vec<(usize, IoUring)> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("opener thread"))
                .collect();
            rings.sort_by_key(|(r, _)| *r);
            Clients {
                rings: rings.into_iter().map(|(_, ring)| ring).collect(),
                received: vec![0; n],
                scratch: vec![0; SCRATCH_BYTES],
            }
        }

        /// Receive (non-blocking) on every connection that has fewer than
        /// `want` bytes, until all have them or `within` passes. Returns how
        /// many reached `want`.
        pub fn receive_until(&mut self, want: u32, within: Duration) -> usize {
            let deadline = Instant::now() + within;
            loop {
                for (r, ring) in self.rings.iter_mut().enumerate() {
                    let base = r * SLOTS_PER_RING as usize;
                    let end = (base + SLOTS_PER_RING as usize).min(self.received.len());
                    let mut pending: Vec<u32> = (base..end)
                        .filter(|&i| self.received[i] < want)
                        .map(|i| (i - base) as u32)
                        .collect();
                    while !pending.is_empty() {
                        let batch: Vec<u32> = pending.drain(..pending.len().min(4096)).collect();
                        for &slot in &batch {
                            let off = (slot as usize % 16) * 4096;
                            let e = opcode::Recv::new(
                                types::Fixed(slot),
                                self.scratch[off..].as_mut_ptr(),
                                4096,
                            )
                            .flags(libc::MSG_DONTWAIT)
                            .build()
                            .user_data(u64::from(slot));
                            // SAFETY: scratch outlives the completion, which
                            // we wait for right below.
                            unsafe { ring.submission().push(&e).expect("sq space") };
                        }
                        ring.submit_and_wait(batch.len()).expect("client submit");
                        let done: Vec<(u64, i32)> = ring
                            .completion()
                            .map(|c| (c.user_data(), c.result()))
                            .collect();
                        assert_eq!(done.len(), batch.len());
                        for (slot, res) in done {
                            if res > 0 {
                                self.received[base + slot as usize] += res as u32;
                            }
                        }
                    }
                }
                let ok = self.received.iter().filter(|&&b| b >= want).count();
                if ok == self.received.len() || Instant::now() >= deadline {
                    return ok;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The kernel's side of many sockets: slab memory and socket counts.
fn kernel_memory() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    format!(
        "Slab={} SUnreclaim={} sockstat=[{}]",
        field("Slab:"),
        field("SUnreclaim:"),
        sockstat.lines().collect::<Vec<_>>().join("; ")
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ')'.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Memory per idle subscriber and one publish to all of them.
/// `STENTOR_IDLE_SUBSCRIBERS=100000 cargo test --release -p stentor --test
/// dataplane idle_subscribers_memory -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run by hand (docs/measurements/performance.md)"]
fn idle_subscribers_memory() {
    let n: usize = std::env::var("STENTOR_IDLE_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // `--max-connections` is all an operator sets for a big node: the
    // capacity plan gives each worker the rings its share needs.
    let max_connections = (n + 1_000).max(120_000).to_string();
    let server = Server::start(&[
        "--heartbeat-ms",
        "3600000",
        "--max-connections",
        &max_connections,
    ]);
    println!("{}", server.listening);
    let pid = server.child.id();
    // The exact preamble length (head, `: connected`, `retry:`), from one
    // ordinary stream: every idle client receives the same bytes.
    let request = b"GET /events?topic=idle HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut probe = server.connect();
    probe.write_all(request).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\n\n") || !seen.windows(7).any(|w| w == b"retry: ") {
        let k = probe.read(&mut buf).unwrap();
        assert!(k > 0, "probe stream closed");
        seen.extend_from_slice(&buf[..k]);
    }
    let preamble = seen.len();
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let mut clients = idle_clients::Clients::open(
        server.addr.port(),
        n,
        request,
        Instant::now() + Duration::from_secs(1800),
    );
    let opened = started.elapsed();
    let ready = clients.receive_until(preamble as u32, Duration::from_secs(600));
    assert_eq!(ready, n, "streams that got their preamble");
    // Let the allocator return what the connection burst used transiently
    // (request buffers, slab regrowth) before reading the steady state.
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = rss_kib(pid);
    println!("kernel_after_connect: {}", kernel_memory());
    let cpu_before = cpu_ticks(pid);
    let t0 = Instant::now();
    let id = publish(&server, "idle", "x");
    let event_len = format!("id: {id}\ndata: x\n\n").len();
    let reached = clients.receive_until((preamble + event_len) as u32, Duration::from_secs(600));
    let fanout = t0.elapsed();
    let cpu_after = cpu_ticks(pid);
    println!(
        "subscribers={n} opened_in={opened:?} rss_before_kib={rss_before} rss_after_kib={rss_after} \
         per_subscriber_bytes={} publish_reached={reached} fanout_time={fanout:?} server_cpu_ticks={}",
        (rss_after.saturating_sub(rss_before) * 1024) / n as u64,
        cpu_after - cpu_before
    );
    assert_eq!(reached, n, "one publish must reach every subscriber");
    let mut server = server;
    let t1 = Instant::now();
    let status = server.terminate(Duration::from_secs(30));
    println!(
        "shutdown_with_subscribers={n} took={:?} status={status:?}",
        t1.elapsed()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {:#?}",
        server.log_lines(Duration::from_millis(200))
    );
}
