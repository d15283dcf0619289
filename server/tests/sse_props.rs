//! Properties of `stentor::wire::sse`: whatever a publisher sends, a WHATWG
//! parser gets back exactly the event, or the publish is refused; and the
//! parser does not care how the stream was cut into reads.

use proptest::prelude::*;
use stentor::wire::sse::{encode, encode_comment, EncodeError, Event, Item, ParsedEvent, Parser};

/// Characters that stress the wire format: line breaks, NUL, spaces, colons,
/// a BOM, non-ASCII, plus anything at all.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '\r', '\n', '\0', ' ', ':', '\u{feff}', '\u{fffd}', '\u{e9}', '\u{1F600}', 'a', 'd',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(len_max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..len_max).prop_map(String::from_iter)
}

fn any_event() -> impl Strategy<Value = Event> {
    (
        prop::option::of(tricky_string(8)),
        prop::option::of(tricky_string(8)),
        tricky_string(24),
        prop::option::of(prop_oneof![0..100_000u64, Just(u64::MAX), any::<u64>()]),
    )
        .prop_map(|(event, id, data, retry)| Event {
            event,
            id,
            data,
            retry,
        })
}

/// What the encoder must refuse, by the rules in `docs/reference/protocol.md (part 1)`.
fn expected_refusal(event: &Event) -> Option<EncodeError> {
    let has_break = |s: &str| s.contains(['\r', '\n']);
    if event.event.as_deref().is_some_and(has_break) {
        return Some(EncodeError::EventLineBreak);
    }
    if let Some(id) = &event.id {
        if has_break(id) {
            return Some(EncodeError::IdLineBreak);
        }
        if id.contains('\0') {
            return Some(EncodeError::IdNul);
        }
    }
    None
}

/// What a browser reports for `event`: CR and CRLF in the data read as LF,
/// no type (or an empty one) reads as `message`.
fn expected_parse(event: &Event, last_event_id_before: &str) -> ParsedEvent {
    ParsedEvent {
        event_type: match event.event.as_deref() {
            None | Some("") => "message".to_owned(),
            Some(event_type) => event_type.to_owned(),
        },
        data: event.data.replace("\r\n", "\n").replace('\r', "\n"),
        last_event_id: event
            .id
            .clone()
            .unwrap_or_else(|| last_event_id_before.to_owned()),
    }
}

fn feed_in_pieces(parser: &mut Parser, bytes: &[u8], cuts: &[usize], out: &mut Vec<Item>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts {
        parser.feed(&bytes[start..cut], out);
        start = cut;
    }
    parser.feed(&bytes[start..], out);
}

