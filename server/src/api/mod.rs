//! The request policy: what to do with a request, decided from its head
//! alone, before its body is read. Pure: a parsed head and the client in,
//! a [`Decision`] out; no sockets, table-tested.
//!
//! - routes, methods and every status with its reason (here);
//! - [`client`]: who the client is behind `--trusted-proxy` hops;
//! - [`auth`]: bearer tokens and the rule for publishing without one;
//! - [`authz`]: JWT rights: which topics a publisher or a stream may use;
//! - [`cors`]: which browser origins may read our answers;
//! - [`publish`]: the body of `POST /publish`, once authorized;
//! - [`response`]: the bytes of an answer and of a stream's head;
//! - [`jwt`]: keys from `--jwt-key` and friends, token verification, claims;
//! - [`token_source`]: the token of a request (header, query, cookie);
//! - [`selector`]: exact topics, `*`, `prefix/*` and URI templates;
//! - [`pattern_index`]: which pattern subscriptions a published topic reaches.
//!
//! A request that will be refused is answered from its head: its body is
//! never read (the worker discards a small one or closes), and `100
//! Continue` is sent only once the request is authorized.

pub mod auth;
pub mod authz;
pub mod client;
pub mod cors;
pub mod jwt;
pub mod pattern_index;
pub mod publish;
pub mod response;
pub mod selector;
pub mod token_source;

use std::net::IpAddr;

use crate::hub::id::ResumePoint;
use crate::hub::publish::PublishRequest;
use crate::hub::topic::Topic;
use crate::limit::Limit;
use crate::wire::http::{self, Method, RequestHead};
use authz::{AuthzConfig, PublishRights, StreamRights};
use client::{Client, TrustedProxies};
use cors::{preflight, Cors};
use publish::{parse_publish, PublishRules};
pub use response::{stream_preamble, Headers, Response, STREAM_HEADERS};
use selector::{Pattern, PatternLimits};

/// The live page served at `GET /`: self-contained, nothing fetched from
/// elsewhere.
pub const PAGE_HTML: &str = include_str!("../page/index.html");

/// The knobs the policy needs (copied from the config once per worker).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub topics_per_stream_max: usize,
    pub topic_bytes_max: usize,
    /// Bounds on a stream's topic patterns.
    pub pattern_limits: PatternLimits,
    pub publish_rules: PublishRules,
    /// `--publish-token`: publishing needs `Authorization: Bearer` with it.
    /// Unset: publishing only by local tools ([`auth::tokenless_publish_refusal`]).
    pub publish_token: Option<String>,
    /// `--subscribe-token`: streams need it (header or `access_token`).
    pub subscribe_token: Option<String>,
    pub cors: Cors,
    /// `--trusted-proxy`: peers whose forwarding headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// JWT keys and rules (`--jwt-key`, `--subscribe-auth`, ...). The keys
    /// start unset here: the worker takes the node's current ones from the
    /// bus before its first request and again after each reload.
    pub authz: AuthzConfig,
    /// `/metrics` on this port: false when `--admin-listen` serves it.
    pub metrics_public: bool,
}

impl ApiConfig {
    pub fn from_config(config: &crate::config::Config) -> ApiConfig {
        ApiConfig {
            topics_per_stream_max: usize::from(config.topics_per_stream_max),
            topic_bytes_max: usize::from(config.topic_bytes_max),
            pattern_limits: PatternLimits::default(),
            publish_rules: PublishRules {
                topic_bytes_max: usize::from(config.topic_bytes_max),
                batch_events_max: config.publish_batch_events_max as usize,
            },
            publish_token: config.publish_token.clone(),
            subscribe_token: config.subscribe_token.clone(),
            cors: Cors::from_list(&config.cors_origin),
            trusted_proxies: TrustedProxies::new(config.trusted_proxy.clone()),
            authz: AuthzConfig::from_config(config, None),
            metrics_public: config.admin_listen.is_none(),
        }
    }
}

