//! Structured logs on stderr, one line per notable event, in logfmt (the
//! default) or JSON (`--log-format`):
//!
//! ```text
//! ts=1795901689.136 level=warn msg="limit refused requests" limit=per_ip status=429 count=312
//! {"ts":1795901689.136,"level":"warn","msg":"limit refused requests","limit":"per_ip","status":"429","count":"312"}
//! ```
//!
//! Call sites use the macros, `crate::info!("listening", addr = addr)`;
//! values print with `Display`. Underneath is `tracing`: the macros are
//! `tracing` events (target = the calling module, so a level filter can say
//! `info,stentor::worker=debug`), a `Targets` filter behind a reload handle
//! (the level can change while running) and one layer here that writes each
//! event as one line. The encoders are ours because the quoting is the point:
//! a value with spaces, quotes, backslashes, newlines or control characters
//! must come back intact from a logfmt or JSON parser, and never split a line.
//!
//! The access log ([`access`]) is off by default (`--access-log`) and
//! rate-limited by a token bucket so an attack cannot turn it into a disk or
//! journal flood; what it leaves out is counted and summarised.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::{reload, Registry};

#[doc(hidden)]
pub use tracing as __tracing;

/// The line format, `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Format {
    /// `key=value` pairs, quoted where needed (go-logfmt's rules).
    Logfmt = 0,
    /// One JSON object per line; every field value is a string.
    Json = 1,
}

static FORMAT: AtomicU8 = AtomicU8::new(Format::Logfmt as u8);

type FilterHandle = reload::Handle<Targets, Registry>;
static FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// Check a level filter: comma-separated directives, each a level (`info`)
/// or `target=level` (`stentor::worker=debug`), levels being `off`, `error`,
/// `warn`, `info`, `debug`, `trace`. Refuses what `tracing` would read as
/// something else (a bare word is a *target* to it: `--log-level warning`
/// would silence everything but a module named `warning`).
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let mut any = false;
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        any = true;
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "'{directive}': expected a level (off, error, warn, info, debug, trace) or TARGET=LEVEL"
            ));
        }
        if let Some(t) = target {
            let ok = !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
            if !ok {
                return Err(format!(
                    "'{directive}': a target is a module path like stentor::worker"
                ));
            }
        }
    }
    if !any {
        return Err("empty filter: expected a level like info".into());
    }
    let cleaned: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    cleaned
        .join(",")
        .to_ascii_lowercase()
        .parse::<Targets>()
        .map_err(|e| e.to_string())
}

/// Messages to log as warnings once logging is set up (things noticed while
/// reading the configuration, before there was a logger).
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keep a warning for [`init`] to log.
pub fn defer_warning(message: String) {
    PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(message);
}

/// Install the logger: `filter` is the validated `--log-level` (which
/// already took `RUST_LOG` into account, see the config). Calling it again
/// (tests) only changes the filter and format.
pub fn init(filter: &str, format: Format) {
    set_format(format);
    let targets =
        parse_filter(filter).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(targets);
    } else {
        let (layer, handle) = reload::Layer::new(targets);
        let subscriber = Registry::default().with(layer).with(LineLayer {
            // One write per line so lines from several workers do not interleave.
            write: |line: &[u8]| {
                let _ = std::io::stderr().lock().write_all(line);
            },
        });
        if tracing::subscriber::set_global_default(subscriber).is_ok() {
            let _ = FILTER.set(handle);
        }
    }
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    for message in pending {
        crate::warn!("configuration", note = message);
    }
}

/// Change the level filter of a running node (a reload).
pub fn set_filter(filter: &str) -> Result<(), String> {
    let targets = parse_filter(filter)?;
    match FILTER.get() {
        Some(handle) => handle.reload(targets).map_err(|e| e.to_string()),
        None => Err("logging is not initialised".into()),
    }
}

/// Change the line format of a running node (a reload).
pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Logfmt
    }
}

/// Writes every event that passed the filter as one line through `write`
/// (stderr; a buffer in tests).
struct LineLayer<W> {
    write: W,
}

impl<S: Subscriber, W: Fn(&[u8]) + 'static> Layer<S> for LineLayer<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = Line::new(format(), now, level_name(event.metadata().level()));
        event.record(&mut line);
        (self.write)(line.finish().as_bytes());
    }
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// One line being built: `ts`, `level`, `msg`, then the fields in call order.
pub struct Line {
    format: Format,
    out: String,
    scratch: String,
}

