//! Tokens: what an SQE's `user_data` carries so its completion can be routed.
//!
//! Layout of the u64, high to low: `kind` (8 bits) | `generation` (24 bits) |
//! `key` (32 bits). `key` names a slab slot (or an accept slot for
//! [`OpKind::Accept`]); `generation` is the slot's generation when the SQE was
//! made, so a completion that arrives after the slot was reused is recognised
//! as stale and dropped instead of acting on a stranger's connection.

/// What kind of operation an SQE was; the completion handler dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// One of the worker's accept SQEs; `key` is the accept slot.
    Accept = 1,
    /// Multishot recv on a connection.
    Recv = 2,
    /// A `Send` or `SendMsg` on a connection.
    Send = 3,
    /// `AsyncCancel` of a connection's ops.
    Cancel = 4,
    /// Close of a connection's fixed slot.
    Close = 5,
    /// Read of the worker's wake-up eventfd (inbox or shutdown).
    Wake = 6,
    /// The coarse worker tick.
    Tick = 7,
    /// Cancel of the accept SQEs at shutdown.
    AcceptCancel = 8,
    /// `SO_LINGER {1, 0}` set on a slow client's socket before its close.
    Linger = 9,
    /// `AsyncCancel` of a connection's recv to stop reading (backpressure).
    Pause = 10,
}

impl OpKind {
    const ALL: [OpKind; 10] = [
        OpKind::Accept,
        OpKind::Recv,
        OpKind::Send,
        OpKind::Cancel,
        OpKind::Close,
        OpKind::Wake,
        OpKind::Tick,
        OpKind::AcceptCancel,
        OpKind::Linger,
        OpKind::Pause,
    ];

    fn from_u8(value: u8) -> Option<OpKind> {
        Self::ALL.into_iter().find(|k| *k as u8 == value)
    }
}

/// Generations wrap at this many bits: a stale completion would have to
/// survive 16M reuses of one slot to be mistaken for a live one.
pub const GENERATION_BITS: u32 = 24;
pub const GENERATION_MAX: u32 = (1 << GENERATION_BITS) - 1;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: OpKind,
    pub generation: u32,
    pub key: u32,
}

impl Token {
    /// `generation` is masked to [`GENERATION_BITS`]; callers keep their
    /// generations in range with [`next_generation`].
    pub fn new(kind: OpKind, key: u32, generation: u32) -> Token {
        debug_assert!(generation <= GENERATION_MAX, "generation out of range");
        Token {
            kind,
            generation: generation & GENERATION_MAX,
            key,
        }
    }

    pub fn pack(self) -> u64 {
        pack_raw(self.kind as u8, self.generation, self.key)
    }

    /// `None` for a user_data we never produced (a kernel or programming
    /// error: the caller logs it and drops the completion).
    pub fn unpack(user_data: u64) -> Option<Token> {
        let (kind, generation, key) = unpack_raw(user_data);
        Some(Token {
            kind: OpKind::from_u8(kind)?,
            generation,
            key,
        })
    }
}

/// The packing itself, for rings whose op kinds are not the server's
/// [`OpKind`] (the load generator's: connect, send, recv, ...): `kind`
/// (8 bits) | `generation` masked to [`GENERATION_BITS`] | `key`.
pub fn pack_raw(kind: u8, generation: u32, key: u32) -> u64 {
    (u64::from(kind) << 56) | (u64::from(generation & GENERATION_MAX) << 32) | u64::from(key)
}

/// `(kind, generation, key)` of a [`pack_raw`] user_data.
pub fn unpack_raw(user_data: u64) -> (u8, u32, u32) {
    (
        (user_data >> 56) as u8,
        ((user_data >> 32) as u32) & GENERATION_MAX,
        user_data as u32,
    )
}

/// The generation after `generation`, wrapping inside [`GENERATION_BITS`].
pub fn next_generation(generation: u32) -> u32 {
    (generation + 1) & GENERATION_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_the_bounds() {
        for kind in OpKind::ALL {
            for key in [0, 1, 19_999, u32::MAX] {
                for generation in [0, 1, 12_345, GENERATION_MAX] {
                    let t = Token::new(kind, key, generation);
                    assert_eq!(Token::unpack(t.pack()), Some(t));
                }
            }
        }
    }

    #[test]
    fn fields_do_not_bleed_into_each_other() {
        let t = Token::new(OpKind::Send, u32::MAX, 0);
        assert_eq!(Token::unpack(t.pack()).unwrap().generation, 0);
        let t = Token::new(OpKind::Send, 0, GENERATION_MAX);
        let u = Token::unpack(t.pack()).unwrap();
        assert_eq!((u.key, u.kind), (0, OpKind::Send));
    }

    #[test]
    fn unknown_kinds_are_rejected() {
        assert_eq!(Token::unpack(0), None);
        assert_eq!(Token::unpack(0xff << 56), None);
        assert_eq!(Token::unpack(11 << 56), None);
    }

    #[test]
    fn generations_wrap_inside_their_bits() {
        assert_eq!(next_generation(GENERATION_MAX), 0);
        assert_eq!(next_generation(7), 8);
    }

    #[test]
    fn a_reused_slot_makes_old_tokens_stale() {
        // The check the worker does: same key, different generation = stale.
        let old = Token::new(OpKind::Recv, 42, 5);
        let slot_generation = next_generation(5);
        let seen = Token::unpack(old.pack()).unwrap();
        assert_eq!(seen.key, 42);
        assert_ne!(seen.generation, slot_generation, "must be seen as stale");
    }

    #[test]
    fn raw_packing_round_trips_any_kind() {
        for kind in [0u8, 1, 7, 255] {
            for (generation, key) in [(0, 0), (GENERATION_MAX, u32::MAX), (12, 99_999)] {
                assert_eq!(
                    unpack_raw(pack_raw(kind, generation, key)),
                    (kind, generation, key)
                );
            }
        }
        // A generation past the bits wraps inside them, never into the kind.
        assert_eq!(unpack_raw(pack_raw(3, u32::MAX, 7)), (3, GENERATION_MAX, 7));
    }
}
