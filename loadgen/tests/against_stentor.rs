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
        &["--workers", "1", "--retry-ms", "200"],
    );
    let file = std::env::temp_dir().join(format!("loadgen-scenario-{}.toml", std::process::id()));
    std::fs::write(
        &file,
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
    )
    .expect("write scenario");
    let url = srv.url();
    let path = file.to_string_lossy().to_string();
    let o = loadgen(&[
        "run",
        "--url",
        &url,
        "--subscribers",
        "300",
        "--scenario",
        &path,
        "--max-loss",
        "0",
        "--drain-s",
        "5",
    ]);
    let _ = std::fs::remove_file(&file);
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
