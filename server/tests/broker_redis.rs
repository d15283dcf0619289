//! The Redis broker against a real `redis-server`: ids and their total order,
//! reading the log, resume ranges, trimming, Redis lost with and without its
//! data, publishing while it is down, 10,000 topics, and TLS.
//!
//! Each test starts its own `redis-server` on a free loopback port in a
//! fresh directory (no persistence unless the test needs it) and kills it by
//! PID. Without `redis-server` the tests are skipped, unless `CI` is set:
//! then they fail (`.ci/install-deps` installs it).
//!
//! `measure_round_trips_and_reading` (ignored) prints the figures quoted in
//! `docs/design/cluster.md`:
//! `cargo test --release -p stentor --test broker_redis -- --ignored --nocapture`

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use stentor::broker::redis::{
    block_async_signals, publish_wait_bound, spawn_publisher, spawn_reader, RedisBroker,
};
use stentor::broker::{
    BrokerErrorKind, BrokerEvent, BrokerOptions, BrokerShared, NewEvent, PublishJob, Read,
    ReaderMsg,
};
use support::redis::{free_port, require_redis, Redis, TempDir};

/// Longest a test waits for the reader thread to report something.
const WAIT: Duration = Duration::from_secs(10);

fn opts() -> BrokerOptions {
    BrokerOptions {
        read_block_ms: 100,
        connect_timeout_ms: 500,
        io_timeout_ms: 1_000,
        ..BrokerOptions::default()
    }
}

fn ev(topic: &str, data: &str) -> NewEvent {
    NewEvent {
        topic: topic.to_string(),
        event: None,
        data: data.to_string(),
        retry: None,
        private: false,
    }
}

/// A tiny deterministic generator, so a failure replays the same topics.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Reads the whole log after `after` until `n` events came (bounded).
fn read_n(b: &mut RedisBroker, mut after: u64, n: usize) -> Vec<BrokerEvent> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} events",
            out.len()
        );
        match b.read_after(after, 1_000, 100).expect("read_after") {
            Read::Events(events) => {
                if let Some(last) = events.last() {
                    after = last.id;
                }
                out.extend(events);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

/// The reader thread's messages, forwarded to a channel.
fn reader(
    url: &str,
    o: BrokerOptions,
    start_after: u64,
) -> (
    Arc<BrokerShared>,
    mpsc::Receiver<ReaderMsg>,
    thread::JoinHandle<()>,
) {
    let shared = Arc::new(BrokerShared::default());
    let (tx, rx) = mpsc::channel();
    let handle = spawn_reader(url, o, shared.clone(), start_after, move |m| {
        let _ = tx.send(m);
    })
    .expect("spawn reader");
    (shared, rx, handle)
}

/// Collects reader events until `pred` holds on what came (bounded); every
/// other message is returned alongside.
fn collect_until(
    rx: &mpsc::Receiver<ReaderMsg>,
    mut pred: impl FnMut(&[BrokerEvent]) -> bool,
) -> (Vec<BrokerEvent>, Vec<ReaderMsg>) {
    let mut events = Vec::new();
    let mut others = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !pred(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ReaderMsg::Events(e)) => events.extend(e),
            Ok(m) => others.push(m),
            Err(_) => panic!("reader stalled with {} events, {others:?}", events.len()),
        }
    }
    (events, others)
}

