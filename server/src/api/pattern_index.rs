//! Which pattern subscriptions a published topic reaches, without a scan.
//!
//! A trie over topic segments: each node has its literal children in a
//! hash map, at most one whole-segment variable child (`{id}`), and the few
//! children whose segment mixes literals and variables (`{id}.json`), plus
//! the subscriber keys of the patterns that end there (exactly, or with a
//! final `/*`). Matching a topic walks one path per literal segment and
//! branches only into variable children, so its cost follows the topic's
//! depth and the patterns that could match it, not how many patterns are
//! stored. Exact topics never come here: the hub's topic index serves them,
//! and this index is consulted once per published event, not per delivery.

use std::collections::HashMap;

use super::selector::{mixed_matches, Pattern, Piece, Segment};

/// The subscriber keys of one pattern. A pattern almost always has one or a
/// few subscribers, kept in a plain vector; a popular one (`news/*` on
/// every stream) gets a position map so a stream's close stays O(1).
#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<u32>,
    /// key → its index in `keys`, built once `keys` passes `LINEAR_MAX`.
    pos: Option<HashMap<u32, u32>>,
}

/// Up to this many keys a linear search is cheaper than a hash lookup.
const LINEAR_MAX: usize = 32;

impl KeySet {
    fn position(&self, key: u32) -> Option<usize> {
        match &self.pos {
            Some(pos) => pos.get(&key).map(|&i| i as usize),
            None => self.keys.iter().position(|&k| k == key),
        }
    }

    fn insert(&mut self, key: u32) -> bool {
        if self.position(key).is_some() {
            return false;
        }
        self.keys.push(key);
        match &mut self.pos {
            Some(pos) => {
                pos.insert(key, (self.keys.len() - 1) as u32);
            }
            None if self.keys.len() > LINEAR_MAX => {
                let pos = self
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| (k, i as u32))
                    .collect();
                self.pos = Some(pos);
            }
            None => {}
        }
        true
    }

    fn remove(&mut self, key: u32) -> bool {
        let Some(i) = self.position(key) else {
            return false;
        };
        self.keys.swap_remove(i);
        if let Some(pos) = &mut self.pos {
            pos.remove(&key);
            if let Some(&moved) = self.keys.get(i) {
                pos.insert(moved, i as u32);
            }
            if self.keys.is_empty() {
                self.pos = None;
            }
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    var: Option<Box<Node>>,
    mixed: Vec<(Box<[Piece]>, Node)>,
    /// Patterns that end at this node.
    exact: KeySet,
    /// Patterns that end at this node with `/*`.
    tail: KeySet,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.var.is_none()
            && self.mixed.is_empty()
            && self.exact.is_empty()
            && self.tail.is_empty()
    }

    fn child_mut(&mut self, seg: &Segment) -> &mut Node {
        match seg {
            Segment::Lit(l) => self.literal.entry(l.clone()).or_default(),
            Segment::Var => self.var.get_or_insert_with(Default::default),
            Segment::Mixed(pieces) => {
                let i = match self.mixed.iter().position(|(p, _)| p == pieces) {
                    Some(i) => i,
                    None => {
                        self.mixed.push((pieces.clone(), Node::default()));
                        self.mixed.len() - 1
                    }
                };
                &mut self.mixed[i].1
            }
        }
    }

    /// Remove `key` under `segs`; prune children left empty. Returns
    /// whether the key was there.
    fn remove(&mut self, segs: &[Segment], tail: bool, key: u32) -> bool {
        let Some((seg, rest)) = segs.split_first() else {
            return if tail {
                self.tail.remove(key)
            } else {
                self.exact.remove(key)
            };
        };
        match seg {
            Segment::Lit(l) => {
                let Some(child) = self.literal.get_mut(&**l) else {
                    return false;
                };
                let removed = child.remove(rest, tail, key);
                if child.is_empty() {
                    self.literal.remove(&**l);
                }
                removed
            }
            Segment::Var => {
                let Some(child) = self.var.as_mut() else {
                    return false;
                };
                let removed = child.remove(rest, tail, key);
                if child.is_empty() {
                    self.var = None;
                }
                removed
            }
            Segment::Mixed(pieces) => {
                let Some(i) = self.mixed.iter().position(|(p, _)| p == pieces) else {
                    return false;
                };
                let removed = self.mixed[i].1.remove(rest, tail, key);
                if self.mixed[i].1.is_empty() {
                    self.mixed.swap_remove(i);
                }
                removed
            }
        }
    }

    /// Append the keys of every pattern under this node that matches
    /// `rest` (the topic after the segments already walked; `None` when the
    /// topic ended exactly there). Returns how many key sets contributed.
    fn collect(&self, rest: Option<&str>, out: &mut Vec<u32>) -> usize {
        let Some(r) = rest else {
            out.extend_from_slice(&self.exact.keys);
            return usize::from(!self.exact.is_empty());
        };
        let mut hits = 0;
        if !r.is_empty() && !self.tail.is_empty() {
            out.extend_from_slice(&self.tail.keys);
            hits += 1;
        }
        let (part, after) = match r.split_once('/') {
            Some((p, a)) => (p, Some(a)),
            None => (r, None),
        };
        if let Some(child) = self.literal.get(part) {
            hits += child.collect(after, out);
        }
        if let Some(child) = &self.var {
            if !part.is_empty() {
                hits += child.collect(after, out);
            }
        }
        for (pieces, child) in &self.mixed {
            if mixed_matches(pieces, part) {
                hits += child.collect(after, out);
            }
        }
        hits
    }

    fn count_nodes(&self) -> usize {
        1 + self.literal.values().map(Node::count_nodes).sum::<usize>()
            + self.var.as_ref().map_or(0, |n| n.count_nodes())
            + self
                .mixed
                .iter()
                .map(|(_, n)| n.count_nodes())
                .sum::<usize>()
    }
}

