//! The Redis Streams broker: one client connection, the publish script, the
//! log reader and resume ranges, and the two threads a node runs on them.
//!
//! # Keys (namespace `ns`, default `default`)
//!
//! - `stentor:{ns}:counter`: the last id handed out (a string integer);
//! - `stentor:{ns}:epoch`: `<base>:<run id>`, written when the counter is
//!   (re)created; `base` is the counter's first value, so every id of this
//!   run is above it;
//! - `stentor:{ns}:log`: every event of every topic, in id order (the stream
//!   each node follows);
//! - `stentor:{ns}:t:<topic>`: one topic's events (for resume).
//!
//! The braces are a Redis Cluster hash tag: all keys of a namespace live in
//! one slot, which the publish script needs (it touches several keys).
//!
//! Stream entry ids are `<id>-0`, where `<id>` is the cluster id of the
//! event, so Redis checks the order for us and `XRANGE (<id>-0 +` is a
//! resume. An entry holds `topic`, `data`, and only when set `event` (the
//! type), `retry` and `private` (`1`).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, ErrorKind, RedisError, ServerError, ServerErrorKind, Value};

use super::{
    random_u64, Backoff, BrokerError, BrokerErrorKind, BrokerEvent, BrokerOptions, BrokerShared,
    NewEvent, PublishJob, RangeResult, Read, ReaderMsg,
};

/// Oldest Redis this client works with: 7.0 reports how far a stream was
/// trimmed (`max-deleted-entry-id`), which is how a resume tells "evicted"
/// from "nothing was published".
pub const REDIS_VERSION_MIN: (u32, u32) = (7, 0);

/// How long a stopped thread may take to notice: the slice its backoff
/// sleeps and its idle wait are cut in.
const STOP_POLL_MS: u64 = 50;

/// Whether this build speaks TLS to Redis (`rediss://`): it does, through
/// the `redis` crate's rustls support (ring as the crypto provider, built
/// from source, no system library). Kept as a constant so a build without
/// it refuses `rediss://` with a clear error instead of a handshake failure.
pub const TLS_SUPPORTED: bool = true;

