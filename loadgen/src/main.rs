//! stentor-loadgen: drives many SSE subscribers and a publisher against a
//! server and measures latency, loss, duplicates and dropped slow clients.
//!
//! Modules, one job each: [`cli`] (flags and their validation), [`run`]
//! (the phases of a run, each with a deadline), [`engine`] (io_uring
//! subscriber threads on direct descriptors), [`stream`] (one stream's bytes
//! to counts, with `stentor::wire::sse::Parser`), [`http`] (response heads,
//! chunked coding), [`track`] (per-subscriber sequence bookkeeping),
//! [`payload`] (what an event's data carries), [`publisher`] (open-loop
//! publishing), [`shared`] (cross-thread flags and counters), [`stats`] and
//! [`report`] (measurements, JSON, summary, SLO verdict), [`html`] (the page).
//! Usage and report fields: `docs/reference/loadgen.md`.

// mimalloc, as in the server: the parser's few allocations per event
// (data, event type, id) cost 10% of a subscriber thread's CPU under
// glibc's malloc at a million events a second, CPU the server it measures
// shares on one machine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod engine;
mod html;
mod http;
mod merge;
mod payload;
mod prom;
mod publisher;
mod report;
mod run;
mod scenario;
mod seq;
mod series;
mod shared;
mod stats;
mod stream;
mod track;

use clap::Parser;

/// Exit codes: a contract with CI scripts.
const EXIT_SLO_MET: i32 = 0;
const EXIT_SLO_MISSED: i32 = 1;
const EXIT_USAGE_OR_CONNECT: i32 = 2;

fn main() {
    std::process::exit(real_main());
}

fn merge_main(m: &cli::MergeArgs) -> i32 {
    let merged = match merge::merge(&m.reports) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("stentor-loadgen merge: {e}");
            return EXIT_USAGE_OR_CONNECT;
        }
    };
    if let Some(path) = &m.json {
        let text = serde_json::to_string_pretty(&merged).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!(
                "stentor-loadgen merge: cannot write {}: {e}",
                path.display()
            );
            return EXIT_USAGE_OR_CONNECT;
        }
    }
    if let Some(path) = &m.html {
        if let Err(e) = std::fs::write(path, merge::html(&merged)) {
            eprintln!(
                "stentor-loadgen merge: cannot write {}: {e}",
                path.display()
            );
            return EXIT_USAGE_OR_CONNECT;
        }
    }
    let l = &merged.fast_latency_us;
    println!(
        "merged {} runs (starts within {:.3} s): {} of {} subscribers connected, loss {:.6}, fast p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        merged.runs.len(),
        merged.start_spread_s,
        merged.counts.get("subscribers_connected").copied().unwrap_or(0),
        merged.counts.get("subscribers_requested").copied().unwrap_or(0),
        merged.loss_ratio,
        l.p50 as f64 / 1e3,
        l.p99 as f64 / 1e3,
        l.max as f64 / 1e3
    );
    for w in &merged.warnings {
        println!("warning: {w}");
    }
    EXIT_SLO_MET
}

fn real_main() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return EXIT_SLO_MET;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return EXIT_USAGE_OR_CONNECT;
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "stentor-loadgen: {} (try --help)",
                line.trim_start_matches("error: ")
            );
            return EXIT_USAGE_OR_CONNECT;
        }
    };
    let args = match cli.command {
        cli::Command::Run(args) => args,
        cli::Command::Merge(m) => return merge_main(&m),
    };
    let nofile = Some(stentor::sys::raise_nofile() as usize);
    let mut cfg = match args.validate(nofile) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stentor-loadgen: {e}");
            return EXIT_USAGE_OR_CONNECT;
        }
    };
    // Source pairs earlier connections still hold toward the server: skipped,
    // and counted against the address space before anything connects.
    let servers: Vec<std::net::SocketAddr> = cfg.nodes.iter().map(|n| n.server).collect();
    let busy = if cfg.source_ips.is_empty() {
        Default::default()
    } else {
        engine::busy::snapshot(&servers)
    };
    match cfg.plan_sources(busy) {
        Ok(Some(note)) if !cfg.quiet => eprintln!("stentor-loadgen: {note}"),
        Ok(_) => {}
        Err(e) => {
            eprintln!("stentor-loadgen: {e}");
            return EXIT_USAGE_OR_CONNECT;
        }
    }
    let (json, html_path, quiet) = (cfg.json.clone(), cfg.html.clone(), cfg.quiet);
    shared::install_signal_handlers();
    let report = match run::run(cfg, &args.url.join(" ")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stentor-loadgen: {}", e.0);
            return EXIT_USAGE_OR_CONNECT;
        }
    };
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("stentor-loadgen: cannot encode the report: {e}");
                return EXIT_USAGE_OR_CONNECT;
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("stentor-loadgen: cannot write {}: {e}", path.display());
            return EXIT_USAGE_OR_CONNECT;
        }
    }
    if let Some(path) = html_path {
        if let Err(e) = std::fs::write(&path, html::render(&report)) {
            eprintln!("stentor-loadgen: cannot write {}: {e}", path.display());
            return EXIT_USAGE_OR_CONNECT;
        }
    }
    if !quiet {
        print!("{}", report::summary(&report));
    }
    if report.slo.met {
        EXIT_SLO_MET
    } else {
        EXIT_SLO_MISSED
    }
}
