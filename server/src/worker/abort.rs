//! Abortive close of a dropped slow client: `SO_LINGER {on, 0 s}` set on the
//! socket (an io_uring `setsockopt` on its fixed slot) just before the close,
//! so the kernel answers with RST and frees the unsent data at once.
//!
//! Why: a graceful close puts the FIN behind everything still queued in the
//! socket's send buffer (up to its size, 64 KiB here). A client that stopped
//! reading never reaches that FIN, so it does not learn it was dropped (and
//! never reconnects with `Last-Event-ID`), and the kernel keeps that buffer
//! until the client drains or TCP gives up. A dropped slow client has lost
//! its stream anyway; what is unsent has no value, the history replays it.
//! Only slow-client drops take this path: every other close stays graceful,
//! so a response followed by `Connection: close` is never cut.

use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, squeue, types};

use crate::conn::CloseReason;

/// The option value: constant, so a `static` outlives every SQE that points
/// at it (the kernel reads it when the linked op runs, not when queued).
static LINGER_ABORT: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

/// Set once the kernel refused the op (older than 6.7, or no socket
/// `uring_cmd`): from then on slow clients are closed gracefully.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether a close for `reason` should be abortive (and can be).
pub(super) fn wanted(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::SlowQueueBytes | CloseReason::SlowQueueAge
    ) && !UNSUPPORTED.load(Ordering::Relaxed)
}

/// The `setsockopt(SOL_SOCKET, SO_LINGER, {1, 0})` SQE on `fixed`,
/// hard-linked so the cancel/close chain after it runs whatever it returns.
pub(super) fn entry(fixed: u32, user_data: u64) -> squeue::Entry {
    opcode::SetSockOpt::new(
        types::Fixed(fixed),
        libc::SOL_SOCKET as u32,
        libc::SO_LINGER as u32,
        (&LINGER_ABORT as *const libc::linger).cast(),
        std::mem::size_of::<libc::linger>() as u32,
    )
    .build()
    .flags(squeue::Flags::IO_HARDLINK)
    .user_data(user_data)
}

/// Completion of [`entry`]. A kernel without the op answers EINVAL or
/// EOPNOTSUPP: the close still ran (hard link), gracefully; say so once and
/// stop asking. Other errors (the peer already gone) need nothing.
pub(super) fn on_done(worker: usize, result: i32) {
    let unsupported = result == -libc::EINVAL || result == -libc::EOPNOTSUPP;
    if unsupported && !UNSUPPORTED.swap(true, Ordering::Relaxed) {
        crate::warn!(
            "setsockopt via io_uring unsupported: slow clients are closed gracefully (kernel >= 6.7 needed for RST)",
            worker = worker,
            errno = -result
        );
    }
}
