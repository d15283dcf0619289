//! The real `stentor-loadgen` against the real `stentor` binary, on loopback,
//! bounded in time and size.

mod support;

use support::{loadgen, n, stentor_bin, Stentor};

/// Two runs back to back against one node: the second starts while the
/// first's connections are still closing on one side or the other, and must
/// still connect every subscriber (it used to lose a quarter of them to
/// EADDRNOTAVAIL: the port cursor handed out the first run's pairs again).
#[test]
fn back_to_back_runs_connect_everyone() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let url = srv.url();
    for (subs, rate) in [("3000", "2"), ("1000", "10"), ("3000", "2")] {
        let o = loadgen(&[
            "run",
            "--url",
            &url,
            "--subscribers",
            subs,
            "--rate",
            rate,
            "--duration-s",
            "1",
            "--connect-rate",
            "20000",
            "--drain-s",
            "5",
            "--min-connected",
            "1",
            "--max-loss",
            "0",
        ]);
        let r = &o.report;
        assert_eq!(o.code, 0, "run {subs}: stderr {}\nreport {r:#}", o.stderr);
        assert_eq!(
            n(r, "subscribers_connected"),
            subs.parse::<u64>().expect("count"),
            "{r:#}"
        );
        assert!(
            r["connect_errors"]
                .as_object()
                .is_some_and(|e| e.is_empty()),
            "{r:#}"
        );
        assert_eq!(n(r, "loss"), 0);
    }
}

/// Two independent nodes, weights 3:1: subscribers spread by weight, each
/// node publishes its own events (the default publish targets), and every
/// subscriber is owed exactly its node's events. Told the same nodes form a
/// cluster, the loadgen expects every event everywhere: exactly half is lost.
#[test]
fn independent_nodes_are_measured_per_node() {
    let Some(bin) = stentor_bin() else { return };
    let a = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let b = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let (ua, ub) = (format!("{}@3", a.url()), b.url());
    let base = [
        "run",
        "--url",
        &ua,
        "--url",
        &ub,
        "--subscribers",
        "400",
        "--topics",
        "2",
        "--rate",
        "40",
        "--duration-s",
        "1",
        "--drain-s",
        "3",
    ];
    let o = loadgen(&base);
    let r = &o.report;
    assert_eq!(o.code, 0, "{}\n{r:#}", o.stderr);
    assert_eq!(r["topology"], "independent");
    assert_eq!(n(r, "nodes.0.subscribers_requested"), 300);
    assert_eq!(n(r, "nodes.1.subscribers_requested"), 100);
    // 40 events, 2 topics, each topic's events alternate between the nodes:
    // every subscriber is owed 10.
    assert_eq!(n(r, "nodes.0.deliveries_expected"), 3000, "{r:#}");
    assert_eq!(n(r, "nodes.1.deliveries_expected"), 1000, "{r:#}");
    assert_eq!(n(r, "nodes.0.deliveries_received"), 3000, "{r:#}");
    assert_eq!(n(r, "nodes.1.deliveries_received"), 1000, "{r:#}");
    assert_eq!(n(r, "deliveries_received"), 4000);
    assert_eq!(n(r, "loss"), 0);

    let mut cluster = base.to_vec();
    cluster.extend(["--topology", "cluster", "--pub-url"]);
    let pub_a = format!("{}/publish", a.url());
    cluster.push(&pub_a);
    let o = loadgen(&cluster);
    let r = &o.report;
    assert_eq!(r["topology"], "cluster");
    // Each owed its topic's 20: node a's 300 get them (a is the only
    // publish target), node b's 100 get none.
    assert_eq!(n(r, "nodes.0.loss"), 0, "{r:#}");
    assert_eq!(n(r, "nodes.1.loss"), 100 * 20, "{r:#}");
    assert_eq!(o.code, 0, "no SLO set: {}", o.stderr);
}

