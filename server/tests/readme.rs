//! The README's "Try it" commands work as written: run them with curl
//! against the real binary and compare what the subscriber prints with what
//! the README says it prints (ids may differ; they must increase).

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");

/// The fenced blocks of the README section that starts with `heading`.
fn blocks_in_section(heading: &str) -> Vec<String> {
    let section = README.split(heading).nth(1).expect("README section exists");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Shell commands of a block, with `\` continuations joined.
fn commands(block: &str) -> Vec<String> {
    block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl"))
        .map(String::from)
        .collect()
}

fn normalise_ids(text: &str) -> (String, Vec<u64>) {
    let mut ids = Vec::new();
    let lines: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("id: ") {
            Some(id) => {
                ids.push(id.trim().parse::<u64>().unwrap_or(0));
                "id: <n>".to_string()
            }
            None => l.to_string(),
        })
        .collect();
    (lines.join("\n"), ids)
}

#[test]
fn readme_curl_examples_work_as_written() {
    if !support::require_program("curl", "apt-get install curl") {
        return;
    }
    let server = support::Server::start(&[]);
    let here = server.addr.to_string();
    let blocks = blocks_in_section("## Try it");
    assert!(
        blocks.len() >= 3,
        "Try it: subscribe block, publish block, expected output block"
    );
    let subscribe = commands(&blocks[0]);
    let publish = commands(&blocks[1]);
    let expected = blocks[2].clone();
    assert_eq!(subscribe.len(), 1, "one subscribe command");
    assert!(publish.len() >= 2, "publish commands");

    let mut sub = Command::new("sh")
        .args([
            "-c",
            &format!("exec {}", subscribe[0].replace("127.0.0.1:8080", &here)),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start curl subscriber");
    let mut sub_out = sub.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sub_out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut received = Vec::new();
    let wait_for = |received: &mut Vec<u8>, needle: &str, deadline: Instant| {
        while !String::from_utf8_lossy(received).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => received.extend_from_slice(&chunk),
                Err(_) => return false,
            }
        }
        true
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(
        wait_for(&mut received, ": connected", deadline),
        "subscriber never connected"
    );

    for cmd in &publish {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("timeout 10 {}", cmd.replace("127.0.0.1:8080", &here)),
            ])
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let last_line = expected
        .trim_end()
        .lines()
        .last()
        .expect("expected output")
        .to_string();
    assert!(
        wait_for(&mut received, &last_line, deadline),
        "subscriber output: {}",
        String::from_utf8_lossy(&received)
    );
    // Give a wrongly duplicated event a moment to show up before comparing.
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(chunk) = rx.try_recv() {
        received.extend_from_slice(&chunk);
    }
    let _ = sub.kill();
    let _ = sub.wait();

    let got = String::from_utf8(received).expect("utf-8 stream");
    let (got_norm, ids) = normalise_ids(&got);
    let (want_norm, want_ids) = normalise_ids(&expected);
    assert_eq!(
        got_norm.trim_end(),
        want_norm.trim_end(),
        "README output differs; got:\n{got}"
    );
    assert_eq!(ids.len(), want_ids.len());
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase: {ids:?}"
    );
}

/// The fleet section's block, run as one shell script the way a reader
/// pastes it (its ports replaced by free ones, `stentor` from this build):
/// the subscriber on node 2 prints the event published on node 1, with the
/// id node 1 answered.
#[test]
fn readme_fleet_example_works_as_written() {
    if !support::require_program("curl", "apt-get install curl") || !support::redis::require_redis()
    {
        return;
    }
    let blocks = blocks_in_section("## A fleet of nodes");
    assert_eq!(blocks.len(), 1, "one command block");
    let dir = support::redis::TempDir::new("readme-fleet");
    let free = support::redis::free_port;
    let (redis, n1, n2) = (free(), free(), free());
    let block = blocks[0]
        .replace("127.0.0.1:6379", &format!("127.0.0.1:{redis}"))
        .replace("--port 6379", &format!("--port {redis}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{n1}"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{n2}"));
    assert!(
        !block.contains("6379") && !block.contains("808"),
        "a port the test did not replace: {block}"
    );
    // Every background job (redis-server, the nodes, the subscriber) is
    // stopped by its PID when the script ends, however it ends; `timeout`
    // bounds it.
    let script = format!(
        "trap 'exit 1' TERM INT\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{block}\nsleep 0.5\n"
    );
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_stentor"))
        .parent()
        .expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["60", "bash", "-c", &script])
        .current_dir(&dir.0)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run the README block");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert!(stdout.contains("data: hi"), "{stdout}");
    let answered = stdout
        .split("\"id\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .expect("the publish answer's id");
    assert!(
        stdout.contains(&format!("id: {answered}\ndata: hi")),
        "node 2 must send the id node 1 answered ({answered}): {stdout}"
    );
}