/// Pattern subscriptions of one worker (or node): (pattern, subscriber key)
/// pairs, looked up by published topic.
#[derive(Debug, Default)]
pub struct PatternIndex {
    root: Node,
    /// (pattern, key) pairs held: the caller bounds it (patterns per
    /// stream × streams) and exports it as a gauge.
    entries: usize,
}

// A worker owns its index; building it elsewhere and moving it in is fine.
const _: () = {
    const fn send<T: Send>() {}
    send::<PatternIndex>();
};

impl PatternIndex {
    pub fn new() -> PatternIndex {
        PatternIndex::default()
    }

    /// Subscribe `key` to `pattern`. Returns `false` when it already was.
    /// Exact topics belong in the hub's topic index (asserted in debug).
    pub fn insert(&mut self, pattern: &Pattern, key: u32) -> bool {
        debug_assert!(
            !pattern.is_exact(),
            "exact topic {pattern} belongs in the topic index"
        );
        let mut node = &mut self.root;
        for seg in pattern.segments.iter() {
            node = node.child_mut(seg);
        }
        let set = if pattern.tail {
            &mut node.tail
        } else {
            &mut node.exact
        };
        let added = set.insert(key);
        self.entries += usize::from(added);
        added
    }

    /// Unsubscribe `key` from `pattern`; nodes left empty are freed.
    /// Returns whether it was subscribed.
    pub fn remove(&mut self, pattern: &Pattern, key: u32) -> bool {
        let removed = self.root.remove(&pattern.segments, pattern.tail, key);
        self.entries -= usize::from(removed);
        removed
    }

    /// Append to `out` the key of every subscription whose pattern matches
    /// `topic`, each key once (a stream subscribed to `orders/*` and
    /// `orders/{id}` is named once). Keys already in `out` before the call
    /// are left as they are; in what order keys come is unspecified.
    pub fn matches(&self, topic: &str, out: &mut Vec<u32>) {
        let start = out.len();
        let hits = self.root.collect(Some(topic), out);
        if hits > 1 {
            // Keys of one pattern are distinct; several patterns may share one.
            let added = &mut out[start..];
            added.sort_unstable();
            let mut kept = 0;
            for i in 0..added.len() {
                if i == 0 || added[i] != added[kept - 1] {
                    added[kept] = added[i];
                    kept += 1;
                }
            }
            out.truncate(start + kept);
        }
    }

