//! JWT authorization wired into the node, against the real binary with
//! tokens minted by PyJWT (`tests/jwt/mint.py`): publishing needs a token
//! whose selectors cover every topic of the batch; private events reach
//! only the streams whose token covers their topic, live and on replay;
//! `--subscribe-auth required` refuses before the stream; SIGHUP rotates
//! keys without dropping streams; a bad key ends startup naming its flag.
//!
//! Needs `python3` with PyJWT and cryptography (`.ci/install-deps`):
//! skipped without them, failed under CI.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{exchange, read_stream_head, status_of, Server};

const SECRET: &str = "stentor-authz-secret-0123456789-abcdefghij";

/// Mint every token of `specs` (mint.py's batch options) in one Python run.
fn mint(specs: &[Value]) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg(support::mint_py())
        .arg("batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run mint.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::Array(specs.to_vec()).to_string().as_bytes())
        .expect("write specs");
    let out = child.wait_with_output().expect("mint.py output");
    assert!(out.status.success(), "mint.py batch failed");
    serde_json::from_slice(&out.stdout).expect("a JSON array of tokens")
}

/// An HS256 token with `mercure` claims, valid one hour.
fn hs(mercure: Value) -> Value {
    json!({"alg": "HS256", "secret": SECRET, "exp": 3600, "claims": {"mercure": mercure}})
}

/// `POST /publish` of a JSON body with extra header lines; the answer.
fn publish(server: &Server, body: &str, extra: &str) -> String {
    exchange(
        server.addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// An open stream and what it has received so far.
struct Stream {
    sock: TcpStream,
    text: String,
}

impl Stream {
    fn open(server: &Server, target: &str, extra: &str) -> Stream {
        let mut sock = server.connect();
        write!(sock, "GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").expect("send");
        read_stream_head(&mut sock);
        Stream {
            sock,
            text: String::new(),
        }
    }

    /// Read until the `data:` line `want` arrived; every data line so far.
    fn until(&mut self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        loop {
            let data = self.data();
            if data.iter().any(|d| d == want) {
                return data;
            }
            assert!(
                Instant::now() < deadline,
                "no {want:?} within 10 s; got {data:?}"
            );
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("stream closed before {want:?}; got {data:?}"),
                Ok(n) => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) => panic!("read: {e}; got {data:?}"),
            }
        }
    }

    fn data(&self) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }

    /// The first `id:` received.
    fn first_id(&self) -> u64 {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .and_then(|v| v.parse().ok())
            .expect("an id")
    }
}

#[test]
fn publishing_needs_a_token_covering_every_topic_of_the_batch() {
    if !support::jwt_python_ready() {
        return;
    }
    let shared_token = "a-shared-publish-token-0123456789";
    let server = Server::start(&["--jwt-key", SECRET, "--publish-token", shared_token]);
    let t = mint(&[
        hs(json!({"publish": ["orders/*"]})),
        json!({"alg": "HS256", "secret": "another-secret-0123456789-abcdefghijklmno", "claims": {"mercure": {"publish": ["*"]}}}),
    ]);
    let one = r#"{"topic":"orders/1","data":"x"}"#;

    // With a key set, loopback without a token is no longer enough.
    let a = publish(&server, one, "");
    assert_eq!(status_of(&a), 401, "{a}");
    assert!(
        a.contains("WWW-Authenticate: Bearer realm=\"stentor\"\r\n"),
        "{a}"
    );

    let a = publish(&server, one, &bearer(&t[1]));
    assert_eq!(status_of(&a), 401, "{a}");
    assert!(a.contains("error=\"invalid_token\""), "{a}");

    // A bad token is refused from the head: no 100 Continue, no body read.
    let a = exchange(
        server.addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n{}\r\n",
            bearer(&t[1])
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&a), 401, "{a}");
    assert!(!a.contains("100 Continue"), "{a}");

    let a = publish(&server, one, &bearer(&t[0]));
    assert_eq!(status_of(&a), 200, "{a}");

    // All or nothing: one uncovered topic refuses the batch, naming it.
    let before = support::metric(&support::scrape(server.addr), "stentor_last_event_id");
    let batch = r#"[{"topic":"orders/2","data":"a"},{"topic":"users/1","data":"b"}]"#;
    let a = publish(&server, batch, &bearer(&t[0]));
    assert_eq!(status_of(&a), 403, "{a}");
    assert!(a.contains("users/1"), "{a}");
    assert!(a.contains("insufficient_scope"), "{a}");
    let after = support::metric(&support::scrape(server.addr), "stentor_last_event_id");
    assert_eq!(before, after, "nothing of a refused batch is published");

    // The shared token keeps working beside the keys, for every topic.
    let a = publish(&server, batch, &bearer(shared_token));
    assert_eq!(status_of(&a), 200, "{a}");
}