/// What to do with a request whose head is complete; its body, if any,
/// is still unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer now. A body the request carries is never read.
    Respond(Response),
    /// Open an SSE stream on these (deduplicated, validated) topics,
    /// replaying from `resume` first.
    Stream {
        topics: Vec<Topic>,
        /// Topic patterns (`orders/*`, `books/{id}`): live events of every
        /// topic they match; not replayed on resume.
        patterns: Vec<Pattern>,
        resume: ResumePoint,
        /// Extra head lines (CORS).
        headers: Headers,
        /// The client, for per-IP limits (resumes, connections).
        client: Client,
        /// What the stream's token grants (private events of its topics).
        rights: StreamRights,
    },
    /// An authorized publish: read the body (after `100 Continue` if the
    /// client waits for it), then [`publish_body`].
    ReadBody(PublishGrant),
    /// The node's counters as Prometheus text.
    Metrics { keep_alive: bool, headers: Headers },
    /// A page of the node's streams (`GET /subscriptions`), authorized.
    Presence {
        keep_alive: bool,
        headers: Headers,
        query: crate::bus::presence::Query,
    },
    /// Whether the node takes new streams (`GET /readyz`): the bus decides
    /// ([`crate::bus::Shared::readiness`]), then [`readiness_response`].
    Ready { keep_alive: bool, headers: Headers },
}

/// The answer to `GET /readyz`: 200 when the node takes new streams, 503
/// with the reason (and a retry hint) when not. `/healthz` is liveness.
pub fn readiness_response(ready: Result<(), &str>, keep_alive: bool) -> Response {
    match ready {
        Ok(()) => Response::text(200, "ready", keep_alive),
        Err(why) => {
            let mut r = Response::text(503, &format!("not ready: {why}"), keep_alive);
            r.retry_after_s = Some(1);
            if why.starts_with("broker") {
                r.limit = Some(crate::limit::Limit::BrokerUnavailable);
            }
            r
        }
    }
}

/// A publish that passed authorization, waiting for its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishGrant {
    pub keep_alive: bool,
    /// Extra answer headers (CORS).
    pub headers: Headers,
    /// The publish rate bucket: the token's, else the client's.
    pub rate_key: u64,
    /// The topics the publisher may publish to (checked on the body).
    pub rights: PublishRights,
}

/// Decide what a request gets from its head. `peer` is the TCP peer (or
/// the PROXY protocol source).
pub fn decide(head: &RequestHead, peer: IpAddr, cfg: &ApiConfig) -> Decision {
    let client = client::resolve(head, peer, &cfg.trusted_proxies);
    let cors = cfg.cors.headers(head.header("origin"));
    let mut decision = route(head, &client, cfg);
    match &mut decision {
        Decision::Respond(r) => r.headers.extend(cors),
        Decision::Stream { headers, .. }
        | Decision::Metrics { headers, .. }
        | Decision::Presence { headers, .. }
        | Decision::Ready { headers, .. }
        | Decision::ReadBody(PublishGrant { headers, .. }) => headers.extend(cors),
    }
    decision
}

/// The events of an authorized publish's body, or the answer refusing it.
pub fn publish_body(
    grant: &PublishGrant,
    head: &RequestHead,
    body: &[u8],
    cfg: &ApiConfig,
) -> Result<Vec<PublishRequest>, Response> {
    let requests =
        parse_publish(head.header("content-type"), body, &cfg.publish_rules).map_err(|e| {
            let mut r = Response::publish_error(&e, grant.keep_alive);
            r.headers = grant.headers.clone();
            r
        })?;
    authz::publish_topics(&grant.rights, &requests, grant.keep_alive).map_err(|mut r| {
        r.headers.extend(grant.headers.iter().cloned());
        r
    })?;
    Ok(requests)
}

