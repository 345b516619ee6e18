// The push session: one WebSocket on GET /v1/push, kept open across network
// trouble and server restarts, that hands the app every message exactly once
// and in seq order per conversation. Push is the fast path; history
// (ListMessages) is the truth: whatever the socket misses — while it was
// down, in a gap, or when the server dropped it as too slow (1008) — is read
// back by seq. docs/PUSH.md describes the protocol this implements.
import { Code, ConnectError } from "@connectrpc/connect";

import type { Conversation } from "../../../gen/es/karlmalone/v1/chat_pb.js";
import type { Message } from "../../../gen/es/karlmalone/v1/message_pb.js";
import type { Event } from "../../../gen/es/karlmalone/v1/push_pb.js";
import { type BackoffOptions, backoffDelay } from "./backoff.js";
import type { KarlMaloneClient, WebSocketConstructor } from "./client.js";
import { type FeatureEventHandlers, dispatchFeatureEvent } from "./events.js";
import { type CursorState, type CursorStore, MemoryCursorStore } from "./cursors.js";
import { BEARER_PREFIX, type FrameDecoder, type PushEncoding, decoderFor, subprotocolsFor } from "./frames.js";

/** WebSocket close codes the server sends (docs/PUSH.md). */
export const CloseCode = {
  /** The server is shutting down or restarting: reconnect after a backoff. */
  GoingAway: 1001,
  /** Too slow ("too slow: resync"), or the client sent data: reconnect and resync. */
  PolicyViolation: 1008,
  /**
   * The session ended: revoked (logout, password change, RevokeSession;
   * reason "session revoked") or expired (reason "session expired"). Sign in again.
   */
  SessionRevoked: 4001,
} as const;

/** Where a push session stands. */
export type PushState =
  | { status: "connecting"; attempt: number }
  /** Connected; reading back what was missed. Live events are already flowing. */
  | { status: "syncing" }
  /** Connected and caught up. */
  | { status: "online" }
  /**
   * Disconnected; the session retries by itself in retryInMs. reason
   * "network": the server could not be reached (or the socket broke);
   * "server": the server closed the socket (code and closeReason say why).
   */
  | { status: "offline"; reason: "network" | "server"; code: number; closeReason: string; retryInMs: number }
  /**
   * The token is no good: "revoked" (close 4001: logged out or revoked
   * elsewhere), "expired" (close 4001 "session expired": the token's
   * lifetime ran out while connected), "rejected" (the handshake was refused
   * and the API confirms the token is invalid or expired) or "missing". The
   * session has ended; sign in again and open a new one.
   */
  | { status: "unauthenticated"; reason: "revoked" | "expired" | "rejected" | "missing" }
  /** close() was called. */
  | { status: "closed" };

/** One item of a session's stream (see PushSession[Symbol.asyncIterator]). */
export type PushItem =
  /** A message, exactly once, in seq order within its conversation. */
  | { type: "message"; message: Message }
  /** Any other event: recall, read receipt, typing, contacts, groups, sessions. */
  | { type: "event"; event: Event }
  /** After each resync: every conversation of the member, by recent activity. */
  | { type: "conversations"; conversations: Conversation[] }
  | { type: "state"; state: PushState };

/**
 * The options of KarlMaloneClient.push. Besides onEvent (every event), the
 * feature events have typed callbacks (FeatureEventHandlers: onMessageEdited,
 * onReaction, onConversationSettings, onMembersAdded, onMemberDeleted,
 * onPresence); applyMessageEvent applies edits, reactions and recalls to the
 * messages an app holds.
 */
