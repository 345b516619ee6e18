// The push session against a real server: every message exactly once, in seq
// order, across the ways a socket loses messages.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import {
  AttachmentKind,
  CloseCode,
  Code,
  ConnectError,
  EventBatchSchema,
  EventSchema,
  KarlMaloneClient,
  SUBPROTOCOL_JSON,
  SUBPROTOCOL_JSON_BATCH,
  SUBPROTOCOL_PROTO,
  SUBPROTOCOL_PROTO_BATCH,
  fieldErrors,
} from "@karlmalone/client";

import { Recorder, Sockets, befriend, newMember, sendText, sendTexts } from "../../testing/members.js";
import { TestServer, waitFor } from "../../testing/server.js";

describe("push session", () => {
  let srv: TestServer;
  before(async () => {
    srv = await TestServer.start({ name: "sdk" });
  });
  after(async () => {
    await srv?.close();
  });

  for (const [encoding, batched, subprotocol] of [
    ["proto", true, SUBPROTOCOL_PROTO_BATCH], // the default
    ["json", true, SUBPROTOCOL_JSON_BATCH],
    ["proto", false, SUBPROTOCOL_PROTO],
    ["json", false, SUBPROTOCOL_JSON],
  ] as const) {
    test(`delivers live messages in order (${subprotocol} frames)`, async () => {
      const sockets = new Sockets();
      const alice = await newMember(srv.url, "alice", { WebSocket: sockets.WebSocket });
      const bob = await newMember(srv.url, "bob");
      const conv = await befriend(alice, bob);
      const rec = new Recorder();
      const events: string[] = [];
      const push = alice.client.push({
        ...(encoding === "json" ? { encoding } : {}),
        ...(batched ? {} : { batched }),
        onMessage: rec.onMessage,
        onState: rec.onState,
        onEvent: (e) => events.push(e.kind.case ?? "unknown"),
      });
      try {
        await rec.waitState("online");
        assert.deepEqual(sockets.protocols, [subprotocol]);
        const sent = await sendTexts(bob, alice, 5, "hello");
        await rec.waitSeq(conv, 5);
        rec.assertExactlyOnce(conv, 5);
        assert.deepEqual(
          rec.messages.map((m) => (m.content.case === "text" ? m.content.value : "")),
          sent.map((m) => (m.content.case === "text" ? m.content.value : "")),
        );
        await bob.client.chat.sendTyping({ conversationId: conv });
        await waitFor("typing event", () => events.includes("typing"));
      } finally {
        await push.close();
      }
      assert.equal(push.state.status, "closed");
    });
  }

  test("the async iterator yields the same stream", async () => {
    const alice = await newMember(srv.url, "alice");
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const push = alice.client.push();
    const seqs: bigint[] = [];
    const loop = (async () => {
      for await (const item of push) {
        if (item.type === "state" && item.state.status === "online") {
          await sendTexts(bob, alice, 3, "iter");
        }
        if (item.type === "message" && item.message.conversationId === conv) {
          seqs.push(item.message.seq);
          if (seqs.length === 3) {
            await push.close();
          }
        }
      }
    })();
    await loop; // ends when the session closes
    assert.deepEqual(seqs, [1n, 2n, 3n]);
  });

  test("a lost frame is read back from history, without reconnecting", async () => {
    const sockets = new Sockets();
    const alice = await newMember(srv.url, "alice", { WebSocket: sockets.WebSocket });
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const rec = new Recorder();
    // Lose the frames of seq 3 and 4, as an at-most-once hop between nodes may.
    sockets.dropFrame = (data) =>
      fromBinary(EventBatchSchema, new Uint8Array(data as ArrayBuffer)).events.some(
        (e) => e.kind.case === "message" && (e.kind.value.seq === 3n || e.kind.value.seq === 4n),
      );
    const push = alice.client.push({ onMessage: rec.onMessage, onState: rec.onState, gapGraceMs: 50 });
    try {
      await rec.waitState("online");
      await sendTexts(bob, alice, 6, "gap");
      await rec.waitSeq(conv, 6);
      rec.assertExactlyOnce(conv, 6);
      assert.equal(sockets.opened, 1, "no reconnect was needed");
    } finally {
      await push.close();
    }
  });

  test("a resync event: reads back what never arrived", async () => {
    const sockets = new Sockets();
    const alice = await newMember(srv.url, "alice", { WebSocket: sockets.WebSocket });
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const rec = new Recorder();
    // Lose the last two frames: no later message reveals the gap, so only
    // the server's Resync event (sent when the link between its nodes was
    // down) can bring them back. gapGraceMs is long, so nothing else would.
    const dropped = new Set<bigint>();
    sockets.dropFrame = (data) => {
      const seqs = fromBinary(EventBatchSchema, new Uint8Array(data as ArrayBuffer)).events.flatMap((e) =>
        e.kind.case === "message" ? [e.kind.value.seq] : [],
      );
      const drop = seqs.some((seq) => seq >= 5n);
      if (drop) seqs.forEach((seq) => dropped.add(seq));
      return drop;
    };
    const push = alice.client.push({ onMessage: rec.onMessage, onState: rec.onState, gapGraceMs: 600_000 });
    try {
      await rec.waitState("online");
      await sendTexts(bob, alice, 6, "lost");
      await waitFor("seq 5 and 6 dropped", () => dropped.has(5n) && dropped.has(6n));
      await rec.waitSeq(conv, 4);
      assert.equal(rec.seqs(conv).length, 4, "5 and 6 were lost");
      const resync = create(EventBatchSchema, {
        events: [create(EventSchema, { at: timestampNow(), kind: { case: "resync", value: { since: timestampNow() } } })],
      });
      const bytes = toBinary(EventBatchSchema, resync);
      sockets.inject(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
      await rec.waitSeq(conv, 6);
      rec.assertExactlyOnce(conv, 6);
      assert.equal(sockets.opened, 1, "no reconnect was needed");
    } finally {
      await push.close();
    }
  });

  test("a socket closed mid-burst: reconnects and hands over every message once", async () => {
    const sockets = new Sockets();
    const alice = await newMember(srv.url, "alice", { WebSocket: sockets.WebSocket });
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const rec = new Recorder();
    const push = alice.client.push({ onMessage: rec.onMessage, onState: rec.onState, backoff: { initialMs: 200 } });
    try {
      await rec.waitState("online");
      const n = 40;
      const burst = sendTexts(bob, alice, n, "burst");
      await rec.waitSeq(conv, 10);
      // Down for a while: the socket breaks and reconnecting fails until the
      // network comes back, while bob keeps sending.
      sockets.blocked = true;
      sockets.closeAll();
      const offlineAt = rec.states.length;
      await rec.waitState("offline");
      await rec.waitState("connecting", 30_000, offlineAt + 1); // a failed attempt at least
      sockets.blocked = false;
      await burst;
      await rec.waitSeq(conv, n);
      rec.assertExactlyOnce(conv, n);
      assert.ok(sockets.opened >= 2, "it reconnected");
    } finally {
      await push.close();
    }
  });

  test("a server restart: 1001, reconnect with backoff, resync", async () => {
    const sockets = new Sockets();
    const alice = await newMember(srv.url, "alice", { WebSocket: sockets.WebSocket });
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const rec = new Recorder();
    const push = alice.client.push({ onMessage: rec.onMessage, onState: rec.onState, backoff: { initialMs: 200, maxMs: 1000 } });
    try {
      await rec.waitState("online");
      await sendTexts(bob, alice, 3, "before");
      await rec.waitSeq(conv, 3);
      // Keep alice away until bob has sent more, so they must be read back.
      sockets.blocked = true;
      const mark = rec.states.length;
      await srv.restart();
      const off = await rec.waitState("offline", 30_000, mark);
      assert.equal(off.status === "offline" && off.code, CloseCode.GoingAway);
      await sendTexts(bob, alice, 4, "while away");
      sockets.blocked = false;
      await rec.waitState("online", 30_000, mark);
      await sendTexts(bob, alice, 2, "after");
      await rec.waitSeq(conv, 9);
      rec.assertExactlyOnce(conv, 9);
    } finally {
      await push.close();
    }
  });

  test("logout closes the socket with 4001: sign in again", async () => {
    const alice = await newMember(srv.url, "alice");
    const rec = new Recorder();
    const push = alice.client.push({ onState: rec.onState });
    await rec.waitState("online");
    const other = new KarlMaloneClient({ baseUrl: srv.url, token: alice.client.token! });
    await other.members.logout({});
    const s = await rec.waitState("unauthenticated");
    assert.deepEqual(s, { status: "unauthenticated", reason: "revoked" });
    await push.done; // the session ended by itself
    const unauth = rec.states.findIndex((x) => x.status === "unauthenticated");
    assert.ok(!rec.states.slice(unauth).some((x) => x.status === "connecting"), "no reconnect after 4001");
  });

  test("a refused handshake (401) is told from a network failure", async () => {
    let unauthenticated = 0;
    const client = new KarlMaloneClient({
      baseUrl: srv.url,
      token: "not-a-token",
      WebSocket: globalThis.WebSocket,
      onUnauthenticated: () => unauthenticated++,
    });
    const rec = new Recorder();
    const push = client.push({ onState: rec.onState });
    const s = await rec.waitState("unauthenticated");
    assert.deepEqual(s, { status: "unauthenticated", reason: "rejected" });
    await push.done; // and the session ended by itself
    assert.equal(unauthenticated, 1, "the probe call reported it too");

    // A server that is not there: offline, retrying; not "sign in again".
    const gone = new KarlMaloneClient({ baseUrl: "http://127.0.0.1:1", token: "x", WebSocket: globalThis.WebSocket });
    const rec2 = new Recorder();
    const push2 = gone.push({ onState: rec2.onState, backoff: { initialMs: 50 } });
    const off = await rec2.waitState("offline");
    assert.equal(off.status === "offline" && off.reason, "network");
    await rec2.waitState("connecting", 5000, rec2.states.indexOf(off) + 1);
    await push2.close();
    assert.ok(!rec2.states.some((s) => s.status === "unauthenticated"));
  });

  test("a conversation that appears later starts at the read cursor", async () => {
    const alice = await newMember(srv.url, "alice");
    const bob = await newMember(srv.url, "bob");
    const rec = new Recorder();
    const push = alice.client.push({ onMessage: rec.onMessage, onState: rec.onState });
    try {
      await rec.waitState("online");
      const conv = await befriend(bob, alice); // after the first resync
      await sendTexts(bob, alice, 3, "new");
      await rec.waitSeq(conv, 3);
      rec.assertExactlyOnce(conv, 3);
    } finally {
      await push.close();
    }
  });

  test("cursors survive in the store: a new session hands over only what is new", async () => {
    const alice = await newMember(srv.url, "alice");
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const { MemoryCursorStore } = await import("@karlmalone/client");
    const store = new MemoryCursorStore();
    const rec = new Recorder();
    let push = alice.client.push({ store, onMessage: rec.onMessage, onState: rec.onState });
    await rec.waitState("online");
    await sendTexts(bob, alice, 2, "first");
    await rec.waitSeq(conv, 2);
    await push.close();
    assert.equal(store.load()?.cursors[conv.toString()], "2");

    await sendTexts(bob, alice, 3, "while closed"); // seq 3..5
    const rec2 = new Recorder();
    push = alice.client.push({ store, onMessage: rec2.onMessage, onState: rec2.onState });
    try {
      await waitFor("seq 5", () => rec2.seqs(conv).includes(5n));
      assert.deepEqual(rec2.seqs(conv), [3n, 4n, 5n]);
    } finally {
      await push.close();
    }
  });

  test("attachment URLs work without the token: images inline, files as downloads", async () => {
    const alice = await newMember(srv.url, "alice");
    const bob = await newMember(srv.url, "bob");
    await befriend(alice, bob);
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
    const pdf = new TextEncoder().encode("%PDF-1.4\nnot really");
    for (const [bytes, type, disposition] of [
      [png, "image/png", "inline"],
      [pdf, "application/pdf", "attachment"],
    ] as const) {
      const up = await alice.client.uploadAttachment(new Blob([bytes], { type }));
      await alice.client.chat.sendMessage({
        target: { case: "peerId", value: bob.id },
        clientMsgId: `att-${up.id}`,
        content: { case: "attachment", value: { id: up.id, kind: type === "image/png" ? AttachmentKind.IMAGE : AttachmentKind.FILE } },
      });
      const url = await bob.client.attachmentUrl(up.id);
      assert.equal(await bob.client.attachmentUrl(up.id), url, "reused while fresh");
      const res = await fetch(url); // no Authorization header, as <img src>
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), type);
      assert.equal(res.headers.get("content-disposition"), disposition);
      assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
      const tampered = await fetch(url.replace(/sig=[^&]+/, "sig=AAAA"));
      assert.equal(tampered.status, 403);
    }
    const eve = await newMember(srv.url, "eve");
    await assert.rejects(eve.client.attachmentUrl(1n), (err: unknown) => ConnectError.from(err).code === Code.NotFound);
  });

  test("errors are ConnectErrors with the server's codes", async () => {
    const alice = await newMember(srv.url, "alice");
    await assert.rejects(
      alice.client.chat.sendMessage({ target: { case: "peerId", value: 999999n }, clientMsgId: "x", content: { case: "text", value: "hi" } }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.NotFound,
    );
    await assert.rejects(alice.client.members.register({ phone: "12", password: "x", nickname: "" }), (err: unknown) => {
      const fields = fieldErrors(err);
      return ConnectError.from(err).code === Code.InvalidArgument && fields.has("phone") && fields.has("password");
    });
    await assert.rejects(alice.client.fetchAttachment(424242n), (err: unknown) => err instanceof ConnectError && err.code === Code.NotFound);
    const up = await alice.client.uploadAttachment(new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])], { type: "image/png" }));
    assert.equal(up.contentType, "image/png");
    const back = await alice.client.fetchAttachment(up.id);
    assert.equal(back.size, 8);
  });
});

