//! Outside programs and services a test needs: under CI (`CI` set) a
//! missing one fails the test, since `.ci/install-deps` installs it;
//! elsewhere the test is skipped with a message that says what to install.
//! Shared with the loadgen's tests (`loadgen/tests/support` includes this
//! file).

use std::process::{Command, Stdio};

/// Whether `program` is on PATH.
pub fn require_program(program: &str, install_hint: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    require(program, found, install_hint)
}

/// Whether something a test needs (`what`) is `present`.
pub fn require(what: &str, present: bool, install_hint: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required under CI but is not installed ({install_hint})");
    }
    eprintln!("SKIPPED: {what} not found; install it to run this test ({install_hint})");
    false
}
