//! Every knob of the server: its flag, its environment variable, its default,
//! its allowed range and its unit (in the name).
//!
//! Validation happens here, once, at startup: a bad value ends the process
//! with exit code 2 and one line naming the flag and the range, never a panic.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::hub::history::HistoryLimits;
use crate::hub::HubLimits;
use crate::wire::http::Limits;

mod file;
mod reload;

pub use reload::LIVE as RELOAD_LIVE;

pub use file::{default_toml, effective_toml, load, LoadError, Loaded, Source};

/// `stentor --version`: the package version and the git revision it was
/// built from (`unknown` outside a git checkout), set by build.rs.
pub const VERSION: &str = env!("STENTOR_VERSION_LONG");

/// stentor — a Server-Sent Events edge server for Linux on io_uring.
///
/// Publishers POST events to topics; clients subscribe with EventSource to
/// GET /events?topic=NAME. Every flag can also be set by the environment
/// variable shown next to it, or in a `--config` TOML file (keys = flag
/// names); a flag beats its variable, which beats the file.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "stentor", version = VERSION, about, long_about = None, max_term_width = 100)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// `stentor config check FILE`; none = run the server.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    // ---- Network -------------------------------------------------------
    /// Address to listen on (IPv4 or [IPv6]:port). Port 0 lets the kernel pick.
    #[arg(
        long,
        env = "STENTOR_LISTEN",
        default_value = "0.0.0.0:8080",
        help_heading = "Network"
    )]
    pub listen: SocketAddr,

    /// Worker threads, each with its own io_uring and listener; 0 = one per core.
    #[arg(long, env = "STENTOR_WORKERS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=256), help_heading = "Network")]
    pub workers: u16,

    /// Pin each worker thread to a CPU of its own (auto: when there is one
    /// worker per CPU the process may run on, as with --workers 0; off:
    /// leave placement to the kernel's scheduler).
    #[arg(long = "pin-workers", env = "STENTOR_PIN_WORKERS", value_enum,
          default_value_t = PinWorkers::Auto, help_heading = "Network")]
    pub pin_workers: PinWorkers,

    /// Connections the node holds at most; past it new ones get 503 [1..=4000000].
    #[arg(long, env = "STENTOR_MAX_CONNECTIONS", default_value_t = 120_000,
          value_parser = clap::value_parser!(u32).range(1..=4_000_000), help_heading = "Network")]
    pub max_connections: u32,

    /// Connections one client IP may hold at once; past it 429 [1..=4000000].
    #[arg(long, env = "STENTOR_MAX_CONNECTIONS_PER_IP", default_value_t = 150_000,
          value_parser = clap::value_parser!(u32).range(1..=4_000_000), help_heading = "Network")]
    pub max_connections_per_ip: u32,

    // ---- Requests ------------------------------------------------------
    /// Largest request head (request line + headers) in bytes; past it 431 [256..=1048576].
    #[arg(long, env = "STENTOR_HEAD_BYTES_MAX", default_value_t = 8192,
          value_parser = clap::value_parser!(u32).range(256..=1_048_576), help_heading = "Requests")]
    pub head_bytes_max: u32,

    /// Most headers in one request; past it 431 [4..=256].
    #[arg(long, env = "STENTOR_HEADERS_COUNT_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(4..=256), help_heading = "Requests")]
    pub headers_count_max: u16,

    /// Longest request target (path + query) in bytes; past it 414 [64..=65536].
    #[arg(long, env = "STENTOR_URI_BYTES_MAX", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(64..=65_536), help_heading = "Requests")]
    pub uri_bytes_max: u32,

    /// Largest request body (publish) in bytes after decoding; past it 413 [1..=67108864].
    #[arg(long, env = "STENTOR_BODY_BYTES_MAX", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u32).range(1..=67_108_864), help_heading = "Requests")]
    pub body_bytes_max: u32,

    /// Time a client has to send a whole request; then 408 and close [100..=600000].
    #[arg(long, env = "STENTOR_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(100..=600_000), help_heading = "Requests")]
    pub request_timeout_ms: u32,

    /// Bytes all request buffers of one worker may hold; past it 503 [65536..=17179869184].
    #[arg(long, env = "STENTOR_REQUEST_BUFFERS_BYTES_MAX", default_value_t = 268_435_456,
          value_parser = clap::value_parser!(u64).range(65_536..=17_179_869_184), help_heading = "Requests")]
    pub request_buffers_bytes_max: u64,

    /// Time an idle keep-alive connection (no stream) is kept open [100..=3600000].
    #[arg(long, env = "STENTOR_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u32).range(100..=3_600_000), help_heading = "Requests")]
    pub idle_timeout_ms: u32,

    // ---- Streams -------------------------------------------------------
    /// Interval of the heartbeat comment sent to otherwise idle streams [100..=3600000].
    #[arg(long, env = "STENTOR_HEARTBEAT_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u32).range(100..=3_600_000), help_heading = "Streams")]
    pub heartbeat_ms: u32,

    /// Reconnection delay sent to clients in the stream's first `retry:` [0..=3600000].
    #[arg(long, env = "STENTOR_RETRY_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u32).range(0..=3_600_000), help_heading = "Streams")]
    pub retry_ms: u32,

    /// Topics one stream may subscribe to; more gets 400 [1..=1024].
    #[arg(long, env = "STENTOR_TOPICS_PER_STREAM_MAX", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Streams")]
    pub topics_per_stream_max: u16,

    /// Longest topic name in bytes (A-Z a-z 0-9 and `-_.:/`) [1..=1024].
    #[arg(long, env = "STENTOR_TOPIC_BYTES_MAX", default_value_t = 128,
          value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Streams")]
    pub topic_bytes_max: u16,

    /// Bytes queued for one slow connection before it is dropped [4096..=1073741824].
    #[arg(long, env = "STENTOR_QUEUE_BYTES_MAX", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(4096..=1_073_741_824), help_heading = "Streams")]
    pub queue_bytes_max: u32,

    /// Age of the oldest queued frame before its connection is dropped [100..=3600000].
    #[arg(long, env = "STENTOR_QUEUE_AGE_MS_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(100..=3_600_000), help_heading = "Streams")]
    pub queue_age_ms_max: u32,

    /// Events kept per topic for Last-Event-ID resume [0..=10000000].
    #[arg(long, env = "STENTOR_HISTORY_EVENTS_MAX", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000), help_heading = "Streams")]
    pub history_events_max: u32,

    /// Bytes of encoded frames kept per topic for resume [0..=4294967295].
    #[arg(
        long,
        env = "STENTOR_HISTORY_BYTES_MAX",
        default_value_t = 1_048_576,
        help_heading = "Streams"
    )]
    pub history_bytes_max: u32,

    /// Topics the node keeps state for; a publish creating one more gets 503 [1..=10000000].
    #[arg(long, env = "STENTOR_TOPICS_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Streams")]
    pub topics_max: u32,

    /// Events one Last-Event-ID replay sends at most (newest kept; a notice tells the client) [1..=10000000].
    #[arg(long, env = "STENTOR_REPLAY_EVENTS_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Streams")]
    pub replay_events_max: u32,

    /// Events one POST /publish JSON array may carry; more gets 413 [1..=100000].
    #[arg(long, env = "STENTOR_PUBLISH_BATCH_EVENTS_MAX", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000), help_heading = "Streams")]
    pub publish_batch_events_max: u32,

    // ---- Security ------------------------------------------------------
    /// Bearer token required to publish; unset = publishing only from loopback.
    #[arg(
        long,
        env = "STENTOR_PUBLISH_TOKEN",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub publish_token: Option<String>,

    /// Bearer token (header or `access_token` query) required to subscribe.
    #[arg(
        long,
        env = "STENTOR_SUBSCRIBE_TOKEN",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub subscribe_token: Option<String>,

    /// Origins allowed by CORS, comma-separated, or `*`; unset = no CORS headers.
    #[arg(
        long,
        env = "STENTOR_CORS_ORIGIN",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub cors_origin: Vec<String>,

    /// Publish requests per second allowed per token or client IP; past it 429 [1..=10000000].
    #[arg(long, env = "STENTOR_PUBLISH_RATE_PER_S_MAX", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Security")]
    pub publish_rate_per_s_max: u32,

    /// Peers (CIDR, comma-separated) whose Forwarded / X-Forwarded-For name the client.
    #[arg(
        long,
        env = "STENTOR_TRUSTED_PROXY",
        value_delimiter = ',',
        value_parser = parse_cidr,
        help_heading = "Security"
    )]
    pub trusted_proxy: Vec<crate::api::client::Cidr>,

    /// Require a PROXY protocol v1/v2 header on every connection from a --trusted-proxy peer.
    #[arg(long, env = "STENTOR_PROXY_PROTOCOL", help_heading = "Security")]
    pub proxy_protocol: bool,

    /// Resumes (Last-Event-ID replays) per second allowed per client IP; past it 429 [1..=10000000].
    #[arg(long, env = "STENTOR_RESUME_RATE_PER_IP", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Security")]
    pub resume_rate_per_ip: u32,

    /// JWT key for both roles: an HMAC secret (32+ bytes) or @PATH to a PEM public key.
    #[arg(
        long,
        env = "STENTOR_JWT_KEY",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub jwt_key: Option<String>,

    /// JWT key for publishers' tokens (overrides --jwt-key for them).
    #[arg(
        long,
        env = "STENTOR_JWT_PUBLISHER_KEY",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub jwt_publisher_key: Option<String>,

    /// JWT key for subscribers' tokens (overrides --jwt-key for them).
    #[arg(
        long,
        env = "STENTOR_JWT_SUBSCRIBER_KEY",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub jwt_subscriber_key: Option<String>,

    /// JWT `iss` every token must carry; unset = not checked.
    #[arg(long, env = "STENTOR_JWT_ISSUER", help_heading = "Security")]
    pub jwt_issuer: Option<String>,

    /// JWT `aud` every token must carry; unset = tokens with an `aud` are refused.
    #[arg(long, env = "STENTOR_JWT_AUDIENCE", help_heading = "Security")]
    pub jwt_audience: Option<String>,

    /// Streams' tokens: off (ignored), optional (a token unlocks private events) or
    /// required (401/403 before the stream); default optional with a subscriber key, else off.
    #[arg(
        long,
        env = "STENTOR_SUBSCRIBE_AUTH",
        value_enum,
        help_heading = "Security"
    )]
    pub subscribe_auth: Option<crate::api::authz::SubscribeAuth>,

    /// Bearer token that may list every stream (GET /subscriptions) whatever its topics.
    #[arg(
        long,
        env = "STENTOR_ADMIN_TOKEN",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub admin_token: Option<String>,

    // ---- Operations ----------------------------------------------------
    /// Time allowed on SIGTERM/SIGINT to flush queued frames before closing [0..=600000].
    #[arg(long, env = "STENTOR_SHUTDOWN_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(0..=600_000), help_heading = "Operations")]
    pub shutdown_ms: u32,

    /// On SIGTERM, keep serving this long with /readyz answering 503 before
    /// closing the listeners, so a load balancer stops sending new streams
    /// first; a second signal skips the wait [0..=600000].
    #[arg(long, env = "STENTOR_DRAIN_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=600_000), help_heading = "Operations")]
    pub drain_delay_ms: u32,

    /// Streams closed by a drain get a last `retry:` of --retry-ms plus a
    /// delay drawn uniformly from this window, so clients reconnect spread
    /// over it instead of all at once; 0 sends none [0..=3600000].
    #[arg(long, env = "STENTOR_RECONNECT_SPREAD_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(0..=3_600_000), help_heading = "Operations")]
    pub reconnect_spread_ms: u32,

    /// Keep history across restarts: written here (atomically) on shutdown,
    /// loaded at start; a missing, stale or corrupt file is logged and ignored.
    /// Embedded broker only: with --broker redis:// Redis keeps the history.
    #[arg(
        long,
        env = "STENTOR_HISTORY_FILE",
        value_name = "PATH",
        help_heading = "Operations"
    )]
    pub history_file: Option<PathBuf>,

    /// Serve /metrics, /readyz and /healthz on this separate address; the
    /// public port then answers 404 for /metrics.
    #[arg(
        long,
        env = "STENTOR_ADMIN_LISTEN",
        value_name = "ADDR",
        help_heading = "Operations"
    )]
    pub admin_listen: Option<SocketAddr>,

    /// Log filter: a level (error, warn, info, debug, trace, off) or RUST_LOG-style
    /// directives, e.g. `info,stentor::worker=debug`; RUST_LOG is read when neither
    /// this flag nor its variable is set.
    #[arg(long, env = "STENTOR_LOG_LEVEL", default_value = "info",
          value_parser = parse_log_filter, help_heading = "Operations")]
    pub log_level: String,

    /// Log line format: logfmt (`key=value`, quoted where needed) or json (one object per line).
    #[arg(long, env = "STENTOR_LOG_FORMAT", value_enum, default_value_t = crate::log::Format::Logfmt,
          help_heading = "Operations")]
    pub log_format: crate::log::Format,

    /// Log every non-stream request and every stream open and close (target stentor::access).
    #[arg(long, env = "STENTOR_ACCESS_LOG", value_parser = clap::builder::BoolishValueParser::new(),
          help_heading = "Operations")]
    pub access_log: bool,

    /// Access-log lines written per second at most; the rest are counted and summarised [1..=1000000].
    #[arg(long, env = "STENTOR_ACCESS_LOG_LINES_PER_S_MAX", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Operations")]
    pub access_log_lines_per_s_max: u32,

    // ---- Fleet ---------------------------------------------------------
    /// Where events are ordered and kept: `embedded` (this node alone) or
    /// `redis://[user:pass@]HOST:PORT[/DB]` / `rediss://…` (a fleet of nodes
    /// sharing one Redis >= 7; see docs/design/cluster.md).
    #[arg(
        long,
        env = "STENTOR_BROKER",
        default_value = "embedded",
        hide_env_values = true,
        help_heading = "Fleet"
    )]
    #[serde(serialize_with = "serialize_broker_url")]
    pub broker: String,

    /// Part of every Redis key: fleets sharing one Redis keep apart by namespace.
    #[arg(long, env = "STENTOR_BROKER_NAMESPACE", default_value = crate::broker::NAMESPACE_DEFAULT,
          help_heading = "Fleet")]
    pub broker_namespace: String,

    /// Entries kept in the fleet's shared log; a node further behind gets a gap [1000..=100000000].
    #[arg(long, env = "STENTOR_BROKER_LOG_EVENTS_MAX", default_value_t = crate::broker::LOG_EVENTS_MAX_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1_000..=100_000_000), help_heading = "Fleet")]
    pub broker_log_events_max: u64,

    /// Time to connect to Redis before trying again later [1..=60000].
    #[arg(long, env = "STENTOR_BROKER_CONNECT_TIMEOUT_MS", default_value_t = crate::broker::CONNECT_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=60_000), help_heading = "Fleet")]
    pub broker_connect_timeout_ms: u64,

    /// Time one Redis command may take before the connection is dropped [1..=60000].
    #[arg(long, env = "STENTOR_BROKER_IO_TIMEOUT_MS", default_value_t = crate::broker::IO_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=60_000), help_heading = "Fleet")]
    pub broker_io_timeout_ms: u64,

    /// TOML file of settings: keys are the flag names (`max-connections` or
    /// `max_connections`); flags and STENTOR_* variables override it.
    #[arg(
        long,
        env = "STENTOR_CONFIG",
        value_name = "FILE",
        help_heading = "Operations"
    )]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Subcommands; without one, stentor runs the server.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a file generated from this command line's definition, so what
    /// ships (the default config, the man page, completions) never drifts
    /// from the flags. For packaging; hidden from --help.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

