//! Operating a node, against the real binary: readiness during a drain and
//! at the connection limit, the admin listener, spread reconnects on a
//! drain, SIGHUP reload, the access log.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{exchange, status_of, Server};

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn publish(addr: SocketAddr, token: Option<&str>, topic: &str, data: &str) -> u16 {
    let body = format!("topic={topic}&data={data}");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    status_of(&exchange(
        addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    ))
}

/// Open `GET /events?topic=..` and read its head.
fn open_stream(addr: SocketAddr, query: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET /events?{query} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes())
        .expect("write");
    support::read_stream_head(&mut s);
    s
}

fn signal(server: &Server, sig: i32) {
    // SAFETY: signals our own child by its PID.
    unsafe {
        libc::kill(server.pid(), sig);
    }
}

/// Poll `f` every 20 ms until it is true or `within` passes.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The admin port's address from its startup line.
fn admin_addr(server: &Server) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(line) = server.log.recv_timeout(Duration::from_millis(200)) {
            if line.contains("admin listening") {
                if let Some(a) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                {
                    return a.trim_matches('"').parse().expect("admin addr");
                }
            }
        }
    }
    panic!("no admin listening line");
}

/// SIGTERM: `/readyz` fails at once, while the node still serves (a new
/// stream opens, `/healthz` is 200) for `--drain-delay-ms`; only then does
/// it stop accepting and exit.
#[test]
fn readiness_fails_first_and_the_node_serves_through_the_drain_delay() {
    let mut server = Server::start(&[
        "--workers",
        "1",
        "--drain-delay-ms",
        "1500",
        "--reconnect-spread-ms",
        "0",
    ]);
    let ready = get(server.addr, "/readyz");
    assert_eq!(status_of(&ready), 200, "{ready}");
    let _stream = open_stream(server.addr, "topic=a", "");
    let signalled = Instant::now();
    signal(&server, libc::SIGTERM);
    assert!(
        eventually(Duration::from_millis(500), || {
            let r = get(server.addr, "/readyz");
            status_of(&r) == 503 && r.contains("draining")
        }),
        "/readyz did not fail at once"
    );
    assert_eq!(status_of(&get(server.addr, "/healthz")), 200);
    let _late = open_stream(server.addr, "topic=a", "");
    assert!(server.alive(), "stopped before the drain delay");
    // No second signal: that would end the delay early (as documented).
    let mut status = None;
    eventually(Duration::from_secs(10), || {
        status = server.child.try_wait().ok().flatten();
        status.is_some()
    });
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "exited after {:?}, before --drain-delay-ms",
        signalled.elapsed()
    );
}

/// `--admin-listen`: `/metrics`, `/readyz` and `/healthz` there; the public
/// port answers 404 for `/metrics`. Readiness says 503 at
/// `--max-connections` and 200 again once a connection closes.
#[test]
fn admin_port_serves_probes_and_readiness_follows_the_connection_limit() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--max-connections",
        "2",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = admin_addr(&server);
    assert_eq!(status_of(&get(server.addr, "/metrics")), 404);
    let metrics = get(admin, "/metrics");
    assert_eq!(status_of(&metrics), 200, "{metrics}");
    assert!(metrics.contains("stentor_last_event_id"), "{metrics}");
    assert!(metrics.contains("\nstentor_ready 1\n"), "{metrics}");
    assert_eq!(status_of(&get(admin, "/healthz")), 200);
    assert_eq!(status_of(&get(admin, "/readyz")), 200);
    assert_eq!(status_of(&get(admin, "/nowhere")), 404);
    let a = open_stream(server.addr, "topic=a", "");
    let _b = open_stream(server.addr, "topic=a", "");
    let full = get(admin, "/readyz");
    assert_eq!(status_of(&full), 503, "{full}");
    assert!(full.contains("max-connections"), "{full}");
    assert!(get(admin, "/metrics").contains("\nstentor_ready 0\n"));
    drop(a);
    assert!(
        eventually(Duration::from_secs(5), || status_of(&get(admin, "/readyz"))
            == 200),
        "/readyz stayed 503 after a connection closed"
    );
}

/// Read a stream until the server closes it; the last `retry:` value.
fn last_retry(mut s: TcpStream) -> Option<u64> {
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("retry: "))
        .and_then(|v| v.parse().ok())
}

/// Every stream a drain closes gets its own last `retry:`, `--retry-ms`
/// plus a delay uniform over `--reconnect-spread-ms`: spread, not equal.
#[test]
fn drained_streams_get_their_own_spread_retry() {
    let mut server = Server::start(&[
        "--workers",
        "2",
        "--retry-ms",
        "100",
        "--reconnect-spread-ms",
        "4000",
    ]);
    let streams: Vec<TcpStream> = (0..40)
        .map(|_| open_stream(server.addr, "topic=a", ""))
        .collect();
    signal(&server, libc::SIGTERM);
    let retries: Vec<u64> = streams
        .into_iter()
        .map(|s| last_retry(s).expect("a final retry"))
        .collect();
    assert!(server.terminate(Duration::from_secs(10)).is_some());
    assert!(
        retries.iter().all(|r| (100..4100).contains(r)),
        "{retries:?}"
    );
    let (min, max) = (
        *retries.iter().min().unwrap(),
        *retries.iter().max().unwrap(),
    );
    // 40 uniform draws over 4 s: the range is below 2 s with odds ~1e-10.
    assert!(max - min > 2000, "not spread: {retries:?}");
}

