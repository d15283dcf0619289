//! Command line: flags, their defaults and their validation into a
//! [`RunConfig`] the rest of the tool trusts. Every flag error is a one-line
//! message and exit code 2.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::busy::BusyPairs;
use crate::engine::ports::free_pairs;

/// Ports the kernel hands out per (source address, destination) pair with the
/// default `ip_local_port_range`; beyond this a source address is exhausted.
pub const PORTS_PER_SOURCE_IP: usize = 28_000;
/// Subscribers per ring when the descriptor limit cannot be read.
const SLOTS_PER_RING_FALLBACK: usize = 16_384;
/// Fixed-table entries kept free under RLIMIT_NOFILE for the odd normal fd.
const SLOTS_RESERVED: usize = 64;
/// Upper bound on worker threads (rings); more only costs memory.
pub const THREADS_MAX: usize = 64;
/// Upper bound on the run length, so per-second timelines stay bounded.
pub const DURATION_S_MAX: u64 = 3_600;
/// Upper bound on one event's payload.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;

const RUN_EXAMPLES: &str = "\
Phases: ramp (connect every subscriber at --connect-rate, but those a scenario stage's
connect_per_s opens while publishing), publish (open-loop, for --duration-s), drain
(up to --drain-s for the last deliveries), verdict (slow subscribers read once more to
learn whether the server closed them), catch-up (--reconnect: slow subscribers whose
drop only the verdict saw resume, up to --drain-s).
Latency = receive time - scheduled send time of the event.

Exit codes: 0 SLOs met (or none set), 1 an SLO missed, 2 usage or connection error.

Examples:
  # stentor: 10k subscribers, 10 ev/s for 30 s; fail if p99 > 50 ms or anything is lost
  stentor-loadgen run --url http://127.0.0.1:8080 --subscribers 10000 \\
      --rate 10 --duration-s 30 --max-p99-ms 50 --max-loss 0 \\
      --json report.json --html report.html
  # 10% of subscribers stall: how many does the server drop, do fast ones suffer?
  stentor-loadgen run --subscribers 10000 --rate 10 \\
      --slow-fraction 0.1 --slow-mode stall --reconnect
  # nchan (nchan_publisher at /pub, nchan_subscriber eventsource at /sub)
  stentor-loadgen run --url http://127.0.0.1:8081 --sub-path '/sub?id={topic}' \\
      --pub-url 'http://127.0.0.1:8081/pub?id={topic}' \\
      --pub-body-template '{data}' --pub-content-type text/plain
  # Mercure hub (anonymous subscribers allowed; publisher JWT in $JWT)
  stentor-loadgen run --url http://127.0.0.1:3000 \\
      --sub-path '/.well-known/mercure?topic={topic}' \\
      --pub-url http://127.0.0.1:3000/.well-known/mercure \\
      --pub-body-template 'topic={topic_url}&data={data_url}' \\
      --pub-content-type application/x-www-form-urlencoded \\
      --pub-header \"Authorization: Bearer $JWT\"";

