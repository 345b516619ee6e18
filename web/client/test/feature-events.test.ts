// The chat-feature events through the SDK against a real server: an edit and
// a reaction made by one member reach the other's push session as typed
// callbacks, and applyMessageEvent updates the message that member holds.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { type Message, type MessageEdited, type ReactionChanged, applyMessageEvent } from "@karlmalone/client";

import { Recorder, befriend, newMember, sendText } from "../../testing/members.js";
import { TestServer, waitFor } from "../../testing/server.js";

describe("feature events", () => {
  let srv: TestServer;
  before(async () => {
    srv = await TestServer.start({ name: "sdk-features" });
  });
  after(async () => {
    await srv?.close();
  });

  test("an edit and a reaction by one member arrive at the other's push session", async () => {
    const alice = await newMember(srv.url, "alice");
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const rec = new Recorder();
    const edits: MessageEdited[] = [];
    const reactions: ReactionChanged[] = [];
    const held: Message[] = []; // what bob's app holds
    const push = bob.client.push({
      onMessage: (m) => {
        held.push(m);
        rec.onMessage(m);
      },
      onState: rec.onState,
      onMessageEdited: (e) => edits.push(e),
      onReaction: (e) => reactions.push(e),
      onEvent: (e) => void applyMessageEvent(held, e, bob.id),
    });
    try {
      await rec.waitState("online");
      const sent = await sendText(alice, bob, "helo");
      await rec.waitSeq(conv, Number(sent.seq));

      await alice.client.chat.editMessage({ conversationId: conv, seq: sent.seq, text: "hello" });
      await waitFor("message_edited", () => edits.length === 1);
      assert.equal(edits[0]!.conversationId, conv);
      assert.equal(edits[0]!.seq, sent.seq);
      assert.equal(edits[0]!.senderId, alice.id);
      assert.equal(edits[0]!.text, "hello");
      const m = held.find((x) => x.seq === sent.seq)!;
      assert.deepEqual(m.content, { case: "text", value: "hello" });
      assert.ok(m.editedAt, "edited_at applied");

      await alice.client.chat.setReaction({ conversationId: conv, seq: sent.seq, emoji: "👍" });
      await waitFor("reaction", () => reactions.length === 1);
      assert.equal(reactions[0]!.memberId, alice.id);
      assert.equal(reactions[0]!.emoji, "👍");
      assert.deepEqual(m.reactions.map((r) => [r.emoji, r.count, r.reactedByMe]), [["👍", 1, false]]);

      // Bob's own reaction on another device of his: counted as his.
      await bob.client.chat.setReaction({ conversationId: conv, seq: sent.seq, emoji: "👍" });
      await waitFor("second reaction", () => reactions.length === 2);
      assert.deepEqual(m.reactions.map((r) => [r.emoji, r.count, r.reactedByMe]), [["👍", 2, true]]);
      // Alice changes hers: one off 👍, one on ❤️ — as ListMessages says.
      await alice.client.chat.setReaction({ conversationId: conv, seq: sent.seq, emoji: "❤️" });
      await waitFor("changed reaction", () => reactions.length === 3);
      assert.equal(reactions[2]!.previousEmoji, "👍");
      const listed = (await bob.client.chat.listMessages({ conversationId: conv, limit: 10 })).messages.find((x) => x.seq === sent.seq)!;
      assert.deepEqual(
        m.reactions.map((r) => [r.emoji, r.count, r.reactedByMe]),
        listed.reactions.map((r) => [r.emoji, r.count, r.reactedByMe]),
      );
    } finally {
      await push.close();
    }
  });
});
