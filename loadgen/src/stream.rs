//! One subscriber's inbound byte stream: response head, transfer coding, SSE
//! parsing (with `stentor::wire::sse::Parser`) and the per-delivery
//! accounting. Pure: bytes and a clock reading in, counts out; the ring
//! engine only moves bytes here.

use stentor::wire::sse::{Item, Parser};

use crate::http::{self, Dechunker, Head, HEAD_BYTES_MAX};
use crate::payload;
use crate::stats::{bump, Stats};
use crate::track::{Delivery, SeqTracker};

/// A trickling subscriber counts as fallen behind once a delivery is this late.
pub const BEHIND_LATENCY_US: u64 = 1_000_000;

/// How the body is delimited.
#[derive(Debug)]
enum Body {
    /// Until the server closes.
    Close,
    Chunked(Dechunker),
    Length(u64),
}

/// Where a connection's stream stands.
#[derive(Debug)]
enum Phase {
    Head(Vec<u8>),
    Body { body: Body, parser: Box<Parser> },
}

/// What the engine must do after feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep reading.
    More,
    /// The head just completed with 200: the subscriber is connected.
    Connected,
    /// Close the connection; the str names the cause (counted by the caller).
    Close(&'static str),
}

/// Context a delivery needs: clocks and which stats bucket it goes to.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now_ns: u64,
    /// When publishing began, or `u64::MAX` before that.
    pub publish_start_ns: u64,
}

/// One connection's reader. Created per connection attempt; the
/// [`SeqTracker`] and last event id live in the subscriber and outlive it.
#[derive(Debug)]
pub struct StreamReader {
    phase: Phase,
}

impl Default for StreamReader {
    fn default() -> Self {
        Self::new()
    }
}

/// The subscriber-lifetime state a reader updates.
#[derive(Debug, Default)]
pub struct SubLedger {
    pub tracker: SeqTracker,
    pub last_event_id: Option<Box<str>>,
    pub retry_ms: Option<u64>,
    pub slow: bool,
    /// First moment a slow subscriber was seen to fall behind (ns since epoch).
    pub behind_since_ns: Option<u64>,
}

impl StreamReader {
    pub fn new() -> Self {
        Self {
            phase: Phase::Head(Vec::new()),
        }
    }

    /// Feed bytes read from the socket. `items` is scratch space reused
    /// across calls (left empty).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        clock: Clock,
        ledger: &mut SubLedger,
        stats: &mut Stats,
        items: &mut Vec<Item>,
    ) -> Step {
        let mut step = Step::More;
        if let Phase::Head(buf) = &mut self.phase {
            // Only as many bytes as the head may need go into the buffer.
            let room = HEAD_BYTES_MAX + 1 - buf.len().min(HEAD_BYTES_MAX + 1);
            let take = data.len().min(room);
            let old_len = buf.len();
            buf.extend_from_slice(&data[..take]);
            match http::parse_head(buf) {
                Ok(None) => return Step::More,
                Err(http::HeadError::TooLarge) => return Step::Close("head_too_large"),
                Err(http::HeadError::Malformed) => return Step::Close("bad_head"),
                Ok(Some(head)) => {
                    if head.status != 200 {
                        bump(&mut stats.http_statuses, &head.status.to_string());
                        return Step::Close("http_status");
                    }
                    bump(&mut stats.http_statuses, "200");
                    if !head.event_stream {
                        // A 200 that is not a stream (an index page, a proxy's
                        // error page) must not count as a subscriber.
                        return Step::Close("not_event_stream");
                    }
                    let consumed = head.len - old_len;
                    data = &data[consumed..];
                    self.phase = Phase::Body {
                        body: body_of(&head),
                        parser: Box::new(Parser::new()),
                    };
                    step = Step::Connected;
                }
            }
        }
        let Phase::Body { body, parser } = &mut self.phase else {
            return step;
        };
        let mut ended = false;
        match body {
            Body::Close => parser.feed(data, items),
            Body::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                parser.feed(&data[..n], items);
                *left -= n as u64;
                ended = *left == 0;
            }
            Body::Chunked(d) => {
                if d.feed(data, |payload| parser.feed(payload, items)).is_err() {
                    items.clear();
                    return Step::Close("bad_chunking");
                }
                ended = d.is_done();
            }
        }
        if !items.is_empty() {
            let id = parser.last_event_id();
            if ledger.last_event_id.as_deref() != Some(id) {
                ledger.last_event_id = (!id.is_empty()).then(|| id.into());
            }
            ledger.retry_ms = parser.retry_ms();
        }
        for item in items.drain(..) {
            match item {
                Item::Comment(_) => stats.comments += 1,
                Item::Event(ev) => record_event(&ev.data, clock, ledger, stats),
            }
        }
        if ended {
            return Step::Close("body_ended");
        }
        step
    }
}

