//! JSON Web Tokens: the keys a node verifies with, and the rights a token
//! grants (Mercure's claim shape, so existing token issuers work unchanged).
//!
//! Verification is the `jsonwebtoken` crate's; this module decides which
//! algorithms a key admits, bounds what a token may carry, and turns the
//! crate's errors into the statuses a client sees.
//!
//! - `--jwt-key VALUE`: an HMAC secret (HS256/384/512, at least 32 bytes,
//!   RFC 7518 §3.2), or `@PATH` to a PEM public key: RSA (RS256/384/512,
//!   PS256/384/512), EC P-256 (ES256), EC P-384 (ES384) or Ed25519 (EdDSA).
//!   `--jwt-publisher-key` / `--jwt-subscriber-key` override it per role.
//! - A key admits only the algorithms of its type: `alg: none` and, say, an
//!   HS256 token presented to an RSA key (the "public key as HMAC secret"
//!   confusion) are refused before any signature is checked.
//! - `exp` and `nbf` are enforced when present, with [`LEEWAY_S`] seconds of
//!   clock skew allowed. A token without `exp` does not expire: mint with it.
//! - `--jwt-issuer` / `--jwt-audience`: when set, the claim must be present
//!   and match. A token that carries `aud` is refused unless
//!   `--jwt-audience` names one of its values (RFC 7519 §4.1.3).
//!
//! Loading reads `@PATH` files (at startup and on reload); everything else
//! is pure. [`Keys`] is immutable: a reload builds a new one and swaps an
//! `Arc<Keys>`, so streams opened under the old keys are not touched.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::selector::{Pattern, PatternError, PatternLimits, Selectors};

/// Clock skew allowed on `exp` and `nbf`, in seconds: enough for hosts
/// kept by NTP, small enough that an expired token dies promptly.
pub const LEEWAY_S: u64 = 5;
/// Default of [`TokenLimits::token_bytes_max`]: a token's length. Browsers
/// cap a cookie at 4 KiB; 8 KiB leaves room for a header-borne token with a
/// generous `payload`, and bounds the work one request can ask for.
pub const TOKEN_BYTES_MAX_DEFAULT: usize = 8 * 1024;
/// Default of [`TokenLimits::selectors_per_token_max`], per claim.
pub const SELECTORS_PER_TOKEN_MAX_DEFAULT: usize = 128;
/// An HMAC secret shorter than this is refused (RFC 7518 §3.2: at least
/// the hash size; 32 bytes is HS256's).
pub const HMAC_SECRET_BYTES_MIN: usize = 32;
/// A PEM key file longer than this is not a public key (an RSA-16384 PEM is
/// under 3 KiB); refusing early keeps a wrong path from being slurped.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Bounds on what one token may carry; over any of them the token is
/// invalid (401), whatever its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimits {
    pub token_bytes_max: usize,
    pub selectors_per_token_max: usize,
    pub pattern: PatternLimits,
}

impl Default for TokenLimits {
    fn default() -> Self {
        TokenLimits {
            token_bytes_max: TOKEN_BYTES_MAX_DEFAULT,
            selectors_per_token_max: SELECTORS_PER_TOKEN_MAX_DEFAULT,
            pattern: PatternLimits::default(),
        }
    }
}

/// The JWT flags as the operator gave them (`None` = flag not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtConfig {
    /// `--jwt-key` (`STENTOR_JWT_KEY`): both roles unless overridden.
    pub key: Option<String>,
    /// `--jwt-publisher-key`.
    pub publisher_key: Option<String>,
    /// `--jwt-subscriber-key`.
    pub subscriber_key: Option<String>,
    /// `--jwt-issuer`: tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// `--jwt-audience`: tokens must carry this value in `aud`.
    pub audience: Option<String>,
    pub limits: TokenLimits,
}

impl JwtConfig {
    /// Whether any key flag is set (JWT authorization is on).
    pub fn enabled(&self) -> bool {
        self.key.is_some() || self.publisher_key.is_some() || self.subscriber_key.is_some()
    }
}

/// Whose token: the two roles may have different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Subscriber,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }
}

/// A key flag that cannot be used, with the flag and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub flag: &'static str,
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for '{}': {}", self.flag, self.reason)
    }
}

impl std::error::Error for KeyError {}

