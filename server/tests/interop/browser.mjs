// Headless Chromium (Debian's, driven by playwright-core) against a running
// stentor's live page.
//
// usage: node browser.mjs live|resume SERVER_PORT TOPIC [--screenshot PNG] [--page-file HTML]
//
// live:   open `/` through cutproxy.py; the page's own EventSource receives
//         one event published from the page's form and every case of
//         cases.json published by the test, typed, with ids, data
//         byte-exact, and shows them (the <pre> text is the data).
// resume: then the proxy drops the page's stream and holds its reconnect;
//         the cases are published again while the page is away; released,
//         the browser reconnects by itself with Last-Event-ID and the page
//         receives exactly the missed events, in order, once.
// --page-file serves `/` from a file instead of the server (to try page
// edits without rebuilding the server); the tests never pass it.

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import { CASES, checkExact, checkIncreasing, fail, publishAll, sleep, startProxy, waitFor } from "./lib.mjs";

const WHO = "browser";
const CHROMIUM = process.env.STENTOR_CHROMIUM || "/usr/bin/chromium";
const QUIET_MS = 500;
const FORM_EVENT = { name: "form", event: "greeting", data: "from the form\r\n  second line", expect: "from the form\n  second line" };

function option(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

async function run(mode, port, topic) {
  const base = `http://127.0.0.1:${port}`;
  const proxy = await startProxy(port);
  // launch() gives Chromium a fresh temporary profile and removes it after.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.setDefaultTimeout(15000);
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    const pageFile = option("--page-file");
    if (pageFile) {
      const html = readFileSync(pageFile, "utf8");
      await page.route(/\/(\?.*)?$/, (route) => route.fulfill({ contentType: "text/html; charset=utf-8", body: html }));
    }
    const types = [...new Set(CASES.map((c) => c.event).filter(Boolean))].join(",");
    const url = `http://127.0.0.1:${proxy.port}/?topic=${topic}&types=${types}`;
    const resp = await page.goto(url);
    if (!pageFile && (!resp || resp.status() !== 200)) throw new Error(`GET / answered ${resp && resp.status()}`);
    const state = () => page.evaluate(() => window.stentorState);
    const events = () => page.evaluate(() => window.stentorEvents);
    await waitFor("the page's stream to open", async () => (await state()) === "open");

    // One event from the page's own publish form.
    await page.fill("#ptopic", topic);
    await page.fill("#ptype", FORM_EVENT.event);
    await page.fill("#pdata", FORM_EVENT.data);
    await page.click("#send");
    await waitFor("the form's publish to answer", async () => /published/.test(await page.textContent("#result")));
    const formId = String((await page.textContent("#result")).match(/(\d+)\s*$/)[1]);
    await waitFor("the form's event", async () => (await events()).length >= 1);
    // The textarea turns CRLF into LF on the way (HTML form value rules).
    const formCase = { ...FORM_EVENT, data: FORM_EVENT.expect };

    const ids = await publishAll(base, topic);
    await waitFor(`${CASES.length} events on the page`, async () => (await events()).length >= 1 + CASES.length);
    await sleep(QUIET_MS);
    const live = await events();
    checkExact(live, [formCase, ...CASES], [formId, ...ids]);
    // What the page shows is the data itself (newest first).
    const shown = await page.$$eval("#events pre.data", (els) => els.map((e) => e.textContent));
    const want = [FORM_EVENT.expect, ...CASES.map((c) => c.expect)].reverse();
    if (JSON.stringify(shown) !== JSON.stringify(want)) {
      throw new Error(`the page shows ${JSON.stringify(shown)}, want ${JSON.stringify(want)}`);
    }
    const shot = option("--screenshot");
    if (shot) await page.screenshot({ path: shot, fullPage: false });
    if (mode === "live") {
      if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
      console.log(`${WHO}: page at / received ${live.length} events exact`);
      return;
    }

    // The server side "drops" the stream: the proxy cuts it and holds the
    // browser's own reconnect until the missed events are published.
    const lastBefore = live.at(-1).id;
    // Only the first request of a connection is seen by the proxy, and the
    // page's first stream may reuse the connection that loaded it: count
    // the requests made after the cut, all on fresh connections.
    const headsBefore = (await proxy.heads()).length;
    await proxy.cmd("cut");
    await waitFor("the browser to reconnect (held by the proxy)", async () => (await proxy.status()).held >= 1);
    const missedIds = await publishAll(base, topic);
    await proxy.cmd("release");
    const total = live.length + CASES.length;
    await waitFor("the missed events on the page", async () => (await events()).length >= total).catch(async (e) => {
      throw new Error(`${e.message}; got ${(await events()).length - live.length} of ${CASES.length}; request heads: ${JSON.stringify(await proxy.heads())}`);
    });
    await sleep(QUIET_MS);
    const after = (await events()).slice(live.length);
    checkExact(after, CASES, missedIds);
    checkIncreasing([...ids, ...missedIds]);
    const streams = (await proxy.heads()).slice(headsBefore).filter((h) => h.line.startsWith("GET /events"));
    if (streams.length !== 1 || streams[0].last_event_id !== lastBefore) {
      throw new Error(`the reconnect should carry Last-Event-ID ${lastBefore}: ${JSON.stringify(streams)}`);
    }
    const opens = await page.evaluate(() => window.stentorOpenCount);
    if (opens !== 2) throw new Error(`the page's stream opened ${opens} times, want 2`);
    if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
    console.log(`${WHO}: reconnected with Last-Event-ID ${lastBefore}; ${CASES.length} missed events exact, once, in order`);
  } finally {
    await browser.close();
    proxy.close();
  }
}

const [mode, port, topic] = process.argv.slice(2);
if (!["live", "resume"].includes(mode) || !port || !topic) {
  fail(WHO, "usage: node browser.mjs live|resume SERVER_PORT TOPIC [--screenshot PNG] [--page-file HTML]");
}
try {
  await run(mode, port, topic);
  process.exit(0);
} catch (e) {
  fail(WHO, e.message);
}
