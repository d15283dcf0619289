// Headless Chromium (Debian's, driven by playwright-core) against a stentor
// with JWT authorization: a page whose token is in the stentorAuthorization
// cookie receives the private events of its own topic and not another
// user's; its pattern subscription receives exactly the matching events;
// presence lists its streams while they open and close; after a key
// rotation (the key file replaced, SIGHUP), the old tokens are refused and
// the page's open stream keeps receiving.
//
// usage: node authz.mjs SERVER_PORT SERVER_PID CONFIG_JSON
// CONFIG_JSON: {"tokens": {...}, "live_key": PATH, "next_key": PATH,
//               "admin": TOKEN}; the tokens are minted by PyJWT
// (tests/jwt/mint.py) with the key that is live at start, but `publisher2`,
// minted with the next one.

import { copyFileSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import { fail, sleep, waitFor } from "./lib.mjs";

const WHO = "browser-authz";
const CHROMIUM = process.env.STENTOR_CHROMIUM || "/usr/bin/chromium";
const QUIET_MS = 300;

async function publish(base, token, body) {
  const r = await fetch(`${base}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  return { status: r.status, text: await r.text() };
}

async function mustPublish(base, token, body) {
  const r = await publish(base, token, body);
  if (r.status !== 200) throw new Error(`publish ${JSON.stringify(body)} answered ${r.status}: ${r.text}`);
}

async function presence(base, admin) {
  const r = await fetch(`${base}/subscriptions`, {
    headers: { Authorization: `Bearer ${admin}` },
    signal: AbortSignal.timeout(10000),
  });
  if (r.status !== 200) throw new Error(`GET /subscriptions answered ${r.status}`);
  const page = await r.json();
  return page.subscriptions.map((s) => `${s.topics.join(",")}|${JSON.stringify(s.payload ?? null)}`).sort();
}

function same(what, got, want) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

async function run(port, pid, config) {
  const base = `http://127.0.0.1:${port}`;
  const { tokens, admin } = config;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
  });
  try {
    const context = await browser.newContext();
    // What the application's login would set: the page never sees the token.
    await context.addCookies([
      { name: "stentorAuthorization", value: tokens.user7, url: base, httpOnly: true, sameSite: "Strict" },
    ]);
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    await page.goto(`${base}/healthz`);
    // Two streams from the page: its own inbox beside another user's, and
    // a pattern. Same origin: EventSource sends the cookie.
    await page.evaluate(() => {
      window.got = { inbox: [], orders: [] };
      window.opened = { inbox: false, orders: false };
      const open = (name, url) => {
        const es = new EventSource(url);
        es.onopen = () => (window.opened[name] = true);
        es.onmessage = (e) => window.got[name].push(e.data);
        window[`es_${name}`] = es;
      };
      open("inbox", "/events?topic=users/7/inbox&topic=users/8/inbox");
      open("orders", "/events?topic=orders/*");
    });
    await waitFor("both streams to open", async () => {
      const o = await page.evaluate(() => window.opened);
      return o.inbox && o.orders;
    });
    const got = () => page.evaluate(() => window.got);

    same("presence with the page's two streams", await presence(base, admin), [
      `orders/*|{"user":7}`,
      `users/7/inbox,users/8/inbox|{"user":7}`,
    ]);

    const p = tokens.publisher;
    await mustPublish(base, p, { topic: "users/7/inbox", data: "mine, private", private: true });
    await mustPublish(base, p, { topic: "users/8/inbox", data: "theirs, private", private: true });
    await mustPublish(base, p, { topic: "users/8/inbox", data: "theirs, public" });
    await mustPublish(base, p, { topic: "orders/1", data: "order 1" });
    await mustPublish(base, p, { topic: "orders", data: "not under orders/" });
    await mustPublish(base, p, { topic: "shipments/1", data: "elsewhere" });
    await mustPublish(base, p, { topic: "orders/2/lines", data: "order 2 line", private: true });
    await mustPublish(base, p, { topic: "users/7/inbox", data: "mine, public" });
    await waitFor("the events on the page", async () => {
      const g = await got();
      return g.inbox.length >= 3 && g.orders.length >= 2;
    });
    await sleep(QUIET_MS);
    const before = await got();
    same("the inbox stream", before.inbox, ["mine, private", "theirs, public", "mine, public"]);
    same("the pattern stream", before.orders, ["order 1", "order 2 line"]);

    // A stream closed by the page leaves presence.
    await page.evaluate(() => window.es_orders.close());
    await waitFor("presence without the pattern stream", async () => {
      const now = await presence(base, admin);
      return JSON.stringify(now) === JSON.stringify([`users/7/inbox,users/8/inbox|{"user":7}`]);
    });

    // Rotate the key: the file replaced, then SIGHUP.
    copyFileSync(config.next_key, config.live_key);
    process.kill(pid, "SIGHUP");
    // The node takes the signal on its own thread: until it has, the old
    // key still holds (probes go to a topic nobody listens to).
    await waitFor("the old publisher token to be refused", async () => {
      const r = await publish(base, p, { topic: "probe", data: "old key" });
      return r.status === 401;
    });
    await mustPublish(base, tokens.publisher2, { topic: "users/7/inbox", data: "after rotation", private: true });
    await waitFor("the event published under the new key", async () => (await got()).inbox.length >= 4);
    await sleep(QUIET_MS);
    same("the inbox stream after rotation", (await got()).inbox, [
      "mine, private",
      "theirs, public",
      "mine, public",
      "after rotation",
    ]);
    // A new stream with the old cookie is refused now (fetch returns on a
    // 401; a stream that opened would not).
    const status = await page.evaluate(async () => (await fetch("/events?topic=users/7/inbox")).status);
    same("a new stream with the old token", status, 401);
    if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
    console.log(`${WHO}: private, pattern, presence and key rotation exact`);
  } finally {
    await browser.close();
  }
}

const [port, pid, configPath] = process.argv.slice(2);
if (!port || !pid || !configPath) fail(WHO, "usage: node authz.mjs SERVER_PORT SERVER_PID CONFIG_JSON");
try {
  await run(port, Number(pid), JSON.parse(readFileSync(configPath, "utf8")));
  process.exit(0);
} catch (e) {
  fail(WHO, e.message);
}