impl Line {
    pub fn new(format: Format, since_epoch: std::time::Duration, level: &str) -> Line {
        let mut out = String::with_capacity(256);
        let ts = format!(
            "{}.{:03}",
            since_epoch.as_secs(),
            since_epoch.subsec_millis()
        );
        match format {
            Format::Logfmt => {
                let _ = write!(out, "ts={ts} level={level}");
            }
            Format::Json => {
                let _ = write!(out, "{{\"ts\":{ts},\"level\":\"{level}\"");
            }
        }
        Line {
            format,
            out,
            scratch: String::new(),
        }
    }

    /// Append `key=value`. The message is always quoted in logfmt (lines are
    /// grepped for `msg="..."`); other values only when they need it.
    pub fn field(&mut self, key: &str, value: &str) {
        let key = if key == "message" { "msg" } else { key };
        match self.format {
            Format::Logfmt => {
                self.out.push(' ');
                self.out.push_str(key);
                self.out.push('=');
                logfmt_value(&mut self.out, value, key == "msg");
            }
            Format::Json => {
                self.out.push(',');
                json_string(&mut self.out, key);
                self.out.push(':');
                json_string(&mut self.out, value);
            }
        }
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::Json {
            self.out.push('}');
        }
        self.out.push('\n');
        self.out
    }
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` at the call site: Debug here forwards to Display.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let _ = write!(scratch, "{value:?}");
        self.field(field.name(), &scratch);
        self.scratch = scratch;
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), value);
    }
}

/// Characters that end a line for some reader: not only LF and CR but what
/// Python's `splitlines`, JavaScript and Unicode also treat as line breaks.
fn breaks_lines(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// A logfmt value by go-logfmt's rules (what Grafana Loki, Vector and the
/// `logfmt` libraries read): bare when it has no byte at or below space, no
/// `=`, `"`, DEL, U+FFFD (a replaced non-UTF-8 byte) or line break and is
/// not `null`; else quoted, with `\\ \" \n \r \t` and `\u00XX` escapes.
pub fn logfmt_value(out: &mut String, value: &str, always_quote: bool) {
    let bare = !always_quote
        && value != "null"
        && !value.chars().any(|c| {
            c <= ' '
                || c == '='
                || c == '"'
                || c == '\u{7f}'
                || c == '\u{fffd}'
                || c.is_control()
                || breaks_lines(c)
        });
    if bare {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || breaks_lines(c) || c == '\u{fffd}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON string literal (RFC 8259), also escaping DEL, C1 controls and the
/// Unicode line separators so no reader splits the line.
pub fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || breaks_lines(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bytes from the network as text for a log line: invalid UTF-8 becomes
/// U+FFFD, which both encoders escape, so the line stays valid and a reader
/// sees that bytes were replaced.
pub fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// `log!(Level::INFO, "message", key = value, ...)`; values print with Display.
#[macro_export]
macro_rules! log {
    ($level:expr, $msg:expr $(, $key:ident = $val:expr)* $(,)?) => {
        $crate::log::__tracing::event!(
            target: module_path!(),
            $level,
            { message = %$msg $(, $key = %$val)* }
        )
    };
}
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log!($crate::log::__tracing::Level::ERROR, $($t)*) }; }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log!($crate::log::__tracing::Level::WARN, $($t)*) }; }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log!($crate::log::__tracing::Level::INFO, $($t)*) }; }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log!($crate::log::__tracing::Level::DEBUG, $($t)*) }; }

/// A warning said at most once per `every_ms` node-wide, and at once the
/// first time: whichever thread comes first says it, the others stay quiet
/// until the time is up. On the limiter's clock (`limit::now_ms`).
pub struct OncePer {
    every_ms: u64,
    /// `limit::now_ms` before which nobody says it again.
    next_ms: AtomicU64,
}

impl OncePer {
    pub const fn new(every_ms: u64) -> Self {
        OncePer {
            every_ms,
            next_ms: AtomicU64::new(0),
        }
    }

    /// True for the one caller that may say it now.
    pub fn allow(&self) -> bool {
        let now = crate::limit::now_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

// ---- Access log ------------------------------------------------------------

/// What an access-log line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// A request that is not a stream (publish, healthz, metrics, refusals).
    Request,
    /// A stream answered 200 and started.
    StreamOpen,
    /// A stream ended (`reason` says why).
    StreamClose,
}

impl AccessKind {
    pub fn name(self) -> &'static str {
        match self {
            AccessKind::Request => "request",
            AccessKind::StreamOpen => "stream_open",
            AccessKind::StreamClose => "stream_close",
        }
    }
}