/// Publishes one batch atomically; see `docs/design/cluster.md` ("Total order").
///
/// KEYS: counter, epoch, log, then the topic stream of each event.
/// ARGV: id floor, topic MAXLEN, log MAXLEN, run id, then five per event:
/// topic, event type (`''` = none, else `=` and the type), data, retry
/// (`''` = none), private (`1` or `0`).
/// Returns the first id of the batch and the epoch, both as strings.
///
/// Every check that can fail runs before the first write: Redis does not
/// roll a script back, and a half-written batch would leave a hole in the
/// log that readers would report as a gap.
///
/// A topic stream is trimmed by hand rather than with `MAXLEN ~`: Redis
/// records what `XDEL` removed (`max-deleted-entry-id`) but not what a trim
/// removed, and a resume needs that to tell "evicted" from "nothing was
/// published to this topic in between". Once a stream holds `max + slack`
/// entries (slack: a tenth of `max`, 1 to 100) the oldest are cut with
/// `XTRIM MINID` and `XSETID … MAXDELETEDID` records the newest one cut,
/// so the work is one `XLEN` per event plus one cut per `slack` events.
/// The log keeps `MAXLEN ~`: its ids are consecutive, so a reader sees a
/// trim there as a jump.
const PUBLISH_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local n = (#ARGV - 4) / 5
if n < 1 or n ~= math.floor(n) or #KEYS ~= n + 3 then
  return redis.error_reply('ERR stentor: malformed publish call')
end
for i = 3, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('ERR stentor: key ' .. KEYS[i] .. ' holds a ' .. t .. ', not a stream')
  end
end
local last = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if last and not tonumber(last) then
  return redis.error_reply('ERR stentor: key ' .. KEYS[1] .. ' is not an integer')
end
-- No counter: a fresh or wiped Redis. A counter below an id this node has
-- seen: Redis lost acknowledged writes (a crash with appendfsync everysec,
-- failover to a lagging replica); counting on would hand those ids out
-- again. Either way a new run starts above everything known.
if not last or not epoch or tonumber(last) < tonumber(ARGV[1]) then
  local t = redis.call('TIME')
  local floor = tonumber(t[1]) * 1000000 + math.floor(tonumber(t[2]) / 1000) * 1000
  local seen = tonumber(ARGV[1])
  if seen > floor then floor = seen end
  if last and tonumber(last) > floor then floor = tonumber(last) end
  local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if top[1] then
    local logtop = tonumber(string.match(top[1][1], '^(%d+)'))
    if logtop > floor then floor = logtop end
  end
  local base = string.format('%.0f', floor)
  epoch = base .. ':' .. ARGV[4]
  redis.call('SET', KEYS[1], base)
  redis.call('SET', KEYS[2], epoch)
end
local max = tonumber(ARGV[2])
local slack = math.max(1, math.min(100, math.floor(max / 10)))
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
for i = 1, n do
  local a = 5 + (i - 1) * 5
  local id = string.format('%.0f-0', first + i - 1)
  local f = {'topic', ARGV[a], 'data', ARGV[a + 2]}
  if ARGV[a + 1] ~= '' then f[#f + 1] = 'event'; f[#f + 1] = string.sub(ARGV[a + 1], 2) end
  if ARGV[a + 3] ~= '' then f[#f + 1] = 'retry'; f[#f + 1] = ARGV[a + 3] end
  if ARGV[a + 4] == '1' then f[#f + 1] = 'private'; f[#f + 1] = '1' end
  redis.call('XADD', KEYS[3 + i], id, unpack(f))
  local len = redis.call('XLEN', KEYS[3 + i])
  if len >= max + slack then
    local cut = redis.call('XRANGE', KEYS[3 + i], '-', '+', 'COUNT', len - max)
    local gone = cut[#cut][1]
    local keep = tonumber(string.match(gone, '^(%d+)')) + 1
    redis.call('XTRIM', KEYS[3 + i], 'MINID', string.format('%.0f-0', keep))
    redis.call('XSETID', KEYS[3 + i], id, 'MAXDELETEDID', gone)
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, unpack(f))
end
return {string.format('%.0f', first), epoch}
"#;

/// The keys of one namespace.
#[derive(Debug, Clone)]
struct Keys {
    counter: String,
    epoch: String,
    log: String,
    topic_prefix: String,
}

impl Keys {
    fn new(namespace: &str) -> Keys {
        let root = format!("stentor:{{{namespace}}}");
        Keys {
            counter: format!("{root}:counter"),
            epoch: format!("{root}:epoch"),
            log: format!("{root}:log"),
            topic_prefix: format!("{root}:t:"),
        }
    }

    fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }
}

/// What the reader knows of the id sequence's run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EpochState {
    /// Nothing read yet.
    Unknown,
    /// The run this reader is following.
    Known(String),
    /// The run ended (Redis lost its data), a reset was reported, and no
    /// new run has started yet.
    Gone,
}

/// One connection to Redis and what the node knows of the id sequence.
///
/// Calls block for at most the connect timeout plus the I/O timeout (plus
/// the blocking time asked for, for [`RedisBroker::read_after`]). After an
/// error that may leave the connection out of step (I/O, timeout, a reply
/// we could not read) the connection is dropped, and the next call opens a
/// new one; a caller that wants a backoff between attempts keeps it itself
/// (as [`spawn_reader`] and [`spawn_publisher`] do).
pub struct RedisBroker {
    client: Client,
    conn: Option<Connection>,
    opts: BrokerOptions,
    keys: Keys,
    script_sha: String,
    /// Written to the epoch key if this node's publish starts a run.
    run_id: String,
    id_seen_max: u64,
    epoch: EpochState,
    /// The read timeout currently set on `conn`, to skip a setsockopt per read.
    read_timeout: Option<Duration>,
}

impl RedisBroker {
    /// Checks the URL and options, without connecting.
    ///
    /// URL: `redis://[user:pass@]HOST:PORT[/DB]` or `rediss://…` (TLS,
    /// trusting `opts.tls_ca_file` if set, else the system's store).
    pub fn new(url: &str, opts: BrokerOptions) -> Result<RedisBroker, BrokerError> {
        opts.validate()?;
        let ca_pem = match &opts.tls_ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                BrokerError::config(format!(
                    "cannot read broker TLS CA file {}: {e}",
                    path.display()
                ))
            })?),
        };
        let client = open_client(url, ca_pem)?;
        let keys = Keys::new(&opts.namespace);
        Ok(RedisBroker {
            client,
            conn: None,
            keys,
            script_sha: ::redis::Script::new(PUBLISH_LUA).get_hash().to_string(),
            run_id: format!("{:016x}", random_u64()),
            id_seen_max: 0,
            epoch: EpochState::Unknown,
            read_timeout: None,
            opts,
        })
    }

    /// [`RedisBroker::new`], then connects and checks the server's version.
    pub fn connect(url: &str, opts: BrokerOptions) -> Result<RedisBroker, BrokerError> {
        let mut broker = RedisBroker::new(url, opts)?;
        broker.ensure_connected()?;
        Ok(broker)
    }

    /// Whether a connection is open (it may still have died unnoticed).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Opens the connection if there is none.
    pub fn ensure_connected(&mut self) -> Result<(), BrokerError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut conn = self
            .client
            .get_connection_with_timeout(self.opts.connect_timeout())
            .map_err(|e| map_err(e, BrokerErrorKind::Connect))?;
        let io = Some(self.opts.io_timeout());
        conn.set_write_timeout(io)
            .and_then(|()| conn.set_read_timeout(io))
            .map_err(|e| map_err(e, BrokerErrorKind::Connect))?;
        match ::redis::cmd("INFO")
            .arg("server")
            .query::<String>(&mut conn)
        {
            Ok(info) => check_version(&info)?,
            // An ACL user may not run INFO: then the commands themselves
            // tell an old server by failing.
            Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => {}
            Err(e) => return Err(map_err(e, BrokerErrorKind::Connect)),
        }
        self.read_timeout = io;
        self.conn = Some(conn);
        Ok(())
    }

    /// Raises the floor a publish starts a new run of ids above (see
    /// [`BrokerShared::id_seen_max`]).
    pub fn note_id_seen(&mut self, id: u64) {
        self.id_seen_max = self.id_seen_max.max(id);
    }

    /// Highest id this broker handed out, read, or was told of.
    pub fn id_seen_max(&self) -> u64 {
        self.id_seen_max
    }

    /// Publishes one batch in one round trip; its ids, in order.
    pub fn publish(&mut self, batch: &[NewEvent]) -> Result<Vec<u64>, BrokerError> {
        self.publish_many(&[batch])
            .pop()
            .unwrap_or_else(|| Err(BrokerError::protocol("no result for the batch")))
    }

    /// Publishes several batches in one round trip (one script call each, in
    /// order, so the ids of a later batch are above those of an earlier
    /// one). One result per batch: each batch is stored whole or not at all.
    pub fn publish_many(&mut self, batches: &[&[NewEvent]]) -> Vec<Result<Vec<u64>, BrokerError>> {
        let mut results: Vec<Option<Result<Vec<u64>, BrokerError>>> = vec![None; batches.len()];
        let mut pending = Vec::with_capacity(batches.len());
        for (i, batch) in batches.iter().enumerate() {
            if batch.is_empty() {
                results[i] = Some(Ok(Vec::new()));
            } else if batch.len() > self.opts.batch_events_max {
                results[i] = Some(Err(BrokerError::config(format!(
                    "a batch of {} events is over the broker's batch_events_max ({})",
                    batch.len(),
                    self.opts.batch_events_max
                ))));
            } else {
                pending.push(i);
            }
        }
        // A NOSCRIPT answer means the script did not run: loading it and
        // sending those batches again cannot store anything twice.
        for attempt in 0..2 {
            if pending.is_empty() {
                break;
            }
            let sent = std::mem::take(&mut pending);
            match self.publish_round_trip(batches, &sent, attempt == 0) {
                Err(e) => {
                    for &i in &sent {
                        results[i] = Some(Err(e.clone()));
                    }
                }
                Ok(values) => {
                    for (&i, value) in sent.iter().zip(values) {
                        match value {
                            Value::ServerError(e)
                                if e.kind() == Some(ServerErrorKind::NoScript) =>
                            {
                                pending.push(i)
                            }
                            v => results[i] = Some(self.publish_result(batches[i].len(), v)),
                        }
                    }
                }
            }
        }
        for i in pending {
            results[i] = Some(Err(BrokerError::new(
                BrokerErrorKind::Script,
                "Redis keeps forgetting the publish script (SCRIPT FLUSH in a loop?)",
            )));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BrokerError::protocol("batch left unanswered"))))
            .collect()
    }

    /// One pipeline of `EVALSHA` (or, after a NOSCRIPT, `SCRIPT LOAD` and
    /// `EVALSHA` again) for the batches at `indexes`; one reply each.
    fn publish_round_trip(
        &mut self,
        batches: &[&[NewEvent]],
        indexes: &[usize],
        script_cached: bool,
    ) -> Result<Vec<Value>, BrokerError> {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        if !script_cached {
            pipe.cmd("SCRIPT").arg("LOAD").arg(PUBLISH_LUA).ignore();
        }
        for &i in indexes {
            let batch = batches[i];
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(&self.script_sha)
                .arg(batch.len() + 3);
            cmd.arg(&self.keys.counter)
                .arg(&self.keys.epoch)
                .arg(&self.keys.log);
            for e in batch {
                cmd.arg(self.keys.topic(&e.topic));
            }
            cmd.arg(self.id_seen_max)
                .arg(self.opts.history_events_max)
                .arg(self.opts.log_events_max)
                .arg(&self.run_id);
            for e in batch {
                let event = e
                    .event
                    .as_deref()
                    .map(|t| format!("={t}"))
                    .unwrap_or_default();
                let retry = e.retry.map(|r| r.to_string()).unwrap_or_default();
                cmd.arg(&e.topic)
                    .arg(event)
                    .arg(&e.data)
                    .arg(retry)
                    .arg(if e.private { "1" } else { "0" });
            }
        }
        let values: Vec<Value> = self.query(|c| pipe.query(c), BrokerErrorKind::Script)?;
        if values.len() != indexes.len() {
            self.conn = None;
            return Err(BrokerError::protocol(format!(
                "{} replies to {} publish calls",
                values.len(),
                indexes.len()
            )));
        }
        Ok(values)
    }

    /// The ids of a batch of `n` from the script's reply.
    fn publish_result(&mut self, n: usize, v: Value) -> Result<Vec<u64>, BrokerError> {
        let items = match v {
            Value::ServerError(e) => return Err(server_error(&e, BrokerErrorKind::Script)),
            Value::Array(items) if items.len() == 2 => items,
            other => {
                return Err(BrokerError::protocol(format!(
                    "publish script answered {other:?}"
                )))
            }
        };
        let first = text(&items[0])
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| BrokerError::protocol("publish script answered no first id"))?;
        let ids: Vec<u64> = (first..first + n as u64).collect();
        if let Some(&last) = ids.last() {
            self.note_id_seen(last);
        }
        Ok(ids)
    }

    /// The id of the newest entry in the log, 0 when it is empty: where a
    /// node that has seen nothing starts following.
    pub fn last_id(&mut self) -> Result<u64, BrokerError> {
        let mut cmd = ::redis::cmd("XREVRANGE");
        cmd.arg(&self.keys.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let v: Value = self.query(|c| cmd.query(c), BrokerErrorKind::Protocol)?;
        let events = parse_entries(v)?;
        Ok(events.first().map_or(0, |e| e.id))
    }

    /// The log's events after `after_id` (at most `count`, clamped to
    /// `read_count_max`), waiting up to `block_ms` for one to arrive.
    ///
    /// `after_id` 0 reads from the oldest entry kept, with no gap check.
    pub fn read_after(
        &mut self,
        after_id: u64,
        count: usize,
        block_ms: u64,
    ) -> Result<Read, BrokerError> {
        let count = count.clamp(1, self.opts.read_count_max);
        // `BLOCK 0` would wait forever.
        let block_ms = block_ms.max(1);
        self.ensure_connected()?;
        let timeout = Some(Duration::from_millis(block_ms + self.opts.io_timeout_ms));
        self.set_read_timeout(timeout)?;
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET").arg(&self.keys.epoch);
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.keys.log)
            .arg(format!("{after_id}-0"));
        let result: Result<(Option<String>, Value), BrokerError> =
            self.query(|c| pipe.query(c), BrokerErrorKind::Protocol);
        let (mut epoch, reply) = result?;
        let events = parse_xread(reply)?;
        let jumped = after_id != 0 && events.first().is_some_and(|e| e.id != after_id + 1);
        if jumped {
            // The run may have changed while XREAD blocked: ask again
            // before telling a trim from a reset.
            let mut get = ::redis::cmd("GET");
            get.arg(&self.keys.epoch);
            epoch = self.query(|c| get.query(c), BrokerErrorKind::Protocol)?;
        }
        if let Some(last) = events.last() {
            self.note_id_seen(last.id);
        }
        let reset = match (&self.epoch, &epoch) {
            (EpochState::Known(k), Some(e)) => k != e,
            (EpochState::Known(_), None) => true,
            (EpochState::Unknown, Some(e)) => jumped && after_id <= epoch_base(e),
            (EpochState::Gone, _) | (EpochState::Unknown, None) => false,
        };
        let was_gone = self.epoch == EpochState::Gone;
        self.epoch = match epoch {
            Some(e) => EpochState::Known(e),
            None if reset || was_gone => EpochState::Gone,
            None => EpochState::Unknown,
        };
        if reset {
            let epoch = match &self.epoch {
                EpochState::Known(e) => e.clone(),
                _ => String::new(),
            };
            return Ok(Read::Reset { epoch, events });
        }
        match events.first() {
            Some(first) if jumped && !was_gone => Ok(Read::Gap {
                after_id,
                first_id: first.id,
                events,
            }),
            _ => Ok(Read::Events(events)),
        }
    }

    /// The events of `topics` after `after_id`, merged in id order, at most
    /// `count_max` (the oldest), from the topics' streams: what a resume
    /// needs when the node's memory does not cover the id. One round trip.
    pub fn range(
        &mut self,
        topics: &[&str],
        after_id: u64,
        count_max: usize,
    ) -> Result<RangeResult, BrokerError> {
        let count_max = count_max.max(1);
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("GET").arg(&self.keys.epoch);
        for topic in topics {
            let key = self.keys.topic(topic);
            pipe.cmd("XINFO").arg("STREAM").arg(&key);
            pipe.cmd("XRANGE")
                .arg(&key)
                .arg(format!("({after_id}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(count_max + 1);
        }
        let values: Vec<Value> = self.query(|c| pipe.query(c), BrokerErrorKind::Protocol)?;
        if values.len() != 1 + 2 * topics.len() {
            self.conn = None;
            return Err(BrokerError::protocol("range: reply count mismatch"));
        }
        let mut out = RangeResult::default();
        let mut values = values.into_iter();
        match values.next() {
            None | Some(Value::Nil) => {}
            Some(Value::ServerError(e)) => return Err(server_error(&e, BrokerErrorKind::Protocol)),
            Some(v) => {
                let epoch = text(&v).ok_or_else(|| BrokerError::protocol("epoch is not text"))?;
                out.before_reset = after_id <= epoch_base(&epoch);
            }
        }
        while let (Some(info), Some(entries)) = (values.next(), values.next()) {
            match &info {
                // A topic nothing was published to has no stream.
                Value::ServerError(e) if e.details().is_some_and(|d| d.contains("no such key")) => {
                    continue
                }
                Value::ServerError(e) => return Err(server_error(e, BrokerErrorKind::Protocol)),
                info => {
                    if max_deleted_id(info)? > after_id {
                        out.evicted = true;
                    }
                }
            }
            if let Value::ServerError(e) = &entries {
                return Err(server_error(e, BrokerErrorKind::Protocol));
            }
            out.events.extend(parse_entries(entries)?);
        }
        out.events.sort_unstable_by_key(|e| e.id);
        out.events.dedup_by_key(|e| e.id);
        if out.events.len() > count_max {
            out.events.truncate(count_max);
            out.more = true;
        }
        Ok(out)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), BrokerError> {
        if self.read_timeout == timeout {
            return Ok(());
        }
        if let Some(conn) = &self.conn {
            if let Err(e) = conn.set_read_timeout(timeout) {
                self.conn = None;
                return Err(map_err(e, BrokerErrorKind::Connect));
            }
        }
        self.read_timeout = timeout;
        Ok(())
    }

    /// Runs a command or pipeline, connecting first if needed; drops the
    /// connection after an error that may leave it out of step.
    fn query<T>(
        &mut self,
        run: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
        server_kind: BrokerErrorKind,
    ) -> Result<T, BrokerError> {
        self.ensure_connected()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(BrokerError::new(BrokerErrorKind::Connect, "not connected"));
        };
        match run(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                let err = map_err(e, server_kind);
                if !err.keeps_connection() {
                    self.conn = None;
                }
                Err(err)
            }
        }
    }
}

