//! What an event's data carries: its per-topic sequence number and the time it
//! was scheduled to be sent, padded to the requested size. Pure.
//!
//! Format: `seq=<u64> t_ns=<u64> ` then `x` up to `payload_bytes`. The time is
//! nanoseconds since the run's epoch (one `Instant` shared by the publisher
//! and every subscriber thread of this process), so latency needs no clock sync.

/// Write the data of event `seq` scheduled at `t_ns` into `out` (cleared first).
pub fn encode(seq: u64, t_ns: u64, payload_bytes: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "seq={seq} t_ns={t_ns} ");
    while out.len() < payload_bytes {
        out.push('x');
    }
}

/// The (seq, t_ns) an event's data carries, or `None` when it is not ours.
pub fn decode(data: &str) -> Option<(u64, u64)> {
    let rest = data.strip_prefix("seq=")?;
    let (seq, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("t_ns=")?;
    let t = rest.split_once(' ').map_or(rest, |(t, _)| t);
    Some((seq.parse().ok()?, t.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut s = String::new();
        encode(123, 456_789, 128, &mut s);
        assert_eq!(s.len(), 128);
        assert_eq!(decode(&s), Some((123, 456_789)));
        encode(u64::MAX, u64::MAX, 0, &mut s);
        assert_eq!(decode(&s), Some((u64::MAX, u64::MAX)));
    }

    #[test]
    fn foreign_data_is_rejected() {
        for d in ["", "hello", "seq=1", "seq=x t_ns=1 ", "seq=1 t_ns=-3 "] {
            assert_eq!(decode(d), None, "{d:?}");
        }
    }
}