/// What kind of key, which fixes the algorithms it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// The algorithms a token verified by this kind of key may name.
    pub fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => &[HS256, HS384, HS512],
            KeyKind::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            KeyKind::EcP256 => &[ES256],
            KeyKind::EcP384 => &[ES384],
            KeyKind::Ed25519 => &[EdDSA],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Hmac => "HMAC secret",
            KeyKind::Rsa => "RSA public key",
            KeyKind::EcP256 => "EC P-256 public key",
            KeyKind::EcP384 => "EC P-384 public key",
            KeyKind::Ed25519 => "Ed25519 public key",
        }
    }
}

/// One role's key and the validation built for it once.
#[derive(Clone)]
struct RoleKey {
    flag: &'static str,
    kind: KeyKind,
    key: DecodingKey,
    validation: Validation,
}

/// The keys of a node, built once from [`JwtConfig`]; cheap to share as an
/// `Arc<Keys>` and to swap whole on reload.
#[derive(Clone)]
pub struct Keys {
    publisher: Option<RoleKey>,
    subscriber: Option<RoleKey>,
    limits: TokenLimits,
}

// Every worker holds the same keys behind an `Arc` (swapped on reload), and
// a stream keeps its `Claims`: both must cross threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Keys>();
    send_sync::<Claims>();
};

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material: only what `describe` says.
        f.debug_struct("Keys")
            .field("describe", &self.describe())
            .finish()
    }
}

impl Keys {
    /// Build the keys of `cfg`, reading `@PATH` files. `Ok(None)` when no
    /// key flag is set. Errors name the flag and say what to fix.
    pub fn load(cfg: &JwtConfig) -> Result<Option<Keys>, KeyError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let shared = match &cfg.key {
            Some(v) => Some(role_key("--jwt-key", v, cfg)?),
            None => None,
        };
        let publisher = match &cfg.publisher_key {
            Some(v) => Some(role_key("--jwt-publisher-key", v, cfg)?),
            None => shared.clone(),
        };
        let subscriber = match &cfg.subscriber_key {
            Some(v) => Some(role_key("--jwt-subscriber-key", v, cfg)?),
            None => shared,
        };
        Ok(Some(Keys {
            publisher,
            subscriber,
            limits: cfg.limits,
        }))
    }

    /// Whether tokens of `role` can be verified (a key is set for it).
    pub fn has_role(&self, role: Role) -> bool {
        self.key(role).is_some()
    }

    /// One line for the startup log: each role's key kind and flag.
    pub fn describe(&self) -> String {
        let one = |k: &Option<RoleKey>| match k {
            Some(k) => format!("{} ({})", k.kind.as_str(), k.flag),
            None => "none".to_string(),
        };
        format!(
            "publisher: {}, subscriber: {}",
            one(&self.publisher),
            one(&self.subscriber)
        )
    }

    /// The kind of `role`'s key, if it has one.
    pub fn kind(&self, role: Role) -> Option<KeyKind> {
        self.key(role).map(|k| k.kind)
    }

    fn key(&self, role: Role) -> Option<&RoleKey> {
        match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
    }

    /// Verify `token` with `role`'s key: signature, algorithm, `exp`/`nbf`,
    /// issuer, audience, bounds and the shape of the `mercure` claim.
    pub fn verify(&self, token: &str, role: Role) -> Result<Claims, AuthError> {
        if token.len() > self.limits.token_bytes_max {
            return Err(AuthError::TooLong);
        }
        let key = self.key(role).ok_or(AuthError::NoKey)?;
        let alg = header_alg(token)?;
        if !key.kind.algorithms().contains(&alg) {
            return Err(AuthError::AlgorithmMismatch);
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, &key.validation)
            .map_err(AuthError::from_jwt)?;
        Claims::from_raw(data.claims, &self.limits)
    }
}

