//! The real `stentor-loadgen` binary against a fake SSE server whose faults
//! have known effects: the report's counts must match exactly. Every run is
//! bounded (flags set short deadlines; the process is killed by PID if it
//! ever overstays).

mod fake;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake::{FakeServer, Faults};
use serde_json::Value;
use support::{n, Outcome};

/// Run the loadgen against `url` with the fake's short deadlines. A
/// generous drain: it ends as soon as everything expected arrived, so only
/// runs with injected loss wait it out, and a busy machine cannot turn late
/// deliveries into loss.
fn run_loadgen(url: &str, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "run",
        "--url",
        url,
        "--connect-timeout-s",
        "5",
        "--drain-s",
        "5",
    ];
    args.extend_from_slice(extra);
    support::loadgen(&args)
}

/// 20 subscribers, 100 events over one second on one topic.
const BASE: &[&str] = &[
    "--subscribers",
    "20",
    "--rate",
    "100",
    "--duration-s",
    "1",
    "--payload-bytes",
    "64",
];

#[test]
fn clean_run_counts_everything_and_meets_slo() {
    let srv = FakeServer::start(Faults::default());
    let html = std::env::temp_dir().join(format!("loadgen-test-{}.html", std::process::id()));
    let html_s = html.to_string_lossy().to_string();
    let mut args = BASE.to_vec();
    args.extend(["--max-loss", "0", "--max-p99-ms", "5000", "--html", &html_s]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 0, "stderr: {}\nreport: {r:#}", o.stderr);
    assert_eq!(
        srv.published.load(std::sync::atomic::Ordering::Acquire),
        100,
        "exactly the schedule"
    );
    assert_eq!(n(r, "events_accepted"), 100);
    assert_eq!(n(r, "subscribers_requested"), 20);
    assert_eq!(n(r, "subscribers_connected"), 20);
    assert_eq!(n(r, "deliveries_expected"), 2000);
    assert_eq!(n(r, "deliveries_received"), 2000);
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
    assert_eq!(n(r, "out_of_order"), 0);
    assert_eq!(n(r, "slow_clients"), 0);
    assert_eq!(n(r, "slow_clients_dropped"), 0);
    assert_eq!(n(r, "latency_us.count"), 2000);
    for f in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            r["latency_us"][f].is_u64() && r["fast_latency_us"][f].is_u64(),
            "{f}"
        );
    }
    assert!(r["deliveries_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    // The typed contract other tools (the bench) read parses a real report.
    let typed = stentor_loadgen::contract::RunReport::from_json(&r.to_string()).expect("contract");
    assert_eq!(typed.deliveries_received, 2000);
    assert_eq!(typed.fast_latency_us.count, 2000);
    assert!(typed.slo.met && typed.publish_inflight == 1);
    // The series adds up to the totals, second by second.
    let series = r["series"].as_array().expect("series");
    let sum = |k: &str| {
        series
            .iter()
            .map(|p| p[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("deliveries_fast"), 2000, "{r:#}");
    assert_eq!(sum("connects"), 20);
    assert_eq!(sum("events_sent"), 100);
    assert_eq!(sum("deliveries_slow"), 0);
    assert!(series.iter().any(|p| p["connected"] == 20), "{r:#}");
    assert!(series.iter().any(|p| n(p, "fast_latency_us.p99") > 0));
    assert!(r["publish_lag_ms_max"].is_number());
    assert!(r["warnings"].is_array());
    let page = std::fs::read_to_string(&html).expect("html written");
    let _ = std::fs::remove_file(&html);
    assert!(
        page.contains("<svg") && !page.contains("<script"),
        "self-contained page"
    );
}

#[test]
fn chunked_streams_count_the_same() {
    let srv = FakeServer::start(Faults {
        chunked: true,
        ..Faults::default()
    });
    let o = run_loadgen(&srv.url(), BASE);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(n(&o.report, "deliveries_received"), 2000);
    assert_eq!(n(&o.report, "loss"), 0);
}

#[test]
fn every_tenth_dropped_is_exact_loss_and_fails_slo() {
    let srv = FakeServer::start(Faults {
        drop_every: Some(10),
        ..Faults::default()
    });
    let mut args = BASE.to_vec();
    args.extend(["--max-loss", "0"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 1, "SLO missed: {}", o.stderr);
    assert_eq!(n(r, "loss"), 10 * 20);
    assert_eq!(n(r, "deliveries_received"), 90 * 20);
    assert_eq!(n(r, "duplicates"), 0);
    assert_eq!(n(r, "out_of_order"), 0);
}

#[test]
fn duplicates_are_counted_exactly() {
    let srv = FakeServer::start(Faults {
        duplicate_every: Some(7),
        ..Faults::default()
    });
    let o = run_loadgen(&srv.url(), BASE);
    let r = &o.report;
    // ids 7, 14, ..., 98: 14 per subscriber.
    assert_eq!(n(r, "duplicates"), 14 * 20, "{r:#}");
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "out_of_order"), 0);
    assert_eq!(n(r, "deliveries_received"), 2000);
}

#[test]
fn swapped_events_are_out_of_order_not_lost() {
    let srv = FakeServer::start(Faults {
        swap_every: Some(10),
        ..Faults::default()
    });
    let args = [
        "--subscribers",
        "20",
        "--rate",
        "95",
        "--duration-s",
        "1",
        "--payload-bytes",
        "64",
    ];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    // ids 10..90 each arrive after their successor: 9 per subscriber.
    assert_eq!(n(r, "out_of_order"), 9 * 20, "{r:#}");
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
}

#[test]
fn known_delay_is_a_latency_floor() {
    let delay = Duration::from_millis(200);
    let srv = FakeServer::start(Faults {
        delay,
        ..Faults::default()
    });
    let args = ["--subscribers", "10", "--rate", "20", "--duration-s", "1"];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "loss"), 0, "{r:#}");
    let p50 = n(r, "fast_latency_us.p50");
    assert!(p50 >= 200_000, "p50 {p50} µs below the injected 200 ms");
    assert!(n(r, "latency_us.max") < 2_000_000, "delay is bounded");
}

