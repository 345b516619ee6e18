// The chat features of docs/CHAT-FEATURES.md in the app, in two browser
// contexts: a reply with its quote, an edit, a reaction, a recall of the
// quoted message ("message unavailable"), message search, mute for an hour
// ("muted until") and unmute, pin/mute markers and presence dots — each seen
// on both sides — then an @mention in a group, a forward into the group (the
// copy marked "Forwarded" on the other side),
// export, hide presence and account deletion.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { Browser, Page } from "playwright-core";

import type { KarlMaloneClient } from "@karlmalone/client";

import { launch, openChatWith, screenshot, sendInApp, watchErrors } from "../testing/browser.js";
import { befriend, newMember, password } from "../testing/members.js";
import { TestServer, waitFor } from "../testing/server.js";

let srv: TestServer;
let browser: Browser;

before(async () => {
  [srv, browser] = await Promise.all([TestServer.start({ name: "e2e-features" }), launch()]);
});
after(async () => {
  await browser?.close();
  await srv?.close();
});

async function signIn(page: Page, phone: string, nickname: string): Promise<void> {
  await page.goto(srv.url + "/");
  await page.fill("#auth-phone", phone);
  await page.fill("#auth-password", password);
  await page.click("#auth-submit");
  await page.waitForSelector(`#me-name:text("${nickname}")`);
  await page.waitForSelector("#status[data-state=online]");
}

async function streamText(r: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks).toString("utf8");
}

// Waits until the server has stored hide_presence (the checkbox saves it in the background).
async function waitForHidden(c: KarlMaloneClient): Promise<void> {
  await waitFor("hide_presence stored", async () => Boolean((await c.members.getMe({})).member?.hidePresence));
}

const msg = (text: string) => `#messages li.msg:has(.text:text-is("${text}"))`;