/// Read a key flag's value: `@PATH` → a PEM public key; else a secret.
fn role_key(flag: &'static str, value: &str, cfg: &JwtConfig) -> Result<RoleKey, KeyError> {
    let fail = |reason: String| KeyError { flag, reason };
    let (kind, key) = match value.strip_prefix('@') {
        Some(path) => {
            let pem = read_key_file(Path::new(path)).map_err(fail)?;
            public_key_from_pem(&pem).map_err(|r| fail(format!("{path}: {r}")))?
        }
        None => (KeyKind::Hmac, hmac_secret(value).map_err(fail)?),
    };
    let algorithms = kind.algorithms();
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.leeway = LEEWAY_S;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.required_spec_claims.clear();
    if let Some(iss) = &cfg.issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".into());
    }
    if let Some(aud) = &cfg.audience {
        validation.set_audience(&[aud]);
        validation.required_spec_claims.insert("aud".into());
    }
    Ok(RoleKey {
        flag,
        kind,
        key,
        validation,
    })
}

fn hmac_secret(secret: &str) -> Result<DecodingKey, String> {
    if secret.contains("-----BEGIN") {
        return Err("looks like a PEM key; give a key file as @PATH".into());
    }
    if secret.len() < HMAC_SECRET_BYTES_MIN {
        return Err(format!(
            "an HMAC secret is at least {HMAC_SECRET_BYTES_MIN} bytes (this one is {}); \
             generate one with `openssl rand -base64 48`, or give a public key as @PATH",
            secret.len()
        ));
    }
    Ok(DecodingKey::from_secret(secret.as_bytes()))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(format!(
            "{shown} is longer than {KEY_FILE_BYTES_MAX} bytes: not a PEM public key"
        ));
    }
    Ok(bytes)
}

/// Classify and load a PEM public key. Private keys and certificates are
/// refused with the command that extracts the public key: handing either
/// to the verifier would fail on every token, confusingly.
pub fn public_key_from_pem(pem_text: &[u8]) -> Result<(KeyKind, DecodingKey), String> {
    let block = pem::parse(pem_text)
        .map_err(|_| "not a PEM file (expected -----BEGIN PUBLIC KEY-----)".to_string())?;
    match block.tag() {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        "CERTIFICATE" => {
            return Err("is a certificate; give its public key \
                 (openssl x509 -in CERT -pubkey -noout > key.pub)"
                .into())
        }
        tag if tag.ends_with("PRIVATE KEY") => {
            return Err(format!(
                "is a private key ({tag}); stentor needs only the public key \
                 (openssl pkey -in KEY -pubout > key.pub)"
            ))
        }
        tag => return Err(format!("holds a {tag}, not a PUBLIC KEY")),
    }
    // Each constructor refuses a key of another family (and DER that does
    // not parse). For EC the dry verification makes the backend decode the
    // point, so a key on another curve fails here, not on every token; RSA
    // keys are decoded by the backend per verification.
    let usable =
        |key: &DecodingKey, alg| jsonwebtoken::crypto::verify("AAAA", b"probe", key, alg).is_ok();
    if let Ok(key) = DecodingKey::from_rsa_pem(pem_text) {
        return if usable(&key, Algorithm::RS256) {
            Ok((KeyKind::Rsa, key))
        } else {
            Err("is not a valid RSA public key".into())
        };
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem_text) {
        if usable(&key, Algorithm::ES256) {
            return Ok((KeyKind::EcP256, key));
        }
        if usable(&key, Algorithm::ES384) {
            return Ok((KeyKind::EcP384, key));
        }
        return Err("is an EC key on an unsupported curve \
             (P-256 for ES256 and P-384 for ES384 are supported)"
            .into());
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem_text) {
        // The backend slices the first 32 bytes: check the length first.
        return if key.as_bytes().len() == 32 && usable(&key, Algorithm::EdDSA) {
            Ok((KeyKind::Ed25519, key))
        } else {
            Err("is not a valid Ed25519 public key".into())
        };
    }
    Err("is a public key of an unsupported type \
         (RSA, EC P-256, EC P-384 and Ed25519 are supported)"
        .into())
}

/// The `alg` of a token's header, read before verification only to refuse
/// `none` and unknown algorithms with a reason of their own (the crate
/// would call both a malformed token). `crit` names extensions we do not
/// implement, so RFC 7515 §4.1.11 has us refuse it.
fn header_alg(token: &str) -> Result<Algorithm, AuthError> {
    #[derive(Deserialize)]
    struct Head {
        alg: String,
        #[serde(default)]
        crit: Option<serde::de::IgnoredAny>,
    }
    let (head, _) = token.split_once('.').ok_or(AuthError::Malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| AuthError::Malformed)?;
    let head: Head = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if head.crit.is_some() {
        return Err(AuthError::CriticalHeader);
    }
    if head.alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgNone);
    }
    Algorithm::from_str(&head.alg).map_err(|_| AuthError::UnsupportedAlgorithm)
}