/// A small scenario against the real server: steady, a reconnect storm
/// (every subscriber dropped at once, back after the server's 200 ms
/// `retry:` with Last-Event-ID) and Poisson traffic with churn. Everyone
/// resumes, exactly once, nothing is lost, each stage reports its own
/// figures and SLOs. About 10 s.
#[test]
fn scenario_storm_and_churn_resume_exactly_once() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(
        &bin,
        "127.0.0.1:0",
        // 300 subscribers resume at once from one loopback address: the
        // per-IP resume limit (50/s by default, meant for one client IP)
        // would answer most of them 429.
        &[
            "--workers",
            "1",
            "--retry-ms",
            "200",
            "--resume-rate-per-ip",
            "100000",
        ],
    );
    let o = run_scenario(
        "storm",
        &srv.url(),
        "300",
        r#"
[[stage]]
name = "steady"
duration_s = 2
rate = 20
max_p99_ms = 2000
[[stage]]
name = "storm"
duration_s = 4
rate = 20
storm = true
max_resume_s = 5
[[stage]]
name = "churn"
duration_s = 3
rate = 20
profile = "poisson"
churn_per_s = 0.2
"#,
        &["--drain-s", "5"],
    );
    let r = &o.report;
    assert_eq!(o.code, 0, "{}\n{r:#}", o.stderr);
    assert_eq!(r["stages"].as_array().map(Vec::len), Some(3));
    assert_eq!(n(r, "stages.1.stormed"), 300, "{r:#}");
    assert_eq!(n(r, "stages.1.not_resumed"), 0);
    assert_eq!(n(r, "stages.1.resume_ms.count"), 300);
    assert!(
        n(r, "stages.1.resume_ms.p50") >= 150,
        "after the 200 ms retry: {r:#}"
    );
    assert!(n(r, "stages.2.churned") > 0, "{r:#}");
    assert_eq!(n(r, "stages.0.churned") + n(r, "stages.0.stormed"), 0);
    assert!(n(r, "stages.0.fast_latency_us.count") > 0);
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
    assert_eq!(
        n(r, "resume.resumed_exactly_once"),
        n(r, "resume.resumed_subscribers"),
        "{r:#}"
    );
    assert_eq!(n(r, "disconnects.storm"), 300);
}

/// A distributed run in miniature: two loadgen processes at once against one
/// node, each with its own topics and --histogram-out, then `merge`: counts
/// are the sums, the merged p99 is recomputed from the summed histograms
/// (so it lies between the two runs' own p99s), start offsets are stated.
#[test]
fn two_runs_merge_into_one_report() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let url = srv.url();
    let dir = std::env::temp_dir().join(format!("loadgen-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hist = |i: usize| {
        dir.join(format!("run{i}.hlog"))
            .to_string_lossy()
            .to_string()
    };
    let (h0, h1) = (hist(0), hist(1));
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let runs = [("a", &h0, "300"), ("b", &h1, "200")].map(|(prefix, h, subs)| {
            let url = &url;
            s.spawn(move || {
                loadgen(&[
                    "run",
                    "--url",
                    url,
                    "--subscribers",
                    subs,
                    "--rate",
                    "20",
                    "--duration-s",
                    "2",
                    "--topic-prefix",
                    prefix,
                    "--histogram-out",
                    h,
                ])
            })
        });
        runs.map(|h| h.join().expect("run thread"))
            .into_iter()
            .collect()
    });
    let mut reports = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.code, 0, "{}\n{:#}", o.stderr, o.report);
        assert_eq!(n(&o.report, "foreign_events"), 0);
        let p = dir.join(format!("run{i}.json"));
        std::fs::write(&p, o.report.to_string()).expect("write report");
        reports.push(p);
    }
    let out = dir.join("merged.json");
    let html = dir.join("merged.html");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_stentor-loadgen"))
        .arg("merge")
        .args(&reports)
        .arg("--json")
        .arg(&out)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("merge runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("merged json")).expect("json");
    let page = std::fs::read_to_string(&html).expect("merged html");
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (&outcomes[0].report, &outcomes[1].report);
    for k in [
        "subscribers_connected",
        "deliveries_received",
        "events_accepted",
        "loss",
    ] {
        assert_eq!(
            n(&m, &format!("counts.{k}")),
            n(a, k) + n(b, k),
            "{k}: {m:#}"
        );
    }
    assert_eq!(n(&m, "counts.subscribers_connected"), 500);
    assert_eq!(
        n(&m, "fast_latency_us.count"),
        n(a, "fast_latency_us.count") + n(b, "fast_latency_us.count")
    );
    let (pa, pb, pm) = (
        n(a, "fast_latency_us.p99"),
        n(b, "fast_latency_us.p99"),
        n(&m, "fast_latency_us.p99"),
    );
    // Within histogram precision (3 significant digits).
    assert!(
        pm * 1000 >= pa.min(pb) * 999 && pm * 999 <= pa.max(pb) * 1000,
        "{pa} {pb} {pm}"
    );
    assert!(
        m["start_spread_s"]
            .as_f64()
            .is_some_and(|s| (0.0..5.0).contains(&s)),
        "{m:#}"
    );
    assert!(page.contains("merged") && page.contains("<table>"));
}