/// A client for `url`, refusing what this build cannot speak.
///
/// `ca_pem`: the CA certificates (PEM) a `rediss://` server's certificate
/// must chain to, instead of the system's trust store.
fn open_client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Client, BrokerError> {
    let scheme = url.split("://").next().unwrap_or("");
    match scheme {
        "redis" => {}
        "rediss" if TLS_SUPPORTED => {}
        "rediss" => return Err(BrokerError::config(
            "rediss:// (TLS) is not supported by this build: reach Redis over a private network \
                 or a TLS tunnel (stunnel, spiped) and use redis://",
        )),
        _ => {
            return Err(BrokerError::config(format!(
                "broker URL must look like redis://[user:pass@]HOST:PORT[/DB], got {}",
                redact_url(url)
            )))
        }
    }
    let client = match ca_pem {
        Some(pem) if scheme == "rediss" => Client::build_with_tls(
            url,
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        ),
        Some(_) => {
            return Err(BrokerError::config(
                "a broker TLS CA file only applies to a rediss:// URL",
            ))
        }
        None => Client::open(url),
    };
    client.map_err(|e| {
        BrokerError::config(format!(
            "bad broker URL {}: {}",
            redact_url(url),
            e.category()
        ))
    })
}

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// Refuses a Redis older than [`REDIS_VERSION_MIN`], from `INFO server`.
fn check_version(info: &str) -> Result<(), BrokerError> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or_else(|| BrokerError::protocol("INFO server has no redis_version"))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < REDIS_VERSION_MIN {
        return Err(BrokerError::config(format!(
            "Redis {version} is too old: the broker needs {}.{} or later (stream trim tracking)",
            REDIS_VERSION_MIN.0, REDIS_VERSION_MIN.1
        )));
    }
    Ok(())
}