/// What `stentor generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// deploy/stentor.toml: every setting commented out at its default.
    Config,
    /// The man page, stentor(1), in roff.
    Man,
    /// Shell completions.
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE and print the effective configuration (FILE, then the
    /// STENTOR_* variables and flags over it) as TOML, secrets redacted;
    /// exit 0 when it is valid, 2 (with one line naming the key) when not.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// `--log-level`: checked here so a typo exits 2 like any other bad value.
/// The broker URL as `config check` prints it: without its password.
fn serialize_broker_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if url == BROKER_EMBEDDED {
        s.serialize_str(url)
    } else {
        s.serialize_str(&crate::broker::redis::redact_url(url))
    }
}

/// `--broker` for a node that is its own broker.
pub const BROKER_EMBEDDED: &str = "embedded";

fn parse_log_filter(text: &str) -> Result<String, String> {
    crate::log::parse_filter(text).map(|_| text.trim().to_string())
}

/// `--trusted-proxy` values: an address or a CIDR block.
fn parse_cidr(s: &str) -> Result<crate::api::client::Cidr, String> {
    s.trim().parse()
}

/// A configuration that parses but cannot work (checked across flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `--pin-workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinWorkers {
    /// One CPU per worker, when there is one worker per CPU of the
    /// process's affinity set.
    Auto,
    /// No pinning.
    Off,
}