/// An IPv6 node: `--url http://[::1]:PORT` connects every subscriber over
/// IPv6 (from ::1, pairs picked by the loadgen), publishes over IPv6, and
/// loses nothing; IPv4 source addresses for an IPv6 node are refused.
#[test]
fn ipv6_node_on_loopback() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(&bin, "[::1]:0", &["--workers", "1"]);
    assert!(srv.addr.is_ipv6(), "{}", srv.addr);
    let url = srv.url();
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let base = [
        "run",
        "--url",
        &url,
        "--subscribers",
        "300",
        "--rate",
        "20",
        "--duration-s",
        "1",
        "--drain-s",
        "3",
        "--max-loss",
        "0",
        "--min-connected",
        "1",
    ];
    for extra in [&[][..], &["--source-ips", "::1"]] {
        let mut args = base.to_vec();
        args.extend(extra);
        let o = loadgen(&args);
        let r = &o.report;
        assert_eq!(o.code, 0, "{extra:?}: stderr {}\nreport {r:#}", o.stderr);
        assert_eq!(n(r, "subscribers_connected"), 300, "{r:#}");
        assert_eq!(n(r, "deliveries_received"), 300 * 20, "{r:#}");
        assert_eq!(n(r, "loss"), 0);
        assert_eq!(r["source_ips"], serde_json::json!(["::1"]), "{r:#}");
    }
    let o = loadgen(&[
        "run",
        "--url",
        &url,
        "--subscribers",
        "1",
        "--source-ips",
        "127.0.0.1",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("IPv6"), "{}", o.stderr);
}

