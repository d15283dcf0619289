//! One subscriber's delivery bookkeeping by sequence number: which events it
//! saw, how many twice, how many behind one it had already seen. Pure.
//!
//! A bitmap of seen sequence numbers: at most events_per_topic bits per
//! subscriber (300 events = 40 bytes), grown lazily so an idle subscriber
//! holds nothing.

/// Largest sequence number tracked; beyond it deliveries count as foreign.
/// Bounds the bitmap at 2 MiB per subscriber even against a hostile server.
pub const SEQ_MAX: u64 = 1 << 24;

#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    seen: Vec<u64>,
    unique: u32,
    duplicates: u32,
    out_of_order: u32,
    /// Highest seq seen plus one (0: none yet).
    next_above: u64,
    /// Sequence numbers from this one on are owed (a subscriber that
    /// joined late), and how many distinct ones of them arrived.
    owed_from: u64,
    unique_owed: u32,
}

/// What one delivery turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First time this seq arrived, in order.
    New,
    /// First time, but a higher seq had arrived before it.
    Late,
    Duplicate,
    /// Seq beyond [`SEQ_MAX`]: not counted.
    OutOfRange,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> Delivery {
        if seq >= SEQ_MAX {
            return Delivery::OutOfRange;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Delivery::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        if seq >= self.owed_from {
            self.unique_owed += 1;
        }
        if seq + 1 < self.next_above {
            self.out_of_order += 1;
            Delivery::Late
        } else {
            self.next_above = seq + 1;
            Delivery::New
        }
    }

    /// Count only sequence numbers >= `from` as owed (those already seen
    /// included).
    pub fn owe_from(&mut self, from: u64) {
        self.owed_from = from;
        let first = (from / 64) as usize;
        self.unique_owed = self
            .seen
            .iter()
            .enumerate()
            .skip(first)
            .map(|(i, &w)| {
                let w = if i == first {
                    w & (u64::MAX << (from % 64))
                } else {
                    w
                };
                w.count_ones()
            })
            .sum();
    }

    pub fn owed_from(&self) -> u64 {
        self.owed_from
    }

    /// Distinct sequence numbers >= the owed start seen (all, by default).
    pub fn unique_owed(&self) -> u64 {
        self.unique_owed as u64
    }

    pub fn unique(&self) -> u64 {
        self.unique as u64
    }
    pub fn duplicates(&self) -> u64 {
        self.duplicates as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 2, 3, 5, 5, 4] {
            t.record(s);
        }
        assert_eq!(t.unique(), 6);
        assert_eq!(t.duplicates(), 2);
        assert_eq!(t.out_of_order, 2); // 2 after 3, 4 after 5
    }

    #[test]
    fn owed_counts_only_from_the_start() {
        let mut t = SeqTracker::default();
        for s in [3, 64, 65, 70] {
            t.record(s);
        }
        assert_eq!(t.unique_owed(), 4);
        t.owe_from(65);
        assert_eq!(t.unique_owed(), 2);
        t.record(64);
        t.record(200);
        t.record(200);
        assert_eq!((t.unique_owed(), t.unique()), (3, 5));
        t.owe_from(0);
        assert_eq!(t.unique_owed(), 5);
    }

    #[test]
    fn gaps_are_loss_not_reorder() {
        let mut t = SeqTracker::default();
        for s in (0..200).filter(|s| s % 5 != 4) {
            assert_eq!(t.record(s), Delivery::New);
        }
        assert_eq!(t.unique(), 160);
        assert_eq!(t.out_of_order, 0);
        assert_eq!(t.record(SEQ_MAX), Delivery::OutOfRange);
    }
}