fn assert_strictly_increasing(ids: &[u64]) {
    for w in ids.windows(2) {
        assert!(
            w[0] < w[1],
            "ids not strictly increasing: {} then {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn ids_are_strictly_increasing_across_topics_and_concurrent_publishers() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-ids");
    let redis = Redis::start(&dir.0);
    let url = redis.url();
    let start = RedisBroker::connect(&url, opts())
        .unwrap()
        .last_id()
        .unwrap();
    assert_eq!(start, 0, "a fresh Redis has an empty log");
    let publishers: Vec<_> = (0..2u64)
        .map(|p| {
            let url = url.clone();
            thread::spawn(move || {
                let mut b = RedisBroker::connect(&url, opts()).unwrap();
                let mut rng = Rng(0x9e37_79b9 + p);
                let mut ids = Vec::new();
                for _ in 0..200 {
                    let n = 1 + rng.below(5) as usize;
                    let batch: Vec<_> = (0..n)
                        .map(|_| ev(&format!("t{}", rng.below(7)), &format!("p{p}")))
                        .collect();
                    let got = b.publish(&batch).unwrap();
                    assert_eq!(got.len(), n);
                    // One batch gets consecutive ids.
                    assert_eq!(got[n - 1] - got[0], n as u64 - 1);
                    ids.extend(got);
                }
                ids
            })
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = publishers.into_iter().map(|h| h.join().unwrap()).collect();
    for ids in &per_thread {
        assert_strictly_increasing(ids);
    }
    let all: BTreeSet<u64> = per_thread.iter().flatten().copied().collect();
    let total: usize = per_thread.iter().map(Vec::len).sum();
    assert_eq!(all.len(), total, "an id was handed out twice");
    // The two publishers interleaved, and together left no hole.
    let (first, last) = (*all.first().unwrap(), *all.last().unwrap());
    assert_eq!(last - first + 1, total as u64, "ids have holes");
    assert!(per_thread[0]
        .iter()
        .any(|id| id > per_thread[1].first().unwrap()));
    assert!(per_thread[1]
        .iter()
        .any(|id| id > per_thread[0].first().unwrap()));
    // The id format is the embedded one: epoch milliseconds * 1000 + n.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(first > (now_ms - 60_000) * 1000 && first <= now_ms * 1000 + total as u64);
    assert!(last < 1 << 53);
    // Every node reads the same events with the same ids, in that order.
    let mut r = RedisBroker::connect(&url, opts()).unwrap();
    let read = read_n(&mut r, start, total);
    let read_ids: Vec<u64> = read.iter().map(|e| e.id).collect();
    assert_eq!(read_ids, all.into_iter().collect::<Vec<_>>());
}

#[test]
fn read_after_returns_exactly_what_was_published_in_order() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-read");
    let redis = Redis::start(&dir.0);
    let mut p = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let batch = vec![
        NewEvent {
            event: Some("update".into()),
            retry: Some(2_500),
            ..ev("prices", "line 1\nline 2\r\nline 3\r")
        },
        NewEvent {
            event: Some(String::new()),
            private: true,
            ..ev("chat:room/1", "")
        },
        ev("prices", "{\"x\":1} ünïcode ✓ : not a comment"),
    ];
    let ids = p.publish(&batch).unwrap();
    let more = p.publish(&[ev("other", "after")]).unwrap();
    assert_eq!(more[0], ids[2] + 1);

    let mut r = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let read = read_n(&mut r, ids[0] - 1, 4);
    let expect: Vec<BrokerEvent> = batch
        .iter()
        .chain([ev("other", "after")].iter())
        .zip(ids.iter().chain(&more))
        .map(|(e, &id)| BrokerEvent {
            id,
            topic: e.topic.clone(),
            event: e.event.clone(),
            data: e.data.clone(),
            retry: e.retry,
            private: e.private,
        })
        .collect();
    assert_eq!(read, expect);
    // Reading after the middle gives the rest; after the end, nothing (the
    // block expires).
    let Read::Events(rest) = r.read_after(ids[1], 10, 50).unwrap() else {
        panic!("not events")
    };
    assert_eq!(rest, expect[2..]);
    let t0 = Instant::now();
    assert_eq!(r.read_after(more[0], 10, 50).unwrap(), Read::Events(vec![]));
    assert!(t0.elapsed() >= Duration::from_millis(40));
    // An empty batch is no round trip and no id; an oversized one is refused.
    assert_eq!(p.publish(&[]).unwrap(), Vec::<u64>::new());
    let big = vec![ev("t", "x"); opts().batch_events_max + 1];
    assert_eq!(p.publish(&big).unwrap_err().kind, BrokerErrorKind::Config);
}

#[test]
fn a_refused_batch_stores_nothing_and_leaves_no_hole_in_the_ids() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-refused");
    let redis = Redis::start(&dir.0);
    let mut b = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let before = b.publish(&[ev("ok", "1")]).unwrap()[0];
    // A key in the way: the script checks every key before its first write.
    let set = redis.command("SET stentor:{default}:t:squatted 1\r\n");
    assert!(set.starts_with("+OK"), "{set}");
    let err = b
        .publish(&[ev("ok", "2"), ev("squatted", "3")])
        .unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Script, "{err}");
    assert!(err.message.contains("not a stream"), "{err}");
    // The connection is still good, and the next id follows the last one:
    // readers see no gap.
    let after = b.publish(&[ev("ok", "4")]).unwrap()[0];
    assert_eq!(after, before + 1);
    let r = b.range(&["ok"], 0, 10).unwrap();
    let data: Vec<&str> = r.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["1", "4"]);
}

