//! The body of `POST /publish`, parsed into events (pure: bytes in, events or
//! one typed refusal out).
//!
//! Accepted bodies:
//! - `application/json`: one object `{"topic":"A","data":"…","event":"…","retry":1000}`
//!   or an array of such objects (a batch, published in order);
//! - `application/x-www-form-urlencoded`: `topic=A&data=…&event=…&retry=…`
//!   (one event).
//!
//! Rules: `topic` and `data` are required. `data` may be any string; JSON
//! `data` that is not a string is sent as its compact JSON text, exactly as
//! written minus whitespace (the seed's `SendJSON`). `event` must not contain
//! CR, LF or NUL and must not start with `stentor.` (reserved for server
//! notices such as `stentor.missed`); an empty `event` means the default
//! type `message`. `retry` is a non-negative integer (JSON number or digits).
//! A JSON `null` is the same as an absent field. `id` is refused: the server
//! assigns ids (see `hub::id`). Unknown and duplicate fields are refused, so
//! a typo never silently drops a field. Any bad element refuses the whole
//! batch: nothing is half-published.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::hub::publish::{PublishError, PublishRequest, RESERVED_EVENT_PREFIX};
use crate::hub::topic::Topic;
use crate::wire::http::parse_form;
use crate::wire::sse::{parse_retry, Event};

/// Events one batch may carry when the operator sets nothing else.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 1_000;

/// The limits a publish body is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRules {
    /// Longest topic name in bytes (`--topic-bytes-max`).
    pub topic_bytes_max: usize,
    /// Most events in one JSON array; past it 413.
    pub batch_events_max: usize,
}

/// What the body's `Content-Type` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

/// Parse a publish body into the events to publish, in order.
pub fn parse_publish(
    content_type: Option<&str>,
    body: &[u8],
    rules: &PublishRules,
) -> Result<Vec<PublishRequest>, PublishError> {
    match body_kind(content_type)? {
        BodyKind::Json => parse_json(body, rules),
        BodyKind::Form => parse_form_body(body, rules).map(|one| vec![one]),
    }
}

/// The JSON answer to a successful publish: `{"ids":[...]}`, plus `"id"` when
/// one event was published. Ids are JSON numbers; they stay below 2^53 (see
/// `hub::id`), so JavaScript reads them exactly.
pub fn ids_json(ids: &[u64]) -> String {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    match ids {
        [one] => format!(r#"{{"id":{one},"ids":[{list}]}}"#),
        _ => format!(r#"{{"ids":[{list}]}}"#),
    }
}

fn body_kind(content_type: Option<&str>) -> Result<BodyKind, PublishError> {
    const ACCEPTED: &str = "use application/json or application/x-www-form-urlencoded";
    let Some(value) = content_type else {
        return Err(PublishError::new(
            415,
            None,
            format!("missing Content-Type; {ACCEPTED}"),
        ));
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    let kind = if media.eq_ignore_ascii_case("application/json") {
        BodyKind::Json
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else {
        return Err(PublishError::new(
            415,
            None,
            format!("unsupported Content-Type {media:?}; {ACCEPTED}"),
        ));
    };
    // Bodies are read as UTF-8; a declared other charset would be misread.
    for param in parts {
        let Some((name, val)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = val.trim().trim_matches('"');
            if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
                return Err(PublishError::new(
                    415,
                    None,
                    format!("unsupported charset {charset:?}; bodies are UTF-8"),
                ));
            }
        }
    }
    Ok(kind)
}

/// One JSON event as sent; every field raw so each refusal can name its field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent<'a> {
    #[serde(borrow, default)]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    retry: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

fn invalid_json(e: serde_json::Error) -> PublishError {
    PublishError::new(400, None, format!("invalid JSON: {e}"))
}

fn parse_json(body: &[u8], rules: &PublishRules) -> Result<Vec<PublishRequest>, PublishError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(invalid_json)?;
            if elements.is_empty() {
                return Err(PublishError::new(
                    400,
                    None,
                    "empty batch: send at least one event",
                ));
            }
            if elements.len() > rules.batch_events_max {
                return Err(PublishError::new(
                    413,
                    None,
                    format!(
                        "batch of {} events, more than the {} allowed",
                        elements.len(),
                        rules.batch_events_max
                    ),
                ));
            }
            elements
                .iter()
                .enumerate()
                .map(|(i, raw)| json_element(raw.get(), rules).map_err(|e| e.in_element(i)))
                .collect()
        }
        Some(b'{') => Ok(vec![json_element(
            std::str::from_utf8(body)
                .map_err(|_| PublishError::new(400, None, "invalid JSON: not UTF-8"))?,
            rules,
        )?]),
        _ => Err(PublishError::new(
            400,
            None,
            "expected a JSON object or an array of objects",
        )),
    }
}

