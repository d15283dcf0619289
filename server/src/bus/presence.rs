//! Presence: which streams this node holds, on which topics, with their
//! token's `payload` claim, for `GET /subscriptions`. Node-local: a cluster
//! of nodes has one registry per node.
//!
//! Changed on stream open and close only (never per delivery), behind its
//! own lock so a listing does not hold up publishing. One entry per open
//! stream, so it is bounded by `--max-connections`; a listing is a page of
//! at most [`PAGE_MAX`] streams and walks at most [`SCAN_MAX`] entries.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::api::jwt::{Claims, Role};
use crate::api::selector::Pattern;
use crate::hub::topic::Topic;

/// Streams per page when the request names no `limit`.
pub const PAGE_DEFAULT: usize = 100;
/// Most streams per page (`?limit=`).
pub const PAGE_MAX: usize = 1000;
/// Most registry entries one listing walks: a filter that matches few
/// streams returns a short page and a cursor to go on from, instead of
/// walking every stream of the node under the lock.
pub const SCAN_MAX: usize = 100_000;

/// A stream, named by where it lives: worker, slab slot and the slot's
/// generation (so a reused slot is another stream). Ordered, which makes
/// it the listing's cursor. Written `W-K-G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub worker: u16,
    pub key: u32,
    pub generation: u32,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.worker, self.key, self.generation)
    }
}

impl std::str::FromStr for StreamId {
    type Err = ();

    fn from_str(s: &str) -> Result<StreamId, ()> {
        let mut parts = s.split('-');
        let mut next = || parts.next().ok_or(());
        let id = StreamId {
            worker: next()?.parse().map_err(|_| ())?,
            key: next()?.parse().map_err(|_| ())?,
            generation: next()?.parse().map_err(|_| ())?,
        };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(id)
    }
}

/// One open stream.
#[derive(Debug, Clone)]
pub struct Entry {
    pub topics: Box<[Topic]>,
    pub patterns: Box<[Pattern]>,
    /// The token's `mercure.payload` (JSON text), if it had one.
    pub payload: Option<Box<str>>,
}

impl Entry {
    /// Whether the stream receives events of `topic`.
    fn reaches(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t.as_str() == topic)
            || self
                .patterns
                .iter()
                .any(|p| p.as_str() == topic || p.matches(topic))
    }

    /// The stream's topics and patterns `scope` may see.
    fn visible<'a>(&'a self, scope: &Scope) -> Vec<&'a str> {
        let all = self
            .topics
            .iter()
            .map(Topic::as_str)
            .chain(self.patterns.iter().map(Pattern::as_str));
        match scope {
            Scope::All => all.collect(),
            Scope::Token(claims) => all.filter(|t| covers(claims, t)).collect(),
        }
    }
}

/// Whether `claims` may subscribe to `topic` (a topic or a pattern).
fn covers(claims: &Claims, topic: &str) -> bool {
    match Pattern::parse(topic, &Default::default()) {
        Ok(p) if p.is_exact() => claims.allows(Role::Subscriber, topic),
        Ok(p) => claims.allows_pattern(&p),
        Err(_) => false,
    }
}

/// Who is asking: `--admin-token` (or a local tool on a node without keys)
/// sees every stream; a subscriber token sees the topics it could subscribe
/// to, and the streams on them.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Token(Arc<Claims>),
}

impl PartialEq for Scope {
    /// Tokens compare by identity: the same verified token.
    fn eq(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, Scope::All) => true,
            (Scope::Token(a), Scope::Token(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Scope {}

/// A listing request, authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `?topic=`: streams that receive this topic's events.
    pub topic: Option<String>,
    pub limit: usize,
    /// `?cursor=`: list streams after this one.
    pub cursor: Option<StreamId>,
    pub scope: Scope,
}

#[derive(Serialize)]
struct Listed<'a> {
    id: String,
    topics: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::value::RawValue>,
}

#[derive(Serialize)]
struct Page<'a> {
    /// Always true: presence is per node.
    node_local: bool,
    subscriptions: Vec<Listed<'a>>,
    /// Pass as `?cursor=` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Every open stream of the node.
#[derive(Debug, Default)]
pub struct Registry {
    streams: BTreeMap<StreamId, Entry>,
}

impl Registry {
    pub fn open(&mut self, id: StreamId, entry: Entry) {
        let before = self.streams.insert(id, entry);
        debug_assert!(before.is_none(), "stream {id} registered twice");
    }