#[test]
fn private_events_reach_only_streams_whose_token_covers_the_topic() {
    if !support::jwt_python_ready() {
        return;
    }
    let server = Server::start(&["--jwt-key", SECRET]);
    let t = mint(&[
        hs(json!({"publish": ["*"]})),
        hs(json!({"subscribe": ["users/7/*"]})),
        hs(json!({"subscribe": ["users/8/*"]})),
    ]);
    let (publisher, user7, user8) = (&t[0], &t[1], &t[2]);
    let target = "/events?topic=users/7/inbox";
    // A page: the token in the cookie the docs name.
    let mut own = Stream::open(
        &server,
        target,
        &format!("Cookie: theme=dark; stentorAuthorization={user7}\r\n"),
    );
    let mut anonymous = Stream::open(&server, target, "");
    let mut other = Stream::open(&server, target, &bearer(user8));

    for (data, private) in [("p1", false), ("s1", true), ("p2", false)] {
        let body = json!({"topic": "users/7/inbox", "data": data, "private": private}).to_string();
        let a = publish(&server, &body, &bearer(publisher));
        assert_eq!(status_of(&a), 200, "{a}");
    }
    // A form publishes a private event with a checkbox's `private=on`.
    let form = "topic=users/7/inbox&data=s2&private=on";
    let a = exchange(
        server.addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{}\r\n{form}",
            form.len(),
            bearer(publisher)
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&a), 200, "{a}");
    let a = publish(
        &server,
        r#"{"topic":"users/7/inbox","data":"p3"}"#,
        &bearer(publisher),
    );
    assert_eq!(status_of(&a), 200, "{a}");

    assert_eq!(own.until("p3"), ["p1", "s1", "p2", "s2", "p3"]);
    assert_eq!(anonymous.until("p3"), ["p1", "p2", "p3"]);
    assert_eq!(other.until("p3"), ["p1", "p2", "p3"]);

    // Replay keeps the flag: a resume from before p1 gets the private
    // events only with a covering token.
    let first_n = own.first_id();
    let resume = format!("{target}&lastEventId={}", first_n - 1);
    let mut again = Stream::open(&server, &resume, &bearer(user7));
    assert_eq!(again.until("p3"), ["p1", "s1", "p2", "s2", "p3"]);
    let mut again_anon = Stream::open(&server, &resume, "");
    assert_eq!(again_anon.until("p3"), ["p1", "p2", "p3"]);

    // A token that is sent is verified, even where none is needed.
    let a = exchange(
        server.addr,
        format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nCookie: stentorAuthorization=nonsense\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&a), 401, "{a}");
}