fn body_of(head: &Head) -> Body {
    if head.chunked {
        Body::Chunked(Dechunker::new())
    } else if let Some(n) = head.content_length {
        Body::Length(n)
    } else {
        Body::Close
    }
}

fn record_event(data: &str, clock: Clock, ledger: &mut SubLedger, stats: &mut Stats) {
    let Some((seq, t_ns)) = payload::decode(data) else {
        stats.foreign_events += 1;
        return;
    };
    match ledger.tracker.record(seq) {
        Delivery::OutOfRange => stats.foreign_events += 1,
        Delivery::Duplicate => stats.duplicates += 1,
        d => {
            if d == Delivery::Late {
                stats.out_of_order += 1;
            }
            let latency_us = clock.now_ns.saturating_sub(t_ns) / 1_000;
            let second = clock.now_ns.saturating_sub(clock.publish_start_ns) / 1_000_000_000;
            let run_second = (clock.now_ns / 1_000_000_000) as u32;
            stats.record_delivery(latency_us, second as usize, run_second, ledger.slow);
            if !ledger.slow {
                stats.record_stage(t_ns.saturating_sub(clock.publish_start_ns), latency_us);
            }
            if ledger.slow && ledger.behind_since_ns.is_none() && latency_us > BEHIND_LATENCY_US {
                ledger.behind_since_ns = Some(clock.now_ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Stats, SubLedger, Vec<Step>) {
        let mut r = StreamReader::new();
        let mut ledger = SubLedger::default();
        let mut stats = Stats::default();
        let mut items = Vec::new();
        let clock = Clock {
            now_ns: 5_000_000,
            publish_start_ns: 0,
        };
        let steps = chunks
            .iter()
            .map(|c| r.feed(c, clock, &mut ledger, &mut stats, &mut items))
            .collect();
        (stats, ledger, steps)
    }

    #[test]
    fn chunked_stream_is_counted_exactly() {
        let events = b": connected\n\nretry: 100\n\nid: 1\ndata: seq=0 t_ns=1000000 xx\n\nid: 2\ndata: seq=1 t_ns=2000000 xx\n\nid: 3\ndata: seq=1 t_ns=2000000 xx\n\n";
        let mut wire = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            events.len()
        )
        .into_bytes();
        wire.extend_from_slice(events);
        wire.extend_from_slice(b"\r\n");
        // Byte at a time: every split point is exercised.
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        let (stats, ledger, steps) = run(&chunks);
        assert_eq!(steps.iter().filter(|s| **s == Step::Connected).count(), 1);
        assert_eq!(stats.deliveries_received, 2);
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.comments, 1);
        assert_eq!(ledger.last_event_id.as_deref(), Some("3"));
        assert_eq!(ledger.retry_ms, Some(100));
        // Latency 5 ms - 1 ms = 4000 µs for the first.
        assert_eq!(
            stats.fast_latency_us.max(),
            stats.fast_latency_us.highest_equivalent(4000)
        );
    }

    #[test]
    fn a_200_that_is_not_a_stream_is_refused() {
        let (_, _, steps) =
            run(&[b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi"]);
        assert_eq!(steps, vec![Step::Close("not_event_stream")]);
    }

    #[test]
    fn non_200_is_counted_and_closed() {
        let (stats, _, steps) = run(&[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]);
        assert_eq!(steps, vec![Step::Close("http_status")]);
        assert_eq!(stats.http_statuses["404"], 1);
    }
}
