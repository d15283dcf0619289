//! What a configuration reload (SIGHUP) may change in a running node.
//!
//! A setting is *live* when the node can take a new value without dropping
//! a connection: it is read per request, per stream open, per tick or per
//! log line (tokens, limits, timeouts, log settings). Everything else sizes
//! something built once at startup (listeners, worker threads, io_uring
//! fixed-file tables, history rings) and *needs a restart*. A setting not
//! listed in [`LIVE`] needs a restart: a new flag is safe until someone
//! makes it live on purpose.

use super::Config;

/// The settings a reload applies in place (flag names without dashes).
pub const LIVE: &[&str] = &[
    // Who may publish and subscribe, and from where.
    "publish-token",
    "subscribe-token",
    "cors-origin",
    // Logs.
    "log-level",
    "log-format",
    "access-log",
    "access-log-lines-per-s-max",
    // Per-request and per-stream limits, read when a request or stream starts.
    "max-connections-per-ip",
    "publish-rate-per-s-max",
    "headers-count-max",
    "uri-bytes-max",
    "body-bytes-max",
    "request-timeout-ms",
    "idle-timeout-ms",
    "topics-per-stream-max",
    "topic-bytes-max",
    "topics-max",
    "replay-events-max",
    "publish-batch-events-max",
    // Stream pacing and slow-client budgets, read every tick.
    "heartbeat-ms",
    "retry-ms",
    "queue-bytes-max",
    "queue-age-ms-max",
    "shutdown-ms",
    // Read when a drain starts (node) and when it closes streams (workers).
    "drain-delay-ms",
    "reconnect-spread-ms",
];

impl Config {
    /// Compare the running configuration with a newly loaded one: the
    /// settings that differ and can be applied live, and those that differ
    /// but only take effect after a restart (the node keeps the old value
    /// and says so). Both lists hold flag names in `--help` order; both are
    /// empty when nothing changed.
    pub fn reload_diff(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
        // Compare through the serialised form: every setting, whatever its
        // type, with no list here to fall out of date when a flag is added.
        let old_values = toml::Table::try_from(old).unwrap_or_default();
        let new_values = toml::Table::try_from(new).unwrap_or_default();
        let mut changed_live = Vec::new();
        let mut needs_restart = Vec::new();
        for (_, long, _) in super::file::settings() {
            if old_values.get(&long) == new_values.get(&long) {
                continue;
            }
            if LIVE.contains(&long.as_str()) {
                changed_live.push(long);
            } else {
                needs_restart.push(long);
            }
        }
        (changed_live, needs_restart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("stentor").chain(args.iter().copied()))
            .expect("valid args")
    }

    #[test]
    fn nothing_changed_is_two_empty_lists() {
        let a = parse(&["--publish-token", "0123456789abcdef"]);
        assert_eq!(Config::reload_diff(&a, &a.clone()), (vec![], vec![]));
    }

    #[test]
    fn tokens_levels_and_limits_are_live() {
        let old = parse(&[]);
        let new = parse(&[
            "--publish-token",
            "0123456789abcdef",
            "--subscribe-token",
            "fedcba9876543210",
            "--log-level",
            "debug",
            "--publish-rate-per-s-max",
            "10",
            "--request-timeout-ms",
            "2000",
            "--queue-bytes-max",
            "65536",
            "--cors-origin",
            "https://a.example",
            "--log-format",
            "json",
            "--access-log",
            "--access-log-lines-per-s-max",
            "5",
        ]);
        let (live, restart) = Config::reload_diff(&old, &new);
        assert!(restart.is_empty(), "{restart:?}");
        for key in [
            "publish-token",
            "subscribe-token",
            "log-level",
            "log-format",
            "access-log",
            "access-log-lines-per-s-max",
            "publish-rate-per-s-max",
            "request-timeout-ms",
            "queue-bytes-max",
            "cors-origin",
        ] {
            assert!(live.contains(&key.to_string()), "{key} not in {live:?}");
        }
        // Removing a token is a change too.
        let (live, _) = Config::reload_diff(&new, &old);
        assert!(live.contains(&"publish-token".to_string()));
    }

    #[test]
    fn listen_workers_connections_and_history_need_a_restart() {
        let old = parse(&[]);
        let new = parse(&[
            "--listen",
            "127.0.0.1:9999",
            "--workers",
            "3",
            "--max-connections",
            "1000",
            "--history-events-max",
            "5",
            "--history-bytes-max",
            "5000",
            "--head-bytes-max",
            "4096",
            "--retry-ms",
            "100",
        ]);
        let (live, restart) = Config::reload_diff(&old, &new);
        assert_eq!(live, vec!["retry-ms".to_string()]);
        assert_eq!(
            restart,
            [
                "listen",
                "workers",
                "max-connections",
                "head-bytes-max",
                "history-events-max",
                "history-bytes-max"
            ]
        );
    }

    #[test]
    fn every_setting_is_classified_and_live_names_real_settings() {
        let settings: Vec<String> = super::super::file::settings()
            .into_iter()
            .map(|(_, long, _)| long)
            .collect();
        for key in LIVE {
            assert!(
                settings.iter().any(|s| s == key),
                "LIVE names {key}, which is not a setting"
            );
        }
    }
}