#[test]
fn range_merges_topics_in_id_order_and_bounds_the_count() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-range");
    let redis = Redis::start(&dir.0);
    let mut b = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let mut ids: HashMap<&str, Vec<u64>> = HashMap::new();
    for i in 0..30 {
        let topic = ["a", "b", "c"][i % 3];
        // Two topics in one batch: same millisecond, still ordered.
        let got = b
            .publish(&[ev(topic, &i.to_string()), ev("b", "b-too")])
            .unwrap();
        ids.entry(topic).or_default().push(got[0]);
        ids.entry("b").or_default().push(got[1]);
    }
    let after = ids["a"][2];
    let r = b
        .range(&["a", "c", "never-published"], after, 1_000)
        .unwrap();
    assert!(!r.evicted && !r.more && !r.before_reset);
    let mut expect: Vec<u64> = ids["a"]
        .iter()
        .chain(&ids["c"])
        .copied()
        .filter(|&id| id > after)
        .collect();
    expect.sort_unstable();
    let got: Vec<u64> = r.events.iter().map(|e| e.id).collect();
    assert_eq!(got, expect);
    assert!(r.events.iter().all(|e| e.topic == "a" || e.topic == "c"));
    // Bounded: the oldest `count_max`, and `more` says there is a rest.
    let r5 = b.range(&["a", "b", "c"], after, 5).unwrap();
    assert!(r5.more);
    let got5: Vec<u64> = r5.events.iter().map(|e| e.id).collect();
    assert_eq!(got5, (after + 1..=after + 5).collect::<Vec<_>>());
    // Ids of this run of the sequence are above its base (the id before
    // the first event); one at or below it is from before a reset of Redis.
    let all = b.range(&["a", "b", "c"], 0, 1_000).unwrap();
    assert_eq!(all.events.len(), 60);
    let first = all.events[0].id;
    assert!(!b.range(&["a"], first, 10).unwrap().before_reset);
    assert!(b.range(&["a"], first - 1, 10).unwrap().before_reset);
}