/// SIGHUP re-reads the config file: a new publish token works at once (the
/// workers pick it up on their next tick), the old one is refused, the
/// log level changes, and a setting that needs a restart is named.
#[test]
fn sighup_applies_live_settings_and_names_the_rest() {
    let dir = std::env::temp_dir().join(format!("stentor-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reload.toml");
    std::fs::write(
        &file,
        "publish-token = \"first-token-0123456789\"\nworkers = 1\n",
    )
    .unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    assert_eq!(
        publish(server.addr, Some("first-token-0123456789"), "a", "x"),
        200
    );
    std::fs::write(
        &file,
        "publish-token = \"second-token-0123456789\"\nworkers = 2\nlog-level = \"debug\"\n",
    )
    .unwrap();
    signal(&server, libc::SIGHUP);
    let mut said = Vec::new();
    let reloaded = eventually(Duration::from_secs(5), || {
        while let Ok(line) = server.log.try_recv() {
            said.push(line);
        }
        said.iter().any(|l| l.contains("configuration reloaded"))
    });
    assert!(reloaded, "{said:?}");
    let line = said
        .iter()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        line.contains("publish-token") && line.contains("log-level"),
        "{line}"
    );
    assert!(line.contains("needs_restart=workers"), "{line}");
    assert!(
        eventually(Duration::from_secs(2), || publish(
            server.addr,
            Some("second-token-0123456789"),
            "a",
            "y"
        ) == 200),
        "the new token was not taken"
    );
    assert_eq!(
        publish(server.addr, Some("first-token-0123456789"), "a", "z"),
        401
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--access-log`: a line per non-stream request and per stream open and
/// close; under a flood past `--access-log-lines-per-s-max` the rest are
/// counted in a summary line instead of written.
#[test]
fn access_log_lines_appear_and_are_rate_limited_under_a_flood() {
    let mut server = Server::start(&[
        "--workers",
        "1",
        "--access-log",
        "--access-log-lines-per-s-max",
        "5",
    ]);
    let stream = open_stream(server.addr, "topic=a", "");
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..60 {
        assert_eq!(status_of(&get(server.addr, "/healthz")), 200);
    }
    // The summary is due once a second, from the sweep.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(server.terminate(Duration::from_secs(10)).is_some());
    let lines = server.log_lines(Duration::from_millis(300));
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("msg=\"access\""))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("kind=stream_open") && l.contains("/events?topic=a")),
        "{lines:#?}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains("kind=stream_close") && l.contains("reason=")),
        "{lines:#?}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains("kind=request") && l.contains("status=200")),
        "{lines:#?}"
    );
    // 62 events in ~2 s at 5 lines/s (bursts of one second's worth).
    assert!(access.len() <= 20, "{} access lines written", access.len());
    let suppressed: u64 = lines
        .iter()
        .filter(|l| l.contains("access log lines suppressed"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("count="))
                .and_then(|c| c.parse::<u64>().ok())
        })
        .sum();
    assert!(suppressed >= 40, "suppressed {suppressed}: {lines:#?}");
}

/// A reload whose file does not validate changes nothing: the node says
/// why and keeps serving with the running configuration.
#[test]
fn a_bad_file_on_sighup_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("stentor-ops-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reload.toml");
    std::fs::write(&file, "publish-token = \"first-token-0123456789\"\n").unwrap();
    let mut server = Server::start(&["--workers", "1", "--config", file.to_str().unwrap()]);
    std::fs::write(
        &file,
        "publish-token = \"second-token-0123456789\"\nworkerz = 2\n",
    )
    .unwrap();
    signal(&server, libc::SIGHUP);
    let mut said = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            while let Ok(line) = server.log.try_recv() {
                said.push(line);
            }
            said.iter().any(|l| l.contains("reload failed"))
        }),
        "{said:?}"
    );
    assert!(said.iter().any(|l| l.contains("workerz")), "{said:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.alive());
    assert_eq!(
        publish(server.addr, Some("first-token-0123456789"), "a", "x"),
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CPUs a thread of `pid` may run on, as /proc lists them ("0-1", "3").
fn cpus_allowed(pid: i32, tid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// Each worker thread's CPU list, by thread name.
fn worker_cpus(pid: i32) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            let name = name.trim().to_string();
            name.starts_with("stentor-w")
                .then(|| (name, cpus_allowed(pid, &tid)))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn workers_get_a_cpu_each_unless_told_not_to() {
    let allowed = stentor::sys::allowed_cpus();
    if !(2..=64).contains(&allowed.len()) {
        eprintln!("skipped: this test wants 2..=64 CPUs, the process may use {allowed:?}");
        return;
    }
    // One worker per CPU (what --workers 0 gives): each on its own.
    let n = allowed.len().to_string();
    let server = Server::start(&["--workers", &n]);
    let expected: Vec<(String, String)> = allowed
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("stentor-w{i}"), c.to_string()))
        .collect();
    let mut pinned = worker_cpus(server.pid());
    pinned.sort_by_key(|(name, _)| name[9..].parse::<usize>().unwrap());
    assert_eq!(pinned, expected);
    assert!(
        server.listening.contains("pinned=\"cpus "),
        "{}",
        server.listening
    );
    drop(server);
    // Off, more workers than CPUs, fewer: every worker may run anywhere.
    let own = cpus_allowed(std::process::id() as i32, &std::process::id().to_string());
    let more = (allowed.len() + 1).to_string();
    for args in [
        &["--workers", &n, "--pin-workers", "off"][..],
        &["--workers", &more][..],
        &["--workers", "1"][..],
    ] {
        let server = Server::start(args);
        let cpus = worker_cpus(server.pid());
        assert!(!cpus.is_empty());
        assert!(
            cpus.iter().all(|(_, c)| *c == own),
            "{args:?}: {cpus:?}, process {own}"
        );
        assert!(
            server.listening.contains("pinned=\"off ("),
            "{}",
            server.listening
        );
    }
}