/// Why a token is refused: always 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"` and [`AuthError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No key is configured for the role the request needs.
    NoKey,
    /// Longer than `token_bytes_max`.
    TooLong,
    /// Not three base64url parts with a JSON header and claims; or the
    /// request carried several tokens in one place (two `Authorization`
    /// headers, two `authorization` parameters), or an empty one.
    Malformed,
    AlgNone,
    UnsupportedAlgorithm,
    /// The `alg` is not one the key's type admits.
    AlgorithmMismatch,
    CriticalHeader,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// `--jwt-issuer` / `--jwt-audience` is set and the claim is missing.
    MissingIssuer,
    MissingAudience,
    /// A registered claim (`exp`, `nbf`, `iss`, `aud`) or the `mercure`
    /// claim does not have its type.
    ClaimsShape,
    TooManySelectors,
    BadSelector,
}

impl AuthError {
    /// Every refusal of a token is 401.
    pub const STATUS: u16 = 401;

    pub fn status(self) -> u16 {
        Self::STATUS
    }

    /// One short ASCII sentence, safe in a quoted header parameter.
    pub fn reason(self) -> &'static str {
        use AuthError::*;
        match self {
            NoKey => "no key is configured for this kind of token",
            TooLong => "token is too long",
            Malformed => "token is malformed",
            AlgNone => "unsigned tokens (alg none) are refused",
            UnsupportedAlgorithm => "token alg is not supported",
            AlgorithmMismatch => "token alg does not match the key type",
            CriticalHeader => "token has a crit header that is not supported",
            BadSignature => "token signature is invalid",
            Expired => "token has expired",
            NotYetValid => "token is not valid yet (nbf)",
            WrongIssuer => "token issuer is not accepted",
            WrongAudience => "token audience is not accepted",
            MissingIssuer => "token has no iss claim",
            MissingAudience => "token has no aud claim",
            ClaimsShape => "token claims do not have the expected types",
            TooManySelectors => "token has too many topic selectors",
            BadSelector => "token has an invalid topic selector",
        }
    }

    /// The `WWW-Authenticate` value of the 401 (RFC 6750 §3).
    pub fn challenge(self) -> String {
        format!(
            r#"Bearer realm="stentor", error="invalid_token", error_description="{}""#,
            self.reason()
        )
    }

    fn from_jwt(e: jsonwebtoken::errors::Error) -> AuthError {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => AuthError::BadSignature,
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidIssuer => AuthError::WrongIssuer,
            K::InvalidAudience => AuthError::WrongAudience,
            K::MissingRequiredClaim(c) if c == "iss" => AuthError::MissingIssuer,
            K::MissingRequiredClaim(c) if c == "aud" => AuthError::MissingAudience,
            K::InvalidAlgorithm | K::MissingAlgorithm => AuthError::AlgorithmMismatch,
            K::InvalidClaimFormat(_) | K::Json(_) => AuthError::ClaimsShape,
            // Key errors cannot happen (keys are probed at load); what is
            // left is a token that does not parse.
            _ => AuthError::Malformed,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

/// The `WWW-Authenticate` value of a 401 for a request that carried no
/// token at all: RFC 6750 §3.1 gives it no error code.
pub const MISSING_TOKEN_CHALLENGE: &str = r#"Bearer realm="stentor""#;

/// A valid token that does not cover a topic: 403, naming the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub role: Role,
    pub topic: String,
}

impl Forbidden {
    pub const STATUS: u16 = 403;

    pub fn status(&self) -> u16 {
        Self::STATUS
    }

    /// The response body: what is missing, for whom.
    pub fn message(&self) -> String {
        let verb = match self.role {
            Role::Publisher => "publish",
            Role::Subscriber => "subscribe",
        };
        format!(
            "the token's mercure.{verb} selectors do not cover topic {}",
            self.topic
        )
    }