export interface PushOptions extends FeatureEventHandlers {
  /** "proto" (binary frames, the default) or "json" (text frames). */
  encoding?: PushEncoding;
  /**
   * Ask for batched frames (an EventBatch of every event waiting per
   * WebSocket message; the default): fewer writes and wake-ups on a busy
   * socket. false asks for one Event per message. Either way the app sees
   * the same events in the same order.
   */
  batched?: boolean;
  /** Where cursors are kept between runs (default: in memory). */
  store?: CursorStore;
  /**
   * Where a session with no saved cursors starts in the conversations that
   * already exist: "now" (the default: only what arrives from here on; the
   * app reads older history itself) or "unread" (also every message after
   * the member's read cursor). Conversations that appear later — a new
   * contact, a group joined — always start after the member's read cursor,
   * so nothing sent in them is skipped.
   */
  start?: "now" | "unread";
  /** Reconnect delays (default: 0.5 s doubling up to 30 s, with jitter). */
  backoff?: BackoffOptions;
  /**
   * How long a message that arrived ahead of its predecessor waits for it
   * before the gap is read from history (default 250 ms): pushes of one
   * conversation may overtake each other.
   */
  gapGraceMs?: number;
  /** ListMessages page size when reading back (default 200, the most the server gives). */
  pageSize?: number;
  onMessage?: (m: Message) => void;
  onEvent?: (e: Event) => void;
  onState?: (s: PushState) => void;
  onConversations?: (c: Conversation[]) => void;
  /** A WebSocket constructor (default: the client's, else globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor | undefined;
}

type Listeners = {
  message: (m: Message) => void;
  event: (e: Event) => void;
  state: (s: PushState) => void;
  conversations: (c: Conversation[]) => void;
};

// One conversation's delivery state.
interface Conv {
  cursor: bigint | undefined; // highest seq handed to the app; undefined until a baseline is known
  pending: Map<bigint, Message>; // arrived ahead of cursor+1
  filling: Promise<void> | undefined; // a read-back in progress
  gapTimer: ReturnType<typeof setTimeout> | undefined;
}

// How one socket ended.
interface SocketEnd {
  opened: boolean;
  synced: boolean; // the resync after opening completed
  code: number;
  reason: string;
  unauthenticated: boolean; // a call during resync was refused for the token
}

/**
 * A push session. Open it with KarlMaloneClient.push(); it connects at once
 * and keeps reconnecting until close() or until the token is refused.
 *
 * ```ts
 * const push = km.push({ onMessage: (m) => show(m) });
 * push.on("state", (s) => { if (s.status === "unauthenticated") signInAgain(); });
 * // or
 * for await (const item of push) { … }
 * ```
 */
export class PushSession implements AsyncIterable<PushItem> {
  readonly #client: KarlMaloneClient;
  readonly #opts: PushOptions;
  readonly #store: CursorStore;
  readonly #encoding: PushEncoding;
  readonly #convs = new Map<string, Conv>();
  readonly #listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    message: new Set(),
    event: new Set(),
    state: new Set(),
    conversations: new Set(),
  };
  readonly #iterators = new Set<ItemQueue>();
  readonly #featureHandlers = new Set<(e: Event) => void>();

  #state: PushState = { status: "connecting", attempt: 0 };
  #closed = false;
  #ws: WebSocket | undefined;
  #baselined = false; // cursors exist (loaded, or set by a first resync)
  #resyncAgain = false;
  #resyncing: Promise<void> | undefined;
  #saveTimer: ReturnType<typeof setTimeout> | undefined;
  #dirty = false;
  #wake: (() => void) | undefined;
  readonly #done: Promise<void>;

