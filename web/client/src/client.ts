// The RPC side of the SDK: one typed client per service over connect-web,
// sharing one transport that adds the bearer token, plus the plain-HTTP
// attachment routes.
import { type Client, type Interceptor, type Transport, ConnectError, Code, createClient } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import { ChatService } from "../../../gen/es/karlmalone/v1/chat_pb.js";
import { ContactService } from "../../../gen/es/karlmalone/v1/contact_pb.js";
import { GroupService } from "../../../gen/es/karlmalone/v1/group_pb.js";
import { type LoginResponse, MemberService } from "../../../gen/es/karlmalone/v1/member_pb.js";
import { PushSession, type PushOptions } from "./push.js";

/** The options of {@link KarlMaloneClient}. */
export interface ClientOptions {
  /**
   * The server's base URL, like "https://chat.example.com". Default: the
   * page's origin (`location.origin`).
   */
  baseUrl?: string;
  /** "connect" (the default) or "grpc-web". */
  protocol?: "connect" | "grpc-web";
  /**
   * "binary" protobuf (the default: smaller and faster) or "json" (readable in
   * the browser's network panel). Applies to RPCs; the push socket has its own
   * option.
   */
  format?: "binary" | "json";
  /** An access token from an earlier Login, kept by the app. */
  token?: string;
  /** Called once whenever a call fails for want of a valid token: sign in again. */
  onUnauthenticated?: (err: ConnectError) => void;
  /** More interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
  /** A fetch implementation; default: globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
  /** A WebSocket constructor for push sessions; default: globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
}

/** What the SDK needs of a WebSocket constructor (the browser's, undici's, ws'). */
export type WebSocketConstructor = new (url: string, protocols?: string[]) => WebSocket;

/** An uploaded attachment, as POST /v1/attachments answers. */
export interface UploadedAttachment {
  /** Send it in ChatService.SendMessage as `attachment.id`. */
  id: bigint;
  size: number;
  contentType: string;
  sha256: string;
}

/**
 * KarlMaloneClient holds the server address and the access token, and offers
 * one typed method per RPC through its four service clients:
 *
 * ```ts
 * const km = new KarlMaloneClient({ baseUrl: "https://chat.example.com" });
 * await km.login("+14155550100", "correct horse");
 * const { conversations } = await km.chat.listConversations({});
 * ```
 *
 * Errors are ConnectErrors (see errors.ts for which to retry).
 */
export class KarlMaloneClient {
  readonly baseUrl: string;
  readonly members: Client<typeof MemberService>;
  readonly contacts: Client<typeof ContactService>;
  readonly groups: Client<typeof GroupService>;
  readonly chat: Client<typeof ChatService>;
  readonly transport: Transport;

  #token: string | undefined;
  readonly #fetch: typeof globalThis.fetch;
  readonly #ws: WebSocketConstructor | undefined;
  readonly #onUnauthenticated: ((err: ConnectError) => void) | undefined;
  // Signed download URLs per attachment id, reused until halfway to their
  // expiry (see attachmentUrl).
  readonly #signedUrls = new Map<string, { url: Promise<string>; renewAt: number }>();

  constructor(opts: ClientOptions = {}) {
    const base = opts.baseUrl ?? globalThis.location?.origin;
    if (!base) {
      throw new Error("KarlMaloneClient: baseUrl is required outside a browser page");
    }
    this.baseUrl = base.replace(/\/+$/, "");
    this.#token = opts.token;
    this.#fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.#ws = opts.WebSocket;
    this.#onUnauthenticated = opts.onUnauthenticated;

    const auth: Interceptor = (next) => async (req) => {
      if (this.#token !== undefined && !req.header.has("Authorization")) {
        req.header.set("Authorization", `Bearer ${this.#token}`);
      }
      try {
        return await next(req);
      } catch (err) {
        const ce = ConnectError.from(err);
        // A wrong password at Login is Unauthenticated too; it is no lost session.
        if (ce.code === Code.Unauthenticated && req.method.name !== "Login") {
          this.#onUnauthenticated?.(ce);
        }
        throw ce;
      }
    };
    const transportOpts = {
      baseUrl: this.baseUrl,
      useBinaryFormat: (opts.format ?? "binary") === "binary",
      interceptors: [auth, ...(opts.interceptors ?? [])],
      fetch: this.#fetch,
    };
    this.transport =
      opts.protocol === "grpc-web" ? createGrpcWebTransport(transportOpts) : createConnectTransport(transportOpts);
    this.members = createClient(MemberService, this.transport);
    this.contacts = createClient(ContactService, this.transport);
    this.groups = createClient(GroupService, this.transport);
    this.chat = createClient(ChatService, this.transport);
  }

  /** The access token calls carry, if any. */
  get token(): string | undefined {
    return this.#token;
  }

  /** Sets (or, with undefined, forgets) the access token. */
  set token(t: string | undefined) {
    this.#token = t;
  }

