#!/usr/bin/env python3
"""The native HTTP API (docs/reference/api.md) checked from outside, with httpx.

usage: api_contract.py MODE BASE_URL RETRY_MS

MODE and the server flags the caller started stentor with:
  basic    (none)                    heads, first frames, heartbeats, publish
                                     answers and errors, batch, JSON data,
                                     retry, resume by header, `stentor.missed`
  history  --history-events-max 2    an evicted resume point
  auth     --publish-token pub-s3cret-0123456789 --subscribe-token sub-s3cret-0123456789
  cors     --cors-origin https://app.example

Prints one line per check; exits 1 at the first that fails. Every read is
bounded by TIMEOUT_S.
"""

import contextlib
import json
import signal
import sys
import time

import httpx
from httpx_sse import connect_sse

TIMEOUT_S = 10.0
HEARTBEAT_WAIT_S = 2.0  # a few --heartbeat-ms of the test servers
PUB_TOKEN, SUB_TOKEN = "pub-s3cret-0123456789", "sub-s3cret-0123456789"
ORIGIN = "https://app.example"

client = httpx.Client(timeout=httpx.Timeout(TIMEOUT_S))


def check(cond, what, detail=""):
    if not cond:
        print(f"api_contract: FAIL: {what}" + (f": {detail}" if detail else ""), file=sys.stderr)
        sys.exit(1)
    print(f"ok  {what}")


def publish(base, body, headers=None, expect=200):
    r = client.post(f"{base}/publish", json=body, headers=headers or {})
    check(r.status_code == expect, f"publish {json.dumps(body)[:60]} answers {expect}", f"{r.status_code} {r.text}")
    return r


def publish_id(base, topic, data, **extra):
    body = {"topic": topic, "data": data, **extra}
    answer = publish(base, body).json()
    check(
        isinstance(answer.get("id"), int) and answer.get("ids") == [answer["id"]],
        'one publish answers {"id":N,"ids":[N]} with N a JSON number',
        json.dumps(answer),
    )
    return answer["id"]


def error_json(r, status, field):
    try:
        body = r.json()
    except ValueError:
        body = {}
    check(
        r.status_code == status and isinstance(body.get("error"), str) and body.get("field") == field,
        f"answers {status} with a JSON error naming field {field!r}",
        f"{r.status_code} {r.text}",
    )


@contextlib.contextmanager
def deadline(seconds):
    """Raise TimeoutError in the block after `seconds` (SIGALRM, main thread)."""

    def expire(_sig, _frame):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Events:
    """An open stream's events, without the `retry:` block httpx-sse yields."""

    def __init__(self, base, params, headers=None):
        self.ctx = connect_sse(client, "GET", f"{base}/events", params=params, headers=headers or {})
        self.es = self.ctx.__enter__()
        self.response = self.es.response
        self.it = self.es.iter_sse() if self.response.status_code == 200 else iter(())

    def take(self, n):
        out = []
        # Heartbeats keep every read short, so only a deadline of our own
        # bounds a wait for events that never come.
        try:
            with deadline(TIMEOUT_S):
                for sse in self.it:
                    if sse.retry is not None and sse.data == "" and sse.event == "message" and not out:
                        continue
                    out.append(sse)
                    if len(out) == n:
                        break
        except (TimeoutError, httpx.TransportError):
            pass  # httpx reports our alarm as a ReadTimeout
        check(len(out) == n, f"stream delivers {n} events within {TIMEOUT_S} s", f"got {len(out)}: {out}")
        return out

    def close(self):
        self.ctx.__exit__(None, None, None)


def stream_status(base, params, headers=None):
    """Status and body start of GET /events, never waiting on a stream's body."""
    with client.stream("GET", f"{base}/events", params=params, headers=headers or {}) as r:
        if r.status_code == 200:
            return 200, ""
        return r.status_code, r.read().decode("utf-8", "replace")


def raw_stream_start(base, topic, nbytes, seconds):
    """The first bytes of a stream's body (up to nbytes or seconds)."""
    got = b""
    deadline = time.monotonic() + seconds
    with client.stream("GET", f"{base}/events", params={"topic": topic}) as r:
        for chunk in r.iter_raw():
            got += chunk
            if len(got) >= nbytes or time.monotonic() > deadline:
                break
        return r, got