  constructor(client: KarlMaloneClient, opts: PushOptions) {
    this.#client = client;
    this.#opts = opts;
    this.#store = opts.store ?? new MemoryCursorStore();
    this.#encoding = opts.encoding ?? "proto";
    if (opts.onMessage) this.#listeners.message.add(opts.onMessage);
    if (opts.onEvent) this.#listeners.event.add(opts.onEvent);
    if (opts.onState) this.#listeners.state.add(opts.onState);
    if (opts.onConversations) this.#listeners.conversations.add(opts.onConversations);
    this.#featureHandlers.add((e) => dispatchFeatureEvent(opts, e));
    this.#done = this.#run().catch((err: unknown) => {
      console.error("karlmalone push session failed", err);
      this.#setState({ status: "closed" });
    });
  }

  /** Where the session stands now. */
  get state(): PushState {
    return this.#state;
  }

  /** Resolves once the session has ended (close(), or the token was refused). */
  get done(): Promise<void> {
    return this.#done;
  }

  /** The highest seq of a conversation handed to the app, if known. */
  cursor(conversationId: bigint): bigint | undefined {
    return this.#convs.get(conversationId.toString())?.cursor;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Listeners>(type: K, fn: Listeners[K]): () => void {
    this.#listeners[type].add(fn);
    return () => this.#listeners[type].delete(fn);
  }

  /**
   * Every item from now on, in order, until the session ends. Each iterator
   * buffers what its loop has not taken yet.
   */
  [Symbol.asyncIterator](): AsyncIterator<PushItem> {
    const q = new ItemQueue(() => this.#iterators.delete(q));
    if (this.#closed) {
      q.end();
    } else {
      this.#iterators.add(q);
    }
    return q;
  }

  /** Drops the current socket and connects again at once (a "retry now" button). */
  reconnect(): void {
    this.#wake?.();
    this.#ws?.close(1000, "reconnect");
  }

  /** Ends the session: closes the socket and saves the cursors. */
  async close(): Promise<void> {
    if (this.#closed) {
      return this.#done;
    }
    this.#closed = true;
    this.#wake?.();
    this.#ws?.close(1000, "closed by client");
    await this.#done;
  }

  // ---- connection loop ----

  async #run(): Promise<void> {
    const saved = await this.#store.load();
    if (saved) {
      for (const [id, seq] of Object.entries(saved.cursors)) {
        this.#conv(id).cursor = BigInt(seq);
      }
      this.#baselined = true;
    }
    const onOnline = () => this.#wake?.();
    globalThis.addEventListener?.("online", onOnline);
    try {
      let attempt = 0;
      while (!this.#closed) {
        const token = this.#client.token;
        if (token === undefined) {
          this.#finish({ status: "unauthenticated", reason: "missing" });
          return;
        }
        this.#setState({ status: "connecting", attempt });
        const end = await this.#connect(token);
        if (this.#closed) {
          break;
        }
        if (end.code === CloseCode.SessionRevoked) {
          this.#finish({ status: "unauthenticated", reason: end.reason === "session expired" ? "expired" : "revoked" });
          return;
        }
        let reason: "network" | "server" = end.opened ? "server" : "network";
        if (end.unauthenticated) {
          this.#finish({ status: "unauthenticated", reason: "rejected" });
          return;
        }
        if (!end.opened) {
          // A refused handshake (401) looks to a browser exactly like a
          // network failure: close code 1006, no status. Ask the API.
          const probe = await this.#probe();
          if (probe === "unauthenticated") {
            this.#finish({ status: "unauthenticated", reason: "rejected" });
            return;
          }
          reason = probe === "ok" ? "server" : "network";
        } else if (end.code === 1006 || end.code === 1005) {
          reason = "network";
        }
        if (end.synced) {
          attempt = 0; // it worked for a while: start the backoff over
        }
        const delay = backoffDelay(attempt++, this.#opts.backoff);
        this.#setState({ status: "offline", reason, code: end.code, closeReason: end.reason, retryInMs: delay });
        await this.#sleep(delay);
      }
    } finally {
      globalThis.removeEventListener?.("online", onOnline);
      for (const c of this.#convs.values()) {
        clearTimeout(c.gapTimer);
      }
      await this.#save();
    }
    this.#finish({ status: "closed" });
  }

  // #connect opens one socket and resolves when it has closed.
  #connect(token: string): Promise<SocketEnd> {
    const WS = this.#opts.WebSocket ?? this.#client.webSocket ?? globalThis.WebSocket;
    return new Promise<SocketEnd>((resolve) => {
      const end: SocketEnd = { opened: false, synced: false, code: 1006, reason: "", unauthenticated: false };
      let ws: WebSocket;
      try {
        ws = new WS(this.#client.pushUrl(), [...subprotocolsFor(this.#encoding, this.#opts.batched ?? true), BEARER_PREFIX + token]);
      } catch (err) {
        // A token that is no valid subprotocol token, or a bad URL.
        end.reason = String(err);
        resolve(end);
        return;
      }
      this.#ws = ws;
      ws.binaryType = "arraybuffer";
      let decode: FrameDecoder | undefined;
      ws.onopen = () => {
        end.opened = true;
        decode = decoderFor(ws.protocol, this.#encoding);
        this.#setState({ status: "syncing" });
        // Listen first, then read back: the server registers the socket
        // before its 101, so nothing published from here on is missed.
        this.#resync().then(
          () => {
            if (this.#ws === ws && ws.readyState === ws.OPEN) {
              end.synced = true;
              this.#setState({ status: "online" });
            }
          },
          (err: unknown) => {
            end.unauthenticated = ConnectError.from(err).code === Code.Unauthenticated;
            ws.close(1000, "resync failed"); // and try again, from the top
          },
        );
      };
      ws.onmessage = (ev: MessageEvent) => {
        if (!decode) {
          return;
        }
        let events: Event[];
        try {
          events = decode(ev.data);
        } catch (err) {
          console.error("karlmalone push: undecodable frame", err);
          return;
        }
        for (const e of events) {
          this.#onEvent(e);
        }
      };
      let settled = false;
      const settle = (code: number, reason: string) => {
        if (this.#ws === ws) {
          this.#ws = undefined;
        }
        if (!settled) {
          settled = true;
          end.code = code;
          end.reason = reason;
          resolve(end);
        }
      };
      // Browsers follow an error with a close event (1006); Node's WebSocket
      // (undici) may not when the connection is refused, so a failure before
      // the open counts as the end.
      ws.onerror = () => {
        if (!end.opened) {
          settle(1006, "");
        }
      };
      ws.onclose = (ev: CloseEvent) => settle(ev.code, ev.reason);
    });
  }

  // #probe tells a refused handshake from an unreachable server.
  async #probe(): Promise<"ok" | "unauthenticated" | "unreachable"> {
    try {
      await this.#client.members.getMe({});
      return "ok";
    } catch (err) {
      return ConnectError.from(err).code === Code.Unauthenticated ? "unauthenticated" : "unreachable";
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }

  // ---- events and ordering ----

  #onEvent(e: Event): void {
    if (e.kind.case === "message") {
      this.#onPushedMessage(e.kind.value);
      return;
    }
    if (e.kind.case === "resync") {
      // Events may have been lost between the server's nodes: read back as
      // after a reconnect. The app sees the event too (say, to refresh lists).
      this.#resync().catch(() => {}); // a failure: the next reconnect resyncs
    }
    this.#emit({ type: "event", event: e });
  }

  #onPushedMessage(m: Message): void {
    const c = this.#conv(m.conversationId.toString());
    if (c.cursor !== undefined && m.seq <= c.cursor) {
      return; // already handed over (read back before it was pushed)
    }
    c.pending.set(m.seq, m);
    if (c.cursor === undefined) {
      if (!this.#baselined) {
        return; // the first resync sets the baseline and delivers it
      }
      if (m.seq === 1n) {
        c.cursor = 0n; // a brand-new conversation
      } else {
        // A conversation this session has not seen (a group joined, a contact
        // re-added): learn where the member's read cursor stands.
        this.#resync().catch(() => {}); // retried at the next reconnect
        return;
      }
    }
    this.#drain(c);
    this.#scheduleGap(m.conversationId, c);
  }

  #drain(c: Conv): void {
    if (c.cursor === undefined) {
      return;
    }
    for (const seq of c.pending.keys()) {
      if (seq <= c.cursor) {
        c.pending.delete(seq);
      }
    }
    for (;;) {
      const next = c.pending.get(c.cursor + 1n);
      if (!next) {
        return;
      }
      c.pending.delete(next.seq);
      this.#deliver(c, next);
    }
  }

  #deliver(c: Conv, m: Message): void {
    c.cursor = m.seq;
    this.#dirty = true;
    this.#scheduleSave();
    this.#emit({ type: "message", message: m });
  }

  // #scheduleGap reads a gap back unless the missing pushes arrive within the grace.
  #scheduleGap(convId: bigint, c: Conv): void {
    if (c.pending.size === 0 || c.gapTimer !== undefined || c.filling) {
      return;
    }
    c.gapTimer = setTimeout(() => {
      c.gapTimer = undefined;
      if (c.pending.size > 0 && !this.#closed) {
        this.#fill(convId, c).catch(() => {
          // The socket is probably down too; the resync after reconnecting reads it back.
        });
      }
    }, this.#opts.gapGraceMs ?? 250);
  }

  // #fill reads a conversation's history after its cursor up to the newest
  // message, delivering in order; one read-back per conversation at a time.
  async #fill(convId: bigint, c: Conv): Promise<void> {
    while (c.filling) {
      await c.filling.catch(() => {});
    }
    const run = (async () => {
      for (;;) {
        if (c.cursor === undefined || this.#closed) {
          return;
        }
        const res = await this.#client.chat.listMessages({
          conversationId: convId,
          position: { case: "afterSeq", value: c.cursor },
          limit: this.#opts.pageSize ?? 200,
        });
        for (const m of res.messages) {
          if (m.seq === c.cursor + 1n) {
            c.pending.delete(m.seq);
            this.#deliver(c, m);
          }
        }
        this.#drain(c);
        if (!res.hasMore || res.messages.length === 0) {
          return;
        }
      }
    })();
    c.filling = run;
    try {
      await run;
    } finally {
      c.filling = undefined;
    }
    this.#scheduleGap(convId, c); // pushes that came in meanwhile, still ahead
  }

  // #resync lists every conversation, sets a baseline for those without one,
  // and reads back every one whose newest seq is past its cursor. A full list
  // rather than "changed since": pushes between nodes are at-most-once, so a
  // conversation may lag without anything changing after it.
  // One pass at a time: asked for during a pass, it runs once more after it.
  #resync(): Promise<void> {
    if (this.#resyncing) {
      this.#resyncAgain = true;
      return this.#resyncing;
    }
    const run = (async () => {
      do {
        this.#resyncAgain = false;
        const all: Conversation[] = [];
        let pageToken = "";
        do {
          const res = await this.#client.chat.listConversations({ pageSize: 100, pageToken });
          all.push(...res.conversations);
          pageToken = res.nextPageToken;
        } while (pageToken !== "");

        const first = !this.#baselined;
        const start = this.#opts.start ?? "now";
        const present = new Set<string>();
        const behind: [bigint, Conv][] = [];
        for (const conv of all) {
          const key = conv.id.toString();
          present.add(key);
          const c = this.#conv(key);
          if (c.cursor === undefined) {
            let base = first && start === "now" ? conv.lastSeq : conv.readSeq;
            for (const seq of c.pending.keys()) {
              if (seq - 1n < base) {
                base = seq - 1n; // pushed to this session: never skipped
              }
            }
            c.cursor = base;
            this.#dirty = true;
          }
          this.#drain(c);
          if (conv.lastSeq > c.cursor!) {
            behind.push([conv.id, c]);
          }
        }
        // Conversations the member left are no longer listed: forget them.
        for (const [key, c] of this.#convs) {
          if (!present.has(key) && c.pending.size === 0 && !c.filling) {
            this.#convs.delete(key);
            this.#dirty = true;
          }
        }
        this.#baselined = true;
        // A few read-backs at a time.
        const queue = [...behind];
        const worker = async () => {
          for (let next = queue.shift(); next; next = queue.shift()) {
            await this.#fill(next[0], next[1]);
          }
        };
        await Promise.all([worker(), worker(), worker(), worker()]);
        await this.#save();
        this.#emit({ type: "conversations", conversations: all });
      } while (this.#resyncAgain && !this.#closed);
    })();
    this.#resyncing = run;
    return run.finally(() => {
      if (this.#resyncing === run) {
        this.#resyncing = undefined;
      }
    });
  }

  #conv(key: string): Conv {
    let c = this.#convs.get(key);
    if (!c) {
      c = { cursor: undefined, pending: new Map(), filling: undefined, gapTimer: undefined };
      this.#convs.set(key, c);
    }
    return c;
  }

  // ---- persistence ----

  #scheduleSave(): void {
    if (this.#saveTimer === undefined) {
      this.#saveTimer = setTimeout(() => {
        this.#saveTimer = undefined;
        void this.#save();
      }, 500);
    }
  }

  async #save(): Promise<void> {
    clearTimeout(this.#saveTimer);
    this.#saveTimer = undefined;
    if (!this.#dirty) {
      return;
    }
    this.#dirty = false;
    const state: CursorState = { cursors: {} };
    for (const [key, c] of this.#convs) {
      if (c.cursor !== undefined) {
        state.cursors[key] = c.cursor.toString();
      }
    }
    try {
      await this.#store.save(state);
    } catch (err) {
      this.#dirty = true;
      console.error("karlmalone push: save cursors", err);
    }
  }

  // ---- dispatch ----

  #setState(s: PushState): void {
    this.#state = s;
    this.#emit({ type: "state", state: s });
  }

  #finish(s: PushState): void {
    this.#closed = true;
    if (this.#state.status !== "closed" && this.#state.status !== "unauthenticated") {
      this.#setState(s);
    }
    for (const q of this.#iterators) {
      q.end();
    }
    this.#iterators.clear();
  }

  #emit(item: PushItem): void {
    for (const q of this.#iterators) {
      q.push(item);
    }
    const call = <A>(fns: Set<(a: A) => void>, a: A) => {
      for (const fn of fns) {
        try {
          fn(a);
        } catch (err) {
          console.error("karlmalone push: listener failed", err); // an app bug must not stop delivery
        }
      }
    };
    switch (item.type) {
      case "message":
        return call(this.#listeners.message, item.message);
      case "event":
        call(this.#listeners.event, item.event);
        // The typed callbacks of PushOptions (events.ts), after the generic ones.
        return call(this.#featureHandlers, item.event);
      case "conversations":
        return call(this.#listeners.conversations, item.conversations);
      case "state":
        return call(this.#listeners.state, item.state);
    }
  }
}

// ItemQueue feeds one async iterator.
class ItemQueue implements AsyncIterator<PushItem> {
  #items: PushItem[] = [];
  #waiting: ((r: IteratorResult<PushItem>) => void) | undefined;
  #ended = false;
  readonly #onReturn: () => void;

  constructor(onReturn: () => void) {
    this.#onReturn = onReturn;
  }

  push(item: PushItem): void {
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = undefined;
      w({ value: item, done: false });
    } else {
      this.#items.push(item);
    }
  }

  end(): void {
    this.#ended = true;
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = undefined;
      w({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<PushItem>> {
    const item = this.#items.shift();
    if (item) {
      return Promise.resolve({ value: item, done: false });
    }
    if (this.#ended) {
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve) => (this.#waiting = resolve));
  }

  return(): Promise<IteratorResult<PushItem>> {
    this.#items = [];
    this.end();
    this.#onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }
}
