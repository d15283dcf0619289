//! The gate's workloads: fixed amounts of hot-path work whose instruction
//! counts under callgrind decide whether a change made the hot path slower.
//!
//! Each workload is one entry in [`WORKLOADS`]: a function that builds its
//! input (not counted) and hands the operation to [`stentor_gate_measure`],
//! which runs it a fixed number of times. Callgrind counts instructions only
//! while `stentor_gate_measure` runs (`--toggle-collect`), so setup, process
//! start-up and exit are never part of a count. One workload runs per
//! process, so every workload can share that one measured function.
//!
//! Adding a workload is one entry in [`WORKLOADS`] and one baseline line
//! (`just bench-gate --update` writes it). See `docs/measurements/benchmarks.md`.

use std::hint::black_box;

use stentor::ring::sendq::SendQueue;
use stentor::ring::token::{OpKind, Token, GENERATION_MAX};
use stentor::wire::{http, sse};

use crate::dataplane::{self, Delivered};

/// One workload the gate measures.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Stable name used in the baseline file and the report, `group/case`
    /// like the criterion benches so the two read alike.
    pub name: &'static str,
    /// How many times the measured operation runs per measurement, so a
    /// report can show instructions per operation.
    pub iterations: u32,
    /// One line for the report and docs: what this stands for on the hot path.
    pub what: &'static str,
    /// Build the input (not counted), check it is one the hot path accepts,
    /// then run the operation `iterations` times in [`stentor_gate_measure`].
    pub run: fn(u32),
}

impl Workload {
    /// Run the workload once, as the gate measures it.
    pub fn run(&self) {
        (self.run)(self.iterations)
    }
}

/// The callgrind `--toggle-collect` pattern: every instantiation of
/// [`stentor_gate_measure`]. Wildcards on both sides because the symbol
/// callgrind sees is the demangled path with the closure's type in it
/// (`stentor_bench::workloads::stentor_gate_measure::<...{{closure}}>`).
pub const TOGGLE_PATTERN: &str = "*stentor_gate_measure*";

/// Run `op` `iterations` times; everything it executes is what the gate counts.
///
/// Never inlined: its symbol is what callgrind switches counting on and off
/// with. `black_box` on the result keeps the work from being optimised away;
/// callers `black_box` the input for the same reason.
#[inline(never)]
pub fn stentor_gate_measure<T>(iterations: u32, mut op: impl FnMut() -> T) {
    for _ in 0..iterations {
        black_box(op());
    }
}