#[derive(Debug, Parser)]
#[command(
    name = "stentor-loadgen",
    version,
    about = "Load generator for Server-Sent Events servers: latency, loss, duplicates, dropped slow clients",
    long_about = "Load generator for Server-Sent Events servers.\n\n\
        It opens many SSE subscribers (io_uring, direct descriptors, so 100k+ fit under a 20000-descriptor cap), \
        publishes events open-loop on an absolute schedule (event k is due at start + k/rate; latency is measured \
        from that scheduled time, so a stalled server cannot hide its stalls), and reports latency percentiles, \
        loss, duplicates, reordering and slow clients dropped.\n\n\
        Exit codes: 0 the SLOs (--max-p99-ms, --max-loss, ...) were met; 1 they were not; 2 usage or connection error.\n\n\
        Example, against a local stentor:\n  stentor-loadgen run --url http://127.0.0.1:8080 --subscribers 10000 --rate 10 --duration-s 30 --json report.json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect subscribers, publish on a schedule, measure and report.
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Merge reports of runs made at once on several machines (each with
    /// --json and --histogram-out): counts summed, percentiles recomputed
    /// from the summed histograms, start offsets stated.
    Merge(MergeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Reports (--json files) to merge.
    #[arg(required = true)]
    pub reports: Vec<std::path::PathBuf>,
    /// Write the merged report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write the merged report as a self-contained HTML page here.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Base URL of an SSE node (http only); subscribers connect to URL + --sub-path.
    /// Repeatable: subscribers are spread over the nodes round-robin, or by
    /// weight with `URL@W` (e.g. `http://a:8080@3 http://b:8080@1`).
    #[arg(
        long,
        env = "LOADGEN_URL",
        default_value = "http://127.0.0.1:8080",
        num_args = 1
    )]
    pub url: Vec<String>,

    /// How the nodes share events: `independent` (an event published on a
    /// node reaches only that node's subscribers) or `cluster` (every
    /// subscriber gets every event, wherever it was published).
    #[arg(long, default_value = "independent")]
    pub topology: String,

    /// Number of SSE subscribers to hold open.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,

    /// Events published per second (all topics together), open-loop.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// How long to publish, in seconds.
    #[arg(long = "duration-s", default_value_t = 10)]
    pub duration_s: u64,

    /// Size of each event's data in bytes (sequence number, timestamp, padding).
    #[arg(long = "payload-bytes", default_value_t = 128)]
    pub payload_bytes: usize,

    /// Number of topics; subscriber i listens to topic i % T, event k goes to topic k % T.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,

    /// Topic names are PREFIX0, PREFIX1, ...
    #[arg(long = "topic-prefix", default_value = "t")]
    pub topic_prefix: String,

    /// New subscriber connections per second during the ramp.
    #[arg(long = "connect-rate", default_value_t = 10_000.0)]
    pub connect_rate: f64,

    /// Comma-separated local addresses to connect from (IPv4, or IPv6 for
    /// IPv6 nodes); the loadgen picks each (address, port) pair itself.
    /// Default for a loopback server: 127.0.0.1 .. 127.0.0.K, one address
    /// per 28000 subscribers, or ::1 for [::1]; otherwise the kernel picks.
    #[arg(long = "source-ips", value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,

    /// Subscription path template; {topic} is replaced by the topic name (URL-encoded).
    #[arg(long = "sub-path", default_value = "/events?topic={topic}")]
    pub sub_path: String,

    /// Extra header on every subscriber request ("Name: value"), repeatable.
    #[arg(long = "sub-header")]
    pub sub_headers: Vec<String>,

    /// Publish URL, repeatable (events take turns over them). Default:
    /// NODE/publish (stentor's native API) for every node when the topology
    /// is independent, for the first node in a cluster.
    #[arg(long = "pub-url", num_args = 1)]
    pub pub_url: Vec<String>,

    /// Publish body template. Placeholders: {topic}, {topic_url}, {data}, {data_json}
    /// (a quoted JSON string), {data_url} (percent-encoded), {seq}.
    #[arg(
        long = "pub-body-template",
        default_value = r#"{"topic":"{topic}","data":{data_json}}"#
    )]
    pub pub_body_template: String,

    /// Read the sequence number from event data with this regex (first
    /// capture group), for servers that wrap what was published; the send
    /// time is the group named t_ns, else the first `t_ns=DIGITS`.
    #[arg(long = "seq-regex")]
    pub seq_regex: Option<String>,

    /// Read the sequence number from event data parsed as JSON at this RFC
    /// 6901 pointer (e.g. /pub/data/seq for Centrifugo); payloads are then
    /// published as JSON objects `{"seq":N,"t_ns":T,"pad":".."}` (embed
    /// them raw with {data}), the time read from `t_ns` beside the sequence.
    #[arg(long = "seq-json-pointer")]
    pub seq_json_pointer: Option<String>,

    /// Content-Type of publish requests.
    #[arg(long = "pub-content-type", default_value = "application/json")]
    pub pub_content_type: String,

    /// Extra header on every publish request ("Name: value"), e.g. an Authorization bearer, repeatable.
    #[arg(long = "pub-header")]
    pub pub_headers: Vec<String>,

    /// Keep-alive publish connections; events take turns over them.
    #[arg(long = "pub-conns", default_value_t = 1)]
    pub pub_conns: usize,

    /// Publish requests in flight per connection. 1 = a sequential publisher
    /// that waits for each answer before the next (how application servers
    /// publish); more pipelines requests.
    #[arg(long = "pub-inflight", default_value_t = 1)]
    pub pub_inflight: usize,

    /// Subscriber threads, one io_uring each. Default: enough rings for the
    /// descriptor limit (>= 6 for 100k under 20000), at least the core count.
    #[arg(long)]
    pub threads: Option<usize>,

    /// Deadline for one subscriber's connect + response head, in seconds.
    #[arg(long = "connect-timeout-s", default_value_t = 10.0)]
    pub connect_timeout_s: f64,

    /// After the last publish, wait at most this long for deliveries, in seconds.
    #[arg(long = "drain-s", default_value_t = 5.0)]
    pub drain_s: f64,

    /// Share of subscribers that read slowly for the whole run (0..1); a
    /// scenario can instead slow a share per stage (`slow_fraction`).
    #[arg(long = "slow-fraction", default_value_t = 0.0)]
    pub slow_fraction: f64,

    /// How slow subscribers misbehave: `stall` (never read after the head) or
    /// `trickle:BYTES_PER_S` (read at most that many bytes per second). Both use a small receive buffer.
    #[arg(long = "slow-mode", default_value = "stall")]
    pub slow_mode: String,

    /// A subscriber the server closes reconnects with Last-Event-ID and is checked for exactly-once after resuming (drops seen only by the final read: after it).
    #[arg(long)]
    pub reconnect: bool,

    /// When an event counts as delivered: `kernel` (the kernel's receive
    /// timestamp of the bytes, SO_TIMESTAMPNS: what the server and the
    /// network took) or `read` (when this tool read them: adds its own
    /// wait for a core, which on a machine shared with the server is
    /// part of the figure).
    #[arg(long = "latency-at", value_enum, default_value_t = LatencyAt::Kernel)]
    pub latency_at: LatencyAt,

    /// SLO: p99 latency of fast subscribers at most this many milliseconds.
    #[arg(long = "max-p99-ms")]
    pub max_p99_ms: Option<f64>,

    /// SLO: loss ratio (lost / expected deliveries) at most this (e.g. 0 or 0.001).
    #[arg(long = "max-loss")]
    pub max_loss: Option<f64>,

    /// SLO: at least this share of requested subscribers must connect (default 1.0 when any SLO is set).
    #[arg(long = "min-connected")]
    pub min_connected: Option<f64>,

    /// SLO: at least this share of scheduled events sent and accepted (e.g.
    /// 0.99: the publisher kept up with the rate).
    #[arg(long = "min-published")]
    pub min_published: Option<f64>,

    /// SLO: publish round trip p99 at most this many milliseconds.
    #[arg(long = "max-publish-p99-ms")]
    pub max_publish_p99_ms: Option<f64>,

    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,

    /// Write a self-contained HTML report (inline SVG charts) to this file.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,

    /// Run a load profile from a TOML file: ordered stages with their own
    /// rate shape, payload, connect ramp, slow subscribers, churn, reconnect
    /// storm and SLOs (see loadgen/scenarios/). Replaces --rate,
    /// --duration-s and --payload-bytes.
    #[arg(long)]
    pub scenario: Option<std::path::PathBuf>,

    /// Write the run's latency histograms (fast, all, connect, publish round
    /// trip) as an HdrHistogram interval log, for `stentor-loadgen merge`.
    #[arg(long = "histogram-out")]
    pub histogram_out: Option<std::path::PathBuf>,

    /// Serve the live figures (deliveries, latency per second, connected,
    /// errors by kind) in the Prometheus text format at
    /// http://ADDR/metrics while the run goes on (e.g. 127.0.0.1:9465).
    #[arg(long = "prometheus-listen")]
    pub prometheus_listen: Option<SocketAddr>,

    /// No progress line and no human summary (errors still go to stderr).
    #[arg(long)]
    pub quiet: bool,
}