test("reply, edit, react, recall and search, seen on both sides", async () => {
  // The two members and their contact are made through the SDK; the test is about what the app shows.
  const ann = await newMember(srv.url, "Ann");
  const ben = await newMember(srv.url, "Ben");
  await befriend(ann, ben);
  const ctxA = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const ctxB = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  const errors = [...watchErrors(a, "A"), ...watchErrors(b, "B")];
  await signIn(a, ann.phone, "Ann");
  await signIn(b, ben.phone, "Ben");

  // Presence: each sees the other online.
  await a.waitForSelector('#conv-list li:has(.title:text-is("Ben")) .dot.on');
  await b.waitForSelector('#conv-list li:has(.title:text-is("Ann")) .dot.on');

  await openChatWith(b, "Ann");
  await sendInApp(b, "Lunch at noon?");
  await openChatWith(a, "Ben");
  await a.waitForSelector(msg("Lunch at noon?"));

  // Ann replies: the quote shows above her message on both sides.
  await a.click(`${msg("Lunch at noon?")} .reply`);
  await a.waitForSelector('#replying:has-text("Lunch at noon?")');
  await sendInApp(a, "Sure, where?");
  for (const p of [a, b]) {
    await p.waitForSelector(`${msg("Sure, where?")} .quote:has-text("Lunch at noon?")`);
  }
  assert.equal(await a.isVisible("#replying"), false, "the reply bar closes after sending");

  // Ben edits his message: the new text and "edited" on both sides, and Ann's quote follows.
  b.once("dialog", (d) => void d.accept("Lunch at one?"));
  await b.click(`${msg("Lunch at noon?")} .edit`);
  for (const p of [a, b]) {
    await p.waitForSelector(`${msg("Lunch at one?")} .edited`);
    await p.waitForSelector(`${msg("Sure, where?")} .quote:has-text("Lunch at one?")`);
  }
  assert.equal(await a.isVisible(`${msg("Sure, where?")} .edit`), true, "Ann may edit her own message");
  assert.equal(await a.isVisible(`${msg("Lunch at one?")} .edit`), false, "nobody edits another's message");

  // Ann reacts 👍 to it: a count of 1 on both sides, highlighted as hers only on hers.
  await a.click(`${msg("Lunch at one?")} .react`);
  await a.click(`${msg("Lunch at one?")} [data-pick="👍"]`);
  await a.waitForSelector(`${msg("Lunch at one?")} .reaction.mine[data-emoji="👍"]:text-is("👍 1")`);
  await b.waitForSelector(`${msg("Lunch at one?")} .reaction[data-emoji="👍"]:text-is("👍 1")`);
  assert.equal(await b.isVisible(`${msg("Lunch at one?")} .reaction.mine`), false, "not Ben's reaction");
  // Ben adds his: 2, and now his too.
  await b.click(`${msg("Lunch at one?")} .reaction[data-emoji="👍"]`);
  for (const p of [a, b]) {
    await p.waitForSelector(`${msg("Lunch at one?")} .reaction.mine[data-emoji="👍"]:text-is("👍 2")`);
  }

  // Search: each finds Ann's reply, and a result opens its conversation.
  for (const [p, other] of [[a, "Ben"], [b, "Ann"]] as const) {
    await p.click("#tab-chats");
    await p.fill("#msg-search", "where");
    await p.click("#msg-search-go");
    await p.waitForSelector(`#msg-search-results li:has-text("Sure, where?")`);
    await p.click(`#msg-search-results li:has-text("Sure, where?")`);
    await p.waitForSelector(`#conv-title:text-is("${other}")`);
  }

  // Mute for 1 hour: "muted until" in the list and the header, stored about an hour ahead; then Unmute.
  const annBen = `#conv-list li:has(.title:text-is("Ben"))`;
  await a.click("#conv-mute");
  const asked = Date.now();
  await a.click('#mute-menu [data-mute="1h"]');
  await a.waitForSelector(`${annBen} [data-testid=muted]:has-text("muted until")`);
  await a.waitForSelector('#conv-mute-state:has-text("muted until")');
  const { conversations } = await ann.client.chat.listConversations({ pageSize: 10 });
  const until = conversations.find((c) => c.with.case === "peer" && c.with.value.id === ben.id)?.settings?.mutedUntil;
  assert.ok(until, "muted_until stored");
  const ahead = Number(until.seconds) * 1000 - asked;
  assert.ok(ahead > 3590_000 && ahead < 3610_000, `muted about an hour ahead, not ${ahead} ms`);
  await a.click('#conv-mute:text-is("Unmute")');
  await a.waitForSelector('#conv-mute:text-is("Mute")');
  assert.equal(await a.isVisible(`${annBen} [data-testid=muted]`), false, "unmuted");

  // Pin and mute (forever) on Ann's side only: the markers show for her, not for Ben.
  await a.click("#conv-pin");
  await a.click("#conv-mute");
  await a.click('#mute-menu [data-mute="forever"]');
  await a.waitForSelector('#conv-list li:has(.title:text-is("Ben")) [data-testid=pinned]');
  await a.waitForSelector(`${annBen} [data-testid=muted]:text-is("muted")`);
  await a.waitForSelector('#conv-mute:text-is("Unmute")');
  assert.equal(await b.isVisible("#conv-list [data-testid=pinned]"), false);
  await screenshot(a, "features-ann");
  await screenshot(b, "features-ben");

  // Ben recalls the quoted message: Ann's reply now quotes "message unavailable".
  await b.click(`${msg("Lunch at one?")} .recall`);
  for (const p of [a, b]) {
    await p.waitForSelector(`${msg("Sure, where?")} .quote:has-text("message unavailable")`);
  }
  await screenshot(a, "features-recalled");

  // A group: Ben's @Ann mentions her — a badge on the conversation until she opens it, and the message marked.
  const { group } = await ann.client.groups.createGroup({ name: "Lunch club", memberIds: [ben.id] });
  await b.click("#tab-chats");
  await openChatWith(b, "Lunch club");
  await sendInApp(b, "@Ann are you coming?");
  await a.click("#tab-chats");
  await a.waitForSelector('#conv-list li:has(.title:text-is("Lunch club")) [data-testid=mentioned]');
  await openChatWith(a, "Lunch club");
  await a.waitForSelector(`${msg("@Ann are you coming?")}.mention`);
  assert.ok(group, "group created");

  // Ann forwards her "Sure, where?" from her chat with Ben to the group: Ben sees the copy there, marked forwarded.
  await openChatWith(a, "Ben");
  await a.click(`${msg("Sure, where?")} .forward`);
  await a.click('#forward-picker button:text-is("Lunch club")');
  await a.waitForSelector('#forward-done:has-text("Lunch club")');
  await b.waitForSelector(`${msg("Sure, where?")} [data-testid=forwarded]`);
  assert.equal(await b.textContent(`${msg("Sure, where?")} .sender`), "Ann");
  assert.equal(await a.isVisible(`${msg("Sure, where?")} [data-testid=forwarded]`), false, "the original is not marked");
  await screenshot(b, "features-forwarded");

  // Profile: export my data downloads a JSON document with the bearer token.
  await a.click("#tab-profile");
  const [download] = await Promise.all([a.waitForEvent("download"), a.click("#export-data")]);
  assert.equal(download.suggestedFilename(), "karlmalone-export.json");
  const exported = JSON.parse(await streamText(await download.createReadStream())) as Record<string, unknown>;
  assert.ok(Object.keys(exported).length > 0, "an export with content");
  // Hide presence: Ben stops seeing Ann online (he reads it again on reload).
  await a.check("#hide-presence");
  await waitForHidden(ann.client);
  await b.reload();
  await b.waitForSelector("#status[data-state=online]");
  await b.waitForSelector('#conv-list li:has(.title:text-is("Ann"))');
  assert.equal(await b.isVisible('#conv-list li:has(.title:text-is("Ann")) .dot'), false, "Ann's presence is hidden");

  // Delete account asks for the password, and signs Ben out.
  await b.click("#tab-profile");
  await b.fill("#delete-password", password);
  b.once("dialog", (d) => void d.accept());
  await b.click("#delete-account");
  await b.waitForSelector('#auth-notice:has-text("deleted")');

  assert.deepEqual(errors, []);
  await ctxA.close();
  await ctxB.close();
});