#[test]
fn trimming_is_reported_as_evicted_on_resume_and_as_a_gap_on_the_log() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-trim");
    let redis = Redis::start(&dir.0);
    let o = BrokerOptions {
        history_events_max: 10,
        log_events_max: 50,
        ..opts()
    };
    let mut b = RedisBroker::connect(&redis.url(), o.clone()).unwrap();
    let mut ids = Vec::new();
    for i in 0..1_000 {
        ids.extend(b.publish(&[ev("hot", &i.to_string())]).unwrap());
    }
    let quiet = b.publish(&[ev("quiet", "only one")]).unwrap()[0];
    // A topic keeps its last `history_events_max`, plus a slack of a tenth
    // (here 1) before a cut.
    let kept = b.range(&["hot"], 0, 2_000).unwrap();
    assert!(
        (10..=11).contains(&kept.events.len()),
        "{}",
        kept.events.len()
    );
    assert!(kept.evicted, "ids after 0 were trimmed");
    let oldest_kept = kept.events[0].id;
    let r = b.range(&["hot"], ids[0], 100).unwrap();
    assert!(r.evicted);
    assert_eq!(r.events[0].id, oldest_kept);
    // Resuming from a kept id is exact, and not evicted.
    let r = b.range(&["hot"], oldest_kept, 2_000).unwrap();
    assert!(!r.evicted);
    assert_eq!(r.events.len(), kept.events.len() - 1);
    // A topic with no trimming is not evicted even when its retained first
    // id is far above the client's (other topics used the ids in between).
    let r = b.range(&["quiet"], ids[0], 10).unwrap();
    assert!(!r.evicted);
    assert_eq!(r.events[0].id, quiet);
    // A reader that fell behind the log's retention learns of the gap.
    let mut reader = RedisBroker::connect(&redis.url(), o).unwrap();
    match reader.read_after(ids[0], 10, 50).unwrap() {
        Read::Gap {
            after_id,
            first_id,
            events,
        } => {
            assert_eq!(after_id, ids[0]);
            assert!(first_id > ids[1]);
            assert_eq!(events[0].id, first_id);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn redis_restarted_without_data_is_a_reset_and_ids_never_go_back() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-reset");
    let mut redis = Redis::start(&dir.0);
    let url = redis.url();
    let mut p = RedisBroker::connect(&url, opts()).unwrap();
    // Ids far above Redis's clock (as after a burst of more than 1,000
    // events per millisecond): a restarted Redis's clock alone would hand
    // out lower ones; the floor this node passes must not.
    let ahead = p.publish(&[ev("a", "0")]).unwrap()[0] + 1_000_000_000;
    let set = redis.command(&format!("SET stentor:{{default}}:counter {ahead}\r\n"));
    assert!(set.starts_with("+OK"), "{set}");
    let old = p.publish(&[ev("a", "1"), ev("b", "2")]).unwrap();
    assert_eq!(old[0], ahead + 1);

    let (shared, rx, handle) = reader(&url, opts(), old[0] - 1);
    let (events, _) = collect_until(&rx, |e| !e.is_empty() && e.last().unwrap().id == old[1]);
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), old);
    assert_eq!(shared.id_seen_max.load(Ordering::Relaxed), old[1]);

    let empty = TempDir::new("redis-reset-empty");
    redis.restart_empty(&empty.0);
    // The publisher's connection died with Redis: one failed call, then it
    // reconnects.
    let _ = p.publish(&[ev("a", "lost?")]);
    let new = p.publish(&[ev("a", "3")]).unwrap();
    assert!(
        new[0] > old[1],
        "ids went back: {} after {}",
        new[0],
        old[1]
    );
    let (events, others) = collect_until(&rx, |e| e.iter().any(|e| e.id == new[0]));
    assert!(
        others.iter().any(|m| matches!(m, ReaderMsg::Reset { .. })),
        "no reset reported: {others:?}"
    );
    assert!(events.iter().all(|e| e.id > old[1]));
    // A client resuming from before the reset is told so.
    assert!(p.range(&["a"], old[1], 10).unwrap().before_reset);
    shared.stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

#[test]
fn a_counter_that_went_back_starts_a_new_run_above_what_nodes_saw() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-back");
    let redis = Redis::start(&dir.0);
    let url = redis.url();
    let mut p = RedisBroker::connect(&url, opts()).unwrap();
    let old = p
        .publish(&[ev("a", "1"), ev("a", "2"), ev("a", "3")])
        .unwrap();
    let (shared, rx, handle) = reader(&url, opts(), old[0] - 1);
    collect_until(&rx, |e| e.len() >= 3);
    // Redis lost its last writes (as a crash under appendfsync everysec
    // would): the counter is back below ids that were handed out and read.
    let set = redis.command(&format!("SET stentor:{{default}}:counter {}\r\n", old[0]));
    assert!(set.starts_with("+OK"), "{set}");
    let new = p.publish(&[ev("a", "4")]).unwrap();
    assert!(new[0] > old[2], "id {} handed out again", new[0]);
    let (events, others) = collect_until(&rx, |e| e.iter().any(|e| e.id == new[0]));
    assert!(
        others.iter().any(|m| matches!(m, ReaderMsg::Reset { .. })),
        "{others:?}"
    );
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), new);
    shared.stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

