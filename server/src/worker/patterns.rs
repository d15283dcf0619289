//! Pattern subscriptions of one worker (`/events?topic=orders/42/*`, URI
//! templates): a published topic is matched through a [`PatternIndex`]
//! (a trie walk that follows the topic's segments), never a scan of the
//! streams. Exact topics stay in the worker's topic index; a worker with no
//! pattern subscription pays one emptiness check per delivery.

use std::collections::HashMap;

use crate::api::pattern_index::PatternIndex;
use crate::api::selector::Pattern;

/// The pattern side of one worker's subscriptions.
#[derive(Debug, Default)]
pub(super) struct PatternSubs {
    /// Pattern → the streams that get its public events.
    public: PatternIndex,
    /// Pattern → the streams whose token covered the whole pattern at open:
    /// they get its private events too.
    private: PatternIndex,
    /// Each stream's patterns and whether it is in `private` for them (at
    /// most `--topics-per-stream-max` per stream), removed at close.
    subs: HashMap<u32, Box<[(Pattern, bool)]>>,
}

impl PatternSubs {
    /// Stream `key` subscribes to `patterns` (none exact, each once), each
    /// with whether it gets that pattern's private events.
    pub(super) fn open(&mut self, key: u32, patterns: Box<[(Pattern, bool)]>) {
        if patterns.is_empty() {
            return;
        }
        for (p, private) in patterns.iter() {
            self.public.insert(p, key);
            if *private {
                self.private.insert(p, key);
            }
        }
        let before = self.subs.insert(key, patterns);
        debug_assert!(before.is_none(), "stream {key} opened twice");
    }

    /// Stream `key` closed: forget its patterns.
    pub(super) fn close(&mut self, key: u32) {
        let Some(patterns) = self.subs.remove(&key) else {
            return;
        };
        for (p, private) in patterns.iter() {
            self.public.remove(p, key);
            if *private {
                self.private.remove(p, key);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Append to `out` every stream one of whose patterns matches `topic`
    /// (each once); for a private event, only the streams allowed it.
    pub(super) fn matches(&self, topic: &str, private: bool, out: &mut Vec<u32>) {
        let index = if private { &self.private } else { &self.public };
        index.matches(topic, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selector::PatternLimits;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text, &PatternLimits::default()).unwrap()
    }

    #[test]
    fn public_and_private_matches_follow_open_and_close() {
        let mut s = PatternSubs::default();
        s.open(1, Box::new([(p("orders/*"), true)]));
        s.open(
            2,
            Box::new([(p("orders/{id}"), false), (p("orders/*"), false)]),
        );
        let mut out = Vec::new();
        s.matches("orders/42", false, &mut out);
        out.sort_unstable();
        assert_eq!(out, [1, 2], "each stream once");
        out.clear();
        s.matches("orders/42", true, &mut out);
        assert_eq!(out, [1]);
        out.clear();
        s.matches("users/1", false, &mut out);
        assert!(out.is_empty());
        s.close(1);
        s.close(2);
        assert!(s.is_empty());
        s.matches("orders/42", false, &mut out);
        assert!(out.is_empty());
        assert!(s.public.is_empty() && s.private.is_empty());
    }
}