/// The id base of a run from its epoch value `<base>:<run id>`.
fn epoch_base(epoch: &str) -> u64 {
    epoch
        .split(':')
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0)
}

fn map_err(e: RedisError, server_kind: BrokerErrorKind) -> BrokerError {
    // A signal ends a socket read that has a timeout with EINTR, SA_RESTART
    // or not (signal(7)), possibly mid-reply: like a timeout, the connection
    // is out of step and a publish's outcome is unknown.
    let interrupted =
        e.kind() == ErrorKind::Io && e.to_string().contains("Interrupted system call");
    let kind = if e.is_timeout() || interrupted {
        BrokerErrorKind::Timeout
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == ErrorKind::AuthenticationFailed
    {
        BrokerErrorKind::Connect
    } else if e.kind() == ErrorKind::InvalidClientConfig {
        BrokerErrorKind::Config
    } else if matches!(e.kind(), ErrorKind::Server(_)) {
        if server_kind == BrokerErrorKind::Connect {
            // NOAUTH, WRONGPASS, a bad DB number: nothing works until fixed.
            BrokerErrorKind::Connect
        } else {
            BrokerErrorKind::Server
        }
    } else {
        BrokerErrorKind::Protocol
    };
    // The error's own words (they never hold the URL's password): the
    // category alone ("I/O error") does not say what to fix.
    BrokerError::new(kind, e.to_string())
}

/// A server error inside a reply: the script's own failures are `script`,
/// Redis refusing a write (OOM, READONLY, LOADING) is `server`.
fn server_error(e: &ServerError, script_kind: BrokerErrorKind) -> BrokerError {
    let kind = match e.kind() {
        Some(ServerErrorKind::ResponseError) | None => script_kind,
        Some(_) => BrokerErrorKind::Server,
    };
    let message = match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_string(),
    };
    BrokerError::new(kind, message)
}

