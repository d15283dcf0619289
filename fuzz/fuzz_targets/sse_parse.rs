//! `sse_parse`: the incremental WHATWG event-stream parser
//! (`stentor::wire::sse::Parser`) and the encoder it must agree with.
//!
//! The input is the bytes of a `text/event-stream` response. Checked:
//! - split invariance: fed all at once, one byte per read, at every single
//!   split point (short inputs) and at pseudo-random split points (from the
//!   input's hash), the parser hands back the same items and ends in the same
//!   state (last event id, retry, counters, unfinished or not). Under the
//!   default bounds and under tiny ones (8-byte lines, 32-byte data) so the
//!   discard paths are split too;
//! - round trip of what was parsed: every event and comment the parser
//!   produced, encoded again by the server's encoder, parses back to itself;
//! - round trip of what a publisher may send: the input read as an
//!   [`arbitrary`] event; `encode` refuses it (and only if `event` holds CR
//!   or LF, or `id` holds CR, LF or NUL) or it parses back to the same event,
//!   data lines normalised to LF; `encode_comment` of the input text parses
//!   back to its lines.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use stentor::wire::sse::{encode, encode_comment, encoded_len, Event, Item, ParsedEvent, Parser};
use stentor_fuzz::{cut_points, pieces, SPLITS_MAX};

/// Streams up to this long are also fed in two reads at every split point.
/// Lower than for the stateless HTTP decoders: each split is a whole parse
/// (twice, under both bounds), and one byte per read already puts a read
/// boundary at every position.
const EXHAUSTIVE_SPLIT_BYTES_MAX: usize = 64;

/// What a parser leaves behind once a stream is fed: compared across splits.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Item>,
    last_event_id: String,
    retry_ms: Option<u64>,
    lines_too_long: u64,
    events_discarded: u64,
    unfinished: bool,
}

#[derive(Clone, Copy)]
enum Bounds {
    Default,
    Tiny,
}

fn parser(bounds: Bounds) -> Parser {
    match bounds {
        Bounds::Default => Parser::new(),
        Bounds::Tiny => Parser::new().with_line_bytes_max(8).with_data_bytes_max(32),
    }
}

fn run<'a>(bounds: Bounds, reads: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut p = parser(bounds);
    let mut items = Vec::new();
    for read in reads {
        p.feed(read, &mut items);
    }
    Outcome {
        items,
        last_event_id: p.last_event_id().to_owned(),
        retry_ms: p.retry_ms(),
        lines_too_long: p.lines_too_long(),
        events_discarded: p.events_discarded(),
        unfinished: p.finish(),
    }
}

/// A publisher's event, structured by `arbitrary` (the server's `Event` has
/// no `Arbitrary` impl and should not need one).
#[derive(Arbitrary, Debug)]
struct ArbEvent {
    event: Option<String>,
    id: Option<String>,
    data: String,
    retry: Option<u64>,
}

fuzz_target!(|data: &[u8]| {
    for bounds in [Bounds::Default, Bounds::Tiny] {
        let whole = run(bounds, [data]);
        let bytewise = run(bounds, data.chunks(1));
        assert_eq!(bytewise, whole, "one byte per read");
        let cuts = cut_points(data, data.len(), SPLITS_MAX);
        assert_eq!(run(bounds, pieces(data, &cuts)), whole, "cuts {cuts:?}");
        if data.len() <= EXHAUSTIVE_SPLIT_BYTES_MAX {
            for cut in 1..data.len() {
                let (a, b) = data.split_at(cut);
                assert_eq!(run(bounds, [a, b]), whole, "cut at {cut}");
            }
        }
        if let Bounds::Default = bounds {
            reencode_parsed(&whole.items);
        }
    }
    if let Ok(event) = ArbEvent::arbitrary_take_rest(Unstructured::new(data)) {
        publisher_round_trip(event);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        comment_round_trip(text);
    }
});

/// Every event and comment the parser produced goes back on the wire through
/// the server's encoder and parses to itself: the encoder can say anything a
/// stream can.
fn reencode_parsed(items: &[Item]) {
    for item in items {
        let frame = match item {
            Item::Event(parsed) => encode(&Event {
                event: Some(parsed.event_type.clone()),
                id: Some(parsed.last_event_id.clone()),
                data: parsed.data.clone(),
                retry: None,
            })
            .unwrap_or_else(|e| panic!("parsed {parsed:?} cannot be encoded: {e}")),
            Item::Comment(text) => encode_comment(text),
        };
        let again = run(Bounds::Default, [&frame[..]]);
        assert_eq!(again.items, vec![item.clone()], "frame {frame:?}");
        assert!(!again.unfinished);
    }
}

fn publisher_round_trip(arb: ArbEvent) {
    let has_break = |s: &str| s.contains(['\r', '\n']);
    let refusable = arb.event.as_deref().is_some_and(has_break)
        || arb
            .id
            .as_deref()
            .is_some_and(|id| has_break(id) || id.contains('\0'));
    let event = Event {
        event: arb.event,
        id: arb.id,
        data: arb.data,
        retry: arb.retry,
    };
    let frame = match encode(&event) {
        Err(e) => {
            assert!(refusable, "{event:?} refused: {e}");
            return;
        }
        Ok(frame) => frame,
    };
    assert!(!refusable, "{event:?} accepted");
    assert_eq!(frame.len(), encoded_len(&event));
    let parsed = run(Bounds::Default, [&frame[..]]);
    let expected = ParsedEvent {
        event_type: match event.event.as_deref() {
            None | Some("") => "message".to_owned(),
            Some(t) => t.to_owned(),
        },
        data: event.data.replace("\r\n", "\n").replace('\r', "\n"),
        last_event_id: event.id.clone().unwrap_or_default(),
    };
    assert_eq!(parsed.items, vec![Item::Event(expected)], "frame {frame:?}");
    assert_eq!(parsed.retry_ms, event.retry);
    assert!(!parsed.unfinished);
}

fn comment_round_trip(text: &str) {
    let frame = encode_comment(text);
    let parsed = run(Bounds::Default, [&frame[..]]);
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<Item> = normalised
        .split('\n')
        .map(|line| Item::Comment(line.to_owned()))
        .collect();
    assert_eq!(parsed.items, lines, "frame {frame:?}");
    assert!(!parsed.unfinished);
}