fn route(head: &RequestHead, client: &Client, cfg: &ApiConfig) -> Decision {
    let keep_alive = head.keep_alive;
    let (allow, method) = match head.path.as_str() {
        "/metrics" if !cfg.metrics_public => {
            return Decision::Respond(Response::text(404, "not found", keep_alive))
        }
        "/events" | "/subscriptions" | "/healthz" | "/readyz" | "/metrics" | "/" => {
            ("GET, OPTIONS", Method::Get)
        }
        "/publish" => ("POST, OPTIONS", Method::Post),
        _ => return Decision::Respond(Response::text(404, "not found", keep_alive)),
    };
    if head.method == Method::Options {
        return Decision::Respond(preflight(allow, keep_alive));
    }
    if head.method != method {
        return method_not_allowed(allow, keep_alive);
    }
    match head.path.as_str() {
        "/events" => stream(head, client, cfg),
        "/publish" => publish(head, client, cfg),
        "/subscriptions" => match authz::presence_from_head(head, client, &cfg.authz) {
            Ok(query) => Decision::Presence {
                keep_alive,
                headers: Headers::new(),
                query,
            },
            Err(r) => Decision::Respond(r),
        },
        "/healthz" => Decision::Respond(Response::text(200, "ok", keep_alive)),
        "/readyz" => Decision::Ready {
            keep_alive,
            headers: Headers::new(),
        },
        "/metrics" => Decision::Metrics {
            keep_alive,
            headers: Headers::new(),
        },
        _ => {
            let mut r = Response::text(200, "", keep_alive);
            r.content_type = "text/html; charset=utf-8";
            r.body = PAGE_HTML.as_bytes().to_vec();
            r.headers.push(("Cache-Control", "no-cache".to_string()));
            Decision::Respond(r)
        }
    }
}

fn method_not_allowed(allow: &'static str, keep_alive: bool) -> Decision {
    let mut r = Response::text(405, "method not allowed", keep_alive);
    r.allow = Some(allow);
    Decision::Respond(r)
}

fn bad_request(reason: &str) -> Decision {
    // A malformed request may have left the connection out of step: close.
    Decision::Respond(Response::text(400, reason, false))
}

/// A 400 that names the limit it stands for (closes, like `bad_request`).
fn refused(limit: Limit, reason: &str) -> Decision {
    let mut r = Response::text(limit.status(), reason, false);
    r.limit = Some(limit);
    Decision::Respond(r)
}

fn stream(head: &RequestHead, client: &Client, cfg: &ApiConfig) -> Decision {
    let pairs = match http::parse_query(&head.query) {
        Ok(p) => p,
        Err(e) => return bad_request(e.reason()),
    };
    let mut topics: Vec<Topic> = Vec::new();
    let mut patterns: Vec<Pattern> = Vec::new();
    let mut last_event_id: Option<&str> = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "lastEventId" => last_event_id = Some(v),
            "topic" => {
                let seen = topics.iter().any(|t| t.as_str() == v)
                    || patterns.iter().any(|p| p.as_str() == v);
                if seen {
                    continue;
                }
                if topics.len() + patterns.len() == cfg.topics_per_stream_max {
                    return refused(
                        Limit::TopicsPerStream,
                        &format!(
                            "too many topics: at most {} per stream",
                            cfg.topics_per_stream_max
                        ),
                    );
                }
                if v.contains(['*', '{']) {
                    // A pattern: the same grammar as token selectors.
                    match Pattern::parse(v, &cfg.pattern_limits) {
                        Ok(p) => patterns.push(p),
                        Err(e) => {
                            return refused(
                                Limit::TopicName,
                                &format!("invalid topic pattern: {e}"),
                            )
                        }
                    }
                    continue;
                }
                let topic = match Topic::parse(v, cfg.topic_bytes_max) {
                    Ok(t) => t,
                    Err(e) => return refused(Limit::TopicName, &format!("invalid topic: {e}")),
                };
                topics.push(topic);
            }
            _ => {}
        }
    }
    let names: Vec<&str> = topics
        .iter()
        .map(Topic::as_str)
        .chain(patterns.iter().map(Pattern::as_str))
        .collect();
    let rights = match authz::stream_from_head(
        head,
        &pairs,
        &names,
        cfg.subscribe_token.as_deref(),
        &cfg.authz,
    ) {
        Ok(r) => r,
        Err(r) => return Decision::Respond(r),
    };
    if topics.is_empty() && patterns.is_empty() {
        return bad_request("missing topic: use /events?topic=NAME (repeatable)");
    }
    // A topic one of the stream's own patterns names comes through the
    // pattern: kept in both, the stream would get its events twice.
    topics.retain(|t| !patterns.iter().any(|p| p.matches(t.as_str())));
    let resume = ResumePoint::from_request(head.header("last-event-id"), last_event_id);
    Decision::Stream {
        topics,
        patterns,
        resume,
        headers: Headers::new(),
        client: *client,
        rights,
    }
}

