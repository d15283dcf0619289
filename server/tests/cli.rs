//! The binary's command line: bad values are refused with exit code 2 and one
//! line naming the flag; `--help` teaches (groups, units, env vars).

use std::process::Command;

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
