//! The binary's command line: bad values are refused with exit code 2 and one
//! line naming the flag; `--help` teaches (groups, units, env vars).

use std::process::Command;

mod support;

fn stentor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stentor"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run stentor binary")
}

#[test]
fn bad_values_exit_2_with_one_line_naming_flag_and_range() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--workers", "999"], "--workers", "0..=256"),
        (&["--heartbeat-ms", "5"], "--heartbeat-ms", "100..=3600000"),
        (&["--queue-bytes-max", "abc"], "--queue-bytes-max", ""),
        (&["--listen", "localhost"], "--listen", ""),
        (&["--cors-origin", "example.com"], "--cors-origin", ""),
        (
            &["--publish-token", "short"],
            "--publish-token",
            "16..=4096",
        ),
        (&["--no-such-flag"], "--no-such-flag", ""),
        // Fleet mode keeps the history in Redis: no node-local file.
        (
            &[
                "--broker",
                "redis://127.0.0.1:6379/",
                "--history-file",
                "/tmp/stentor-history.bin",
            ],
            "--history-file",
            "--broker redis://",
        ),
    ];
    for (args, flag, range) in cases {
        let out = stentor(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line expected, got {stderr:?}"
        );
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(stderr.contains(range), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn env_vars_are_read_and_validated() {
    let out = Command::new(env!("CARGO_BIN_EXE_stentor"))
        .env("STENTOR_WORKERS", "100000")
        .output()
        .expect("run stentor binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--workers"), "{stderr}");
}

#[test]
fn help_groups_flags_and_names_env_vars() {
    let out = stentor(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Network:",
        "Requests:",
        "Streams:",
        "Security:",
        "Operations:",
        "STENTOR_LISTEN",
        "--heartbeat-ms",
        "--queue-bytes-max",
        "[default: 0.0.0.0:8080]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    assert!(
        !help.contains("STENTOR_PUBLISH_TOKEN="),
        "token values must not be echoed"
    );
}

/// A config file in the temp directory, removed when dropped.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("stentor-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        ConfigFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn config_check_prints_the_effective_config_flag_over_env_over_file() {
    let f = ConfigFile::new(
        "precedence.toml",
        "heartbeat-ms = 1111\nretry_ms = 2222\nidle-timeout-ms = 3333\n\
         subscribe-token = \"sub-token-0123456789-do-not-print\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stentor"))
        .args(["--idle-timeout-ms", "5555", "config", "check", f.path()])
        .env("STENTOR_RETRY_MS", "4444")
        .env("STENTOR_IDLE_TIMEOUT_MS", "6666")
        .env_remove("RUST_LOG")
        .output()
        .expect("run stentor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for line in [
        "heartbeat-ms = 1111  # file",
        "retry-ms = 4444  # env",
        "idle-timeout-ms = 5555  # flag",
        "queue-bytes-max = 262144  # default",
        "subscribe-token = \"<redacted>\"  # file",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("do-not-print"), "{stdout}");
}

#[test]
fn config_check_refuses_a_bad_file_with_exit_2_naming_key_and_file() {
    for (name, text, key) in [
        ("unknown.toml", "max-conections = 5\n", "max-conections"),
        ("range.toml", "heartbeat-ms = 5\n", "heartbeat-ms"),
        ("listen.toml", "listen = \"localhost\"\n", "listen"),
        (
            "fleet.toml",
            "broker = \"redis://127.0.0.1:6379/\"\nhistory-file = \"/tmp/stentor-history.bin\"\n",
            "history-file",
        ),
    ] {
        let f = ConfigFile::new(name, text);
        for args in [
            vec!["config", "check", f.path()],
            vec!["--config", f.path()],
        ] {
            let out = stentor(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(stderr.contains(key) && stderr.contains(name), "{stderr}");
        }
    }
}

#[test]
fn the_server_runs_with_the_file_and_the_shipped_default_config() {
    let f = ConfigFile::new("serve.toml", "max-connections = 777\nworkers = 1\n");
    let server = support::Server::start(&["--config", f.path()]);
    assert!(
        server.listening.contains("connections_max=777"),
        "{}",
        server.listening
    );
    drop(server);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/stentor.toml");
    let out = stentor(&["config", "check", shipped]);
    assert_eq!(out.status.code(), Some(0));
    let server = support::Server::start(&["--config", shipped]);
    assert!(
        server.listening.contains("connections_max=120000"),
        "{}",
        server.listening
    );
}

#[test]
fn version_names_the_git_revision() {
    let out = stentor(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let rev = text
        .trim()
        .strip_prefix(concat!("stentor ", env!("CARGO_PKG_VERSION"), " (git "))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {text}"));
    assert!(
        rev == "unknown" || (rev.len() >= 7 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
}

#[test]
fn man_page_and_completions_come_from_the_flags() {
    let man = stentor(&["generate", "man"]);
    assert_eq!(man.status.code(), Some(0));
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH stentor 1"),
        "{man}"
    );
    for flag in ["max\\-connections", "STENTOR_LISTEN", "config"] {
        assert!(man.contains(flag), "man page lacks {flag}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = stentor(&["generate", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("max-connections"),
            "{shell} completion lacks a flag"
        );
    }
    // Hidden: packaging, not operators, uses it.
    let help = String::from_utf8_lossy(&stentor(&["--help"]).stdout).to_string();
    assert!(!help.contains("generate"), "{help}");
}
