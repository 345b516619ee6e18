// Members and sockets for the SDK tests, made through the SDK itself.
import assert from "node:assert/strict";

import { FriendRequestDirection, KarlMaloneClient, type Message, type PushState } from "@karlmalone/client";

import { newPhone, waitFor } from "./server.js";

export const password = "correct horse battery";

/** A registered, signed-in member with an SDK client. */
export interface Member {
  id: bigint;
  phone: string;
  nickname: string;
  client: KarlMaloneClient;
}

/** Registers and signs in a member. */
export async function newMember(baseUrl: string, nickname: string, opts: { WebSocket?: typeof WebSocket } = {}): Promise<Member> {
  const client = new KarlMaloneClient({ baseUrl, WebSocket: opts.WebSocket ?? globalThis.WebSocket });
  const phone = newPhone();
  await client.members.register({ phone, password, nickname });
  const res = await client.login(phone, password, `test ${nickname}`);
  return { id: res.member!.id, phone, nickname, client };
}

/** Makes a and b contacts; returns their conversation id. */
export async function befriend(a: Member, b: Member): Promise<bigint> {
  await a.client.contacts.sendFriendRequest({ memberId: b.id, note: "hi" });
  const { requests } = await b.client.contacts.listFriendRequests({ direction: FriendRequestDirection.INCOMING });
  const req = requests.find((r) => r.fromMemberId === a.id);
  assert.ok(req, "friend request arrived");
  const res = await b.client.contacts.respondFriendRequest({ requestId: req.id, accept: true });
  return res.contact!.conversationId;
}

/** Sends n texts from a to b, one after another; returns the stored messages. */
export async function sendTexts(from: Member, to: Member, n: number, prefix: string): Promise<Message[]> {
  const out: Message[] = [];
  for (let i = 0; i < n; i++) {
    out.push(await sendText(from, to, `${prefix} ${i}`));
  }
  return out;
}

/** Sends one text, retrying (same client_msg_id: idempotent) while the server is unreachable. */
export async function sendText(from: Member, to: Member, text: string): Promise<Message> {
  const clientMsgId = `${text}#${Math.random().toString(36).slice(2)}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await from.client.chat.sendMessage({
        target: { case: "peerId", value: to.id },
        clientMsgId,
        content: { case: "text", value: text },
      });
      return res.message!;
    } catch (err) {
      if (Date.now() > deadline) {
        throw err;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** What a push session handed over, for assertions. */
export class Recorder {
  readonly messages: Message[] = [];
  readonly states: PushState[] = [];

  onMessage = (m: Message): void => {
    this.messages.push(m);
  };
  onState = (s: PushState): void => {
    if (process.env["KM_DEBUG"]) console.log("state", JSON.stringify(s));
    this.states.push(s);
  };

  /** The seqs delivered in one conversation, in delivery order. */
  seqs(conversationId: bigint): bigint[] {
    return this.messages.filter((m) => m.conversationId === conversationId).map((m) => m.seq);
  }

  /** Waits until a conversation's messages 1..n have arrived. */
  async waitSeq(conversationId: bigint, n: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(`seq ${n} in conversation ${conversationId}`, () => this.seqs(conversationId).length >= n, timeoutMs);
  }

  async waitState(status: PushState["status"], timeoutMs = 30_000, since = 0): Promise<PushState> {
    await waitFor(`push state ${status}`, () => this.states.slice(since).some((s) => s.status === status), timeoutMs);
    return this.states.slice(since).find((s) => s.status === status)!;
  }

  /** Asserts every seq 1..n exactly once, in order. */
  assertExactlyOnce(conversationId: bigint, n: number): void {
    const want = Array.from({ length: n }, (_, i) => BigInt(i + 1));
    assert.deepEqual(this.seqs(conversationId), want, "every message exactly once, in seq order");
  }
}

/**
 * A WebSocket constructor whose sockets a test can break: drop chosen frames,
 * close every open socket, or refuse new connections (as a network that is
 * down would).
 */
export class Sockets {
  readonly open = new Set<WebSocket>();
  blocked = false;
  dropFrame: ((data: unknown) => boolean) | undefined;
  opened = 0;
  /** The subprotocol the server chose, per socket opened. */
  readonly protocols: string[] = [];

  readonly WebSocket: typeof WebSocket;

  constructor() {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const sockets = this;
    const Base = globalThis.WebSocket;
    class TestWebSocket extends Base {
      constructor(url: string | URL, protocols?: string | string[]) {
        // A blocked network: nothing listens on port 1, so the connection fails as a dead network's would.
        super(sockets.blocked ? "ws://127.0.0.1:1/v1/push" : url, protocols);
        sockets.opened++;
        this.addEventListener("open", () => {
          sockets.open.add(this);
          sockets.protocols.push(this.protocol);
        });
        this.addEventListener("close", () => sockets.open.delete(this));
      }
      override set onmessage(fn: ((ev: MessageEvent) => void) | null) {
        super.onmessage = fn && ((ev: MessageEvent) => {
          if (!sockets.dropFrame?.(ev.data)) {
            fn.call(this, ev);
          }
        });
      }
      override get onmessage(): ((ev: MessageEvent) => void) | null {
        return super.onmessage;
      }
    }
    this.WebSocket = TestWebSocket as typeof WebSocket;
  }

  /** Hands every open socket a frame as if the server had sent it. */
  inject(data: ArrayBuffer | string): void {
    for (const ws of this.open) {
      ws.dispatchEvent(new MessageEvent("message", { data }));
    }
  }

  /** Closes every open socket from the client side, as a dropped connection. */
  closeAll(): void {
    for (const ws of this.open) {
      ws.close(4999, "closed by the test");
    }
  }
}
