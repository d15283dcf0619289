//! The io_uring event loop pieces: tokens (user_data), the send queue,
//! the provided-buffer ring, `SendMsg` storage, and ring setup with the
//! fallbacks and error messages an operator needs.

pub mod bufring;
pub mod msgpool;
pub mod sendq;
pub mod token;

use std::io;

use io_uring::IoUring;

/// Submission queue entries per ring. Every SQE made while handling one
/// batch of completions goes out in one `io_uring_enter`; if a batch makes
/// more, the queue is submitted early and filling goes on (nothing dropped).
pub const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries of a ring with few connections: 4× the SQ
/// because multishot ops (recv) post many completions per SQE.
pub const CQ_ENTRIES_MIN: u32 = 16384;
/// The kernel's bound on a CQ (`IORING_MAX_CQ_ENTRIES` = 2 × 32768); a
/// larger request is EINVAL.
pub const CQ_ENTRIES_MAX: u32 = 65536;
/// Test hook (`STENTOR_FAULT_CQ_ENTRIES=N`): every ring gets a CQ of N
/// entries (and an SQ of N/2), so the CQ overflow path runs under real
/// traffic. Unset in production.
pub const FAULT_CQ_ENTRIES_ENV: &str = "STENTOR_FAULT_CQ_ENTRIES";

/// The CQ a ring holding `connections` needs so that one completion per
/// connection (a full broadcast: one send each) plus as many again
/// (recvs, cancels, closes arriving in the same turn) fit without
/// overflow: the next power of two ≥ 2 × connections, within the kernel's
/// bound. At the bound (more than 32,768 connections per ring) a full
/// turn can still overflow; the kernel then keeps the extra completions
/// (`IORING_FEAT_NODROP`) and the worker's loop flushes them on its next
/// enter without sleeping: nothing is lost either way.
pub fn cq_entries_for(connections: u32) -> u32 {
    connections
        .saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(CQ_ENTRIES_MAX)
        .clamp(CQ_ENTRIES_MIN, CQ_ENTRIES_MAX)
}

/// The (SQ, CQ) sizes for a ring of `connections`: from
/// [`cq_entries_for`], or the test hook's tiny sizes when it is set.
pub fn ring_entries(connections: u32) -> (u32, u32) {
    let fault = std::env::var(FAULT_CQ_ENTRIES_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n >= 2);
    match fault {
        Some(cq) => {
            let cq = cq.next_power_of_two().min(CQ_ENTRIES_MAX);
            (cq / 2, cq)
        }
        None => (SQ_ENTRIES, cq_entries_for(connections)),
    }
}

/// Which setup flags the ring got (logged at debug level, and why it matters:
/// DEFER_TASKRUN runs completions only when we wait, so they arrive batched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN.
    Deferred,
    /// COOP_TASKRUN only (kernels 5.19).
    Coop,
    /// No optional flags.
    Plain,
}