fn json_element(text: &str, rules: &PublishRules) -> Result<PublishRequest, PublishError> {
    if !text.trim_start().starts_with('{') {
        return Err(PublishError::new(400, None, "expected a JSON object"));
    }
    let raw: JsonEvent<'_> = serde_json::from_str(text).map_err(invalid_json)?;
    if raw.id.is_some() {
        return Err(id_refused());
    }
    let topic_raw = raw
        .topic
        .ok_or_else(|| PublishError::bad("topic", "missing `topic`"))?;
    let topic_name = json_string(topic_raw, "topic")?
        .ok_or_else(|| PublishError::bad("topic", "`topic` must be a string"))?;
    let topic = parse_topic(&topic_name, rules)?;
    let data_raw = raw.data.ok_or_else(|| {
        PublishError::bad("data", "missing `data` (send \"\" for an empty payload)")
    })?;
    let data = match json_string(data_raw, "data")? {
        Some(s) => s,
        None => minify_json(data_raw.get()),
    };
    let event = match raw.event {
        None => None,
        Some(r) => {
            let s = json_string(r, "event")?
                .ok_or_else(|| PublishError::bad("event", "`event` must be a string"))?;
            event_type(s)?
        }
    };
    let retry = match raw.retry {
        None => None,
        Some(r) => Some(json_retry(r)?),
    };
    Ok(PublishRequest {
        topic,
        event: Event {
            event,
            id: None,
            data,
            retry,
        },
    })
}

/// The string a raw JSON value holds: `None` if it is not a string, a
/// refusal if it is one that decodes to no text. `"\ud800"` (a lone UTF-16
/// surrogate escape) is valid JSON syntax but no Unicode string; taking it
/// for "not a string" published `data` as its JSON literal, quotes and all
/// (found by fuzzing).
fn json_string(raw: &RawValue, field: &'static str) -> Result<Option<String>, PublishError> {
    if !raw.get().starts_with('"') {
        return Ok(None);
    }
    serde_json::from_str::<String>(raw.get())
        .map(Some)
        .map_err(|e| PublishError::bad(field, format!("`{field}` is not valid Unicode: {e}")))
}

fn json_retry(raw: &RawValue) -> Result<u64, PublishError> {
    match json_string(raw, "retry")? {
        Some(s) => text_retry(&s),
        // A JSON number: the same rule on its text, so a sign, a fraction or
        // an exponent is refused rather than rounded.
        None => text_retry(raw.get()),
    }
}

/// `retry` as digits, by the wire layer's rule (what a browser accepts).
fn text_retry(text: &str) -> Result<u64, PublishError> {
    parse_retry(text).map_err(|e| PublishError::bad("retry", e.to_string()))
}

/// Valid JSON text without the whitespace between tokens. Whitespace inside
/// strings is kept; JSON strings cannot hold a raw CR or LF, so the result
/// is one line and becomes one `data:` line.
fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            out.push(ch);
        }
    }
    out
}

fn parse_topic(name: &str, rules: &PublishRules) -> Result<Topic, PublishError> {
    Topic::parse(name, rules.topic_bytes_max).map_err(|e| PublishError::bad("topic", e.to_string()))
}

/// The `event:` value to send: `None` for the default type.
fn event_type(s: String) -> Result<Option<String>, PublishError> {
    if s.is_empty() {
        // `event:` with nothing after it dispatches as `message` anyway.
        return Ok(None);
    }
    if let Some(bad) = s.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        return Err(PublishError::bad(
            "event",
            format!("`event` must not contain CR, LF or NUL (found {bad:?})"),
        ));
    }
    if s.starts_with(RESERVED_EVENT_PREFIX) {
        return Err(PublishError::bad(
            "event",
            format!(
                "event types starting with {RESERVED_EVENT_PREFIX:?} are reserved for the server"
            ),
        ));
    }
    Ok(Some(s))
}

