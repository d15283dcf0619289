//! Where an event's sequence number and send time are found in its data.
//! Pure.
//!
//! stentor (and any server that passes data through) delivers exactly what
//! was published, so the loadgen's own `seq=N t_ns=T ` format is read as is.
//! Servers that wrap what was published (Centrifugo sends
//! `{"pub":{"data":…}}`, Mercure and others add their own envelopes) need
//! to be told where the sequence is: `--seq-regex RE` (the first capture
//! group is the sequence) or `--seq-json-pointer /pub/data/seq` (RFC 6901).
//!
//! With a JSON pointer the publisher sends JSON objects
//! (`{"seq":N,"t_ns":T,"pad":"xx…"}`, the sequence under the pointer's last
//! token) so the template can embed them raw (`{data}`); the send time is
//! read from the `t_ns` member next to the sequence. With a regex the
//! payload keeps the native format, and the time is the regex's `t_ns`
//! group when it has one, else the first `t_ns=DIGITS` in the data.

use regex::Regex;

/// How sequence numbers are read from event data.
#[derive(Debug, Clone, Default)]
pub enum SeqSource {
    /// The loadgen's own `seq=N t_ns=T ` data, delivered unchanged.
    #[default]
    Native,
    /// The first capture group is the sequence.
    Regex(Regex),
    /// An RFC 6901 pointer into the data parsed as JSON.
    JsonPointer(JsonPointer),
}

/// A validated pointer, with the member that holds the time beside it.
#[derive(Debug, Clone)]
pub struct JsonPointer {
    pub pointer: String,
    /// `pointer` with its last token replaced by `t_ns`.
    pub time_pointer: String,
    /// The pointer's last token, unescaped: the sequence's member name in
    /// the payloads the publisher sends.
    pub seq_key: String,
}

impl SeqSource {
    /// From the two flags (at most one may be given).
    pub fn from_flags(regex: Option<&str>, pointer: Option<&str>) -> Result<Self, String> {
        match (regex, pointer) {
            (Some(_), Some(_)) => {
                Err("--seq-regex and --seq-json-pointer exclude each other".into())
            }
            (Some(re), None) => {
                let re = Regex::new(re).map_err(|e| format!("--seq-regex: {e}"))?;
                if re.captures_len() < 2 {
                    return Err("--seq-regex needs a capture group around the sequence".into());
                }
                Ok(Self::Regex(re))
            }
            (None, Some(p)) => JsonPointer::parse(p).map(Self::JsonPointer),
            (None, None) => Ok(Self::Native),
        }
    }

    /// The (seq, t_ns) an event's data carries, or `None` when it is not ours.
    pub fn extract(&self, data: &str) -> Option<(u64, u64)> {
        match self {
            Self::Native => crate::payload::decode(data),
            Self::Regex(re) => {
                let caps = re.captures(data)?;
                let seq = caps.get(1)?.as_str().parse().ok()?;
                let t_ns = match caps.name("t_ns") {
                    Some(t) => t.as_str().parse().ok()?,
                    None => find_t_ns(data)?,
                };
                Some((seq, t_ns))
            }
            Self::JsonPointer(p) => {
                let v: serde_json::Value = serde_json::from_str(data).ok()?;
                let seq = as_u64(v.pointer(&p.pointer)?)?;
                let t_ns = as_u64(v.pointer(&p.time_pointer)?)?;
                Some((seq, t_ns))
            }
        }
    }

    /// Write the data of event `seq` scheduled at `t_ns` into `out`, in the
    /// shape this source reads back (after the server's wrapping).
    pub fn encode(&self, seq: u64, t_ns: u64, payload_bytes: usize, out: &mut String) {
        match self {
            Self::Native | Self::Regex(_) => crate::payload::encode(seq, t_ns, payload_bytes, out),
            Self::JsonPointer(p) => {
                use std::fmt::Write;
                out.clear();
                out.push('{');
                out.push_str(&serde_json::Value::from(p.seq_key.as_str()).to_string());
                let _ = write!(out, r#":{seq},"t_ns":{t_ns},"pad":""#);
                // The closing `"}` is two bytes.
                while out.len() + 2 < payload_bytes {
                    out.push('x');
                }
                out.push_str("\"}");
            }
        }
    }
}

impl JsonPointer {
    /// Check `p` as RFC 6901 allows: empty, or `/`-separated tokens where
    /// `~` is only followed by `0` or `1`. The empty pointer (the whole
    /// document) cannot have a sibling time, so it is refused.
    pub fn parse(p: &str) -> Result<Self, String> {
        let Some((parent, last)) = p.rsplit_once('/') else {
            return Err(format!(
                "--seq-json-pointer {p:?}: must start with '/' (RFC 6901), e.g. /pub/data/seq"
            ));
        };
        if !p.starts_with('/') {
            return Err(format!("--seq-json-pointer {p:?}: must start with '/'"));
        }
        let mut chars = p.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "--seq-json-pointer {p:?}: '~' must be followed by 0 or 1 (RFC 6901)"
                ));
            }
        }
        if last.is_empty() {
            return Err(format!(
                "--seq-json-pointer {p:?}: the last token names the sequence's member and cannot be empty"
            ));
        }
        Ok(Self {
            pointer: p.to_string(),
            time_pointer: format!("{parent}/t_ns"),
            seq_key: last.replace("~1", "/").replace("~0", "~"),
        })
    }
}

