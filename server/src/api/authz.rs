//! Who may publish to and subscribe to which topics, with JWTs beside the
//! shared tokens. Pure: a head, the keys and the topics in; the rights of
//! the request or the answer refusing it out.
//!
//! - Publishing: `--publish-token` (all topics) or, with a publisher key, a
//!   JWT whose `mercure.publish` selectors cover every topic of the batch.
//!   The token is verified from the head (401 before the body); its topics
//!   are checked once the body is parsed (403 naming the first topic it
//!   does not cover; nothing of the batch is published). With a key set,
//!   the tokenless publish rule no longer applies: a token is needed.
//! - Subscribing ([`SubscribeAuth`]): a stream's token decides, at open,
//!   which of its topics also get private events. Delivery then checks a
//!   bit (the worker's private index), never a signature.

use std::sync::Arc;

use super::auth::{bearer, token_matches, unauthorized};
use super::cors::Cors;
use super::jwt::{Claims, Keys, Role};
use super::response::Response;
use super::selector::{Pattern, PatternLimits};
use super::token_source::{authenticate, Refusal, Source};
use crate::hub::publish::{PublishError, PublishRequest};
use crate::limit::Limit;
use crate::wire::http::RequestHead;

/// `--subscribe-auth`: what a stream's token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeAuth {
    /// Tokens on streams are ignored: every stream gets public events only.
    Off,
    /// A stream may present a token; a valid one unlocks the private events
    /// of the topics it covers, a bad one is refused (401), none is public.
    Optional,
    /// Every stream presents a token covering each requested topic.
    Required,
}

/// The keys and rules of JWT authorization, as one worker holds them. The
/// keys are swapped whole on reload (SIGHUP); what a stream was granted at
/// open stays.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    pub keys: Option<Arc<Keys>>,
    pub subscribe_auth: SubscribeAuth,
    /// `--admin-token`: may list every stream (`GET /subscriptions`).
    pub admin_token: Option<String>,
    /// The bus's keys generation `keys` came from (0: not taken yet).
    pub generation: u64,
}

impl AuthzConfig {
    pub fn from_config(config: &crate::config::Config, keys: Option<Arc<Keys>>) -> AuthzConfig {
        AuthzConfig {
            keys,
            subscribe_auth: config.subscribe_auth_effective(),
            admin_token: config.admin_token.clone(),
            generation: 0,
        }
    }

    fn keys_for(&self, role: Role) -> Option<&Keys> {
        self.keys.as_deref().filter(|k| k.has_role(role))
    }
}

/// The verified claims of a token, shared between the decision and the
/// stream that keeps them. Compared by identity (two decisions are equal
/// when they hold the same verified token).
#[derive(Debug, Clone)]
pub struct Rights(pub Arc<Claims>);

impl PartialEq for Rights {
    fn eq(&self, other: &Rights) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Rights {}

/// What a publisher may publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRights {
    /// Every topic: the shared `--publish-token`, or a local tool under the
    /// tokenless rule.
    All,
    /// The topics a JWT's `publish` selectors cover.
    Token(Rights),
}

/// A refusal as the answer to send: JSON for publishers, text for streams,
/// with the `WWW-Authenticate` challenge of RFC 6750.
pub fn refusal_response(refusal: &Refusal, json: bool, keep_alive: bool) -> Response {
    let status = refusal.status();
    let mut r = if json {
        Response::publish_error(
            &PublishError::new(status, None, refusal.message()),
            keep_alive,
        )
    } else {
        Response::text(status, &refusal.message(), keep_alive)
    };
    r.headers.push(("WWW-Authenticate", refusal.challenge()));
    r.limit = Some(if status == 401 {
        Limit::Unauthorized
    } else {
        Limit::Forbidden
    });
    r
}