/// Which clock ends an event's latency (`--latency-at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyAt {
    /// The kernel's receive timestamp of the segment (SO_TIMESTAMPNS).
    Kernel,
    /// When the loadgen read the bytes.
    Read,
}

pub use crate::scenario::SlowMode;

/// How events published on one node reach the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// Nodes share nothing: a subscriber gets only what was published on its node.
    Independent,
    /// Nodes share every event.
    Cluster,
}

/// One node subscribers connect to.
#[derive(Debug, Clone)]
pub struct Node {
    pub url: String,
    pub server: SocketAddr,
    pub weight: u32,
    /// Per-topic GET request heads without the trailing CRLF (Last-Event-ID may follow).
    pub sub_requests: Vec<String>,
}

/// Most nodes one run spreads its subscribers over.
pub const NODES_MAX: usize = 64;
/// Largest weight of one node.
pub const WEIGHT_MAX: u32 = 1000;

/// The validated run: what every other module reads.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The first node's address (what single-node code paths use).
    pub server: SocketAddr,
    pub nodes: Vec<Node>,
    /// Node of subscriber i: `node_cycle[i % len]` (weights, smoothly interleaved).
    pub node_cycle: Vec<u16>,
    pub topology: Topology,
    /// Per publish target, the audience group its events reach
    /// (independent: the node it belongs to; cluster: 0, everyone).
    pub pub_groups: Vec<usize>,
    pub subscribers: usize,
    pub rate: f64,
    pub duration_s: u64,
    pub payload_bytes: usize,
    /// Where the sequence is in event data, and the payload shape that puts it there.
    pub seq_source: crate::seq::SeqSource,
    pub topics: Vec<String>,
    pub connect_rate: f64,
    pub source_ips: Vec<IpAddr>,
    /// `source_ips` is the loopback default (may grow), not the operator's list.
    pub source_ips_default: bool,
    /// Source pairs still held toward the servers when the run began.
    pub busy_pairs: Arc<BusyPairs>,
    /// Publish targets; event k goes to `publish[(k / topics) % len]`.
    pub publish: Vec<PublishConfig>,
    pub threads: usize,
    pub slots_per_thread: usize,
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub slow_fraction: f64,
    pub slow_mode: SlowMode,
    pub reconnect: bool,
    pub latency_at: LatencyAt,
    pub max_p99_ms: Option<f64>,
    pub max_loss: Option<f64>,
    pub min_connected: Option<f64>,
    pub min_published: Option<f64>,
    pub max_publish_p99_ms: Option<f64>,
    /// What is published when, in stages (the flags give one constant stage).
    pub schedule: crate::scenario::Schedule,
    /// Which subscribers connect before publishing, which a stage's ramp opens.
    pub ramp: crate::scenario::RampPlan,
    pub json: Option<std::path::PathBuf>,
    pub html: Option<std::path::PathBuf>,
    pub histogram_out: Option<std::path::PathBuf>,
    pub prometheus_listen: Option<SocketAddr>,
    pub quiet: bool,
}

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub server: SocketAddr,
    pub host_header: String,
    pub path: String,
    pub body_template: String,
    pub content_type: String,
    pub headers: Vec<String>,
    pub conns: usize,
    /// Requests in flight per connection (1 = sequential).
    pub inflight: usize,
}

