//! `--history-file` against the real binary: history kept across a
//! restart and across an upgrade (a new process on the same address while
//! the old one drains), with Last-Event-ID resuming exactly; a corrupt
//! file is logged and ignored.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{exchange, status_of, Server};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stentor-hist-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Publish one event; its id.
fn publish(addr: SocketAddr, topic: &str, data: &str) -> u64 {
    let body = format!("topic={topic}&data={data}");
    let answer = exchange(
        addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    let ids = answer.split_once("\"ids\":[").unwrap().1;
    ids.split([']', ','])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Open a stream on `topic` resuming after `last_id`; read `(id, data)` of
/// the events (and the `event:` of a notice, as data `missed:...`) for
/// `window`.
fn resume(addr: SocketAddr, topic: &str, last_id: u64, window: Duration) -> Vec<(u64, String)> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.write_all(
        format!(
            "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {last_id}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut text = Vec::new();
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let mut out = Vec::new();
    for frame in body.split("\n\n") {
        let (mut id, mut data, mut event) = (None, None, None);
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            }
        }
        match (id, data, event) {
            (Some(id), Some(d), None) => out.push((id, d)),
            (id, d, Some(e)) => {
                out.push((id.unwrap_or(0), format!("{e}:{}", d.unwrap_or_default())))
            }
            _ => {}
        }
    }
    out
}

/// The log lines up to the first containing `want` (startup lines too).
fn lines_until(server: &Server, want: &str, within: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    for l in &server.startup {
        seen.push(l.clone());
        if l.contains(want) {
            return seen;
        }
    }
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(l) = server.log.recv_timeout(Duration::from_millis(50)) {
            let done = l.contains(want);
            seen.push(l);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want:?} line in {seen:?}");
}

/// Publish, SIGTERM, restart with the file: a client resuming from the
/// first event gets exactly the two it missed, no notice, and new ids keep
/// increasing.
#[test]
fn a_restart_keeps_history_and_resume_is_exact() {
    let dir = temp_dir("restart");
    let file = dir.join("history.bin");
    let file_arg = file.to_str().unwrap();
    let mut a = Server::start(&["--workers", "1", "--history-file", file_arg]);
    let ids: Vec<u64> = ["one", "two", "three"]
        .iter()
        .map(|d| publish(a.addr, "news", d))
        .collect();
    assert!(a
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(file.exists(), "no history file written");

    let b = Server::start(&["--workers", "1", "--history-file", file_arg]);
    lines_until(&b, "history loaded", Duration::from_secs(5));
    let got = resume(b.addr, "news", ids[0], Duration::from_millis(600));
    assert_eq!(
        got,
        vec![(ids[1], "two".to_string()), (ids[2], "three".to_string())]
    );
    let next = publish(b.addr, "news", "four");
    assert!(next > ids[2], "{next} after {}", ids[2]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A damaged file is logged and ignored: the node starts, empty, and a
/// resume from before gets the `restarted` notice instead of a silent gap.
#[test]
fn a_corrupt_file_is_logged_and_the_node_starts_empty() {
    let dir = temp_dir("corrupt");
    let file = dir.join("history.bin");
    let file_arg = file.to_str().unwrap();
    let mut a = Server::start(&["--workers", "1", "--history-file", file_arg]);
    let id = publish(a.addr, "news", "one");
    publish(a.addr, "news", "two");
    assert!(a
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let mut b = Server::start(&["--workers", "1", "--history-file", file_arg]);
    let said = lines_until(&b, "history file ignored", Duration::from_secs(5));
    assert!(said.last().unwrap().contains("checksum"), "{said:?}");
    let got = resume(b.addr, "news", id, Duration::from_millis(500));
    assert!(
        got.iter()
            .any(|(_, d)| d.starts_with("stentor.missed:") && d.contains("restarted")),
        "{got:?}"
    );
    // b holds the file until it exits (and then writes its own): stop it.
    assert!(b.terminate(Duration::from_secs(10)).is_some());
    std::fs::write(&file, b"not a history file").unwrap();
    let c = Server::start(&["--workers", "1", "--history-file", file_arg]);
    lines_until(&c, "history file ignored", Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upgrade: the new process starts on the old one's address with the
/// same file while the old one runs, serves at once, and takes in the old
/// one's history when it exits; a client of the old process resumes on the
/// new one with nothing missed: the events it had not read, those
/// published on the old process after it left, and those the new one took.
#[test]
fn an_upgrade_on_the_same_address_loses_nothing() {
    let dir = temp_dir("upgrade");
    let file = dir.join("history.bin");
    let file_arg = file.to_str().unwrap();
    let mut old = Server::start(&["--workers", "1", "--history-file", file_arg]);
    let listen = old.addr.to_string();
    let seen = publish(old.addr, "news", "seen");
    let missed = publish(old.addr, "news", "missed-on-old");

    let new = Server::start_on(&listen, &["--workers", "1", "--history-file", file_arg]);
    lines_until(&new, "held by another process", Duration::from_secs(5));
    assert_eq!(
        status_of(&exchange(
            new.addr,
            b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )),
        200
    );

    // SIGTERM the old one: it stops accepting, drains, writes the file.
    assert!(old
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    lines_until(&new, "history loaded", Duration::from_secs(5));
    let on_new = publish(new.addr, "news", "published-on-new");
    assert!(on_new > missed);
    let got = resume(new.addr, "news", seen, Duration::from_millis(600));
    assert_eq!(
        got,
        vec![
            (missed, "missed-on-old".to_string()),
            (on_new, "published-on-new".to_string())
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