fn id_refused() -> PublishError {
    PublishError::bad(
        "id",
        "ids are assigned by the server (strictly increasing per node, so Last-Event-ID resume is exact); omit `id`",
    )
}

fn parse_form_body(body: &[u8], rules: &PublishRules) -> Result<PublishRequest, PublishError> {
    // The HTTP layer's decoder, so a form means the same here as in a query.
    let pairs = parse_form(body)
        .map_err(|e| PublishError::new(400, None, format!("invalid form body: {}", e.reason())))?;
    let mut topic: Option<String> = None;
    let mut data: Option<String> = None;
    let mut event: Option<String> = None;
    let mut retry: Option<String> = None;
    for (key, value) in pairs {
        let (slot, field) = match key.as_str() {
            "topic" => (&mut topic, "topic"),
            "data" => (&mut data, "data"),
            "event" => (&mut event, "event"),
            "retry" => (&mut retry, "retry"),
            "id" => return Err(id_refused()),
            _ => {
                return Err(PublishError::new(
                    400,
                    None,
                    format!("unknown field {key:?}; expected topic, data, event, retry"),
                ))
            }
        };
        if slot.is_some() {
            return Err(PublishError::bad(
                field,
                format!("`{field}` given more than once"),
            ));
        }
        *slot = Some(value);
    }
    let topic = parse_topic(
        &topic.ok_or_else(|| PublishError::bad("topic", "missing `topic`"))?,
        rules,
    )?;
    let data = data.ok_or_else(|| {
        PublishError::bad("data", "missing `data` (send data= for an empty payload)")
    })?;
    let event = match event {
        None => None,
        Some(s) => event_type(s)?,
    };
    let retry = match retry {
        None => None,
        Some(s) => Some(text_retry(&s)?),
    };
    Ok(PublishRequest {
        topic,
        event: Event {
            event,
            id: None,
            data,
            retry,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");
    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn rules() -> PublishRules {
        PublishRules {
            topic_bytes_max: 16,
            batch_events_max: 3,
        }
    }

    fn one(ct: Option<&str>, body: &str) -> PublishRequest {
        let mut v = parse_publish(ct, body.as_bytes(), &rules()).expect(body);
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    fn err(ct: Option<&str>, body: &str) -> PublishError {
        parse_publish(ct, body.as_bytes(), &rules()).expect_err(body)
    }

    #[test]
    fn json_object_with_every_field() {
        let r = one(
            JSON,
            r#"{"topic":"news","data":"line 1\nline 2\r\nline 3\rü","event":"order","retry":1000}"#,
        );
        assert_eq!(r.topic.as_str(), "news");
        assert_eq!(
            r.event,
            Event {
                event: Some("order".into()),
                id: None,
                data: "line 1\nline 2\r\nline 3\rü".into(),
                retry: Some(1000),
            }
        );
    }

    #[test]
    fn json_minimal_and_nulls_are_absent() {
        let r = one(JSON, r#" {"topic":"a","data":""} "#);
        assert_eq!(r.event, Event::default());
        let r = one(
            JSON,
            r#"{"topic":"a","data":"x","event":null,"retry":null}"#,
        );
        assert_eq!(r.event.event, None);
        assert_eq!(r.event.retry, None);
        // An empty event type is the default type.
        assert_eq!(
            one(JSON, r#"{"topic":"a","data":"x","event":""}"#)
                .event
                .event,
            None
        );
    }

    #[test]
    fn non_string_data_is_sent_as_compact_json_exactly() {
        let r = one(
            JSON,
            "{\"topic\":\"a\",\"data\": {\"b\" : [1, 2.50, 1e3],\n \"a\":\"x y\\\" z\", \"n\": 123456789012345678901234567890}}",
        );
        assert_eq!(
            r.event.data,
            r#"{"b":[1,2.50,1e3],"a":"x y\" z","n":123456789012345678901234567890}"#
        );
        assert_eq!(one(JSON, r#"{"topic":"a","data":42}"#).event.data, "42");
        assert_eq!(one(JSON, r#"{"topic":"a","data":true}"#).event.data, "true");
        assert_eq!(one(JSON, r#"{"topic":"a","data":[ ]}"#).event.data, "[]");
    }

    #[test]
    fn retry_as_number_or_digits() {
        assert_eq!(
            one(JSON, r#"{"topic":"a","data":"","retry":"250"}"#)
                .event
                .retry,
            Some(250)
        );
        assert_eq!(
            one(JSON, r#"{"topic":"a","data":"","retry":0}"#)
                .event
                .retry,
            Some(0)
        );
        for bad in [
            r#"-1"#,
            r#"1.5"#,
            r#"1e3"#,
            r#""""#,
            r#""12a""#,
            r#"true"#,
            r#"[1]"#,
            "18446744073709551616",
        ] {
            let e = err(JSON, &format!(r#"{{"topic":"a","data":"","retry":{bad}}}"#));
            assert_eq!((e.status, e.field), (400, Some("retry")), "{bad}: {e}");
        }
    }

    #[test]
    fn field_errors_name_the_field() {
        for (body, field) in [
            (r#"{"data":"x"}"#, "topic"),
            (r#"{"topic":5,"data":"x"}"#, "topic"),
            (r#"{"topic":"a b","data":"x"}"#, "topic"),
            (r#"{"topic":"","data":"x"}"#, "topic"),
            (r#"{"topic":"aaaaaaaaaaaaaaaaa","data":"x"}"#, "topic"),
            (r#"{"topic":"a"}"#, "data"),
            (r#"{"topic":"a","data":null}"#, "data"),
            (r#"{"topic":"a","data":"x","event":"a\nb"}"#, "event"),
            (r#"{"topic":"a","data":"x","event":"a\rb"}"#, "event"),
            (r#"{"topic":"a","data":"x","event":"a\u0000b"}"#, "event"),
            (r#"{"topic":"a","data":"x","event":7}"#, "event"),
            (
                r#"{"topic":"a","data":"x","event":"stentor.missed"}"#,
                "event",
            ),
            (r#"{"topic":"a","data":"x","id":"7"}"#, "id"),
        ] {
            let e = err(JSON, body);
            assert_eq!((e.status, e.field), (400, Some(field)), "{body}: {e}");
            assert!(
                e.to_json().contains(&format!(r#""field":"{field}""#)),
                "{}",
                e.to_json()
            );
        }
    }

    #[test]
    fn structural_json_errors() {
        for body in [
            "",
            "   ",
            "nope",
            r#""topic""#,
            r#"{"topic":"a","data":"x""#,
            r#"{"topic":"a","data":"x","evnt":"typo"}"#,
            r#"{"topic":"a","topic":"b","data":"x"}"#,
            r#"[1]"#,
            r#"[{"topic":"a","data":"x"},"#,
        ] {
            let e = err(JSON, body);
            assert_eq!(e.status, 400, "{body}: {e}");
        }
        let e = err(JSON, r#"{"topic":"a","data":"x","evnt":"typo"}"#);
        assert!(e.message.contains("evnt"), "{e}");
        let e = err(JSON, r#"{"topic":"a","topic":"b","data":"x"}"#);
        assert!(e.message.contains("duplicate"), "{e}");
        // Invalid UTF-8 is refused, never lossily decoded.
        let e = parse_publish(JSON, b"{\"topic\":\"a\",\"data\":\"\xff\"}", &rules()).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn batches_are_all_or_nothing_in_order() {
        let v = parse_publish(
            JSON,
            br#"[{"topic":"a","data":"1"},{"topic":"b","data":"2","event":"e"},{"topic":"a","data":"3"}]"#,
            &rules(),
        )
        .unwrap();
        let got: Vec<_> = v
            .iter()
            .map(|r| (r.topic.as_str(), r.event.data.as_str()))
            .collect();
        assert_eq!(got, [("a", "1"), ("b", "2"), ("a", "3")]);

        let e = err(
            JSON,
            r#"[{"topic":"a","data":"1"},{"topic":"a","data":"2","retry":-1}]"#,
        );
        assert_eq!((e.status, e.field), (400, Some("retry")));
        assert!(e.message.starts_with("events[1]: "), "{e}");

        let e = err(JSON, "[]");
        assert_eq!((e.status, e.field), (400, None));
        assert!(e.message.contains("empty batch"));

        let four = r#"[{"topic":"a","data":""},{"topic":"a","data":""},{"topic":"a","data":""},{"topic":"a","data":""}]"#;
        assert_eq!(err(JSON, four).status, 413);
    }

    #[test]
    fn content_types() {
        let body = r#"{"topic":"a","data":"x"}"#;
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; foo=bar",
        ] {
            one(Some(ct), body);
        }
        for ct in [
            None,
            Some("text/plain"),
            Some(""),
            Some("application/json; charset=latin1"),
            Some("application/jsonx"),
        ] {
            assert_eq!(err(ct, body).status, 415, "{ct:?}");
        }
        one(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            "topic=a&data=x",
        );
    }

    #[test]
    fn form_bodies() {
        let r = one(
            FORM,
            "topic=news%2Feu&data=a+b%0Ac%0D%0Ad%C3%BC&event=up&retry=500",
        );
        assert_eq!(r.topic.as_str(), "news/eu");
        assert_eq!(r.event.data, "a b\nc\r\ndü");
        assert_eq!(r.event.event.as_deref(), Some("up"));
        assert_eq!(r.event.retry, Some(500));
        assert_eq!(one(FORM, "data=&topic=a").event.data, "");
        assert_eq!(one(FORM, "data&topic=a&").event.data, "");

        for (body, field) in [
            ("data=x", Some("topic")),
            ("topic=a", Some("data")),
            ("topic=a&data=x&retry=-5", Some("retry")),
            ("topic=a&data=x&retry=", Some("retry")),
            ("topic=a&data=x&event=a%0Ab", Some("event")),
            ("topic=a&data=x&event=a%00", Some("event")),
            ("topic=a&data=x&id=1", Some("id")),
            ("topic=a&topic=b&data=x", Some("topic")),
            ("topic=a+b&data=x", Some("topic")),
            ("topic=a&data=x&colour=red", None),
            ("topic=a&data=%zz", None),
            ("topic=a&data=%4", None),
            ("topic=a&data=%FF", None),
        ] {
            let e = err(FORM, body);
            assert_eq!((e.status, e.field), (400, field), "{body}: {e}");
        }
    }

    /// Found by fuzzing (`fuzz/`, target `publish_body`): a string holding
    /// a lone UTF-16 surrogate escape was taken for "not a string", so
    /// `data` went out as its JSON literal (`"\ud800"`, quotes and all).
    #[test]
    fn json_strings_that_are_no_unicode_are_refused_by_field() {
        for (body, field) in [
            (r#"{"topic":"a","data":"\ud800"}"#, "data"),
            (r#"{"topic":"a","data":"x\udc00y"}"#, "data"),
            (r#"{"topic":"\ud800","data":"x"}"#, "topic"),
            (r#"{"topic":"a","data":"x","event":"\udbff"}"#, "event"),
            (r#"{"topic":"a","data":"x","retry":"\ud800"}"#, "retry"),
        ] {
            let e = err(JSON, body);
            assert_eq!((e.status, e.field), (400, Some(field)), "{body}: {e}");
            assert!(e.message.contains("not valid Unicode"), "{body}: {e}");
        }
        // A pair of surrogates is one character and stays accepted.
        assert_eq!(
            one(JSON, r#"{"topic":"a","data":"\ud83d\ude00"}"#)
                .event
                .data,
            "😀"
        );
    }

    #[test]
    fn error_json_shape() {
        let e = PublishError::new(400, Some("retry"), "bad \"retry\"");
        assert_eq!(e.to_json(), r#"{"error":"bad \"retry\"","field":"retry"}"#);
        let e = PublishError::new(415, None, "nope");
        assert_eq!(e.to_json(), r#"{"error":"nope"}"#);
    }

    #[test]
    fn ids_response() {
        assert_eq!(ids_json(&[7]), r#"{"id":7,"ids":[7]}"#);
        assert_eq!(ids_json(&[7, 8]), r#"{"ids":[7,8]}"#);
    }
}