/// Every workload, in report order.
pub static WORKLOADS: &[Workload] = &[
    Workload {
        name: "sse_encode/128B",
        iterations: ENCODE_SMALL_ITERATIONS,
        what: "publish: encode one 128 B event (event + id + one data line) into a shared frame",
        run: |n| encode_workload(&event_of(128, 1), n),
    },
    Workload {
        name: "sse_encode/4KiB",
        iterations: ENCODE_LARGE_ITERATIONS,
        what: "publish: encode one 4 KiB single-line event (line-break scan + copy dominate)",
        run: |n| encode_workload(&event_of(4096, 1), n),
    },
    Workload {
        name: "sse_encode/4KiB_64_lines",
        iterations: ENCODE_LARGE_ITERATIONS,
        what: "publish: encode one 4 KiB event split into 64 `data:` lines (per-line cost)",
        run: |n| encode_workload(&event_of(4096, 64), n),
    },
    Workload {
        name: "sse_encode_comment/heartbeat",
        iterations: ENCODE_SMALL_ITERATIONS,
        what: "timers: encode the heartbeat comment frame",
        run: |n| stentor_gate_measure(n, || sse::encode_comment(black_box("heartbeat"))),
    },
    Workload {
        name: "sse_parse/100x128B_one_read",
        iterations: PARSE_STREAM_ITERATIONS,
        what: "loadgen: parse a stream of 100 encoded 128 B events handed over in one read",
        run: |n| parse_workload(&stream_of(100, 128), usize::MAX, n),
    },
    Workload {
        name: "sse_parse/100x128B_reads_of_61B",
        iterations: PARSE_STREAM_ITERATIONS,
        what: "loadgen: the same stream in 61 B reads, so lines span reads (partial-line path)",
        run: |n| parse_workload(&stream_of(100, 128), SPLIT_READ_BYTES, n),
    },
    Workload {
        name: "http_parse_head/subscribe",
        iterations: HTTP_HEAD_ITERATIONS,
        what: "accept: parse a browser's `GET /events` head (9 headers, Last-Event-ID)",
        run: |n| {
            let limits = http::Limits::default();
            check_input(http::parse_head(SUBSCRIBE_HEAD, &limits).map_err(|e| format!("{e:?}")));
            stentor_gate_measure(n, || http::parse_head(black_box(SUBSCRIBE_HEAD), &limits))
        },
    },
    Workload {
        name: "http_parse_query/subscribe",
        iterations: QUERY_ITERATIONS,
        what: "accept: parse a subscribe query string (3 topics, one percent-escape, lastEventId)",
        run: |n| {
            check_input(http::parse_query(SUBSCRIBE_QUERY).map_err(|e| format!("{e:?}")));
            stentor_gate_measure(n, || http::parse_query(black_box(SUBSCRIBE_QUERY)))
        },
    },
    Workload {
        name: "http_parse_form/publish_128B",
        iterations: QUERY_ITERATIONS,
        what: "publish: parse a form-encoded `POST /publish` body with 128 B of data",
        run: |n| {
            let body = publish_form_body(128);
            check_input(http::parse_form(&body).map_err(|e| format!("{e:?}")));
            stentor_gate_measure(n, || http::parse_form(black_box(&body)))
        },
    },
    Workload {
        name: "fanout_plan/1k_subscribers",
        iterations: 20,
        what: "publish: queue one frame (a refcount) for each of 1k idle subscribers, list the queues to send",
        run: |n| fanout_workload(1_000, n),
    },
    Workload {
        name: "fanout_plan/10k_subscribers",
        iterations: 4,
        what: "publish: the same for 10k subscribers of one topic",
        run: |n| fanout_workload(10_000, n),
    },
    Workload {
        name: "fanout_plan/100k_subscribers",
        iterations: 1,
        what: "publish: the same for 100k subscribers of one topic",
        run: |n| fanout_workload(100_000, n),
    },
    Workload {
        name: "sendq_coalesce/16x128B",
        iterations: 200,
        what: "send: 16 frames queued, one SendMsg batch of 16 iovecs built, completed in full",
        run: |n| {
            let frame = dataplane::frame_128b();
            let mut queue = SendQueue::new();
            let mut iovecs = Vec::with_capacity(dataplane::IOVECS_PER_SEND_MAX);
            stentor_gate_measure(n, || {
                dataplane::coalesce_cycle(&mut queue, black_box(&frame), 16, &mut iovecs)
            })
        },
    },
    Workload {
        name: "sendq_partial/64x128B_in_1000B_sends",
        iterations: 50,
        what: "send: 64 frames sent 1000 B at a time, each batch resuming mid-frame",
        run: |n| {
            let frame = dataplane::frame_128b();
            let mut queue = SendQueue::new();
            let mut iovecs = Vec::with_capacity(dataplane::IOVECS_PER_SEND_MAX);
            stentor_gate_measure(n, || {
                dataplane::partial_send_cycle(&mut queue, black_box(&frame), 64, &mut iovecs)
            })
        },
    },
    Workload {
        name: "token/pack_unpack",
        iterations: 10_000,
        what: "ring: pack a Send token into user_data and decode its completion",
        run: |n| {
            let mut key = 0u32;
            stentor_gate_measure(n, || {
                key = key.wrapping_add(1);
                let token = Token::new(OpKind::Send, black_box(key), black_box(key & GENERATION_MAX));
                Token::unpack(black_box(token.pack()))
            })
        },
    },
    Workload {
        name: "history_append/128B_full_ring",
        iterations: 1000,
        what: "publish: append a 128 B frame to a full 1024-event history (evicts the oldest)",
        run: |n| {
            let frame = dataplane::frame_128b();
            let mut history = dataplane::full_history(&frame);
            let mut id = dataplane::HISTORY_EVENTS as u64;
            stentor_gate_measure(n, || {
                id += 1;
                history.push(black_box(id), frame.clone())
            })
        },
    },
    Workload {
        name: "hub_replay/100_of_1000",
        iterations: 100,
        what: "subscribe: a client resuming 100 events back in a 1000-event history gets its replay",
        run: |n| {
            let (hub, topic, resume) = dataplane::hub_for_replay();
            stentor_gate_measure(n, || dataplane::replay(black_box(&hub), &topic, black_box(&resume)))
        },
    },
];

