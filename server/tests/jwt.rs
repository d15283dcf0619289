//! `stentor::api::jwt` against tokens minted by an independent library in
//! another language: Python's PyJWT on `cryptography` (`tests/jwt/mint.py`),
//! with keys generated for each run. For every algorithm stentor admits:
//! a valid token, expired, not yet valid, signed by another key, of another
//! algorithm (including the RSA/EC/Ed public key used as an HMAC secret),
//! `alg: none`, without the `mercure` claim, a selector that does not cover
//! the topic, and a payload changed after signing.
//!
//! Needs `python3` with PyJWT and cryptography (`.ci/install-deps`): skipped
//! without them, failed under CI.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use stentor::api::jwt::{AuthError, JwtConfig, KeyKind, Keys, Role};

const SECRET: &str = "stentor-test-secret-0123456789-abcdefghij";
const OTHER_SECRET: &str = "another-secret-0123456789-abcdefghijklmno";

/// A directory of freshly generated keys, removed when dropped.
struct KeyDir(PathBuf);

impl KeyDir {
    fn new(name: &str) -> KeyDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("jwt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("python3")
            .arg(support::mint_py())
            .arg("keygen")
            .arg(&dir)
            .output()
            .expect("run mint.py keygen");
        assert!(
            out.status.success(),
            "mint.py keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        KeyDir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_string_lossy().into_owned()
    }

    /// `--jwt-key @PATH` for a public key file.
    fn flag(&self, file: &str) -> String {
        format!("@{}", self.path(file))
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mint every request in one Python process (`mint.py batch`).
fn mint(requests: &[Value]) -> Vec<String> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(support::mint_py())
        .arg("batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mint.py batch");
    let input = serde_json::to_vec(requests).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write requests");
    let out = child.wait_with_output().expect("mint.py batch");
    assert!(
        out.status.success(),
        "mint.py batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).expect("tokens");
    assert_eq!(tokens.len(), requests.len());
    tokens
}

fn keys_with(key: String) -> Keys {
    Keys::load(&JwtConfig {
        key: Some(key),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .expect("a key is set")
}

/// One algorithm: the key stentor holds, how to sign with it, with another
/// key of the same kind, and with a key of another algorithm.
struct Alg {
    name: &'static str,
    kind: KeyKind,
    key_flag: String,
    sign: Value,
    other: Value,
    foreign: Value,
    /// The public key file, for the HMAC confusion attack.
    public: Option<String>,
}

fn algorithms(k: &KeyDir) -> Vec<Alg> {
    let mut algs = Vec::new();
    for name in ["HS256", "HS384", "HS512"] {
        algs.push(Alg {
            name,
            kind: KeyKind::Hmac,
            key_flag: SECRET.into(),
            sign: json!({"secret": SECRET}),
            other: json!({"secret": OTHER_SECRET}),
            foreign: json!({"alg": "RS256", "key": k.path("rsa.key")}),
            public: None,
        });
    }
    for name in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        algs.push(Alg {
            name,
            kind: KeyKind::Rsa,
            key_flag: k.flag("rsa.pub"),
            sign: json!({"key": k.path("rsa.key")}),
            other: json!({"key": k.path("rsa-other.key")}),
            foreign: json!({"alg": "ES256", "key": k.path("p256.key")}),
            public: Some(k.path("rsa.pub")),
        });
    }
    algs.push(Alg {
        name: "ES256",
        kind: KeyKind::EcP256,
        key_flag: k.flag("p256.pub"),
        sign: json!({"key": k.path("p256.key")}),
        other: json!({"key": k.path("p256-other.key")}),
        // Same family, other curve: still not this key's algorithm.
        foreign: json!({"alg": "ES384", "key": k.path("p384.key")}),
        public: Some(k.path("p256.pub")),
    });
    algs.push(Alg {
        name: "ES384",
        kind: KeyKind::EcP384,
        key_flag: k.flag("p384.pub"),
        sign: json!({"key": k.path("p384.key")}),
        other: json!({"key": k.path("p384-other.key")}),
        foreign: json!({"alg": "ES256", "key": k.path("p256.key")}),
        public: Some(k.path("p384.pub")),
    });
    algs.push(Alg {
        name: "EdDSA",
        kind: KeyKind::Ed25519,
        key_flag: k.flag("ed25519.pub"),
        sign: json!({"key": k.path("ed25519.key")}),
        other: json!({"key": k.path("ed25519-other.key")}),
        foreign: json!({"alg": "RS256", "key": k.path("rsa.key")}),
        public: Some(k.path("ed25519.pub")),
    });
    algs
}

/// `base` (how to sign) plus `extra` fields.
fn req(alg: &str, base: &Value, extra: Value) -> Value {
    let mut r = json!({"alg": alg});
    for source in [base, &extra] {
        if let Some(o) = source.as_object() {
            for (k, v) in o {
                r[k] = v.clone();
            }
        }
    }
    r
}

#[test]
fn every_algorithm_every_outcome() {
    if !support::jwt_python_ready() {
        return;
    }
    let k = KeyDir::new("algs");
    let algs = algorithms(&k);
    let rights = json!({"mercure": {
        "subscribe": ["https://example.com/books/{id}", "users/7/*"],
        "publish": ["users/7/*"],
        "payload": {"user": 7}
    }});

    // What each case expects of `verify`: Ok, or the refusal.
    type Expect = Result<(), AuthError>;
    let mut requests = Vec::new();
    let mut expects: Vec<(&'static str, &'static str, Expect)> = Vec::new();
    for a in &algs {
        let mut case = |name: &'static str, r: Value, e: Expect| {
            requests.push(r);
            expects.push((a.name, name, e));
        };
        let sign = &a.sign;
        case(
            "valid",
            req(a.name, sign, json!({"claims": rights, "exp": 60})),
            Ok(()),
        );
        // (The leeway itself is a unit test in api::jwt: here minting and
        // verifying are seconds apart on a busy machine.)
        case(
            "expired",
            req(a.name, sign, json!({"claims": rights, "exp": -60})),
            Err(AuthError::Expired),
        );
        case(
            "not yet valid",
            req(a.name, sign, json!({"claims": rights, "nbf": 60})),
            Err(AuthError::NotYetValid),
        );
        case(
            "wrong key",
            req(a.name, &a.other, json!({"claims": rights})),
            Err(AuthError::BadSignature),
        );
        let foreign_alg = a.foreign["alg"].as_str().unwrap_or("RS256");
        case(
            "wrong algorithm",
            req(foreign_alg, &a.foreign, json!({"claims": rights})),
            Err(AuthError::AlgorithmMismatch),
        );
        if let Some(public) = &a.public {
            for hs in ["HS256", "HS384", "HS512"] {
                case(
                    "public key as HMAC secret",
                    json!({"alg": hs, "hmac_key_file": public, "claims": rights}),
                    Err(AuthError::AlgorithmMismatch),
                );
            }
        }
        case(
            "alg none",
            json!({"alg": a.name, "none": true, "claims": rights}),
            Err(AuthError::AlgNone),
        );
        case(
            "missing mercure claim",
            req(a.name, sign, json!({"claims": {"sub": "u7"}, "exp": 60})),
            Ok(()),
        );
        case(
            "tampered payload",
            req(
                a.name,
                sign,
                json!({"claims": rights, "tamper": {"mercure": {"subscribe": ["*"]}}}),
            ),
            Err(AuthError::BadSignature),
        );
    }
    let tokens = mint(&requests);

    let mut checked = 0;
    for a in &algs {
        let keys = keys_with(a.key_flag.clone());
        assert_eq!(keys.kind(Role::Subscriber), Some(a.kind), "{}", a.name);
        for ((alg, case, expect), token) in expects.iter().zip(&tokens) {
            if *alg != a.name {
                continue;
            }
            let got = keys.verify(token, Role::Subscriber);
            assert_eq!(
                got.as_ref().map(|_| ()).map_err(|e| *e),
                *expect,
                "{alg}: {case}"
            );
            checked += 1;
            let Ok(claims) = got else { continue };
            match *case {
                "missing mercure claim" => {
                    assert!(!claims.allows(Role::Subscriber, "users/7/inbox"));
                    let f = claims
                        .authorize(Role::Subscriber, ["users/7/inbox"])
                        .expect_err("no rights");
                    assert_eq!((f.status(), f.topic.as_str()), (403, "users/7/inbox"));
                }
                _ => {
                    assert!(claims.allows(Role::Subscriber, "https://example.com/books/42"));
                    assert!(claims.allows(Role::Subscriber, "users/7/inbox"));
                    assert!(claims.allows(Role::Publisher, "users/7/inbox"));
                    // The selector does not cover these topics: 403 naming one.
                    for topic in ["https://example.com/books/42/reviews", "users/8/inbox"] {
                        let f = claims
                            .authorize(Role::Subscriber, ["users/7/inbox", topic])
                            .expect_err("not covered");
                        assert_eq!((f.status(), f.topic.as_str()), (403, topic), "{alg}");
                        assert!(f.message().contains(topic));
                    }
                    let payload = claims.payload.as_ref().map(|p| p.get()).unwrap_or("null");
                    let payload: Value = serde_json::from_str(payload).expect("payload json");
                    assert_eq!(payload, json!({"user": 7}), "{alg}: payload");
                }
            }
        }
    }
    assert_eq!(checked, tokens.len(), "every minted token was verified");
}

#[test]
fn issuer_audience_and_per_role_keys() {
    if !support::jwt_python_ready() {
        return;
    }
    let k = KeyDir::new("roles");
    let keys = Keys::load(&JwtConfig {
        key: Some(SECRET.into()),
        publisher_key: Some(k.flag("ed25519.pub")),
        subscriber_key: Some(k.flag("rsa.pkcs1.pub")),
        issuer: Some("https://auth.example".into()),
        audience: Some("stentor".into()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .expect("keys");
    assert_eq!(keys.kind(Role::Publisher), Some(KeyKind::Ed25519));
    assert_eq!(keys.kind(Role::Subscriber), Some(KeyKind::Rsa));
    let ed = json!({"key": k.path("ed25519.key")});
    let rsa = json!({"key": k.path("rsa.key")});
    let good = json!({"iss": "https://auth.example", "aud": ["web", "stentor"]});
    let tokens = mint(&[
        req("EdDSA", &ed, json!({"claims": good})),
        req("PS512", &rsa, json!({"claims": good})),
        req(
            "EdDSA",
            &ed,
            json!({"claims": {"iss": "https://other", "aud": "stentor"}}),
        ),
        req(
            "EdDSA",
            &ed,
            json!({"claims": {"iss": "https://auth.example", "aud": "web"}}),
        ),
        req("EdDSA", &ed, json!({"claims": {"aud": "stentor"}})),
        req(
            "EdDSA",
            &ed,
            json!({"claims": {"iss": "https://auth.example"}}),
        ),
        req("HS256", &json!({"secret": SECRET}), json!({"claims": good})),
    ]);
    let v = |i: usize, role| keys.verify(&tokens[i], role).map(|_| ());
    assert_eq!(v(0, Role::Publisher), Ok(()));
    assert_eq!(v(0, Role::Subscriber), Err(AuthError::AlgorithmMismatch));
    assert_eq!(v(1, Role::Subscriber), Ok(()));
    assert_eq!(v(1, Role::Publisher), Err(AuthError::AlgorithmMismatch));
    assert_eq!(v(2, Role::Publisher), Err(AuthError::WrongIssuer));
    assert_eq!(v(3, Role::Publisher), Err(AuthError::WrongAudience));
    assert_eq!(v(4, Role::Publisher), Err(AuthError::MissingIssuer));
    assert_eq!(v(5, Role::Publisher), Err(AuthError::MissingAudience));
    // --jwt-key is overridden for both roles: its secret verifies nothing.
    assert_eq!(v(6, Role::Publisher), Err(AuthError::AlgorithmMismatch));
    assert_eq!(v(6, Role::Subscriber), Err(AuthError::AlgorithmMismatch));
}

#[test]
fn key_files_that_cannot_serve_say_why() {
    if !support::jwt_python_ready() {
        return;
    }
    let k = KeyDir::new("files");
    let refused = |flag_value: String| {
        Keys::load(&JwtConfig {
            key: Some(flag_value),
            ..Default::default()
        })
        .expect_err("refused")
        .to_string()
    };
    let not_pem = k.path("not.pem");
    std::fs::write(&not_pem, "just some text\n").expect("write");
    let cases = [
        (k.flag("missing.pub"), "cannot read"),
        (format!("@{not_pem}"), "not a PEM file"),
        (k.flag("rsa.key"), "private key"),
        (k.flag("p256.key"), "-pubout"),
        (k.flag("p521.pub"), "unsupported curve"),
        ("short-secret".to_string(), "at least 32 bytes"),
    ];
    for (value, says) in cases {
        let msg = refused(value.clone());
        assert!(
            msg.starts_with("invalid value for '--jwt-key'") && msg.contains(says),
            "{value}: {msg}"
        );
    }
    // Both public key encodings of RSA load.
    for file in ["rsa.pub", "rsa.pkcs1.pub"] {
        assert_eq!(
            keys_with(k.flag(file)).kind(Role::Publisher),
            Some(KeyKind::Rsa)
        );
    }
}