fn publish(head: &RequestHead, client: &Client, cfg: &ApiConfig) -> Decision {
    let keep_alive = head.keep_alive;
    let query = http::parse_query(&head.query).unwrap_or_default();
    let settled = authz::publish_from_head(
        head,
        &query,
        cfg.publish_token.as_deref(),
        &cfg.authz,
        &cfg.cors,
    );
    let (rights, rate_key) = match settled {
        Err(r) => return Decision::Respond(r),
        Ok(Some(granted)) => granted,
        Ok(None) => {
            if let Some(reason) = auth::tokenless_publish_refusal(head, client, &cfg.cors) {
                let mut r = Response::publish_error(
                    &crate::hub::publish::PublishError::new(403, None, reason),
                    keep_alive,
                );
                r.limit = Some(Limit::Forbidden);
                return Decision::Respond(r);
            }
            (PublishRights::All, client_key(client))
        }
    };
    Decision::ReadBody(PublishGrant {
        keep_alive,
        headers: Headers::new(),
        rate_key,
        rights,
    })
}

/// The per-IP key of a client (an unknown client shares one bucket).
pub fn client_key(client: &Client) -> u64 {
    client.ip.map(crate::limit::ip_key).unwrap_or(1)
}

#[cfg(test)]
mod route_tests {
    use super::auth::token_matches;
    use super::cors::{CORS_ALLOW_HEADERS, CORS_MAX_AGE_S};
    use super::*;
    use crate::wire::http::{parse_head, HeadStatus, Limits};

    /// What a request comes to once its body (if authorized) is read: the
    /// two steps the worker takes, in one call for the tables below.
    #[derive(Debug)]
    #[allow(dead_code)] // fields read through Debug in failure messages
    enum Action {
        Respond(Response),
        Stream {
            topics: Vec<Topic>,
            resume: ResumePoint,
            headers: Headers,
        },
        Publish {
            requests: Vec<PublishRequest>,
            keep_alive: bool,
            headers: Headers,
        },
        Metrics {
            keep_alive: bool,
            headers: Headers,
        },
    }

    fn route(head: &RequestHead, body: &[u8], loopback: bool, cfg: &ApiConfig) -> Action {
        let peer: IpAddr = if loopback {
            [127, 0, 0, 1].into()
        } else {
            [203, 0, 113, 1].into()
        };
        match decide(head, peer, cfg) {
            Decision::Respond(r) => Action::Respond(r),
            Decision::Stream {
                topics,
                resume,
                headers,
                ..
            } => Action::Stream {
                topics,
                resume,
                headers,
            },
            Decision::Metrics {
                keep_alive,
                headers,
            } => Action::Metrics {
                keep_alive,
                headers,
            },
            Decision::Presence { .. } => Action::Respond(Response::text(200, "presence", true)),
            // The bus decides readiness; these tests see a ready node.
            Decision::Ready {
                keep_alive,
                headers,
            } => {
                let mut r = readiness_response(Ok(()), keep_alive);
                r.headers = headers;
                Action::Respond(r)
            }
            Decision::ReadBody(grant) => match publish_body(&grant, head, body, cfg) {
                Ok(requests) => Action::Publish {
                    requests,
                    keep_alive: grant.keep_alive,
                    headers: grant.headers,
                },
                Err(r) => Action::Respond(r),
            },
        }
    }

    const LIMITS: Limits = Limits {
        head_bytes_max: 8192,
        headers_count_max: 64,
        uri_bytes_max: 4096,
        body_bytes_max: 1 << 20,
    };
    const TOKEN: &str = "0123456789abcdef-token";

    fn cfg() -> ApiConfig {
        ApiConfig {
            topics_per_stream_max: 2,
            topic_bytes_max: 16,
            pattern_limits: PatternLimits::default(),
            publish_rules: PublishRules {
                topic_bytes_max: 16,
                batch_events_max: 3,
            },
            publish_token: None,
            subscribe_token: None,
            cors: Cors::default(),
            trusted_proxies: TrustedProxies::default(),
            authz: AuthzConfig {
                keys: None,
                subscribe_auth: authz::SubscribeAuth::Off,
                admin_token: None,
                generation: 0,
            },
            metrics_public: true,
        }
    }

