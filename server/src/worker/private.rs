//! Who gets private events: a second topic index per worker, holding the
//! streams whose token covered a topic when they opened. A private event
//! walks this index instead of the public one, so delivery stays a lookup
//! and a walk (no token is looked at after the stream opened), and a stream
//! without private rights costs nothing here.

use std::collections::HashMap;

use super::Worker;
use crate::hub::index::{Index, Sub};

/// The private side of one worker's subscriptions.
#[derive(Debug, Default)]
pub(super) struct PrivateSubs {
    /// Topic → the streams that get its private events.
    pub(super) index: Index,
    /// The subscriptions each such stream holds in `index` (at most
    /// `--topics-per-stream-max` per stream; one entry per stream with
    /// private rights, removed at close).
    subs: HashMap<u32, Box<[Sub]>>,
}

impl PrivateSubs {
    /// Stream `key` gets the private events of `topics` (each once).
    pub(super) fn open<'a>(&mut self, key: u32, topics: impl Iterator<Item = &'a str>) {
        let subs: Box<[Sub]> = topics.map(|t| self.index.subscribe(t, key)).collect();
        if !subs.is_empty() {
            let before = self.subs.insert(key, subs);
            debug_assert!(before.is_none(), "stream {key} opened twice");
        }
    }

    /// Stream `key` closed: forget its private subscriptions.
    pub(super) fn close(&mut self, key: u32) {
        let Some(subs) = self.subs.remove(&key) else {
            return;
        };
        let others = &mut self.subs;
        for sub in subs.iter() {
            self.index.unsubscribe(*sub, key, |other, topic, pos| {
                if let Some(theirs) = others.get_mut(&other) {
                    for s in theirs.iter_mut().filter(|s| s.topic == topic) {
                        s.pos = pos;
                    }
                }
            });
        }
    }

    /// Streams with private rights on this worker.
    #[cfg(test)]
    fn streams(&self) -> usize {
        self.subs.len()
    }
}

impl Worker {
    /// How presence names stream `key` of this worker.
    pub(super) fn stream_id(&self, key: u32, generation: u32) -> crate::bus::presence::StreamId {
        crate::bus::presence::StreamId {
            worker: self.id as u16,
            key,
            generation,
        }
    }

    /// Take the node's JWT keys when they were reloaded since this worker
    /// last looked (one atomic load per request otherwise).
    pub(super) fn sync_keys(&mut self) {
        if let Some((generation, keys)) = self.shared.keys_if_newer(self.api.authz.generation) {
            self.api.authz.generation = generation;
            self.api.authz.keys = keys;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_keeps_the_other_streams_positions() {
        let mut p = PrivateSubs::default();
        p.open(1, ["a", "b"].into_iter());
        p.open(2, ["a"].into_iter());
        p.open(3, ["a", "b"].into_iter());
        assert_eq!(p.index.subscribers("a"), [1, 2, 3]);
        p.close(1);
        // 3 moved into 1's place in "a" and "b": its positions follow.
        assert_eq!(p.index.subscribers("a"), [3, 2]);
        p.close(3);
        assert_eq!(p.index.subscribers("a"), [2]);
        assert!(p.index.subscribers("b").is_empty());
        p.close(2);
        assert_eq!(p.streams(), 0);
        assert_eq!(p.index.subscriptions_len(), 0);
        p.close(9); // never opened: nothing to do
    }
}