/// One access-log entry, borrowed from the connection that made it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub kind: AccessKind,
    pub peer: std::net::SocketAddr,
    /// Request method and target as received (any bytes; `access_token`
    /// values in the query are redacted before writing).
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// Response status (streams: 200).
    pub status: u16,
    /// Bytes sent: the response, or everything the stream sent.
    pub bytes: u64,
    /// Request duration, or the stream's lifetime.
    pub duration_ms: u64,
    /// Why a stream closed (`client_eof`, `slow_queue_bytes`, `shutdown`...), or "".
    pub reason: &'a str,
    pub worker: usize,
}

/// A token bucket of log lines: at most `lines_per_s_max` per second
/// (bursts of up to one second's worth), the rest counted; the count is
/// summarised in one line at most once per second. Pure: the caller passes
/// the time, so it is tested without sleeping.
#[derive(Debug)]
pub struct LineBucket {
    lines_per_s_max: u64,
    /// Tokens × 1000 (one line costs 1000), refilled by `lines_per_s_max` per ms.
    tokens_milli: u64,
    last_ms: u64,
    suppressed: u64,
    summary_last_ms: u64,
}

/// What to do with one offered line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Write the line.
    pub write: bool,
    /// Lines left out since the last summary, to report now (at most once a second).
    pub summary: Option<u64>,
}

impl LineBucket {
    pub fn new(lines_per_s_max: u32, now_ms: u64) -> LineBucket {
        let rate = u64::from(lines_per_s_max.max(1));
        LineBucket {
            lines_per_s_max: rate,
            tokens_milli: rate * 1000,
            last_ms: now_ms,
            suppressed: 0,
            summary_last_ms: now_ms,
        }
    }

