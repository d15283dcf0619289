// Node's `eventsource` package (a WHATWG EventSource) against a running stentor.
//
// usage: node node_client.mjs cases|resume SERVER_PORT TOPIC
//
// cases:  subscribe, publish every case of cases.json, require each back
//         typed, with its id, data byte-exact.
// resume: subscribe through cutproxy.py; after a few events the proxy drops
//         the stream and holds the reconnect; the cases are published while
//         the client is away; released, the client must send Last-Event-ID
//         by itself and receive exactly the missed events, in order, once,
//         then the events published while it was being released.
//         Then `lastEventId` in the query resumes a fresh client, and an id
//         the server never gave gets a `stentor.missed` notice first.

import { EventSource } from "eventsource";
import {
  CASES,
  checkExact,
  checkIncreasing,
  fail,
  publishAll,
  sleep,
  startProxy,
  waitFor,
} from "./lib.mjs";

const WHO = "node_client";
// How long to watch for a duplicate after the expected events arrived.
const QUIET_MS = 500;
// Published while a resumed client is being released.
const LIVE = Array.from({ length: 50 }, (_, i) => ({ name: `live${i}`, event: "", data: `live ${i}`, expect: `live ${i}` }));

/** An EventSource that records every event of the case types and the notice. */
function subscribe(url) {
  const es = new EventSource(url);
  const received = [];
  const types = new Set(["message", "stentor.missed", ...CASES.map((c) => c.event).filter(Boolean)]);
  for (const t of types) {
    es.addEventListener(t, (e) => received.push({ type: e.type, id: e.lastEventId, data: e.data }));
  }
  let opens = 0;
  es.addEventListener("open", () => opens++);
  return { es, received, opens: () => opens };
}

async function cases(base, topic) {
  const sub = subscribe(`${base}/events?topic=${topic}`);
  try {
    await waitFor("the stream to open", () => sub.es.readyState === EventSource.OPEN);
    const ids = await publishAll(base, topic);
    await waitFor(`${CASES.length} events`, () => sub.received.length >= CASES.length);
    await sleep(QUIET_MS);
    checkExact(sub.received, CASES, ids);
    console.log(`${WHO}: ${CASES.length} events exact`);
  } finally {
    sub.es.close();
  }
}

async function resume(base, serverPort, topic) {
  const proxy = await startProxy(serverPort);
  const before = CASES.slice(0, 3);
  const sub = subscribe(`http://127.0.0.1:${proxy.port}/events?topic=${topic}`);
  try {
    await waitFor("the stream to open", () => sub.es.readyState === EventSource.OPEN);
    const idsBefore = await publishAll(base, topic, before);
    await waitFor("the first events", () => sub.received.length >= before.length);

    const headsBefore = (await proxy.heads()).length;
    await proxy.cmd("cut");
    await waitFor("the client to reconnect (held by the proxy)", async () => (await proxy.status()).held >= 1);
    const idsMissed = await publishAll(base, topic);
    // Release the reconnect while others keep publishing: the seam between
    // the replay and live events must have no gap and no duplicate.
    const [, idsLive] = await Promise.all([proxy.cmd("release"), publishAll(base, topic, LIVE)]);
    const want = before.length + CASES.length + LIVE.length;
    await waitFor("the missed and live events", () => sub.received.length >= want).catch(async (e) => {
      throw new Error(`${e.message}; got ${sub.received.length - before.length} of ${want - before.length}; request heads: ${JSON.stringify(await proxy.heads())}`);
    });
    await sleep(QUIET_MS);
    checkExact(sub.received, [...before, ...CASES, ...LIVE], [...idsBefore, ...idsMissed, ...idsLive]);
    checkIncreasing([...idsBefore, ...idsMissed, ...idsLive]);

    const resumed = (await proxy.heads()).slice(headsBefore).filter((h) => h.line.startsWith("GET /events"));
    if (resumed.length !== 1 || resumed[0].last_event_id !== idsBefore.at(-1)) {
      throw new Error(`reconnect should carry Last-Event-ID ${idsBefore.at(-1)}: ${JSON.stringify(resumed)}`);
    }
    if (sub.opens() !== 2) throw new Error(`opened ${sub.opens()} times, want 2`);
  } finally {
    sub.es.close();
    proxy.close();
  }

  // lastEventId in the query (for clients that cannot set headers).
  const all = [...before, ...CASES, ...LIVE];
  const viaQuery = subscribe(`${base}/events?topic=${topic}&lastEventId=${encodeURIComponent(sub.received[0].id)}`);
  try {
    await waitFor("the replay after lastEventId", () => viaQuery.received.length >= all.length - 1);
    await sleep(QUIET_MS);
    checkExact(viaQuery.received, all.slice(1), sub.received.slice(1).map((e) => e.id));
  } finally {
    viaQuery.es.close();
  }

  // An id this server never handed out: the notice first, then all kept.
  const unknown = subscribe(`${base}/events?topic=${topic}&lastEventId=evt-123`);
  try {
    await waitFor("the stentor.missed notice and the replay", () => unknown.received.length >= all.length + 1);
    await sleep(QUIET_MS);
    const [notice, ...rest] = unknown.received;
    const want = { reason: "unknown_id", last_event_id: "evt-123" };
    if (notice.type !== "stentor.missed" || JSON.stringify(JSON.parse(notice.data)) !== JSON.stringify(want)) {
      throw new Error(`first event should be the stentor.missed notice ${JSON.stringify(want)}: ${JSON.stringify(notice)}`);
    }
    checkExact(rest, all, sub.received.map((e) => e.id));
  } finally {
    unknown.es.close();
  }
  console.log(`${WHO}: resume exact (${CASES.length} missed + ${LIVE.length} concurrent live events, query lastEventId, stentor.missed)`);
}

const [mode, port, topic] = process.argv.slice(2);
if (!mode || !port || !topic) fail(WHO, "usage: node node_client.mjs cases|resume SERVER_PORT TOPIC");
const base = `http://127.0.0.1:${port}`;
try {
  if (mode === "cases") await cases(base, topic);
  else if (mode === "resume") await resume(base, port, topic);
  else fail(WHO, `unknown mode ${mode}`);
  process.exit(0);
} catch (e) {
  fail(WHO, e.message);
}
