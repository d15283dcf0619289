//! `--prometheus-listen ADDR`: the live figures of a run in the Prometheus
//! text format at `GET /metrics`, for watching a long run (a soak) on the
//! dashboards the servers under test are already on.
//!
//! Why a std::net thread and not an HTTP crate: one scraper every few
//! seconds, one short answer per connection (`Connection: close`). Counters
//! are read from the run's shared atomics; the per-second figures are those
//! of the last second the series has closed (it trails the clock by about
//! two seconds, the time a second stays open for late parts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::series::SeriesPoint;
use crate::shared::Shared;

/// Longest request head read; a scrape's is a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8192;
/// A scraper that sends nothing for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle listener looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// What the series has closed so far, for the endpoint.
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// The last closed second.
    pub last: Option<SeriesPoint>,
    /// Sums over the closed seconds.
    pub connects: u64,
    pub resumes: u64,
    pub disconnects: u64,
    pub slow_drops: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Live {
    pub fn add(&mut self, p: &SeriesPoint) {
        self.connects += p.connects;
        self.resumes += p.resumes;
        self.disconnects += p.disconnects;
        self.slow_drops += p.slow_drops;
        for (k, v) in &p.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        self.last = Some(p.clone());
    }
}

/// Bind `addr` now (so a bad address is an error before the run starts)
/// and serve until `shared.stop`. Returns the bound address.
pub fn serve(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || loop {
            if shared.flag(&shared.stop) {
                return;
            }
            match listener.accept() {
                Ok((conn, _)) => answer(conn, &shared),
                Err(_) => std::thread::sleep(ACCEPT_POLL),
            }
        })?;
    Ok(bound)
}

/// One request, one answer, close. Errors only end this connection.
fn answer(mut conn: TcpStream, shared: &Shared) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > REQUEST_BYTES_MAX {
            let _ = conn.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    let (status, ctype, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => {
            let live = shared.live.lock().map(|l| l.clone()).unwrap_or_default();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(shared, &live),
            )
        }
        (b"GET" | b"HEAD", _) => ("404 Not Found", "text/plain", "GET /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        out.push_str(&body);
    }
    let _ = conn.write_all(out.as_bytes());
}

/// The exposition text. Pure apart from the atomics it reads.
pub fn render(shared: &Shared, live: &Live) -> String {
    let mut o = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let plain = |v: u64| vec![(String::new(), v as f64)];
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

    metric(
        "loadgen_subscribers_connected",
        "gauge",
        "Subscribers streaming now.",
        &plain(load(&shared.streaming)),
    );
    metric(
        "loadgen_events_sent_total",
        "counter",
        "Publish requests sent.",
        &plain(load(&shared.events_sent)),
    );
    metric(
        "loadgen_deliveries_total",
        "counter",
        "Unique deliveries to all subscribers.",
        &plain(load(&shared.deliveries)),
    );
    metric(
        "loadgen_connects_total",
        "counter",
        "Streams opened (first connects and reconnects), closed seconds.",
        &plain(live.connects),
    );
    metric(
        "loadgen_resumes_total",
        "counter",
        "Reconnects that resumed with Last-Event-ID, closed seconds.",
        &plain(live.resumes),
    );
    metric(
        "loadgen_disconnects_total",
        "counter",
        "Streams that ended, closed seconds.",
        &plain(live.disconnects),
    );
    metric(
        "loadgen_slow_drops_total",
        "counter",
        "Slow subscribers the server dropped, closed seconds.",
        &plain(live.slow_drops),
    );
    let errors: Vec<(String, f64)> = live
        .errors
        .iter()
        .map(|(k, v)| (format!("{{kind=\"{}\"}}", escape(k)), *v as f64))
        .collect();
    metric(
        "loadgen_connect_errors_total",
        "counter",
        "Connect errors by kind, closed seconds.",
        &errors,
    );

    let last = live.last.clone().unwrap_or_default();
    metric(
        "loadgen_second",
        "gauge",
        "The last closed second of the run (seconds since it began) the per-second figures are from.",
        &plain(last.t_s as u64),
    );
    metric(
        "loadgen_second_deliveries",
        "gauge",
        "Deliveries in the last closed second, fast and slow subscribers apart.",
        &[
            ("{class=\"fast\"}".into(), last.deliveries_fast as f64),
            ("{class=\"slow\"}".into(), last.deliveries_slow as f64),
        ],
    );
    for (name, help, pick) in [
        (
            "loadgen_second_latency_p50_seconds",
            "Median delivery latency in the last closed second.",
            (|l: &crate::series::SecondLatency| l.p50) as fn(&_) -> u64,
        ),
        (
            "loadgen_second_latency_p99_seconds",
            "99th percentile delivery latency in the last closed second.",
            |l| l.p99,
        ),
        (
            "loadgen_second_latency_max_seconds",
            "Largest delivery latency in the last closed second.",
            |l| l.max,
        ),
    ] {
        metric(
            name,
            "gauge",
            help,
            &[
                (
                    "{class=\"fast\"}".into(),
                    pick(&last.fast_latency_us) as f64 / 1e6,
                ),
                (
                    "{class=\"slow\"}".into(),
                    pick(&last.slow_latency_us) as f64 / 1e6,
                ),
            ],
        );
    }
    o
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The run's live figures, shared between the collector and the endpoint.
pub type LiveCell = Mutex<Live>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_every_family_and_parses() {
        let shared = Shared::new(1, 1);
        shared.streaming.store(7, Ordering::Relaxed);
        shared.deliveries.store(700, Ordering::Relaxed);
        let mut live = Live::default();
        let mut p = SeriesPoint {
            t_s: 4,
            deliveries_fast: 90,
            deliveries_slow: 10,
            ..Default::default()
        };
        p.fast_latency_us.p99 = 12_000;
        p.errors.insert("connect_econnrefused".into(), 2);
        p.errors.insert("odd\"kind".into(), 1);
        live.add(&p);
        live.add(&p);
        let text = render(&shared, &live);
        let mut values = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (k, v) = line.rsplit_once(' ').expect("name value");
            let v: f64 = v.parse().expect("a number");
            values.insert(k.to_string(), v);
        }
        assert_eq!(values["loadgen_subscribers_connected"], 7.0);
        assert_eq!(values["loadgen_deliveries_total"], 700.0);
        assert_eq!(values["loadgen_second"], 4.0);
        assert_eq!(values["loadgen_second_deliveries{class=\"fast\"}"], 90.0);
        assert_eq!(
            values["loadgen_second_latency_p99_seconds{class=\"fast\"}"],
            0.012
        );
        assert_eq!(
            values["loadgen_connect_errors_total{kind=\"connect_econnrefused\"}"],
            4.0
        );
        assert_eq!(
            values["loadgen_connect_errors_total{kind=\"odd\\\"kind\"}"],
            2.0
        );
        // Every sample has its HELP and TYPE.
        for name in values.keys().map(|k| k.split('{').next().unwrap_or(k)) {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