/// A usage error: printed as one line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// `http://host:port/path` split into its address, Host header and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    pub host_header: String,
    pub path: String,
}

pub fn parse_http_url(url: &str) -> Result<HttpUrl, UsageError> {
    let Some(rest) = url.strip_prefix("http://") else {
        return usage(format!(
            "URL {url:?} must start with http:// (https is not supported)"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return usage(format!("URL {url:?} has no host"));
    }
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = match with_port.to_socket_addrs() {
        // IPv4 first when a name has both (what most clients try first).
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            match addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                Some(a) => *a,
                None => return usage(format!("URL {url:?}: host has no address")),
            }
        }
        Err(e) => return usage(format!("URL {url:?}: cannot resolve host: {e}")),
    };
    Ok(HttpUrl {
        addr,
        host_header: authority.to_string(),
        path: path.to_string(),
    })
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_slow_mode(s: &str) -> Result<SlowMode, UsageError> {
    SlowMode::parse(s).map_err(|e| UsageError(format!("--slow-mode {e}")))
}

fn check_header(h: &str, flag: &str) -> Result<(), UsageError> {
    match h.split_once(':') {
        Some((name, _)) if !name.trim().is_empty() && !h.contains('\r') && !h.contains('\n') => {
            Ok(())
        }
        _ => usage(format!("{flag} {h:?}: expected \"Name: value\"")),
    }
}

/// `URL` or `URL@W` to the URL and its weight (1 when not given).
fn split_weight(s: &str) -> Result<(&str, u32), UsageError> {
    match s.rsplit_once('@') {
        Some((url, w)) if !w.contains('/') => match w.parse::<u32>() {
            Ok(w) if (1..=WEIGHT_MAX).contains(&w) => Ok((url, w)),
            _ => usage(format!(
                "--url {s:?}: the weight after @ must be an integer in 1..={WEIGHT_MAX}"
            )),
        },
        _ => Ok((s, 1)),
    }
}

/// Smooth weighted round-robin (as nginx does it): each node appears
/// `weight` times per cycle, interleaved, so any prefix of the subscribers
/// is spread close to the weights.
pub fn node_cycle(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let mut best = 0;
        for i in 1..current.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u16);
    }
    cycle
}