    /// The `WWW-Authenticate` value of the 403 (RFC 6750 §3.1).
    pub fn challenge(&self) -> &'static str {
        r#"Bearer realm="stentor", error="insufficient_scope""#
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Forbidden {}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    mercure: Option<RawMercure>,
}

#[derive(Deserialize)]
struct RawMercure {
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

/// The rights of a verified token. A token without the `mercure` claim
/// (or without `publish`/`subscribe` in it) has none.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub publish: Selectors,
    pub subscribe: Selectors,
    /// `mercure.payload` as sent (JSON text), for presence; `None` when
    /// absent or `null`.
    pub payload: Option<Box<RawValue>>,
}

impl Claims {
    fn from_raw(raw: RawClaims, limits: &TokenLimits) -> Result<Claims, AuthError> {
        let Some(m) = raw.mercure else {
            return Ok(Claims::default());
        };
        let parse = |list: Option<Vec<String>>| -> Result<Selectors, AuthError> {
            let list = list.unwrap_or_default();
            if list.len() > limits.selectors_per_token_max {
                return Err(AuthError::TooManySelectors);
            }
            let patterns = list
                .iter()
                .map(|s| Pattern::parse(s, &limits.pattern))
                .collect::<Result<Vec<_>, PatternError>>()
                .map_err(|_| AuthError::BadSelector)?;
            Ok(Selectors::new(patterns))
        };
        Ok(Claims {
            publish: parse(m.publish)?,
            subscribe: parse(m.subscribe)?,
            payload: m.payload,
        })
    }

    /// The selectors of `role`'s claim.
    pub fn selectors(&self, role: Role) -> &Selectors {
        match role {
            Role::Publisher => &self.publish,
            Role::Subscriber => &self.subscribe,
        }
    }

    /// Whether the token lets `role` act on `topic`.
    pub fn allows(&self, role: Role, topic: &str) -> bool {
        self.selectors(role).covers(topic)
    }