def basic(base, retry_ms):
    check(client.get(f"{base}/healthz").status_code == 200, "GET /healthz answers 200")
    page = client.get(f"{base}/")
    check(
        page.status_code == 200 and page.headers.get("content-type", "").startswith("text/html"),
        "GET / serves the live page as text/html",
        f"{page.status_code} {page.headers.get('content-type')}",
    )
    check("EventSource" in page.text and "stentorEvents" in page.text, "the page subscribes with EventSource")
    for external in ('src="http', "src='http", 'href="http', "href='http", "@import", "url(http"):
        check(external not in page.text, f"the page fetches nothing from outside ({external})")

    status, text = stream_status(base, {})
    check(status == 400 and text.strip() != "", "GET /events without topic: 400 with a reason", f"{status} {text}")

    r, start = raw_stream_start(base, "basic-head", 10_000, HEARTBEAT_WAIT_S)
    check(r.status_code == 200, "a stream answers 200")
    for name, want in [("content-type", "text/event-stream"), ("cache-control", "no-store"), ("x-accel-buffering", "no")]:
        check(r.headers.get(name, "").split(";")[0].strip() == want, f"stream header {name}: {want}", r.headers.get(name))
    first = f": connected\n\nretry: {retry_ms}\n\n".encode()
    check(start.startswith(first), f"the stream starts with {first!r}", repr(start[:80]))
    rest = start[len(first):]
    check(rest.startswith(b":"), "an idle stream gets heartbeat comments", repr(rest[:80]))

    now_ms = int(time.time() * 1000)
    sub = Events(base, {"topic": ["b1", "b2"]})
    try:
        id1 = publish_id(base, "b1", "one")
        check(now_ms - 600_000 < id1 // 1000 <= now_ms + 60_000, "ids are epoch_ms*1000+n of this run", str(id1))
        id2 = publish_id(base, "b2", {"a": 1, "b": [True, None], "c": "x y"})
        id3 = publish_id(base, "b1", "with retry", event="typed", retry=1000)
        r = client.post(f"{base}/publish", data={"topic": "b2", "data": "from a\r\nform", "event": "form"})
        check(r.status_code == 200, "a form publish answers 200", r.text)
        id4 = r.json()["id"]
        batch = publish(base, [{"topic": "b1", "data": "x"}, {"topic": "b2", "data": "y", "event": "e"}]).json()
        check(
            isinstance(batch.get("ids"), list) and len(batch["ids"]) == 2,
            'a batch answers {"ids":[...]}',
            json.dumps(batch),
        )
        ids = [id1, id2, id3, id4, *batch["ids"]]
        check(ids == sorted(set(ids)), "ids strictly increase across topics", str(ids))

        # Nothing of a bad batch is published: the next event is the marker.
        r = client.post(f"{base}/publish", json=[{"topic": "b1", "data": "half"}, {"topic": "b1"}])
        error_json(r, 400, "data")
        marker = publish_id(base, "b1", "after the bad batch")

        got = sub.take(7)
        seen = [(e.event, e.id, e.data, e.retry) for e in got]
        want = [
            ("message", str(id1), "one", None),
            ("message", str(id2), '{"a":1,"b":[true,null],"c":"x y"}', None),
            ("typed", str(id3), "with retry", 1000),
            ("form", str(id4), "from a\nform", None),
            ("message", str(batch["ids"][0]), "x", None),
            ("e", str(batch["ids"][1]), "y", None),
            ("message", str(marker), "after the bad batch", None),
        ]
        check(seen == want, "a two-topic stream gets every event in id order, exact; nothing of a bad batch", f"{seen}")
    finally:
        sub.close()

    error_json(client.post(f"{base}/publish", json={"data": "x"}), 400, "topic")
    error_json(client.post(f"{base}/publish", json={"topic": "b1"}), 400, "data")
    error_json(client.post(f"{base}/publish", json={"topic": "b1", "data": "x", "event": "a\nb"}), 400, "event")
    error_json(client.post(f"{base}/publish", json={"topic": "b1", "data": "x", "id": "7"}), 400, "id")
    error_json(client.post(f"{base}/publish", json={"topic": "b1", "data": "x", "retry": -1}), 400, "retry")
    r = client.post(f"{base}/publish", content=b"topic=b1&data=x", headers={"Content-Type": "text/plain"})
    check(r.status_code == 415 and "error" in r.json(), "text/plain publish: 415 with a JSON error", r.text)
    r = client.post(f"{base}/publish", content=b"{nope", headers={"Content-Type": "application/json"})
    check(r.status_code == 400 and "error" in r.json(), "invalid JSON: 400 with a JSON error", r.text)

    # Resume by header and by query: everything after the id, in order.
    ids = [publish_id(base, "resume", f"r{i}") for i in range(4)]
    for how, params, headers in [
        ("Last-Event-ID header", {"topic": "resume"}, {"Last-Event-ID": str(ids[0])}),
        ("lastEventId query", {"topic": "resume", "lastEventId": str(ids[0])}, {}),
    ]:
        s = Events(base, params, headers)
        try:
            got = [(e.id, e.data) for e in s.take(3)]
            check(got == [(str(i), f"r{n}") for n, i in list(enumerate(ids))[1:]], f"resume by {how} replays what followed", str(got))
        finally:
            s.close()

    # Ids this run never handed out: a notice first, then all that is kept.
    start_ms = ids[0] // 1000
    for sent, reason in [(str((start_ms - 3_600_000) * 1000 + 1), "restarted"), ("evt-123", "unknown_id")]:
        s = Events(base, {"topic": "resume"}, {"Last-Event-ID": sent})
        try:
            notice, *rest = s.take(5)
            check(
                notice.event == "stentor.missed" and json.loads(notice.data) == {"reason": reason, "last_event_id": sent},
                f"Last-Event-ID {sent}: stentor.missed {reason} first",
                f"{notice}",
            )
            check([e.id for e in rest] == [str(i) for i in ids], "then every kept event", str([e.id for e in rest]))
        finally:
            s.close()


def history(base, _retry_ms):
    ids = [publish_id(base, "h", f"h{i}") for i in range(4)]
    s = Events(base, {"topic": "h"}, {"Last-Event-ID": str(ids[0])})
    try:
        notice, *rest = s.take(3)
        check(
            notice.event == "stentor.missed"
            and json.loads(notice.data) == {"reason": "evicted", "last_event_id": str(ids[0])},
            "a resume point whose successors were evicted gets stentor.missed evicted",
            f"{notice}",
        )
        check([e.data for e in rest] == ["h2", "h3"], "then the events still kept", str([e.data for e in rest]))
    finally:
        s.close()


def auth(base, _retry_ms):
    body = {"topic": "a", "data": "x"}
    r = client.post(f"{base}/publish", json=body)
    check(r.status_code == 401, "publish without a token: 401", f"{r.status_code} {r.text}")
    r = client.post(f"{base}/publish", json=body, headers={"Authorization": "Bearer wrong"})
    check(r.status_code in (401, 403), "publish with a wrong token: 401/403", f"{r.status_code} {r.text}")
    publish(base, body, headers={"Authorization": f"Bearer {PUB_TOKEN}"})
    r = client.post(f"{base}/publish", json=body, headers={"Authorization": f"Bearer {SUB_TOKEN}"})
    check(r.status_code in (401, 403), "the subscribe token does not publish", f"{r.status_code}")

    status, _ = stream_status(base, {"topic": "a"})
    check(status == 401, "a stream without a token: 401", f"{status}")
    status, _ = stream_status(base, {"topic": "a", "access_token": "wrong"})
    check(status in (401, 403), "a stream with a wrong token: 401/403", f"{status}")
    for how, params, headers in [
        ("access_token query", {"topic": "a", "access_token": SUB_TOKEN}, {}),
        ("Authorization header", {"topic": "a"}, {"Authorization": f"Bearer {SUB_TOKEN}"}),
    ]:
        s = Events(base, params, headers)
        try:
            check(s.response.status_code == 200, f"a stream with the token in the {how}: 200", f"{s.response.status_code}")
        finally:
            s.close()


def cors(base, _retry_ms):
    s = Events(base, {"topic": "c"}, {"Origin": ORIGIN})
    try:
        check(
            s.response.headers.get("access-control-allow-origin") == ORIGIN,
            "a stream from an allowed origin carries Access-Control-Allow-Origin",
            str(dict(s.response.headers)),
        )
    finally:
        s.close()
    r = client.options(
        f"{base}/publish",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    check(
        r.status_code in (200, 204)
        and r.headers.get("access-control-allow-origin") == ORIGIN
        and "POST" in r.headers.get("access-control-allow-methods", ""),
        "a preflight OPTIONS /publish is answered",
        f"{r.status_code} {dict(r.headers)}",
    )
    s = Events(base, {"topic": "c"}, {"Origin": "https://other.example"})
    try:
        check(
            "access-control-allow-origin" not in s.response.headers,
            "another origin gets no Access-Control-Allow-Origin",
            str(dict(s.response.headers)),
        )
    finally:
        s.close()


MODES = {"basic": basic, "history": history, "auth": auth, "cors": cors}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in MODES:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    MODES[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
    print(f"api_contract: {sys.argv[1]}: every check passed")