/// A string-like reply as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// The cluster id of a stream entry id `<id>-0`.
fn parse_entry_id(v: &Value) -> Result<u64, BrokerError> {
    let raw = bytes(v).ok_or_else(|| BrokerError::protocol("stream entry id is not text"))?;
    let s = std::str::from_utf8(raw).map_err(|_| BrokerError::protocol("stream entry id"))?;
    match s.split_once('-') {
        Some((id, "0")) => id
            .parse()
            .map_err(|_| BrokerError::protocol(format!("stream entry id {s:?}"))),
        _ => Err(BrokerError::protocol(format!(
            "stream entry id {s:?} was not written by stentor"
        ))),
    }
}

/// Entries of an `XRANGE`/`XREVRANGE` reply (or of one stream in `XREAD`).
/// Takes the reply by value: the strings Redis sent become the event's
/// strings without a copy.
fn parse_entries(v: Value) -> Result<Vec<BrokerEvent>, BrokerError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(entries) => entries.into_iter().map(parse_entry).collect(),
        _ => Err(BrokerError::protocol("stream entries are not an array")),
    }
}

/// A string-like reply as an owned string, without copying.
fn into_text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

fn parse_entry(v: Value) -> Result<BrokerEvent, BrokerError> {
    let Value::Array(pair) = v else {
        return Err(BrokerError::protocol("stream entry is not an array"));
    };
    let Ok::<[Value; 2], _>([id, fields]) = pair.try_into() else {
        return Err(BrokerError::protocol("stream entry is not [id, fields]"));
    };
    let id = parse_entry_id(&id)?;
    let mut topic = None;
    let mut data = None;
    let mut event = None;
    let mut retry = None;
    let mut private = false;
    let text = |v: Value, what: &str| {
        into_text(v)
            .ok_or_else(|| BrokerError::protocol(format!("entry {id}: {what} is not UTF-8 text")))
    };
    let mut field = |k: Value, v: Value| -> Result<(), BrokerError> {
        match bytes(&k) {
            Some(b"topic") => topic = Some(text(v, "topic")?),
            Some(b"data") => data = Some(text(v, "data")?),
            Some(b"event") => event = Some(text(v, "event")?),
            Some(b"retry") => {
                let r = text(v, "retry")?;
                retry = Some(r.parse().map_err(|_| {
                    BrokerError::protocol(format!("entry {id}: retry {r:?} is not a number"))
                })?);
            }
            Some(b"private") => private = bytes(&v) == Some(b"1"),
            // A field a later version adds: carried by Redis, ignored here.
            _ => {}
        }
        Ok(())
    };
    match fields {
        Value::Array(f) => {
            let mut f = f.into_iter();
            while let Some(k) = f.next() {
                let Some(v) = f.next() else {
                    return Err(BrokerError::protocol(format!(
                        "entry {id}: odd field count"
                    )));
                };
                field(k, v)?;
            }
        }
        Value::Map(m) => {
            for (k, v) in m {
                field(k, v)?;
            }
        }
        _ => {
            return Err(BrokerError::protocol(
                "stream entry fields are not an array",
            ))
        }
    }
    match (topic, data) {
        (Some(topic), Some(data)) => Ok(BrokerEvent {
            id,
            topic,
            event,
            data,
            retry,
            private,
        }),
        _ => Err(BrokerError::protocol(format!(
            "entry {id} has no topic or no data: not written by stentor"
        ))),
    }
}

