//! Fleet mode end to end: several real `stentor` nodes on loopback sharing
//! one real `redis-server` (`--broker redis://…`): a publish on one node
//! reaches every node with the same ids, clients resume on another node
//! (from its memory or from Redis), a node killed, Redis lost with and
//! without its data, publishing while it is down, a reader that fell
//! behind the log, 10,000 topics, pipelined publishes, and readiness
//! following the broker.
//!
//! Each test starts its own `redis-server` on a free loopback port in a
//! fresh directory and kills it by PID; nodes are killed by PID too. Without
//! `redis-server` the tests are skipped, unless `CI` is set: then they fail
//! (`.ci/install-deps` installs it).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::client::{connect, get, ids_of, post_json, publish, publish_one, Stream};
use support::redis::{require_redis, Redis, TempDir};
use support::Server;

/// Longest a test waits for something the fleet does on its own (a
/// reconnect, readiness).
const WAIT: Duration = Duration::from_secs(15);

/// A node of the fleet on `redis`, one worker (the machine is shared).
fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec![
        "--workers",
        "1",
        "--broker",
        url.as_str(),
        "--broker-connect-timeout-ms",
        "300",
        "--broker-io-timeout-ms",
        "1000",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    wait_ready(&server);
    server
}

fn wait_ready(server: &Server) {
    let until = Instant::now() + WAIT;
    loop {
        let a = get(server, "/readyz");
        if a.status == 200 {
            return;
        }
        assert!(Instant::now() < until, "never ready: {} {}", a.head, a.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free port below Linux's ephemeral range (32768 and up): the node
/// keeps trying to connect to it before Redis is there, and a connect to an
/// ephemeral port nobody listens on can connect to itself and hold the port.
fn port_outside_ephemeral_range() -> u16 {
    let mut seed = std::process::id() as u64 * 2_654_435_761;
    for _ in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 20_000 + (seed % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

fn assert_increasing(ids: &[u64]) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not strictly increasing: {ids:?}"
    );
}

#[test]
fn a_publish_on_one_node_reaches_every_node_with_the_same_ids() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-fanout");
    let redis = Redis::start(&dir.0);
    let nodes = [node(&redis, &[]), node(&redis, &[]), node(&redis, &[])];
    let mut streams: Vec<Stream> = nodes
        .iter()
        .map(|n| Stream::open(n, "/events?topic=a&topic=b", ""))
        .collect();
    let mut sent = publish(
        &nodes[0],
        r#"[{"topic":"a","data":"1"},{"topic":"b","data":"2"},{"topic":"c","data":"x"}]"#,
    );
    sent.extend(publish(&nodes[1], r#"{"topic":"a","data":"3"}"#));
    assert_increasing(&sent);
    let want: Vec<u64> = [sent[0], sent[1], sent[3]].to_vec();
    for s in &mut streams {
        s.wait_for_id(want[2]);
        assert_eq!(s.ids(), want, "every node, the same ids in the same order");
        let data: Vec<String> = s.events().iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, ["1", "2", "3"]);
    }
    // The node's own publish came back through the log, not at publish
    // time: its metrics count it as read.
    let m = support::scrape(nodes[0].addr);
    assert!(
        support::metric(&m, "stentor_broker_events_read_total") >= 4.0,
        "{m}"
    );
    assert_eq!(support::metric(&m, "stentor_broker_connected"), 1.0);
}

#[test]
fn multi_topic_resume_across_nodes_with_same_millisecond_publishes() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-resume");
    let redis = Redis::start(&dir.0);
    let (one, two) = (node(&redis, &[]), node(&redis, &[]));
    let mut first = Stream::open(&one, "/events?topic=x&topic=y", "");
    // Batches land in the same millisecond: the ids still order them.
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.extend(publish(
            &one,
            &format!(r#"[{{"topic":"x","data":"x{i}"}},{{"topic":"y","data":"y{i}"}}]"#),
        ));
    }
    assert_increasing(&sent);
    first.wait_for_id(sent[3]);
    let seen = first.ids();
    let resume_from = seen[3];
    drop(first);
    // More while the client is away, published on the other node.
    for i in 5..8 {
        sent.extend(publish(
            &two,
            &format!(r#"[{{"topic":"y","data":"y{i}"}},{{"topic":"x","data":"x{i}"}}]"#),
        ));
    }
    let last = *sent.last().expect("sent");
    let mut again = Stream::open(
        &two,
        "/events?topic=x&topic=y",
        &format!("Last-Event-ID: {resume_from}\r\n"),
    );
    again.wait_for_id(last);
    let want: Vec<u64> = sent
        .iter()
        .copied()
        .filter(|id| *id > resume_from)
        .collect();
    assert_eq!(again.ids(), want, "exactly the events after the id, once");
    assert!(again.notices().is_empty(), "{:?}", again.notices());
}

#[test]
fn a_killed_node_s_clients_resume_on_another_exactly_once() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-kill");
    let redis = Redis::start(&dir.0);
    let mut doomed = node(&redis, &[]);
    let (other, publisher) = (node(&redis, &[]), node(&redis, &[]));
    let mut clients: Vec<Stream> = (0..5)
        .map(|_| Stream::open(&doomed, "/events?topic=k", ""))
        .collect();
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(publish_one(&publisher, "k", &format!("{i}")));
    }
    for c in &mut clients {
        c.wait_for_id(sent[9]);
    }
    // SIGKILL: no goodbye to the clients.
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    for i in 10..20 {
        sent.push(publish_one(&publisher, "k", &format!("{i}")));
    }
    for c in &mut clients {
        let last_seen = *c.ids().last().expect("saw some");
        let mut resumed = Stream::open(
            &other,
            "/events?topic=k",
            &format!("Last-Event-ID: {last_seen}\r\n"),
        );
        resumed.wait_for_id(sent[19]);
        let mut all = c.ids();
        all.extend(resumed.ids());
        assert_eq!(all, sent, "every event exactly once across the two nodes");
    }
}

#[test]
fn redis_lost_with_aof_keeps_every_acknowledged_event_and_publishing_is_503_meanwhile() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-aof");
    let mut redis = Redis::start_with(&dir.0, &["--appendonly", "yes", "--appendfsync", "always"]);
    let (one, two) = (node(&redis, &[]), node(&redis, &[]));
    let mut s = Stream::open(&two, "/events?topic=p", "");
    let before: Vec<u64> = (0..5)
        .map(|i| publish_one(&one, "p", &i.to_string()))
        .collect();
    s.wait_for_id(before[4]);
    redis.kill();
    // Down: publishing is refused with a reason and a retry hint, never
    // acknowledged; readiness says so; liveness does not.
    let until = Instant::now() + WAIT;
    let refused = loop {
        let a = post_json(&one, r#"{"topic":"p","data":"lost?"}"#);
        if a.status == 503 {
            break a;
        }
        assert_eq!(a.status, 200, "{} {}", a.head, a.body);
        assert!(Instant::now() < until, "publishing never failed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        refused.body.contains("broker unavailable"),
        "{}",
        refused.body
    );
    assert!(refused.head.contains("Retry-After: "), "{}", refused.head);
    let until = Instant::now() + WAIT;
    while get(&one, "/readyz").status != 503 {
        assert!(Instant::now() < until, "readyz stayed 200 without Redis");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&one, "/healthz").status, 200);
    let m = support::scrape(one.addr);
    assert!(m.contains("limit=\"broker_unavailable\""), "{m}");
    redis.restart();
    wait_ready(&one);
    wait_ready(&two);
    let after = publish_one(&one, "p", "after");
    s.wait_for_id(after);
    let ids = s.ids();
    assert_increasing(&ids);
    for id in &before {
        assert!(ids.contains(id), "acknowledged {id} missing: {ids:?}");
    }
    assert!(s.notices().is_empty(), "{:?}", s.notices());
}

#[test]
fn redis_lost_without_data_resets_streams_and_ids_never_go_back() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-reset");
    let empty = TempDir::new("cluster-reset-empty");
    let mut redis = Redis::start(&dir.0);
    let (one, two) = (node(&redis, &[]), node(&redis, &[]));
    let mut s = Stream::open(&two, "/events?topic=r", "");
    let before: Vec<u64> = (0..3)
        .map(|i| publish_one(&one, "r", &i.to_string()))
        .collect();
    s.wait_for_id(before[2]);
    redis.restart_empty(&empty.0);
    wait_ready(&one);
    wait_ready(&two);
    let until = Instant::now() + WAIT;
    let after = loop {
        let a = post_json(&one, r#"{"topic":"r","data":"new run"}"#);
        if a.status == 200 {
            break ids_of(&a)[0];
        }
        assert!(Instant::now() < until, "publishing never came back");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        after > before[2],
        "the new run's id {after} is above {}",
        before[2]
    );
    s.wait_for_id(after);
    assert_eq!(s.notices(), ["broker_reset"], "one notice, at the reset");
    let ids = s.ids();
    assert_increasing(&ids);
    // A resume from before the reset is told so.
    let mut late = Stream::open(
        &two,
        "/events?topic=r",
        &format!("Last-Event-ID: {}\r\n", before[1]),
    );
    assert!(late.read_until(|e| !e.is_empty()));
    assert_eq!(
        late.notices().first().map(String::as_str),
        Some("broker_reset")
    );
}

#[test]
fn a_node_started_before_redis_serves_and_becomes_ready_when_it_comes() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-late");
    let port = port_outside_ephemeral_range();
    let url = format!("redis://127.0.0.1:{port}/");
    let server = Server::start(&[
        "--workers",
        "1",
        "--broker",
        &url,
        "--broker-connect-timeout-ms",
        "300",
    ]);
    assert_eq!(get(&server, "/healthz").status, 200);
    let not_ready = get(&server, "/readyz");
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert!(not_ready.body.contains("broker"), "{}", not_ready.body);
    assert_eq!(
        post_json(&server, r#"{"topic":"l","data":"x"}"#).status,
        503
    );
    let _redis = Redis::start_on(&dir.0, port, &["--appendonly", "no"]);
    wait_ready(&server);
    let mut s = Stream::open(&server, "/events?topic=l", "");
    let id = publish_one(&server, "l", "hello");
    s.wait_for_id(id);
    assert_eq!(s.events()[0].data, "hello");
}

#[test]
fn a_slow_resume_past_retention_gets_stentor_missed() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-trim");
    let redis = Redis::start(&dir.0);
    let args = ["--history-events-max", "10"];
    let (one, two) = (node(&redis, &args), node(&redis, &args));
    let mut s = Stream::open(&two, "/events?topic=t", "");
    let first = publish_one(&one, "t", "first");
    s.wait_for_id(first);
    drop(s);
    let mut sent = Vec::new();
    for chunk in 0..10 {
        let batch: Vec<String> = (0..10)
            .map(|i| format!(r#"{{"topic":"t","data":"{chunk}-{i}"}}"#))
            .collect();
        sent.extend(publish(&one, &format!("[{}]", batch.join(","))));
    }
    let last = *sent.last().expect("ids");
    let mut back = Stream::open(
        &two,
        "/events?topic=t",
        &format!("Last-Event-ID: {first}\r\n"),
    );
    back.wait_for_id(last);
    assert_eq!(back.notices(), ["evicted"]);
    // What the node kept (history evicts in chunks): the newest, in order,
    // none missing after the notice.
    let ids = back.ids();
    assert!(ids.len() >= 10 && ids.len() < sent.len(), "{ids:?}");
    assert_eq!(ids, sent[sent.len() - ids.len()..]);
}

#[test]
fn ten_thousand_topics_published_at_random_reach_their_subscribers() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-topics");
    let redis = Redis::start(&dir.0);
    let args = ["--topics-max", "20000"];
    let (one, two) = (node(&redis, &args), node(&redis, &args));
    let watched = ["t17", "t4242", "t9999"];
    let target = format!("/events?topic={}", watched.join("&topic="));
    let mut s = Stream::open(&two, &target, "");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut want = BTreeSet::new();
    let mut topics_hit = BTreeSet::new();
    for _ in 0..20 {
        let mut batch = Vec::new();
        let mut names = Vec::new();
        for i in 0..500 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Every topic once over the run, then a few at random.
            let n = if topics_hit.len() < 10_000 {
                topics_hit.len() as u64
            } else {
                seed % 10_000
            };
            let name = format!("t{n}");
            topics_hit.insert(name.clone());
            batch.push(format!(r#"{{"topic":"{name}","data":"{i}"}}"#));
            names.push(name);
        }
        let ids = publish(&one, &format!("[{}]", batch.join(",")));
        for (id, name) in ids.iter().zip(&names) {
            if watched.contains(&name.as_str()) {
                want.insert(*id);
            }
        }
    }
    assert_eq!(topics_hit.len(), 10_000);
    let last = *want.iter().next_back().expect("watched topics were hit");
    s.wait_for_id(last);
    let got: BTreeSet<u64> = s.ids().into_iter().collect();
    assert_eq!(got, want);
}

#[test]
fn a_resume_from_before_a_node_started_is_served_from_redis() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-range");
    let redis = Redis::start(&dir.0);
    let old = node(&redis, &[]);
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.extend(publish(
            &old,
            &format!(r#"[{{"topic":"m","data":"m{i}"}},{{"topic":"n","data":"n{i}"}},{{"topic":"o","data":"o{i}"}}]"#),
        ));
    }
    // A node that started after every one of these: its memory has none.
    let young = node(&redis, &[]);
    let resume_from = sent[4];
    let mut s = Stream::open(
        &young,
        "/events?topic=m&topic=n",
        &format!("Last-Event-ID: {resume_from}\r\n"),
    );
    // Live events published meanwhile come after the replay, once.
    let live = publish(
        &old,
        r#"[{"topic":"n","data":"live"},{"topic":"m","data":"live2"}]"#,
    );
    s.wait_for_id(live[1]);
    let want: Vec<u64> = sent
        .iter()
        .enumerate()
        .filter(|(i, id)| **id > resume_from && i % 3 != 2)
        .map(|(_, id)| *id)
        .chain(live.iter().copied())
        .collect();
    assert_eq!(s.ids(), want, "the replay from Redis, then live, each once");
    assert!(s.notices().is_empty(), "{:?}", s.notices());
    let m = support::scrape(young.addr);
    assert_eq!(
        support::metric(&m, "stentor_broker_resumes_total"),
        1.0,
        "{m}"
    );
    // From before Redis's retention: the notice, then what Redis keeps.
    let trimmed = node(&redis, &["--history-events-max", "2"]);
    for i in 0..20 {
        publish_one(&trimmed, "q", &format!("{i}"));
    }
    let newest = publish_one(&trimmed, "q", "newest");
    let fresh = node(&redis, &["--history-events-max", "2"]);
    let mut late = Stream::open(
        &fresh,
        "/events?topic=q",
        &format!("Last-Event-ID: {}\r\n", sent[0]),
    );
    late.wait_for_id(newest);
    assert_eq!(late.notices(), ["evicted"]);
}

/// One keep-alive connection publishing `n` requests of `batch` events in
/// turn: each request's round trip in microseconds.
fn publish_round_trips(server: &Server, n: usize, batch: usize) -> Vec<u64> {
    let mut s = connect(server);
    let body = if batch == 1 {
        r#"{"topic":"bench","data":"0123456789012345678901234567890123456789"}"#.to_string()
    } else {
        let one = r#"{"topic":"bench","data":"0123456789012345678901234567890123456789"}"#;
        format!("[{}]", vec![one; batch].join(","))
    };
    let req = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut rtts = Vec::with_capacity(n);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(req.as_bytes()).expect("write");
        let mut got = Vec::new();
        loop {
            let k = s.read(&mut buf).expect("read");
            assert!(k > 0, "closed");
            got.extend_from_slice(&buf[..k]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("length");
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        rtts.push(t.elapsed().as_micros() as u64);
    }
    rtts
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The publish figures quoted in `docs/measurements/performance.md`: one keep-alive
/// publisher, one event per request and 100 per request, embedded and
/// through Redis, alternating, three rounds each. Release build:
/// `cargo test --release -p stentor --test cluster -- --ignored --nocapture measure`
#[test]
#[ignore]
fn measure_publish_through_redis_against_embedded() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-measure");
    let redis = Redis::start(&dir.0);
    let fleet = node(&redis, &[]);
    let alone = Server::start(&["--workers", "1"]);
    for round in 0..3 {
        for (name, server) in [("embedded", &alone), ("redis", &fleet)] {
            for (n, batch) in [(2_000, 1), (200, 100)] {
                let t = Instant::now();
                let mut rtts = publish_round_trips(server, n, batch);
                let secs = t.elapsed().as_secs_f64();
                rtts.sort_unstable();
                println!(
                    "round={round} broker={name} batch={batch} requests={n} \
                     events_per_s={:.0} rtt_us_p50={} rtt_us_p99={}",
                    (n * batch) as f64 / secs,
                    pct(&rtts, 0.5),
                    pct(&rtts, 0.99)
                );
            }
        }
    }
}

#[test]
fn pipelined_publishes_are_answered_in_order_without_blocking_other_clients() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-pipeline");
    let redis = Redis::start(&dir.0);
    let one = node(&redis, &[]);
    let mut s = connect(&one);
    let mut raw = String::new();
    for i in 0..20 {
        let body = format!(r#"{{"topic":"pp","data":"{i}"}}"#);
        raw.push_str(&format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    raw.push_str("GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).expect("write");
    // Another client is served meanwhile.
    assert_eq!(get(&one, "/healthz").status, 200);
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    let ids: Vec<u64> = text
        .match_indices("\"ids\":[")
        .map(|(at, m)| {
            let rest = &text[at + m.len()..];
            rest[..rest.find(']').expect("]")].parse().expect("id")
        })
        .collect();
    assert_eq!(ids.len(), 20, "{text}");
    assert_increasing(&ids);
    assert!(
        text.trim_end().ends_with("ready"),
        "the GET is answered last: {text}"
    );
}

#[test]
fn a_node_whose_reader_fell_behind_the_log_tells_its_streams() {
    if !require_redis() {
        return;
    }
    let dir = TempDir::new("cluster-gap");
    let redis = Redis::start(&dir.0);
    let args = ["--broker-log-events-max", "1000"];
    let (one, two) = (node(&redis, &args), node(&redis, &args));
    let mut s = Stream::open(&two, "/events?topic=g", "");
    let first = publish_one(&one, "g", "before");
    s.wait_for_id(first);
    // Node 2 stops (SIGSTOP: a stalled node) while the log moves on well
    // past its length; its reader then finds its place trimmed away.
    // SAFETY: signals our own child by its PID.
    unsafe { libc::kill(two.pid(), libc::SIGSTOP) };
    for chunk in 0..5 {
        let batch: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"topic":"other","data":"{chunk}-{i}"}}"#))
            .collect();
        publish(&one, &format!("[{}]", batch.join(",")));
    }
    // SAFETY: as above.
    unsafe { libc::kill(two.pid(), libc::SIGCONT) };
    let after = publish_one(&one, "g", "after");
    s.wait_for_id(after);
    assert_eq!(s.notices(), ["evicted"], "the gap is announced, once");
    assert_eq!(s.ids(), [first, after]);
    let m = support::scrape(two.addr);
    assert_eq!(support::metric(&m, "stentor_broker_gaps_total"), 1.0, "{m}");
}