    fn head(raw: &str) -> RequestHead {
        match parse_head(raw.as_bytes(), &LIMITS) {
            Ok(HeadStatus::Complete { head, .. }) => head,
            other => panic!("{other:?}"),
        }
    }

    fn get(target: &str, extra: &str) -> RequestHead {
        head(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"))
    }

    fn post(body: &str, ct: &str, extra: &str) -> RequestHead {
        head(&format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        ))
    }

    fn response(a: Action) -> Response {
        match a {
            Action::Respond(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn streams_dedupe_validate_and_bound_topics() {
        let a = route(
            &get("/events?topic=a&topic=b&topic=a", ""),
            b"",
            true,
            &cfg(),
        );
        match a {
            Action::Stream { topics, resume, .. } => {
                let names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
                assert_eq!(names, ["a", "b"]);
                assert_eq!(resume, ResumePoint::Live);
            }
            other => panic!("{other:?}"),
        }
        for target in [
            "/events?topic=a&topic=b&topic=c",
            "/events?topic=a%20b",
            "/events",
            "/events?topic=",
        ] {
            assert_eq!(
                response(route(&get(target, ""), b"", true, &cfg())).status,
                400,
                "{target}"
            );
        }
        let r = response(route(
            &head("POST /events?topic=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            b"",
            true,
            &cfg(),
        ));
        assert_eq!((r.status, r.allow), (405, Some("GET, OPTIONS")));
    }

    #[test]
    fn topic_refusals_name_their_limit_for_streams_and_publishes() {
        let limit = |a: Action| response(a).limit;
        let long = format!("/events?topic={}", "a".repeat(17));
        assert_eq!(
            limit(route(&get(&long, ""), b"", true, &cfg())),
            Some(Limit::TopicName)
        );
        assert_eq!(
            limit(route(
                &get("/events?topic=caf%C3%A9", ""),
                b"",
                true,
                &cfg()
            )),
            Some(Limit::TopicName)
        );
        assert_eq!(
            limit(route(
                &get("/events?topic=a&topic=b&topic=c", ""),
                b"",
                true,
                &cfg()
            )),
            Some(Limit::TopicsPerStream)
        );
        let body = "topic=a%20b&data=x";
        let r = response(route(
            &post(body, "application/x-www-form-urlencoded", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ));
        assert_eq!((r.status, r.limit), (400, Some(Limit::TopicName)));
    }

    #[test]
    fn resume_from_header_or_query_header_wins() {
        let resume = |target: &str, extra: &str| match route(&get(target, extra), b"", true, &cfg())
        {
            Action::Stream { resume, .. } => resume,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            resume("/events?topic=a&lastEventId=5", ""),
            ResumePoint::After(5)
        );
        assert_eq!(
            resume("/events?topic=a&lastEventId=5", "Last-Event-ID: 9\r\n"),
            ResumePoint::After(9)
        );
        assert_eq!(
            resume("/events?topic=a", "Last-Event-ID: x\r\n"),
            ResumePoint::Unknown("x".into())
        );
    }

    #[test]
    fn publish_parses_bodies_and_names_fields() {
        let body = "topic=t&data=hi&event=ev";
        match route(
            &post(body, "application/x-www-form-urlencoded", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ) {
            Action::Publish { requests, .. } => {
                assert_eq!(requests.len(), 1);
                assert_eq!(requests[0].topic.as_str(), "t");
                assert_eq!(requests[0].event.data, "hi");
            }
            other => panic!("{other:?}"),
        }
        let body = r#"[{"topic":"a","data":"1"},{"topic":"b","data":{"x": 1}}]"#;
        match route(
            &post(body, "application/json", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ) {
            Action::Publish { requests, .. } => {
                assert_eq!(requests[1].event.data, r#"{"x":1}"#);
            }
            other => panic!("{other:?}"),
        }
        let body = r#"{"topic":"a"}"#;
        let r = response(route(
            &post(body, "application/json", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ));
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, "application/json");
        assert!(String::from_utf8_lossy(&r.body).contains(r#""field":"data""#));
        let r = response(route(
            &post(body, "text/plain", ""),
            body.as_bytes(),
            true,
            &cfg(),
        ));
        assert_eq!(r.status, 415);
    }

    #[test]
    fn publish_auth_loopback_default_and_bearer_token() {
        let body = r#"{"topic":"a","data":"x"}"#;
        let ct = "application/json";
        let r = response(route(&post(body, ct, ""), body.as_bytes(), false, &cfg()));
        assert_eq!(r.status, 403);
        assert!(String::from_utf8_lossy(&r.body).contains("loopback"));

        let with_token = ApiConfig {
            publish_token: Some(TOKEN.into()),
            ..cfg()
        };
        for (extra, challenge) in [
            ("", r#"Bearer realm="stentor""#),
            (
                "Authorization: Bearer wrong\r\n",
                r#"Bearer realm="stentor", error="invalid_token""#,
            ),
            ("Authorization: Basic abc\r\n", r#"Bearer realm="stentor""#),
        ] {
            // From loopback too: a configured token is always required.
            let r = response(route(
                &post(body, ct, extra),
                body.as_bytes(),
                true,
                &with_token,
            ));
            assert_eq!(r.status, 401, "{extra}");
            assert_eq!(header(&r, "WWW-Authenticate"), Some(challenge));
        }
        let auth = format!("Authorization: bearer {TOKEN}\r\n");
        let a = route(&post(body, ct, &auth), body.as_bytes(), false, &with_token);
        assert!(matches!(a, Action::Publish { .. }), "{a:?}");
    }

    /// The tokenless publish rule, row by row: (peer, trusted proxies,
    /// extra headers, expected status, a word of the reason).
    #[test]
    fn tokenless_publishing_is_for_local_tools_only() {
        let body = r#"{"topic":"a","data":"x"}"#;
        let ct = "application/json";
        let rows: &[(&str, &[&str], &str, u16, &str)] = &[
            ("127.0.0.1", &[], "", 200, ""),
            ("::1", &[], "", 200, ""),
            ("203.0.113.9", &[], "", 403, "loopback"),
            // The proxy the docs used to recommend: nginx on the node.
            (
                "127.0.0.1",
                &[],
                "X-Forwarded-For: 203.0.113.9\r\n",
                403,
                "proxy",
            ),
            ("127.0.0.1", &[], "X-Real-IP: 203.0.113.9\r\n", 403, "proxy"),
            ("127.0.0.1", &[], "Via: 1.1 nginx\r\n", 403, "proxy"),
            (
                "127.0.0.1",
                &[],
                "Forwarded: for=127.0.0.1\r\n",
                403,
                "proxy",
            ),
            // A trusted proxy names the client: only a loopback one passes.
            (
                "127.0.0.1",
                &["127.0.0.1"],
                "X-Forwarded-For: 203.0.113.9\r\n",
                403,
                "loopback",
            ),
            (
                "127.0.0.1",
                &["127.0.0.1"],
                "X-Forwarded-For: 127.0.0.1\r\n",
                200,
                "",
            ),
            (
                "10.0.0.2",
                &["10.0.0.0/8"],
                "Forwarded: for=\"[::1]:1234\"\r\n",
                200,
                "",
            ),
            (
                "10.0.0.2",
                &["10.0.0.0/8"],
                "X-Forwarded-For: garbage\r\n",
                403,
                "loopback",
            ),
            // A page in a browser on the node: cross-site form posts.
            (
                "127.0.0.1",
                &[],
                "Origin: https://evil.example\r\n",
                403,
                "cross-origin",
            ),
            ("127.0.0.1", &[], "Origin: null\r\n", 403, "cross-origin"),
            (
                "127.0.0.1",
                &[],
                "Sec-Fetch-Site: cross-site\r\n",
                403,
                "cross-site",
            ),
            // The node's own page on a loopback host is the same origin...
            (
                "127.0.0.1",
                &[],
                "Origin: http://x\r\n",
                403,
                "cross-origin",
            ),
            // ...but a DNS-rebinding page names its own host in both.
            (
                "127.0.0.1",
                &[],
                "Origin: http://evil.example:8080\r\n",
                403,
                "cross-origin",
            ),
        ];
        for (peer, trusted, extra, status, word) in rows {
            let c = ApiConfig {
                trusted_proxies: TrustedProxies::new(
                    trusted.iter().map(|t| t.parse().unwrap()).collect(),
                ),
                ..cfg()
            };
            let h = post(body, ct, extra);
            let peer: IpAddr = peer.parse().unwrap();
            let got = match decide(&h, peer, &c) {
                Decision::ReadBody(_) => 200,
                Decision::Respond(r) => {
                    let text = String::from_utf8_lossy(&r.body).to_string();
                    assert!(text.contains(word), "{peer} {extra:?}: {text}");
                    assert_eq!(r.limit, Some(Limit::Forbidden));
                    r.status
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(got, *status, "{peer} {trusted:?} {extra:?}");
        }
        // The node's own page, loaded from a loopback host, may publish.
        let own = head(&format!(
            "POST /publish HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:8080\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        assert!(matches!(
            decide(&own, [127, 0, 0, 1].into(), &cfg()),
            Decision::ReadBody(_)
        ));
        let rebound = head(&format!(
            "POST /publish HTTP/1.1\r\nHost: evil.example:8080\r\nOrigin: http://evil.example:8080\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        assert!(
            matches!(decide(&rebound, [127, 0, 0, 1].into(), &cfg()), Decision::Respond(r) if r.status == 403)
        );
        // A listed origin may publish from a page on the node.
        let listed = ApiConfig {
            cors: Cors::from_list(&["https://app.example".to_string()]),
            ..cfg()
        };
        let h = post(body, ct, "Origin: https://app.example\r\n");
        assert!(matches!(
            decide(&h, [127, 0, 0, 1].into(), &listed),
            Decision::ReadBody(_)
        ));
    }

    /// A request that will be refused is decided from its head: nothing
    /// asks for its body, however large it says it is.
    #[test]
    fn refusals_are_decided_before_the_body() {
        let big = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n";
        let with_token = ApiConfig {
            publish_token: Some(TOKEN.into()),
            ..cfg()
        };
        let h = head(&format!("{big}Authorization: Bearer wrong\r\n\r\n"));
        assert!(
            matches!(decide(&h, [127, 0, 0, 1].into(), &with_token), Decision::Respond(r) if r.status == 401)
        );
        let h = head(&format!("{big}\r\n"));
        assert!(
            matches!(decide(&h, [203, 0, 113, 1].into(), &cfg()), Decision::Respond(r) if r.status == 403)
        );
        let h2 = head(&format!("{}\r\n", big.replace("/publish", "/nowhere")));
        assert!(
            matches!(decide(&h2, [127, 0, 0, 1].into(), &cfg()), Decision::Respond(r) if r.status == 404)
        );
        let h = head(&format!(
            "{}\r\n",
            big.replace("POST /publish", "PUT /publish")
        ));
        assert!(
            matches!(decide(&h, [127, 0, 0, 1].into(), &cfg()), Decision::Respond(r) if r.status == 405)
        );
        let auth = format!("{big}Authorization: Bearer {TOKEN}\r\n\r\n");
        assert!(matches!(
            decide(&head(&auth), [203, 0, 113, 1].into(), &with_token),
            Decision::ReadBody(_)
        ));
    }

    #[test]
    fn subscribe_token_by_header_or_query() {
        let c = ApiConfig {
            subscribe_token: Some(TOKEN.into()),
            ..cfg()
        };
        let r = response(route(&get("/events?topic=a", ""), b"", true, &c));
        assert_eq!(r.status, 401);
        let r = response(route(
            &get("/events?topic=a&access_token=nope", ""),
            b"",
            true,
            &c,
        ));
        assert_eq!(r.status, 401);
        let q = format!("/events?topic=a&access_token={TOKEN}");
        assert!(matches!(
            route(&get(&q, ""), b"", true, &c),
            Action::Stream { .. }
        ));
        let h = format!("Authorization: Bearer {TOKEN}\r\n");
        assert!(matches!(
            route(&get("/events?topic=a", &h), b"", true, &c),
            Action::Stream { .. }
        ));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"abcd", b"abc"));
        assert!(!token_matches(b"", b"abc"));
    }

    #[test]
    fn cors_echoes_listed_origins_with_credentials_and_star_without() {
        let listed = Cors::from_list(&["https://a.example".into()]);
        let h = listed.headers(Some("https://a.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://a.example".into())));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(h.contains(&("Vary", "Origin".into())));
        let h = listed.headers(Some("https://evil.example"));
        assert_eq!(h, [("Vary", "Origin".to_string())]);

        let star = Cors::from_list(&["*".into()]);
        assert_eq!(
            star.headers(Some("https://x.example")),
            [("Access-Control-Allow-Origin", "*".to_string())]
        );
        assert!(Cors::default()
            .headers(Some("https://x.example"))
            .is_empty());
        let both = Cors::from_list(&["*".into(), "https://a.example".into()]);
        let h = both.headers(Some("https://b.example"));
        assert!(h.contains(&("Access-Control-Allow-Origin", "*".into())));
        assert!(!h
            .iter()
            .any(|(n, _)| *n == "Access-Control-Allow-Credentials"));
    }

    #[test]
    fn preflight_and_stream_carry_cors() {
        let c = ApiConfig {
            cors: Cors::from_list(&["https://a.example".into()]),
            ..cfg()
        };
        let r = response(route(
            &head("OPTIONS /publish HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: POST\r\n\r\n"),
            b"",
            false,
            &c,
        ));
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
        assert_eq!(
            header(&r, "Access-Control-Allow-Origin"),
            Some("https://a.example")
        );
        assert_eq!(
            header(&r, "Access-Control-Allow-Headers"),
            Some(CORS_ALLOW_HEADERS)
        );
        assert_eq!(header(&r, "Access-Control-Max-Age"), Some(CORS_MAX_AGE_S));
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 "), "{text}");
        assert!(!text.contains("\r\nContent-Type:"), "{text}");
        match route(
            &get("/events?topic=a", "Origin: https://a.example\r\n"),
            b"",
            true,
            &c,
        ) {
            Action::Stream { headers, .. } => {
                assert!(
                    headers.contains(&("Access-Control-Allow-Origin", "https://a.example".into()))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn readyz_is_decided_by_the_bus_and_says_why_not() {
        let d = decide(&get("/readyz", ""), [203, 0, 113, 1].into(), &cfg());
        assert!(
            matches!(
                d,
                Decision::Ready {
                    keep_alive: true,
                    ..
                }
            ),
            "{d:?}"
        );
        assert_eq!(readiness_response(Ok(()), true).status, 200);
        let down = readiness_response(Err("broker unavailable"), true);
        assert_eq!((down.status, down.retry_after_s), (503, Some(1)));
        assert_eq!(down.limit, Some(crate::limit::Limit::BrokerUnavailable));
        assert!(String::from_utf8_lossy(&down.body).contains("broker unavailable"));
    }

    #[test]
    fn other_paths() {
        assert_eq!(
            response(route(&get("/healthz", ""), b"", false, &cfg())).status,
            200
        );
        assert_eq!(
            response(route(&get("/nowhere", ""), b"", false, &cfg())).status,
            404
        );
        let page = response(route(&get("/", ""), b"", false, &cfg()));
        assert_eq!(
            (page.status, page.content_type),
            (200, "text/html; charset=utf-8")
        );
        assert!(String::from_utf8_lossy(&page.body).contains("EventSource"));
        assert!(matches!(
            route(&get("/metrics", ""), b"", false, &cfg()),
            Action::Metrics {
                keep_alive: true,
                ..
            }
        ));
        assert!(matches!(
            decide(&get("/readyz", ""), [203, 0, 113, 1].into(), &cfg()),
            Decision::Ready {
                keep_alive: true,
                ..
            }
        ));
    }

    /// With `--admin-listen`, `/metrics` lives there only: the public port
    /// does not even admit it exists. Liveness and readiness stay on both.
    #[test]
    fn metrics_leave_the_public_port_when_an_admin_port_serves_them() {
        let c = ApiConfig {
            metrics_public: false,
            ..cfg()
        };
        assert!(matches!(
            decide(&get("/metrics", ""), [127, 0, 0, 1].into(), &c),
            Decision::Respond(r) if r.status == 404
        ));
        assert!(matches!(
            decide(&get("/readyz", ""), [127, 0, 0, 1].into(), &c),
            Decision::Ready { .. }
        ));
        assert!(matches!(
            decide(&get("/healthz", ""), [127, 0, 0, 1].into(), &c),
            Decision::Respond(r) if r.status == 200
        ));
    }

    #[test]
    fn responses_carry_allow_and_retry_after() {
        let mut r = Response::text(503, "full", false);
        r.retry_after_s = Some(1);
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
    }
}
