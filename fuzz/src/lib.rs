//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! The targets take raw bytes wherever the input is a wire format (a request,
//! a chunked body, an event stream, a query string), so the seed corpus in
//! `corpus/<target>/` is made of readable, real inputs. Where a property needs
//! a second input (how a stream is split across reads), it is derived from the
//! bytes themselves: every mutation of the input also moves the split points.

/// The publish-body entry point, in one place: the server's restructure may
/// move it (e.g. to `stentor::api`), and then only this line changes.
pub use stentor::api::publish::{parse_publish, PublishRules};
pub use stentor::hub::publish::{PublishError, PublishRequest};

/// Inputs up to this many bytes are also checked at every single split
/// point (all two-read deliveries); longer ones at [`SPLITS_MAX`] points, so
/// one execution stays well under a millisecond.
pub const EXHAUSTIVE_SPLIT_BYTES_MAX: usize = 256;

/// Pseudo-random cut points per input beyond the exhaustive size.
pub const SPLITS_MAX: usize = 32;

/// FNV-1a: a stable, dependency-free hash to seed split points from the input.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A small xorshift generator (deterministic per input, so a crash replays).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// Sorted, distinct cut points strictly inside `0..len`, derived from the
/// input: where the bytes are split into reads.
pub fn cut_points(input: &[u8], len: usize, cuts_max: usize) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    let mut rng = Rng::new(fnv1a(input));
    let mut cuts: Vec<usize> = (0..rng.below(cuts_max + 1))
        .map(|_| 1 + rng.below(len - 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `bytes` split at `cuts` (sorted, inside the slice): the reads a peer might
/// deliver.
pub fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}

/// The prefix lengths a stateless parser is re-run on as reads arrive:
/// every length for short inputs, else a pseudo-random sample, always with
/// the whole input and the empty prefix.
pub fn prefix_lengths(input: &[u8], len: usize) -> Vec<usize> {
    let mut lengths: Vec<usize> = if len <= EXHAUSTIVE_SPLIT_BYTES_MAX {
        (0..=len).collect()
    } else {
        let mut l = cut_points(input, len, SPLITS_MAX);
        l.push(0);
        l.push(len);
        l
    };
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}
