//! A plain HTTP client for the integration tests: one request per
//! connection, publishing, and SSE streams read through the real WHATWG
//! parser (`stentor::wire::sse::Parser`). One copy for every test file.

use std::io::{Read, Write};
use std::net::TcpStream;

use stentor::wire::sse::{Item, ParsedEvent, Parser};

use super::{Server, IO_TIMEOUT};

/// A blocking connection with the tests' timeouts and no Nagle delay.
pub fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

/// A whole response to one request on its own connection.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Send `raw` on a new connection and read the answer until the server closes.
pub fn request(server: &Server, raw: &str) -> Answer {
    let mut s = connect(server);
    s.write_all(raw.as_bytes()).expect("write request");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `GET path` with `Connection: close`.
pub fn get(server: &Server, path: &str) -> Answer {
    request(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

/// `POST /publish` with a body of `content_type` and `extra` header lines.
pub fn post(server: &Server, content_type: &str, body: &str, extra: &str) -> Answer {
    request(
        server,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        ),
    )
}

/// `POST /publish` of a JSON body.
pub fn post_json(server: &Server, json: &str) -> Answer {
    post(server, "application/json", json, "")
}

/// The ids of a 200 publish answer `{"id":N,"ids":[...]}` / `{"ids":[...]}`.
pub fn ids_of(answer: &Answer) -> Vec<u64> {
    assert_eq!(
        answer.status, 200,
        "publish: {} {}",
        answer.head, answer.body
    );
    let list = answer
        .body
        .split_once("\"ids\":[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no ids in {}", answer.body));
    list.split(',')
        .map(|n| n.trim().parse().expect("id is a number"))
        .collect()
}

/// Publish a JSON body (object or batch); its ids.
pub fn publish(server: &Server, json: &str) -> Vec<u64> {
    ids_of(&post_json(server, json))
}

/// Publish one event; its id.
pub fn publish_one(server: &Server, topic: &str, data: &str) -> u64 {
    let ids = publish(server, &format!(r#"{{"topic":"{topic}","data":"{data}"}}"#));
    assert_eq!(ids.len(), 1);
    ids[0]
}

/// An open SSE stream with its parser.
pub struct Stream {
    pub sock: TcpStream,
    pub head: String,
    pub parser: Parser,
    pub items: Vec<Item>,
}

impl Stream {
    /// Open `GET target` with `extra` header lines; panics unless 200.
    pub fn open(server: &Server, target: &str, extra: &str) -> Stream {
        let s = Stream::try_open(server, target, extra);
        assert!(s.head.starts_with("HTTP/1.1 200 "), "{}", s.head);
        s
    }

    /// Open `GET target` whatever the answer (the head is in `head`).
    pub fn try_open(server: &Server, target: &str, extra: &str) -> Stream {
        let mut sock = connect(server);
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        sock.write_all(req.as_bytes()).expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match sock.read(&mut chunk) {
                Ok(0) | Err(_) => panic!("no response head: {:?}", String::from_utf8_lossy(&buf)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut s = Stream {
            sock,
            head: String::from_utf8_lossy(&buf[..head_end]).into_owned(),
            parser: Parser::new(),
            items: Vec::new(),
        };
        s.parser.feed(&buf[head_end..], &mut s.items);
        s
    }

    /// Read until `pred` holds for the events seen so far; false if the
    /// stream ended or went quiet past the socket timeout first.
    pub fn read_until(&mut self, mut pred: impl FnMut(&[ParsedEvent]) -> bool) -> bool {
        let mut chunk = [0u8; 16384];
        loop {
            if pred(&self.events()) {
                return true;
            }
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.parser.feed(&chunk[..n], &mut self.items),
            }
        }
    }

    pub fn events(&self) -> Vec<ParsedEvent> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.clone()),
                Item::Comment(_) => None,
            })
            .collect()
    }

    /// Ids of the events other than missed notices, in arrival order.
    pub fn ids(&self) -> Vec<u64> {
        self.events()
            .iter()
            .filter(|e| e.event_type != "stentor.missed")
            .map(|e| e.last_event_id.parse().expect("numeric id"))
            .collect()
    }

    /// The `reason` of every missed notice received.
    pub fn notices(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e.event_type == "stentor.missed")
            .map(notice_reason)
            .collect()
    }

    pub fn wait_for_id(&mut self, id: u64) {
        let ok = self.read_until(|evs| {
            evs.iter()
                .any(|e| e.last_event_id.parse::<u64>().is_ok_and(|i| i >= id))
        });
        assert!(ok, "id {id} never arrived; got {:?}", self.ids());
    }
}

/// `{"reason":"...","last_event_id":"..."}` of a missed notice.
pub fn notice_reason(e: &ParsedEvent) -> String {
    assert_eq!(e.event_type, "stentor.missed", "{e:?}");
    let v: serde_json::Value = serde_json::from_str(&e.data).expect("notice is JSON");
    v["reason"].as_str().expect("reason").to_string()
}