/// Look a workload up by its name.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

// Iteration counts: instruction counts are exact, so these only need to be
// large enough that per-operation work dwarfs the one-off cost of entering
// the measured function, and small enough that valgrind (~50x slower) runs
// each workload in well under a second.
const ENCODE_SMALL_ITERATIONS: u32 = 1000;
const ENCODE_LARGE_ITERATIONS: u32 = 200;
const PARSE_STREAM_ITERATIONS: u32 = 20;
const HTTP_HEAD_ITERATIONS: u32 = 500;
const QUERY_ITERATIONS: u32 = 1000;

/// Bytes per read in the split-read parse workload: prime, so reads end at
/// every position within a line over the run.
const SPLIT_READ_BYTES: usize = 61;

/// A typical browser subscribe request, as the criterion bench uses.
pub const SUBSCRIBE_HEAD: &[u8] = b"GET /events?topic=news&topic=sport HTTP/1.1\r\n\
Host: edge.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Last-Event-ID: 41\r\n\
Origin: https://app.example.com\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\r\n";

/// A subscribe query with the features a parser has to handle.
pub const SUBSCRIBE_QUERY: &str = "topic=news&topic=sport&topic=prices%2Feur&lastEventId=1234567";

/// An event with `data_bytes` of `x` split into `lines` lines, plus an event
/// type and an id, like a typical publish. Same shape as the criterion bench.
pub fn event_of(data_bytes: usize, lines: usize) -> sse::Event {
    let lines = lines.max(1);
    let line_bytes = (data_bytes / lines).max(1);
    let mut data = String::with_capacity(data_bytes + lines);
    for i in 0..lines {
        if i > 0 {
            data.push('\n');
        }
        data.extend(std::iter::repeat_n('x', line_bytes));
    }
    sse::Event {
        event: Some("update".into()),
        id: Some("1234567".into()),
        data,
        retry: None,
    }
}

/// A form-encoded publish body: topic, event type, id, and `data_bytes` of
/// data with spaces (`+`) and one percent-escape, as a browser form sends it.
pub fn publish_form_body(data_bytes: usize) -> Vec<u8> {
    let mut body = b"topic=news&event=update&id=1234567&data=%7B".to_vec();
    body.extend((0..data_bytes.saturating_sub(1)).map(|i| if i % 8 == 7 { b'+' } else { b'x' }));
    body
}

/// `events` encoded events of `data_bytes` each, back to back.
pub fn stream_of(events: usize, data_bytes: usize) -> Vec<u8> {
    let frame = match sse::encode(&event_of(data_bytes, 1)) {
        Ok(frame) => frame,
        // The event is built here from constants; refusing it is a bug in
        // this file, not an input error.
        Err(error) => panic!("workload event must encode: {error}"),
    };
    let mut stream = Vec::with_capacity(frame.len() * events);
    for _ in 0..events {
        stream.extend_from_slice(&frame);
    }
    stream
}

