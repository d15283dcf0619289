//! Publisher on a schedule: event k is due at start + k/rate whatever the
//! server does; a late send is recorded as publish lag, never absorbed into
//! the schedule (no coordinated omission). Each keep-alive HTTP/1.1
//! connection has at most `--pub-inflight` requests unanswered: 1 (the
//! default) is how application servers publish (send, wait for the answer,
//! send the next), so a server that answers a publish only after its
//! fan-out shows as round-trip time and lag; more pipelines. One writer
//! thread per connection sends, one reader thread matches responses to
//! requests in order and times each round trip. Events still unsent when
//! the schedule is over by [`schedule_overrun_ns`] are not sent (counted
//! `behind_schedule`), so a publisher that cannot keep up ends with the run.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cli::{percent_encode, PublishConfig, RunConfig};
use crate::http::{self, Dechunker};
use crate::shared::Shared;
use crate::stats::{bump, new_histogram, Counts};

/// Upper bound on `--pub-inflight`: requests sent but not yet answered per
/// connection; at the limit the writer waits, which shows up as publish lag.
pub const IN_FLIGHT_MAX: usize = 10_000;
/// How long the writer sleeps between looks at the stop flag while it waits
/// for an answer.
const ANSWER_POLL: Duration = Duration::from_millis(50);
/// Events are sent at most this long after the schedule ended (a share of
/// the run, at least [`SCHEDULE_OVERRUN_NS_MIN`]).
const SCHEDULE_OVERRUN_FRACTION: f64 = 0.1;
const SCHEDULE_OVERRUN_NS_MIN: u64 = 1_000_000_000;
/// How long the reader waits for the last responses after the last send.
const RESPONSE_GRACE: Duration = Duration::from_secs(5);
/// Read timeout, so readers notice the end of the run.
const READ_POLL: Duration = Duration::from_millis(100);
/// Response bytes buffered before parsing; a longer head is an error.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Minimum gap between reconnect attempts of a failed publish connection.
const RECONNECT_GAP: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct PubStats {
    pub sent: u64,
    pub accepted: u64,
    pub errors: Counts,
    /// Actual send time minus scheduled time, µs.
    pub lag_us: Histogram<u64>,
    /// Request written to response parsed, µs.
    pub round_trip_us: Histogram<u64>,
    /// Events never sent: the schedule was over by more than the overrun.
    pub behind_schedule: u64,
    /// Events this publisher's schedule held.
    pub scheduled: u64,
}

impl Default for PubStats {
    fn default() -> Self {
        Self {
            sent: 0,
            accepted: 0,
            errors: Counts::new(),
            lag_us: new_histogram(3),
            round_trip_us: new_histogram(3),
            behind_schedule: 0,
            scheduled: 0,
        }
    }
}

impl PubStats {
    fn merge(&mut self, o: PubStats) {
        self.sent += o.sent;
        self.accepted += o.accepted;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        let _ = self.lag_us.add(&o.lag_us);
        let _ = self.round_trip_us.add(&o.round_trip_us);
        self.behind_schedule += o.behind_schedule;
        self.scheduled += o.scheduled;
    }
}

/// Open one publish connection now, so an unreachable publish endpoint is a
/// connection error (exit 2) before any subscriber is opened.
pub fn probe(cfg: &PublishConfig) -> io::Result<()> {
    TcpStream::connect_timeout(&cfg.server, Duration::from_secs(5)).map(drop)
}

/// Publish the whole schedule starting at `start_ns` (since the epoch);
/// returns when every request has been answered or given up on.
pub fn run(cfg: Arc<RunConfig>, shared: Arc<Shared>, start_ns: u64) -> PubStats {
    let writers: Vec<(usize, usize)> = (0..cfg.publish.len())
        .flat_map(|t| (0..cfg.publish[t].conns).map(move |c| (t, c)))
        .collect();
    let handles: Vec<_> = writers
        .into_iter()
        .map(|(t, c)| {
            let cfg = cfg.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("pub-{t}-{c}"))
                .spawn(move || Writer::new(cfg, shared, t, c, start_ns).run())
        })
        .collect();
    let mut total = PubStats::default();
    for h in handles {
        match h {
            Ok(h) => match h.join() {
                Ok(s) => total.merge(s),
                Err(_) => bump(&mut total.errors, "publisher_panicked"),
            },
            Err(_) => bump(&mut total.errors, "thread_spawn"),
        }
    }
    total
}

