#!/usr/bin/env python3
"""A loopback TCP proxy that a test can tell to drop every connection.

usage: cutproxy.py UPSTREAM_PORT

Listens on 127.0.0.1 (a kernel-picked port) and forwards each connection to
127.0.0.1:UPSTREAM_PORT. Prints `listening PORT` on stdout, then answers one
line per command read on stdin:

  cut       close every proxied connection (both sides) and hold new ones:
            a held connection's request head is read and recorded but not
            forwarded yet                                  -> `cut N`
  release   forward the held connections, stop holding     -> `released N`
  status    -> `held H live L heads K`
  heads     -> JSON list of {"line", "last_event_id"} for every request head
               seen, in order (last_event_id is null without the header)

It is how a test makes the server "drop" a browser's stream without
restarting the server (which would lose its history): after `cut` the
client reconnects by itself with Last-Event-ID, the test publishes while the
reconnect is held, then releases it. Exits when stdin closes.
"""

import asyncio
import json
import sys

HEAD_BYTES_MAX = 16384  # a request head larger than this is refused
CONNECTIONS_MAX = 64  # a test opens a handful; more is a runaway client
CHUNK_BYTES = 65536


class Proxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.live = set()  # writers of open client/upstream pairs
        self.holding = False
        self.release_event = asyncio.Event()
        self.held = 0
        self.heads = []

    async def handle(self, reader, writer):
        if len(self.live) >= CONNECTIONS_MAX:
            writer.close()
            return
        pair = [writer]
        self.live.add(writer)
        try:
            head = await read_head(reader)
            if head is None:
                return
            self.heads.append(parse_head(head))
            if self.holding:
                self.held += 1
                try:
                    await self.release_event.wait()
                finally:
                    self.held -= 1
            if writer not in self.live:  # cut while held
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            pair.append(up_writer)
            self.live.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            for w in pair:
                self.live.discard(w)
                w.close()

    def cut(self):
        n = len(self.live)
        for w in list(self.live):
            w.close()
        self.live.clear()
        self.holding = True
        self.release_event = asyncio.Event()
        return n

    def release(self):
        n = self.held
        self.holding = False
        self.release_event.set()
        return n


async def read_head(reader):
    """The bytes of one request head, or None if the client left first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await reader.read(4096)
        if not chunk or len(buf) + len(chunk) > HEAD_BYTES_MAX:
            return None
        buf += chunk
    return buf


def parse_head(raw):
    text = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = text.split("\r\n")
    last_event_id = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "last-event-id":
            last_event_id = value.strip()
    return {"line": lines[0], "last_event_id": last_event_id}


async def pump(reader, writer):
    try:
        while True:
            chunk = await reader.read(CHUNK_BYTES)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    proxy = Proxy(int(sys.argv[1]))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            break
        cmd = line.decode().strip()
        if cmd == "cut":
            out = f"cut {proxy.cut()}"
        elif cmd == "release":
            out = f"released {proxy.release()}"
        elif cmd == "status":
            out = f"held {proxy.held} live {len(proxy.live)} heads {len(proxy.heads)}"
        elif cmd == "heads":
            out = json.dumps(proxy.heads)
        else:
            out = f"error unknown command {cmd!r}"
        print(out, flush=True)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
