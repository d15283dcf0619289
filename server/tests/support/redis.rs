//! A `redis-server` of a test's own: on a free loopback port, in a fresh
//! directory, without persistence unless asked, killed by its PID.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a started `redis-server` may take to answer PING.
pub const REDIS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `redis-server` is here (else the test is skipped, or fails under
/// `CI`).
pub fn require_redis() -> bool {
    super::require_program("redis-server", "apt-get install redis-server")
}

/// A port nothing listens on right now: bound by the kernel, then released.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("stentor-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `redis-server` child.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    /// Extra arguments it was started with (kept for [`Redis::restart`]).
    args: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    /// No persistence: what a test needs unless it tests persistence.
    pub fn start(dir: &Path) -> Redis {
        Redis::start_with(dir, &["--appendonly", "no"])
    }

    /// With `args` after the port, bind, dir and `--save ''`.
    pub fn start_with(dir: &Path, args: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        // The port may be taken between picking and binding: pick another.
        for _ in 0..5 {
            match r.try_spawn() {
                Ok(()) => return r,
                Err(_) => r.port = free_port(),
            }
        }
        r.spawn();
        r
    }

    /// On a given port (one a test already pointed a client at).
    pub fn start_on(dir: &Path, port: u16, args: &[&str]) -> Redis {
        let mut r = Redis {
            port,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("redis-server on port {}: {why}", self.port);
        }
    }

    /// Starts it and waits for it to answer; `Err` when it exited (the port
    /// was taken) or never answered.
    fn try_spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            &dir,
        ]);
        cmd.args(&self.args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start redis-server");
        let pid = format!("process_id:{}", child.id());
        let deadline = Instant::now() + REDIS_STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            // Another test may have taken the port since it was picked (or
            // while this one was down for a restart): the server that
            // answers must be ours, and ours must still be running.
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited at start ({status}): port taken?"));
            }
            if self.ping() && self.command("INFO server\r\n").contains(&pid) {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("did not answer PING".to_string())
    }

    /// Whether it answers PING (and is done loading its data).
    pub fn ping(&self) -> bool {
        self.command("PING\r\n").starts_with("+PONG")
    }

    /// One inline command, its raw reply (empty on any failure).
    pub fn command(&self, inline: &str) -> String {
        let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(inline.as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// SIGKILL by PID and reap: whatever it had not written is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory with the same
    /// arguments (an AOF in the directory is loaded).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port with an empty directory: Redis lost
    /// its data.
    pub fn restart_empty(&mut self, dir: &Path) {
        self.kill();
        self.dir = dir.to_path_buf();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