impl RunArgs {
    pub fn validate(&self, nofile_soft: Option<usize>) -> Result<RunConfig, UsageError> {
        if self.url.is_empty() || self.url.len() > NODES_MAX {
            return usage(format!("--url: give 1..={NODES_MAX} nodes"));
        }
        let mut bases = Vec::with_capacity(self.url.len());
        for u in &self.url {
            let (url, weight) = split_weight(u)?;
            let base = parse_http_url(url)?;
            if base.path != "/" {
                return usage(format!(
                    "--url {url:?}: give only scheme, host and port; set paths with --sub-path and --pub-url"
                ));
            }
            if bases
                .iter()
                .any(|(_, b, _): &(String, HttpUrl, u32)| b.addr == base.addr)
            {
                return usage(format!("--url {url:?} is given twice"));
            }
            bases.push((url.to_string(), base, weight));
        }
        let base = bases[0].1.clone();
        let topology = match self.topology.as_str() {
            "independent" => Topology::Independent,
            "cluster" => Topology::Cluster,
            t => {
                return usage(format!(
                    "--topology {t:?}: expected `independent` or `cluster`"
                ))
            }
        };
        if self.subscribers == 0 {
            return usage("--subscribers must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000_000.0) {
            return usage("--rate must be in (0, 1000000] events/s");
        }
        if self.duration_s == 0 || self.duration_s > DURATION_S_MAX {
            return usage(format!("--duration-s must be in 1..={DURATION_S_MAX}"));
        }
        if self.payload_bytes > PAYLOAD_BYTES_MAX {
            return usage(format!(
                "--payload-bytes must be at most {PAYLOAD_BYTES_MAX}"
            ));
        }
        let seq_source = crate::seq::SeqSource::from_flags(
            self.seq_regex.as_deref(),
            self.seq_json_pointer.as_deref(),
        )
        .map_err(UsageError)?;
        if self.topics == 0 || self.topics > self.subscribers.max(1) {
            return usage("--topics must be in 1..=--subscribers");
        }
        if !(self.connect_rate.is_finite() && self.connect_rate > 0.0) {
            return usage("--connect-rate must be positive");
        }
        if !(self.connect_timeout_s.is_finite()
            && self.connect_timeout_s > 0.0
            && self.connect_timeout_s <= 3600.0)
        {
            return usage("--connect-timeout-s must be in (0, 3600]");
        }
        if !(self.drain_s.is_finite() && self.drain_s >= 0.0 && self.drain_s <= 3600.0) {
            return usage("--drain-s must be in [0, 3600]");
        }
        if !(0.0..=1.0).contains(&self.slow_fraction) {
            return usage("--slow-fraction must be in [0, 1]");
        }
        let slow_mode = parse_slow_mode(&self.slow_mode)?;
        if let Some(p) = self.max_p99_ms {
            if !(p.is_finite() && p >= 0.0) {
                return usage("--max-p99-ms must be a non-negative number");
            }
        }
        if let Some(l) = self.max_loss {
            if !(0.0..=1.0).contains(&l) {
                return usage("--max-loss must be in [0, 1]");
            }
        }
        if let Some(c) = self.min_connected {
            if !(0.0..=1.0).contains(&c) {
                return usage("--min-connected must be in [0, 1]");
            }
        }
        if let Some(c) = self.min_published {
            if !(0.0..=1.0).contains(&c) {
                return usage("--min-published must be in [0, 1]");
            }
        }
        if let Some(p) = self.max_publish_p99_ms {
            if !(p.is_finite() && p >= 0.0) {
                return usage("--max-publish-p99-ms must be a non-negative number");
            }
        }
        if self.pub_conns == 0 || self.pub_conns > 64 {
            return usage("--pub-conns must be in 1..=64");
        }
        if self.pub_inflight == 0 || self.pub_inflight > crate::publisher::IN_FLIGHT_MAX {
            return usage(format!(
                "--pub-inflight must be in 1..={}",
                crate::publisher::IN_FLIGHT_MAX
            ));
        }
        if !self.sub_path.starts_with('/') {
            return usage("--sub-path must start with /");
        }
        if self.topic_prefix.bytes().any(|b| b.is_ascii_control()) {
            return usage("--topic-prefix must not contain control characters");
        }
        for h in &self.sub_headers {
            check_header(h, "--sub-header")?;
        }
        for h in &self.pub_headers {
            check_header(h, "--pub-header")?;
        }
        if self.pub_content_type.contains(['\r', '\n']) {
            return usage("--pub-content-type must be one line");
        }

        let slots_per_ring = nofile_soft
            .map(|n| n.saturating_sub(SLOTS_RESERVED).max(1))
            .unwrap_or(SLOTS_PER_RING_FALLBACK);
        let rings_needed = self.subscribers.div_ceil(slots_per_ring);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match self.threads {
            Some(0) => return usage("--threads must be at least 1"),
            Some(t) if t > THREADS_MAX => return usage(format!("--threads must be at most {THREADS_MAX}")),
            Some(t) if t < rings_needed => {
                return usage(format!(
                    "--threads {t} is too few: one ring holds at most {slots_per_ring} subscribers (RLIMIT_NOFILE), \
                     {} need at least {rings_needed}",
                    self.subscribers
                ))
            }
            Some(t) => t,
            None => rings_needed.max(cores).min(self.subscribers).clamp(1, THREADS_MAX),
        };
        if rings_needed > THREADS_MAX {
            return usage(format!(
                "--subscribers {} needs more than {THREADS_MAX} rings",
                self.subscribers
            ));
        }
        let slots_per_thread = self.subscribers.div_ceil(threads);

        // A source pair binds one family; every node must have it.
        let v6 = bases[0].1.addr.is_ipv6();
        let one_family = bases.iter().all(|(_, b, _)| b.addr.is_ipv6() == v6);
        if let Some(ip) = self.source_ips.iter().find(|ip| ip.is_ipv6() != v6) {
            return usage(format!(
                "--source-ips {ip}: the nodes are {}; give addresses of that family",
                if v6 { "IPv6" } else { "IPv4" }
            ));
        }
        if !self.source_ips.is_empty() && !one_family {
            return usage("--source-ips with both IPv4 and IPv6 nodes: connect from one family's nodes per run, or leave the sources to the kernel");
        }
        let source_ips = if !self.source_ips.is_empty() {
            self.source_ips.clone()
        } else if !one_family {
            Vec::new()
        } else if v6 && bases.iter().all(|(_, b, _)| b.addr.ip().is_loopback()) {
            // IPv6 has one loopback address: ::1 gives 55k pairs.
            vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]
        } else if bases.iter().all(|(_, b, _)| b.addr.ip().is_loopback()) {
            // Explicit source pairs even for one address: the kernel's own
            // port search is quadratic in connections (see engine::ports).
            let n = self.subscribers.div_ceil(PORTS_PER_SOURCE_IP);
            (1..=n as u8)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        } else {
            Vec::new()
        };

        let topics: Vec<String> = (0..self.topics)
            .map(|i| format!("{}{i}", self.topic_prefix))
            .collect();
        let extra: String = self
            .sub_headers
            .iter()
            .map(|h| format!("{h}\r\n"))
            .collect();
        let nodes: Vec<Node> = bases
            .iter()
            .map(|(url, b, weight)| Node {
                url: url.clone(),
                server: b.addr,
                weight: *weight,
                sub_requests: topics
                    .iter()
                    .map(|t| {
                        let path = self.sub_path.replace("{topic}", &percent_encode(t));
                        format!(
                            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{extra}",
                            b.host_header
                        )
                    })
                    .collect(),
            })
            .collect();
        let weights: Vec<u32> = nodes.iter().map(|n| n.weight).collect();

        let pub_urls: Vec<HttpUrl> = if self.pub_url.is_empty() {
            let default = |b: &HttpUrl| HttpUrl {
                path: "/publish".into(),
                ..b.clone()
            };
            match topology {
                Topology::Independent => bases.iter().map(|(_, b, _)| default(b)).collect(),
                Topology::Cluster => vec![default(&base)],
            }
        } else {
            if self.pub_url.len() > NODES_MAX {
                return usage(format!("--pub-url: at most {NODES_MAX}"));
            }
            self.pub_url
                .iter()
                .map(|u| parse_http_url(u))
                .collect::<Result<_, _>>()?
        };
        let mut pub_groups = Vec::with_capacity(pub_urls.len());
        for p in &pub_urls {
            pub_groups.push(match topology {
                Topology::Cluster => 0,
                Topology::Independent => match nodes.iter().position(|n| n.server == p.addr) {
                    Some(i) => i,
                    None => {
                        return usage(format!(
                            "--pub-url {}{}: with --topology independent an event reaches only the \
                             subscribers of the node it was published on, and {} is none of the --url \
                             nodes (use --topology cluster if the nodes share events)",
                            p.host_header, p.path, p.addr
                        ))
                    }
                },
            });
        }

        let schedule = match &self.scenario {
            None => {
                crate::scenario::Schedule::constant(self.rate, self.duration_s, self.payload_bytes)
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| UsageError(format!("--scenario {}: {e}", path.display())))?;
                crate::scenario::Schedule::parse(&text, nodes.len(), self.payload_bytes)
                    .map_err(|e| UsageError(format!("--scenario {}: {e}", path.display())))?
            }
        };
        if self.slow_fraction > 0.0 && schedule.has_slow_stage() {
            return usage(
                "--slow-fraction with a scenario whose stages set slow_fraction: give slow \
                 subscribers per stage in the scenario, or for the whole run with the flag, not both",
            );
        }
        let ramp = schedule.ramp_plan(self.subscribers);
        let duration_s = schedule.duration_ns().div_ceil(1_000_000_000);
        let rate = schedule.stages[0].segments[0].rate;
        let reconnect = self.reconnect || schedule.needs_reconnect();