#[test]
fn redis_restarted_with_aof_loses_nothing_acknowledged_and_the_reader_resumes_exactly() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-aof");
    let mut redis = Redis::start_with(&dir.0, &["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url();
    let (shared, rx, handle) = reader(&url, opts(), 0);
    // Wait until the reader is following (it starts at the newest entry).
    let deadline = Instant::now() + WAIT;
    while !shared.reader_connected.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "reader never connected");
        thread::sleep(Duration::from_millis(10));
    }
    // The publisher goes on until it saw the outage and 100 acknowledged
    // publishes after it.
    let acked_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let url = url.clone();
        let acked_count = acked_count.clone();
        thread::spawn(move || {
            let mut b = RedisBroker::new(&url, opts()).unwrap();
            let mut acked = Vec::new();
            let mut failures = 0;
            let mut after_outage = 0;
            let deadline = Instant::now() + WAIT;
            while after_outage < 100 && Instant::now() < deadline {
                match b.publish(&[ev("t", &acked.len().to_string())]) {
                    Ok(ids) => {
                        acked.extend(ids);
                        acked_count.store(acked.len(), Ordering::Relaxed);
                        after_outage += usize::from(failures > 0);
                    }
                    Err(_) => {
                        failures += 1;
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            (acked, failures)
        })
    };
    let deadline = Instant::now() + WAIT;
    while acked_count.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "publishing never started");
        thread::sleep(Duration::from_millis(5));
    }
    redis.restart(); // SIGKILL mid-publish, then load the AOF
    let (acked, failures) = publisher.join().unwrap();
    assert!(failures > 0, "the restart was not noticed");
    assert!(
        acked.len() >= 150,
        "publishing did not recover: {} acknowledged",
        acked.len()
    );
    let last = *acked.last().unwrap();
    let (events, others) = collect_until(&rx, |e| e.last().is_some_and(|e| e.id >= last));
    let read: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_strictly_increasing(&read);
    let read_set: BTreeSet<u64> = read.iter().copied().collect();
    let lost: Vec<_> = acked.iter().filter(|id| !read_set.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    // No hole at all: anything stored without an answer was read too.
    assert_eq!(read.last().unwrap() - read[0] + 1, read.len() as u64);
    assert!(
        !others
            .iter()
            .any(|m| matches!(m, ReaderMsg::Reset { .. } | ReaderMsg::Gap { .. })),
        "{others:?}"
    );
    assert!(others
        .iter()
        .any(|m| matches!(m, ReaderMsg::Disconnected(_))));
    shared.stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

#[test]
fn publishing_while_redis_is_down_fails_within_the_bound_then_recovers() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-down");
    // Nothing listens on the port yet.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let o = opts();
    let shared = Arc::new(BrokerShared::default());
    let (tx, rx) = mpsc::channel::<PublishJob>();
    let handle = spawn_publisher(&url, o.clone(), shared.clone(), rx).unwrap();
    let publish = |batch: Vec<NewEvent>| {
        let (rtx, rrx) = mpsc::channel();
        tx.send(PublishJob {
            batch,
            reply: Box::new(move |r| {
                let _ = rtx.send(r);
            }),
        })
        .unwrap();
        rrx
    };
    let bound = publish_wait_bound(&o);
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = publish(vec![ev("t", "x")])
            .recv_timeout(bound)
            .expect("no answer in time");
        let err = r.unwrap_err();
        assert_eq!(err.kind, BrokerErrorKind::Connect, "{err}");
        assert!(t0.elapsed() < bound);
    }
    assert!(!shared.publisher_connected.load(Ordering::Relaxed));
    // The direct client fails just as fast on a dead port.
    let t0 = Instant::now();
    let mut direct = RedisBroker::new(&url, o.clone()).unwrap();
    assert_eq!(
        direct.publish(&[ev("t", "x")]).unwrap_err().kind,
        BrokerErrorKind::Connect
    );
    assert!(t0.elapsed() < Duration::from_millis(o.connect_timeout_ms + o.io_timeout_ms));

    // Redis comes up on that port: the publisher reconnects by itself.
    let redis = Redis::start_on(&dir.0, port, &["--appendonly", "no"]);
    let deadline = Instant::now() + WAIT;
    let ids = loop {
        assert!(Instant::now() < deadline, "publisher never recovered");
        match publish(vec![ev("t", "a"), ev("u", "b")])
            .recv_timeout(bound)
            .unwrap()
        {
            Ok(ids) => break ids,
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(ids.len(), 2);
    assert!(shared.publisher_connected.load(Ordering::Relaxed));
    assert_eq!(shared.id_seen_max.load(Ordering::Relaxed), ids[1]);
    // Several jobs waiting together go in one round trip, each answered.
    let waiting: Vec<_> = (0..20)
        .map(|i| publish(vec![ev("t", &i.to_string())]))
        .collect();
    let mut got: Vec<u64> = waiting
        .iter()
        .map(|r| r.recv_timeout(bound).unwrap().unwrap()[0])
        .collect();
    assert_strictly_increasing(&got);
    got.dedup();
    assert_eq!(got.len(), 20);
    drop(tx);
    handle.join().unwrap();
    drop(redis);
}

#[test]
fn a_reader_started_before_redis_connects_once_it_is_up_and_reads_from_there() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-late");
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let (shared, rx, handle) = reader(&url, opts(), 0);
    match rx.recv_timeout(WAIT) {
        Ok(ReaderMsg::Disconnected(e)) => assert_eq!(e.kind, BrokerErrorKind::Connect, "{e}"),
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(!shared.reader_connected.load(Ordering::Relaxed));
    let redis = Redis::start_on(&dir.0, port, &["--appendonly", "no"]);
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ReaderMsg::Connected) => break,
            Ok(ReaderMsg::Disconnected(_)) => continue,
            other => panic!("expected Connected, got {other:?}"),
        }
    }
    assert!(shared.reader_connected.load(Ordering::Relaxed));
    let mut p = RedisBroker::connect(&url, opts()).unwrap();
    let ids = p.publish(&[ev("a", "1"), ev("b", "2")]).unwrap();
    let (events, others) = collect_until(&rx, |e| e.len() >= 2);
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(others.is_empty(), "{others:?}");
    shared.stop.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    handle.join().unwrap();
    assert!(t0.elapsed() < Duration::from_millis(opts().read_block_ms + 500));
    drop(redis);
}

