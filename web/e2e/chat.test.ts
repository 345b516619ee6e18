// The chat app at / in headless Chromium: two people in two browser contexts
// sign up, befriend, chat both ways, see typing and unread counts, send an
// image, and keep chatting across a server restart.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { after, before, test } from "node:test";

import type { Browser, Page } from "playwright-core";

import { KarlMaloneClient } from "@karlmalone/client";

import { launch, openChatWith, screenshot, sendInApp, watchErrors } from "../testing/browser.js";
import { password } from "../testing/members.js";
import { TestServer, artifactsDir, newPhone } from "../testing/server.js";

let srv: TestServer;
let browser: Browser;

before(async () => {
  [srv, browser] = await Promise.all([TestServer.start({ name: "e2e-chat" }), launch()]);
});
after(async () => {
  await browser?.close();
  await srv?.close();
});

// firstRender loads / and reads the page's own timing: first contentful paint,
// DOMContentLoaded, and the app's "app-ready" mark (the sign-in form drawn).
async function firstRender(page: Page) {
  await page.goto(srv.url + "/");
  await page.waitForSelector("#auth-form");
  return page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
    const ms = (n: number | undefined) => (n === undefined ? -1 : Math.round(n));
    const js = performance.getEntriesByType("resource").find((r) => r.name.includes("/app/app.js")) as PerformanceResourceTiming | undefined;
    return {
      firstContentfulPaintMs: ms(performance.getEntriesByName("first-contentful-paint")[0]?.startTime),
      appReadyMs: ms(performance.getEntriesByName("app-ready")[0]?.startTime),
      htmlResponseEndMs: ms(nav.responseEnd),
      appJsFetchedMs: ms(js?.responseEnd),
      domContentLoadedMs: ms(nav.domContentLoadedEventEnd),
      appJsBytes: js?.decodedBodySize ?? -1,
    };
  });
}

async function signUp(page: Page, phone: string, nickname: string): Promise<void> {
  await page.goto(srv.url + "/");
  await page.click("#auth-toggle");
  await page.fill("#auth-phone", phone);
  await page.fill("#auth-password", password);
  await page.fill("#auth-nickname", nickname);
  await page.click("#auth-submit");
  await page.waitForSelector(`#me-name:text("${nickname}")`);
  await page.waitForSelector("#status[data-state=online]");
}

function lastMessage(page: Page, text: string) {
  return page.waitForSelector(`#messages .msg .text:text-is("${text}")`);
}