/// How long after the scheduled end events may still be sent.
pub fn schedule_overrun_ns(duration_s: u64) -> u64 {
    ((duration_s as f64 * 1e9 * SCHEDULE_OVERRUN_FRACTION) as u64).max(SCHEDULE_OVERRUN_NS_MIN)
}

/// A request awaiting its response: the expectation channel its event is
/// counted on ([`RunConfig::channel`]; [`RETIRED`] marks the end of a
/// retired connection's queue) and when it was written.
#[derive(Debug, Clone, Copy)]
struct Req {
    topic: usize,
    /// The event's sequence number in its topic.
    seq: u64,
    sent_ns: u64,
}

const RETIRED: usize = usize::MAX;

/// Requests awaiting responses on one connection, oldest first, and the
/// signal the reader gives when one is answered.
#[derive(Debug, Default)]
struct Queue {
    q: Mutex<VecDeque<Req>>,
    answered: Condvar,
}

impl Queue {
    fn lock(&self) -> Result<MutexGuard<'_, VecDeque<Req>>, ()> {
        self.q.lock().map_err(|_| ())
    }
}

type Pending = Arc<Queue>;

struct Conn {
    stream: TcpStream,
    pending: Pending,
    reader: std::thread::JoinHandle<PubStats>,
}

struct Writer {
    cfg: Arc<RunConfig>,
    shared: Arc<Shared>,
    /// Publish target (index into `cfg.publish`) and connection to it.
    target: usize,
    conn_idx: usize,
    start_ns: u64,
    stats: PubStats,
    conn: Option<Conn>,
    /// Retired connections: their reader and their queue of requests.
    finished_readers: Vec<(std::thread::JoinHandle<PubStats>, Pending)>,
    last_connect: Option<std::time::Instant>,
}

impl Writer {
    fn new(
        cfg: Arc<RunConfig>,
        shared: Arc<Shared>,
        target: usize,
        conn_idx: usize,
        start_ns: u64,
    ) -> Self {
        Self {
            cfg,
            shared,
            target,
            conn_idx,
            start_ns,
            stats: PubStats::default(),
            conn: None,
            finished_readers: Vec::new(),
            last_connect: None,
        }
    }

    fn run(mut self) -> PubStats {
        let topics = self.cfg.topics.len() as u64;
        let cutoff_ns = self.start_ns
            + self.cfg.duration_s * 1_000_000_000
            + schedule_overrun_ns(self.cfg.duration_s);
        let conns = self.cfg.publish[self.target].conns as u64;
        let group = self.cfg.pub_groups[self.target];
        // Event k is this writer's when it goes to this target and, among
        // the target's connections, to this one.
        let (cfg, target, conn_idx) = (self.cfg.clone(), self.target, self.conn_idx as u64);
        let mine = |k: u64| cfg.pub_target(k) == target && k % conns == conn_idx;
        let mut data = String::new();
        let mut req = Vec::new();
        let schedule = cfg.schedule.clone();
        let mut events = schedule.iter().enumerate();
        for (k, (offset_ns, stage)) in events.by_ref() {
            let k = k as u64;
            if !mine(k) {
                continue;
            }
            self.stats.scheduled += 1;
            if self.shared.flag(&self.shared.stop) || crate::shared::interrupted() {
                break;
            }
            if self.shared.now_ns() > cutoff_ns {
                // The server answered too slowly for this publisher to get
                // through the schedule: the rest is not sent.
                self.stats.behind_schedule += 1;
                break;
            }
            let due_ns = self.start_ns + offset_ns;
            sleep_until(&self.shared, due_ns);
            let topic = (k % topics) as usize;
            let seq = k / topics;
            let payload_bytes = schedule.stages[stage].payload_bytes;
            cfg.seq_source.encode(seq, due_ns, payload_bytes, &mut data);
            build_request(
                &self.cfg.publish[self.target],
                &self.cfg.topics[topic],
                &data,
                seq,
                &mut req,
            );
            // Before the write: a subscriber that reads this mark after its
            // stream opened is owed every event of the topic from it on.
            if let Some(mark) = self.shared.seq_started.get(topic) {
                mark.fetch_max(seq + 1, Ordering::AcqRel);
            }
            self.send(group * topics as usize + topic, seq, &req);
            let lag_us = self.shared.now_ns().saturating_sub(due_ns) / 1_000;
            self.stats.lag_us.saturating_record(lag_us.max(1));
            self.shared.events_sent.fetch_add(1, Ordering::Relaxed);
        }
        // Events left when the run was cut short or fell behind: still
        // scheduled, and (unless stopped) counted as behind schedule.
        let stopped = self.shared.flag(&self.shared.stop) || crate::shared::interrupted();
        let left = events.filter(|(k, _)| mine(*k as u64)).count() as u64;
        self.stats.scheduled += left;
        if !stopped {
            self.stats.behind_schedule += left;
        }
        // Half-close is not used: some servers close the whole connection on
        // it. Readers finish when every pending request is answered.
        self.retire_conn();
        let mut total = std::mem::take(&mut self.stats);
        for (r, pending) in self.finished_readers.drain(..) {
            match r.join() {
                Ok(s) => total.merge(s),
                Err(_) => bump(&mut total.errors, "reader_panicked"),
            }
            // Requests written after the reader had already given up (the
            // server closed the connection) were never answered.
            if let Ok(mut p) = pending.lock() {
                for r in p.drain(..) {
                    if r.topic != RETIRED {
                        bump(&mut total.errors, "no_response");
                    }
                }
            }
        }
        total
    }

