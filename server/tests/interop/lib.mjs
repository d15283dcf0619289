// Shared by the Node interop clients: the cases, publishing, the cut proxy,
// bounded waits. Every wait here has a deadline; nothing retries forever.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const CASES = JSON.parse(readFileSync(join(HERE, "cases.json"), "utf8")).cases;
export const WAIT_MS = 15000;

export function fail(who, msg) {
  console.error(`${who}: FAIL: ${msg}`);
  process.exit(1);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `pred` (sync or async) until true; throw naming `what` after `ms`. */
export async function waitFor(what, pred, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await sleep(25);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** Publish one case to `topic`; returns the id as decimal text (what `id:` carries). */
export async function publish(base, topic, c) {
  const body = { topic, data: c.data };
  if (c.event) body.event = c.event;
  const r = await fetch(`${base}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`publish answered ${r.status}: ${text}`);
  // The contract answers {"id":N,"ids":[N]} with N a JSON number; ids stay
  // below 2^53, so a JS number holds them exactly.
  return String(JSON.parse(text).id);
}

/** Publish every case in order; returns their ids. */
export async function publishAll(base, topic, cases = CASES) {
  const ids = [];
  for (const c of cases) ids.push(await publish(base, topic, c));
  return ids;
}

/** Compare received {type,id,data} with the cases and their ids. */
export function checkExact(received, cases, ids) {
  if (received.length !== cases.length) {
    throw new Error(`received ${received.length} events, want ${cases.length}`);
  }
  cases.forEach((c, i) => {
    const got = received[i];
    const want = { type: c.event || "message", id: ids[i], data: c.expect };
    if (got.type !== want.type || got.id !== want.id || got.data !== want.data) {
      throw new Error(`case ${c.name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
  });
}

/** Ids must be strictly increasing: in order, no duplicates. */
export function checkIncreasing(ids) {
  for (let i = 1; i < ids.length; i++) {
    if (!(BigInt(ids[i]) > BigInt(ids[i - 1]))) {
      throw new Error(`ids not strictly increasing at ${i}: ${ids[i - 1]} then ${ids[i]}`);
    }
  }
}

/** Start cutproxy.py in front of the server; commands answer one line each. */
export async function startProxy(upstreamPort) {
  const child = spawn("python3", [join(HERE, "cutproxy.py"), String(upstreamPort)], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const queue = [];
  const waiters = [];
  lines.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
  const next = () =>
    new Promise((resolve, reject) => {
      if (queue.length) return resolve(queue.shift());
      const t = setTimeout(() => reject(new Error("cutproxy did not answer")), WAIT_MS);
      waiters.push((l) => {
        clearTimeout(t);
        resolve(l);
      });
    });
  const first = await next();
  const m = /^listening (\d+)$/.exec(first);
  if (!m) throw new Error(`cutproxy said ${first}`);
  return {
    port: Number(m[1]),
    async cmd(line) {
      child.stdin.write(line + "\n");
      return next();
    },
    async status() {
      const [, held, , live] = (await this.cmd("status")).split(" ");
      return { held: Number(held), live: Number(live) };
    },
    async heads() {
      return JSON.parse(await this.cmd("heads"));
    },
    close() {
      child.stdin.end();
      child.kill();
    },
  };
}
