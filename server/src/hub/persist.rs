//! The history file (`--history-file`): what a node's history is between
//! two runs. Pure bytes in, bytes out; the node does the file system.
//!
//! # Format, version 1
//!
//! ```text
//! magic    8 bytes  "STENTORH"
//! version  u32 LE   1
//! length   u64 LE   bytes of the payload
//! checksum u64 LE   FNV-1a 64 of the payload
//! payload:
//!   written_ms         u64   Unix ms when written
//!   ranges             u32 n, then n × (base u64, last u64): the id
//!                      ranges the history covers (see `IdSeq::restore`)
//!   forgotten_through  u64   highest id of a topic the hub forgot
//!   topics             u32 n, then per topic:
//!     name             u16 length, bytes (a valid topic name)
//!     evicted_through  u64
//!     events           u32 n, then n × (id u64, frame u32 length, bytes)
//! ```
//!
//! All integers little-endian. A file that is short, long, of another
//! magic or version, whose checksum differs, or whose contents break a
//! rule (ids not increasing, a frame that does not end an event, a bad
//! topic name) is refused whole: the node logs why and starts empty.

use crate::hub::topic::Topic;
use crate::wire::sse::Frame;

pub const MAGIC: &[u8; 8] = b"STENTORH";
pub const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8;

/// Largest history file read or written. The hub's own bounds
/// (`--history-bytes-max` per topic × `--topics-max`) can allow more in
/// theory; a node writes topics until this much and logs what it left out.
pub const HISTORY_FILE_BYTES_MAX: usize = 1 << 30;

/// One topic's saved history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTopic {
    pub topic: Topic,
    pub evicted_through: u64,
    /// `(id, frame)`, ids strictly increasing.
    pub events: Vec<(u64, Frame)>,
}

/// A node's history as written to and read from the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Saved {
    pub written_ms: u64,
    pub ranges: Vec<(u64, u64)>,
    pub forgotten_through: u64,
    pub topics: Vec<SavedTopic>,
}