#[test]
fn subscribe_auth_required_refuses_before_the_stream() {
    if !support::jwt_python_ready() {
        return;
    }
    let server = Server::start(&["--jwt-key", SECRET, "--subscribe-auth", "required"]);
    let t = mint(&[hs(json!({"subscribe": ["users/7/*"]}))]);
    let get = |target: &str, extra: &str| {
        exchange(
            server.addr,
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
    };
    let a = get("/events?topic=users/7/a", "");
    assert_eq!(status_of(&a), 401, "{a}");
    let a = get("/events?topic=users/7/a&topic=users/8/a", &bearer(&t[0]));
    assert_eq!(status_of(&a), 403, "{a}");
    assert!(a.contains("users/8/a"), "{a}");
    let q = format!("/events?topic=users/7/a&authorization={}", t[0]);
    Stream::open(&server, &q, "");
}

#[test]
fn sighup_rotates_keys_and_open_streams_keep_going() {
    if !support::jwt_python_ready() {
        return;
    }
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("authz-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new("python3")
        .arg(support::mint_py())
        .arg("keygen")
        .arg(&dir)
        .status()
        .expect("keygen");
    assert!(ok.success());
    let live = dir.join("live.pub");
    std::fs::copy(dir.join("p256.pub"), &live).unwrap();
    let flag = format!("@{}", live.display());
    let server = Server::start(&["--jwt-key", &flag]);
    let es = |key: &str, mercure: Value| json!({"alg": "ES256", "key": dir.join(key).to_string_lossy(), "exp": 3600, "claims": {"mercure": mercure}});
    let t = mint(&[
        es("p256.key", json!({"publish": ["*"]})),
        es("p256.key", json!({"subscribe": ["*"]})),
        es("p256-other.key", json!({"publish": ["*"]})),
    ]);
    let mut stream = Stream::open(&server, "/events?topic=news", &bearer(&t[1]));
    let a = publish(
        &server,
        r#"{"topic":"news","data":"before","private":true}"#,
        &bearer(&t[0]),
    );
    assert_eq!(status_of(&a), 200, "{a}");
    stream.until("before");

    std::fs::copy(dir.join("p256-other.pub"), &live).unwrap();
    // SAFETY: signals our own child by its PID.
    unsafe {
        libc::kill(server.pid(), libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = server
            .log
            .recv_timeout(Duration::from_secs(10))
            .expect("a log line after SIGHUP");
        if line.contains("jwt keys reloaded") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload logged");
    }
    let a = publish(&server, r#"{"topic":"news","data":"old"}"#, &bearer(&t[0]));
    assert_eq!(status_of(&a), 401, "the old key's token is refused: {a}");
    let a = publish(
        &server,
        r#"{"topic":"news","data":"after","private":true}"#,
        &bearer(&t[2]),
    );
    assert_eq!(status_of(&a), 200, "{a}");
    // The stream opened under the old key still gets private events.
    assert_eq!(stream.until("after"), ["before", "after"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_key_ends_startup_naming_its_flag() {
    for (args, flag) in [
        (vec!["--jwt-key", "too-short"], "--jwt-key"),
        (
            vec!["--jwt-subscriber-key", "@/nonexistent/key.pem"],
            "--jwt-subscriber-key",
        ),
        (vec!["--subscribe-auth", "required"], "--subscribe-auth"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stentor"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .expect("run stentor");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn pattern_subscriptions_receive_exactly_the_matching_events() {
    if !support::jwt_python_ready() {
        return;
    }
    let server = Server::start(&["--jwt-key", SECRET]);
    let t = mint(&[
        hs(json!({"publish": ["*"]})),
        hs(json!({"subscribe": ["orders/*"]})),
        hs(json!({"subscribe": ["orders/42"]})),
    ]);
    let (publisher, all_orders, one_order) = (&t[0], &t[1], &t[2]);
    // A prefix pattern with a covering token; a URI template; a prefix
    // pattern together with a topic it names (delivered once).
    let mut prefix = Stream::open(&server, "/events?topic=orders/*", &bearer(all_orders));
    let mut template = Stream::open(&server, "/events?topic=orders/{id}/items", "");
    let mut both = Stream::open(
        &server,
        "/events?topic=orders/42&topic=orders/*",
        &bearer(one_order),
    );
    for (topic, data, private) in [
        ("orders/42", "a", false),
        ("orders/42/items", "b", false),
        ("orders", "no-prefix", false),
        ("users/1", "other", false),
        ("orders/7/items", "c", true),
        ("orders/9/items", "d", false),
        ("orders/42", "s", true),
    ] {
        let body = json!({"topic": topic, "data": data, "private": private}).to_string();
        let a = publish(&server, &body, &bearer(publisher));
        assert_eq!(status_of(&a), 200, "{a}");
    }
    // One event every pattern here matches marks the end of each stream.
    let a = publish(
        &server,
        r#"{"topic":"orders/zz/items","data":"stop"}"#,
        &bearer(publisher),
    );
    assert_eq!(status_of(&a), 200, "{a}");
    assert_eq!(prefix.until("stop"), ["a", "b", "c", "d", "s", "stop"]);
    assert_eq!(template.until("stop"), ["b", "d", "stop"]);
    // The token covers orders/42 only, not the whole of orders/*: the
    // pattern gets public events; orders/42 came through the pattern, once.
    assert_eq!(both.until("stop"), ["a", "b", "d", "stop"]);

    // Authorization applies to patterns too when a token is required:
    // orders/42 does not cover orders/*.
    let strict = Server::start(&["--jwt-key", SECRET, "--subscribe-auth", "required"]);
    let a = exchange(
        strict.addr,
        format!(
            "GET /events?topic=orders/* HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}\r\n",
            bearer(one_order)
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&a), 403, "{a}");
    assert!(a.contains("orders/*"), "{a}");
    let a = exchange(
        strict.addr,
        b"GET /events?topic=orders/{+x} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&a), 400, "{a}");
}

/// `GET /subscriptions` as JSON (asserting a 200).
fn presence(server: &Server, target: &str, extra: &str) -> Value {
    let a = exchange(
        server.addr,
        format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    );
    assert_eq!(status_of(&a), 200, "{a}");
    let body = a.split_once("\r\n\r\n").expect("a body").1;
    serde_json::from_str(body).expect("JSON")
}

/// The (topics, payload) of every stream listed, sorted.
fn listed(page: &Value) -> Vec<(Vec<String>, Value)> {
    let mut out: Vec<(Vec<String>, Value)> = page["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| {
            let topics = s["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (topics, s.get("payload").cloned().unwrap_or(Value::Null))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn presence_lists_streams_exactly_while_they_open_and_close() {
    if !support::jwt_python_ready() {
        return;
    }
    let admin = "an-admin-token-0123456789abcdef";
    let server = Server::start(&["--jwt-key", SECRET, "--admin-token", admin]);
    let t = mint(&[
        hs(json!({"subscribe": ["users/7/*"], "payload": {"user": 7}})),
        hs(json!({"subscribe": ["users/8/*"], "payload": {"user": 8}})),
    ]);
    let (user7, user8) = (&t[0], &t[1]);
    let a7 = Stream::open(&server, "/events?topic=users/7/inbox", &bearer(user7));
    let a8 = Stream::open(
        &server,
        "/events?topic=users/8/inbox&topic=news",
        &bearer(user8),
    );
    let anon = Stream::open(&server, "/events?topic=news/*", "");
    let all = presence(&server, "/subscriptions", &bearer(admin));
    assert_eq!(all["node_local"], true);
    assert_eq!(
        listed(&all),
        [
            (vec!["news/*".to_string()], Value::Null),
            (vec!["users/7/inbox".to_string()], json!({"user": 7})),
            (
                vec!["users/8/inbox".to_string(), "news".to_string()],
                json!({"user": 8})
            ),
        ]
    );
    // A subscriber token sees the streams on topics it could subscribe
    // to, and only those topics.
    let own = presence(
        &server,
        "/subscriptions?topic=users/7/inbox",
        &bearer(user7),
    );
    assert_eq!(
        listed(&own),
        [(vec!["users/7/inbox".to_string()], json!({"user": 7}))]
    );
    let mine = presence(&server, "/subscriptions", &bearer(user8));
    assert_eq!(
        listed(&mine),
        [(vec!["users/8/inbox".to_string()], json!({"user": 8}))]
    );
    // A topic a pattern reaches lists the pattern's stream.
    let news = presence(&server, "/subscriptions?topic=news/today", &bearer(admin));
    assert_eq!(listed(&news), [(vec!["news/*".to_string()], Value::Null)]);
    // Authorized like a subscribe.
    for (target, extra, status) in [
        ("/subscriptions?topic=users/8/inbox", bearer(user7), 403),
        ("/subscriptions", String::new(), 401),
        ("/subscriptions", bearer("wrong"), 401),
        ("/subscriptions?limit=0", bearer(admin), 400),
        ("/subscriptions?cursor=nonsense", bearer(admin), 400),
    ] {
        let a = exchange(
            server.addr,
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        );
        assert_eq!(status_of(&a), status, "{target}: {a}");
    }
    // Pages follow the cursor.
    let first = presence(&server, "/subscriptions?limit=2", &bearer(admin));
    assert_eq!(first["subscriptions"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = presence(
        &server,
        &format!("/subscriptions?limit=2&cursor={cursor}"),
        &bearer(admin),
    );
    assert_eq!(second["subscriptions"].as_array().unwrap().len(), 1);
    assert!(second.get("next_cursor").is_none());

    // Closed streams leave the listing.
    drop(a7);
    drop(anon);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = listed(&presence(&server, "/subscriptions", &bearer(admin)));
        if now.len() == 1 {
            assert_eq!(now[0].1, json!({"user": 8}));
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(a8);
}
