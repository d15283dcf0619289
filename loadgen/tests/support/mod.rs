//! Shared by the loadgen tests that drive a real server: start the
//! workspace's `stentor` binary on a kernel-chosen loopback port, run the
//! real `stentor-loadgen` with a deadline, read its JSON report.
#![allow(dead_code)] // each test binary uses a different subset

#[path = "../../../server/tests/support/require.rs"]
mod require;

#[allow(unused_imports)] // each test binary uses a different subset
pub use require::{require, require_program};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server gets to say where it listens.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// No single loadgen run may take longer than this.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The `stentor` binary of this workspace: `$STENTOR_BIN`, or the one cargo
/// built next to this test (`cargo test --workspace` builds it; alone, run
/// `cargo build -p stentor` first). Under CI a missing binary fails the test;
/// elsewhere the test is skipped with a message.
pub fn stentor_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STENTOR_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/<test> -> target/<profile>/stentor
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("stentor");
    if bin.is_file() {
        return Some(bin);
    }
    let hint = "build it with `cargo build -p stentor` or run `cargo test --workspace`";
    if std::env::var_os("CI").is_some() {
        panic!("{} is required under CI ({hint})", bin.display());
    }
    eprintln!("SKIPPED: {} not found; {hint}", bin.display());
    None
}

/// A running `stentor`, killed by its own PID when dropped.
pub struct Stentor {
    child: Child,
    pub addr: SocketAddr,
}

impl Stentor {
    /// Start `bin --listen LISTEN ARGS` and wait for its startup line's `addr=`.
    pub fn start(bin: &PathBuf, listen: &str, args: &[&str]) -> Stentor {
        let mut child = Command::new(bin)
            .args(["--listen", listen])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stentor");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the server never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line
                        .contains("listening")
                        .then(|| {
                            line.split_whitespace()
                                .find_map(|w| w.strip_prefix("addr="))
                                .and_then(|a| a.trim_matches('"').parse().ok())
                        })
                        .flatten();
                    if let Some(addr) = addr {
                        return Stentor { child, addr };
                    }
                    said.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "stentor did not report its address; it said:\n{}",
                        said.join("\n")
                    );
                }
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Stentor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Outcome {
    pub code: i32,
    pub report: Value,
    pub stderr: String,
}

/// Run `stentor-loadgen ARGS --json TMP --quiet` with a deadline; the report is
/// `Value::Null` when none was written.
pub fn loadgen(args: &[&str]) -> Outcome {
    let json = std::env::temp_dir().join(format!(
        "loadgen-real-{}-{}.json",
        std::process::id(),
        unique()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_stentor-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stentor-loadgen");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stentor-loadgen overstayed {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_file(&json);
    Outcome {
        code: status.code().unwrap_or(-1),
        report,
        stderr,
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A count at a dotted path of the report.
pub fn n(r: &Value, path: &str) -> u64 {
    let mut v = r;
    for k in path.split('.') {
        v = match k.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[k],
        };
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path} missing or not a count in {r:#}"))
}

/// A loopback port nothing listens on right now (bound to port 0 and let
/// go), for programs that cannot report a kernel-chosen port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback port 0")
        .port()
}
