//! `query`: query strings and form bodies (`parse_query`, `parse_form`), and
//! the topic names a subscriber puts in them.
//!
//! The input is a query string (or form body) as sent. Checked:
//! - no panic on any bytes; for UTF-8 input, a query and a form with the same
//!   text decode the same (one decoder, one meaning);
//! - it decodes what a plain reference decoder (below) decodes, and refuses
//!   what it refuses;
//! - a decoded result is never longer than its input (`%XX` is 3 bytes for
//!   1, `+` one for one), has at most one pair per `&`-separated part, and
//!   encodes back (percent-encoding everything but unreserved bytes, space as
//!   `+`) to a string that decodes to the same pairs;
//! - a decoded `topic` value that passes the topic rules holds only topic
//!   bytes; one that fails gets a reason, not a panic.
//!
//! The routing around them (which keys it reads, resume points, tokens) is
//! the `route` target's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stentor::hub::topic::{is_topic_byte, Topic};
use stentor::wire::http::{parse_form, parse_query};

/// `--topic-bytes-max` default (`server/src/config.rs`).
const TOPIC_BYTES_MAX_DEFAULT: usize = 128;

fuzz_target!(|data: &[u8]| {
    let form = parse_form(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(parse_query(text), form, "query and form disagree");
    }
    match (&form, reference_decode(data)) {
        (Ok(pairs), Some(expected)) => assert_eq!(pairs, &expected, "the reference disagrees"),
        (Err(_), None) => {}
        (got, expected) => panic!("decoder {got:?}, reference {expected:?}"),
    }
    let Ok(pairs) = form else {
        return;
    };
    let decoded_bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(decoded_bytes <= data.len());
    assert!(pairs.len() <= data.split(|&b| b == b'&').count());

    let encoded = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    // An empty pair (`=`) re-encodes as `=`, which is not skipped: compare
    // with the pairs the decoder keeps.
    assert_eq!(parse_query(&encoded).as_ref(), Ok(&pairs), "{encoded:?}");

    for (_, value) in pairs.iter().filter(|(k, _)| k == "topic") {
        match Topic::parse(value, TOPIC_BYTES_MAX_DEFAULT) {
            Ok(topic) => assert!(topic.as_str().bytes().all(is_topic_byte)),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});

/// Percent-encode all but unreserved bytes (RFC 3986), space as `+`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `application/x-www-form-urlencoded` read plainly: pairs split on `&`
/// (empty ones skipped), key and value on the first `=`, `+` is a space,
/// `%` takes exactly two hex digits, and the result must be UTF-8.
fn reference_decode(input: &[u8]) -> Option<Vec<(String, String)>> {
    fn decode(part: &[u8]) -> Option<String> {
        let mut out = Vec::new();
        let mut bytes = part.iter();
        while let Some(&b) = bytes.next() {
            out.push(match b {
                b'+' => b' ',
                b'%' => {
                    let hex = [*bytes.next()?, *bytes.next()?];
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None; // from_str_radix would take a sign
                    }
                    u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
                }
                other => other,
            });
        }
        String::from_utf8(out).ok()
    }
    let mut pairs = Vec::new();
    for part in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        pairs.push((decode(key)?, decode(value)?));
    }
    Some(pairs)
}