/// Authorize a publish from its head: `Ok(Some(..))` with the rights and
/// the rate bucket's key when a token settles it, `Ok(None)` when no token
/// applies (no `--publish-token`, no publisher key: the tokenless rule
/// decides), `Err` with the answer.
pub fn publish_from_head(
    head: &RequestHead,
    query: &[(String, String)],
    publish_token: Option<&str>,
    authz: &AuthzConfig,
    cors: &Cors,
) -> Result<Option<(PublishRights, u64)>, Response> {
    let keep_alive = head.keep_alive;
    let header = bearer(head);
    if let Some(expected) = publish_token {
        if header.is_some_and(|p| token_matches(p.as_bytes(), expected.as_bytes())) {
            // Only a configured (now checked) token names a bucket.
            return Ok(Some((
                PublishRights::All,
                crate::limit::token_key(expected.as_bytes()),
            )));
        }
    }
    let Some(keys) = authz.keys_for(Role::Publisher) else {
        return match publish_token {
            Some(_) => Err(unauthorized("publish", header.is_some(), true, keep_alive)),
            None => Ok(None),
        };
    };
    match authenticate(keys, Role::Publisher, head, query, true) {
        Err(refusal) => Err(refusal_response(&refusal, true, keep_alive)),
        Ok(None) => Err(refusal_response(&Refusal::Missing, true, keep_alive)),
        Ok(Some((claims, source))) => {
            if let Source::Cookie(name) = source {
                // A cookie rides along with any cross-site form post: only
                // a page of a listed origin may publish with one.
                let listed = head.header("origin").is_some_and(|o| cors.lists(o));
                if !listed {
                    let mut r = Response::publish_error(
                        &PublishError::new(
                            403,
                            None,
                            format!(
                                "a token in the {name} cookie may publish only from an Origin \
                                 listed in --cors-origin; send Authorization: Bearer <token>"
                            ),
                        ),
                        keep_alive,
                    );
                    r.limit = Some(Limit::Forbidden);
                    return Err(r);
                }
            }
            let key = crate::limit::token_key(token_bytes(head, query, source));
            Ok(Some((PublishRights::Token(Rights(Arc::new(claims))), key)))
        }
    }
}

/// The bytes of the token that came from `source`, for the rate bucket
/// (a verified token: a client cannot mint fresh buckets).
fn token_bytes<'a>(
    head: &'a RequestHead,
    query: &'a [(String, String)],
    source: Source,
) -> &'a [u8] {
    let found = super::token_source::find(head, query).ok().flatten();
    match found {
        Some(p) if p.source == source => p.token.as_bytes(),
        _ => b"",
    }
}

/// The publish topics a token does not cover: all or nothing, the first
/// topic it misses as a 403 naming it.
pub fn publish_topics(
    rights: &PublishRights,
    requests: &[PublishRequest],
    keep_alive: bool,
) -> Result<(), Response> {
    let PublishRights::Token(Rights(claims)) = rights else {
        return Ok(());
    };
    claims
        .authorize(Role::Publisher, requests.iter().map(|r| r.topic.as_str()))
        .map_err(|f| refusal_response(&Refusal::Forbidden(f), true, keep_alive))
}

/// What a stream's token grants: `None` = public events only.
pub type StreamRights = Option<Rights>;

/// Authorize a stream on `topics` (exact topics or patterns) from its head.
/// `subscribe_token` is the shared `--subscribe-token` gate (header or
/// `access_token`), which stays as it was; a JWT is then looked for by the
/// token sources' precedence unless the shared token took the header.
pub fn stream_from_head(
    head: &RequestHead,
    query: &[(String, String)],
    topics: &[&str],
    subscribe_token: Option<&str>,
    authz: &AuthzConfig,
) -> Result<StreamRights, Response> {
    let keep_alive = head.keep_alive;
    if let Some(expected) = subscribe_token {
        let access_token = query
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.as_str());
        let presented = bearer(head).or(access_token);
        let ok = presented.is_some_and(|p| token_matches(p.as_bytes(), expected.as_bytes()));
        if !ok {
            return Err(unauthorized(
                "subscribe",
                presented.is_some(),
                false,
                keep_alive,
            ));
        }
        if authz.subscribe_auth == SubscribeAuth::Required {
            // The shared token is a gate, not a grant of topics.
            return Err(refusal_response(&Refusal::Missing, false, keep_alive));
        }
        // The header carried the shared token: it is no JWT to verify.
        return Ok(None);
    }
    let keys = match (authz.subscribe_auth, authz.keys_for(Role::Subscriber)) {
        (SubscribeAuth::Off, _) | (_, None) => return Ok(None),
        (_, Some(keys)) => keys,
    };
    let required = authz.subscribe_auth == SubscribeAuth::Required;
    let claims = match authenticate(keys, Role::Subscriber, head, query, required) {
        Err(refusal) => return Err(refusal_response(&refusal, false, keep_alive)),
        Ok(None) => return Ok(None),
        Ok(Some((claims, _))) => claims,
    };
    if required {
        if let Some(t) = topics.iter().find(|t| !subscribe_covers(&claims, t)) {
            let refusal = Refusal::Forbidden(super::jwt::Forbidden {
                role: Role::Subscriber,
                topic: t.to_string(),
            });
            return Err(refusal_response(&refusal, false, keep_alive));
        }
    }
    Ok(Some(Rights(Arc::new(claims))))
}

