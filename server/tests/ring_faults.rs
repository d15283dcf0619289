//! The ring never loses work: with submission failing on purpose
//! (`STENTOR_FAULT_SQ_FULL_EVERY`), with a CQ far too small for a broadcast
//! (`STENTOR_FAULT_CQ_ENTRIES`), and with a full fixed-file table
//! (`STENTOR_FAULT_FIXED_SLOTS`), the real binary still delivers every
//! event, answers requests, fires deadlines, frees slots and exits on
//! SIGTERM. Every test is bounded in time and count, on loopback.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{read_stream_head, scrape, Server};

const STREAMS: usize = 200;
const EVENTS: usize = 20;

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

fn open_stream(server: &Server, topic: &str) -> TcpStream {
    let mut s = server.connect();
    write!(s, "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_stream_head(&mut s);
    s
}

fn publish(server: &Server, topic: &str, n: usize) {
    let mut s = server.connect();
    for i in 0..n {
        let body = format!(r#"{{"topic":"{topic}","data":"e{i}"}}"#);
        write!(
            s,
            "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // One at a time: every publish must be answered.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
            let n = s.read(&mut buf).expect("publish answer");
            assert!(n > 0, "publish connection closed");
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head);
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        let want_len: usize = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length: ")
                    .or(l.strip_prefix("Content-Length: "))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let head_len = text.find("\r\n\r\n").unwrap() + 4;
        let mut have = head.len() - head_len;
        while have < want_len {
            have += s.read(&mut buf).expect("publish body");
        }
    }
}

/// Read `stream` until it has carried `events` `data:` lines.
fn read_events(stream: &mut TcpStream, events: usize) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(20);
    while String::from_utf8_lossy(&seen).matches("data: e").count() < events {
        assert!(Instant::now() < deadline, "stream stalled");
        let n = stream.read(&mut buf).expect("read stream");
        assert!(n > 0, "stream closed");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    for i in 0..events {
        assert!(text.contains(&format!("data: e{i}\n")), "event {i} missing");
    }
}

/// Everything a user relies on, under the fault the server was started with.
fn the_server_still_works(mut server: Server) {
    let baseline = gauge(&scrape(server.addr), "stentor_connections");
    let mut streams: Vec<TcpStream> = (0..STREAMS).map(|_| open_stream(&server, "t")).collect();
    publish(&server, "t", EVENTS);
    for s in streams.iter_mut() {
        read_events(s, EVENTS);
    }
    // A plain request is answered.
    let health = support::exchange(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    // Half a head: 408 at the request deadline (1 s here).
    let mut half = server.connect();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = half.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Closed connections give their slots back.
    drop(streams);
    drop(half);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = gauge(&scrape(server.addr), "stentor_connections");
        // The scrape's own connection may be counted.
        if now <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} connections open, {baseline} before"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A stream still open at SIGTERM is drained and the process exits 0.
    let _open = open_stream(&server, "t");
    let status = server
        .terminate(Duration::from_secs(8))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

const ARGS: &[&str] = &["--workers", "2", "--request-timeout-ms", "1000"];

#[test]
fn every_second_push_finding_the_sq_full_loses_nothing() {
    let server =
        Server::start_with_env("127.0.0.1:0", ARGS, &[("STENTOR_FAULT_SQ_FULL_EVERY", "2")]);
    the_server_still_works(server);
}

#[test]
fn every_third_push_finding_the_sq_full_loses_nothing() {
    let server =
        Server::start_with_env("127.0.0.1:0", ARGS, &[("STENTOR_FAULT_SQ_FULL_EVERY", "3")]);
    the_server_still_works(server);
}

/// 200 streams, 20 events: thousands of completions through a 16-entry CQ.
#[test]
fn a_cq_far_too_small_for_a_broadcast_loses_nothing() {
    let server = Server::start_with_env("127.0.0.1:0", ARGS, &[("STENTOR_FAULT_CQ_ENTRIES", "16")]);
    the_server_still_works(server);
}

/// A table of 40 slots: 8 connections held, 32 slots of headroom for
/// refusals. 60 more clients connect at once and wait before sending their
/// request, so the table fills; every one of them must get a 503 answer
/// (an accept that found the table full used to drop its client with a
/// reset, the kernel having already accepted it).
#[test]
fn clients_beyond_a_full_table_get_503_not_a_reset() {
    let server = Server::start_with_env(
        "127.0.0.1:0",
        &["--workers", "1", "--max-connections", "100"],
        &[("STENTOR_FAULT_FIXED_SLOTS", "40")],
    );
    let _held: Vec<TcpStream> = (0..8).map(|_| open_stream(&server, "t")).collect();
    let mut extra: Vec<TcpStream> = (0..60).map(|_| server.connect()).collect();
    // Let the server accept what it will.
    std::thread::sleep(Duration::from_millis(300));
    for s in extra.iter_mut() {
        s.write_all(b"GET /events?topic=t HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    for (i, s) in extra.iter_mut().enumerate() {
        let mut answer = Vec::new();
        let got = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 503 "),
            "client {i}: {got:?} {text:?}"
        );
    }
}