        Ok(RunConfig {
            server: base.addr,
            node_cycle: node_cycle(&weights),
            nodes,
            topology,
            pub_groups,
            subscribers: self.subscribers,
            rate,
            duration_s,
            payload_bytes: self.payload_bytes,
            seq_source,
            topics,
            connect_rate: self.connect_rate,
            source_ips,
            source_ips_default: self.source_ips.is_empty(),
            busy_pairs: Arc::default(),
            publish: pub_urls
                .into_iter()
                .map(|p| PublishConfig {
                    server: p.addr,
                    host_header: p.host_header,
                    path: p.path,
                    body_template: self.pub_body_template.clone(),
                    content_type: self.pub_content_type.clone(),
                    headers: self.pub_headers.clone(),
                    conns: self.pub_conns,
                    inflight: self.pub_inflight,
                })
                .collect(),
            threads,
            slots_per_thread,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout_s),
            drain: Duration::from_secs_f64(self.drain_s),
            slow_fraction: self.slow_fraction,
            slow_mode,
            reconnect,
            latency_at: self.latency_at,
            max_p99_ms: self.max_p99_ms,
            max_loss: self.max_loss,
            min_connected: self.min_connected,
            min_published: self.min_published,
            max_publish_p99_ms: self.max_publish_p99_ms,
            schedule,
            ramp,
            json: self.json.clone(),
            html: self.html.clone(),
            histogram_out: self.histogram_out.clone(),
            prometheus_listen: self.prometheus_listen,
            quiet: self.quiet,
        })
    }
}

