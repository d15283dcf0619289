//! A small SSE server for testing the load generator: std threads, loopback,
//! port 0, with switchable faults whose effect on the counts is known
//! exactly. It accepts `POST /publish` (JSON `{"topic","data"}`) and fans
//! each event out to the subscribers of its topic (`GET /events?topic=`),
//! replaying history after `Last-Event-ID`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Faults, all keyed on the global event id (1, 2, 3, ...).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Events whose id is a multiple of k are never sent.
    pub drop_every: Option<u64>,
    /// Events whose id is a multiple of k are sent twice.
    pub duplicate_every: Option<u64>,
    /// Events whose id is a multiple of k are sent after the next event.
    pub swap_every: Option<u64>,
    /// Fan-out happens this long after the publish.
    pub delay: Duration,
    /// After sending event n, every open stream is closed (once).
    pub close_after: Option<u64>,
    /// Events after n are accepted but never sent; streams stay open.
    pub stall_after: Option<u64>,
    /// A subscriber whose write blocks this long is dropped (abortive close).
    pub drop_blocked_after: Option<Duration>,
    /// Drop blocked subscribers with a FIN queued behind the unread data
    /// instead of a reset.
    pub drop_gracefully: bool,
    /// Each publish is answered this long after it was read (a server that
    /// answers only after its fan-out); the next request waits behind it.
    pub answer_delay: Duration,
    /// Publishes whose id is a multiple of k are refused with 503 (not sent).
    pub reject_every: Option<u64>,
    /// Status for `GET /events` (200 = stream).
    pub get_status: Option<u16>,
    pub chunked: bool,
    /// Send each event's data wrapped the way Centrifugo does,
    /// `{"pub":{"data":DATA}}`, where DATA is the published `data` as JSON
    /// (a string stays a quoted string, an object stays an object).
    pub wrap_pub_data: bool,
    /// The first k resumes (`GET /events` with `Last-Event-ID`) are answered
    /// 503, as by a load balancer with no live node for them yet.
    pub refuse_resumes: u64,
}

struct Sub {
    topic: String,
    stream: TcpStream,
    chunked: bool,
}

struct Hub {
    subs: Vec<Sub>,
    /// (id, topic, data) of every event dispatched, for Last-Event-ID replay.
    history: Vec<(u64, String, String)>,
    closed_once: bool,
    resumes_refused: u64,
}

