//! Minimal structured logging to stderr: one line per notable event,
//! `ts=<unix seconds.ms> level=<level> msg="..." key=value ...`, so a
//! journal can be grepped without a log shipper.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            "trace" => Some(Level::Trace),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Set the level from the flag, letting `RUST_LOG` (a plain level name, e.g.
/// `RUST_LOG=debug`) override it as operators expect from Rust programs.
pub fn init(flag_level: &str) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| Level::parse(&v));
    let level = from_env
        .or_else(|| Level::parse(flag_level))
        .unwrap_or(Level::Info);
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Write one line. Use the macros: `info!("listening", addr = addr)`.
pub fn write(level: Level, msg: &str, fields: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "ts={}.{:03} level={} msg={:?}{}\n",
        now.as_secs(),
        now.subsec_millis(),
        level.name(),
        msg,
        fields
    );
    // One write per line so lines from several workers do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `log!(Level::Info, "message", key = value, ...)`; values print with Display.
#[macro_export]
macro_rules! log {
    ($level:expr, $msg:expr $(, $key:ident = $val:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, $msg, format_args!(concat!($(" ", stringify!($key), "={}"),*) $(, $val)*));
        }
    };
}
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log!($crate::log::Level::Error, $($t)*) }; }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log!($crate::log::Level::Warn, $($t)*) }; }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log!($crate::log::Level::Info, $($t)*) }; }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log!($crate::log::Level::Debug, $($t)*) }; }