/// Most loopback source addresses the default grows to (127.0.0.1 ..= .254).
const DEFAULT_SOURCE_IPS_MAX: usize = 254;

impl RunConfig {
    /// Audience groups: one per node when they are independent, one in a cluster.
    pub fn groups(&self) -> usize {
        match self.topology {
            Topology::Independent => self.nodes.len(),
            Topology::Cluster => 1,
        }
    }

    /// Node subscriber `i` connects to.
    pub fn node_of(&self, i: usize) -> usize {
        self.node_cycle[i % self.node_cycle.len()] as usize
    }

    /// The expectation channel of a subscriber on `node`, `topic`: what it
    /// is owed is what was accepted on that channel.
    pub fn channel(&self, node: usize, topic: usize) -> usize {
        let group = match self.topology {
            Topology::Independent => node,
            Topology::Cluster => 0,
        };
        group * self.topics.len() + topic
    }

    /// Publish target of event `k`: a topic's events take turns over the targets.
    pub fn pub_target(&self, k: u64) -> usize {
        ((k / self.topics.len() as u64) % self.publish.len() as u64) as usize
    }

    /// Fit the source addresses to the pairs still free toward the server
    /// (`busy`: pairs earlier connections still hold, from the kernel's
    /// table). The loopback default grows until it keeps the same headroom
    /// as on an idle machine (free pairs >= 2 x subscribers); an operator's
    /// list too small for the run is refused before anything connects, with
    /// the numbers. Returns a note when the default grew.
    pub fn plan_sources(&mut self, busy: BusyPairs) -> Result<Option<String>, UsageError> {
        let mut note = None;
        if !self.source_ips.is_empty() {
            let need = self.subscribers as u64;
            let mut free = free_pairs(&self.source_ips, &busy);
            if self.source_ips_default {
                let before = self.source_ips.len();
                // Only 127/8 has more loopback addresses to grow into.
                while free < 2 * need
                    && self.source_ips.len() < DEFAULT_SOURCE_IPS_MAX
                    && self.source_ips.iter().all(IpAddr::is_ipv4)
                {
                    let next = self.source_ips.len() as u8 + 1;
                    self.source_ips
                        .push(IpAddr::V4(Ipv4Addr::new(127, 0, 0, next)));
                    free = free_pairs(&self.source_ips, &busy);
                }
                if self.source_ips.len() > before {
                    note = Some(format!(
                        "{} source pairs toward {} are still held by earlier connections;                          connecting from 127.0.0.1..127.0.0.{} ({free} pairs free)",
                        busy.len(),
                        self.server,
                        self.source_ips.len()
                    ));
                }
            }
            if free < need {
                let per_ip =
                    (crate::engine::ports::PORT_MAX - crate::engine::ports::PORT_MIN + 1) as u64;
                let more = (need - free).div_ceil(per_ip);
                return usage(format!(
                    "source address space exhausted: {} address(es) x {per_ip} ports = {} pairs,                      {} still held by earlier connections to {} (closing, or TIME_WAIT younger                      than a few seconds), {free} free < --subscribers {need}; add at least {more}                      address(es) to --source-ips (e.g. 127.0.0.2 on loopback) or wait for TIME_WAIT (60 s)",
                    self.source_ips.len(),
                    per_ip * self.source_ips.len() as u64,
                    per_ip * self.source_ips.len() as u64 - free,
                    self.server,
                ));
            }
        }
        self.busy_pairs = Arc::new(busy);
        Ok(note)
    }

    /// Total events the schedule publishes.
    pub fn events_total(&self) -> u64 {
        self.schedule.events_estimate()
    }

    /// Whether subscriber `i` is one of the slow ones: spreads exactly
    /// floor(N * F) slow subscribers evenly over the index range.
    pub fn is_slow(&self, i: usize) -> bool {
        spread(self.slow_fraction, i)
    }

    /// Stages (a bit each) in which subscriber `i` reads slowly: the same
    /// even spread as `--slow-fraction`, with each stage's own fraction.
    pub fn slow_stages(&self, i: usize) -> u32 {
        self.schedule
            .stages
            .iter()
            .enumerate()
            .filter(|(_, s)| spread(s.slow_fraction, i))
            .fold(0, |bits, (k, _)| bits | 1 << k)
    }
}