pub struct FakeServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub published: Arc<AtomicU64>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl FakeServer {
    pub fn start(faults: Faults) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let hub = Arc::new(Mutex::new(Hub {
            subs: Vec::new(),
            history: Vec::new(),
            closed_once: false,
            resumes_refused: 0,
        }));
        let (tx, rx) = mpsc::channel::<(Instant, u64, String, String)>();
        {
            let hub = hub.clone();
            let faults = faults.clone();
            std::thread::spawn(move || dispatch(rx, hub, faults));
        }
        {
            let stop = stop.clone();
            let published = published.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let hub = hub.clone();
                    let tx = tx.clone();
                    let faults = faults.clone();
                    let published = published.clone();
                    std::thread::spawn(move || handle(conn, hub, tx, faults, published));
                }
            });
        }
        FakeServer {
            port,
            stop,
            published,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn handle(
    conn: TcpStream,
    hub: Arc<Mutex<Hub>>,
    tx: mpsc::Sender<(Instant, u64, String, String)>,
    faults: Faults,
    published: Arc<AtomicU64>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut out = write_half;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut content_length = 0usize;
        let mut last_event_id: Option<u64> = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("last-event-id") {
                    last_event_id = v.parse().ok();
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if method == "POST" && target == "/publish" {
            let mut body = vec![0u8; content_length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let topic = v["topic"].as_str().unwrap_or("").to_string();
            let data = if faults.wrap_pub_data {
                format!(r#"{{"pub":{{"data":{}}}}}"#, v["data"])
            } else {
                v["data"].as_str().unwrap_or("").to_string()
            };
            let id = published.fetch_add(1, Ordering::AcqRel) + 1;
            if faults.reject_every.is_some_and(|k| id % k == 0) {
                let resp = "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
                if out.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            let _ = tx.send((Instant::now() + faults.delay, id, topic, data));
            std::thread::sleep(faults.answer_delay);
            let body = format!("{{\"id\":\"{id}\"}}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if out.write_all(resp.as_bytes()).is_err() {
                return;
            }
        } else if method == "GET" && target.starts_with("/events?topic=") {
            let topic = target["/events?topic=".len()..].to_string();
            if last_event_id.is_some() {
                let mut h = hub.lock().expect("hub lock");
                if h.resumes_refused < faults.refuse_resumes {
                    h.resumes_refused += 1;
                    drop(h);
                    let _ = out.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                    );
                    continue;
                }
            }
            let status = faults.get_status.unwrap_or(200);
            if status != 200 {
                let _ = out.write_all(
                    format!("HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
                continue;
            }
            let head = if faults.chunked {
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            };
            // Register and replay under the hub lock, so no event falls
            // between the replay and the live stream.
            let mut h = hub.lock().expect("hub lock");
            let mut first = String::from(": connected\n\nretry: 100\n\n");
            if let Some(last) = last_event_id {
                for (id, t, d) in &h.history {
                    if *id > last && *t == topic {
                        first += &frame(*id, d);
                    }
                }
            }
            let ok = out.write_all(head.as_bytes()).is_ok()
                && write_frame(&mut out, &first, faults.chunked).is_ok();
            if ok {
                if let Some(d) = faults.drop_blocked_after {
                    // A small send buffer, so a client that stops reading
                    // blocks our writes soon and gets dropped.
                    set_sndbuf(&out, 8192);
                    let _ = out.set_write_timeout(Some(d));
                }
                h.subs.push(Sub {
                    topic,
                    stream: out,
                    chunked: faults.chunked,
                });
            }
            return;
        } else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
}

fn frame(id: u64, data: &str) -> String {
    format!("id: {id}\ndata: {data}\n\n")
}

fn write_frame(out: &mut TcpStream, text: &str, chunked: bool) -> std::io::Result<()> {
    if chunked {
        out.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes())
    } else {
        out.write_all(text.as_bytes())
    }
}

fn set_sndbuf(stream: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with an int of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
}

/// Abortive close (RST), as a server dropping a slow client would do.
fn abort(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a struct of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

fn dispatch(
    rx: mpsc::Receiver<(Instant, u64, String, String)>,
    hub: Arc<Mutex<Hub>>,
    faults: Faults,
) {
    let mut held: VecDeque<(u64, String, String)> = VecDeque::new();
    while let Ok((due, id, topic, data)) = rx.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut h = hub.lock().expect("hub lock");
        h.history.push((id, topic.clone(), data.clone()));
        if faults.stall_after.is_some_and(|n| id > n) {
            continue;
        }
        if faults.drop_every.is_some_and(|k| id % k == 0) {
            continue;
        }
        if faults.swap_every.is_some_and(|k| id % k == 0) {
            held.push_back((id, topic, data));
            continue;
        }
        let times = if faults.duplicate_every.is_some_and(|k| id % k == 0) {
            2
        } else {
            1
        };
        let mut text = frame(id, &data).repeat(times);
        // A held (swapped) event goes right after this one.
        if let Some((hid, ht, hd)) = held.pop_front() {
            if ht == topic {
                text += &frame(hid, &hd);
            } else {
                send(&mut h, &ht, &frame(hid, &hd), &faults);
            }
        }
        send(&mut h, &topic, &text, &faults);
        if faults.close_after == Some(id) && !h.closed_once {
            h.closed_once = true;
            for s in h.subs.drain(..) {
                let _ = s.stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn send(h: &mut Hub, topic: &str, text: &str, faults: &Faults) {
    h.subs.retain_mut(|s| {
        if s.topic != topic {
            return true;
        }
        match write_frame(&mut s.stream, text, s.chunked) {
            Ok(()) => true,
            Err(_) => {
                if faults.drop_gracefully {
                    let _ = s.stream.shutdown(Shutdown::Both);
                } else if faults.drop_blocked_after.is_some() {
                    abort(&s.stream);
                }
                false
            }
        }
    });
}