#[test]
fn early_close_without_reconnect_is_loss() {
    let srv = FakeServer::start(Faults {
        close_after: Some(30),
        ..Faults::default()
    });
    let o = run_loadgen(&srv.url(), BASE);
    let r = &o.report;
    assert_eq!(n(r, "loss"), 70 * 20, "{r:#}");
    assert_eq!(n(r, "deliveries_received"), 30 * 20);
    assert_eq!(n(r, "disconnects.eof"), 20);
}

#[test]
fn early_close_with_reconnect_resumes_exactly_once() {
    let srv = FakeServer::start(Faults {
        close_after: Some(30),
        ..Faults::default()
    });
    let mut args = BASE.to_vec();
    args.extend(["--reconnect", "--max-loss", "0"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 0, "{}\n{r:#}", o.stderr);
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
    assert_eq!(n(r, "deliveries_received"), 2000);
    assert_eq!(n(r, "resume.reconnects"), 20);
    assert_eq!(n(r, "resume.resumed_subscribers"), 20);
    assert_eq!(n(r, "resume.resumed_exactly_once"), 20);
    assert_eq!(r["resume"]["all_exactly_once"], Value::Bool(true));
    // Each resume timed from its stream's end: at least the server's
    // `retry: 100`, well under the run.
    assert_eq!(n(r, "resume.resume_ms.count"), 20, "{r:#}");
    assert!(n(r, "resume.resume_ms.p50") >= 100, "{r:#}");
    assert!(n(r, "resume.resume_ms.max") < 2_000, "{r:#}");
}

#[test]
fn a_refused_resume_is_retried_and_timed_from_the_stream_s_end() {
    // Every stream closed after event 30, and each subscriber's first
    // reconnect refused (503): it tries again after the stream's `retry:`
    // and still resumes exactly once; its resume time spans both attempts.
    let srv = FakeServer::start(Faults {
        close_after: Some(30),
        refuse_resumes: 20,
        ..Faults::default()
    });
    let mut args = BASE.to_vec();
    args.extend(["--reconnect", "--max-loss", "0"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 0, "{}\n{r:#}", o.stderr);
    assert_eq!(n(r, "loss"), 0, "{r:#}");
    assert_eq!(n(r, "duplicates"), 0, "{r:#}");
    assert_eq!(r["http_statuses"]["503"].as_u64(), Some(20), "{r:#}");
    assert_eq!(n(r, "resume.reconnects"), 40, "{r:#}");
    assert_eq!(n(r, "resume.resumed_exactly_once"), 20, "{r:#}");
    assert_eq!(n(r, "resume.resume_ms.count"), 20, "one resume each: {r:#}");
    assert!(
        n(r, "resume.resume_ms.p50") >= 200,
        "two retry intervals at least: {r:#}"
    );
}

#[test]
fn stalled_server_is_loss_and_the_run_ends_by_itself() {
    let srv = FakeServer::start(Faults {
        stall_after: Some(50),
        ..Faults::default()
    });
    let started = Instant::now();
    let o = run_loadgen(&srv.url(), BASE);
    let r = &o.report;
    assert_eq!(n(r, "loss"), 50 * 20, "{r:#}");
    assert_eq!(n(r, "deliveries_received"), 50 * 20);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by --drain-s"
    );
}

#[test]
fn stalled_clients_are_dropped_and_fast_ones_lose_nothing() {
    let srv = FakeServer::start(Faults {
        drop_blocked_after: Some(Duration::from_millis(100)),
        ..Faults::default()
    });
    // 2 of 20 subscribers stall; 200 events of 4 KiB overflow their small buffers.
    let args = [
        "--subscribers",
        "20",
        "--rate",
        "200",
        "--duration-s",
        "1",
        "--payload-bytes",
        "4096",
        "--slow-fraction",
        "0.1",
        "--slow-mode",
        "stall",
    ];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "slow_clients"), 2, "{r:#}");
    assert_eq!(n(r, "slow_clients_dropped"), 2, "{r:#}");
    assert_eq!(n(r, "loss"), 0, "fast subscribers lose nothing");
    assert_eq!(n(r, "deliveries_expected"), 18 * 200);
    assert_eq!(n(r, "fast_latency_us.count"), 18 * 200);
}