/// The entries of an `XREAD` reply on one stream (nil when it timed out).
fn parse_xread(v: Value) -> Result<Vec<BrokerEvent>, BrokerError> {
    let entries = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => match <[Value; 1]>::try_from(streams) {
            Ok([Value::Array(kv)]) => match <[Value; 2]>::try_from(kv) {
                Ok([_, entries]) => entries,
                Err(_) => return Err(BrokerError::protocol("XREAD reply is not [key, entries]")),
            },
            Ok(_) => return Err(BrokerError::protocol("XREAD reply is not [key, entries]")),
            Err(s) if s.is_empty() => return Ok(Vec::new()),
            Err(_) => return Err(BrokerError::protocol("XREAD reply is not one stream")),
        },
        Value::Map(streams) => match <[(Value, Value); 1]>::try_from(streams) {
            Ok([(_, entries)]) => entries,
            Err(s) if s.is_empty() => return Ok(Vec::new()),
            Err(_) => return Err(BrokerError::protocol("XREAD reply is not one stream")),
        },
        _ => return Err(BrokerError::protocol("XREAD reply is not an array")),
    };
    parse_entries(entries)
}

/// `max-deleted-entry-id` of an `XINFO STREAM` reply, as a cluster id.
fn max_deleted_id(info: &Value) -> Result<u64, BrokerError> {
    let pairs: Vec<(&Value, &Value)> = match info {
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?, kv.get(1)?)))
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => return Err(BrokerError::protocol("XINFO STREAM reply is not a map")),
    };
    let (_, v) = pairs
        .into_iter()
        .find(|(k, _)| bytes(k) == Some(b"max-deleted-entry-id"))
        .ok_or_else(|| BrokerError::protocol("XINFO STREAM has no max-deleted-entry-id"))?;
    // "0-0" when nothing was ever deleted.
    parse_entry_id(v)
}

