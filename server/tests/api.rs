//! The native HTTP API against the real binary: publish bodies and their
//! refusals, ids, Last-Event-ID resume (and its seam under concurrent
//! publishing), missed notices, publish/subscribe auth, CORS, the page.
//!
//! Every server listens on a kernel-picked loopback port (the one test that
//! needs a non-loopback peer builds its own network namespace), every wait
//! is bounded, and every child is killed by PID when its test ends.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::client::{
    connect, ids_of, notice_reason, post, publish, publish_one, request, Stream,
};
use support::{Server, IO_TIMEOUT};

const TOKEN: &str = "test-token-0123456789abcdef";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[test]
fn publish_json_form_and_batch_reach_subscribers_in_id_order() {
    let server = Server::start(&["--workers", "2"]);
    let mut s = Stream::open(&server, "/events?topic=a&topic=b", "");
    let one = post(
        &server,
        "application/json",
        r#"{"topic":"a","event":"order","data":"line 1\nline 2\r\nü","retry":1500}"#,
        "",
    );
    assert_eq!(one.header("content-type"), Some("application/json"));
    let first = ids_of(&one);
    assert_eq!(
        one.body,
        format!(r#"{{"id":{},"ids":[{}]}}"#, first[0], first[0])
    );
    let form = ids_of(&post(
        &server,
        "application/x-www-form-urlencoded",
        "topic=b&data=from+a+form%0Aok&event=f",
        "",
    ));
    let batch = publish(
        &server,
        r#"[{"topic":"a","data":{"k": [1, 2.50]}},{"topic":"b","data":"two"},{"topic":"other","data":"x"},{"topic":"a","data":42}]"#,
    );
    assert_eq!(batch.len(), 4);
    assert!(first[0] < form[0] && form[0] < batch[0]);
    assert_eq!(
        batch,
        (batch[0]..batch[0] + 4).collect::<Vec<_>>(),
        "a batch's ids are consecutive"
    );
    s.wait_for_id(batch[3]);
    let got: Vec<(String, String, String)> = s
        .events()
        .iter()
        .map(|e| {
            (
                e.last_event_id.clone(),
                e.event_type.clone(),
                e.data.clone(),
            )
        })
        .collect();
    let want = [
        (first[0], "order", "line 1\nline 2\nü"),
        (form[0], "f", "from a form\nok"),
        (batch[0], "message", r#"{"k":[1,2.50]}"#),
        (batch[1], "message", "two"),
        (batch[3], "message", "42"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(i, t, d)| (i.to_string(), t.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn publish_errors_name_the_field() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--publish-batch-events-max",
        "2",
        "--body-bytes-max",
        "4096",
    ]);
    let json = "application/json";
    for (body, status, field) in [
        (r#"{"data":"x"}"#, 400, Some("topic")),
        (r#"{"topic":"a b","data":"x"}"#, 400, Some("topic")),
        (r#"{"topic":"a"}"#, 400, Some("data")),
        (
            r#"{"topic":"a","data":"x","event":"a\nb"}"#,
            400,
            Some("event"),
        ),
        (
            r#"{"topic":"a","data":"x","event":"stentor.missed"}"#,
            400,
            Some("event"),
        ),
        (r#"{"topic":"a","data":"x","retry":-1}"#, 400, Some("retry")),
        (r#"{"topic":"a","data":"x","id":"7"}"#, 400, Some("id")),
        (r#"{"topic":"a","data":"x""#, 400, None),
        (r#"{"topic":"a","data":"x","evnt":"typo"}"#, 400, None),
        ("[]", 400, None),
        (
            r#"[{"topic":"a","data":""},{"topic":"a","data":""},{"topic":"a","data":""}]"#,
            413,
            None,
        ),
    ] {
        let a = post(&server, json, body, "");
        assert_eq!(a.status, status, "{body}: {}", a.body);
        assert_eq!(a.header("content-type"), Some("application/json"), "{body}");
        let v: serde_json::Value = serde_json::from_str(&a.body).expect("error is JSON");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            a.body
        );
        assert_eq!(v["field"].as_str(), field, "{body}: {}", a.body);
    }
    for (body, field) in [
        ("data=x", "topic"),
        ("topic=a", "data"),
        ("topic=a&data=x&retry=1.5", "retry"),
        ("topic=a&data=x&id=1", "id"),
    ] {
        let a = post(&server, "application/x-www-form-urlencoded", body, "");
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(
            a.body.contains(&format!(r#""field":"{field}""#)),
            "{body}: {}",
            a.body
        );
    }
    let a = post(&server, "text/plain", "hello", "");
    assert_eq!(a.status, 415, "{}", a.body);
    assert!(a.body.contains("Content-Type"), "{}", a.body);
    let big = format!(r#"{{"topic":"a","data":"{}"}}"#, "x".repeat(5000));
    assert_eq!(post(&server, json, &big, "").status, 413);
    // The connection-level refusals leave the node serving.
    publish_one(&server, "a", "still fine");
}

#[test]
fn a_bad_batch_publishes_nothing() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = Stream::open(&server, "/events?topic=a", "");
    let before = publish_one(&server, "a", "before");
    let a = post(
        &server,
        "application/json",
        r#"[{"topic":"a","data":"1"},{"topic":"a","data":"2","retry":"soon"},{"topic":"a","data":"3"}]"#,
        "",
    );
    assert_eq!(a.status, 400);
    assert!(a.body.contains("events[1]: "), "{}", a.body);
    assert!(a.body.contains(r#""field":"retry""#), "{}", a.body);
    let after = publish_one(&server, "a", "after");
    assert_eq!(after, before + 1, "the refused batch used no ids");
    s.wait_for_id(after);
    let data: Vec<String> = s.events().into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["before", "after"]);
}

#[test]
fn ids_increase_strictly_across_topics_from_the_start_time() {
    let started_ms = now_ms();
    let server = Server::start(&["--workers", "2"]);
    let mut last = 0;
    for i in 0..30 {
        let id = publish_one(&server, &format!("t{}", i % 4), "x");
        assert!(id > last, "{id} after {last}");
        last = id;
    }
    // The hub's format: the run's start in Unix ms, times 1000, plus n.
    let epoch_ms = last / 1000;
    assert!(
        epoch_ms + 1 >= started_ms && epoch_ms <= now_ms(),
        "id {last} does not start at this run's start time {started_ms}"
    );
    assert_eq!(last % 1000, 30);
}

#[test]
fn resume_by_header_and_by_query_replays_then_goes_live() {
    let server = Server::start(&["--workers", "2"]);
    let ids: Vec<u64> = (1..=5)
        .map(|i| publish_one(&server, "r", &format!("e{i}")))
        .collect();
    let header = format!("Last-Event-ID: {}\r\n", ids[1]);
    let mut by_header = Stream::open(&server, "/events?topic=r", &header);
    let target = format!("/events?topic=r&lastEventId={}", ids[2]);
    let mut by_query = Stream::open(&server, &target, "");
    // The header wins over a stale query value (what a browser sends on
    // its own reconnect of an EventSource opened with ?lastEventId=).
    let both = format!("/events?topic=r&lastEventId={}", ids[0]);
    let mut both = Stream::open(&server, &both, &format!("Last-Event-ID: {}\r\n", ids[3]));
    by_header.wait_for_id(ids[4]);
    by_query.wait_for_id(ids[4]);
    both.wait_for_id(ids[4]);
    let live = publish_one(&server, "r", "live");
    for s in [&mut by_header, &mut by_query, &mut both] {
        s.wait_for_id(live);
    }
    assert_eq!(by_header.ids(), [ids[2], ids[3], ids[4], live]);
    assert_eq!(by_query.ids(), [ids[3], ids[4], live]);
    assert_eq!(both.ids(), [ids[4], live]);
    assert!(by_header.events().iter().all(|e| e.event_type == "message"));
    // Up to date: nothing replayed, no notice.
    let mut current = Stream::open(
        &server,
        "/events?topic=r",
        &format!("Last-Event-ID: {live}\r\n"),
    );
    let next = publish_one(&server, "r", "next");
    current.wait_for_id(next);
    assert_eq!(current.ids(), [next]);
    assert_eq!(current.events().len(), 1);
}

/// (id, topic index) of every publish, in id order.
type Published = Vec<(u64, usize)>;

/// A tiny xorshift: enough randomness for connect points, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A publisher thread publishes without pause to two topics while clients
/// connect with a Last-Event-ID picked at random among the ids already
/// handed out. Each client must see every later event of its topics exactly
/// once, in order: nothing lost and nothing doubled at the seam between the
/// replay (computed under the hub lock) and the live frames (some of which
/// already sat in the worker's inbox when the client subscribed).
#[test]
fn resume_seam_has_no_gap_and_no_duplicate_under_concurrent_publishing() {
    const CLIENTS: usize = 24;
    const PUBLISHES_MAX: usize = 90_000;
    let server = Server::start(&["--workers", "2", "--history-events-max", "100000"]);
    // (id, topic index) of every publish, in id order.
    let published: Arc<Mutex<Published>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let published = published.clone();
        let stop = stop.clone();
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).expect("connect publisher");
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) && n < PUBLISHES_MAX {
                let topic = n % 2;
                let body = format!(r#"{{"topic":"seam{topic}","data":"{n}"}}"#);
                // One write per request: `write!` would send each piece
                // as its own segment and slow the publisher to a crawl.
                let req = format!(
                    "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(req.as_bytes()).expect("publish");
                // Keep-alive: read exactly one answer (Content-Length).
                let body = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                        let len: usize = head
                            .split("content-length: ")
                            .nth(1)
                            .and_then(|r| r.lines().next())
                            .and_then(|v| v.trim().parse().ok())
                            .expect("content-length");
                        if buf.len() >= p + 4 + len {
                            let body =
                                String::from_utf8_lossy(&buf[p + 4..p + 4 + len]).into_owned();
                            assert!(head.starts_with("http/1.1 200"), "{head} {body}");
                            buf.drain(..p + 4 + len);
                            break body;
                        }
                    }
                    let got = s.read(&mut chunk).expect("read publish answer");
                    assert!(got > 0, "publisher connection closed");
                    buf.extend_from_slice(&chunk[..got]);
                };
                let id: u64 = body
                    .split_once("\"id\":")
                    .and_then(|(_, r)| r.split(',').next())
                    .and_then(|v| v.parse().ok())
                    .expect("id");
                published.lock().expect("lock").push((id, topic));
                n += 1;
            }
        })
    };
    let mut rng = Rng(now_ms() | 1);
    // Let some history build up first.
    while published.lock().expect("lock").len() < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Set once publishing stopped: what every client must end up with.
    let done: Arc<Mutex<Option<Published>>> = Arc::new(Mutex::new(None));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        let (from, topics) = {
            let p = published.lock().expect("lock");
            let back = rng.below(150) as usize + 1;
            let from = p[p.len() - back.min(p.len())].0;
            // A third of the clients follow one topic, the rest both.
            let topics: Vec<usize> = match c % 3 {
                0 => vec![c % 2],
                _ => vec![0, 1],
            };
            (from, topics)
        };
        let query: Vec<String> = topics.iter().map(|t| format!("topic=seam{t}")).collect();
        let target = format!("/events?{}", query.join("&"));
        let mut stream = Stream::open(&server, &target, &format!("Last-Event-ID: {from}\r\n"));
        // Read as we go, as a real client does, so no queue budget bites.
        let done = done.clone();
        clients.push(std::thread::spawn(move || {
            stream
                .sock
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut chunk = [0u8; 65536];
            loop {
                assert!(
                    Instant::now() < deadline,
                    "client from {from} never caught up"
                );
                let published = done.lock().expect("lock").clone();
                if let Some(published) = published {
                    let want: Vec<u64> = published
                        .iter()
                        .filter(|(id, t)| *id > from && topics.contains(t))
                        .map(|(id, _)| *id)
                        .collect();
                    let got = stream.ids();
                    if got.len() >= want.len() {
                        assert!(
                            stream
                                .events()
                                .iter()
                                .all(|e| e.event_type != "stentor.missed"),
                            "no notice expected: history holds everything"
                        );
                        assert_eq!(got, want, "client from {from} on {topics:?}");
                        return want.len();
                    }
                }
                match stream.sock.read(&mut chunk) {
                    Ok(0) => panic!("client from {from}: stream closed"),
                    Ok(n) => stream.parser.feed(&chunk[..n], &mut stream.items),
                    Err(_) => {} // timeout: check again
                }
            }
        }));
    }
    // Keep publishing a little after the last connect, then stop.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher thread");
    let published = published.lock().expect("lock").clone();
    let total = published.len();
    *done.lock().expect("lock") = Some(published);
    let mut checked = 0;
    for client in clients {
        checked += client.join().expect("client saw every event exactly once");
    }
    eprintln!("{CLIENTS} clients checked {checked} events; {total} published");
    assert!(checked >= CLIENTS, "clients saw live events");
}

#[test]
fn an_evicted_id_gets_a_missed_notice_then_what_is_kept() {
    let server = Server::start(&["--workers", "1", "--history-events-max", "3"]);
    let ids: Vec<u64> = (1..=5)
        .map(|i| publish_one(&server, "news", &format!("n{i}")))
        .collect();
    let mut s = Stream::open(
        &server,
        "/events?topic=news",
        &format!("Last-Event-ID: {}\r\n", ids[0]),
    );
    s.wait_for_id(ids[4]);
    let events = s.events();
    assert_eq!(notice_reason(&events[0]), "evicted");
    assert!(events[0]
        .data
        .contains(&format!("\"last_event_id\":\"{}\"", ids[0])));
    assert_eq!(s.ids(), [ids[2], ids[3], ids[4]]);
    // Everything after ids[1] is still kept: no notice.
    let mut exact = Stream::open(
        &server,
        "/events?topic=news",
        &format!("Last-Event-ID: {}\r\n", ids[1]),
    );
    exact.wait_for_id(ids[4]);
    assert!(exact.events().iter().all(|e| e.event_type == "message"));
    assert_eq!(exact.ids(), [ids[2], ids[3], ids[4]]);
}

#[test]
fn an_unknown_id_gets_a_missed_notice() {
    let server = Server::start(&["--workers", "1"]);
    let id = publish_one(&server, "u", "kept");
    for unknown in ["evt-123", "99999999999999999"] {
        let mut s = Stream::open(
            &server,
            "/events?topic=u",
            &format!("Last-Event-ID: {unknown}\r\n"),
        );
        s.wait_for_id(id);
        let events = s.events();
        assert_eq!(notice_reason(&events[0]), "unknown_id", "{unknown}");
        assert!(events[0].data.contains(unknown));
        assert_eq!(s.ids(), [id]);
    }
}

#[test]
fn a_replay_larger_than_the_budget_is_cut_not_dropped() {
    // 64 events of ~600 bytes = ~40 KB kept; --replay-events-max 40 cuts
    // the replay to the newest 40 (~26 KB, past the 16 KiB queue budget:
    // a replay is exempt from it until sent), after a notice.
    let server = Server::start(&[
        "--workers",
        "1",
        "--queue-bytes-max",
        "16384",
        "--replay-events-max",
        "40",
    ]);
    let payload = "p".repeat(600);
    let ids: Vec<u64> = (0..64)
        .map(|_| publish_one(&server, "big", &payload))
        .collect();
    let mut s = Stream::open(
        &server,
        "/events?topic=big",
        &format!("Last-Event-ID: {}\r\n", ids[0]),
    );
    s.wait_for_id(ids[63]);
    let events = s.events();
    assert_eq!(notice_reason(&events[0]), "too_far_behind");
    let got = s.ids();
    assert_eq!(got.len(), 40, "{} events replayed", got.len());
    assert_eq!(got, ids[64 - got.len()..], "the newest, in order");
    // Still connected: a live event arrives.
    let live = publish_one(&server, "big", "live");
    s.wait_for_id(live);
}

#[test]
fn a_resume_pipelined_behind_other_answers_does_not_hurt_the_node() {
    // The page's answer (~9 KiB) is still queued when a replay of half the
    // queue budget is added behind it: together past the budget.
    let server = Server::start(&["--workers", "1", "--queue-bytes-max", "16384"]);
    let ids: Vec<u64> = (0..40)
        .map(|_| publish_one(&server, "pipe", &"q".repeat(300)))
        .collect();
    let mut s = connect(&server);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /events?topic=pipe HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {}\r\n\r\n",
        ids[0]
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut all = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + IO_TIMEOUT;
    let last = format!("id: {}", ids[39]);
    while Instant::now() < deadline && !String::from_utf8_lossy(&all).contains(&last) {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(
        text.contains("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"),
        "the stream's head follows the page: {text}"
    );
    assert!(text.contains(&last), "the newest replayed event arrived");
    // The node still serves.
    let a = request(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    publish_one(&server, "pipe", "after");
}

#[test]
fn an_id_from_before_a_restart_gets_a_missed_notice() {
    let first = Server::start(&["--workers", "1"]);
    let old = publish_one(&first, "re", "old");
    drop(first);
    std::thread::sleep(Duration::from_millis(5));
    let second = Server::start(&["--workers", "1"]);
    // Nothing kept yet: the notice alone, carrying the id to resume from.
    let mut s = Stream::open(
        &second,
        "/events?topic=re",
        &format!("Last-Event-ID: {old}\r\n"),
    );
    assert!(s.read_until(|e| !e.is_empty()), "no notice");
    let notice = &s.events()[0];
    assert_eq!(notice_reason(notice), "restarted");
    let resume_from: u64 = notice.last_event_id.parse().expect("notice carries an id");
    assert!(resume_from < publish_one(&second, "re", "probe"));
    let new = publish_one(&second, "re", "new");
    assert!(new > old, "ids keep increasing across restarts");
    let mut s = Stream::open(
        &second,
        "/events?topic=re",
        &format!("Last-Event-ID: {old}\r\n"),
    );
    s.wait_for_id(new);
    assert_eq!(notice_reason(&s.events()[0]), "restarted");
    assert_eq!(s.ids(), [new - 1, new]);
}

#[test]
fn a_node_full_of_topics_forgets_the_ones_nobody_listens_to() {
    let server = Server::start(&["--workers", "2", "--topics-max", "2"]);
    let mut kept = Stream::open(&server, "/events?topic=kept", "");
    let first = publish_one(&server, "kept", "k");
    publish_one(&server, "gone", "g");
    // "gone" has no stream: forgotten to make room for "new".
    publish_one(&server, "new", "n");
    kept.wait_for_id(first);
    // A resume into the forgotten topic says events may be missed.
    let mut r = Stream::open(
        &server,
        "/events?topic=gone",
        &format!("Last-Event-ID: {first}\r\n"),
    );
    assert!(r.read_until(|e| !e.is_empty()), "no notice");
    assert_eq!(notice_reason(&r.events()[0]), "evicted");
    // Every held topic has a stream now ("new" by this one): 503.
    let n = Stream::open(&server, "/events?topic=new", "");
    let a = post(
        &server,
        "application/json",
        r#"{"topic":"third","data":"x"}"#,
        "",
    );
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains(r#""field":"topic""#), "{}", a.body);
    assert_eq!(a.header("retry-after"), Some("1"));
    // The stream on "new" ends: the node notices and "new" may go.
    drop(n);
    drop(r);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let a = post(
            &server,
            "application/json",
            r#"{"topic":"third","data":"x"}"#,
            "",
        );
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", a.body);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The listened topic kept its history.
    let mut again = Stream::open(
        &server,
        "/events?topic=kept",
        &format!("Last-Event-ID: {}\r\n", first - 1),
    );
    again.wait_for_id(first);
    assert_eq!(again.ids(), [first]);
}

#[test]
fn publish_needs_the_token_when_one_is_set() {
    let server = Server::start(&["--workers", "1", "--publish-token", TOKEN]);
    let body = r#"{"topic":"a","data":"x"}"#;
    let json = "application/json";
    let a = post(&server, json, body, "");
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(
        a.header("www-authenticate"),
        Some(r#"Bearer realm="stentor""#)
    );
    assert!(a.body.contains("missing publish token"), "{}", a.body);
    let a = post(
        &server,
        json,
        body,
        "Authorization: Bearer not-the-token\r\n",
    );
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
    let a = post(
        &server,
        json,
        body,
        &format!("Authorization: Bearer {TOKEN}x\r\n"),
    );
    assert_eq!(a.status, 401, "a longer token is wrong too");
    let a = post(
        &server,
        json,
        body,
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(ids_of(&a).len(), 1);
}

/// Without a configured token an `Authorization` header is whatever the
/// client made up: it must not buy a fresh rate-limit bucket per request.
#[test]
fn made_up_tokens_do_not_escape_the_publish_rate_limit() {
    let server = Server::start(&["--workers", "1", "--publish-rate-per-s-max", "2"]);
    let body = r#"{"topic":"a","data":"x"}"#;
    let statuses: Vec<u16> = (0..6)
        .map(|i| {
            let auth = format!("Authorization: Bearer made-up-token-number-{i}\r\n");
            post(&server, "application/json", body, &auth).status
        })
        .collect();
    assert!(
        statuses.contains(&429),
        "six publishes at a 2/s limit with made-up tokens: {statuses:?}"
    );
}

#[test]
fn subscribing_needs_the_token_when_one_is_set() {
    let server = Server::start(&["--workers", "1", "--subscribe-token", TOKEN]);
    let s = Stream::try_open(&server, "/events?topic=a", "");
    assert!(s.head.starts_with("HTTP/1.1 401 "), "{}", s.head);
    assert!(s.head.contains("WWW-Authenticate: Bearer"), "{}", s.head);
    let s = Stream::try_open(
        &server,
        "/events?topic=a&access_token=wrong-token-0123456",
        "",
    );
    assert!(s.head.starts_with("HTTP/1.1 401 "), "{}", s.head);
    let mut by_query = Stream::open(
        &server,
        &format!("/events?topic=a&access_token={TOKEN}"),
        "",
    );
    let mut by_header = Stream::open(
        &server,
        "/events?topic=a",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    let id = publish_one(&server, "a", "x");
    by_query.wait_for_id(id);
    by_header.wait_for_id(id);
}

#[test]
fn cors_preflight_and_headers_for_listed_origins() {
    let server = Server::start(&["--workers", "1", "--cors-origin", "https://app.example"]);
    let a = request(
        &server,
        "OPTIONS /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type, authorization\r\n\r\n",
    );
    assert_eq!(a.status, 204, "{}", a.head);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(a.header("vary"), Some("Origin"));
    let methods = a.header("access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = a.header("access-control-allow-headers").unwrap_or_default();
    for h in ["Authorization", "Content-Type", "Last-Event-ID"] {
        assert!(headers.contains(h), "{headers}");
    }
    assert!(a.header("access-control-max-age").is_some());

    let s = Stream::open(
        &server,
        "/events?topic=c",
        "Origin: https://app.example\r\n",
    );
    assert!(
        s.head
            .contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{}",
        s.head
    );
    assert!(
        s.head
            .contains("Access-Control-Allow-Credentials: true\r\n"),
        "{}",
        s.head
    );
    // Another origin is not allowed: no Allow-Origin, so the browser refuses.
    let s = Stream::open(
        &server,
        "/events?topic=c",
        "Origin: https://evil.example\r\n",
    );
    assert!(
        !s.head.contains("Access-Control-Allow-Origin"),
        "{}",
        s.head
    );
    let a = post(
        &server,
        "application/json",
        r#"{"topic":"c","data":"x"}"#,
        "Origin: https://app.example\r\n",
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    let star = Server::start(&["--workers", "1", "--cors-origin", "*"]);
    let s = Stream::open(&star, "/events?topic=c", "Origin: https://any.example\r\n");
    assert!(
        s.head.contains("Access-Control-Allow-Origin: *\r\n"),
        "{}",
        s.head
    );
    assert!(
        !s.head.contains("Allow-Credentials"),
        "never * with credentials: {}",
        s.head
    );
}

#[test]
fn the_page_and_healthz() {
    let server = Server::start(&["--workers", "1"]);
    let a = request(
        &server,
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(a.body.contains("EventSource"), "the live page");
    assert!(
        !a.body.contains("https://"),
        "nothing fetched from elsewhere"
    );
    let a = request(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((a.status, a.body.trim()), (200, "ok"));
}

/// A network namespace joined to the host by a veth pair, so a test can
/// reach the server from a non-loopback address. Removed on drop (deleting
/// the namespace deletes its veth end, which deletes the host end).
struct NetNs {
    name: String,
    host_if: String,
}

const NS_HOST_ADDR: &str = "10.213.7.1";
const NS_PEER_ADDR: &str = "10.213.7.2";

impl NetNs {
    fn create() -> Result<NetNs, String> {
        let pid = std::process::id();
        let ns = NetNs {
            name: format!("stentor-api-{pid}"),
            host_if: format!("sth{}", pid % 1_000_000),
        };
        let peer_if = format!("stn{}", pid % 1_000_000);
        ns.run(&["netns", "add", &ns.name])?;
        ns.run(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ])?;
        ns.run(&["link", "set", &peer_if, "netns", &ns.name])?;
        ns.run(&[
            "addr",
            "add",
            &format!("{NS_HOST_ADDR}/30"),
            "dev",
            &ns.host_if,
        ])?;
        ns.run(&["link", "set", &ns.host_if, "up"])?;
        let inside = ["netns", "exec", &ns.name, "ip"];
        let addr = format!("{NS_PEER_ADDR}/30");
        for args in [
            vec!["addr", "add", &addr, "dev", &peer_if],
            vec!["link", "set", &peer_if, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let all: Vec<&str> = inside.iter().copied().chain(args).collect();
            ns.run(&all)?;
        }
        Ok(ns)
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// curl from inside the namespace; returns (status, body).
    fn curl(&self, url: &str, body: &str, extra_header: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.name,
            "curl",
            "-s",
            "--max-time",
            "10",
        ])
        .args([
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", body]);
        if let Some(h) = extra_header {
            cmd.args(["-H", h]);
        }
        let out = cmd
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.run(&["netns", "del", &self.name]);
        let _ = self.run(&["link", "del", &self.host_if]);
    }
}

/// Start stentor on the namespace's host address (not loopback).
fn start_on(addr: &str, extra: &[&str]) -> Server {
    let args: Vec<&str> = ["--workers", "1"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    Server::start_on(&format!("{addr}:0"), &args)
}

#[test]
fn publishing_from_a_non_loopback_peer_needs_a_token() {
    if !support::require_program("ip", "iproute2") || !support::require_program("curl", "curl") {
        return;
    }
    let ns = match NetNs::create() {
        Ok(ns) => ns,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("cannot build a test network namespace under CI: {e}");
            }
            eprintln!(
                "SKIPPED: cannot build a test network namespace ({e}); needs root and ip netns"
            );
            return;
        }
    };
    let body = r#"{"topic":"ns","data":"x"}"#;
    let open = start_on(NS_HOST_ADDR, &[]);
    let url = format!("http://{}/publish", open.addr);
    let (status, answer) = ns.curl(&url, body, None);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("loopback"), "{answer}");
    // Subscribing from there is fine, and so is /healthz.
    drop(open);

    let guarded = start_on(NS_HOST_ADDR, &["--publish-token", TOKEN]);
    let url = format!("http://{}/publish", guarded.addr);
    let (status, answer) = ns.curl(&url, body, None);
    assert_eq!(status, 401, "{answer}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, answer) = ns.curl(&url, body, Some(&auth));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"ids\":["), "{answer}");
    drop(guarded);
    drop(ns);
}
