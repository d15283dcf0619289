//! `--history-file`: the embedded broker's history kept across restarts
//! and upgrades. The format is `hub::persist`; this is the file system
//! around it: an advisory lock that orders writers, an atomic write, and a
//! load that never stops the node.
//!
//! # Order between an old and a new process (zero-downtime upgrade)
//!
//! The running process holds `PATH.lock` (`flock`, exclusive) for its
//! whole life and writes `PATH` as it exits, after its workers stopped, so
//! the file holds every event it handed out; the lock goes with the
//! process. A new process started beside it (same address, SO_REUSEPORT)
//! finds the lock held: it serves at once, and its control loop tries the
//! lock every [`crate::node`] wake-up (500 ms). Once the old process is
//! gone the new one takes the lock, reads the file and merges it under its
//! own events (the old ids are all below the new run's first id). Clients
//! the old process closed reconnect after their `retry:` (at least
//! `--retry-ms`, 3 s by default), by which time the history is in: they
//! resume with nothing missed. One that comes back sooner gets the
//! `restarted` notice, never a silent gap.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::bus::Shared;
use crate::hub::persist;

/// The history file of this process and whether it has taken it in.
pub struct HistoryFile {
    path: PathBuf,
    /// Held while this process owns the file (see the module docs).
    lock: Option<File>,
    loaded: bool,
    waiting_logged: bool,
}

impl HistoryFile {
    pub fn new(path: PathBuf) -> HistoryFile {
        HistoryFile {
            path,
            lock: None,
            loaded: false,
            waiting_logged: false,
        }
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }

    /// Take the lock if free, then load the file into `shared` once.
    /// Cheap when already loaded; never fails the node: every problem is
    /// logged and the node runs with what it has.
    pub fn try_load(&mut self, shared: &Shared) {
        if self.loaded {
            return;
        }
        if self.lock.is_none() {
            match try_lock(&self.lock_path()) {
                Ok(Some(f)) => self.lock = Some(f),
                Ok(None) => {
                    if !self.waiting_logged {
                        self.waiting_logged = true;
                        crate::info!(
                            "history file held by another process; loading it when that process exits",
                            path = self.path.display()
                        );
                    }
                    return;
                }
                Err(e) => {
                    crate::warn!(
                        "history file lock unavailable; history is not kept across restarts",
                        path = self.lock_path().display(),
                        error = e
                    );
                    self.loaded = true;
                    return;
                }
            }
        }
        self.loaded = true;
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::info!(
                    "no history file yet; starting empty",
                    path = self.path.display()
                );
                return;
            }
            Err(e) => {
                crate::warn!(
                    "history file unreadable; starting empty",
                    path = self.path.display(),
                    error = e
                );
                return;
            }
        };
        let saved = match persist::decode(&bytes, usize::from(shared.config.topic_bytes_max)) {
            Ok(s) => s,
            Err(why) => {
                crate::warn!(
                    "history file ignored; starting empty",
                    path = self.path.display(),
                    reason = why
                );
                return;
            }
        };
        let last_id = saved.last_id();
        match shared.restore_history(saved) {
            Ok((topics, events)) => crate::info!(
                "history loaded",
                path = self.path.display(),
                topics = topics,
                events = events,
                through_id = last_id
            ),
            Err(why) => {
                crate::warn!(
                    "history file ignored; starting empty",
                    path = self.path.display(),
                    reason = why
                )
            }
        }
    }

    /// Write the history atomically (a temporary file, fsync, rename,
    /// fsync of the directory) if this process owns the file.
    pub fn save(&mut self, shared: &Shared) {
        // A new process that never got the lock (the old one still runs)
        // must not overwrite what the old one will write.
        self.try_load(shared);
        if self.lock.is_none() {
            crate::warn!(
                "history file not written: another process holds it",
                path = self.path.display()
            );
            return;
        }
        let saved = shared.export_history();
        let (bytes, left_out) = persist::encode(&saved);
        if left_out > 0 {
            crate::warn!(
                "history file bound reached; the stalest topics were left out",
                topics_left_out = left_out,
                bytes_max = persist::HISTORY_FILE_BYTES_MAX
            );
        }
        match write_atomically(&self.path, &bytes) {
            Ok(()) => crate::info!(
                "history written",
                path = self.path.display(),
                bytes = bytes.len(),
                events = saved.events(),
                through_id = saved.last_id()
            ),
            Err(e) => crate::error!(
                "history file not written",
                path = self.path.display(),
                error = e
            ),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)` on `path` (created): `None` when another
/// process holds it.
fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(f));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(e)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
