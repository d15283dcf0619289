//! One worker's topic → subscribers index. Owned by a single worker thread,
//! so a delivery takes no lock: the worker looks its topic up once and walks
//! a dense `Vec` of slab keys.
//!
//! Removal is O(1): each subscription remembers its position in the topic's
//! vector ([`Sub`]), the last entry is swapped into the hole, and the caller
//! is told which key moved so it can update that connection's `Sub`.

use std::collections::HashMap;

/// A topic's number inside one worker's index (reused after the topic empties).
pub type TopicId = u32;

/// What a connection keeps per subscribed topic: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub topic: TopicId,
    pub pos: u32,
}

#[derive(Debug, Default)]
struct Topic {
    name: Box<str>,
    keys: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct Index {
    by_name: HashMap<Box<str>, TopicId>,
    topics: Vec<Topic>,
    free_ids: Vec<TopicId>,
    subscriptions: usize,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// The subscriber count of every topic that has subscribers (for the
    /// metrics' topic-size gauges; O(topics), called once per sweep).
    pub fn topic_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.topics.iter().map(|t| t.keys.len()).filter(|n| *n > 0)
    }

    /// Add `key` as a subscriber of `name`. The caller keeps the [`Sub`]
    /// and hands it back to [`Self::unsubscribe`]; subscribing one key twice
    /// to a topic is the caller's bug (it dedupes topics per stream).
    pub fn subscribe(&mut self, name: &str, key: u32) -> Sub {
        let topic = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let entry = Topic {
                    name: name.into(),
                    keys: Vec::new(),
                };
                let id = match self.free_ids.pop() {
                    Some(id) => {
                        self.topics[id as usize] = entry;
                        id
                    }
                    None => {
                        self.topics.push(entry);
                        (self.topics.len() - 1) as TopicId
                    }
                };
                self.by_name.insert(name.into(), id);
                id
            }
        };
        let keys = &mut self.topics[topic as usize].keys;
        debug_assert!(!keys.contains(&key), "key {key} subscribed twice to {name}");
        keys.push(key);
        self.subscriptions += 1;
        Sub {
            topic,
            pos: (keys.len() - 1) as u32,
        }
    }

    /// Remove the subscription `sub` held by `key`. If another key moved to
    /// fill the hole, `moved(other_key, topic, new_pos)` is called so its
    /// owner can update its `Sub`.
    pub fn unsubscribe(&mut self, sub: Sub, key: u32, mut moved: impl FnMut(u32, TopicId, u32)) {
        let topic = &mut self.topics[sub.topic as usize];
        let pos = sub.pos as usize;
        assert_eq!(topic.keys.get(pos), Some(&key), "index out of sync");
        topic.keys.swap_remove(pos);
        self.subscriptions -= 1;
        if let Some(&other) = topic.keys.get(pos) {
            moved(other, sub.topic, sub.pos);
        }
        if topic.keys.is_empty() {
            // Forget empty topics so a stream of one-off topic names cannot
            // grow the index without bound.
            let name = std::mem::take(&mut topic.name);
            topic.keys = Vec::new();
            self.by_name.remove(&name);
            self.free_ids.push(sub.topic);
        }
    }

    /// The slab keys subscribed to `name` (empty if none).
    pub fn subscribers(&self, name: &str) -> &[u32] {
        match self.by_name.get(name) {
            Some(&id) => &self.topics[id as usize].keys,
            None => &[],
        }
    }

    /// The name of a topic a live [`Sub`] points at.
    pub fn name(&self, topic: TopicId) -> &str {
        &self.topics[topic as usize].name
    }

    pub fn topics_len(&self) -> usize {
        self.by_name.len()
    }

    pub fn subscriptions_len(&self) -> usize {
        self.subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of the caller: key -> its subs, updated through `moved`.
    fn unsubscribe_all(index: &mut Index, subs: &mut HashMap<u32, Vec<Sub>>, key: u32) {
        let mine = subs.remove(&key).unwrap_or_default();
        for s in mine {
            index.unsubscribe(s, key, |other, topic, pos| {
                for o in subs.get_mut(&other).unwrap() {
                    if o.topic == topic {
                        o.pos = pos;
                    }
                }
            });
        }
    }

    #[test]
    fn subscribe_unsubscribe_keeps_every_other_key() {
        let mut index = Index::new();
        let mut subs: HashMap<u32, Vec<Sub>> = HashMap::new();
        for key in 0..100u32 {
            for t in ["a", "b"] {
                if key % 3 != 0 || t == "a" {
                    subs.entry(key).or_default().push(index.subscribe(t, key));
                }
            }
        }
        // Remove in an order that moves entries around a lot.
        for key in (0..100u32).filter(|k| k % 7 == 0 || k % 2 == 1) {
            unsubscribe_all(&mut index, &mut subs, key);
        }
        let mut a: Vec<u32> = index.subscribers("a").to_vec();
        a.sort_unstable();
        let want: Vec<u32> = (0..100).filter(|k| subs.contains_key(k)).collect();
        assert_eq!(a, want);
        let mut b: Vec<u32> = index.subscribers("b").to_vec();
        b.sort_unstable();
        let want_b: Vec<u32> = want.iter().copied().filter(|k| k % 3 != 0).collect();
        assert_eq!(b, want_b);
        assert_eq!(index.subscriptions_len(), a.len() + b.len());
    }

    #[test]
    fn empty_topics_are_forgotten_and_ids_reused() {
        let mut index = Index::new();
        let s = index.subscribe("once", 1);
        index.unsubscribe(s, 1, |_, _, _| panic!("nothing moves"));
        assert_eq!(index.topics_len(), 0);
        assert!(index.subscribers("once").is_empty());
        let s2 = index.subscribe("other", 2);
        assert_eq!(s2.topic, s.topic, "id reused");
        assert_eq!(index.subscribers("other"), &[2]);
    }

    #[test]
    fn sub_is_small() {
        assert_eq!(std::mem::size_of::<Sub>(), 8);
    }
}