#[test]
fn trickling_clients_are_dropped() {
    let srv = FakeServer::start(Faults {
        drop_blocked_after: Some(Duration::from_millis(100)),
        ..Faults::default()
    });
    let args = [
        "--subscribers",
        "10",
        "--rate",
        "200",
        "--duration-s",
        "1",
        "--payload-bytes",
        "4096",
        "--slow-fraction",
        "0.2",
        "--slow-mode",
        "trickle:2000",
    ];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "slow_clients"), 2, "{r:#}");
    assert_eq!(n(r, "slow_clients_dropped"), 2, "{r:#}");
    assert_eq!(n(r, "loss"), 0);
}

#[test]
fn non_200_is_a_connection_error() {
    let srv = FakeServer::start(Faults {
        get_status: Some(503),
        ..Faults::default()
    });
    let o = run_loadgen(&srv.url(), BASE);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("no subscriber connected"), "{}", o.stderr);
    assert!(o.stderr.contains("http_status"), "{}", o.stderr);
}

#[test]
fn nothing_listening_is_exit_2() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let o = run_loadgen(&format!("http://127.0.0.1:{port}"), BASE);
    assert_eq!(o.code, 2);
    assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
}

#[test]
fn bad_flags_are_exit_2_with_one_line() {
    for bad in [
        &["run", "--subscribers", "lots"][..],
        &["run", "--slow-mode", "crawl"],
        &["run", "--no-such-flag"],
        &["run", "--url", "https://example.com"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stentor-loadgen"))
            .args(bad)
            .output()
            .expect("run binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bad:?}: {stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_stentor-loadgen"))
        .args(["run", "--help"])
        .output()
        .expect("run binary");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--slow-mode"));
}

#[test]
fn dropped_stalled_clients_resume_exactly_once() {
    let srv = FakeServer::start(Faults {
        drop_blocked_after: Some(Duration::from_millis(100)),
        ..Faults::default()
    });
    let args = [
        "--subscribers",
        "20",
        "--rate",
        "200",
        "--duration-s",
        "1",
        "--payload-bytes",
        "4096",
        "--slow-fraction",
        "0.1",
        "--slow-mode",
        "stall",
        "--reconnect",
    ];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "slow_clients_dropped"), 2, "{r:#}");
    assert_eq!(
        n(r, "slow.drops_seen_at_end"),
        0,
        "a reset is seen while running"
    );
    assert_eq!(n(r, "resume.resumed_subscribers"), 2, "{r:#}");
    assert_eq!(n(r, "resume.resumed_exactly_once"), 2, "{r:#}");
    assert_eq!(n(r, "loss"), 0);
}