impl Config {
    /// The command as the man page and completions describe it.
    pub fn command_for_docs() -> clap::Command {
        use clap::CommandFactory;
        // The man page renderer leaves out `[env: ...]`: put each variable in
        // the flag's text, as --help shows it.
        let cmd = Config::command().mut_args(|arg| match arg.get_env() {
            Some(env) => {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let env = env.to_string_lossy().into_owned();
                arg.long_help(format!("{help} (environment variable {env})"))
            }
            None => arg,
        });
        cmd.long_about(
            "stentor is a Server-Sent Events edge server for Linux on io_uring. Publishers \
             POST events to topics (POST /publish); clients subscribe with EventSource to \
             GET /events?topic=NAME and resume with Last-Event-ID. Every setting is a flag, a \
             STENTOR_* environment variable and a key of the --config TOML file (flag > \
             variable > file > default). The package's default file is \
             /etc/stentor/stentor.toml; `stentor config check FILE` validates one. See \
             /usr/share/doc/stentor/ for operations.",
        )
    }

    /// Checks that involve more than one flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.cors_origin {
            let ok =
                origin == "*" || origin.starts_with("http://") || origin.starts_with("https://");
            if !ok || origin.contains(['\r', '\n', ' ']) {
                return Err(ConfigError {
                    message: format!(
                        "invalid value '{origin}' for '--cors-origin': expected '*' or an origin like https://example.com"
                    ),
                });
            }
        }
        if self.trusted_proxy.len() > crate::api::client::TRUSTED_PROXIES_MAX {
            return Err(ConfigError {
                message: format!(
                    "too many values for '--trusted-proxy': at most {}",
                    crate::api::client::TRUSTED_PROXIES_MAX
                ),
            });
        }
        if self.proxy_protocol && self.trusted_proxy.is_empty() {
            return Err(ConfigError {
                message: "'--proxy-protocol' needs '--trusted-proxy': only listed peers may send a PROXY header"
                    .to_string(),
            });
        }
        if let Some(url) = self.broker_url() {
            if let Err(e) = crate::broker::redis::RedisBroker::new(url, self.broker_options()) {
                return Err(ConfigError {
                    message: format!(
                        "invalid value for '--broker' or '--broker-namespace': {} (expected embedded or redis://HOST:PORT)",
                        e.message
                    ),
                });
            }
            // Redis is the history in fleet mode (retention from the history
            // flags, resumes served from it): a node-local file would load
            // ids no other node knows into this node's hub, and its history
            // would outlive the fleet's.
            if self.history_file.is_some() {
                return Err(ConfigError {
                    message: "'--history-file' cannot be used with '--broker redis://': in fleet mode Redis keeps the history; remove one of the two"
                        .to_string(),
                });
            }
        }
        for (flag, token) in [
            ("--publish-token", &self.publish_token),
            ("--subscribe-token", &self.subscribe_token),
            ("--admin-token", &self.admin_token),
        ] {
            if let Some(t) = token {
                if t.len() < 16 || t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError {
                        message: format!(
                            "invalid value for '{flag}': a token is 16..=4096 printable ASCII characters without spaces"
                        ),
                    });
                }
            }
        }
        if self
            .subscribe_auth
            .is_some_and(|m| m != crate::api::authz::SubscribeAuth::Off)
            && self.jwt_key.is_none()
            && self.jwt_subscriber_key.is_none()
        {
            return Err(ConfigError {
                message: "'--subscribe-auth optional|required' needs '--jwt-key' or '--jwt-subscriber-key'"
                    .to_string(),
            });
        }
        // Read key files now: a bad key ends startup naming its flag, not
        // the first request.
        if let Err(e) = crate::api::jwt::Keys::load(&self.jwt_config()) {
            return Err(ConfigError {
                message: e.to_string(),
            });
        }
        Ok(())
    }

    /// The JWT flags, for `Keys::load` (at startup and on SIGHUP).
    pub fn jwt_config(&self) -> crate::api::jwt::JwtConfig {
        crate::api::jwt::JwtConfig {
            key: self.jwt_key.clone(),
            publisher_key: self.jwt_publisher_key.clone(),
            subscriber_key: self.jwt_subscriber_key.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            limits: crate::api::jwt::TokenLimits::default(),
        }
    }

    /// `--subscribe-auth` as it applies: optional when a subscriber key is
    /// set and the flag is not, else off.
    pub fn subscribe_auth_effective(&self) -> crate::api::authz::SubscribeAuth {
        use crate::api::authz::SubscribeAuth;
        match self.subscribe_auth {
            Some(m) => m,
            None if self.jwt_key.is_some() || self.jwt_subscriber_key.is_some() => {
                SubscribeAuth::Optional
            }
            None => SubscribeAuth::Off,
        }
    }

    /// Fleet mode's Redis URL; `None` for the embedded broker.
    pub fn broker_url(&self) -> Option<&str> {
        (self.broker != BROKER_EMBEDDED).then_some(self.broker.as_str())
    }

    /// The broker threads' options, from the flags.
    pub fn broker_options(&self) -> crate::broker::BrokerOptions {
        crate::broker::BrokerOptions {
            connect_timeout_ms: self.broker_connect_timeout_ms,
            io_timeout_ms: self.broker_io_timeout_ms,
            history_events_max: u64::from(self.history_events_max),
            log_events_max: self.broker_log_events_max,
            batch_events_max: self.publish_batch_events_max as usize,
            namespace: self.broker_namespace.clone(),
            ..crate::broker::BrokerOptions::default()
        }
    }

    /// Worker threads to start: the flag, or one per core.
    pub fn workers_effective(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => usize::from(n),
        }
    }

    /// The request limits handed to the HTTP parser.
    pub fn http_limits(&self) -> Limits {
        Limits {
            head_bytes_max: self.head_bytes_max as usize,
            headers_count_max: usize::from(self.headers_count_max),
            uri_bytes_max: self.uri_bytes_max as usize,
            body_bytes_max: self.body_bytes_max as usize,
        }
    }

    /// The hub's bounds. `replay_bytes_max` is one topic's history
    /// (`--history-bytes-max`, at least half of `--queue-bytes-max`): a
    /// client dropped as slow (over its queue budget) must be able to catch
    /// up in one replay, so the replay is exempt from that budget until sent
    /// (`SendQueue::push_exempt`); its frames are shared with history, so it
    /// costs the node a queue entry per event, bounded by `replay_events_max`.
    pub fn hub_limits(&self) -> HubLimits {
        HubLimits {
            topic_bytes_max: usize::from(self.topic_bytes_max),
            topics_max: self.topics_max as usize,
            history: HistoryLimits {
                events_max: self.history_events_max as usize,
                bytes_max: self.history_bytes_max as usize,
            },
            replay_events_max: self.replay_events_max as usize,
            replay_bytes_max: (self.history_bytes_max as usize)
                .max(self.queue_bytes_max as usize / 2),
        }
    }

    /// Parse the command line and environment. On a bad value, print one
    /// line naming the flag and its range and exit with code 2; `--help` and
    /// `--version` print and exit 0.
    pub fn from_args_or_exit() -> Config {
        Self::from_iter_or_exit(std::env::args_os())
    }

    /// Like [`Config::from_args_or_exit`] over `args`. With `--config FILE`
    /// the file fills every setting that neither a flag nor a variable set;
    /// `stentor config check FILE` prints the effective configuration and
    /// exits here.
    pub fn from_iter_or_exit<I, T>(args: I) -> Config
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let loaded = match file::load(args) {
            Ok(l) => l,
            Err(file::LoadError::Display(e)) => {
                let _ = e.print();
                std::process::exit(0);
            }
            Err(file::LoadError::Invalid(message)) => {
                eprintln!("stentor: {message}");
                std::process::exit(2);
            }
        };
        match &loaded.config.command {
            Some(Command::Config(ConfigCommand::Check { .. })) => {
                print!("{}", file::effective_toml(&loaded));
                std::process::exit(0);
            }
            Some(Command::Generate { what }) => {
                let mut out = std::io::stdout().lock();
                let written = match what {
                    Generated::Config => {
                        use std::io::Write;
                        out.write_all(file::default_toml().as_bytes())
                    }
                    Generated::Man => {
                        clap_mangen::Man::new(Config::command_for_docs()).render(&mut out)
                    }
                    Generated::Bash | Generated::Zsh | Generated::Fish => {
                        let shell = match what {
                            Generated::Bash => clap_complete::Shell::Bash,
                            Generated::Zsh => clap_complete::Shell::Zsh,
                            _ => clap_complete::Shell::Fish,
                        };
                        // Into memory first: clap_complete panics on a write error
                        // (a closed pipe), and the binary never panics on those.
                        let mut buf = Vec::new();
                        clap_complete::generate(
                            shell,
                            &mut Config::command_for_docs(),
                            "stentor",
                            &mut buf,
                        );
                        use std::io::Write;
                        out.write_all(&buf)
                    }
                };
                if let Err(e) = written {
                    eprintln!("stentor: cannot write to stdout: {e}");
                    std::process::exit(1);
                }
                std::process::exit(0);
            }
            None => {}
        }
        for note in loaded.notes {
            crate::log::defer_warning(note);
        }
        loaded.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("stentor").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_work_on_a_fresh_machine() {
        let c = parse(&[]).expect("defaults parse");
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(
            c.max_connections >= 100_000,
            "the default must hold 100k subscribers"
        );
        c.validate().expect("defaults validate");
        assert!(c.workers_effective() >= 1);
    }

    #[test]
    fn out_of_range_values_name_the_flag_and_range() {
        let e = parse(&["--workers", "9999"]).unwrap_err();
        let text = e.render().to_string();
        assert!(text.contains("--workers"), "{text}");
        assert!(text.contains("0..=256"), "{text}");
        let e = parse(&["--head-bytes-max", "10"]).unwrap_err();
        assert!(e.render().to_string().contains("--head-bytes-max"));
        let e = parse(&["--listen", "nonsense"]).unwrap_err();
        assert!(e.render().to_string().contains("--listen"));
    }

    #[test]
    fn cross_flag_validation() {
        let c = parse(&["--cors-origin", "example.com"]).unwrap();
        assert!(c.validate().unwrap_err().message.contains("--cors-origin"));
        let c = parse(&["--cors-origin", "*,https://a.example"]).unwrap();
        assert_eq!(c.cors_origin.len(), 2);
        c.validate().unwrap();
        let c = parse(&["--publish-token", "short"]).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .message
            .contains("--publish-token"));
        // Fleet mode keeps its history in Redis: a history file is refused,
        // and stays allowed with the embedded broker.
        let c = parse(&[
            "--broker",
            "redis://127.0.0.1:6379/",
            "--history-file",
            "/tmp/h.bin",
        ])
        .unwrap();
        let e = c.validate().unwrap_err().message;
        assert!(
            e.contains("'--history-file'") && e.contains("--broker"),
            "{e}"
        );
        parse(&["--history-file", "/tmp/h.bin"])
            .unwrap()
            .validate()
            .unwrap();
        parse(&["--broker", "redis://127.0.0.1:6379/"])
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn limits_follow_the_config() {
        let c = Config::try_parse_from(["stentor", "--history-events-max", "7"]).unwrap();
        let l = c.hub_limits();
        assert_eq!(l.history.events_max, 7);
        assert_eq!(l.history.bytes_max, c.history_bytes_max as usize);
        assert_eq!(l.replay_bytes_max, c.history_bytes_max as usize);
        assert_eq!(l.topics_max, crate::hub::TOPICS_MAX_DEFAULT);
        assert_eq!(l.replay_events_max, crate::hub::REPLAY_EVENTS_MAX_DEFAULT);
        let c = Config::try_parse_from([
            "stentor",
            "--topics-max",
            "5",
            "--replay-events-max",
            "9",
            "--queue-bytes-max",
            "8192",
            "--history-bytes-max",
            "100",
        ])
        .unwrap();
        let l = c.hub_limits();
        assert_eq!((l.topics_max, l.replay_events_max), (5, 9));
        assert_eq!(l.replay_bytes_max, 4096, "at least half the queue budget");
        assert!(Config::try_parse_from(["stentor", "--topics-max", "0"]).is_err());
        assert!(Config::try_parse_from(["stentor", "--publish-batch-events-max", "0"]).is_err());
        assert_eq!(l.topic_bytes_max, usize::from(c.topic_bytes_max));
    }
}