/// Build a ring on the calling thread (DEFER_TASKRUN requires the thread that
/// creates the ring to be the one that submits), falling back flag by flag on
/// kernels that answer EINVAL.
pub fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<(IoUring, RingMode)> {
    let mut last_err = None;
    for mode in [RingMode::Deferred, RingMode::Coop, RingMode::Plain] {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries);
        match mode {
            RingMode::Deferred => {
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_coop_taskrun();
            }
            RingMode::Coop => {
                builder.setup_coop_taskrun();
            }
            RingMode::Plain => {}
        }
        match builder.build(sq_entries) {
            Ok(ring) => return Ok((ring, mode)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Build a ring with `build(cq_entries)`; when the kernel cannot find the
/// memory for that CQ (ENOMEM, seen when many processes start rings at
/// once on a loaded host), try again with half, down to `CQ_ENTRIES_MIN`
/// (never below the SQ). A smaller CQ is still lossless: what overflows it
/// is kept by the kernel (NODROP) and flushed on the next enter. Logged,
/// since a full broadcast then overflows.
pub fn with_smaller_cq_on_enomem<T>(
    worker: usize,
    cq_entries: u32,
    mut build: impl FnMut(u32) -> io::Result<T>,
) -> io::Result<T> {
    let mut cq = cq_entries;
    loop {
        match build(cq) {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && cq / 2 >= CQ_ENTRIES_MIN => {
                cq /= 2;
                crate::warn!(
                    "no memory for a ring's completion queue; trying a smaller one",
                    worker = worker,
                    cq_entries = cq
                );
            }
            other => return other,
        }
    }
}

/// Submit what `ring` holds and wait for `want` completions (0: do not
/// wait), reaping completions the kernel still holds as deferred task work.
///
/// `IoUring::submit_and_wait(0)` enters without GETEVENTS (unless this
/// ring's own CQ overflowed), so on a DEFER_TASKRUN ring it posts nothing
/// that completed since the last wait.
pub fn submit_and_reap(ring: &mut IoUring, want: usize) -> io::Result<usize> {
    let to_submit = ring.submission().len() as u32;
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    // SAFETY: a plain io_uring_enter on our own ring: no extra argument,
    // the SQEs it submits were pushed with their own safety contracts.
    unsafe {
        ring.submitter().enter::<libc::sigset_t>(
            to_submit,
            want,
            io_uring::EnterFlags::GETEVENTS.bits(),
            None,
        )
    }
}

/// Build a secondary ring: one more fixed-file table for a worker thread
/// that owns several. Its completions must wake the thread while it sleeps
/// on its primary ring, so it has no DEFER_TASKRUN (which would hold them
/// until this ring itself is entered); an eventfd registered on it is read
/// by the primary ring.
pub fn build_secondary_ring(sq_entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(cq_entries)
        .build(sq_entries)
}

/// Turn a failure to set up io_uring into a message that names the cause
/// and the fix (an operator reads it in a journal; no backtrace helps them).
pub fn unavailable_message(err: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    match err.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "io_uring is not available on this kernel (io_uring_setup: ENOSYS); \
             stentor needs Linux 6.0 or newer built with CONFIG_IO_URING ({err})"
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => match sysctl.as_deref() {
            Some("2") => "io_uring is disabled by sysctl kernel.io_uring_disabled=2; \
                 set it to 0 (sysctl -w kernel.io_uring_disabled=0) to run stentor"
                .to_string(),
            Some("1") => "io_uring is restricted by sysctl kernel.io_uring_disabled=1 \
                 to members of the group kernel.io_uring_group; run stentor in that group \
                 or set the sysctl to 0"
                .to_string(),
            _ => format!(
                "io_uring is forbidden for this process ({err}), most likely by a seccomp \
                 profile (container runtimes block it by default); allow io_uring_setup, \
                 io_uring_enter and io_uring_register (e.g. docker run \
                 --security-opt seccomp=<profile allowing them>)"
            ),
        },
        Some(libc::EINVAL) => format!(
            "this kernel's io_uring lacks a feature stentor needs \
             (provided buffer rings, multishot recv, direct descriptors: Linux 6.0+): {err}"
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring could not allocate its rings ({err}); raise the locked-memory limit \
             (ulimit -l) or lower --workers"
        ),
        _ => format!("io_uring setup failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_ring_here() {
        let (ring, mode) =
            build_ring(SQ_ENTRIES, CQ_ENTRIES_MIN).expect("io_uring on this machine");
        assert!(ring.params().sq_entries() >= SQ_ENTRIES);
        // Linux 6.18 has DEFER_TASKRUN; a fallback here would mean a bug.
        assert_eq!(mode, RingMode::Deferred);
    }

    #[test]
    fn messages_name_cause_and_fix() {
        let m = unavailable_message(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(m.contains("ENOSYS") && m.contains("6.0"), "{m}");
        let m = unavailable_message(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(m.contains("io_uring"), "{m}");
    }
}

#[cfg(test)]
mod reap_tests {
    use super::*;
    use io_uring::{opcode, types};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// The worker's loop enters its primary ring without waiting while
    /// another ring's CQ overflowed; that enter must still run the primary's
    /// deferred task work (DEFER_TASKRUN posts completions only on an enter
    /// with GETEVENTS), or the primary ring's connections, its tick and its
    /// wake-ups stall for as long as the overflow lasts.
    #[test]
    fn an_enter_without_waiting_reaps_deferred_completions() {
        let (mut ring, mode) = build_ring(SQ_ENTRIES, CQ_ENTRIES_MIN).unwrap();
        assert_eq!(mode, RingMode::Deferred);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut data = [0u8; 16];
        // SAFETY: `data` lives until the completion checked below.
        unsafe {
            ring.submission()
                .push(
                    &opcode::Recv::new(types::Fd(a.as_raw_fd()), data.as_mut_ptr(), 16)
                        .build()
                        .user_data(7),
                )
                .unwrap();
        }
        submit_and_reap(&mut ring, 0).unwrap();
        assert_eq!(ring.completion().count(), 0, "nothing arrived yet");
        b.write_all(b"hi").unwrap();
        submit_and_reap(&mut ring, 0).unwrap();
        let got: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        assert_eq!(got, vec![(7, 2)], "deferred completion not reaped");
    }
}

#[cfg(test)]
mod chained_wake_tests {
    use super::*;
    use io_uring::{opcode, types};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    /// A thread sleeping on its primary (DEFER_TASKRUN) ring is woken when a
    /// secondary ring completes an op that had to wait (socket data arriving
    /// later), through an eventfd registered on the secondary and read by
    /// the primary. This is what lets one thread own several rings.
    #[test]
    fn a_secondary_ring_wakes_the_primary_through_an_eventfd() {
        let (mut primary, mode) = build_ring(SQ_ENTRIES, CQ_ENTRIES_MIN).unwrap();
        assert_eq!(mode, RingMode::Deferred);
        let mut secondary = build_secondary_ring(SQ_ENTRIES, CQ_ENTRIES_MIN).unwrap();
        // SAFETY: plain syscall, checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        secondary.submitter().register_eventfd(efd).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut wake_buf = 0u64;
        let mut data = [0u8; 16];
        // SAFETY: buffers live until the completions checked below.
        unsafe {
            primary
                .submission()
                .push(
                    &opcode::Read::new(types::Fd(efd), (&mut wake_buf as *mut u64).cast(), 8)
                        .build()
                        .user_data(1),
                )
                .unwrap();
            secondary
                .submission()
                .push(
                    &opcode::Recv::new(types::Fd(a.as_raw_fd()), data.as_mut_ptr(), 16)
                        .build()
                        .user_data(2),
                )
                .unwrap();
        }
        secondary.submit().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            use std::io::Write;
            (&b).write_all(b"hi").unwrap();
            b
        });
        let started = Instant::now();
        let ts = types::Timespec::new().sec(3);
        let args = types::SubmitArgs::new().timespec(&ts);
        let mut woke = false;
        while started.elapsed() < Duration::from_secs(3) && !woke {
            let _ = primary.submitter().submit_with_args(1, &args);
            woke = primary.completion().any(|c| c.user_data() == 1);
        }
        let _b = writer.join().unwrap();
        assert!(woke, "primary ring not woken");
        assert!(started.elapsed() < Duration::from_secs(2));
        let got: Vec<(u64, i32)> = secondary
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        assert_eq!(got, vec![(2, 2)]);
        // SAFETY: closing our eventfd after both rings are done with it.
        drop(secondary);
        drop(primary);
        unsafe { libc::close(efd) };
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn enomem_halves_the_cq_down_to_the_minimum() {
        let mut tried = Vec::new();
        let got = with_smaller_cq_on_enomem(0, CQ_ENTRIES_MAX, |cq| {
            tried.push(cq);
            Err::<(), _>(io::Error::from_raw_os_error(libc::ENOMEM))
        });
        assert!(got.is_err());
        assert_eq!(tried, vec![65_536, 32_768, 16_384]);
        let mut tried = Vec::new();
        let got = with_smaller_cq_on_enomem(0, CQ_ENTRIES_MAX, |cq| {
            tried.push(cq);
            if cq > 32_768 {
                Err(io::Error::from_raw_os_error(libc::ENOMEM))
            } else {
                Ok(cq)
            }
        });
        assert_eq!(got.unwrap(), 32_768);
        // Other errors are not retried.
        let mut calls = 0;
        let _ = with_smaller_cq_on_enomem(0, CQ_ENTRIES_MAX, |_| {
            calls += 1;
            Err::<(), _>(io::Error::from_raw_os_error(libc::EINVAL))
        });
        assert_eq!(calls, 1);
    }

    #[test]
    fn the_cq_holds_a_full_broadcast_of_a_ring() {
        // The plan's usual ring: 19,968 connections.
        assert_eq!(cq_entries_for(19_968), 65_536);
        assert!(cq_entries_for(19_968) >= 2 * 19_968);
        assert_eq!(cq_entries_for(100), CQ_ENTRIES_MIN);
        assert_eq!(cq_entries_for(u32::MAX), CQ_ENTRIES_MAX);
        for conns in [1u32, 8_000, 8_193, 32_768] {
            let cq = cq_entries_for(conns);
            assert!(cq.is_power_of_two() && cq >= 2 * conns, "{conns}: {cq}");
        }
        // The kernel takes the largest size we ask for.
        let (ring, _) = build_ring(SQ_ENTRIES, cq_entries_for(65_504)).unwrap();
        assert_eq!(ring.params().cq_entries(), CQ_ENTRIES_MAX);
        build_secondary_ring(SQ_ENTRIES, CQ_ENTRIES_MAX).unwrap();
    }

    /// A CQ far too small for what completes: the kernel keeps the
    /// overflow (NODROP) and entering again without waiting, as the
    /// worker's loop does while `cq_overflow()` is set, hands every
    /// completion over, none lost and none twice.
    #[test]
    fn an_overflowing_cq_loses_no_completion() {
        let (mut ring, mode) = build_ring(4, 8).unwrap();
        assert_eq!(mode, RingMode::Deferred);
        assert!(ring.params().is_feature_nodrop());
        const OPS: u64 = 200;
        for i in 0..OPS {
            // SAFETY: a nop points at no memory.
            while unsafe {
                ring.submission()
                    .push(&opcode::Nop::new().build().user_data(i))
            }
            .is_err()
            {
                ring.submit().unwrap();
            }
        }
        ring.submit().unwrap();
        let mut seen = vec![0u32; OPS as usize];
        let mut overflowed = false;
        for _ in 0..1_000 {
            let n: Vec<u64> = ring.completion().map(|c| c.user_data()).collect();
            for ud in n {
                seen[ud as usize] += 1;
            }
            let held = ring.submission().cq_overflow();
            overflowed |= held;
            if seen.iter().all(|&n| n == 1) && !held {
                break;
            }
            submit_and_reap(&mut ring, 0).unwrap();
        }
        assert!(overflowed, "the test did not overflow the CQ");
        assert!(seen.iter().all(|&n| n == 1), "lost or doubled: {seen:?}");
    }
}
