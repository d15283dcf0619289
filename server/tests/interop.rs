//! Real clients against the real binary: `curl -N`, Python (httpx +
//! httpx-sse), Node's `eventsource` (a WHATWG EventSource) and headless
//! Chromium (Debian's, driven by playwright-core) opening the live page.
//!
//! Each test starts `stentor` on a kernel-picked loopback port, runs one
//! outside client from `tests/interop/` against it, and requires it to exit
//! 0 within a deadline (killed by PID past it). A client that is not
//! installed skips its test with a message, unless `CI` is set: then it
//! fails, so CI never passes by skipping (`.ci/install-deps` installs them
//! all). The shared cases (`tests/interop/cases.json`) hold data with CR,
//! CRLF, leading spaces, empty lines, `: `-looking lines and non-ASCII.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::Server;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A client script's whole run (it bounds each of its own waits tighter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Retry and heartbeat intervals every test server runs with: reconnects
/// come quickly, and heartbeat comments interleave with the events, so
/// every parser also has to skip them.
const RETRY_MS: &str = "300";
const HEARTBEAT_MS: &str = "200";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Start `stentor` (see `support::Server`) with the flags every interop
/// test runs with, plus `extra`.
fn start(extra: &[&str]) -> Server {
    let args: Vec<&str> = [
        "--workers",
        "2",
        "--retry-ms",
        RETRY_MS,
        "--heartbeat-ms",
        HEARTBEAT_MS,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    Server::start(&args)
}

/// Whether a client is there; without it the test skips, or fails under CI.
fn available(what: &str, present: bool) -> bool {
    support::require(what, present, "run .ci/install-deps")
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn have_python_clients() -> bool {
    available(
        "python3 with httpx and httpx-sse (tests/interop/requirements.txt)",
        runs("python3", &["-c", "import httpx, httpx_sse"]),
    )
}

fn have_node_module(module: &str) -> bool {
    available(
        &format!("node with the npm package {module} (npm ci in tests/interop)"),
        runs("node", &["--version"])
            && interop_dir()
                .join("node_modules")
                .join(module)
                .join("package.json")
                .is_file(),
    )
}

fn have_chromium() -> bool {
    let chromium = std::env::var("STENTOR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    have_node_module("playwright-core")
        && available(
            &format!("chromium at {chromium} (Debian package chromium)"),
            Path::new(&chromium).is_file(),
        )
        && have_python3()
}

/// python3 runs `cutproxy.py`, which the resuming clients connect through.
fn have_python3() -> bool {
    available("python3", runs("python3", &["--version"]))
}

/// Run a client to its end within `CLIENT_TIMEOUT`; panic with its output
/// unless it exits 0. Returns its stdout.
fn run_client(program: &str, args: &[&str]) -> String {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let out = drain(child.stdout.take().expect("stdout piped"));
    let err = drain(child.stderr.take().expect("stderr piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for client") {
            break Some(status);
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => {
            eprintln!("{}{} ({:.1} s)", out, err, started.elapsed().as_secs_f64());
            out
        }
        Some(s) => panic!("{program} {args:?} failed ({s}):\n{out}{err}"),
        None => panic!("{program} {args:?} ran past {CLIENT_TIMEOUT:?}:\n{out}{err}"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// POST one JSON event; returns the id the server assigned.
fn publish(server: &Server, json: &str) -> u64 {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(
        s,
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .expect("write publish");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read publish answer");
    assert!(answer.starts_with("HTTP/1.1 200 "), "publish: {answer}");
    // {"id":N,...}: the digits after `"id":` (a quoted id reads the same).
    answer
        .split_once("\"id\":")
        .map(|(_, rest)| {
            rest.trim_start_matches('"')
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no id in {answer}"))
}

#[test]
fn curl_n_receives_events_as_they_are_published() {
    if !available("curl", runs("curl", &["--version"])) {
        return;
    }
    let server = start(&[]);
    let mut curl = Command::new("curl")
        .args(["-N", "-s", "--max-time", "20"])
        .arg(format!("{}/events?topic=curl", server.url("")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start curl");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stdout = curl.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |want: &str| {
        let deadline = Instant::now() + IO_TIMEOUT;
        while !String::from_utf8_lossy(&seen).contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => seen.extend_from_slice(&bytes),
                Err(_) => panic!(
                    "curl did not print {want:?}; it printed {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    };
    wait_for(&format!(": connected\n\nretry: {RETRY_MS}\n\n"));
    // curl -N prints each frame as it arrives (no buffering): the second
    // event is published only after the first one was seen.
    let first = publish(&server, r#"{"topic":"curl","data":"ping"}"#);
    wait_for(&format!("id: {first}\ndata: ping\n\n"));
    let second = publish(
        &server,
        r#"{"topic":"curl","event":"order","data":"Order #123\r\nshipped"}"#,
    );
    wait_for(&format!(
        "event: order\nid: {second}\ndata: Order #123\ndata: shipped\n\n"
    ));
    assert!(second > first, "ids increase: {first} then {second}");
    let _ = curl.kill();
    let _ = curl.wait();
}

#[test]
fn python_httpx_sse_receives_every_case_exactly() {
    if !have_python_clients() {
        return;
    }
    let server = start(&[]);
    let base = server.url("");
    run_client("python3", &["python_client.py", &base, "python", RETRY_MS]);
}

#[test]
fn node_eventsource_receives_every_case_exactly() {
    if !have_node_module("eventsource") {
        return;
    }
    let server = start(&[]);
    let port = server.addr.port().to_string();
    run_client("node", &["node_client.mjs", "cases", &port, "node"]);
}

/// Needs history and resume in the data plane (issue 5).
#[test]
fn node_eventsource_resumes_with_last_event_id_and_gets_missed_notice() {
    if !have_node_module("eventsource") || !have_python3() {
        return;
    }
    let server = start(&[]);
    let port = server.addr.port().to_string();
    run_client("node", &["node_client.mjs", "resume", &port, "noderesume"]);
}

/// Needs `GET /` to serve `src/page/index.html` (issue 5).
#[test]
fn chromium_live_page_receives_published_events_exactly() {
    if !have_chromium() {
        return;
    }
    let server = start(&[]);
    let port = server.addr.port().to_string();
    let mut args = vec!["browser.mjs", "live", &port, "page"];
    // Set STENTOR_INTEROP_SCREENSHOT=/tmp/page.png to look at the page.
    let shot = std::env::var("STENTOR_INTEROP_SCREENSHOT").unwrap_or_default();
    if !shot.is_empty() {
        args.extend(["--screenshot", &shot]);
    }
    run_client("node", &args);
}

/// Needs `GET /` and history with Last-Event-ID resume (issue 5).
#[test]
fn chromium_reconnects_by_itself_and_gets_exactly_the_missed_events() {
    if !have_chromium() {
        return;
    }
    let server = start(&[]);
    let port = server.addr.port().to_string();
    run_client("node", &["browser.mjs", "resume", &port, "pageresume"]);
}

/// The API contract (docs/reference/api.md) from outside, one server per flag set.
fn api_contract(mode: &str, flags: &[&str]) {
    if !have_python_clients() {
        return;
    }
    let server = start(flags);
    let base = server.url("");
    run_client("python3", &["api_contract.py", mode, &base, RETRY_MS]);
}

/// Needs issue 5's publish answers, errors, `GET /`, resume and notices.
#[test]
fn api_contract_publish_stream_resume_and_errors() {
    api_contract("basic", &[]);
}

/// Needs history eviction and the `stentor.missed` notice (issue 5).
#[test]
fn api_contract_evicted_resume_point() {
    api_contract("history", &["--history-events-max", "2"]);
}

/// Needs `--publish-token` and `--subscribe-token` (issue 5).
#[test]
fn api_contract_tokens() {
    api_contract(
        "auth",
        &[
            "--publish-token",
            "pub-s3cret-0123456789",
            "--subscribe-token",
            "sub-s3cret-0123456789",
        ],
    );
}

/// Needs `--cors-origin` (issue 5).
#[test]
fn api_contract_cors() {
    api_contract("cors", &["--cors-origin", "https://app.example"]);
}

/// Whether python3 has PyJWT and cryptography, to mint the tokens.
fn have_pyjwt() -> bool {
    available(
        "python3 with PyJWT and cryptography (tests/jwt/requirements.txt)",
        runs("python3", &["-c", "import jwt, cryptography"]),
    )
}

/// Issue 14 in a browser: a page with its token in the
/// `stentorAuthorization` cookie gets its own private events and not
/// another user's; its pattern stream gets exactly the matching events;
/// presence follows its streams; a key rotation (file replaced, SIGHUP)
/// refuses the old tokens while the page's open stream keeps receiving.
#[test]
fn chromium_cookie_token_private_events_patterns_presence_and_key_rotation() {
    if !have_chromium() || !have_pyjwt() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("interop-authz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mint_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt/mint.py");
    let ok = Command::new("python3")
        .arg(&mint_py)
        .arg("keygen")
        .arg(&dir)
        .status()
        .expect("mint.py keygen");
    assert!(ok.success(), "mint.py keygen");
    let live = dir.join("live.pub");
    std::fs::copy(dir.join("p256.pub"), &live).expect("copy the live key");
    let es = |key: &str, mercure: serde_json::Value| {
        serde_json::json!({"alg": "ES256", "key": dir.join(key).to_string_lossy(), "exp": 3600,
                           "claims": {"mercure": mercure}})
    };
    let specs = serde_json::json!([
        es("p256.key", serde_json::json!({"publish": ["*"]})),
        es(
            "p256.key",
            serde_json::json!({"subscribe": ["users/7/*", "orders/*"], "payload": {"user": 7}})
        ),
        es("p256-other.key", serde_json::json!({"publish": ["*"]})),
    ]);
    let mut child = Command::new("python3")
        .arg(&mint_py)
        .arg("batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("mint.py batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(specs.to_string().as_bytes())
        .expect("write specs");
    let out = child.wait_with_output().expect("mint.py output");
    assert!(out.status.success(), "mint.py batch");
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).expect("tokens");
    let admin = "interop-admin-token-0123456789";
    let config = serde_json::json!({
        "tokens": {"publisher": tokens[0], "user7": tokens[1], "publisher2": tokens[2]},
        "live_key": live.to_string_lossy(),
        "next_key": dir.join("p256-other.pub").to_string_lossy(),
        "admin": admin,
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let key_flag = format!("@{}", live.display());
    let server = start(&["--jwt-key", &key_flag, "--admin-token", admin]);
    let port = server.addr.port().to_string();
    let pid = server.pid().to_string();
    run_client(
        "node",
        &["authz.mjs", &port, &pid, &config_path.to_string_lossy()],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