/// Whether index `i` is among floor(N * f) indices spread evenly over 0..N.
fn spread(f: f64, i: usize) -> bool {
    ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<RunConfig, UsageError> {
        let mut v = vec!["stentor-loadgen", "run"];
        v.extend_from_slice(extra);
        let cli = Cli::try_parse_from(v).map_err(|e| UsageError(e.to_string()))?;
        let Command::Run(a) = cli.command else {
            return Err(UsageError("not a run".into()));
        };
        a.validate(Some(20_000))
    }

    #[test]
    fn defaults_are_valid_and_meaningful() {
        let c = args(&[]).expect("defaults validate");
        assert_eq!(c.subscribers, 1000);
        assert_eq!(c.events_total(), 1000);
        assert_eq!(c.publish[0].path, "/publish");
        assert!(c.nodes[0].sub_requests[0].starts_with("GET /events?topic=t0 HTTP/1.1\r\n"));
    }

    #[test]
    fn hundred_thousand_needs_six_rings_and_source_ips() {
        let c = args(&["--subscribers", "100000"]).expect("valid");
        assert!(c.threads >= 6, "threads {}", c.threads);
        assert!(c.slots_per_thread <= 20_000 - SLOTS_RESERVED);
        assert_eq!(c.source_ips.len(), 4);
        let e = args(&["--subscribers", "100000", "--threads", "2"]).expect_err("too few rings");
        assert!(e.0.contains("too few"), "{e}");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["--url", "https://x"][..],
            &["--rate", "0"],
            &["--slow-mode", "crawl"],
            &["--slow-mode", "trickle:0"],
            &["--slow-fraction", "2"],
            &["--topics", "0"],
            &["--sub-header", "nocolon"],
            &["--url", "http://127.0.0.1:1/x"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slow_spread_is_exact() {
        let c = args(&["--subscribers", "1000", "--slow-fraction", "0.1"]).expect("valid");
        assert_eq!((0..1000).filter(|&i| c.is_slow(i)).count(), 100);
        let c = args(&["--subscribers", "10"]).expect("valid");
        assert_eq!((0..10).filter(|&i| c.is_slow(i)).count(), 0);
    }

    #[test]
    fn slow_stages_are_spread_and_exclude_the_flag() {
        let file = std::env::temp_dir().join(format!("loadgen-cli-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "[[stage]]\nduration_s = 1\nrate = 1\n[[stage]]\nduration_s = 1\nrate = 1\nslow_fraction = 0.2\n",
        )
        .expect("write scenario");
        let path = file.to_string_lossy().to_string();
        let c = args(&["--subscribers", "100", "--scenario", &path]).expect("valid");
        assert_eq!((0..100).filter(|&i| c.slow_stages(i) == 0b10).count(), 20);
        assert!((0..100).all(|i| !c.is_slow(i)));
        assert!(c.reconnect, "a slow stage's drops resume");
        let e = args(&["--scenario", &path, "--slow-fraction", "0.1"]).expect_err("both");
        assert!(e.0.contains("not both"), "{e}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn source_space_grows_by_default_and_refuses_a_short_list() {
        let lo = |d: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d));
        let held: BusyPairs = (10_000..60_000u16).map(|p| (lo(1), p)).collect();
        let mut c = args(&["--subscribers", "20000"]).expect("valid");
        assert_eq!(c.source_ips, vec![lo(1)]);
        let note = c.plan_sources(held.clone()).expect("grows");
        assert!(c.source_ips.len() >= 2, "{:?}", c.source_ips);
        assert!(note.is_some_and(|n| n.contains("still held")));
        let mut c = args(&["--subscribers", "20000", "--source-ips", "127.0.0.1"]).expect("valid");
        let e = c.plan_sources(held).expect_err("exhausted");
        assert!(
            e.0.contains("exhausted") && e.0.contains("--source-ips"),
            "{e}"
        );
        let mut c = args(&["--subscribers", "20000", "--source-ips", "127.0.0.1"]).expect("valid");
        assert_eq!(c.plan_sources(BusyPairs::new()), Ok(None));
    }

    #[test]
    fn nodes_weights_and_topology() {
        let c = args(&[
            "--url",
            "http://127.0.0.1:1@3",
            "--url",
            "http://127.0.0.1:2",
            "--topics",
            "2",
        ])
        .expect("valid");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!((c.nodes[0].weight, c.nodes[1].weight), (3, 1));
        assert_eq!((0..400).filter(|&i| c.node_of(i) == 0).count(), 300);
        // Independent by default: each node publishes its own events.
        assert_eq!(c.publish.len(), 2);
        assert_eq!(c.pub_groups, vec![0, 1]);
        assert_eq!((c.channel(1, 1), c.groups()), (3, 2));
        // A topic's events take turns over the targets.
        assert_eq!(
            (0..4).map(|k| c.pub_target(k)).collect::<Vec<_>>(),
            vec![0, 0, 1, 1]
        );
        let c = args(&[
            "--url",
            "http://127.0.0.1:1",
            "--url",
            "http://127.0.0.1:2",
            "--topology",
            "cluster",
        ])
        .expect("valid");
        assert_eq!((c.publish.len(), c.groups(), c.channel(1, 0)), (1, 1, 0));
        for bad in [
            &["--url", "http://127.0.0.1:1@0"][..],
            &["--url", "http://127.0.0.1:1", "--url", "http://127.0.0.1:1"],
            &["--pub-url", "http://127.0.0.1:9/publish"],
            &["--topology", "mesh"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(node_cycle(&[2, 1]), vec![0, 1, 0]);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
