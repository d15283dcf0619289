//! A slow client dropped over its queue budget reconnects with
//! `Last-Event-ID` and catches up from history: across the drop it gets
//! every event exactly once and in order, while a fast client on the same
//! topic gets everything live. The real binary on loopback; every wait is
//! bounded.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use stentor::wire::sse::{Item, Parser};
use support::{exchange, scrape, Server};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Events published while the slow client is not reading: 300 × ~1 KiB is
/// far past its budget (16 KiB queue + the kernel's 128 KiB send buffer + 4
/// KiB receive buffer), and within history (1000 events, 1 MiB per topic).
const EVENTS: u64 = 300;
const DATA_BYTES: usize = 1000;

struct Sse {
    sock: TcpStream,
    parser: Parser,
    items: Vec<Item>,
}

impl Sse {
    /// Open a stream; `rcvbuf` shrinks the socket's receive buffer (set
    /// before the request, so the server sees a client that falls behind).
    fn open(server: &Server, last_event_id: Option<u64>, rcvbuf: Option<i32>) -> Sse {
        let mut sock = TcpStream::connect(server.addr).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        if let Some(bytes) = rcvbuf {
            support::shrink_rcvbuf(&sock, bytes);
        }
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            sock,
            "GET /events?topic=r HTTP/1.1\r\nHost: t\r\n{resume}\r\n"
        )
        .unwrap();
        support::read_stream_head(&mut sock);
        Sse {
            sock,
            parser: Parser::new(),
            items: Vec::new(),
        }
    }

    /// Read until `last` arrived or the server closed the stream; true if
    /// the stream ended.
    fn read_to(&mut self, last: Option<u64>) -> bool {
        let mut chunk = [0u8; 65536];
        while last.is_none_or(|l| !self.ids().contains(&l)) {
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return true,
                Ok(n) => self.parser.feed(&chunk[..n], &mut self.items),
            }
        }
        false
    }

    fn ids(&self) -> Vec<u64> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) if e.event_type == "message" => e.last_event_id.parse().ok(),
                _ => None,
            })
            .collect()
    }
}

fn publish(server: &Server, seq: u64) -> u64 {
    let data = format!("{seq}-{}", "x".repeat(DATA_BYTES));
    let body = format!("topic=r&data={data}");
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(server.addr, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let id = answer
        .split("\"id\":")
        .nth(1)
        .and_then(|rest| rest.trim_start_matches('"').split(['"', ',', '}']).next())
        .and_then(|id| id.parse().ok());
    id.unwrap_or_else(|| panic!("no id in {answer}"))
}

fn dropped_by_bytes(server: &Server) -> u64 {
    scrape(server.addr)
        .lines()
        .find_map(|l| l.strip_prefix("stentor_slow_clients_dropped_total{reason=\"queue_bytes\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_dropped_slow_client_resumes_from_history_and_misses_nothing() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--queue-bytes-max",
        "16384",
        "--history-events-max",
        "1000",
        "--heartbeat-ms",
        "3600000",
    ]);
    let mut slow = Sse::open(&server, None, Some(4096));
    let mut fast = Sse::open(&server, None, None);
    let mut ids = Vec::new();
    for seq in 0..EVENTS {
        ids.push(publish(&server, seq));
        // The fast client keeps up as it goes.
        fast.read_to(ids.last().copied());
    }
    let last = *ids.last().unwrap();
    assert!(!fast.read_to(Some(last)), "the fast client was dropped");
    assert_eq!(fast.ids(), ids, "the fast client missed or repeated events");

    // The slow one went over its budget and was dropped...
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped_by_bytes(&server) == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow client was never dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...after the events that had reached its socket; it reads them, sees
    // the end of the stream, and resumes from the last id it parsed.
    assert!(slow.read_to(None), "the dropped stream did not end");
    let before = slow.ids();
    assert!(
        (before.len() as u64) < EVENTS,
        "the slow client got all {} events before being dropped",
        before.len()
    );
    assert_eq!(before, ids[..before.len()], "events before the drop");
    let resume_from = before.last().copied().unwrap_or(0);
    let mut again = Sse::open(&server, Some(resume_from), None);
    assert!(!again.read_to(Some(last)), "the resumed stream ended early");
    let after = again.ids();
    let mut all = before.clone();
    all.extend(&after);
    assert_eq!(
        all,
        ids,
        "across the drop: {} before, {} replayed",
        before.len(),
        after.len()
    );
    eprintln!(
        "events={EVENTS} before_drop={} replayed={} dropped_by_bytes={}",
        before.len(),
        after.len(),
        dropped_by_bytes(&server)
    );
}