/// Blocks the asynchronous signals on the calling broker thread: a signal
/// (SIGTERM for the node's shutdown, SIGCHLD) is for the node's main
/// thread, and one delivered here would end a blocking socket read with
/// EINTR, costing a reconnect (signal(7): reads with a timeout are never
/// restarted). Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) stay deliverable.
/// A thread that uses a [`RedisBroker`] directly should call it too.
pub fn block_async_signals() {
    // SAFETY: plain libc calls on a local, initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Sleeps `d`, waking every [`STOP_POLL_MS`] to return early on a stop.
fn sleep_unless_stopped(d: Duration, shared: &BrokerShared) {
    let until = Instant::now() + d;
    while !shared.stopping() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        thread::sleep((until - now).min(Duration::from_millis(STOP_POLL_MS)));
    }
}

/// Starts the node's reader thread: it follows the log from `start_after`
/// (0: from the newest entry at its first connection) and reports to `sink`,
/// in order, until `shared.stop` is set.
///
/// It reconnects with [`Backoff`] after any failure and resumes after the
/// last id it read, so nothing Redis still has is skipped or read twice. It
/// raises `shared.id_seen_max` with every id it reads.
pub fn spawn_reader(
    url: &str,
    opts: BrokerOptions,
    shared: Arc<BrokerShared>,
    start_after: u64,
    sink: impl FnMut(ReaderMsg) + Send + 'static,
) -> Result<JoinHandle<()>, BrokerError> {
    let broker = RedisBroker::new(url, opts.clone())?;
    let reader = Reader {
        broker,
        opts,
        shared,
        after: start_after,
        started: start_after != 0,
        up: false,
        backoff: Backoff::new(),
        sink,
    };
    let spawned = thread::Builder::new()
        .name("broker-reader".into())
        .spawn(move || reader.run());
    spawned.map_err(|e| BrokerError::config(format!("cannot start the broker reader thread: {e}")))
}

/// The reader thread's state: where it is in the log and whether it is up.
struct Reader<F> {
    broker: RedisBroker,
    opts: BrokerOptions,
    shared: Arc<BrokerShared>,
    /// The last id read (or the start point): the next read is after it.
    after: u64,
    /// `after` is known (0 at start means "the newest entry", resolved at
    /// the first connection).
    started: bool,
    up: bool,
    backoff: Backoff,
    sink: F,
}

impl<F: FnMut(ReaderMsg)> Reader<F> {
    fn run(mut self) {
        block_async_signals();
        while !self.shared.stopping() {
            if let Err(e) = self.step() {
                self.up = false;
                self.shared.reader_connected.store(false, Ordering::Relaxed);
                (self.sink)(ReaderMsg::Disconnected(e));
                sleep_unless_stopped(self.backoff.next_delay(), &self.shared);
            }
        }
        self.shared.reader_connected.store(false, Ordering::Relaxed);
    }

    /// Connects if down (reporting it at once, not after a blocking read),
    /// then reads once and reports what came.
    fn step(&mut self) -> Result<(), BrokerError> {
        if !self.up {
            self.broker.ensure_connected()?;
            if !self.started {
                self.after = self.broker.last_id()?;
                self.started = true;
            }
            self.up = true;
            self.backoff.reset();
            self.shared.reader_connected.store(true, Ordering::Relaxed);
            (self.sink)(ReaderMsg::Connected);
        }
        let read = self.broker.read_after(
            self.after,
            self.opts.read_count_max,
            self.opts.read_block_ms,
        )?;
        let events = match read {
            Read::Events(events) => events,
            Read::Gap {
                after_id,
                first_id,
                events,
            } => {
                (self.sink)(ReaderMsg::Gap { after_id, first_id });
                events
            }
            Read::Reset { epoch, events } => {
                (self.sink)(ReaderMsg::Reset { epoch });
                events
            }
        };
        if let Some(last) = events.last() {
            self.after = self.after.max(last.id);
            self.shared.note_id(last.id);
            (self.sink)(ReaderMsg::Events(events));
        }
        Ok(())
    }
}

/// Starts the node's publisher thread: it takes every job waiting on `rx`
/// (up to `pipeline_events_max` events), publishes them in one pipelined
/// round trip, and answers each job. It returns when `rx` is closed or
/// `shared.stop` is set, answering what is still queued with an error.
///
/// While Redis is unreachable it answers jobs with an error at once, and
/// tries to reconnect after a [`Backoff`] delay; a job never waits longer
/// than about two round-trip bounds ([`publish_wait_bound`]).
pub fn spawn_publisher(
    url: &str,
    opts: BrokerOptions,
    shared: Arc<BrokerShared>,
    rx: Receiver<PublishJob>,
) -> Result<JoinHandle<()>, BrokerError> {
    let broker = RedisBroker::new(url, opts.clone())?;
    let spawned = thread::Builder::new()
        .name("broker-publisher".into())
        .spawn(move || Publisher::new(broker, opts, shared).run(rx));
    spawned
        .map_err(|e| BrokerError::config(format!("cannot start the broker publisher thread: {e}")))
}

/// Longest a publish job waits for its answer on the publisher thread: the
/// round trip before it (connect, the pipeline, one script reload) and its
/// own.
pub fn publish_wait_bound(opts: &BrokerOptions) -> Duration {
    2 * (opts.connect_timeout() + 3 * opts.io_timeout())
}