  /** Signs in and keeps the token for every later call. */
  async login(phone: string, password: string, deviceName = ""): Promise<LoginResponse> {
    const res = await this.members.login({ phone, password, deviceName });
    this.#token = res.accessToken;
    return res;
  }

  /** Revokes this session on the server (open push sockets close with 4001) and forgets the token. */
  async logout(): Promise<void> {
    try {
      await this.members.logout({});
    } finally {
      this.#token = undefined;
      this.releaseAttachmentUrls();
    }
  }

  /**
   * Opens a push session (GET /v1/push): events as callbacks or an async
   * iterator, every message exactly once and in seq order per conversation.
   * It connects at once; call close() to end it.
   */
  push(opts: PushOptions = {}): PushSession {
    return new PushSession(this, { WebSocket: this.#ws, ...opts });
  }

  /** Uploads a file (POST /v1/attachments) and returns its id. */
  async uploadAttachment(file: Blob, init: { signal?: AbortSignal } = {}): Promise<UploadedAttachment> {
    const res = await this.#http("/v1/attachments", {
      method: "POST",
      body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" },
      signal: init.signal ?? null,
    });
    const j = (await res.json()) as { id: string; size: number; contentType: string; sha256: string };
    return { id: BigInt(j.id), size: j.size, contentType: j.contentType, sha256: j.sha256 };
  }

  /** Downloads an attachment with the bearer token. */
  async fetchAttachment(id: bigint, init: { signal?: AbortSignal } = {}): Promise<Blob> {
    const res = await this.#http(`/v1/attachments/${id}`, { signal: init.signal ?? null });
    return res.blob();
  }

  /**
   * Downloads everything the server holds about the signed-in member
   * (GET /v1/export, a JSON document; docs/CHAT-FEATURES.md) with the bearer
   * token, for the app to save as a file.
   */
  async exportMyData(init: { signal?: AbortSignal } = {}): Promise<Blob> {
    const res = await this.#http("/v1/export", { signal: init.signal ?? null });
    return res.blob();
  }

  /**
   * A URL that shows the attachment in `<img src>`, `<a href>` and the like,
   * which cannot send a bearer header: a short-lived URL signed by the server
   * for this member (ChatService.GetAttachmentUrl), which needs no token.
   * Each is reused until halfway to its expiry, so a conversation costs one
   * call per attachment shown. Images and audio display inline; other files
   * download (the server sends Content-Disposition: attachment).
   */
  attachmentUrl(id: bigint): Promise<string> {
    const key = id.toString();
    const now = Date.now();
    const hit = this.#signedUrls.get(key);
    if (hit && now < hit.renewAt) {
      return hit.url;
    }
    const entry = { url: Promise.resolve(""), renewAt: Number.POSITIVE_INFINITY };
    entry.url = this.chat.getAttachmentUrl({ attachmentId: id }).then(
      (res) => {
        // Halfway by this device's clock; a clock far off only costs a call per use.
        const lifetime = Number(res.expiresAt?.seconds ?? 0n) * 1000 - now;
        entry.renewAt = now + lifetime / 2;
        return this.baseUrl + res.url;
      },
      (err: unknown) => {
        this.#signedUrls.delete(key); // a failure is not cached
        throw err;
      },
    );
    this.#signedUrls.set(key, entry);
    return entry.url;
  }

  /** Forgets the URLs attachmentUrl handed out (logout does it too). */
  releaseAttachmentUrls(): void {
    this.#signedUrls.clear();
  }

  /** The WebSocket URL of GET /v1/push. */
  pushUrl(): string {
    const u = new URL(this.baseUrl + "/v1/push");
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.toString();
  }

  /** @internal The WebSocket constructor push sessions use. */
  get webSocket(): WebSocketConstructor | undefined {
    return this.#ws;
  }

  // A plain HTTP call with the token; errors (JSON in the shape of Connect
  // errors) become ConnectErrors, so callers handle one kind.
  async #http(path: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.#token !== undefined) {
      headers.set("Authorization", `Bearer ${this.#token}`);
    }
    let res: Response;
    try {
      res = await this.#fetch(this.baseUrl + path, { ...init, headers });
    } catch (err) {
      throw new ConnectError(`network: ${String(err)}`, Code.Unavailable, undefined, undefined, err);
    }
    if (res.ok) {
      return res;
    }
    let code = httpStatusCode(res.status);
    let message = res.statusText;
    try {
      const j = (await res.json()) as { code?: string; message?: string };
      code = (j.code && codeFromString(j.code)) || code;
      message = j.message ?? message;
    } catch {
      // not JSON: keep the status
    }
    const ce = new ConnectError(message, code);
    if (code === Code.Unauthenticated) {
      this.#onUnauthenticated?.(ce);
    }
    throw ce;
  }
}

function httpStatusCode(status: number): Code {
  switch (status) {
    case 400:
      return Code.InvalidArgument;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.NotFound;
    case 413:
    case 429:
      return Code.ResourceExhausted;
    case 503:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}
