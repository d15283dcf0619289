//! Topic names: what a publisher or subscriber may name, and a cheap shared
//! handle for a name once it is known to be valid.
//!
//! The charset is deliberately small (`A-Z a-z 0-9 - _ . : /`): a topic
//! travels in query strings, form bodies, JSON, metrics labels and logs, and
//! none of those needs escaping for these bytes. Refusing everything else at
//! the edge means no layer behind it has to think about encoding.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Why a topic name is refused. Each variant says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than the node allows (`--topic-bytes-max`).
    TooLong { len_bytes: usize, max_bytes: usize },
    /// A character outside `A-Z a-z 0-9 - _ . : /`, at byte offset `at`.
    BadChar { ch: char, at: usize },
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("topic is empty"),
            TopicError::TooLong {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "topic is {len_bytes} bytes, longer than the {max_bytes} allowed"
            ),
            TopicError::BadChar { ch, at } => write!(
                f,
                "topic has {ch:?} at byte {at}; allowed are A-Z a-z 0-9 and - _ . : /"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// Whether `b` may appear in a topic name.
#[inline]
pub fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')
}

/// Check `name` against the topic rules without allocating.
pub fn validate(name: &str, topic_bytes_max: usize) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    // Charset before length: a name with a bad character is more usefully
    // told about the character than about its length.
    if let Some(at) = name.bytes().position(|b| !is_topic_byte(b)) {
        // `at` is the first non-topic byte; every byte before it is ASCII,
        // so `at` is a char boundary and the char there is the culprit.
        let ch = name[at..].chars().next().unwrap_or('\u{fffd}');
        return Err(TopicError::BadChar { ch, at });
    }
    if name.len() > topic_bytes_max {
        return Err(TopicError::TooLong {
            len_bytes: name.len(),
            max_bytes: topic_bytes_max,
        });
    }
    Ok(())
}

/// A validated topic name. Cloning is a refcount bump, so the hub, every
/// worker's index and every subscription can hold the same name without
/// copying it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validate `name` and make it a shared topic.
    pub fn parse(name: &str, topic_bytes_max: usize) -> Result<Topic, TopicError> {
        validate(name, topic_bytes_max)?;
        Ok(Topic(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    // Lets maps keyed by `Topic` be looked up with a plain `&str`; sound
    // because `Hash`/`Eq` of `Topic` are exactly those of its `str`.
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn accepts_the_whole_charset() {
        let all = "ABCXYZabcxyz0189-_.:/";
        assert_eq!(Topic::parse(all, 128).unwrap().as_str(), all);
        assert!(Topic::parse("news/eu:fr.sport-live_1", 128).is_ok());
        assert!(Topic::parse("a", 1).is_ok());
    }

    #[test]
    fn refuses_empty() {
        assert_eq!(Topic::parse("", 128), Err(TopicError::Empty));
    }

    #[test]
    fn length_is_counted_in_bytes_and_bounded() {
        assert!(Topic::parse(&"a".repeat(128), 128).is_ok());
        assert_eq!(
            Topic::parse(&"a".repeat(129), 128),
            Err(TopicError::TooLong {
                len_bytes: 129,
                max_bytes: 128
            })
        );
    }

    #[test]
    fn refuses_other_characters_naming_the_first() {
        for (name, ch, at) in [
            ("a b", ' ', 1),
            ("a?b", '?', 1),
            ("a&b", '&', 1),
            ("é", 'é', 0),
            ("ab\u{0}", '\u{0}', 2),
            ("x\ny", '\n', 1),
            ("a%20", '%', 1),
            ("a*", '*', 1),
        ] {
            assert_eq!(
                Topic::parse(name, 128),
                Err(TopicError::BadChar { ch, at }),
                "{name:?}"
            );
        }
        // A bad character is reported even when the name is also too long.
        let e = Topic::parse("aaaa#", 2).unwrap_err();
        assert_eq!(e, TopicError::BadChar { ch: '#', at: 4 });
    }

    #[test]
    fn errors_read_as_a_reason() {
        let text = Topic::parse("a b", 128).unwrap_err().to_string();
        assert!(text.contains("' '") && text.contains("byte 1"), "{text}");
        let text = Topic::parse("abc", 2).unwrap_err().to_string();
        assert!(
            text.contains("3 bytes") && text.contains("2 allowed"),
            "{text}"
        );
    }

    #[test]
    fn maps_keyed_by_topic_are_looked_up_by_str() {
        let mut m = HashMap::new();
        m.insert(Topic::parse("a/b", 16).unwrap(), 7);
        assert_eq!(m.get("a/b"), Some(&7));
        assert_eq!(m.get("a/c"), None);
    }
}
