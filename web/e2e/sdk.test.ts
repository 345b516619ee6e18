// A page built on the SDK alone, in Chromium, served from another origin
// (CORS), receives every message exactly once and in order while the server
// restarts under it; and what / serves.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import type { Browser } from "playwright-core";

import { launch, screenshot, watchErrors } from "../testing/browser.js";
import { befriend, newMember, sendText } from "../testing/members.js";
import { TestServer } from "../testing/server.js";

let srv: TestServer;
let browser: Browser;
let pages: Server;
let pageOrigin = "";

before(async () => {
  // The page's own origin: a second server, as a web app hosted elsewhere.
  const script = readFileSync(new URL("./exactly-once.page.js", import.meta.url));
  pages = createServer((req, res) => {
    if (req.url === "/sdk-test.js") {
      res.writeHead(200, { "Content-Type": "text/javascript" }).end(script);
    } else {
      res.writeHead(200, { "Content-Type": "text/html" }).end('<!doctype html><body><script type="module" src="/sdk-test.js"></script></body>');
    }
  });
  await new Promise<void>((resolve) => pages.listen(0, "127.0.0.1", resolve));
  pageOrigin = `http://127.0.0.1:${(pages.address() as AddressInfo).port}`;
  [srv, browser] = await Promise.all([TestServer.start({ name: "e2e-sdk", flags: ["-cors-origins", pageOrigin] }), launch()]);
});
after(async () => {
  await browser?.close();
  await srv?.close();
  pages?.close();
});

test("an SDK-only page gets every message exactly once across forced gaps", async () => {
  const sender = await newMember(srv.url, "sender");
  const reader = await newMember(srv.url, "reader");
  const conv = await befriend(sender, reader);

  const page = await browser.newPage();
  const errors = watchErrors(page, "page");
  await page.goto(`${pageOrigin}/sdk-test#${encodeURIComponent(srv.url)}#${encodeURIComponent(reader.client.token!)}`);
  await page.waitForFunction(() => window.states?.some((s) => s.status === "online")).catch((err: unknown) => {
    throw new Error(`the page never went online: ${errors.join("; ")}`, { cause: err });
  });

  // 60 messages; the server restarts twice while they are sent, so some
  // arrive live, some are sent while the page is away and read back.
  const n = 60;
  for (let i = 0; i < n; i++) {
    if (i === 20 || i === 40) {
      await srv.restart();
    }
    await sendText(sender, reader, `m${i}`);
  }
  await page.waitForFunction((n) => window.received.length >= n, n, { timeout: 60_000 });
  const got = await page.evaluate(() => window.received);
  assert.deepEqual(
    got.map((m) => [m.conversation, m.seq, m.text]),
    Array.from({ length: n }, (_, i) => [conv.toString(), i + 1, `m${i}`]),
    "every message once, in seq order",
  );
  const states = await page.evaluate(() => window.states.map((s) => s.status));
  assert.ok(states.filter((s) => s === "offline").length >= 2, `went offline at each restart: ${states.join(" ")}`);
  await screenshot(page, "sdk-page");
  await page.close();
});

test("/ serves the app to browsers, with a strict CSP, and text to curl", async () => {
  const html = await fetch(srv.url + "/", { headers: { Accept: "text/html" } });
  assert.equal(html.status, 200);
  assert.match(html.headers.get("content-type") ?? "", /^text\/html/);
  const csp = html.headers.get("content-security-policy") ?? "";
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self';/, "no inline or foreign script");
  assert.match(csp, /frame-ancestors 'none'/);
  const body = await html.text();
  for (const m of body.matchAll(/(?:src|href)="(app\/[^"]+)"/g)) {
    const res = await fetch(`${srv.url}/${m[1]}`);
    assert.equal(res.status, 200, m[1]);
    assert.match(res.headers.get("content-type") ?? "", /javascript|css/);
  }
  const text = await fetch(srv.url + "/");
  assert.match(text.headers.get("content-type") ?? "", /^text\/plain/);
  assert.match(await text.text(), /KarlMalone instant-messaging API/);
  assert.equal((await fetch(srv.url + "/app/index.html")).status, 404);
  assert.equal((await fetch(srv.url + "/docs")).status, 200);
  assert.equal((await fetch(srv.url + "/openapi.yaml")).status, 200);
});