#[test]
fn sigint_cuts_the_run_short_with_a_report() {
    let srv = FakeServer::start(Faults::default());
    let json = std::env::temp_dir().join(format!("loadgen-test-int-{}.json", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_stentor-loadgen"))
        .args([
            "run",
            "--url",
            &srv.url(),
            "--subscribers",
            "10",
            "--rate",
            "20",
            "--duration-s",
            "60",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stentor-loadgen");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling the child we started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("SIGINT did not end the run");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report written"))
            .expect("json");
    let _ = std::fs::remove_file(&json);
    assert!(
        report["warnings"].to_string().contains("interrupted"),
        "{report:#}"
    );
    assert!(n(&report, "events_published") < 1200);
}

#[test]
fn a_close_behind_unread_data_is_found_by_the_verdict_read() {
    let srv = FakeServer::start(Faults {
        drop_blocked_after: Some(Duration::from_millis(100)),
        drop_gracefully: true,
        ..Faults::default()
    });
    let args = [
        "--subscribers",
        "20",
        "--rate",
        "200",
        "--duration-s",
        "1",
        "--payload-bytes",
        "4096",
        "--slow-fraction",
        "0.1",
        "--slow-mode",
        "stall",
    ];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "slow_clients_dropped"), 2, "{r:#}");
    assert_eq!(n(r, "slow.drops_seen_at_end"), 2, "{r:#}");
    assert_eq!(n(r, "disconnects.closed_while_stalled"), 2);
    assert_eq!(n(r, "loss"), 0);
}

#[test]
fn a_drop_seen_only_by_the_final_read_is_resumed_after_it() {
    let srv = FakeServer::start(Faults {
        drop_blocked_after: Some(Duration::from_millis(100)),
        drop_gracefully: true,
        ..Faults::default()
    });
    let args = [
        "--subscribers",
        "20",
        "--rate",
        "200",
        "--duration-s",
        "1",
        "--payload-bytes",
        "4096",
        "--slow-fraction",
        "0.1",
        "--slow-mode",
        "stall",
        "--reconnect",
    ];
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "slow_clients_dropped"), 2, "{r:#}");
    assert_eq!(n(r, "slow.drops_seen_at_end"), 2, "{r:#}");
    assert_eq!(n(r, "resume.after_final_read"), 2, "{r:#}");
    assert_eq!(n(r, "resume.reconnects"), 2, "{r:#}");
    assert_eq!(n(r, "resume.resumed_subscribers"), 2, "{r:#}");
    assert_eq!(n(r, "resume.resumed_exactly_once"), 2, "{r:#}");
    assert_eq!(n(r, "resume.loss"), 0, "{r:#}");
    assert_eq!(n(r, "resume.duplicates"), 0, "{r:#}");
    assert_eq!(n(r, "loss"), 0);
}