/// Inputs are constants of this file: one the wire layer refuses is a bug
/// here, found before anything is measured rather than counted as work.
fn check_input<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        panic!("workload input refused by the wire layer: {error}");
    }
}

fn encode_workload(event: &sse::Event, iterations: u32) {
    check_input(sse::encode(event));
    stentor_gate_measure(iterations, || sse::encode(black_box(event)));
}

/// Parse `stream` from a fresh parser, in reads of `read_bytes`, per iteration.
fn parse_workload(stream: &[u8], read_bytes: usize, iterations: u32) {
    let mut items = Vec::with_capacity(128);
    stentor_gate_measure(iterations, || {
        let mut parser = sse::Parser::new();
        items.clear();
        for chunk in black_box(stream).chunks(read_bytes) {
            parser.feed(chunk, &mut items);
        }
        items.len()
    });
}

/// Deliver one frame to `subscribers` idle subscribers, `iterations` times.
/// Each pass gets fresh empty queues (an idle subscriber receiving an event:
/// its first push allocates the queue), built before counting starts and
/// dropped after it ends, so only the delivery loop is counted.
fn fanout_workload(subscribers: u32, iterations: u32) {
    let index = dataplane::index_with_subscribers(subscribers);
    let frame = dataplane::frame_128b();
    let mut passes: Vec<(Vec<SendQueue>, Vec<u32>)> = (0..iterations)
        .map(|_| {
            (
                dataplane::fresh_queues(subscribers),
                Vec::with_capacity(subscribers as usize),
            )
        })
        .collect();
    let mut next = passes.iter_mut();
    stentor_gate_measure(iterations, || match next.next() {
        Some((queues, dirty)) => dataplane::deliver(
            black_box(&index),
            dataplane::TOPIC,
            &frame,
            queues,
            dirty,
            1,
        ),
        None => Delivered::default(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_a_baseline_line() {
        for (i, a) in WORKLOADS.iter().enumerate() {
            assert!(!a.name.contains(char::is_whitespace), "{}", a.name);
            assert!(a.iterations > 0, "{}", a.name);
            assert!(WORKLOADS[i + 1..].iter().all(|b| b.name != a.name));
            assert_eq!(find(a.name).map(|w| w.name), Some(a.name));
        }
    }

    #[test]
    fn every_workload_runs_on_inputs_the_wire_layer_accepts() {
        // Each workload checks its input before measuring and panics on one
        // the wire layer refuses.
        for workload in WORKLOADS {
            // The index's debug check for double subscriptions is a linear
            // scan per subscribe: building 100k subscribers in a debug build
            // is quadratic (minutes). The release gate runs it every time.
            if cfg!(debug_assertions) && workload.name.contains("100k") {
                continue;
            }
            (workload.run)(1);
        }
    }

    #[test]
    fn inputs_have_the_advertised_shape() {
        let stream = stream_of(100, 128);
        let mut items = Vec::new();
        sse::Parser::new().feed(&stream, &mut items);
        assert_eq!(items.len(), 100);
        assert!(items
            .iter()
            .all(|i| matches!(i, sse::Item::Event(e) if e.data.len() == 128)));
        let mut split = Vec::new();
        let mut parser = sse::Parser::new();
        for chunk in stream.chunks(SPLIT_READ_BYTES) {
            parser.feed(chunk, &mut split);
        }
        assert_eq!(split, items);
        assert_eq!(event_of(4096, 64).data.lines().count(), 64);
        let pairs = http::parse_query(SUBSCRIBE_QUERY).expect("query parses");
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[2], ("topic".into(), "prices/eur".into()));
        let form = http::parse_form(&publish_form_body(128)).expect("form parses");
        assert_eq!(form.len(), 4);
        assert_eq!(form[3].0, "data");
        assert_eq!(form[3].1.len(), 128);
        assert!(form[3].1.starts_with("{xxx") && form[3].1.contains(' '));
    }
}