    /// All or nothing: the first topic the token does not cover, as a 403.
    /// A publish batch checks every topic before any is published.
    pub fn authorize<'t>(
        &self,
        role: Role,
        topics: impl IntoIterator<Item = &'t str>,
    ) -> Result<(), Forbidden> {
        for topic in topics {
            if !self.allows(role, topic) {
                return Err(Forbidden {
                    role,
                    topic: topic.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether a stream may subscribe to `pattern` (an exact topic or a
    /// pattern): one selector covers every topic it names.
    pub fn allows_pattern(&self, pattern: &Pattern) -> bool {
        self.subscribe.covers_pattern(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes-long";

    fn keys(cfg: JwtConfig) -> Keys {
        Keys::load(&cfg).expect("keys").expect("enabled")
    }

    fn hmac_keys() -> Keys {
        keys(JwtConfig {
            key: Some(SECRET.into()),
            ..Default::default()
        })
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn mint(claims: serde_json::Value) -> String {
        mint_with(Header::new(Algorithm::HS256), claims, SECRET)
    }

    fn mint_with(header: Header, claims: serde_json::Value, secret: &str) -> String {
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn claims_grant_what_they_say() {
        let k = hmac_keys();
        let t = mint(json!({
            "exp": now() + 60,
            "mercure": {
                "publish": ["orders/*"],
                "subscribe": ["users/7/*", "news"],
                "payload": {"user": 7, "name": "Ada"}
            }
        }));
        let c = k.verify(&t, Role::Subscriber).expect("valid");
        assert!(c.allows(Role::Subscriber, "news"));
        assert!(c.allows(Role::Subscriber, "users/7/inbox"));
        assert!(!c.allows(Role::Subscriber, "users/8/inbox"));
        assert!(c.allows(Role::Publisher, "orders/1"));
        let payload = c.payload.as_ref().map(|p| p.get()).unwrap_or("null");
        let payload: serde_json::Value = serde_json::from_str(payload).expect("json");
        assert_eq!(payload, json!({"user": 7, "name": "Ada"}));
        let f = c
            .authorize(Role::Subscriber, ["news", "users/8/inbox"])
            .expect_err("second topic not covered");
        assert_eq!(f.topic, "users/8/inbox");
        assert_eq!(f.status(), 403);
        assert!(f.message().contains("users/8/inbox"));
        assert!(c
            .authorize(Role::Publisher, ["orders/1", "orders/2"])
            .is_ok());
        let pat = Pattern::parse("users/7/{x}", &PatternLimits::default()).expect("pattern");
        assert!(c.allows_pattern(&pat));
    }

    #[test]
    fn no_mercure_claim_means_no_rights() {
        let k = hmac_keys();
        for claims in [json!({}), json!({"mercure": {}}), json!({"mercure": null})] {
            let c = k
                .verify(&mint(claims.clone()), Role::Publisher)
                .expect("valid");
            assert!(c.publish.is_empty() && c.subscribe.is_empty(), "{claims}");
            assert!(!c.allows(Role::Publisher, "a"));
            assert!(c.payload.is_none());
        }
    }

    #[test]
    fn bounds_and_shapes() {
        let k = hmac_keys();
        let many: Vec<String> = (0..=SELECTORS_PER_TOKEN_MAX_DEFAULT)
            .map(|i| format!("t{i}"))
            .collect();
        let t = mint(json!({"mercure": {"subscribe": many}}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::TooManySelectors)
        );
        let t = mint(json!({"mercure": {"subscribe": ["a/{+x}"]}}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::BadSelector)
        );
        let t = mint(json!({"mercure": {"subscribe": ["x".repeat(600)]}}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::BadSelector)
        );
        let t = mint(json!({"mercure": {"subscribe": "news"}}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::ClaimsShape)
        );
        let t = mint(json!({"mercure": "all"}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::ClaimsShape)
        );
        let t = mint(json!({"exp": "tomorrow"}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::ClaimsShape)
        );
        let t = mint(json!({"mercure": {"payload": "p".repeat(9000)}}));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::TooLong)
        );
        for bad in ["", "abc", "a.b", "a.b.c", "....", "é.é.é"] {
            assert!(k.verify(bad, Role::Subscriber).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_checks_come_first() {
        let k = hmac_keys();
        let body = b64(r#"{"mercure":{"subscribe":["*"]}}"#);
        for alg in ["none", "None", "NONE"] {
            let t = format!("{}.{body}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert_eq!(
                k.verify(&t, Role::Subscriber).err(),
                Some(AuthError::AlgNone)
            );
        }
        let t = format!("{}.{body}.sig", b64(r#"{"alg":"HS1"}"#));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::UnsupportedAlgorithm)
        );
        let t = format!("{}.{body}.sig", b64(r#"{"alg":"RS256"}"#));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::AlgorithmMismatch)
        );
        let t = format!("{}.{body}.sig", b64(r#"{"alg":"HS256","crit":["b64"]}"#));
        assert_eq!(
            k.verify(&t, Role::Subscriber).err(),
            Some(AuthError::CriticalHeader)
        );
    }

    #[test]
    fn time_claims_with_leeway() {
        let k = hmac_keys();
        let ok = |claims| k.verify(&mint(claims), Role::Subscriber);
        assert!(ok(json!({"exp": now() - 2})).is_ok(), "within the leeway");
        assert_eq!(
            ok(json!({"exp": now() - 30})).err(),
            Some(AuthError::Expired)
        );
        assert!(ok(json!({"nbf": now() + 2})).is_ok(), "within the leeway");
        assert_eq!(
            ok(json!({"nbf": now() + 30})).err(),
            Some(AuthError::NotYetValid)
        );
        assert!(ok(json!({})).is_ok(), "no exp: does not expire");
    }

    #[test]
    fn issuer_and_audience() {
        let k = keys(JwtConfig {
            key: Some(SECRET.into()),
            issuer: Some("https://auth.example".into()),
            audience: Some("stentor".into()),
            ..Default::default()
        });
        let v = |claims| k.verify(&mint(claims), Role::Subscriber).err();
        assert_eq!(
            v(json!({"iss": "https://auth.example", "aud": "stentor"})),
            None
        );
        assert_eq!(
            v(json!({"iss": "https://auth.example", "aud": ["x", "stentor"]})),
            None
        );
        assert_eq!(
            v(json!({"iss": "https://evil.example", "aud": "stentor"})),
            Some(AuthError::WrongIssuer)
        );
        assert_eq!(
            v(json!({"iss": "https://auth.example", "aud": "other"})),
            Some(AuthError::WrongAudience)
        );
        assert_eq!(v(json!({"aud": "stentor"})), Some(AuthError::MissingIssuer));
        assert_eq!(
            v(json!({"iss": "https://auth.example"})),
            Some(AuthError::MissingAudience)
        );
        // Without --jwt-audience, a token meant for some audience is not ours.
        let plain = hmac_keys();
        let t = mint(json!({"aud": "someone-else"}));
        assert_eq!(
            plain.verify(&t, Role::Subscriber).err(),
            Some(AuthError::WrongAudience)
        );
    }

    #[test]
    fn roles_have_their_own_keys() {
        let other = "another-secret-of-at-least-32-bytes-long!";
        let k = keys(JwtConfig {
            key: Some(SECRET.into()),
            publisher_key: Some(other.into()),
            ..Default::default()
        });
        let by_default = mint(json!({}));
        let by_other = mint_with(Header::new(Algorithm::HS512), json!({}), other);
        assert!(k.verify(&by_default, Role::Subscriber).is_ok());
        assert_eq!(
            k.verify(&by_default, Role::Publisher).err(),
            Some(AuthError::BadSignature)
        );
        assert!(k.verify(&by_other, Role::Publisher).is_ok());
        let only_pub = keys(JwtConfig {
            publisher_key: Some(other.into()),
            ..Default::default()
        });
        assert!(!only_pub.has_role(Role::Subscriber));
        assert_eq!(
            only_pub.verify(&by_other, Role::Subscriber).err(),
            Some(AuthError::NoKey)
        );
        assert!(only_pub.describe().contains("subscriber: none"));
        assert!(Keys::load(&JwtConfig::default()).expect("ok").is_none());
    }

    #[test]
    fn bad_keys_name_the_flag() {
        let e = |cfg: JwtConfig| Keys::load(&cfg).expect_err("refused").to_string();
        let msg = e(JwtConfig {
            key: Some("short".into()),
            ..Default::default()
        });
        assert!(
            msg.contains("'--jwt-key'") && msg.contains("at least 32"),
            "{msg}"
        );
        let msg = e(JwtConfig {
            subscriber_key: Some("@/nonexistent/key.pem".into()),
            ..Default::default()
        });
        assert!(
            msg.contains("'--jwt-subscriber-key'") && msg.contains("cannot read"),
            "{msg}"
        );
        let msg = e(JwtConfig {
            publisher_key: Some("-----BEGIN PUBLIC KEY-----xxxxxxxxxxxxxxxxxxxxxxxxxxx".into()),
            ..Default::default()
        });
        assert!(
            msg.contains("'--jwt-publisher-key'") && msg.contains("@PATH"),
            "{msg}"
        );
        assert!(public_key_from_pem(b"hello")
            .err()
            .is_some_and(|r| r.contains("not a PEM")));
        let private = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(public_key_from_pem(private)
            .err()
            .is_some_and(|r| r.contains("private key") && r.contains("-pubout")));
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(public_key_from_pem(cert)
            .err()
            .is_some_and(|r| r.contains("certificate")));
        let junk = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(public_key_from_pem(junk).is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends as a token: a refusal, never a panic.
        #[test]
        fn any_token_is_refused_cleanly(
            parts in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,60}", 0..5),
            json_head in proptest::option::of("[{}\\[\\]\":a-zA-Z0-9, ]{0,40}"),
        ) {
            let k = hmac_keys();
            let mut parts = parts;
            if let Some(h) = json_head {
                parts.insert(0, b64(&h));
            }
            let token = parts.join(".");
            proptest::prop_assert!(k.verify(&token, Role::Subscriber).is_err());
        }
    }

    #[test]
    fn challenges_are_quotable() {
        use AuthError::*;
        for e in [
            NoKey,
            TooLong,
            Malformed,
            AlgNone,
            UnsupportedAlgorithm,
            AlgorithmMismatch,
            CriticalHeader,
            BadSignature,
            Expired,
            NotYetValid,
            WrongIssuer,
            WrongAudience,
            MissingIssuer,
            MissingAudience,
            ClaimsShape,
            TooManySelectors,
            BadSelector,
        ] {
            // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
            assert!(e
                .reason()
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
            assert_eq!(e.status(), 401);
            assert!(e.challenge().contains(r#"error="invalid_token""#));
        }
    }
}