#[test]
fn ten_thousand_topics_published_at_random_are_read_back() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-10k");
    let redis = Redis::start(&dir.0);
    let mut p = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let mut r = RedisBroker::connect(&redis.url(), opts()).unwrap();
    const TOPICS: u64 = 10_000;
    const EVENTS: usize = 20_000;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut sent: Vec<(u64, String)> = Vec::with_capacity(EVENTS);
    // Every topic at least once, then random ones, in batches of 100.
    let topics: Vec<String> = (0..TOPICS)
        .map(|t| format!("topic-{t}"))
        .chain((TOPICS as usize..EVENTS).map(|_| format!("topic-{}", rng.below(TOPICS))))
        .collect();
    for chunk in topics.chunks(100) {
        let batch: Vec<NewEvent> = chunk.iter().map(|t| ev(t, t)).collect();
        let batches: Vec<&[NewEvent]> = batch.chunks(25).collect();
        for (ids, b) in p.publish_many(&batches).into_iter().zip(&batches) {
            for (id, e) in ids.unwrap().into_iter().zip(b.iter()) {
                sent.push((id, e.topic.clone()));
            }
        }
    }
    let read = read_n(&mut r, sent[0].0 - 1, EVENTS);
    assert_eq!(read.len(), EVENTS);
    for ((id, topic), e) in sent.iter().zip(&read) {
        assert_eq!(
            (*id, topic.as_str(), e.data.as_str()),
            (e.id, e.topic.as_str(), topic.as_str())
        );
    }
    // Resume of a few topics from the start returns exactly theirs.
    let some = ["topic-0", "topic-4242", "topic-9999"];
    let got = p.range(&some, 0, 1_000).unwrap();
    let expect: Vec<u64> = sent
        .iter()
        .filter(|(_, t)| some.contains(&t.as_str()))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(got.events.iter().map(|e| e.id).collect::<Vec<_>>(), expect);
}