/// `--prometheus-listen`: while a run goes on, `GET /metrics` answers the
/// live figures in the Prometheus text format (checked by `promtool check
/// metrics`), with the subscribers connected and deliveries growing.
#[test]
fn prometheus_endpoint_serves_live_figures() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let Some(bin) = stentor_bin() else { return };
    if !support::require_program("promtool", "apt-get install prometheus") {
        return;
    }
    let srv = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stentor-loadgen"))
        .args(["run", "--url", &srv.url(), "--subscribers", "100"])
        .args(["--rate", "50", "--duration-s", "5", "--drain-s", "3"])
        .args(["--quiet", "--prometheus-listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stentor-loadgen");
    let scrape = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(-1.0)
    };
    // Scrape until a closed second with fast deliveries shows up (the
    // series trails the clock by about two seconds), within the run.
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(8) {
        if let Some(text) = scrape() {
            if value(&text, "loadgen_second_deliveries{class=\"fast\"}") > 0.0 {
                seen = Some(text);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.expect("a scrape with a closed second of deliveries during the run");
    assert_eq!(
        value(&text, "loadgen_subscribers_connected"),
        100.0,
        "{text}"
    );
    assert!(value(&text, "loadgen_deliveries_total") > 0.0, "{text}");
    assert!(value(&text, "loadgen_events_sent_total") > 0.0, "{text}");
    assert!(
        value(&text, "loadgen_second_latency_p99_seconds{class=\"fast\"}") > 0.0,
        "{text}"
    );
    assert!(value(&text, "loadgen_connects_total") >= 100.0, "{text}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--seq-json-pointer` through a real server: the JSON payloads travel as
/// a JSON string in stentor's publish body (the default template quotes
/// them) and arrive as the event data, where the pointer finds the sequence.
#[test]
fn json_payloads_through_stentor() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let o = loadgen(&[
        "run",
        "--url",
        &srv.url(),
        "--subscribers",
        "50",
        "--rate",
        "20",
        "--duration-s",
        "1",
        "--payload-bytes",
        "200",
        "--seq-json-pointer",
        "/seq",
        "--max-loss",
        "0",
    ]);
    let r = &o.report;
    assert_eq!(o.code, 0, "stderr {}\nreport {r:#}", o.stderr);
    assert_eq!(n(r, "deliveries_received"), 50 * 20, "{r:#}");
    assert_eq!(n(r, "foreign_events"), 0, "{r:#}");
    assert_eq!(n(r, "latency_us.count"), 50 * 20, "{r:#}");
}

/// Both latency clocks through a real server: the kernel's receive
/// timestamp (the default) and the loadgen's read. Every delivery and
/// every publish answer gets a time either way, and the report says which
/// clock it used.
#[test]
fn latency_at_kernel_receive_or_at_read() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let mut p50 = Vec::new();
    for at in ["kernel", "read"] {
        let o = loadgen(&[
            "run",
            "--url",
            &srv.url(),
            "--subscribers",
            "40",
            "--rate",
            "20",
            "--duration-s",
            "1",
            "--latency-at",
            at,
            "--max-loss",
            "0",
        ]);
        let r = &o.report;
        assert_eq!(o.code, 0, "stderr {}\nreport {r:#}", o.stderr);
        assert_eq!(r["latency_at"], at, "{r:#}");
        assert_eq!(n(r, "deliveries_received"), 40 * 20, "{r:#}");
        assert_eq!(n(r, "latency_us.count"), 40 * 20, "{r:#}");
        // The publish round trip ends on the same clock.
        assert_eq!(n(r, "publish_round_trip_us.count"), 20, "{r:#}");
        p50.push(n(r, "latency_us.p50"));
        p50.push(n(r, "publish_round_trip_us.p50"));
    }
    // Loopback delivery of a 40-stream fan-out: well under a second at
    // either clock (a timestamp taken on the wrong clock would be off by
    // decades).
    assert!(p50.iter().all(|&us| us < 1_000_000), "p50s {p50:?} µs");
}

/// Run the loadgen against `url` with `subscribers` and the scenario
/// `toml` (in a temporary file, removed after), `--max-loss 0` and `extra`.
fn run_scenario(
    tag: &str,
    url: &str,
    subscribers: &str,
    toml: &str,
    extra: &[&str],
) -> support::Outcome {
    let file = std::env::temp_dir().join(format!("loadgen-{tag}-{}.toml", std::process::id()));
    std::fs::write(&file, toml).expect("write scenario");
    let path = file.to_string_lossy().to_string();
    let mut args = vec![
        "run",
        "--url",
        url,
        "--subscribers",
        subscribers,
        "--scenario",
        &path,
        "--max-loss",
        "0",
    ];
    args.extend_from_slice(extra);
    let o = loadgen(&args);
    let _ = std::fs::remove_file(&file);
    o
}

/// The `series` points as (second, point).
fn series(r: &serde_json::Value) -> Vec<(u64, &serde_json::Value)> {
    r["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| (p["t_s"].as_u64().expect("t_s"), p))
        .collect()
}

/// A first stage that brings the 400 subscribers up at 100/s while
/// publishing goes on (nobody connects before): `connected` in the series
/// climbs by about 100 a second, and each joiner is owed exactly the events
/// sent after its stream opened, so nothing is lost and far less than
/// 400 x every event is expected. About 8 s.
#[test]
fn stage_ramp_opens_subscribers_at_its_rate() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(&bin, "127.0.0.1:0", &["--workers", "1"]);
    let o = run_scenario(
        "ramp",
        &srv.url(),
        "400",
        r#"
[[stage]]
name = "ramp"
duration_s = 4
rate = 20
connect_per_s = 100
[[stage]]
name = "steady"
duration_s = 2
rate = 20
"#,
        &["--drain-s", "5"],
    );
    let r = &o.report;
    assert_eq!(o.code, 0, "{}\n{r:#}", o.stderr);
    assert_eq!(n(r, "stages.0.ramped"), 400, "{r:#}");
    assert_eq!(n(r, "stages.0.ramp_connected"), 400);
    assert_eq!(n(r, "stages.1.ramped"), 0);
    assert_eq!(n(r, "subscribers_connected"), 400);
    assert_eq!(r["connect_errors"], serde_json::json!({}), "{r:#}");

    // Seconds wholly inside the ramp: about 100 more connected each (point
    // t_s = s says how many were connected at the end of second s).
    let start = r["publish_start_s"].as_f64().expect("publish_start_s");
    let pts = series(r);
    let connected = |t: u64| {
        pts.iter()
            .find(|(s, _)| *s == t)
            .map_or(0, |(_, p)| p["connected"].as_u64().unwrap_or(0))
    };
    let inside: Vec<u64> = (1..8u64)
        .filter(|&t| t as f64 >= start && t as f64 + 1.0 <= start + 4.0)
        .collect();
    assert!(inside.len() >= 3, "start {start}: {inside:?}");
    for &t in &inside {
        let rise = connected(t) - connected(t - 1);
        assert!(
            (60..=140).contains(&rise),
            "second {t}: {rise} connected (about 100 expected); series {:#}",
            r["series"]
        );
    }
    assert!(
        connected(inside[0] - 1) < 200,
        "not all at once: {:#}",
        r["series"]
    );
    let opened: u64 = pts
        .iter()
        .map(|(_, p)| p["connects"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(opened, 400);

    // Owed what was sent after joining: subscriber k joins at k/100 s and
    // misses ~20 ev/s x k/100 s of the 120 events, ~32,000 owed in all.
    assert_eq!(n(r, "events_accepted"), 120, "{r:#}");
    let expected = n(r, "deliveries_expected");
    assert!((29_000..=34_000).contains(&expected), "{expected}: {r:#}");
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
}

/// Slow subscribers per stage: 10% trickle through a short "hiccup" (a few
/// KB behind, within the kernel's buffers) and read normally after it;
/// 20% stall through a 4 s "flood" of 1 KiB events, which the server
/// (16 KiB queue) drops: slow drops of that stage, inside its window, each
/// resumed with Last-Event-ID and complete; the fast 80 lose nothing.
/// About 12 s.
#[test]
fn slow_stages_drop_or_recover_and_fast_subscribers_lose_nothing() {
    let Some(bin) = stentor_bin() else { return };
    let srv = Stentor::start(
        &bin,
        "127.0.0.1:0",
        &[
            "--workers",
            "1",
            "--queue-bytes-max",
            "16384",
            "--retry-ms",
            "200",
            "--resume-rate-per-ip",
            "100000",
        ],
    );
    let html = std::env::temp_dir().join(format!("loadgen-slow-{}.html", std::process::id()));
    let html_s = html.to_string_lossy().to_string();
    let o = run_scenario(
        "slow",
        &srv.url(),
        "100",
        r#"
[[stage]]
name = "calm"
duration_s = 1
rate = 20
[[stage]]
name = "hiccup"
duration_s = 1
rate = 10
slow_fraction = 0.1
slow_mode = "trickle:200"
[[stage]]
name = "calm again"
duration_s = 1
rate = 20
[[stage]]
name = "flood"
duration_s = 4
rate = 100
payload_bytes = 1024
slow_fraction = 0.2
slow_mode = "stall"
[[stage]]
name = "after"
duration_s = 2
rate = 20
"#,
        &["--drain-s", "8", "--html", &html_s],
    );
    let page = std::fs::read_to_string(&html).unwrap_or_default();
    let _ = std::fs::remove_file(&html);
    // The HTML report's stage table: slowed / slow drops / recovered.
    assert!(
        page.contains("<td>flood</td>") && page.contains("<td>20 / 20 / 0</td>"),
        "stage table missing from the HTML report"
    );
    let r = &o.report;
    assert_eq!(o.code, 0, "{}\n{r:#}", o.stderr);
    // The hiccup's 10 (all among the flood's 20) fell behind and caught up.
    assert_eq!(n(r, "stages.1.slowed"), 10, "{r:#}");
    assert_eq!(n(r, "stages.1.slow_dropped"), 0, "{r:#}");
    assert_eq!(n(r, "stages.1.slow_recovered"), 10, "{r:#}");
    // The flood's 20 were dropped by the server: slow drops, not loss.
    assert_eq!(n(r, "stages.3.slowed"), 20, "{r:#}");
    assert_eq!(n(r, "stages.3.slow_dropped"), 20, "{r:#}");
    assert_eq!(n(r, "stages.3.slow_recovered"), 0);
    assert_eq!(n(r, "slow_clients"), 20);
    assert_eq!(n(r, "slow_clients_dropped"), 20);
    let start = r["publish_start_s"].as_f64().expect("publish_start_s");
    let drops: Vec<(u64, u64)> = series(r)
        .iter()
        .map(|(t, p)| (*t, p["slow_drops"].as_u64().unwrap_or(0)))
        .filter(|&(_, d)| d > 0)
        .collect();
    assert_eq!(drops.iter().map(|d| d.1).sum::<u64>(), 20, "{drops:?}");
    for &(t, _) in &drops {
        // The flood runs from 3 s to 7 s after publishing began.
        assert!(
            t as f64 + 1.0 > start + 3.0 && (t as f64) < start + 7.0,
            "slow drop in second {t}, publishing began at {start} s: {drops:?}"
        );
    }
    // Dropped ones resumed and got everything exactly once.
    assert_eq!(n(r, "resume.resumed_subscribers"), 20, "{r:#}");
    assert_eq!(n(r, "resume.resumed_exactly_once"), 20, "{r:#}");
    assert_eq!(n(r, "slow.stage_slowed_missing"), 0, "{r:#}");
    // The fast 80 lost nothing.
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
    assert_eq!(
        n(r, "deliveries_expected"),
        80 * n(r, "events_accepted"),
        "{r:#}"
    );
}