/// Whether a stream with `rights` gets the private events of `topic` (an
/// exact topic, or a pattern every topic of which the token covers).
pub fn private_allowed(rights: &StreamRights, topic: &str) -> bool {
    rights
        .as_ref()
        .is_some_and(|r| subscribe_covers(&r.0, topic))
}

/// Whether `claims` may subscribe to `topic`: an exact topic one selector
/// matches, or a pattern one selector covers whole.
fn subscribe_covers(claims: &Claims, topic: &str) -> bool {
    match Pattern::parse(topic, &PatternLimits::default()) {
        Ok(p) if p.is_exact() => claims.allows(Role::Subscriber, topic),
        Ok(p) => claims.allows_pattern(&p),
        Err(_) => false,
    }
}

/// Authorize `GET /subscriptions` (presence) from its head, and read its
/// query: `topic`, `limit` (1..=`PAGE_MAX`, default `PAGE_DEFAULT`) and
/// `cursor`. Who sees what:
/// - `--admin-token`: every stream;
/// - with a subscriber key, a token: the streams on topics it could
///   subscribe to, and only those topics of each (a `?topic=` it does not
///   cover is a 403, as a subscribe would be);
/// - on a node with neither, a local tool (loopback, no proxy headers):
///   every stream, like the tokenless publish rule.
pub fn presence_from_head(
    head: &RequestHead,
    client: &super::client::Client,
    authz: &AuthzConfig,
) -> Result<crate::bus::presence::Query, Response> {
    use crate::bus::presence::{Query, Scope, PAGE_DEFAULT, PAGE_MAX};
    let keep_alive = head.keep_alive;
    let bad = |reason: String| {
        let mut r = Response::text(400, &reason, false);
        r.limit = Some(Limit::Malformed);
        r
    };
    let pairs = crate::wire::http::parse_query(&head.query).map_err(|e| bad(e.reason().into()))?;
    let mut query = Query {
        topic: None,
        limit: PAGE_DEFAULT,
        cursor: None,
        scope: Scope::All,
    };
    for (k, v) in &pairs {
        match k.as_str() {
            "topic" => query.topic = Some(v.clone()),
            "limit" => {
                query.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=PAGE_MAX).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1..={PAGE_MAX}")))?
            }
            "cursor" => {
                query.cursor = Some(
                    v.parse()
                        .map_err(|_| bad("cursor must be a next_cursor value".into()))?,
                )
            }
            _ => {}
        }
    }
    let header = bearer(head);
    if let Some(admin) = &authz.admin_token {
        if header.is_some_and(|p| token_matches(p.as_bytes(), admin.as_bytes())) {
            return Ok(query);
        }
    }
    let Some(keys) = authz.keys_for(Role::Subscriber) else {
        if authz.admin_token.is_some() {
            return Err(unauthorized("admin", header.is_some(), false, keep_alive));
        }
        if client.is_loopback() && !super::client::has_proxy_headers(head) {
            return Ok(query);
        }
        let mut r = Response::text(
            403,
            "listing subscriptions is for local tools only while neither --admin-token \
             nor a subscriber key (--jwt-key) is set",
            keep_alive,
        );
        r.limit = Some(Limit::Forbidden);
        return Err(r);
    };
    let claims = match authenticate(keys, Role::Subscriber, head, &pairs, true) {
        Err(refusal) => return Err(refusal_response(&refusal, false, keep_alive)),
        Ok(None) => return Err(refusal_response(&Refusal::Missing, false, keep_alive)),
        Ok(Some((claims, _))) => claims,
    };
    if let Some(topic) = &query.topic {
        if !subscribe_covers(&claims, topic) {
            let refusal = Refusal::Forbidden(super::jwt::Forbidden {
                role: Role::Subscriber,
                topic: topic.clone(),
            });
            return Err(refusal_response(&refusal, false, keep_alive));
        }
    }
    query.scope = Scope::Token(Arc::new(claims));
    Ok(query)
}