#[test]
fn refused_publishes_are_counted_and_fail_the_slo() {
    let srv = FakeServer::start(Faults {
        reject_every: Some(4),
        ..Faults::default()
    });
    let mut args = BASE.to_vec();
    args.extend(["--max-loss", "0"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(n(r, "events_published"), 100);
    assert_eq!(n(r, "events_accepted"), 75, "{r:#}");
    assert_eq!(n(r, "publish_errors.status_503"), 25);
    // Loss counts against accepted events only.
    assert_eq!(n(r, "deliveries_expected"), 75 * 20);
    assert_eq!(n(r, "deliveries_received"), 75 * 20);
    assert_eq!(n(r, "loss"), 0);
}

#[test]
fn topics_split_the_events_exactly() {
    let srv = FakeServer::start(Faults {
        drop_every: Some(8),
        ..Faults::default()
    });
    let mut args = BASE.to_vec();
    args.extend(["--topics", "4"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    // 100 events over 4 topics: 25 each, 5 subscribers each.
    assert_eq!(n(r, "deliveries_expected"), 25 * 20, "{r:#}");
    // Ids 8, 16, ..., 96 are dropped; id k is event k-1, on topic (k-1) % 4 = 3:
    // 12 events of topic t3, 5 subscribers each.
    assert_eq!(n(r, "loss"), 12 * 5);
    assert_eq!(n(r, "out_of_order"), 0);
}

/// A server that answers each publish 50 ms after reading it: a sequential
/// publisher (the default) gets about 20 of 50 ev/s through, times each
/// round trip and reports the rest as never sent; four connections (the
/// fake answers each connection's requests one at a time) keep up.
#[test]
fn sequential_publisher_waits_for_each_answer() {
    let srv = FakeServer::start(Faults {
        answer_delay: std::time::Duration::from_millis(50),
        ..Faults::default()
    });
    let base = ["--subscribers", "5", "--rate", "50", "--duration-s", "1"];
    let mut args = base.to_vec();
    args.extend(["--min-published", "0.99"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 1, "fell behind: SLO missed; {}", o.stderr);
    assert!(
        r["slo"]["failures"].to_string().contains("--min-published"),
        "{r:#}"
    );
    assert_eq!(n(r, "publish_inflight"), 1);
    let sent = n(r, "events_published");
    let behind = n(r, "events_behind_schedule");
    assert_eq!(sent + behind, 50, "{r:#}");
    // 2 s (schedule + overrun) at one answer per >= 50 ms.
    assert!((10..=41).contains(&sent) && behind > 0, "{r:#}");
    assert!(n(r, "publish_round_trip_us.p50") >= 50_000, "{r:#}");
    assert_eq!(n(r, "publish_round_trip_us.count"), n(r, "events_accepted"));
    assert!(
        r["publish_lag_ms_max"].as_f64().unwrap_or(0.0) > 500.0,
        "{r:#}"
    );
    assert_eq!(n(r, "loss"), 0, "expectations follow what was accepted");

    let mut args = base.to_vec();
    args.extend(["--pub-conns", "4", "--pub-inflight", "2"]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(n(r, "events_behind_schedule"), 0, "{r:#}");
    assert_eq!(n(r, "events_accepted"), 50, "{r:#}");
    assert_eq!(n(r, "publish_inflight"), 2);
}

/// A server that wraps what was published (Centrifugo's
/// `{"pub":{"data":…}}`): without being told where the sequence is, every
/// event is foreign and all is lost; with `--seq-regex` (native payloads
/// inside the wrapper) or `--seq-json-pointer` (JSON payloads embedded raw
/// by the template) every delivery is counted, with its latency.
#[test]
fn wrapped_payloads_are_measured_with_seq_regex_or_json_pointer() {
    let srv = FakeServer::start(Faults {
        wrap_pub_data: true,
        ..Faults::default()
    });
    let o = run_loadgen(&srv.url(), BASE);
    let r = &o.report;
    assert_eq!(n(r, "deliveries_received"), 0, "report: {r:#}");
    assert_eq!(n(r, "foreign_events"), 2000, "report: {r:#}");

    let ways: [&[&str]; 2] = [
        &["--seq-regex", r"seq=(\d+)"],
        &[
            "--seq-json-pointer",
            "/pub/data/seq",
            "--pub-body-template",
            r#"{"topic":"{topic}","data":{data}}"#,
        ],
    ];
    for way in ways {
        let mut args = BASE.to_vec();
        args.extend(["--max-loss", "0"]);
        args.extend(way);
        let o = run_loadgen(&srv.url(), &args);
        let r = &o.report;
        assert_eq!(o.code, 0, "{way:?} stderr: {}\nreport: {r:#}", o.stderr);
        assert_eq!(n(r, "deliveries_received"), 2000, "{way:?}");
        assert_eq!(n(r, "loss"), 0);
        assert_eq!(n(r, "duplicates"), 0);
        assert_eq!(n(r, "foreign_events"), 0);
        assert_eq!(n(r, "latency_us.count"), 2000);
    }
}

/// Centrifugo-shaped events (`{"pub":{"data":{"seq":N,...}}}`) with every
/// seventh sent twice: the JSON pointer finds every sequence number, nothing
/// is lost, and the repeats are duplicates, exactly.
#[test]
fn wrapped_duplicates_are_counted_through_the_json_pointer() {
    let srv = FakeServer::start(Faults {
        wrap_pub_data: true,
        duplicate_every: Some(7),
        ..Faults::default()
    });
    let mut args = BASE.to_vec();
    args.extend([
        "--max-loss",
        "0",
        "--seq-json-pointer",
        "/pub/data/seq",
        "--pub-body-template",
        r#"{"topic":"{topic}","data":{data}}"#,
    ]);
    let o = run_loadgen(&srv.url(), &args);
    let r = &o.report;
    assert_eq!(o.code, 0, "stderr: {}\nreport: {r:#}", o.stderr);
    // ids 7, 14, ..., 98: 14 repeats per subscriber.
    assert_eq!(n(r, "duplicates"), 14 * 20, "{r:#}");
    assert_eq!(n(r, "deliveries_received"), 2000);
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "foreign_events"), 0);
    assert_eq!(n(r, "out_of_order"), 0);
}

#[test]
fn seq_flags_are_checked_before_connecting() {
    for bad in [
        &["--seq-regex", r"seq=\d+"][..],
        &["--seq-json-pointer", "pub/data/seq"],
        &["--seq-regex", "(x)", "--seq-json-pointer", "/x"],
    ] {
        let o = run_loadgen("http://127.0.0.1:9", bad);
        assert_eq!(o.code, 2, "{bad:?}: {}", o.stderr);
        assert!(o.stderr.contains("--seq-"), "{bad:?}: {}", o.stderr);
    }
}
