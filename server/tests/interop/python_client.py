#!/usr/bin/env python3
"""A Python SSE client (httpx + httpx-sse, from PyPI) against a running stentor.

usage: python_client.py BASE_URL TOPIC RETRY_MS

Opens GET /events?topic=TOPIC, checks the stream's head, publishes every
case of cases.json with POST /publish (JSON), and requires each event back
typed, with the id the publish answered and with data byte-exact after the
WHATWG rules (expected values are spelled out in cases.json). Exits 0 on
success; on failure prints what differed and exits 1. Every wait is bounded.
"""

import json
import os
import signal
import sys

import httpx
from httpx_sse import connect_sse

TIMEOUT_S = 10.0


def fail(msg):
    print(f"python_client: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def published_id(resp):
    """The id of a one-event publish: the contract's {"id":N,"ids":[N]}."""
    if resp.status_code != 200:
        fail(f"publish answered {resp.status_code}: {resp.text!r}")
    body = resp.json()
    # The contract says a JSON number; the first data plane answered a
    # string. Compare as decimal text, which is what `id:` carries.
    return str(body["id"])


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    base, topic, retry_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]

    timeout = httpx.Timeout(TIMEOUT_S)
    with httpx.Client(timeout=timeout) as sub, httpx.Client(timeout=timeout) as pub:
        with connect_sse(sub, "GET", f"{base}/events", params={"topic": topic}) as es:
            r = es.response
            if r.status_code != 200:
                fail(f"stream answered {r.status_code}")
            for name, want in [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-store"),
                ("x-accel-buffering", "no"),
            ]:
                got = r.headers.get(name, "")
                if not got.startswith(want):
                    fail(f"header {name}: {got!r}, want {want!r}")

            # The server subscribes the stream before it answers, so every
            # publish from here on is for this stream.
            ids = []
            for c in cases:
                body = {"topic": topic, "data": c["data"]}
                if c["event"]:
                    body["event"] = c["event"]
                ids.append(published_id(pub.post(f"{base}/publish", json=body)))

            received = []
            events = es.iter_sse()
            # Heartbeats keep every read short, so only a deadline of our own
            # bounds a wait for events that never come.
            signal.signal(signal.SIGALRM, lambda *_: fail(f"timed out after {TIMEOUT_S} s with {received!r}"))
            signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
            # httpx-sse yields the `retry:` block on its own (a WHATWG parser
            # dispatches nothing for it): check it is the server's first frame.
            first = next(events, None)
            if first is None or first.retry != retry_ms or first.data != "":
                fail(f"first block should be `retry: {retry_ms}` alone, got {first!r}")
            for sse in events:
                received.append(sse)
                if len(received) == len(cases):
                    break
            signal.setitimer(signal.ITIMER_REAL, 0)
            if len(received) != len(cases):
                fail(f"stream ended after {len(received)} of {len(cases)} events")

    for c, id_, sse in zip(cases, ids, received):
        want_type = c["event"] or "message"
        if (sse.event, sse.id, sse.data) != (want_type, id_, c["expect"]):
            fail(
                f"case {c['name']}: got event={sse.event!r} id={sse.id!r} data={sse.data!r}, "
                f"want event={want_type!r} id={id_!r} data={c['expect']!r}"
            )
    print(f"python_client: {len(cases)} events exact (httpx {httpx.__version__})")


if __name__ == "__main__":
    main()