    /// (pattern, key) pairs held.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Trie nodes, root included: what the index costs in memory, for
    /// tests and gauges (O(nodes), not for the hot path).
    pub fn nodes(&self) -> usize {
        self.root.count_nodes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selector::PatternLimits;
    use proptest::prelude::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text, &PatternLimits::default()).expect(text)
    }

    fn matched(index: &PatternIndex, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.matches(topic, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn matches_each_kind_once() {
        let mut ix = PatternIndex::new();
        assert!(ix.insert(&p("orders/*"), 1));
        assert!(ix.insert(&p("orders/{id}"), 1));
        assert!(ix.insert(&p("orders/{id}"), 2));
        assert!(!ix.insert(&p("orders/{x}"), 2), "same pattern, other name");
        assert!(ix.insert(&p("*"), 3));
        assert!(ix.insert(&p("books/{id}.json"), 4));
        assert!(ix.insert(&p("users/{id}/*"), 5));
        assert_eq!(ix.len(), 6);
        assert_eq!(matched(&ix, "orders/42"), vec![1, 2, 3]);
        assert_eq!(matched(&ix, "orders/42/items"), vec![1, 3]);
        assert_eq!(matched(&ix, "orders"), vec![3]);
        assert_eq!(matched(&ix, "books/1.json"), vec![3, 4]);
        assert_eq!(matched(&ix, "users/7/feed/x"), vec![3, 5]);
        assert_eq!(matched(&ix, "users/7"), vec![3]);

        // Keys already in `out` stay; new ones are appended.
        let mut out = vec![9, 9];
        ix.matches("orders/1", &mut out);
        assert_eq!(&out[..2], &[9, 9]);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn removal_frees_nodes() {
        let mut ix = PatternIndex::new();
        let pats = ["a/b/{c}/*", "a/{b}/c", "x{y}z/q", "*", "a/b/*"];
        for (i, t) in pats.iter().enumerate() {
            ix.insert(&p(t), i as u32);
        }
        assert!(ix.nodes() > 1);
        assert!(!ix.remove(&p("a/b/{c}/*"), 99));
        for (i, t) in pats.iter().enumerate() {
            assert!(ix.remove(&p(t), i as u32), "{t}");
        }
        assert!(ix.is_empty());
        assert_eq!(ix.nodes(), 1, "only the root is left");
    }

    #[test]
    fn a_popular_pattern_keeps_o1_removal_correct() {
        let mut ix = PatternIndex::new();
        let news = p("news/*");
        for k in 0..1000 {
            assert!(ix.insert(&news, k));
        }
        for k in (0..1000).step_by(3) {
            assert!(ix.remove(&news, k));
        }
        let expect: Vec<u32> = (0..1000).filter(|k| k % 3 != 0).collect();
        assert_eq!(matched(&ix, "news/a"), expect);
        assert!(!ix.insert(&news, 1), "still there");
        assert!(ix.insert(&news, 0));
    }

    fn pattern_text() -> impl Strategy<Value = String> {
        let seg = prop::sample::select(vec!["a", "b", "", "{x}", "a{x}", "{x}b", "{x}.{y}"]);
        (prop::collection::vec(seg, 0..4), any::<bool>()).prop_filter_map(
            "exact topics are not indexed",
            |(segs, tail)| {
                let t = segs.join("/");
                let t = match (tail, t.is_empty()) {
                    (true, true) => "*".to_string(),
                    (true, false) => format!("{t}/*"),
                    (false, _) => t,
                };
                let pat = Pattern::parse(&t, &PatternLimits::default()).ok()?;
                (!pat.is_exact()).then_some(t)
            },
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String, u32),
        Match(String),
    }

    fn op() -> impl Strategy<Value = Op> {
        let topic = prop::collection::vec(
            prop::sample::select(vec!["a", "b", "ab", "", "a.b", "aab"]),
            1..5,
        )
        .prop_map(|s| s.join("/"))
        .prop_filter("topics are not empty", |t| !t.is_empty());
        prop_oneof![
            (pattern_text(), 0u32..6).prop_map(|(p, k)| Op::Insert(p, k)),
            (pattern_text(), 0u32..6).prop_map(|(p, k)| Op::Remove(p, k)),
            topic.prop_map(Op::Match),
        ]
    }

    proptest! {
        /// The trie answers exactly what a scan of every (pattern, key)
        /// would, through any sequence of inserts and removes.
        #[test]
        fn agrees_with_a_naive_scan(ops in prop::collection::vec(op(), 1..80)) {
            let mut ix = PatternIndex::new();
            let mut naive: Vec<(Pattern, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(t, k) => {
                        let pat = p(&t);
                        let fresh = !naive.iter().any(|(q, j)| *q == pat && *j == k);
                        prop_assert_eq!(ix.insert(&pat, k), fresh);
                        if fresh {
                            naive.push((pat, k));
                        }
                    }
                    Op::Remove(t, k) => {
                        let pat = p(&t);
                        let at = naive.iter().position(|(q, j)| *q == pat && *j == k);
                        prop_assert_eq!(ix.remove(&pat, k), at.is_some());
                        if let Some(i) = at {
                            naive.swap_remove(i);
                        }
                    }
                    Op::Match(topic) => {
                        let mut want: Vec<u32> = naive
                            .iter()
                            .filter(|(q, _)| q.matches(&topic))
                            .map(|(_, k)| *k)
                            .collect();
                        want.sort_unstable();
                        want.dedup();
                        prop_assert_eq!(matched(&ix, &topic), want, "topic {}", topic);
                    }
                }
                prop_assert_eq!(ix.len(), naive.len());
            }
            for (pat, k) in naive {
                prop_assert!(ix.remove(&pat, k));
            }
            prop_assert_eq!(ix.nodes(), 1);
        }
    }
}