test("two people chat in the browser, across a server restart", async () => {
  const ctxA = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const ctxB = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  const errors = [...watchErrors(a, "A"), ...watchErrors(b, "B")];

  // First render, as the browser measures it: in a browser just started
  // (cold) and in a second context (no cache, browser warm).
  const timing = { cold: await firstRender(a), warm: await firstRender(b) };
  writeFileSync(join(artifactsDir, "first-render.json"), JSON.stringify(timing, null, 2) + "\n");
  console.log("first render:", JSON.stringify(timing));
  assert.ok(timing.cold.appReadyMs > 0 && timing.warm.appReadyMs > 0, "the app drew its first screen");
  assert.equal(await a.isVisible("#auth-nickname"), false, "signing in asks for no nickname");
  await screenshot(a, "01-sign-in");
  // A clear error: signing in as nobody says so, in words.
  await a.fill("#auth-phone", newPhone());
  await a.fill("#auth-password", password);
  await a.click("#auth-submit");
  await a.waitForSelector('#auth-error:has-text("wrong phone or password")');
  await screenshot(a, "01-sign-in-error");

  const phoneA = newPhone();
  const phoneB = newPhone();
  await signUp(a, phoneA, "Ann");
  await signUp(b, phoneB, "Ben");

  // Ben finds Ann by phone and asks; Ann sees the request arrive live and accepts.
  await b.click("#tab-contacts");
  await b.fill("#search-phone", phoneA);
  await b.click("#search-go");
  await b.click("#search-results .add-friend");
  await b.waitForSelector("#search-results .ok");
  await a.click("#tab-contacts");
  await a.waitForSelector("#incoming .accept");
  await screenshot(a, "02-friend-request");
  await a.click("#incoming .accept");
  await a.waitForSelector('#contacts .title:has-text("Ben")');

  // Ben's conversation with Ann appears (pushed answer); he writes.
  await b.click("#tab-chats");
  await b.waitForSelector('#conv-list .title:text-is("Ann")');
  await openChatWith(b, "Ann");
  await sendInApp(b, "Hello Ann!");
  await lastMessage(b, "Hello Ann!");

  // Ann has not opened it: an unread count of 1 on it and on the tab.
  await a.click("#tab-chats");
  await a.waitForSelector('#conv-list li:has(.title:text-is("Ben")) [data-testid=unread]:text-is("1")');
  await sendInApp(b, "Are you there?");
  await a.waitForSelector('#conv-list li:has(.title:text-is("Ben")) [data-testid=unread]:text-is("2")');
  await screenshot(a, "03-unread");
  await openChatWith(a, "Ben");
  await lastMessage(a, "Are you there?");
  await a.waitForSelector('#conv-list li:has(.title:text-is("Ben")) [data-testid=unread]', { state: "detached" });
  // Ben sees that Ann read it.
  await b.waitForSelector("#messages .msg.mine [data-testid=read]");

  // Typing shows on the other side.
  await a.type("#composer-text", "Yes, I", { delay: 20 });
  await b.waitForSelector('#typing:has-text("Ann is typing")');
  await screenshot(b, "04-typing");
  await a.type("#composer-text", " am here.");
  await a.click("#send");
  await lastMessage(b, "Yes, I am here.");
  await b.waitForSelector('#typing:text-is("")', { state: "attached" }); // a message ends the typing notice

  // An image, uploaded and shown on both sides.
  await a.setInputFiles("#composer-file", { name: "dot.png", mimeType: "image/png", buffer: png(48, 32) });
  await a.waitForSelector("#pending-file img");
  await a.click("#send");
  for (const p of [a, b]) {
    const img = await p.waitForSelector("#messages img.image");
    await p.waitForFunction((el) => (el as HTMLImageElement).complete && (el as HTMLImageElement).naturalWidth === 48, img);
  }
  await screenshot(b, "05-image");
  // It loads from a URL signed for the reader: no token in it, none needed.
  const src = await b.$eval("#messages img.image", (el) => (el as HTMLImageElement).src);
  assert.match(src, /\/v1\/attachments\/\d+\?exp=\d+&m=\d+&sig=[\w-]+$/);

  // A file: previewed before sending, offered as a download on both sides.
  const notes = Buffer.from("Bring the rope.\n");
  await a.setInputFiles("#composer-file", { name: "notes.txt", mimeType: "text/plain", buffer: notes });
  await a.waitForSelector('#pending-file:has-text("notes.txt")');
  await a.click("#send");
  await a.waitForSelector('#messages a.file:has-text("notes.txt")');
  await b.waitForSelector('#messages a.file:has-text("notes.txt")');
  const [download] = await Promise.all([b.waitForEvent("download"), b.click('#messages a.file:has-text("notes.txt")')]);
  assert.equal(download.suggestedFilename(), "notes.txt");
  const { readFileSync } = await import("node:fs");
  assert.deepEqual(readFileSync((await download.path())!), notes);
  await screenshot(b, "05-file");

  // The server restarts; both pages reconnect by themselves and chat goes on.
  await srv.restart();
  await Promise.all([a.waitForSelector("#status[data-state=online]"), b.waitForSelector("#status[data-state=online]")]);
  await sendInApp(a, "Still here after the restart?");
  await lastMessage(b, "Still here after the restart?");
  await sendInApp(b, "Yes!");
  await lastMessage(a, "Yes!");
  await screenshot(a, "06-after-restart-ann");
  await screenshot(b, "06-after-restart-ben");

  // Every message once on each side, in order.
  const texts = (p: Page) => p.$$eval("#messages .msg .text", (els) => els.map((e) => e.textContent));
  const want = ["Hello Ann!", "Are you there?", "Yes, I am here.", "Still here after the restart?", "Yes!"];
  assert.deepEqual(await texts(a), want);
  assert.deepEqual(await texts(b), want);

  // Ben recalls his last message; Ann sees it go.
  await b.click('#messages .msg.mine:last-child .recall');
  await a.waitForSelector('#messages .msg:last-child em:text-is("Message recalled")');

  // A group: Ann creates it with Ben, writes, makes Ben an admin.
  await a.click("#tab-groups");
  await a.fill("#group-name", "Climbing");
  await a.check('.picks label:has-text("Ben") input');
  await a.click("#group-create");
  await a.waitForSelector('#conv-title:text-is("Climbing")');
  await sendInApp(a, "Saturday at nine?");
  await lastMessage(a, "Saturday at nine?");
  await b.click("#tab-chats");
  await b.waitForSelector('#conv-list li:has(.title:text-is("Climbing")) [data-testid=unread]:text-is("1")');
  await openChatWith(b, "Climbing");
  await b.waitForSelector('#messages .msg:has(.sender:text-is("Ann")) .text:text-is("Saturday at nine?")');
  await a.click("#members-toggle");
  await a.click('#members-panel li:has-text("Ben") button:text-is("Make admin")');
  await a.waitForSelector('#members-panel li:has-text("Ben") .role:text-is("admin")');
  await screenshot(a, "07-group");

  // History pages: Ben (through the SDK) sends 60 more; Ann opens their chat
  // with the newest 50 shown and pages back to the first message.
  const ben = new KarlMaloneClient({ baseUrl: srv.url });
  await ben.login(phoneB, password);
  const ann = (await ben.members.searchMembers({ query: phoneA })).members[0]!;
  for (let i = 0; i < 60; i++) {
    await ben.chat.sendMessage({ target: { case: "peerId", value: ann.id }, clientMsgId: `page-${i}`, content: { case: "text", value: `page ${i}` } });
  }
  // A reload keeps Ann signed in (the token is in sessionStorage) and starts
  // with no history loaded.
  await a.reload();
  await a.waitForSelector("#status[data-state=online]");
  await openChatWith(a, "Ben");
  await lastMessage(a, "page 59");
  assert.equal(await a.locator("#messages .msg").count(), 50);
  await a.click("#load-older");
  await a.waitForSelector('#messages .msg .text:text-is("Hello Ann!")');
  await a.waitForSelector("#load-older", { state: "detached" });
  assert.equal(await a.locator("#messages .msg").count(), 67); // 5 texts, the image, the file, 60 pages

  // Contacts with remarks: Ann calls Ben "Benny"; her lists say so.
  await a.click("#tab-contacts");
  a.once("dialog", (d) => void d.accept("Benny"));
  await a.click('#contacts li:has-text("Ben") button:text-is("Remark")');
  await a.waitForSelector('#contacts .title:has-text("Benny")');
  await a.click("#tab-chats");
  await a.waitForSelector('#conv-list .title:text-is("Benny")');
  await screenshot(a, "08-remark");

  // Ben leaves the group: it leaves his list, and Ann's member list.
  await openChatWith(b, "Climbing");
  await b.click("#members-toggle");
  await b.click('#members-panel button:text-is("Leave group")');
  await b.waitForSelector('#conv-list .title:text-is("Climbing")', { state: "detached" });
  await openChatWith(a, "Climbing");
  await a.click("#members-toggle");
  await a.waitForSelector('#members-panel li:has-text("Ann")');
  await a.waitForSelector('#members-panel li:has-text("Ben")', { state: "detached" });
  await screenshot(a, "09-left-group");

  const csp = errors.filter((e) => /Content Security Policy|exception/.test(e));
  assert.deepEqual(csp, [], "no CSP violation, no uncaught exception");
  await ctxA.close();
  await ctxB.close();
});

// png makes a small solid PNG image.
function png(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const row = Buffer.concat([Buffer.from([0]), Buffer.alloc(width * 3, 0x40)]);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