/// Bytes that look like an event stream often enough to reach every rule,
/// and arbitrary bytes the rest of the time.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"id: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"retry: ".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"data".to_vec()),
        Just(b"event".to_vec()),
        Just(b"id".to_vec()),
        Just(b"retry".to_vec()),
        Just(b":".to_vec()),
        Just(b": ".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("\u{1F600}".as_bytes().to_vec()),
        Just(b"12".to_vec()),
        Just(b"x".to_vec()),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// A deliberately plain reading of the WHATWG rules over a whole stream, to
/// check the incremental parser against: decode all of it, drop one leading
/// BOM, split lines, interpret each. No bounds, no state across reads.
fn reference_parse(bytes: &[u8]) -> (Vec<Item>, String, Option<u64>) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines: Vec<&str> = text
        .split("\r\n")
        .flat_map(|l| l.split(['\r', '\n']))
        .collect();
    // What follows the last line ending is an unfinished line: ignored.
    lines.pop();
    let (mut items, mut data, mut event_type) = (Vec::new(), String::new(), String::new());
    let (mut id_buffer, mut last_event_id, mut retry_ms) = (String::new(), String::new(), None);
    for line in lines {
        if line.is_empty() {
            last_event_id.clone_from(&id_buffer);
            if !data.is_empty() {
                data.pop();
                let event_type = if event_type.is_empty() {
                    "message".to_owned()
                } else {
                    event_type.clone()
                };
                items.push(Item::Event(ParsedEvent {
                    event_type,
                    data: std::mem::take(&mut data),
                    last_event_id: last_event_id.clone(),
                }));
            }
            data.clear();
            event_type.clear();
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "" => items.push(Item::Comment(value.to_owned())),
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
    (items, last_event_id, retry_ms)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (1) encode then parse gives back the same event, or encode refuses it
    /// with the right error; never a frame that parses differently.
    #[test]
    fn encode_round_trips_or_refuses(event in any_event()) {
        match (encode(&event), expected_refusal(&event)) {
            (Err(err), Some(expected)) => prop_assert_eq!(err, expected),
            (Err(err), None) => prop_assert!(false, "refused a valid event: {err}"),
            (Ok(frame), Some(expected)) => {
                prop_assert!(false, "accepted {event:?} that should be refused ({expected}): {frame:?}")
            }
            (Ok(frame), None) => {
                let mut parser = Parser::new();
                let mut items = Vec::new();
                parser.feed(&frame, &mut items);
                prop_assert_eq!(items, vec![Item::Event(expected_parse(&event, ""))]);
                prop_assert_eq!(parser.last_event_id(), event.id.as_deref().unwrap_or(""));
                prop_assert_eq!(parser.retry_ms(), event.retry);
                prop_assert!(!parser.finish(), "a frame ends at a clean boundary");
            }
        }
    }

    /// A stream of accepted frames and comments parses back in order, the last
    /// event id carried across events without an id, however it is cut.
    #[test]
    fn encoded_stream_round_trips(
        events in prop::collection::vec(any_event(), 0..8),
        comments in prop::collection::vec(tricky_string(12), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let mut last_event_id = String::new();
        for (i, event) in events.iter().enumerate() {
            if let Some(text) = comments.get(i) {
                wire.extend_from_slice(&encode_comment(text));
                for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
                    expected.push(Item::Comment(line.to_owned()));
                }
            }
            let Ok(frame) = encode(event) else { continue };
            wire.extend_from_slice(&frame);
            let parsed = expected_parse(event, &last_event_id);
            last_event_id.clone_from(&parsed.last_event_id);
            expected.push(Item::Event(parsed));
        }
        let mut parser = Parser::new();
        let mut items = Vec::new();
        feed_in_pieces(&mut parser, &wire, &cuts, &mut items);
        prop_assert_eq!(items, expected);
        prop_assert_eq!(parser.last_event_id(), last_event_id.as_str());
    }

    /// (2) The same bytes split at arbitrary points give the same items, ids,
    /// retry and counters as one read, with or without a tight line bound.
    #[test]
    fn split_reads_equal_one_read(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        line_bytes_max in prop_oneof![Just(stentor::wire::sse::LINE_BYTES_MAX), 0..16usize],
        data_bytes_max in prop_oneof![Just(stentor::wire::sse::DATA_BYTES_MAX), 0..32usize],
    ) {
        let new_parser = || {
            Parser::new()
                .with_line_bytes_max(line_bytes_max)
                .with_data_bytes_max(data_bytes_max)
        };
        let mut whole = new_parser();
        let mut whole_items = Vec::new();
        whole.feed(&bytes, &mut whole_items);

        let mut split = new_parser();
        let mut split_items = Vec::new();
        feed_in_pieces(&mut split, &bytes, &cuts, &mut split_items);

        prop_assert_eq!(whole_items, split_items);
        prop_assert_eq!(whole.last_event_id(), split.last_event_id());
        prop_assert_eq!(whole.retry_ms(), split.retry_ms());
        prop_assert_eq!(whole.lines_too_long(), split.lines_too_long());
        prop_assert_eq!(whole.events_discarded(), split.events_discarded());
        prop_assert_eq!(whole.finish(), split.finish());
    }

    /// (3) Arbitrary bytes, cut anywhere, never panic, and every event the
    /// parser hands back obeys the dispatch rules.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        line_bytes_max in prop_oneof![Just(stentor::wire::sse::LINE_BYTES_MAX), 0..16usize],
    ) {
        let mut parser = Parser::new().with_line_bytes_max(line_bytes_max);
        let mut items = Vec::new();
        feed_in_pieces(&mut parser, &bytes, &cuts, &mut items);
        for item in &items {
            if let Item::Event(event) = item {
                prop_assert!(!event.event_type.is_empty());
                prop_assert!(!event.last_event_id.contains(['\0', '\r', '\n']));
            }
            if let Item::Comment(text) = item {
                prop_assert!(!text.contains(['\r', '\n']));
            }
        }
        prop_assert!(!parser.last_event_id().contains('\0'));
        let _ = parser.finish();
    }
    /// The incremental parser, fed in pieces, agrees with the plain reading
    /// of the rules over the whole stream.
    #[test]
    fn parser_agrees_with_reference(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut parser = Parser::new();
        let mut items = Vec::new();
        feed_in_pieces(&mut parser, &bytes, &cuts, &mut items);
        let (expected, last_event_id, retry_ms) = reference_parse(&bytes);
        prop_assert_eq!(items, expected);
        prop_assert_eq!(parser.last_event_id(), last_event_id.as_str());
        prop_assert_eq!(parser.retry_ms(), retry_ms);
    }
}