/// A number, or a string of digits (some servers stringify ids).
fn as_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The first `t_ns=DIGITS` in `data`.
fn find_t_ns(data: &str) -> Option<u64> {
    let at = data.find("t_ns=")? + "t_ns=".len();
    let digits = data[at..].bytes().take_while(u8::is_ascii_digit).count();
    data[at..at + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(re: Option<&str>, p: Option<&str>) -> SeqSource {
        SeqSource::from_flags(re, p).expect("valid flags")
    }

    #[test]
    fn native_is_the_default() {
        let s = SeqSource::default();
        let mut d = String::new();
        s.encode(7, 99, 64, &mut d);
        assert_eq!(s.extract(&d), Some((7, 99)));
        assert_eq!(s.extract(r#"{"pub":{"data":"seq=7 t_ns=99 "}}"#), None);
    }

    #[test]
    fn regex_reads_wrapped_native_payloads() {
        let s = src(Some(r"seq=(\d+)"), None);
        let mut d = String::new();
        s.encode(12, 3456, 40, &mut d);
        let wrapped = format!(r#"{{"pub":{{"data":{}}}}}"#, serde_json::Value::from(d));
        assert_eq!(s.extract(&wrapped), Some((12, 3456)));
        // A named t_ns group wins over the search.
        let s = src(Some(r"n(\d+)@(?P<t_ns>\d+)"), None);
        assert_eq!(s.extract("event n5@77 t_ns=1"), Some((5, 77)));
        // No match, no digits, or a number that does not fit: foreign.
        let s = src(Some(r"seq=(\d*)"), None);
        for d in [
            "hello",
            "seq= t_ns=1",
            "seq=99999999999999999999999 t_ns=1",
            "seq=1",
        ] {
            assert_eq!(s.extract(d), None, "{d:?}");
        }
    }

    #[test]
    fn json_pointer_round_trips_through_a_wrapper() {
        let s = src(None, Some("/pub/data/seq"));
        let mut d = String::new();
        s.encode(41, 123_456, 128, &mut d);
        assert_eq!(d.len(), 128);
        let inner: serde_json::Value = serde_json::from_str(&d).expect("payload is JSON");
        assert_eq!(inner["seq"], 41);
        let wrapped = format!(r#"{{"pub":{{"data":{d},"offset":3}}}}"#);
        assert_eq!(s.extract(&wrapped), Some((41, 123_456)));
        // Too small a payload size still gives valid JSON.
        s.encode(1, 2, 0, &mut d);
        assert!(serde_json::from_str::<serde_json::Value>(&d).is_ok(), "{d}");
        // Stringified numbers are read too.
        assert_eq!(
            s.extract(r#"{"pub":{"data":{"seq":"5","t_ns":"6"}}}"#),
            Some((5, 6))
        );
    }

    #[test]
    fn json_pointer_escapes_follow_rfc_6901() {
        let s = src(None, Some("/a~1b/s~0q"));
        let SeqSource::JsonPointer(p) = &s else {
            panic!("not a pointer")
        };
        assert_eq!(p.seq_key, "s~q");
        assert_eq!(p.time_pointer, "/a~1b/t_ns");
        assert_eq!(s.extract(r#"{"a/b":{"s~q":3,"t_ns":4}}"#), Some((3, 4)));
        let mut d = String::new();
        s.encode(9, 10, 0, &mut d);
        assert_eq!(s.extract(&format!(r#"{{"a/b":{d}}}"#)), Some((9, 10)));
    }

    #[test]
    fn foreign_json_is_not_counted() {
        let s = src(None, Some("/pub/data/seq"));
        for d in [
            "",
            "seq=1 t_ns=2 ",
            "{}",
            r#"{"pub":{"data":{"seq":-1,"t_ns":2}}}"#,
            r#"{"pub":{"data":{"seq":1}}}"#,
            r#"{"pub":{"data":{"seq":1.5,"t_ns":2}}}"#,
            r#"{"pub":{"data":[1,2]}}"#,
        ] {
            assert_eq!(s.extract(d), None, "{d:?}");
        }
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for (re, p) in [
            (Some("("), None),
            (Some(r"seq=\d+"), None),
            (None, Some("pub/seq")),
            (None, Some("")),
            (None, Some("/pub/")),
            (None, Some("/a~2")),
            (None, Some("/a~")),
            (Some("(x)"), Some("/x")),
        ] {
            assert!(SeqSource::from_flags(re, p).is_err(), "{re:?} {p:?}");
        }
    }
}