    /// Change the rate (a reload); the bucket keeps what it holds, capped.
    pub fn set_rate(&mut self, lines_per_s_max: u32) {
        self.lines_per_s_max = u64::from(lines_per_s_max.max(1));
        self.tokens_milli = self.tokens_milli.min(self.lines_per_s_max * 1000);
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(self.lines_per_s_max))
            .min(self.lines_per_s_max * 1000);
    }

    /// Offer one line at `now_ms`.
    pub fn offer(&mut self, now_ms: u64) -> Decision {
        self.refill(now_ms);
        let write = self.tokens_milli >= 1000;
        if write {
            self.tokens_milli -= 1000;
        } else {
            self.suppressed += 1;
        }
        Decision {
            write,
            summary: self.summary_due(now_ms),
        }
    }

    /// Called from a periodic tick: the summary of lines left out, if due,
    /// so a flood that stopped is still reported.
    pub fn tick(&mut self, now_ms: u64) -> Option<u64> {
        self.refill(now_ms);
        self.summary_due(now_ms)
    }

    fn summary_due(&mut self, now_ms: u64) -> Option<u64> {
        if self.suppressed > 0 && now_ms.saturating_sub(self.summary_last_ms) >= 1000 {
            self.summary_last_ms = now_ms;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

static ACCESS_ON: AtomicBool = AtomicBool::new(false);
static ACCESS_BUCKET: Mutex<Option<LineBucket>> = Mutex::new(None);
static ACCESS_SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Turn the access log on or off and set its rate (startup and reloads).
pub fn set_access(on: bool, lines_per_s_max: u32) {
    let mut bucket = ACCESS_BUCKET.lock().unwrap_or_else(|e| e.into_inner());
    match bucket.as_mut() {
        Some(b) => b.set_rate(lines_per_s_max),
        None => *bucket = Some(LineBucket::new(lines_per_s_max, now_ms())),
    }
    ACCESS_ON.store(on, Ordering::Relaxed);
}

/// Access-log lines left out by the rate limit since start (for a metric).
pub fn access_suppressed_total() -> u64 {
    ACCESS_SUPPRESSED_TOTAL.load(Ordering::Relaxed)
}

/// Log one access entry if the access log is on and the bucket allows it.
/// Costs one relaxed load when the access log is off.
pub fn access(entry: &Access<'_>) {
    if !ACCESS_ON.load(Ordering::Relaxed) {
        return;
    }
    let decision = {
        let mut bucket = ACCESS_BUCKET.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        bucket
            .get_or_insert_with(|| LineBucket::new(1000, now))
            .offer(now)
    };
    if let Some(count) = decision.summary {
        access_summary(count);
    }
    if !decision.write {
        ACCESS_SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let target = lossy(entry.target);
    let target = redact_query(&target);
    tracing::event!(
        target: "stentor::access",
        tracing::Level::INFO,
        {
            message = "access",
            kind = entry.kind.name(),
            peer = %entry.peer,
            method = %lossy(entry.method),
            target = %target,
            status = entry.status,
            bytes = entry.bytes,
            duration_ms = entry.duration_ms,
            reason = entry.reason,
            worker = entry.worker,
        }
    );
}

/// Whether `--access-log` is on: callers skip building an entry (and the
/// worker keeps no per-stream access state) when it is not.
pub fn access_enabled() -> bool {
    ACCESS_ON.load(Ordering::Relaxed)
}

/// Report lines left out, if due; call from a periodic tick.
pub fn access_tick() {
    if !ACCESS_ON.load(Ordering::Relaxed) {
        return;
    }
    let due = ACCESS_BUCKET
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|b| b.tick(now_ms()));
    if let Some(count) = due {
        access_summary(count);
    }
}

fn access_summary(count: u64) {
    tracing::event!(
        target: "stentor::access",
        tracing::Level::WARN,
        { message = "access log lines suppressed", count = count, period_s = 1 }
    );
}

/// The query parameters that carry tokens: the shared subscribe token and
/// a JWT (`api::token_source::QUERY_PARAM`).
const SECRET_PARAMS: [&str; 2] = ["access_token", crate::api::token_source::QUERY_PARAM];

/// `access_token=...` and `authorization=...` in a query string, values
/// replaced: tokens must not land in logs.
pub fn redact_query(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    let secret = |p: &str| SECRET_PARAMS.contains(&p.split('=').next().unwrap_or(""));
    if !query.split('&').any(secret) {
        return target.into();
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.contains(&name) => format!("{name}=<redacted>"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many threads racing for one warning: exactly one says it, and
    /// nobody again before the time is up.
    #[test]
    fn once_per_lets_exactly_one_caller_through() {
        let once = std::sync::Arc::new(OncePer::new(3_600_000));
        let said: usize = (0..8)
            .map(|_| {
                let once = once.clone();
                std::thread::spawn(move || (0..1000).filter(|_| once.allow()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(said, 1);
        // With no wait between, every call may say it.
        let always = OncePer::new(0);
        assert!(always.allow() && always.allow());
    }

    fn line(format: Format, fields: &[(&str, &str)]) -> String {
        let mut l = Line::new(
            format,
            std::time::Duration::from_millis(1_700_000_000_123),
            "info",
        );
        for (k, v) in fields {
            l.field(k, v);
        }
        l.finish()
    }

    #[test]
    fn logfmt_quotes_only_what_needs_it() {
        let cases = [
            ("plain", "plain"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:80", "[::1]:80"),
            ("", ""),
            ("null", "\"null\""),
            ("two words", "\"two words\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("C:\\tmp", "C:\\tmp"),
            ("back\\slash and space", "\"back\\\\slash and space\""),
            ("line\nbreak", "\"line\\nbreak\""),
            ("cr\rtab\t", "\"cr\\rtab\\t\""),
            ("bell\u{7}", "\"bell\\u0007\""),
            ("del\u{7f}", "\"del\\u007f\""),
            ("nel\u{85}ls\u{2028}", "\"nel\\u0085ls\\u2028\""),
            ("bad\u{fffd}", "\"bad\\ufffd\""),
            ("é€😀", "é€😀"),
        ];
        for (value, want) in cases {
            let mut out = String::new();
            logfmt_value(&mut out, value, false);
            assert_eq!(out, want, "{value:?}");
        }
        let mut out = String::new();
        logfmt_value(&mut out, "listening", true);
        assert_eq!(out, "\"listening\"");
    }

    #[test]
    fn lines_are_one_line_in_both_formats() {
        let nasty = "a \"b\" \\c\nd\re\u{0}\u{1b}[31m\u{85}\u{2028}\u{fffd}";
        for format in [Format::Logfmt, Format::Json] {
            let l = line(format, &[("message", "hi there"), ("v", nasty)]);
            assert_eq!(l.matches('\n').count(), 1, "{l:?}");
            assert!(l.ends_with('\n'));
            assert!(!l.contains('\r') && !l.contains('\u{85}') && !l.contains('\u{2028}'));
            assert!(!l.contains('\u{1b}') && !l.contains('\u{0}'));
        }
        assert_eq!(
            line(Format::Logfmt, &[("message", "hi"), ("n", "3")]),
            "ts=1700000000.123 level=info msg=\"hi\" n=3\n"
        );
        assert_eq!(
            line(Format::Json, &[("message", "hi"), ("n", "3")]),
            "{\"ts\":1700000000.123,\"level\":\"info\",\"msg\":\"hi\",\"n\":\"3\"}\n"
        );
        let json = line(Format::Json, &[("message", "m"), ("v", nasty)]);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["v"], nasty);
    }

    #[test]
    fn filters_accept_rust_log_directives_and_refuse_lookalikes() {
        for ok in [
            "info",
            "warn",
            "INFO",
            "info,stentor::worker=debug",
            "off",
            "stentor=trace",
            "debug, stentor::access=off",
        ] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            ",",
            "warning",
            "verbose",
            "stentor::worker",
            "x=loud",
            "a b=info",
            "=info",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_bucket_writes_at_most_the_rate_and_summarises_the_rest() {
        let mut b = LineBucket::new(10, 0);
        // A burst of 1 s worth passes, then one line per 100 ms.
        let written = (0..50).filter(|_| b.offer(0).write).count();
        assert_eq!(written, 10);
        assert!(!b.offer(50).write);
        assert!(b.offer(100).write, "100 ms refill one line at 10/s");
        // Summary at most once a second, with the count since the last one.
        let d = b.offer(999);
        assert_eq!(d.summary, None);
        let d = b.offer(1000);
        assert_eq!(d.summary, Some(41), "40 of the burst and 1 at 50 ms: {d:?}");
        assert_eq!(b.tick(1500), None, "no drops since");
        // A flood at 100x the rate for 10 s writes ~rate × 10 s + burst lines.
        let mut b = LineBucket::new(100, 0);
        let mut written = 0;
        let mut summarised = 0;
        for i in 0..100_000u64 {
            let d = b.offer(i / 10);
            written += u64::from(d.write);
            summarised += d.summary.unwrap_or(0);
        }
        summarised += b.tick(20_000).unwrap_or(0);
        assert!((1000..=1100).contains(&written), "{written}");
        assert_eq!(
            written + summarised,
            100_000,
            "every line written or counted"
        );
        // Time going backwards (a clock step) neither panics nor mints tokens.
        let mut b = LineBucket::new(1, 5000);
        assert!(b.offer(5000).write);
        assert!(!b.offer(1000).write);
    }

    #[test]
    fn access_writes_at_most_the_rate_with_the_token_redacted() {
        use std::sync::{Arc, Mutex};
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let subscriber = Registry::default().with(LineLayer {
            write: move |b: &[u8]| {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(b).into_owned())
            },
        });
        set_format(Format::Json);
        tracing::subscriber::with_default(subscriber, || {
            let entry = Access {
                kind: AccessKind::StreamOpen,
                peer: "[::1]:40000".parse().unwrap(),
                method: b"GET",
                target: b"/events?topic=a b&access_token=s3cret&x=\xff\"",
                status: 200,
                bytes: 0,
                duration_ms: 3,
                reason: "",
                worker: 1,
            };
            // Off: nothing, whatever the rate.
            set_access(false, 5);
            access(&entry);
            assert!(lines.lock().unwrap().is_empty());
            set_access(true, 5);
            for _ in 0..50 {
                access(&entry);
            }
            set_access(false, 5);
        });
        set_format(Format::Logfmt);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(access_suppressed_total() >= 45);
        for l in lines.iter() {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            assert_eq!(v["msg"], "access");
            assert_eq!(v["kind"], "stream_open");
            assert_eq!(v["peer"], "[::1]:40000");
            assert_eq!(v["status"], "200");
            assert_eq!(
                v["target"],
                "/events?topic=a b&access_token=<redacted>&x=\u{fffd}\""
            );
            assert!(!l.contains("s3cret"));
        }
    }

    #[test]
    fn access_token_is_redacted_from_targets() {
        assert_eq!(redact_query("/events?topic=a"), "/events?topic=a");
        assert_eq!(
            redact_query("/events?topic=a&access_token=secret&x=1"),
            "/events?topic=a&access_token=<redacted>&x=1"
        );
        assert_eq!(redact_query("/healthz"), "/healthz");
        assert_eq!(
            redact_query("/events?topic=a&authorization=eyJ.x.y"),
            "/events?topic=a&authorization=<redacted>"
        );
    }
}
