//! The operator's endpoints: `/metrics`, `/readyz`, `/healthz`. Answered
//! by the workers on the public port and, with `--admin-listen`, by one
//! plain thread on a separate address that load balancers and Prometheus
//! reach but clients do not. The admin port is control plane: a few
//! requests a second, one at a time, each bounded by a timeout; it never
//! touches a worker's ring.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{Headers, Response};
use crate::bus::Shared;

/// Bytes of an admin request head we read at most; longer ones get 431.
pub const ADMIN_HEAD_BYTES_MAX: usize = 8192;
/// How long one admin connection may take to send its head or read the
/// answer: a stalled scraper cannot hold the (single) admin thread longer.
pub const ADMIN_IO_TIMEOUT_MS: u64 = 2_000;

/// `GET /readyz`: 200 `ready`, or 503 with the reason (draining, full).
pub fn readiness_response(shared: &Shared, keep_alive: bool, headers: Headers) -> Response {
    let mut r = crate::api::readiness_response(shared.readiness(), keep_alive);
    r.headers = headers;
    r
}

/// `GET /metrics`: the node's and the hub's figures as Prometheus text.
pub fn metrics_response(shared: &Shared, keep_alive: bool, headers: Headers) -> Response {
    let mut text = String::with_capacity(8192);
    shared.render_metrics(&mut text);
    render_hub_stats(&shared.hub_stats(), &mut text);
    render_ops(shared, &mut text);
    {
        use std::fmt::Write as _;
        let _ = write!(
            text,
            "# HELP stentor_presence_streams Streams listed for GET /subscriptions (node-local).\n\
             # TYPE stentor_presence_streams gauge\nstentor_presence_streams {}\n",
            shared.presence_len()
        );
    }
    let mut r = Response::text(200, "", keep_alive);
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = text.into_bytes();
    r.headers = headers;
    r
}

/// Bind `addr` and answer admin requests on a thread of their own until
/// the process exits. Returns the bound address (port 0 picks one).
pub fn serve(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("stentor-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        // An admin client that misbehaves loses its answer, nothing more.
                        let _ = answer(s, &shared);
                    }
                    // EMFILE and the like: back off instead of spinning.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(bound)
}

/// Read one request head and answer it, closing afterwards.
fn answer(mut s: TcpStream, shared: &Shared) -> io::Result<()> {
    let timeout = Some(Duration::from_millis(ADMIN_IO_TIMEOUT_MS));
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= ADMIN_HEAD_BYTES_MAX {
            s.write_all(&Response::text(431, "request head too large", false).encode())?;
            return Ok(());
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let r = route(method, path, shared);
    s.write_all(&r.encode())?;
    Ok(())
}

/// The admin port's routes (GET and HEAD-less: probes and scrapers GET).
fn route(method: &str, path: &str, shared: &Shared) -> Response {
    if !matches!(path, "/metrics" | "/readyz" | "/healthz") {
        return Response::text(404, "not found", false);
    }
    if method != "GET" {
        let mut r = Response::text(405, "method not allowed", false);
        r.allow = Some("GET");
        return r;
    }
    match path {
        "/metrics" => metrics_response(shared, false, Headers::new()),
        "/readyz" => readiness_response(shared, false, Headers::new()),
        _ => Response::text(200, "ok", false),
    }
}

/// Readiness and reloads, so a dashboard shows a drain or a reload that
/// did (or did not) happen next to the traffic it explains.
fn render_ops(shared: &Shared, out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    for (name, help, value) in [
        (
            "ready",
            "1 while /readyz answers 200 (takes new streams), 0 while draining or full.",
            u64::from(shared.readiness().is_ok()),
        ),
        (
            "draining",
            "1 once SIGTERM/SIGINT started the drain.",
            u64::from(shared.draining.load(Ordering::Relaxed)),
        ),
        (
            "config_reloads",
            "Configurations applied by SIGHUP since start.",
            shared.reload_generation.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP stentor_{name} {help}");
        let _ = writeln!(out, "# TYPE stentor_{name} gauge");
        let _ = writeln!(out, "stentor_{name} {value}");
    }
}

/// The hub's gauges and counters in Prometheus text, after the node's.
fn render_hub_stats(s: &crate::hub::HubStats, out: &mut String) {
    use std::fmt::Write as _;
    for (name, kind, help, value) in [
        (
            "hub_topics",
            "gauge",
            "Topics the hub holds (history or not).",
            s.topics as u64,
        ),
        (
            "history_events",
            "gauge",
            "Events kept in history, all topics.",
            s.history_events as u64,
        ),
        (
            "history_bytes",
            "gauge",
            "Frame bytes kept in history, all topics.",
            s.history_bytes as u64,
        ),
        (
            "history_evicted_events_total",
            "counter",
            "Events evicted from history by --history-events-max or --history-bytes-max.",
            s.evicted_events_total,
        ),
        (
            "history_evicted_bytes_total",
            "counter",
            "Frame bytes evicted from history.",
            s.evicted_bytes_total,
        ),
        (
            "last_event_id",
            "gauge",
            "The last event id handed out.",
            s.last_id,
        ),
    ] {
        let _ = writeln!(out, "# HELP stentor_{name} {help}");
        let _ = writeln!(out, "# TYPE stentor_{name} {kind}");
        let _ = writeln!(out, "stentor_{name} {value}");
    }
}