impl Saved {
    /// The newest id the file covers (0 when it covers none).
    pub fn last_id(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// Events the file holds, all topics.
    pub fn events(&self) -> usize {
        self.topics.iter().map(|t| t.events.len()).sum()
    }
}

/// FNV-1a, 64 bits: detects a torn or flipped file, not an attacker (the
/// file is the operator's, like the binary).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The file's bytes for `saved`. Topics past [`HISTORY_FILE_BYTES_MAX`]
/// are left out; the second value counts them.
pub fn encode(saved: &Saved) -> (Vec<u8>, usize) {
    let mut p = Vec::with_capacity(4096);
    p.extend_from_slice(&saved.written_ms.to_le_bytes());
    p.extend_from_slice(&(saved.ranges.len() as u32).to_le_bytes());
    for (b, l) in &saved.ranges {
        p.extend_from_slice(&b.to_le_bytes());
        p.extend_from_slice(&l.to_le_bytes());
    }
    p.extend_from_slice(&saved.forgotten_through.to_le_bytes());
    let count_at = p.len();
    p.extend_from_slice(&0u32.to_le_bytes());
    let (mut written, mut left_out) = (0u32, 0usize);
    for t in &saved.topics {
        let size = 2
            + t.topic.as_str().len()
            + 12
            + t.events.iter().map(|(_, f)| 12 + f.len()).sum::<usize>();
        if HEADER_BYTES + p.len() + size > HISTORY_FILE_BYTES_MAX {
            left_out += 1;
            continue;
        }
        let name = t.topic.as_str().as_bytes();
        p.extend_from_slice(&(name.len() as u16).to_le_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&t.evicted_through.to_le_bytes());
        p.extend_from_slice(&(t.events.len() as u32).to_le_bytes());
        for (id, frame) in &t.events {
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            p.extend_from_slice(frame);
        }
        written += 1;
    }
    p[count_at..count_at + 4].copy_from_slice(&written.to_le_bytes());
    let mut out = Vec::with_capacity(HEADER_BYTES + p.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(p.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(&p).to_le_bytes());
    out.extend_from_slice(&p);
    (out, left_out)
}

/// A cursor over the payload; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("truncated")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Read a history file's bytes; `topic_bytes_max` bounds topic names as
/// the running node does. The error says why, for the log.
pub fn decode(bytes: &[u8], topic_bytes_max: usize) -> Result<Saved, String> {
    if bytes.len() > HISTORY_FILE_BYTES_MAX {
        return Err(format!("larger than {HISTORY_FILE_BYTES_MAX} bytes"));
    }
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not a stentor history file".into());
    }
    let mut h = Reader { bytes, at: 8 };
    let version = h.u32()?;
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    let len = h.u64()?;
    let sum = h.u64()?;
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if fnv1a64(payload) != sum {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let written_ms = r.u64()?;
    let n = r.u32()? as usize;
    if n > crate::hub::id::RESTORED_RANGES_MAX {
        return Err(format!("{n} id ranges"));
    }
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let (b, l) = (r.u64()?, r.u64()?);
        if b > l {
            return Err("an id range ends before it starts".into());
        }
        ranges.push((b, l));
    }
    let forgotten_through = r.u64()?;
    let topics_n = r.u32()? as usize;
    let mut topics = Vec::with_capacity(topics_n.min(1 << 16));
    for _ in 0..topics_n {
        let name_len = r.u16()? as usize;
        let name =
            std::str::from_utf8(r.take(name_len)?).map_err(|_| "a topic name is not UTF-8")?;
        let topic =
            Topic::parse(name, topic_bytes_max).map_err(|e| format!("topic {name:?}: {e:?}"))?;
        let evicted_through = r.u64()?;
        let events_n = r.u32()? as usize;
        let mut events: Vec<(u64, Frame)> = Vec::with_capacity(events_n.min(1 << 16));
        let mut prev = evicted_through;
        for _ in 0..events_n {
            let id = r.u64()?;
            let flen = r.u32()? as usize;
            let frame = r.take(flen)?;
            if id <= prev {
                return Err(format!("topic {name:?}: ids do not increase at {id}"));
            }
            if !ranges.iter().any(|&(b, l)| (b..=l).contains(&id)) {
                return Err(format!("topic {name:?}: id {id} outside the file's ranges"));
            }
            if !frame.ends_with(b"\n\n") {
                return Err(format!("topic {name:?}: event {id} is not a whole frame"));
            }
            prev = id;
            events.push((id, Frame::copy_from_slice(frame)));
        }
        topics.push(SavedTopic {
            topic,
            evicted_through,
            events,
        });
    }
    if r.at != payload.len() {
        return Err("bytes after the last topic".into());
    }
    Ok(Saved {
        written_ms,
        ranges,
        forgotten_through,
        topics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Saved {
        Saved {
            written_ms: 7,
            ranges: vec![(1000, 1003)],
            forgotten_through: 0,
            topics: vec![SavedTopic {
                topic: Topic::parse("a", 64).unwrap(),
                evicted_through: 1001,
                events: vec![
                    (1002, Frame::from_static(b"id: 1002\ndata: x\n\n")),
                    (1003, Frame::from_static(b"id: 1003\ndata: y\n\n")),
                ],
            }],
        }
    }

    #[test]
    fn a_history_reads_back_exactly() {
        let (bytes, left_out) = encode(&sample());
        assert_eq!(left_out, 0);
        assert_eq!(decode(&bytes, 64).unwrap(), sample());
    }

    /// Any flipped byte, any cut, any extra byte: refused, never a panic,
    /// never a different history.
    #[test]
    fn every_damage_is_refused() {
        let (bytes, _) = encode(&sample());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b, 64).is_err(), "flip at {i}");
            assert!(decode(&bytes[..i], 64).is_err(), "cut at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, 64).is_err());
    }

    #[test]
    fn contents_breaking_a_rule_are_refused_even_with_a_good_checksum() {
        let mut s = sample();
        s.topics[0].events.swap(0, 1);
        assert!(decode(&encode(&s).0, 64).unwrap_err().contains("increase"));
        let mut s = sample();
        s.topics[0].events[0].0 = 5000;
        s.topics[0].events[1].0 = 5001;
        assert!(decode(&encode(&s).0, 64).unwrap_err().contains("outside"));
        let mut s = sample();
        s.topics[0].events[1].1 = Frame::from_static(b"id: 1003\ndata: y");
        assert!(decode(&encode(&s).0, 64).unwrap_err().contains("frame"));
    }
}
