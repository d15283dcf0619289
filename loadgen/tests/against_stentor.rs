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