#[test]
fn tls_with_a_private_ca() {
    if !require_redis() || !support::require_program("openssl", "apt-get install openssl") {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-tls");
    let d = dir.0.to_string_lossy().into_owned();
    let sh = |script: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost");
    sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile ext.cnf");
    let tls_port = free_port();
    let tls_port_s = tls_port.to_string();
    let redis = Redis::start_with(
        &dir.0,
        &[
            "--appendonly",
            "no",
            "--tls-port",
            &tls_port_s,
            "--tls-cert-file",
            &format!("{d}/server.crt"),
            "--tls-key-file",
            &format!("{d}/server.key"),
            "--tls-ca-cert-file",
            &format!("{d}/ca.crt"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let o = BrokerOptions {
        tls_ca_file: Some(dir.0.join("ca.crt")),
        ..opts()
    };
    let mut b = RedisBroker::connect(&url, o).unwrap();
    let ids = b.publish(&[ev("secure", "over TLS")]).unwrap();
    let read = read_n(&mut b, ids[0] - 1, 1);
    assert_eq!(read[0].data, "over TLS");
    // Without the CA, the server's certificate is not trusted.
    let err = RedisBroker::connect(&url, opts())
        .err()
        .expect("untrusted certificate accepted");
    assert_eq!(err.kind, BrokerErrorKind::Connect, "{err}");
    drop(redis);
}

/// Figures for `docs/design/cluster.md`; bounded (a few seconds), ignored by
/// default because timings on a shared machine are not a pass/fail matter.
#[test]
#[ignore]
fn measure_round_trips_and_reading() {
    if !require_redis() {
        return;
    }
    block_async_signals();
    let dir = TempDir::new("redis-measure");
    let redis = Redis::start(&dir.0);
    let mut p = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let data = "x".repeat(100);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let single: Vec<Duration> = (0..2_000)
        .map(|i| {
            let t0 = Instant::now();
            p.publish(&[ev(&format!("t{}", i % 100), &data)]).unwrap();
            t0.elapsed()
        })
        .collect();
    let batch: Vec<NewEvent> = (0..100).map(|i| ev(&format!("t{i}"), &data)).collect();
    let batch100: Vec<Duration> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            p.publish(&batch).unwrap();
            t0.elapsed()
        })
        .collect();
    let small: Vec<Vec<NewEvent>> = (0..50).map(|i| vec![ev(&format!("t{i}"), &data)]).collect();
    let refs: Vec<&[NewEvent]> = small.iter().map(Vec::as_slice).collect();
    let many: Vec<Duration> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            for r in p.publish_many(&refs) {
                r.unwrap();
            }
            t0.elapsed()
        })
        .collect();
    let (s, b, m) = (median(single), median(batch100), median(many));
    println!(
        "publish, 1 event, 100 B:          median {:>8.1} us/round trip, {:>9.0} events/s",
        us(s),
        1.0 / s.as_secs_f64()
    );
    println!(
        "publish, batch of 100:            median {:>8.1} us/round trip, {:>9.0} events/s",
        us(b),
        100.0 / b.as_secs_f64()
    );
    println!(
        "publish_many, 50 batches of 1:    median {:>8.1} us/round trip, {:>9.0} events/s",
        us(m),
        50.0 / m.as_secs_f64()
    );

    let mut r = RedisBroker::connect(&redis.url(), opts()).unwrap();
    let total = 2_000 + 200 * 100 + 200 * 50;
    // The whole log, 5 times: median wall time (Redis and the client on
    // this machine) and the reading thread's own CPU time.
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..5 {
        let (t0, c0) = (Instant::now(), thread_cpu());
        let read = read_n(&mut r, 0, total);
        walls.push(t0.elapsed());
        cpus.push(thread_cpu() - c0);
        assert_eq!(read.len(), total);
    }
    let (wall, cpu) = (median(walls), median(cpus));
    println!(
        "read_after, COUNT 1000, 100 B:    {:.2} us/event wall ({:.0} events/s), {:.2} us/event reader CPU",
        us(wall) / total as f64,
        total as f64 / wall.as_secs_f64(),
        us(cpu) / total as f64
    );
    let per_event = dataset_bytes(&redis) / total as f64;
    println!("Redis dataset per event (log + topic stream, 100 B of data): {per_event:.0} B");
    // One event on each of 10,000 new topics: the rest is the topic's stream.
    let before = dataset_bytes(&redis);
    for chunk in 0..100 {
        let batch: Vec<NewEvent> = (0..100)
            .map(|i| ev(&format!("new-{chunk}-{i}"), &data))
            .collect();
        p.publish(&batch).unwrap();
    }
    let per_topic = (dataset_bytes(&redis) - before) / 10_000.0 - per_event;
    println!("Redis dataset per topic (its stream key, beyond its events): {per_topic:.0} B");
}

/// `dataset.bytes` of `MEMORY STATS`: what the keys take, without Redis's
/// own overhead.
fn dataset_bytes(redis: &Redis) -> f64 {
    let mem = redis.command("MEMORY STATS\r\n");
    mem.split("\r\n")
        .skip_while(|l| *l != "dataset.bytes")
        .nth(1)
        .and_then(|v| v.trim_start_matches(':').parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
