//! Log lines are read back by real parsers: every line the binary writes
//! (startup, a refused request, shutdown) through Python's `json.loads` or
//! the `logfmtkv` logfmt codec in strict mode (go-logfmt's rules), and a
//! table of hostile values (spaces, quotes, backslashes, newlines, control
//! characters, line separators, replaced non-UTF-8 bytes) encoded by the
//! library comes back exactly.

mod support;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use stentor::log::{Format, Line};

fn python_has_logfmtkv() -> bool {
    support::require_program("python3", "apt-get install python3")
        && support::require(
            "python module logfmtkv",
            Command::new("python3")
                .args(["-c", "import logfmtkv"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            "pip install logfmtkv (.ci/install-deps does)",
        )
}

/// Parse `lines` with python3 in `format`, returning each line as a JSON
/// object of strings (as the parser saw it), or the parser's error.
fn parse_with_python(format: Format, lines: &[String]) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys
import logfmtkv
fmt = sys.argv[1]
out = []
with open(sys.argv[2], encoding="utf-8", newline="") as f:
    text = f.read()
assert text.endswith("\n"), "last line unterminated"
for line in text[:-1].split("\n"):
    if fmt == "json":
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        assert isinstance(obj["ts"], float), line
        obj = {k: (v if isinstance(v, str) else repr(v)) for k, v in obj.items()}
    else:
        pairs = logfmtkv.parse_pairs(line, strict=True)
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), line
        obj = {k: ("" if v is True else v) for k, v in pairs}
    out.append(obj)
print(json.dumps(out))
"#;
    let dir = std::env::temp_dir().join(format!("stentor-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Tests run in parallel: one file per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{format:?}-{n}.log"));
    let mut f = std::fs::File::create(&path).expect("create");
    for l in lines {
        f.write_all(l.as_bytes()).expect("write");
        f.write_all(b"\n").expect("write");
    }
    drop(f);
    let fmt = if format == Format::Json {
        "json"
    } else {
        "logfmt"
    };
    let out = Command::new("python3")
        .args(["-c", script, fmt, path.to_str().expect("utf-8 path")])
        .output()
        .expect("run python3");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "python3 could not parse the {fmt} lines: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lines.join("\n")
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("parser output")
}

#[test]
fn every_line_of_the_binary_parses_in_both_formats() {
    if !python_has_logfmtkv() {
        return;
    }
    for (format, flag) in [(Format::Logfmt, "logfmt"), (Format::Json, "json")] {
        let mut server = support::Server::start(&[
            "--log-format",
            flag,
            "--log-level",
            "info,stentor::worker=debug",
            "--workers",
            "1",
        ]);
        // A refused request (404) logs a warning line.
        let answer = support::exchange(
            server.addr,
            b"GET /no-such-path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(server.terminate(Duration::from_secs(10)).is_some());
        let mut lines = vec![server.listening.clone()];
        lines.extend(server.log_lines(Duration::from_millis(300)));
        let parsed = parse_with_python(format, &lines);
        assert_eq!(parsed.len(), lines.len());
        let msgs: Vec<&str> = parsed.iter().filter_map(|o| o["msg"].as_str()).collect();
        assert_eq!(msgs.len(), parsed.len(), "a line without msg: {lines:?}");
        for want in [
            "worker stopped",
            "listening",
            "limit refused requests",
            "shutting down",
            "stopped",
        ] {
            assert!(
                msgs.contains(&want),
                "{flag}: no {want:?} line in {lines:?}"
            );
        }
        let refused = parsed
            .iter()
            .find(|o| o["msg"] == "limit refused requests")
            .expect("refusal line");
        assert_eq!(refused["level"], "warn");
        assert_eq!(refused["status"], "404");
        let listening = parsed
            .iter()
            .find(|o| o["msg"] == "listening")
            .expect("startup");
        assert_eq!(listening["addr"], server.addr.to_string());
        assert!(
            listening["reason"]
                .as_str()
                .is_some_and(|r| r.contains("RLIMIT_NOFILE") || r.contains("max-connections")),
            "{listening}"
        );
    }
}

#[test]
fn hostile_values_come_back_exactly() {
    if !python_has_logfmtkv() {
        return;
    }
    let non_utf8 = stentor::log::lossy(b"/events?topic=\xff\xfe\xc3");
    let values: Vec<String> = vec![
        "plain".into(),
        "".into(),
        "null".into(),
        "two words".into(),
        "k=v".into(),
        "say \"hi\"".into(),
        "C:\\path\\".into(),
        "\\".into(),
        "\"".into(),
        "ends with backslash\\".into(),
        "line\nbreak\r\ncrlf".into(),
        "tab\there".into(),
        "nul\u{0}bell\u{7}esc\u{1b}[31mdel\u{7f}".into(),
        "nel\u{85}ls\u{2028}ps\u{2029}".into(),
        "é € 😀 日本".into(),
        "=\"= \\\"".into(),
        non_utf8.into_owned(),
    ];
    for format in [Format::Logfmt, Format::Json] {
        let lines: Vec<String> = values
            .iter()
            .map(|v| {
                let mut l = Line::new(format, Duration::from_millis(1_700_000_000_001), "info");
                l.field("message", v);
                l.field("v", v);
                let text = l.finish();
                assert_eq!(text.matches('\n').count(), 1, "{text:?}");
                text.trim_end_matches('\n').to_string()
            })
            .collect();
        let parsed = parse_with_python(format, &lines);
        for (value, obj) in values.iter().zip(&parsed) {
            assert_eq!(
                obj["v"].as_str(),
                Some(value.as_str()),
                "{format:?} {value:?} -> {obj}"
            );
            assert_eq!(
                obj["msg"].as_str(),
                Some(value.as_str()),
                "{format:?} {value:?} -> {obj}"
            );
            assert_eq!(obj["level"], "info");
        }
    }
}

#[test]
fn a_bad_log_filter_exits_2_naming_the_flag() {
    for bad in ["warning", "stentor::worker", "info,x=loud"] {
        let out = Command::new(env!("CARGO_BIN_EXE_stentor"))
            .args(["--log-level", bad])
            .env_remove("RUST_LOG")
            .output()
            .expect("run stentor");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--log-level"), "{stderr}");
    }
}
