//! A slow client dropped over its queue budget (bytes or age) learns of
//! the drop at once: the server closes it abortively (RST), so the client
//! sees the error without reading the data still queued for it. With a
//! graceful close the FIN would sit behind that data (the client's window
//! is shut) and a stalled client would never notice. The real binary on
//! loopback; every wait is bounded.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::{exchange, scrape, Server};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes are bounded: 400 × ~1 KiB is far past the budget (16 KiB queue,
/// the kernel's send buffer, a 4 KiB receive buffer).
const EVENTS_MAX: u64 = 400;
const DATA_BYTES: usize = 1000;
/// How long after the server counted the drop the stalled client may take
/// to see it: the RST is one loopback packet.
const SEEN_WITHIN: Duration = Duration::from_secs(2);
/// Events for the age test: ~200 KiB, past the kernel's buffers for a
/// stalled client, so frames wait in the server's queue.
const AGE_EVENTS: u64 = 200;

fn publish(server: &Server, seq: u64) {
    let body = format!("topic=s&data={seq}-{}", "x".repeat(DATA_BYTES));
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(server.addr, raw.as_bytes());
    // The publisher's own answer comes with `Connection: close` and must
    // arrive whole: only slow-client drops are abortive.
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("\"id\""), "publish answer cut: {answer}");
}

/// `stentor_slow_clients_dropped_total{reason}` (`queue_bytes` / `queue_age`).
fn dropped(server: &Server, reason: &str) -> u64 {
    let prefix = format!("stentor_slow_clients_dropped_total{{reason=\"{reason}\"}} ");
    scrape(server.addr)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A stream on a socket with a 4 KiB receive buffer, head read, then left
/// unread.
fn open_stalled(server: &Server) -> TcpStream {
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    support::shrink_rcvbuf(&sock, 4096);
    sock.write_all(b"GET /events?topic=s HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    support::read_stream_head(&mut sock);
    sock
}

/// Wait (bounded) for HUP/ERR on `sock` without reading from it.
fn poll_hangup(sock: &TcpStream, within: Duration) -> Option<i16> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one live pollfd, bounded timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, within.as_millis() as i32) };
    (n > 0).then_some(pfd.revents)
}

/// After the drop counter moved: the stalled client sees HUP/ERR without
/// reading, then its buffered bytes and `ECONNRESET`. Returns how long the
/// hang-up took to show, ms.
fn assert_reset_seen(mut slow: TcpStream) -> u128 {
    let dropped_at = Instant::now();
    let revents = poll_hangup(&slow, SEEN_WITHIN).unwrap_or_else(|| {
        panic!("the drop was not visible to a stalled client within {SEEN_WITHIN:?}")
    });
    let seen_after_ms = dropped_at.elapsed().as_millis();
    assert!(
        revents & (libc::POLLHUP | libc::POLLERR) != 0,
        "revents {revents:#x}: a FIN queued behind data, not a reset"
    );
    // What had reached our buffer is still readable, then the reset.
    let mut chunk = [0u8; 65536];
    let mut read_bytes = 0;
    let error = loop {
        match slow.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => read_bytes += n,
            Err(e) => break Some(e),
        }
        assert!(read_bytes <= 1 << 20, "endless data after the drop");
    };
    let kind = error.as_ref().map(|e| e.kind());
    assert_eq!(
        kind,
        Some(std::io::ErrorKind::ConnectionReset),
        "expected a reset after {read_bytes} bytes"
    );
    seen_after_ms
}

#[test]
fn a_stalled_client_dropped_by_bytes_sees_the_reset_without_reading() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--queue-bytes-max",
        "16384",
        "--heartbeat-ms",
        "3600000",
    ]);
    let slow = open_stalled(&server);
    let mut seq = 0;
    while dropped(&server, "queue_bytes") == 0 {
        assert!(seq < EVENTS_MAX, "not dropped after {seq} events");
        publish(&server, seq);
        seq += 1;
    }
    let seen_after_ms = assert_reset_seen(slow);
    eprintln!("events={seq} drop_seen_after_ms={seen_after_ms}");
}

#[test]
fn a_stalled_client_dropped_by_age_sees_the_reset_without_reading() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--queue-age-ms-max",
        "300",
        "--heartbeat-ms",
        "3600000",
    ]);
    let slow = open_stalled(&server);
    // Enough to fill the kernel's buffers and leave frames queued; then the
    // oldest ages past 300 ms and the sweep (every 500 ms) drops it.
    for seq in 0..AGE_EVENTS {
        publish(&server, seq);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped(&server, "queue_age") == 0 {
        assert!(Instant::now() < deadline, "never dropped by age");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen_after_ms = assert_reset_seen(slow);
    eprintln!("drop_seen_after_ms={seen_after_ms}");
}