struct Publisher {
    broker: RedisBroker,
    opts: BrokerOptions,
    shared: Arc<BrokerShared>,
    backoff: Backoff,
    /// While set and in the future, jobs are refused without trying Redis.
    retry_at: Option<Instant>,
    last_error: Option<BrokerError>,
}

impl Publisher {
    fn new(broker: RedisBroker, opts: BrokerOptions, shared: Arc<BrokerShared>) -> Publisher {
        Publisher {
            broker,
            opts,
            shared,
            backoff: Backoff::new(),
            retry_at: None,
            last_error: None,
        }
    }

    fn run(mut self, rx: Receiver<PublishJob>) {
        block_async_signals();
        self.try_connect();
        while !self.shared.stopping() {
            let first = match rx.recv_timeout(Duration::from_millis(STOP_POLL_MS)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if self.retry_due() {
                        self.try_connect();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut events = first.batch.len();
            let mut jobs = vec![first];
            while events < self.opts.pipeline_events_max {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.batch.len();
                        jobs.push(job);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.publish(jobs);
        }
        let stopping = BrokerError::new(BrokerErrorKind::Connect, "the node is stopping");
        while let Ok(job) = rx.try_recv() {
            (job.reply)(Err(stopping.clone()));
        }
        self.shared
            .publisher_connected
            .store(false, Ordering::Relaxed);
    }

    fn retry_due(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() >= t)
    }

    fn try_connect(&mut self) {
        match self.broker.ensure_connected() {
            Ok(()) => self.up(),
            Err(e) => self.down(e),
        }
    }

    fn up(&mut self) {
        self.retry_at = None;
        self.last_error = None;
        self.backoff.reset();
        self.shared
            .publisher_connected
            .store(true, Ordering::Relaxed);
    }

    fn down(&mut self, e: BrokerError) {
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        self.last_error = Some(e);
        self.shared
            .publisher_connected
            .store(false, Ordering::Relaxed);
    }

    fn publish(&mut self, jobs: Vec<PublishJob>) {
        if self.retry_at.is_some() && !self.retry_due() {
            let why = self.last_error.as_ref().map_or("", |e| e.message.as_str());
            let err = BrokerError::new(
                BrokerErrorKind::Connect,
                format!("Redis is unavailable ({why}); retrying"),
            );
            for job in jobs {
                (job.reply)(Err(err.clone()));
            }
            return;
        }
        self.broker
            .note_id_seen(self.shared.id_seen_max.load(Ordering::Relaxed));
        let batches: Vec<&[NewEvent]> = jobs.iter().map(|j| j.batch.as_slice()).collect();
        let results = self.broker.publish_many(&batches);
        let lost = results
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| !e.keeps_connection()).cloned());
        match lost {
            Some(e) => self.down(e),
            None => self.up(),
        }
        self.shared.note_id(self.broker.id_seen_max());
        for (job, result) in jobs.into_iter().zip(results) {
            (job.reply)(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(open_client("redis://127.0.0.1:6379/0", None).is_ok());
        assert!(open_client("rediss://127.0.0.1:6379", None).is_ok());
        let ca = open_client("redis://127.0.0.1:6379", Some(Vec::new())).unwrap_err();
        assert_eq!(ca.kind, BrokerErrorKind::Config);
        let other = open_client("http://u:secret@h:1", None).unwrap_err();
        assert!(!other.message.contains("secret"), "{other}");
        assert_eq!(
            redact_url("redis://user:secret@h:6379/2"),
            "redis://user:***@h:6379/2"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
    }

    #[test]
    fn keys_share_one_cluster_slot_tag() {
        let k = Keys::new("eu-1");
        assert_eq!(k.counter, "stentor:{eu-1}:counter");
        assert_eq!(k.log, "stentor:{eu-1}:log");
        assert_eq!(k.topic("a:b"), "stentor:{eu-1}:t:a:b");
    }

    #[test]
    fn versions_before_7_are_refused() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:7.2.4\r\n").is_ok());
        let old = check_version("redis_version:6.2.14\r\n").unwrap_err();
        assert!(old.message.contains("6.2.14"), "{old}");
        assert!(check_version("nothing here").is_err());
    }

    #[test]
    fn entries_parse_with_optional_fields_and_refuse_foreign_ones() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let entry = Value::Array(vec![
            s("1764361697000042-0"),
            Value::Array(vec![
                s("topic"),
                s("a"),
                s("data"),
                s("x\ny"),
                s("event"),
                s(""),
            ]),
        ]);
        let e = parse_entry(entry).unwrap();
        assert_eq!(e.id, 1764361697000042);
        assert_eq!(e.event.as_deref(), Some(""));
        assert_eq!((e.retry, e.private), (None, false));
        let foreign = Value::Array(vec![s("5-1"), Value::Array(vec![s("topic"), s("a")])]);
        assert_eq!(
            parse_entry(foreign).unwrap_err().kind,
            BrokerErrorKind::Protocol
        );
        assert_eq!(epoch_base("1764361697000000:ab12"), 1764361697000000);
    }
}