    fn send(&mut self, topic: usize, seq: u64, req: &[u8]) {
        self.stats.sent += 1;
        if self.conn.is_none() && !self.connect() {
            bump(&mut self.stats.errors, "not_connected");
            return;
        }
        if self.conn.as_ref().is_some_and(|c| c.reader.is_finished()) {
            // The server closed this connection: write to a new one.
            self.retire_conn();
            if !self.connect() {
                bump(&mut self.stats.errors, "not_connected");
                return;
            }
        }
        let Some(conn) = &mut self.conn else { return };
        // Wait while --pub-inflight requests are unanswered (1: for the
        // previous answer). The reader signals each answer; the poll only
        // bounds how late a stop is seen.
        let inflight = self.cfg.publish[self.target].inflight;
        if let Ok(mut q) = conn.pending.lock() {
            while q.len() >= inflight
                && !conn.reader.is_finished()
                && !self.shared.flag(&self.shared.stop)
                && !crate::shared::interrupted()
            {
                q = match conn.pending.answered.wait_timeout(q, ANSWER_POLL) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
            q.push_back(Req {
                topic,
                seq,
                sent_ns: self.shared.now_ns(),
            });
        }
        if let Err(e) = conn.stream.write_all(req) {
            bump(
                &mut self.stats.errors,
                &format!("write_{:?}", e.kind()).to_lowercase(),
            );
            if let Ok(mut p) = conn.pending.lock() {
                p.pop_back();
            }
            self.retire_conn();
        }
    }

    fn connect(&mut self) -> bool {
        if self
            .last_connect
            .is_some_and(|t| t.elapsed() < RECONNECT_GAP)
        {
            return false;
        }
        self.last_connect = Some(std::time::Instant::now());
        let stream = match TcpStream::connect_timeout(
            &self.cfg.publish[self.target].server,
            Duration::from_secs(5),
        ) {
            Ok(s) => s,
            Err(e) => {
                bump(
                    &mut self.stats.errors,
                    &format!("connect_{:?}", e.kind()).to_lowercase(),
                );
                return false;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let reader_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return false,
        };
        let _ = reader_stream.set_read_timeout(Some(READ_POLL));
        // The round trip ends when the answer reached this host, like a
        // delivery's latency (`--latency-at`), not when this thread got a
        // core to read it.
        let timestamps = self.cfg.latency_at == crate::cli::LatencyAt::Kernel
            && stentor::sys::setsockopt_int(
                reader_stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                1,
            )
            .is_ok();
        let pending: Pending = Arc::default();
        let shared = self.shared.clone();
        let p = pending.clone();
        let Ok(reader) = std::thread::Builder::new()
            .name(format!("pub-read-{}-{}", self.target, self.conn_idx))
            .spawn(move || read_responses(reader_stream, p, shared, timestamps))
        else {
            return false;
        };
        self.conn = Some(Conn {
            stream,
            pending,
            reader,
        });
        true
    }

    /// Stop writing on the current connection; its reader finishes on its own.
    fn retire_conn(&mut self) {
        if let Some(c) = self.conn.take() {
            if let Ok(mut p) = c.pending.lock() {
                // The reader finishes once only this marker is left.
                p.push_back(Req {
                    topic: RETIRED,
                    seq: 0,
                    sent_ns: 0,
                });
            }
            self.finished_readers.push((c.reader, c.pending));
        }
    }
}

/// Sleep until `due_ns`. No spinning: at high rates a spin would take a
/// core from the server; the timer's overshoot (tens of µs) shows up as
/// publish lag, and a late event is sent at once, so the schedule holds.
fn sleep_until(shared: &Shared, due_ns: u64) {
    loop {
        let now = shared.now_ns();
        if now >= due_ns || crate::shared::interrupted() {
            return;
        }
        // Capped so an interrupt is seen within 50 ms even at low rates.
        std::thread::sleep(Duration::from_nanos(due_ns - now).min(Duration::from_millis(50)));
    }
}

/// Fill a publish request for `data` on `topic` from the body template.
pub fn build_request(cfg: &PublishConfig, topic: &str, data: &str, seq: u64, out: &mut Vec<u8>) {
    let body = cfg
        .body_template
        .replace("{topic_url}", &percent_encode(topic))
        .replace("{topic}", topic)
        .replace("{data_json}", &serde_json::Value::from(data).to_string())
        .replace("{data_url}", &percent_encode(data))
        .replace("{seq}", &seq.to_string())
        .replace("{data}", data);
    out.clear();
    let path = cfg.path.replace("{topic}", &percent_encode(topic));
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        cfg.host_header,
        cfg.content_type,
        body.len()
    );
    for h in &cfg.headers {
        let _ = write!(out, "{h}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Read pipelined responses in order; each answers the oldest pending request.
fn read_responses(
    mut stream: TcpStream,
    pending: Pending,
    shared: Arc<Shared>,
    timestamps: bool,
) -> PubStats {
    let mut stats = PubStats::default();
    // When the bytes that completed the answers now in `buf` arrived.
    let mut arrived_ns = shared.now_ns();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF_BYTES);
    let mut chunk = vec![0u8; READ_BUF_BYTES];
    let mut retired_at: Option<std::time::Instant> = None;
    loop {
        // Parse every complete response in the buffer.
        loop {
            match parse_response(&buf) {
                Ok(Some((status, used))) => {
                    buf.drain(..used);
                    let req = pending.lock().ok().and_then(|mut p| p.pop_front());
                    pending.answered.notify_all();
                    match req {
                        Some(Req {
                            topic: t,
                            seq,
                            sent_ns,
                        }) if t != RETIRED => {
                            let rtt_us = arrived_ns.saturating_sub(sent_ns) / 1_000;
                            stats.round_trip_us.saturating_record(rtt_us.max(1));
                            if (200..300).contains(&status) {
                                stats.accepted += 1;
                                shared.mark_accepted(t, seq);
                                shared.accepted[t].fetch_add(1, Ordering::AcqRel);
                            } else {
                                bump(&mut stats.errors, &format!("status_{status}"));
                            }
                        }
                        _ => bump(&mut stats.errors, "unexpected_response"),
                    }
                }
                Ok(None) => break,
                Err(kind) => {
                    bump(&mut stats.errors, kind);
                    return give_up(stats, &pending, "no_response");
                }
            }
        }
        let (len, retired) = match pending.lock() {
            Ok(p) => (p.len(), p.back().is_some_and(|r| r.topic == RETIRED)),
            Err(_) => (0, true),
        };
        if retired {
            if len == 1 {
                return stats;
            }
            let t = *retired_at.get_or_insert_with(std::time::Instant::now);
            if t.elapsed() > RESPONSE_GRACE || shared.flag(&shared.stop) {
                return give_up(stats, &pending, "no_response");
            }
        }
        let read = if timestamps {
            crate::engine::sys::recv_timestamped(stream.as_raw_fd(), &mut chunk).map(|(n, ts)| {
                arrived_ns = crate::engine::sys::arrival_ns(shared.now_ns(), ts);
                n
            })
        } else {
            stream
                .read(&mut chunk)
                .inspect(|_| arrived_ns = shared.now_ns())
        };
        match read {
            Ok(0) => return give_up(stats, &pending, "closed_before_response"),
            Ok(n) => {
                if buf.len() + n > READ_BUF_BYTES * 4 {
                    bump(&mut stats.errors, "response_too_large");
                    return give_up(stats, &pending, "no_response");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return give_up(stats, &pending, "read_error"),
        }
    }
}

/// Count every still-pending request as failed with `kind`.
fn give_up(mut stats: PubStats, pending: &Pending, kind: &str) -> PubStats {
    if let Ok(mut p) = pending.lock() {
        for r in p.drain(..) {
            if r.topic != RETIRED {
                bump(&mut stats.errors, kind);
            }
        }
        // Leave the retired marker semantics intact for the writer's view.
        p.push_back(Req {
            topic: RETIRED,
            seq: 0,
            sent_ns: 0,
        });
    }
    pending.answered.notify_all();
    stats
}

/// One complete response at the start of `buf`: (status, bytes used).
fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize)>, &'static str> {
    let head = match http::parse_head(buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(_) => return Err("bad_response"),
    };
    let body = &buf[head.len..];
    if head.chunked {
        let mut d = Dechunker::new();
        // Find where the chunked body ends by feeding byte runs until done.
        let mut used = 0;
        for (i, b) in body.iter().enumerate() {
            if d.feed(std::slice::from_ref(b), |_| {}).is_err() {
                return Err("bad_chunking");
            }
            if d.is_done() {
                // Trailers: expect the final CRLF after the zero chunk.
                let rest = &body[i + 1..];
                if rest.starts_with(b"\r\n") {
                    used = head.len + i + 3;
                } else if rest.starts_with(b"\n") {
                    used = head.len + i + 2;
                } else {
                    return Ok(None);
                }
                break;
            }
        }
        return Ok((used > 0).then_some((head.status, used)));
    }
    let n = match head.content_length {
        Some(n) => n as usize,
        None if head.status == 204 || head.status == 304 || head.status < 200 => 0,
        // Close-delimited responses cannot be pipelined; treat the rest as body.
        None => return Err("response_without_length"),
    };
    if body.len() < n {
        return Ok(None);
    }
    Ok(Some((head.status, head.len + n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_split_exactly() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"id\":\"1\"}HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n";
        let (s, used) = parse_response(two).expect("valid").expect("complete");
        assert_eq!(s, 200);
        let (s2, used2) = parse_response(&two[used..])
            .expect("valid")
            .expect("complete");
        assert_eq!(s2, 503);
        assert_eq!(used + used2, two.len());
        assert_eq!(parse_response(&two[..20]), Ok(None));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX";
        let (s3, used3) = parse_response(chunked).expect("valid").expect("complete");
        assert_eq!((s3, used3), (200, chunked.len() - 1));
    }

    #[test]
    fn template_fills_placeholders() {
        let cfg = PublishConfig {
            server: "127.0.0.1:1".parse().expect("addr"),
            host_header: "h".into(),
            path: "/pub/{topic}".into(),
            body_template: "topic={topic_url}&data={data_url}|{data_json}|{seq}".into(),
            content_type: "x".into(),
            headers: vec!["Authorization: Bearer t".into()],
            conns: 1,
            inflight: 1,
        };
        let mut out = Vec::new();
        build_request(&cfg, "a/b", "seq=1 t_ns=2 ", 1, &mut out);
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.starts_with("POST /pub/a%2Fb HTTP/1.1\r\n"), "{s}");
        assert!(s.contains("Authorization: Bearer t\r\n"));
        assert!(
            s.ends_with("topic=a%2Fb&data=seq%3D1%20t_ns%3D2%20|\"seq=1 t_ns=2 \"|1"),
            "{s}"
        );
    }
}
