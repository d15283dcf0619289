//! Storage for the `msghdr` + iovecs of in-flight `SendMsg`s.
//!
//! The kernel reads a `SendMsg`'s msghdr and iovecs from user memory, so
//! they must stay at a stable address until the completion. Keeping them in
//! each connection would cost ~1 KiB per idle subscriber; instead a worker
//! owns a pool of boxed slots, taken when a coalesced send starts and given
//! back at its completion. The pool is bounded: when every slot is busy a
//! connection sends its first frame alone with a plain `Send` (slower, still
//! correct), so memory stays bounded whatever the clients do.

/// Iovecs in one coalesced send: frames beyond it wait for the next send.
pub const IOVECS_PER_SEND_MAX: usize = 64;
/// Slots one worker may allocate (each ~1.1 KiB): the most coalesced sends
/// in flight at once per worker.
pub const MSG_SLOTS_MAX: usize = 8192;

#[repr(C)]
pub struct MsgSlot {
    pub hdr: libc::msghdr,
    pub iov: [libc::iovec; IOVECS_PER_SEND_MAX],
}

pub struct MsgPool {
    // Boxed on purpose: a slot's address must not move when the Vec grows
    // while other slots are in flight.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<MsgSlot>>,
    free: Vec<u32>,
}

// The raw pointers inside msghdr/iovec only point at frames owned by the
// worker's connections, touched by the worker thread alone.
unsafe impl Send for MsgPool {}

impl Default for MsgPool {
    fn default() -> Self {
        Self::new()
    }
}

impl MsgPool {
    pub fn new() -> MsgPool {
        MsgPool {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// A free slot, or `None` when `MSG_SLOTS_MAX` are in flight.
    pub fn take(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        if self.slots.len() >= MSG_SLOTS_MAX {
            return None;
        }
        // SAFETY: msghdr and iovec are plain C structs; all-zero is valid.
        let slot: Box<MsgSlot> = Box::new(unsafe { std::mem::zeroed() });
        self.slots.push(slot);
        Some((self.slots.len() - 1) as u32)
    }

    /// Fill slot `i` with `slices` (at most `IOVECS_PER_SEND_MAX`) and
    /// return a pointer to its msghdr, stable until [`Self::give_back`], and
    /// the bytes it covers.
    pub fn fill<'a>(
        &mut self,
        i: u32,
        slices: impl Iterator<Item = &'a [u8]>,
    ) -> (*const libc::msghdr, u32) {
        let slot = &mut self.slots[i as usize];
        let mut n = 0;
        let mut bytes: u32 = 0;
        for s in slices.take(IOVECS_PER_SEND_MAX) {
            slot.iov[n] = libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            };
            bytes = bytes.saturating_add(s.len() as u32);
            n += 1;
        }
        // SAFETY: all-zero msghdr is valid; then point it at our iovecs.
        slot.hdr = unsafe { std::mem::zeroed() };
        slot.hdr.msg_iov = slot.iov.as_mut_ptr();
        slot.hdr.msg_iovlen = n as _;
        (&slot.hdr as *const libc::msghdr, bytes)
    }

    pub fn give_back(&mut self, i: u32) {
        debug_assert!((i as usize) < self.slots.len());
        debug_assert!(!self.free.contains(&i), "slot given back twice");
        // Drop dangling frame pointers so a bug cannot reuse them silently.
        self.slots[i as usize].hdr.msg_iovlen = 0;
        self.free.push(i);
    }

    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_stable() {
        let mut pool = MsgPool::new();
        let a = pool.take().unwrap();
        let data = [b"ab".as_slice(), b"cde".as_slice()];
        let (hdr, bytes) = pool.fill(a, data.iter().copied());
        assert_eq!(bytes, 5);
        // SAFETY: hdr points into the pool's boxed slot.
        unsafe {
            assert_eq!((*hdr).msg_iovlen, 2);
        }
        let b = pool.take().unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.in_use(), 2);
        let (hdr_again, _) = pool.fill(a, data.iter().copied());
        assert_eq!(
            hdr, hdr_again,
            "address must not move while others are taken"
        );
        pool.give_back(a);
        assert_eq!(pool.take(), Some(a));
    }

    #[test]
    fn fill_stops_at_the_iovec_limit() {
        let mut pool = MsgPool::new();
        let i = pool.take().unwrap();
        let one = b"x".as_slice();
        let many = vec![one; IOVECS_PER_SEND_MAX + 10];
        let (_, bytes) = pool.fill(i, many.into_iter());
        assert_eq!(bytes as usize, IOVECS_PER_SEND_MAX);
    }
}