// A session that expires while connected is closed with 4001 "session
// expired": the app must sign in again, as after a revocation.
describe("push session, expiry", () => {
  let srv: TestServer;
  before(async () => {
    srv = await TestServer.start({ name: "sdk-expiry", flags: ["-token-ttl", "4s"] });
  });
  after(async () => {
    await srv?.close();
  });

  test("4001 session expired: sign in again, no reconnect", async () => {
    const alice = await newMember(srv.url, "alice");
    const rec = new Recorder();
    const push = alice.client.push({ onState: rec.onState });
    await rec.waitState("online");
    const s = await rec.waitState("unauthenticated", 30_000);
    assert.deepEqual(s, { status: "unauthenticated", reason: "expired" });
    await push.done;
    const unauth = rec.states.findIndex((x) => x.status === "unauthenticated");
    assert.ok(!rec.states.slice(unauth).some((x) => x.status === "connecting"), "no reconnect after 4001");
  });
});

// A receiver too slow for its queue is closed with 1008 "too slow: resync";
// the session reconnects and reads back what the server dropped.
describe("push session, slow consumer", () => {
  let srv: TestServer;
  before(async () => {
    srv = await TestServer.start({ name: "sdk-slow", flags: ["-push-queue-size", "4", "-send-rate", "0"] });
  });
  after(async () => {
    await srv?.close();
  });

  test("1008: reconnect and resync; every message once", async () => {
    const alice = await newMember(srv.url, "alice");
    const bob = await newMember(srv.url, "bob");
    const conv = await befriend(alice, bob);
    const rec = new Recorder();
    const push = alice.client.push({ onMessage: rec.onMessage, onState: rec.onState, backoff: { initialMs: 100 } });
    try {
      await rec.waitState("online");
      // The app's thread stalls while bob sends large messages: the socket's
      // buffers fill, the server's queue overflows, and it drops the socket.
      // A worker sends, watches /metrics for the disconnect, and wakes us.
      const { Worker } = await import("node:worker_threads");
      const flag = new Int32Array(new SharedArrayBuffer(8));
      const worker = new Worker(new URL("./slow-sender.worker.mjs", import.meta.url), {
        workerData: { url: srv.url, token: bob.client.token, to: alice.id.toString(), flag },
      });
      const exited = new Promise<void>((resolve, reject) => {
        worker.on("error", reject);
        worker.on("exit", () => resolve());
      });
      await waitFor("worker started", () => Atomics.load(flag, 1) === 1);
      const r = Atomics.wait(flag, 0, 0, 60_000); // blocks this thread: no frame is read
      assert.equal(r, "ok", "the server dropped the slow socket within a minute");
      await exited;
      const sent = Atomics.load(flag, 0);
      assert.ok(sent > 4, `sent ${sent}`);

      await rec.waitSeq(conv, sent, 60_000);
      rec.assertExactlyOnce(conv, sent);
      const closes = rec.states.filter((s) => s.status === "offline");
      assert.ok(
        closes.some((s) => s.status === "offline" && s.code === CloseCode.PolicyViolation && s.closeReason === "too slow: resync"),
        `closed with 1008 "too slow: resync"; saw ${JSON.stringify(closes)}`,
      );
      assert.equal(push.state.status, "online");
    } finally {
      await push.close();
    }
  });
});
