//! `GET /metrics` read by real Prometheus parsers: `promtool check metrics`
//! (Debian's `prometheus` package) and the `prometheus_client` Python
//! parser (PyPI). Both must accept the exposition, and the values must move
//! as traffic flows: connections, streams, publishes, deliveries, sends,
//! refusals by limit. Missing tools skip the test, except under CI.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{connect_from, exchange, require_program, scrape, Server};

const PARSE_PY: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value, family.type])
print(json.dumps(out))
"#;

/// Samples keyed `name{k="v",...}` (labels sorted), as the Python parser
/// read them.
type Samples = HashMap<String, f64>;

fn run_with_stdin(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn python_parse(text: &str) -> Samples {
    let (ok, out) = run_with_stdin("python3", &["-c", PARSE_PY], text);
    assert!(
        ok,
        "prometheus_client refused the exposition: {out}\n{text}"
    );
    let rows: Vec<(String, HashMap<String, String>, f64, String)> =
        serde_json::from_str(out.trim()).expect("parser output is JSON");
    rows.into_iter()
        .map(|(name, labels, value, _)| {
            let mut labels: Vec<_> = labels.into_iter().collect();
            labels.sort();
            let labels: Vec<String> = labels
                .into_iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let key = if labels.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            (key, value)
        })
        .collect()
}

fn promtool_check(text: &str) {
    let (ok, out) = run_with_stdin("promtool", &["check", "metrics"], text);
    assert!(ok && out.trim().is_empty(), "promtool: {out}\n{text}");
}

fn value(s: &Samples, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:?}", s.keys().collect::<Vec<_>>()))
}

fn publish(server: &Server, topic: &str, data: &str) -> u16 {
    let body = format!("topic={topic}&data={data}");
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(server.addr, raw.as_bytes());
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// A stream from `from`; returns the socket once the head arrived.
fn open_stream(server: &Server, from: Ipv4Addr, topic: &str) -> TcpStream {
    let mut s = connect_from(from, server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("stream head");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// Read from `s` until `needle` was seen (bounded by the read timeout).
fn read_until(s: &mut TcpStream, needle: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut buf).expect("stream read");
        assert!(n > 0, "stream closed before {needle:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn metrics_pass_real_parsers_and_move_with_traffic() {
    let have_promtool = require_program("promtool", "apt-get install prometheus");
    let have_python = require_program("python3", "apt-get install python3")
        && (Command::new("python3")
            .args(["-c", "import prometheus_client"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            || {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "prometheus_client is required under CI (pip install prometheus_client)"
                );
                eprintln!("SKIPPED: python3 -m pip install prometheus_client");
                false
            });
    if !have_promtool && !have_python {
        return;
    }
    let check = |text: &str| -> Option<Samples> {
        if have_promtool {
            promtool_check(text);
        }
        have_python.then(|| python_parse(text))
    };

    let server = Server::start(&[
        "--workers",
        "2",
        "--max-connections-per-ip",
        "2",
        "--publish-rate-per-s-max",
        "5",
        "--heartbeat-ms",
        "3600000",
    ]);
    let before_text = scrape(server.addr);
    let before = check(&before_text);
    assert!(before_text.contains("# TYPE stentor_publish_seconds histogram"));

    // Traffic: two streams (from 127.0.0.3 and .4), three publishes, one
    // 404, one per-IP refusal (127.0.0.2 holds 2 idle connections), a burst
    // of publishes past the rate limit.
    let mut a = open_stream(&server, Ipv4Addr::new(127, 0, 0, 3), "m");
    let mut b = open_stream(&server, Ipv4Addr::new(127, 0, 0, 4), "m");
    for i in 0..3 {
        assert_eq!(publish(&server, "m", &format!("e{i}")), 200);
    }
    read_until(&mut a, "data: e2");
    read_until(&mut b, "data: e2");
    let not_found = exchange(
        server.addr,
        b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let from = Ipv4Addr::new(127, 0, 0, 2);
    // Each held connection gets one answer first, so the server has
    // surely accepted (and counted) it before the third one arrives.
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect_from(from, server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
            s
        })
        .collect();
    let mut third = connect_from(from, server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
    let statuses: Vec<u16> = (0..12)
        .map(|i| publish(&server, "m", &format!("r{i}")))
        .collect();
    assert!(
        statuses.contains(&429),
        "rate limit never bit: {statuses:?}"
    );
    // The 429 says when a token will be back (at 5/s: within a second).
    let body = "topic=m&data=again";
    let limited = exchange(
        server.addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(
        limited.starts_with("HTTP/1.1 429 ") && limited.contains("Retry-After: 1\r\n"),
        "{limited}"
    );

    // Gauges are refreshed by the 500 ms sweep: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after_text = loop {
        let text = scrape(server.addr);
        if text.contains("\nstentor_streams 2\n") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let after = check(&after_text);
    assert!(after_text.contains("\nstentor_streams 2\n"), "{after_text}");
    assert!(
        after_text.contains("stentor_refusals_total{status=\"429\",limit=\"per_ip\"} 1\n"),
        "{after_text}"
    );
    assert!(
        after_text.contains("stentor_refusals_total{status=\"404\",limit=\"not_found\"} 1\n"),
        "{after_text}"
    );

    let (Some(before), Some(after)) = (before, after) else {
        return; // promtool alone checked the syntax
    };
    let grew = |key: &str, by: f64| {
        let (x, y) = (value(&before, key), value(&after, key));
        assert!(y - x >= by, "{key}: {x} -> {y}, expected +{by}");
    };
    grew("stentor_connections_accepted_total", 8.0);
    grew("stentor_events_published_total", 3.0);
    grew("stentor_deliveries_total", 6.0);
    grew("stentor_sends_total", 2.0);
    grew("stentor_sent_bytes_total", 100.0);
    grew("stentor_frames_per_send_count", 2.0);
    grew("stentor_publish_seconds_count", 3.0);
    grew("stentor_ring_submissions_total", 10.0);
    grew("stentor_ring_completions_total", 10.0);
    grew("stentor_requests_total", 5.0);
    grew(
        "stentor_refusals_total{limit=\"publish_rate\",status=\"429\"}",
        1.0,
    );
    grew("stentor_connections_closed_total{reason=\"done\"}", 3.0);
    // Topic "m" has two subscribers, on one worker or one on each.
    let small = value(&after, "stentor_topics_by_subscribers{subscribers=\"1\"}")
        + 2.0
            * value(
                &after,
                "stentor_topics_by_subscribers{subscribers=\"2-10\"}",
            );
    assert_eq!(small, 2.0);
    assert!((1.0..=2.0).contains(&value(&after, "stentor_topics")));
    assert!(value(&after, "stentor_worker_busy_seconds_total{worker=\"0\"}") > 0.0);
    assert!(value(&after, "stentor_history_events") >= 3.0);
    assert!(value(&after, "stentor_connections") >= 4.0);
    assert!(
        value(&after, "stentor_publish_seconds_bucket{le=\"+Inf\"}")
            == value(&after, "stentor_publish_seconds_count")
    );
}
