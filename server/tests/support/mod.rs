//! Shared by the integration tests: start the real `stentor` binary on a
//! kernel-chosen loopback port, and find outside programs the tests drive.
#![allow(dead_code)] // each test binary uses a different subset

pub mod client;
pub mod redis;
mod require;

#[allow(unused_imports)] // each test binary uses a different subset
pub use require::{require, require_program};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for the server to say where it listens.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Read and write timeout of the sockets [`Server::connect`] opens.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `stentor` child, killed (by its own PID) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The startup line, for tests that read the capacity figures in it.
    pub listening: String,
    /// The lines before it (e.g. what was loaded at startup).
    pub startup: Vec<String>,
    /// Every stderr line after the startup line, for tests that read logs.
    pub log: mpsc::Receiver<String>,
}

impl Server {
    /// Start with `--listen 127.0.0.1:0` plus `args`; wait for the startup
    /// line carrying `addr=127.0.0.1:PORT`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", args)
    }

    /// Start with `--listen LISTEN` plus `args` (for a test that needs an
    /// address other than loopback); wait for the startup line carrying
    /// `addr=`. The lines before it go into the panic message if it never comes.
    pub fn start_on(listen: &str, args: &[&str]) -> Server {
        Server::start_with_env(listen, args, &[])
    }

    /// As [`Server::start_on`], with extra environment variables (the
    /// server's test hooks, e.g. `STENTOR_FAULT_SQ_FULL_EVERY`).
    pub fn start_with_env(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stentor"))
            .args(["--listen", listen])
            .args(args)
            .envs(env.iter().copied())
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
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listen_addr_in(&line) {
                        return Server {
                            child,
                            addr,
                            listening: line,
                            startup: said,
                            log: rx,
                        };
                    }
                    said.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "stentor --listen {listen} {args:?} did not report its address within \
                         {STARTUP_TIMEOUT:?} (exit: {status:?}); it said:\n{}",
                        said.join("\n")
                    );
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A client socket with read and write timeouts, so no test hangs.
    pub fn connect(&self) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        s
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signals our own child by its PID.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Log lines written since startup (waits up to `settle` for more).
    pub fn log_lines(&self, settle: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.log.recv_timeout(settle) {
            lines.push(line);
        }
        lines
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `addr=127.0.0.1:PORT` (logfmt) or `"addr":"127.0.0.1:PORT"` (JSON) in
/// a startup log line.
fn listen_addr_in(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    if let Some(rest) = line.split("\"addr\":\"").nth(1) {
        return rest.split('"').next().and_then(|a| a.parse().ok());
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
}

/// A blocking TCP connection to `to` from the loopback address `from`
/// (127.0.0.x): per-IP limits and tests with more connections than one
/// source address has ports need several client addresses.
pub fn connect_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain syscalls on a socket we own; the OwnedFd inside the
    // TcpStream closes it on every path after creation.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let local = sin(from, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sin(*to.ip(), to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Resident memory of a process (`VmRSS` in /proc/PID/status), in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One request on a fresh connection with `Connection: close`; the whole
/// answer (head and body) as text, read until the server closes.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /metrics` as text (the body only).
pub fn scrape(addr: SocketAddr) -> String {
    let answer = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Read a stream's response head one byte at a time, so no event bytes after
/// it are consumed, and check it is a 200. Returns the head's bytes.
pub fn read_stream_head(sock: &mut impl std::io::Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            sock.read(&mut byte).expect("read head"),
            1,
            "closed in the head"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 "), "{head:?}");
    head
}

/// Shrink a client socket's receive buffer so the server sees a client that
/// falls behind. Set it before the request: the kernel sizes the window then.
pub fn shrink_rcvbuf(sock: &std::net::TcpStream, bytes: i32) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    // SAFETY: setsockopt on our own socket with a live i32 of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt SO_RCVBUF: {}",
        std::io::Error::last_os_error()
    );
}

/// The value of the sample `name` (with its labels, e.g.
/// `stentor_refusals_total{limit="forbidden"}`) in Prometheus text; 0 when
/// the sample is absent (a labelled counter appears once it moves).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The status code of an HTTP answer's first line (0 when there is none).
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A real nginx reverse proxy in front of a server, the way operators run
/// one: it adds `X-Forwarded-For` / `X-Real-IP` for the client it serves.
/// Started on a free loopback port in its own temporary prefix, stopped by
/// its PID when dropped.
pub struct Nginx {
    pub child: Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Nginx {
    pub fn start_proxy(upstream: SocketAddr) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("stentor-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://{upstream};\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Real-IP $remote_addr;\n\
             }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, addr, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signals our own child by its PID.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `server/tests/jwt/mint.py`: tokens minted by an independent library
/// (PyJWT) for the authorization tests.
pub fn mint_py() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt/mint.py")
}

/// Whether python3 with PyJWT and cryptography is there (else skip, or
/// fail under CI).
pub fn jwt_python_ready() -> bool {
    if !require_program("python3", "run .ci/install-deps") {
        return false;
    }
    let imports = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(
        "python3 modules PyJWT and cryptography",
        imports,
        "pip install -r server/tests/jwt/requirements.txt, or run .ci/install-deps",
    )
}