    pub fn close(&mut self, id: StreamId) {
        self.streams.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// One page of the listing as JSON.
    pub fn page_json(&self, q: &Query) -> String {
        use std::ops::Bound;
        let from = match q.cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut listed = Vec::new();
        let mut next_cursor = None;
        let mut last = None;
        for (scanned, (id, entry)) in self.streams.range((from, Bound::Unbounded)).enumerate() {
            if listed.len() == q.limit || scanned == SCAN_MAX {
                next_cursor = last.map(|l: StreamId| l.to_string());
                break;
            }
            last = Some(*id);
            if q.topic.as_deref().is_some_and(|t| !entry.reaches(t)) {
                continue;
            }
            let topics = entry.visible(&q.scope);
            if topics.is_empty() {
                continue;
            }
            let payload = entry
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str::<&serde_json::value::RawValue>(p).ok());
            listed.push(Listed {
                id: id.to_string(),
                topics,
                payload,
            });
        }
        let page = Page {
            node_local: true,
            subscriptions: listed,
            next_cursor,
        };
        serde_json::to_string(&page).unwrap_or_else(|_| String::from(r#"{"subscriptions":[]}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selector::PatternLimits;

    fn id(key: u32) -> StreamId {
        StreamId {
            worker: 0,
            key,
            generation: 1,
        }
    }

    fn entry(topics: &[&str], payload: Option<&str>) -> Entry {
        Entry {
            topics: topics
                .iter()
                .map(|t| Topic::parse(t, 128).unwrap())
                .collect(),
            patterns: Box::new([]),
            payload: payload.map(Into::into),
        }
    }

    fn page(
        r: &Registry,
        topic: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> serde_json::Value {
        let q = Query {
            topic: topic.map(Into::into),
            limit,
            cursor: cursor.map(|c| c.parse().unwrap()),
            scope: Scope::All,
        };
        serde_json::from_str(&r.page_json(&q)).unwrap()
    }

    #[test]
    fn pages_follow_the_cursor_and_the_topic_filter() {
        let mut r = Registry::default();
        r.open(id(1), entry(&["a"], Some(r#"{"user":1}"#)));
        r.open(id(2), entry(&["b"], None));
        r.open(id(3), entry(&["a", "b"], None));
        let mut pattern = entry(&[], None);
        pattern.patterns = Box::new([Pattern::parse("a/*", &PatternLimits::default()).unwrap()]);
        r.open(id(4), pattern);
        let p = page(&r, None, 2, None);
        assert_eq!(p["subscriptions"][0]["id"], "0-1-1");
        assert_eq!(p["subscriptions"][0]["payload"]["user"], 1);
        assert_eq!(p["next_cursor"], "0-2-1");
        let p = page(&r, None, 2, Some("0-2-1"));
        assert_eq!(p["subscriptions"].as_array().unwrap().len(), 2);
        assert!(p.get("next_cursor").is_none());
        let p = page(&r, Some("a"), 10, None);
        let ids: Vec<&str> = p["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["0-1-1", "0-3-1"]);
        let p = page(&r, Some("a/x"), 10, None);
        assert_eq!(p["subscriptions"][0]["topics"][0], "a/*");
        r.close(id(1));
        r.close(id(4));
        assert_eq!(r.len(), 2);
        assert!("0-1".parse::<StreamId>().is_err());
        assert!("0-1-1-1".parse::<StreamId>().is_err());
        assert!("x-1-1".parse::<StreamId>().is_err());
    }
}
