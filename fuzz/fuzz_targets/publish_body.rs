//! `publish_body`: the body of `POST /publish` (`parse_publish`), whatever a
//! publisher sends.
//!
//! Input: `<Content-Type>\n<body>`. The first line is the `Content-Type`
//! header as sent (JSON, form, with parameters, or anything else); an input
//! without a newline is a body sent without `Content-Type`. So the seeds in
//! `corpus/publish_body/` read as requests. Under the default rules and under
//! tiny ones (8-byte topics, batches of 3), checked:
//! - no panic, and a refusal is a 400, 413 or 415 whose JSON body
//!   (`PublishError::to_json`) is valid JSON with an `error` string, naming a
//!   real field when it names one;
//! - an accepted publish has 1..=`batch_events_max` events, each with a
//!   topic that passes the topic rules, no `id` (the hub assigns it), no
//!   reserved or empty `event`, and an event `wire::sse::encode` accepts and
//!   a WHATWG parser reads back exactly (data lines normalised to LF);
//! - an accepted JSON publish says what the publisher wrote, by an oracle
//!   that reads the body again with plain `serde_json`: the topic is the
//!   decoded `topic` string; a `data` string is published decoded (never as
//!   its JSON literal) and any other `data` as JSON text of the same value.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use stentor::api::publish::BATCH_EVENTS_MAX_DEFAULT;
use stentor::hub::publish::RESERVED_EVENT_PREFIX;
use stentor::hub::topic::Topic;
use stentor::wire::sse::{encode, Item, ParsedEvent, Parser};
use stentor_fuzz::{parse_publish, PublishError, PublishRequest, PublishRules};

/// `--topic-bytes-max` default (`server/src/config.rs`).
const TOPIC_BYTES_MAX_DEFAULT: usize = 128;

const RULES: [PublishRules; 2] = [
    PublishRules {
        topic_bytes_max: TOPIC_BYTES_MAX_DEFAULT,
        batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
    },
    PublishRules {
        topic_bytes_max: 8,
        batch_events_max: 3,
    },
];

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        // Only a UTF-8 header value reaches the router as text.
        Some(nl) => (std::str::from_utf8(&data[..nl]).ok(), &data[nl + 1..]),
        None => (None, data),
    };
    for rules in &RULES {
        match parse_publish(content_type, body, rules) {
            Ok(requests) => {
                check_accepted(&requests, rules);
                check_json_oracle(body, &requests);
            }
            Err(e) => check_refused(&e),
        }
    }
});

fn check_accepted(requests: &[PublishRequest], rules: &PublishRules) {
    assert!(!requests.is_empty() && requests.len() <= rules.batch_events_max);
    for r in requests {
        let topic = r.topic.as_str();
        assert!(
            Topic::parse(topic, rules.topic_bytes_max).is_ok(),
            "accepted topic {topic:?}"
        );
        let event = &r.event;
        assert_eq!(event.id, None, "a publisher set the id");
        if let Some(t) = &event.event {
            assert!(
                !t.is_empty() && !t.starts_with(RESERVED_EVENT_PREFIX),
                "event {t:?}"
            );
        }
        let frame = encode(event).unwrap_or_else(|e| panic!("accepted {event:?}, encode: {e}"));
        let mut parser = Parser::new();
        let mut items = Vec::new();
        parser.feed(&frame, &mut items);
        let expected = ParsedEvent {
            event_type: event.event.clone().unwrap_or_else(|| "message".to_owned()),
            data: event.data.replace("\r\n", "\n").replace('\r', "\n"),
            last_event_id: String::new(),
        };
        assert_eq!(items, vec![Item::Event(expected)], "frame {frame:?}");
        assert_eq!(parser.retry_ms(), event.retry);
        assert!(!parser.finish());
    }
}

fn check_refused(e: &PublishError) {
    assert!(matches!(e.status, 400 | 413 | 415), "{e:?}");
    assert!(!e.message.is_empty());
    if let Some(field) = e.field {
        assert!(
            ["topic", "data", "event", "retry", "id"].contains(&field),
            "{e:?}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&e.to_json())
        .unwrap_or_else(|err| panic!("{e:?} answers invalid JSON: {err}"));
    assert!(json["error"].is_string());
    assert_eq!(json.get("field").and_then(|f| f.as_str()), e.field);
}

/// One JSON element as plain `serde_json` reads it. Duplicate keys would
/// collapse here, but `parse_publish` refuses them, so an accepted body has none.
type Fields = HashMap<String, Box<RawValue>>;

fn check_json_oracle(body: &[u8], requests: &[PublishRequest]) {
    // Only a JSON publish can be accepted with a body starting `{` or `[`: a
    // form body like that has an unknown key.
    let elements: Vec<Fields> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            let raws: Vec<Box<RawValue>> = serde_json::from_slice(body).expect("accepted batch");
            raws.iter()
                .map(|raw| serde_json::from_str(raw.get()).expect("accepted element"))
                .collect()
        }
        Some(b'{') => vec![serde_json::from_slice(body).expect("accepted object")],
        _ => return,
    };
    assert_eq!(elements.len(), requests.len());
    for (fields, request) in elements.iter().zip(requests) {
        let topic: String = serde_json::from_str(fields["topic"].get()).expect("topic string");
        assert_eq!(request.topic.as_str(), topic);
        let raw_data = fields["data"].get();
        let data = &request.event.data;
        if raw_data.starts_with('"') {
            let decoded: Result<String, _> = serde_json::from_str(raw_data);
            assert_eq!(
                decoded.as_ref().ok(),
                Some(data),
                "data {raw_data} published as {data:?}"
            );
        } else {
            assert!(
                !data.starts_with('"'),
                "data {raw_data} published as {data:?}"
            );
            let as_sent = serde_json::from_str::<serde_json::Value>(raw_data);
            let as_published = serde_json::from_str::<serde_json::Value>(data);
            // Numbers past f64 (`1e400`) are refused by `Value` both ways.
            if let (Ok(sent), Ok(published)) = (as_sent, as_published) {
                assert_eq!(sent, published, "data {raw_data} published as {data:?}");
            }
        }
    }
}
