// The chat app served at /: built on @karlmalone/client alone. Sign up and in,
// contacts and friend requests, groups, and conversations with live messages,
// typing, read state, recall and attachments; replies, edits, reactions,
// mentions, conversation settings, message search, presence and the profile
// (hide presence, export, delete account) of docs/CHAT-FEATURES.md.
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  AttachmentKind,
  type Contact,
  type Conversation,
  ConversationKind,
  type Event,
  type FriendRequest,
  FriendRequestDirection,
  type Group,
  type GroupMember,
  GroupRole,
  KarlMaloneClient,
  type Member,
  type Message,
  type PushSession,
  type PushState,
  applyMessageEvent,
  describeError,
} from "@karlmalone/client";

import { byId, h, render } from "./dom.js";

const TOKEN_KEY = "karlmalone.token";
const HISTORY_PAGE = 50;

// ---- state ----

interface ConvView {
  conv: Conversation;
  messages: Message[]; // ascending by seq, loaded on open
  loaded: boolean;
  hasOlder: boolean;
  peerReadSeq: bigint; // direct: the other member's read cursor
}

const km = new KarlMaloneClient({ onUnauthenticated: () => signedOut("Your session ended. Please sign in again.") });
let me: Member | undefined;
let push: PushSession | undefined;
let pushState: PushState = { status: "connecting", attempt: 0 };
const convs = new Map<string, ConvView>();
const names = new Map<string, string>(); // member id → remark or nickname
const contacts = new Map<string, Contact>();
let incoming: FriendRequest[] = [];
let outgoing: FriendRequest[] = [];
let groups: Group[] = [];
let openConv: string | undefined;
let tab: "chats" | "contacts" | "groups" | "profile" = "chats";
const typing = new Map<string, Map<string, number>>(); // conv → member → until (ms)
let showMembers = false;
let groupMembers: GroupMember[] = [];
let pendingFile: File | undefined;
let search = { query: "", members: [] as Member[], notice: "", done: false };
let lastTypingSent = 0;
let replyTo: Message | undefined; // the message the composer replies to
let reactingSeq: bigint | undefined; // the message whose emoji picker is open
let forwarding: Message | undefined; // the message whose forward picker is open
let forwardedTo = ""; // the last forward's target, shown until the next action
let muteMenu = false; // the Mute menu (1 hour, 8 hours, forever) is open
let showArchived = false;
let msgSearch = { query: "", results: [] as Message[], done: false };
const presence = new Map<string, boolean>(); // member id → online
// The fixed reaction set: small on purpose (the server takes any single emoji).
const REACTIONS = ["👍", "❤️", "😂", "😮", "😢"];

const root = byId("root");

// ---- errors ----

function flash(err: unknown, where = "flash"): void {
  const el = document.getElementById(where);
  if (el) {
    el.textContent = typeof err === "string" ? err : describeError(err);
    el.hidden = false;
  }
}

function clearFlash(where = "flash"): void {
  const el = document.getElementById(where);
  if (el) {
    el.hidden = true;
  }
}

// Runs an action from a button, showing its error instead of losing it.
function act(fn: () => Promise<unknown>, where = "flash"): () => void {
  return () => {
    clearFlash(where);
    fn().catch((err: unknown) => flash(err, where));
  };
}

// ---- sign in / sign up ----

function showAuth(notice = ""): void {
  let mode: "in" | "up" = "in";
  const phone = h("input", { id: "auth-phone", type: "tel", placeholder: "+14155550100", autocomplete: "tel", required: true });
  const password = h("input", { id: "auth-password", type: "password", placeholder: "8 characters or more", autocomplete: "current-password", required: true });
  const nickname = h("input", { id: "auth-nickname", placeholder: "How others see you", autocomplete: "nickname" });
  const nickRow = h("label", { hidden: true }, "Nickname", nickname);
  const submit = h("button", { id: "auth-submit", type: "submit" }, "Sign in");
  const toggle = h("button", { id: "auth-toggle", type: "button", class: "link" }, "New here? Create an account");
  toggle.addEventListener("click", () => {
    mode = mode === "in" ? "up" : "in";
    nickRow.hidden = mode === "in";
    submit.textContent = mode === "in" ? "Sign in" : "Create account";
    toggle.textContent = mode === "in" ? "New here? Create an account" : "Have an account? Sign in";
  });
  const form = h(
    "form",
    { class: "auth", id: "auth-form" },
    h("h1", {}, "KarlMalone"),
    h("p", { class: "notice", id: "auth-notice", hidden: !notice }, notice),
    h("label", {}, "Phone", phone),
    h("label", {}, "Password", password),
    nickRow,
    h("p", { class: "error", id: "auth-error", hidden: true }),
    submit,
    toggle,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearFlash("auth-error");
    submit.disabled = true;
    (async () => {
      if (mode === "up") {
        await km.members.register({ phone: phone.value.trim(), password: password.value, nickname: nickname.value.trim() });
      }
      const res = await km.login(phone.value.trim(), password.value, navigator.userAgent.slice(0, 64));
      sessionStorage.setItem(TOKEN_KEY, res.accessToken);
      me = res.member;
      await start();
    })()
      .catch((err: unknown) => flash(err, "auth-error"))
      .finally(() => (submit.disabled = false));
  });
  render(root, form);
  phone.focus();
  markReady();
}

// The first screen is drawn: the browser-test's first-render measure.
function markReady(): void {
  if (performance.getEntriesByName("app-ready").length === 0) {
    performance.mark("app-ready");
  }
}

function signedOut(notice: string): void {
  void push?.close();
  push = undefined;
  km.token = undefined;
  km.releaseAttachmentUrls();
  sessionStorage.removeItem(TOKEN_KEY);
  me = undefined;
  convs.clear();
  contacts.clear();
  openConv = undefined;
  showAuth(notice);
}

// ---- start ----

async function start(): Promise<void> {
  if (!me) {
    me = (await km.members.getMe({})).member;
  }
  names.set(me!.id.toString(), me!.nickname);
  renderShell();
  await Promise.all([loadConversations(), loadContacts(), loadRequests(), loadGroups()]);
  void loadPresence().catch(() => {}); // dots are a nicety: no error shown; events still set them
  push = km.push({
    onMessage,
    onEvent,
    onPresence: (p) => {
      presence.set(p.memberId.toString(), p.online);
      renderSidebar();
    },
    onConversationSettings: (st) => {
      const v = convs.get(st.conversationId.toString());
      if (!v) return;
      const cleared = st.clearedSeq > (v.conv.settings?.clearedSeq ?? 0n);
      v.conv.settings = st;
      if (cleared) {
        // Cleared on this or another device: history and counts changed.
        void loadConversations();
        if (openConv === v.conv.id.toString()) void reloadOpen();
      }
      renderSidebar();
      if (openConv === v.conv.id.toString()) renderHeader();
    },
    onState: (s) => {
      pushState = s;
      renderStatus();
      if (s.status === "unauthenticated") {
        signedOut(s.reason === "revoked" ? "You were signed out (this session was ended)." : "Your session expired. Please sign in again.");
      }
    },
    onConversations: (list) => {
      mergeConversations(list);
      // After a reconnect, an open conversation may have missed receipts or recalls.
      if (openConv) {
        void reloadOpen();
      }
    },
  });
  window.addEventListener("focus", markOpenRead);
  setInterval(expireTyping, 1000);
}

async function loadConversations(): Promise<void> {
  const all: Conversation[] = [];
  let pageToken = "";
  do {
    const res = await km.chat.listConversations({ pageSize: 100, pageToken });
    all.push(...res.conversations);
    pageToken = res.nextPageToken;
  } while (pageToken);
  mergeConversations(all);
}

// mergeConversations takes the member's full conversation list: it updates
// the ones shown, adds new ones, and drops those no longer listed (a group
// left or dissolved, a contact removed), closing it if it was open.
function mergeConversations(list: Conversation[]): void {
  const listed = new Set(list.map((c) => c.id.toString()));
  for (const key of convs.keys()) {
    if (!listed.has(key)) {
      convs.delete(key);
      if (openConv === key) {
        openConv = undefined;
        showMembers = false;
      }
    }
  }
  for (const c of list) {
    const key = c.id.toString();
    if (c.with.case === "peer") {
      names.set(c.with.value.id.toString(), contactName(c.with.value));
    }
    const v = convs.get(key);
    if (v) {
      v.conv = c;
    } else {
      convs.set(key, { conv: c, messages: [], loaded: false, hasOlder: false, peerReadSeq: 0n });
    }
  }
  renderSidebar();
  renderConversation();
}

async function loadContacts(): Promise<void> {
  contacts.clear();
  let pageToken = "";
  do {
    const res = await km.contacts.listContacts({ pageSize: 100, pageToken });
    for (const c of res.contacts) {
      contacts.set(c.member!.id.toString(), c);
      names.set(c.member!.id.toString(), contactName(c.member!));
    }
    pageToken = res.nextPageToken;
  } while (pageToken);
  renderSidebar();
}

async function loadRequests(): Promise<void> {
  const [inc, out] = await Promise.all([
    km.contacts.listFriendRequests({ direction: FriendRequestDirection.INCOMING, pageSize: 50 }),
    km.contacts.listFriendRequests({ direction: FriendRequestDirection.OUTGOING, pageSize: 50 }),
  ]);
  incoming = inc.requests;
  outgoing = out.requests;
  renderSidebar();
}

async function loadGroups(): Promise<void> {
  groups = (await km.groups.listMyGroups({ pageSize: 100 })).groups;
  renderSidebar();
}

// Online dots for contacts: asked once at start (200 ids a call), then kept
// by presence events.
async function loadPresence(): Promise<void> {
  const ids = [...contacts.values()].map((c) => c.member!.id);
  for (let i = 0; i < ids.length; i += 200) {
    const res = await km.members.getMemberPresence({ memberIds: ids.slice(i, i + 200) });
    for (const p of res.presences) presence.set(p.memberId.toString(), p.online);
  }
  renderSidebar();
}

function presenceDot(id: bigint): HTMLElement | false {
  const on = presence.get(id.toString());
  if (on === undefined) return false; // hidden, or not a contact
  return h("span", { class: on ? "dot on" : "dot", "data-presence": on ? "online" : "offline", title: on ? "online" : "offline" });
}

function contactName(m: Member): string {
  const remark = contacts.get(m.id.toString())?.remark;
  return remark || m.nickname;
}

function nameOf(id: bigint): string {
  const key = id.toString();
  const n = names.get(key);
  if (n !== undefined) {
    return n;
  }
  names.set(key, "…");
  km.members.getMember({ memberId: id }).then(
    (r) => {
      names.set(key, r.member!.nickname);
      renderConversation();
      renderSidebar();
    },
    () => names.set(key, `member ${key}`),
  );
  return "…";
}

function convTitle(c: Conversation): string {
  if (c.with.case === "peer") {
    return contactName(c.with.value);
  }
  if (c.with.case === "group") {
    return c.with.value.name;
  }
  return `conversation ${c.id}`;
}

// ---- push ----

function onMessage(m: Message): void {
  const key = m.conversationId.toString();
  const v = convs.get(key);
  if (!v) {
    // A conversation this page has not listed yet (a new contact or group).
    void loadConversations().then(() => onMessage(m));
    return;
  }
  if (m.seq > v.conv.lastSeq) {
    v.conv.lastSeq = m.seq;
    v.conv.lastMessage = m;
    v.conv.updatedAt = m.sentAt;
    if (m.senderId !== me?.id && m.seq > v.conv.readSeq) {
      v.conv.unreadCount++;
      if (m.mentionEveryone || m.mentions.some((id) => id === me?.id)) v.conv.mentionedMe = true;
    }
  }
  if (v.loaded && !v.messages.some((x) => x.seq === m.seq)) {
    v.messages.push(m);
    v.messages.sort((a, b) => (a.seq < b.seq ? -1 : 1));
  }
  typing.get(key)?.delete(m.senderId.toString());
  renderSidebar();
  if (openConv === key) {
    renderConversation();
    markOpenRead();
  }
}

function onEvent(e: Event): void {
  const k = e.kind;
  switch (k.case) {
    case "typing": {
      if (k.value.memberId === me?.id) return;
      const key = k.value.conversationId.toString();
      let t = typing.get(key);
      if (!t) typing.set(key, (t = new Map()));
      t.set(k.value.memberId.toString(), Date.now() + 4000);
      if (openConv === key) renderHeader();
      renderSidebar();
      return;
    }
    case "readReceipt": {
      const v = convs.get(k.value.conversationId.toString());
      if (!v) return;
      if (k.value.memberId === me?.id) {
        v.conv.readSeq = k.value.readSeq; // read on another device
        v.conv.unreadCount = v.conv.lastSeq > v.conv.readSeq ? v.conv.lastSeq - v.conv.readSeq : 0n;
        if (v.conv.readSeq >= v.conv.lastSeq) v.conv.mentionedMe = false;
      } else if (k.value.readSeq > v.peerReadSeq) {
        v.peerReadSeq = k.value.readSeq;
      }
      renderSidebar();
      if (openConv === v.conv.id.toString()) renderConversation();
      return;
    }
    case "messageEdited":
    case "reaction": {
      const v = convs.get(k.value.conversationId.toString());
      if (!v) return;
      applyMessageEvent(v.messages, e, me?.id);
      if (k.case === "messageEdited") {
        const last = v.conv.lastMessage;
        if (last?.seq === k.value.seq && last.content.case === "text") last.content.value = k.value.text;
        for (const x of v.messages) {
          if (x.replyTo?.seq === k.value.seq && !x.replyTo.unavailable) x.replyTo.text = k.value.text.slice(0, 100);
        }
        renderSidebar();
      }
      if (openConv === v.conv.id.toString()) renderConversation();
      return;
    }
    case "memberDeleted":
      void loadContacts().then(loadConversations);
      return;
    case "messageRecalled": {
      const v = convs.get(k.value.conversationId.toString());
      if (v) applyMessageEvent(v.messages, e, me?.id);
      for (const x of v?.messages ?? []) {
        if (x.replyTo?.seq === k.value.seq) {
          x.replyTo.unavailable = true;
          x.replyTo.text = "";
        }
      }
      if (v?.conv.lastMessage?.seq === k.value.seq) {
        v.conv.lastMessage.content = { case: undefined };
        v.conv.lastMessage.recalledAt = k.value.recalledAt;
      }
      renderSidebar();
      if (v && openConv === v.conv.id.toString()) renderConversation();
      return;
    }
    case "friendRequestReceived":
    case "friendRequestAnswered":
      void loadRequests();
      void loadContacts().then(loadConversations);
      return;
    case "contactRemoved":
      void loadContacts().then(loadConversations);
      return;
    case "groupCreated":
    case "groupUpdated":
    case "groupDissolved":
    case "memberJoined":
    case "membersAdded":
    case "memberLeft":
    case "memberRemoved":
    case "memberRoleChanged":
      void loadGroups().then(loadConversations);
      if (showMembers) void loadGroupMembers();
      return;
    default:
      return;
  }
}

function expireTyping(): void {
  const now = Date.now();
  let changed = false;
  for (const t of typing.values()) {
    for (const [id, until] of t) {
      if (until < now) {
        t.delete(id);
        changed = true;
      }
    }
  }
  if (changed) {
    renderHeader();
    renderSidebar();
  }
}

function typingNames(key: string): string[] {
  return [...(typing.get(key)?.keys() ?? [])].map((id) => nameOf(BigInt(id)));
}

// ---- layout ----

function renderShell(): void {
  render(
    root,
    h(
      "div",
      { class: "shell" },
      h(
        "aside",
        { class: "side" },
        h(
          "header",
          { class: "me" },
          h("strong", { id: "me-name" }, me?.nickname ?? ""),
          h("span", { id: "status", class: "status" }),
          h("button", { id: "sign-out", class: "link", onclick: act(async () => { await km.logout(); signedOut("Signed out."); }) }, "Sign out"),
        ),
        h("nav", { class: "tabs", id: "tabs" }),
        h("div", { id: "side-body", class: "side-body" }),
      ),
      h("section", { class: "main", id: "main" }),
    ),
    h("p", { id: "flash", class: "error flash", hidden: true, onclick: () => clearFlash() }),
  );
  renderStatus();
  renderSidebar();
  renderConversation();
  markReady();
}

function renderStatus(): void {
  const el = document.getElementById("status");
  if (!el) return;
  const s = pushState;
  el.dataset["state"] = s.status;
  switch (s.status) {
    case "online":
      render(el, "● online");
      break;
    case "connecting":
    case "syncing":
      render(el, "○ connecting…");
      break;
    case "offline":
      render(
        el,
        s.reason === "network" ? "○ offline" : "○ reconnecting",
        " ",
        h("button", { class: "link", onclick: () => push?.reconnect() }, "retry now"),
      );
      break;
    default:
      render(el, "");
  }
}

function renderSidebar(): void {
  const nav = document.getElementById("tabs");
  const body = document.getElementById("side-body");
  if (!nav || !body) return;
  const unread = [...convs.values()].reduce((n, v) => n + Number(v.conv.unreadCount), 0);
  const tabBtn = (t: typeof tab, label: string, badge: number) =>
    h(
      "button",
      { class: t === tab ? "tab on" : "tab", id: `tab-${t}`, onclick: () => { tab = t; renderSidebar(); } },
      label,
      badge > 0 && h("span", { class: "badge" }, badge),
    );
  render(nav, tabBtn("chats", "Chats", unread), tabBtn("contacts", "Contacts", incoming.filter(pendingReq).length), tabBtn("groups", "Groups", 0), tabBtn("profile", "Profile", 0));
  if (tab === "chats") render(body, messageSearch(), chatList());
  if (tab === "profile") render(body, profilePane());
  if (tab === "contacts") render(body, contactsPane());
  if (tab === "groups") render(body, groupsPane());
}

function pendingReq(r: FriendRequest): boolean {
  return r.status === 1; // FRIEND_REQUEST_STATUS_PENDING
}

// Pinned first (the latest pin on top), then by recent activity; archived
// ones only behind the "Archived" toggle.
function chatList(): HTMLElement {
  const all = [...convs.values()];
  const archived = all.filter((v) => v.conv.settings?.archived);
  const list = all
    .filter((v) => showArchived === Boolean(v.conv.settings?.archived))
    .sort((a, b) => time(b.conv.settings?.pinnedAt) - time(a.conv.settings?.pinnedAt) || time(b.conv.updatedAt) - time(a.conv.updatedAt));
  const toggle = (archived.length > 0 || showArchived) &&
    h("button", { class: "link", id: "archived-toggle", onclick: () => { showArchived = !showArchived; renderSidebar(); } }, showArchived ? "‹ Back to chats" : `Archived (${archived.length})`);
  if (list.length === 0) {
    return h("div", {}, h("p", { class: "empty" }, showArchived ? "Nothing archived." : "No conversations yet. Add a contact or create a group."), toggle);
  }
  return h(
    "div",
    {},
    h(
      "ul",
      { class: "convs", id: "conv-list" },
      list.map((v) => {
        const key = v.conv.id.toString();
        const who = typingNames(key);
        const st = v.conv.settings;
        return h(
          "li",
          { class: openConv === key ? "conv on" : "conv", "data-conv": key, onclick: () => void openConversation(key) },
          h(
            "span",
            { class: "head" },
            v.conv.with.case === "peer" && presenceDot(v.conv.with.value.id),
            h("span", { class: "title" }, convTitle(v.conv)),
            st?.pinnedAt && h("small", { class: "marker", "data-testid": "pinned" }, "pinned"),
            isMuted(st) && h("small", { class: "marker", "data-testid": "muted" }, muteLabel(st)),
          ),
          h(
            "span",
            {},
            v.conv.mentionedMe && h("span", { class: "badge mention", "data-testid": "mentioned", title: "you were mentioned" }, "@"),
            // A muted conversation still counts, in grey: mute only keeps it quiet.
            v.conv.unreadCount > 0n && h("span", { class: isMuted(st) ? "badge unread quiet" : "badge unread", "data-testid": "unread" }, String(v.conv.unreadCount)),
          ),
          h("span", { class: "preview" }, who.length ? `${who.join(", ")} typing…` : preview(v.conv.lastMessage)),
        );
      }),
    ),
    toggle,
  );
}

// The message search box above the chat list: SearchMessages over every
// conversation; a result opens its conversation.
function messageSearch(): HTMLElement {
  const q = h("input", { id: "msg-search", type: "search", placeholder: "Search messages", value: msgSearch.query });
  const form = h("form", { class: "search" }, q, h("button", { type: "submit", id: "msg-search-go" }, "Search"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(async () => {
      const query = q.value.trim();
      if (!query) {
        msgSearch = { query: "", results: [], done: false };
      } else {
        const res = await km.chat.searchMessages({ query, pageSize: 20 });
        msgSearch = { query, results: res.messages, done: true };
      }
      renderSidebar();
    })();
  });
  const titleOf = (id: bigint) => {
    const v = convs.get(id.toString());
    return v ? convTitle(v.conv) : `conversation ${id}`;
  };
  return h(
    "div",
    { class: "msg-search" },
    form,
    msgSearch.done &&
      h(
        "ul",
        { class: "search-results", id: "msg-search-results" },
        msgSearch.results.length === 0 && h("li", { class: "empty" }, "No messages found."),
        msgSearch.results.map((m) =>
          h(
            "li",
            { class: "row", "data-conv": m.conversationId.toString(), "data-seq": m.seq.toString(), onclick: () => void openConversation(m.conversationId.toString()) },
            h("strong", {}, titleOf(m.conversationId)),
            h("span", { class: "preview" }, `${nameOf(m.senderId)}: ${preview(m)}`),
          ),
        ),
        h("li", {}, h("button", { class: "link", onclick: () => { msgSearch = { query: "", results: [], done: false }; renderSidebar(); } }, "Clear search")),
      ),
  );
}

// ---- profile ----

function profilePane(): HTMLElement {
  const hide = h("input", { type: "checkbox", id: "hide-presence", checked: Boolean(me?.hidePresence) });
  hide.addEventListener("change", act(async () => {
    const res = await km.members.updateProfile({ hidePresence: hide.checked });
    me = res.member;
  }));
  const pw = h("input", { type: "password", id: "delete-password", placeholder: "Your password", autocomplete: "current-password" });
  return h(
    "div",
    { class: "profile", id: "profile" },
    h("h3", {}, me?.nickname ?? ""),
    h("label", { class: "row" }, hide, " Hide when I am online"),
    h("h3", {}, "My data"),
    h("button", { id: "export-data", onclick: act(exportData) }, "Export my data"),
    h("h3", {}, "Delete account"),
    h("p", { class: "muted" }, "Your profile, contacts and sessions are deleted; your messages stay for the others, without your name."),
    h("div", { class: "row" }, pw, h("button", { class: "danger", id: "delete-account", onclick: act(async () => {
      if (!pw.value) throw new Error("Enter your password to delete your account.");
      if (!confirm("Delete your account for good?")) return;
      await km.members.deleteAccount({ password: pw.value });
      signedOut("Your account was deleted.");
    }) }, "Delete my account")),
  );
}

// GET /v1/export needs the bearer token, so no plain link: fetch → blob → a
// download of an object URL.
async function exportData(): Promise<void> {
  const blob = await km.exportMyData();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: "karlmalone-export.json", hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function preview(m: Message | undefined): string {
  if (!m) return "";
  if (m.recalledAt) return "message recalled";
  if (m.content.case === "text") return m.content.value.slice(0, 60);
  if (m.content.case === "attachment") return m.content.value.kind === AttachmentKind.IMAGE ? "🖼 image" : `📎 ${m.content.value.caption || "file"}`;
  return "";
}

function time(ts: { seconds: bigint; nanos: number } | undefined): number {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0;
}

// ---- contacts ----

function contactsPane(): HTMLElement {
  const q = h("input", { id: "search-phone", type: "tel", placeholder: "Find by phone: +14155550100", value: search.query });
  const found = search.members;
  const results = h(
    "div",
    { id: "search-results" },
    search.notice && h("p", { class: "ok" }, search.notice),
    search.done && found.length === 0 && h("p", { class: "empty" }, "Nobody found."),
    found.map((m) =>
      h(
        "div",
        { class: "row" },
        h("span", {}, m.nickname),
        m.id === me?.id
          ? h("em", {}, "you")
          : contacts.has(m.id.toString())
            ? h("em", {}, "contact")
            : outgoing.some((r) => pendingReq(r) && r.toMemberId === m.id)
              ? h("em", {}, "asked")
              : h("button", { class: "add-friend", onclick: act(async () => {
                  await km.contacts.sendFriendRequest({ memberId: m.id, note: `Hi, it's ${me?.nickname}` });
                  search.notice = `Request sent to ${m.nickname}.`;
                  await loadRequests();
                }) }, "Add"),
      ),
    ),
  );
  const form = h("form", { class: "search" }, q, h("button", { type: "submit", id: "search-go" }, "Find"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(async () => {
      search.query = q.value.trim();
      const res = await km.members.searchMembers({ query: search.query, pageSize: 10 });
      search = { query: search.query, members: res.members, notice: "", done: true };
      renderSidebar();
    })();
  });
  const inc = incoming.filter(pendingReq);
  const out = outgoing.filter(pendingReq);
  return h(
    "div",
    {},
    form,
    results,
    inc.length > 0 && h("h3", {}, "Friend requests"),
    h(
      "ul",
      { class: "requests", id: "incoming" },
      inc.map((r) =>
        h(
          "li",
          { class: "row" },
          h("span", {}, r.other?.nickname ?? nameOf(r.fromMemberId), r.note && h("small", {}, ` “${r.note}”`)),
          h("button", { class: "accept", onclick: act(async () => {
            await km.contacts.respondFriendRequest({ requestId: r.id, accept: true });
            await Promise.all([loadRequests(), loadContacts()]);
            await loadConversations();
          }) }, "Accept"),
          h("button", { class: "link", onclick: act(async () => { await km.contacts.respondFriendRequest({ requestId: r.id, accept: false }); await loadRequests(); }) }, "Decline"),
        ),
      ),
    ),
    out.length > 0 && h("p", { class: "muted" }, `Waiting for: ${out.map((r) => r.other?.nickname ?? "").join(", ")}`),
    h("h3", {}, "Contacts"),
    contacts.size === 0 && h("p", { class: "empty" }, "No contacts yet."),
    h(
      "ul",
      { class: "contacts", id: "contacts" },
      [...contacts.values()].map((c) =>
        h(
          "li",
          { class: "row" },
          presenceDot(c.member!.id),
          h("span", { class: "title", onclick: () => void openConversation(c.conversationId.toString()) }, c.remark || c.member!.nickname, c.remark && h("small", {}, ` (${c.member!.nickname})`)),
          h("button", { class: "link", onclick: act(async () => {
            const remark = prompt(`Remark for ${c.member!.nickname}`, c.remark);
            if (remark === null) return;
            await km.contacts.setContactRemark({ memberId: c.member!.id, remark });
            await loadContacts();
            await loadConversations();
          }) }, "Remark"),
          h("button", { class: "link", onclick: act(async () => {
            if (!confirm(`Remove ${c.member!.nickname} from your contacts?`)) return;
            await km.contacts.removeContact({ memberId: c.member!.id });
            await loadContacts();
          }) }, "Remove"),
        ),
      ),
    ),
  );
}

// ---- groups ----

function groupsPane(): HTMLElement {
  const name = h("input", { id: "group-name", placeholder: "Group name" });
  const picks = [...contacts.values()].map((c) => ({ c, box: h("input", { type: "checkbox", value: c.member!.id.toString() }) }));
  const form = h(
    "form",
    { class: "new-group" },
    h("h3", {}, "New group"),
    name,
    h("div", { class: "picks" }, picks.map((p) => h("label", {}, p.box, " ", p.c.remark || p.c.member!.nickname))),
    h("button", { type: "submit", id: "group-create" }, "Create"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(async () => {
      const res = await km.groups.createGroup({ name: name.value.trim(), memberIds: picks.filter((p) => p.box.checked).map((p) => p.c.member!.id) });
      await Promise.all([loadGroups(), loadConversations()]);
      await openConversation(res.group!.conversationId.toString());
    })();
  });
  return h(
    "div",
    {},
    h("h3", {}, "My groups"),
    groups.length === 0 && h("p", { class: "empty" }, "No groups yet."),
    h("ul", { class: "groups" }, groups.map((g) => h("li", { class: "row", onclick: () => void openConversation(g.conversationId.toString()) }, h("span", { class: "title" }, g.name), h("small", {}, ` ${g.memberCount} members`)))),
    form,
  );
}

function openGroup(): Group | undefined {
  const v = openConv ? convs.get(openConv) : undefined;
  return v?.conv.with.case === "group" ? v.conv.with.value : undefined;
}

async function loadGroupMembers(): Promise<void> {
  const g = openGroup();
  if (!g) return;
  const out: GroupMember[] = [];
  let pageToken = "";
  do {
    const res = await km.groups.listGroupMembers({ groupId: g.id, pageSize: 100, pageToken });
    out.push(...res.members);
    pageToken = res.nextPageToken;
  } while (pageToken);
  groupMembers = out;
  for (const m of out) {
    if (m.member) names.set(m.member.id.toString(), contactName(m.member));
  }
  renderConversation();
}

function membersPanel(g: Group): HTMLElement {
  const mine = groupMembers.find((m) => m.member?.id === me?.id)?.role ?? GroupRole.MEMBER;
  const canManage = mine === GroupRole.OWNER || mine === GroupRole.ADMIN;
  const inGroup = new Set(groupMembers.map((m) => m.member?.id.toString()));
  const addable = [...contacts.values()].filter((c) => !inGroup.has(c.member!.id.toString()));
  const roleName = (r: GroupRole) => (r === GroupRole.OWNER ? "owner" : r === GroupRole.ADMIN ? "admin" : "member");
  return h(
    "div",
    { class: "members", id: "members-panel" },
    h("h3", {}, `${g.name}: ${groupMembers.length} members`),
    h(
      "ul",
      {},
      groupMembers.map((gm) => {
        const m = gm.member!;
        const self = m.id === me?.id;
        return h(
          "li",
          { class: "row" },
          h("span", {}, contactName(m), self && " (you)"),
          h("small", { class: "role" }, roleName(gm.role)),
          mine === GroupRole.OWNER && !self && gm.role !== GroupRole.OWNER &&
            h("button", { class: "link", onclick: act(async () => {
              await km.groups.setMemberRole({ groupId: g.id, memberId: m.id, role: gm.role === GroupRole.ADMIN ? GroupRole.MEMBER : GroupRole.ADMIN });
              await loadGroupMembers();
            }) }, gm.role === GroupRole.ADMIN ? "Make member" : "Make admin"),
          canManage && !self && gm.role !== GroupRole.OWNER &&
            h("button", { class: "link", onclick: act(async () => { await km.groups.removeGroupMember({ groupId: g.id, memberId: m.id }); await loadGroupMembers(); }) }, "Remove"),
        );
      }),
    ),
    canManage && addable.length > 0 &&
      h("div", { class: "row" }, "Add: ", addable.map((c) =>
        h("button", { class: "link", onclick: act(async () => { await km.groups.addGroupMembers({ groupId: g.id, memberIds: [c.member!.id] }); await loadGroupMembers(); }) }, c.remark || c.member!.nickname))),
    h(
      "div",
      { class: "row" },
      mine === GroupRole.OWNER
        ? h("button", { class: "danger", onclick: act(async () => {
            if (!confirm(`Dissolve ${g.name} for everyone?`)) return;
            await km.groups.dissolveGroup({ groupId: g.id });
            closeConversation();
            await Promise.all([loadGroups(), loadConversations()]);
          }) }, "Dissolve group")
        : h("button", { class: "danger", onclick: act(async () => {
            await km.groups.leaveGroup({ groupId: g.id });
            closeConversation();
            await Promise.all([loadGroups(), loadConversations()]);
          }) }, "Leave group"),
    ),
  );
}

// ---- a conversation ----

async function openConversation(key: string): Promise<void> {
  const v = convs.get(key);
  if (!v) {
    await loadConversations();
    if (!convs.has(key)) return;
    return openConversation(key);
  }
  openConv = key;
  showMembers = false;
  pendingFile = undefined;
  replyTo = undefined;
  reactingSeq = undefined;
  forwarding = undefined;
  forwardedTo = "";
  muteMenu = false;
  groupMembers = [];
  if (v.conv.with.case === "group") void loadGroupMembers().catch(() => {}); // for @mentions
  tab = "chats";
  renderSidebar();
  renderConversation();
  if (!v.loaded) {
    await loadHistory(v);
  }
  markOpenRead();
  byId<HTMLTextAreaElement>("composer-text").focus();
}

function closeConversation(): void {
  openConv = undefined;
  showMembers = false;
  renderConversation();
}

async function loadHistory(v: ConvView): Promise<void> {
  const res = await km.chat.listMessages({ conversationId: v.conv.id, limit: HISTORY_PAGE });
  v.messages = res.messages;
  v.hasOlder = res.hasMore;
  v.loaded = true;
  renderConversation(true);
}

async function reloadOpen(): Promise<void> {
  const v = openConv ? convs.get(openConv) : undefined;
  if (v?.loaded) {
    const res = await km.chat.listMessages({ conversationId: v.conv.id, limit: Math.max(HISTORY_PAGE, v.messages.length) });
    v.messages = res.messages;
    v.hasOlder = res.hasMore;
    renderConversation();
  }
}

async function loadOlder(v: ConvView): Promise<void> {
  const first = v.messages[0];
  if (!first) return;
  const list = document.getElementById("messages");
  const fromBottom = list ? list.scrollHeight - list.scrollTop : 0;
  const res = await km.chat.listMessages({ conversationId: v.conv.id, position: { case: "beforeSeq", value: first.seq }, limit: HISTORY_PAGE });
  v.messages = [...res.messages, ...v.messages];
  v.hasOlder = res.hasMore;
  renderConversation();
  if (list) list.scrollTop = list.scrollHeight - fromBottom; // keep the reader's place
}

function markOpenRead(): void {
  const v = openConv ? convs.get(openConv) : undefined;
  if (!v || document.hidden) return; // unseen is unread
  const last = v.conv.lastSeq;
  if (last > v.conv.readSeq) {
    v.conv.readSeq = last;
    v.conv.unreadCount = 0n;
    v.conv.mentionedMe = false;
    renderSidebar();
    km.chat.markRead({ conversationId: v.conv.id, seq: last }).catch((err: unknown) => flash(err));
  }
}

function renderHeader(): void {
  const el = document.getElementById("conv-header");
  const v = openConv ? convs.get(openConv) : undefined;
  if (!el || !v) return;
  const who = typingNames(openConv!);
  const g = openGroup();
  render(
    el,
    h("button", { class: "link back", onclick: closeConversation }, "‹"),
    h("strong", { id: "conv-title" }, convTitle(v.conv)),
    h("span", { class: "typing", id: "typing" }, who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : ""),
    g && h("button", { class: "link", id: "members-toggle", onclick: () => { showMembers = !showMembers; if (showMembers) void loadGroupMembers(); renderConversation(); } }, showMembers ? "Close members" : "Members"),
    settingsButtons(v),
  );
}

// Mute, pin, archive and clear: this member's own settings; the answer and
// the conversation_settings_changed event both set them.
function settingsButtons(v: ConvView): HTMLElement {
  const st = v.conv.settings;
  const id = v.conv.id;
  const apply = (res: { settings?: Conversation["settings"] }) => {
    v.conv.settings = res.settings;
    renderSidebar();
    renderHeader();
  };
  return h(
    "span",
    { class: "conv-settings" },
    ...muteControl(v, apply),
    h("button", { class: "link", id: "conv-pin", onclick: act(async () =>
      apply(await km.chat.updateConversationSettings({ conversationId: id, pinned: !st?.pinnedAt }))) }, st?.pinnedAt ? "Unpin" : "Pin"),
    h("button", { class: "link", id: "conv-archive", onclick: act(async () => {
      apply(await km.chat.updateConversationSettings({ conversationId: id, archived: !st?.archived }));
    }) }, st?.archived ? "Unarchive" : "Archive"),
    h("button", { class: "link", id: "conv-clear", onclick: act(async () => {
      if (!confirm("Clear this conversation's history for you? The others keep theirs.")) return;
      apply(await km.chat.clearConversationHistory({ conversationId: id, upToSeq: 0n }));
      await Promise.all([loadConversations(), reloadOpen()]);
    }) }, "Clear history"),
  );
}

type MuteChoice = "1h" | "8h" | "forever";
const MUTE_CHOICES: [MuteChoice, string][] = [["1h", "1 hour"], ["8h", "8 hours"], ["forever", "forever"]];

// Muted while forever, or while muted_until is ahead: checked against this
// clock at each render, so a mute that has run out stops showing without a
// round trip (the server's "muted" is as of its answer).
function isMuted(st: Conversation["settings"]): boolean {
  return Boolean(st && (st.mutedForever || (st.mutedUntil && time(st.mutedUntil) > Date.now())));
}

// "muted" (forever) or "muted until 14:05" (with the day when not today).
function muteLabel(st: Conversation["settings"]): string {
  if (!st?.mutedUntil || st.mutedForever) return "muted";
  const until = timestampDate(st.mutedUntil);
  const hm = until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return until.toDateString() === new Date().toDateString() ? `muted until ${hm}` : `muted until ${until.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" })} ${hm}`;
}

// Mute: a menu of 1 hour, 8 hours and forever; once muted, the label and Unmute.
function muteControl(v: ConvView, apply: (res: { settings?: Conversation["settings"] }) => void): (HTMLElement | false)[] {
  const id = v.conv.id;
  const st = v.conv.settings;
  if (isMuted(st)) {
    return [
      h("small", { class: "marker", id: "conv-mute-state" }, muteLabel(st)),
      h("button", { class: "link", id: "conv-mute", onclick: act(async () =>
        apply(await km.chat.updateConversationSettings({ conversationId: id, mute: { case: "unmute", value: true } }))) }, "Unmute"),
    ];
  }
  const choose = (c: MuteChoice) => act(async () => {
    muteMenu = false;
    const mute = c === "forever"
      ? { case: "muteForever" as const, value: true }
      : { case: "muteUntil" as const, value: timestampFromMs(Date.now() + (c === "1h" ? 1 : 8) * 3600_000) };
    apply(await km.chat.updateConversationSettings({ conversationId: id, mute }));
  });
  return [
    h("button", { class: "link", id: "conv-mute", onclick: () => { muteMenu = !muteMenu; renderHeader(); } }, "Mute"),
    muteMenu && h("span", { class: "menu", id: "mute-menu" }, MUTE_CHOICES.map(([c, label]) =>
      h("button", { class: "link", "data-mute": c, onclick: choose(c) }, label))),
  ];
}

function renderConversation(scrollToEnd = false): void {
  const main = document.getElementById("main");
  if (!main) return;
  const v = openConv ? convs.get(openConv) : undefined;
  if (!v) {
    main.dataset["conv"] = "";
    render(main, h("div", { class: "placeholder" }, h("p", {}, "Pick a conversation, or find people by phone under Contacts.")));
    return;
  }
  // The header and composer are built once per conversation (the draft and
  // focus survive live updates); the messages are redrawn.
  if (main.dataset["conv"] !== openConv || !document.getElementById("composer")) {
    main.dataset["conv"] = openConv;
    render(main, h("header", { class: "conv-header", id: "conv-header" }), h("div", { class: "conv-body", id: "conv-body" }), composer(v));
    scrollToEnd = true;
  }
  const body = byId("conv-body");
  const old = document.getElementById("messages");
  const atEnd = !old || old.scrollHeight - old.scrollTop - old.clientHeight < 40;
  const oldTop = old?.scrollTop ?? 0;
  const g = openGroup();
  const list = h(
    "ol",
    { class: "messages", id: "messages" },
    v.hasOlder && h("li", { class: "older" }, h("button", { class: "link", id: "load-older", onclick: act(() => loadOlder(v)) }, "Load older messages")),
    !v.loaded && h("li", { class: "muted" }, "Loading…"),
    v.messages.map((m) => messageItem(v, m)),
  );
  render(body, list, showMembers && g && membersPanel(g));
  renderPendingFile();
  renderReply();
  renderForward();
  renderHeader();
  list.scrollTop = scrollToEnd || atEnd ? list.scrollHeight : oldTop;
}

function composer(v: ConvView): HTMLElement {
  const text = h("textarea", { id: "composer-text", rows: 2, placeholder: "Write a message" });
  text.addEventListener("input", () => {
    const now = Date.now();
    if (text.value && now - lastTypingSent > 3000) {
      lastTypingSent = now;
      km.chat.sendTyping({ conversationId: v.conv.id }).catch(() => {});
    }
  });
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  const file = h("input", { type: "file", id: "composer-file", hidden: true });
  file.addEventListener("change", () => {
    pendingFile = file.files?.[0];
    file.value = "";
    renderPendingFile();
  });
  const form = h(
    "form",
    { class: "composer", id: "composer" },
    h("div", { id: "forward-slot" }),
    h("div", { id: "reply-slot" }),
    h("div", { id: "pending-slot" }),
    h("div", { class: "row" },
      h("button", { type: "button", class: "attach", title: "Attach an image or a file", onclick: () => file.click() }, "Attach"),
      file,
      text,
      h("button", { type: "submit", id: "send" }, "Send"),
    ),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(() => send(v, text))();
  });
  return form;
}

function renderReply(): void {
  const slot = document.getElementById("reply-slot");
  if (!slot) return;
  render(slot, replyTo && h("div", { class: "replying", id: "replying" },
    h("span", {}, `Replying to ${nameOf(replyTo.senderId)}: `, h("em", {}, preview(replyTo))),
    h("button", { type: "button", class: "link", onclick: () => { replyTo = undefined; renderReply(); } }, "Cancel")));
}

// Forward targets: the member's conversations (contacts and groups), and
// contacts with none yet; the current one included (forwarding within a
// conversation is allowed).
function forwardTargets(): { title: string; key: string; target: { case: "peerId" | "groupId"; value: bigint } }[] {
  const out = [];
  const peers = new Set<string>();
  for (const v of convs.values()) {
    const w = v.conv.with;
    if (w.case === "peer") peers.add(w.value.id.toString());
    if (w.case === "peer" || w.case === "group") {
      out.push({ title: convTitle(v.conv), key: v.conv.id.toString(), target: { case: w.case === "peer" ? "peerId" as const : "groupId" as const, value: w.value.id } });
    }
  }
  for (const c of contacts.values()) {
    if (!peers.has(c.member!.id.toString())) out.push({ title: contactName(c.member!), key: `peer-${c.member!.id}`, target: { case: "peerId" as const, value: c.member!.id } });
  }
  return out.sort((a, b) => a.title.localeCompare(b.title));
}

function renderForward(): void {
  const slot = document.getElementById("forward-slot");
  if (!slot) return;
  const m = forwarding;
  if (!m) {
    render(slot, forwardedTo && h("div", { class: "replying", id: "forward-done" }, `Forwarded to ${forwardedTo}`));
    return;
  }
  render(slot, h("div", { class: "replying", id: "forward-picker" },
    h("span", {}, "Forward ", h("em", {}, preview(m)), " to: "),
    forwardTargets().map((t) => h("button", { type: "button", class: "link", "data-forward-to": t.key, onclick: act(async () => {
      // The copy's idempotency key: a new one per pick (each pick is a new copy).
      const res = await km.chat.forwardMessage({ conversationId: m.conversationId, seq: m.seq, target: t.target, clientMsgId: crypto.randomUUID() });
      forwarding = undefined;
      forwardedTo = t.title;
      renderForward();
      onMessage(res.message!);
    }) }, t.title)),
    h("button", { type: "button", class: "link", onclick: () => { forwarding = undefined; renderForward(); } }, "Cancel")));
}

function renderPendingFile(): void {
  const slot = document.getElementById("pending-slot");
  if (slot) render(slot, pendingFile && attachmentPreview(pendingFile));
}

function attachmentPreview(f: File): HTMLElement {
  const isImage = f.type.startsWith("image/");
  const url = isImage ? URL.createObjectURL(f) : "";
  return h(
    "div",
    { class: "pending-file", id: "pending-file" },
    isImage ? h("img", { src: url, alt: f.name, onload: () => URL.revokeObjectURL(url) }) : h("span", {}, "📎 "),
    h("span", {}, `${f.name} (${formatSize(f.size)})`),
    h("button", { type: "button", class: "link", onclick: () => { pendingFile = undefined; renderPendingFile(); } }, "Cancel"),
  );
}

function messageItem(v: ConvView, m: Message): HTMLElement {
  const mine = m.senderId === me?.id;
  const sent = m.sentAt ? timestampDate(m.sentAt) : undefined;
  const canRecall = mine && !m.recalledAt && sent && Date.now() - sent.getTime() < 2 * 60_000;
  let body: Node | string;
  if (m.recalledAt) {
    body = h("em", { class: "muted" }, mine ? "You recalled a message" : "Message recalled");
  } else if (m.content.case === "text") {
    body = h("span", { class: "text" }, m.content.value);
  } else if (m.content.case === "attachment") {
    body = attachmentView(m.content.value.id, m.content.value.kind, m.content.value.caption, m.content.value.contentType, Number(m.content.value.size));
  } else {
    body = "";
  }
  const direct = v.conv.kind === ConversationKind.DIRECT;
  const live = !m.recalledAt;
  // Editable: own, text, not a forwarded copy, within the server's 24 h window.
  const canEdit = mine && live && m.content.case === "text" && !m.forwarded && sent && Date.now() - sent.getTime() < 24 * 3600_000;
  const mentionsMe = !mine && (m.mentionEveryone || m.mentions.some((id) => id === me?.id));
  const q = m.replyTo;
  let cls = mine ? "msg mine" : "msg";
  if (mentionsMe) cls += " mention";
  return h(
    "li",
    { class: cls, "data-seq": m.seq.toString() },
    !mine && v.conv.kind === ConversationKind.GROUP && h("span", { class: "sender" }, nameOf(m.senderId)),
    live && q && h("div", { class: "quote", "data-reply-to": q.seq.toString() },
      q.unavailable ? h("em", {}, "message unavailable") : [h("strong", {}, nameOf(q.senderId)), " ", q.text || (q.attachmentKind === AttachmentKind.IMAGE ? "🖼 image" : "📎 file")]),
    h("div", { class: "bubble" }, m.forwarded && live && h("small", { class: "muted forwarded", "data-testid": "forwarded" }, "Forwarded "), body),
    live && m.reactions.length > 0 && h("div", { class: "reactions" }, m.reactions.map((r) =>
      h("button", { class: r.reactedByMe ? "reaction mine" : "reaction", "data-emoji": r.emoji, onclick: act(() => react(m, r.emoji)) }, `${r.emoji} ${r.count}`))),
    live && reactingSeq === m.seq && h("div", { class: "picker" }, REACTIONS.map((e) =>
      h("button", { class: "link", "data-pick": e, onclick: act(() => react(m, e)) }, e))),
    h(
      "span",
      { class: "meta" },
      sent ? sent.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "",
      live && m.editedAt && h("span", { class: "edited" }, " · edited"),
      mine && direct && v.peerReadSeq >= m.seq && h("span", { class: "read", "data-testid": "read" }, " · read"),
      live && h("button", { class: "link reply", onclick: () => { replyTo = m; renderReply(); byId<HTMLTextAreaElement>("composer-text").focus(); } }, "reply"),
      live && h("button", { class: "link react", onclick: () => { reactingSeq = reactingSeq === m.seq ? undefined : m.seq; renderConversation(); } }, "react"),
      live && h("button", { class: "link forward", onclick: () => { forwarding = forwarding?.seq === m.seq ? undefined : m; forwardedTo = ""; renderForward(); } }, "forward"),
      canEdit && h("button", { class: "link edit", onclick: act(() => edit(m)) }, "edit"),
      canRecall && h("button", { class: "link recall", onclick: act(async () => { await km.chat.recallMessage({ conversationId: m.conversationId, seq: m.seq }); }) }, "recall"),
    ),
  );
}

// One reaction per member: picking the one already mine clears it. Counts
// change by the reaction event, which reaches this device too (so they are
// not also taken from the answer, which would count twice).
async function react(m: Message, emoji: string): Promise<void> {
  const current = m.reactions.find((r) => r.reactedByMe)?.emoji;
  reactingSeq = undefined;
  renderConversation();
  await km.chat.setReaction({ conversationId: m.conversationId, seq: m.seq, emoji: current === emoji ? "" : emoji });
}

async function edit(m: Message): Promise<void> {
  if (m.content.case !== "text") return;
  const text = prompt("Edit message", m.content.value);
  if (text === null || !text.trim() || text === m.content.value) return;
  const res = await km.chat.editMessage({ conversationId: m.conversationId, seq: m.seq, text: text.trim() });
  const edited = res.message;
  if (edited && edited.content.case === "text") {
    m.content = { case: "text", value: edited.content.value };
    m.editedAt = edited.editedAt;
  }
  renderConversation();
}

function attachmentView(id: bigint, kind: AttachmentKind, caption: string, contentType: string, size: number): HTMLElement {
  if (kind === AttachmentKind.IMAGE) {
    const img = h("img", { class: "image", alt: caption || "image", "data-attachment": id.toString() });
    km.attachmentUrl(id).then((u) => (img.src = u), () => (img.alt = "image unavailable"));
    return h("figure", {}, img, caption && h("figcaption", {}, caption));
  }
  const a = h("a", { class: "file", href: "#", download: caption || `attachment-${id}` }, `📎 ${caption || "file"} (${formatSize(size)}, ${contentType})`);
  a.addEventListener("click", (ev) => {
    if (a.getAttribute("href") === "#") {
      ev.preventDefault();
      // A signed URL, fresh at each click (the SDK reuses one until halfway
      // to its expiry); the server sends files as downloads, never inline.
      km.attachmentUrl(id).then((u) => { a.href = u; a.click(); a.setAttribute("href", "#"); }, (err: unknown) => flash(err));
    }
  });
  return a;
}

function formatSize(n: number): string {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(0)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

async function send(v: ConvView, text: HTMLTextAreaElement): Promise<void> {
  const target = v.conv.with.case === "group"
    ? { case: "groupId" as const, value: v.conv.with.value.id }
    : { case: "peerId" as const, value: v.conv.with.value!.id };
  const body = text.value.trim();
  const file = pendingFile;
  const reply = replyTo;
  if (!body && !file) return;
  replyTo = undefined;
  renderReply();
  if (v.conv.with.case === "group" && body.includes("@") && groupMembers.length === 0) {
    await loadGroupMembers(); // @names need the members; opening the group asks, but may not be back yet
  }
  // Cleared at once, so a second press sends nothing twice; put back on failure.
  text.value = "";
  pendingFile = undefined;
  renderPendingFile();
  const clientMsgId = crypto.randomUUID(); // a retry of this send would reuse it
  try {
    if (file) {
      const up = await km.uploadAttachment(file);
      const kind = up.contentType.startsWith("image/") ? AttachmentKind.IMAGE : AttachmentKind.FILE;
      const res = await km.chat.sendMessage({ target, clientMsgId: `${clientMsgId}.a`, content: { case: "attachment", value: { id: up.id, kind, caption: kind === AttachmentKind.FILE ? file.name : "" } } });
      onMessage(res.message!);
    }
    if (body) {
      const res = await km.chat.sendMessage({ target, clientMsgId, content: { case: "text", value: body }, replyToSeq: reply?.seq ?? 0n, ...mentionsIn(v, body) });
      onMessage(res.message!);
    }
  } catch (err) {
    if (!text.value) text.value = body;
    if (!replyTo) replyTo = reply;
    renderReply();
    if (file && !pendingFile) {
      pendingFile = file;
      renderPendingFile();
    }
    throw err;
  }
  renderConversation(true);
}

// @Name in a group message mentions the member of that name (nickname or
// my remark for them); @all or @everyone, from an owner or admin, everyone.
function mentionsIn(v: ConvView, body: string): { mentions: bigint[]; mentionEveryone: boolean } {
  if (v.conv.with.case !== "group") return { mentions: [], mentionEveryone: false };
  const mentions = groupMembers
    .filter((gm) => gm.member && gm.member.id !== me?.id && (body.includes(`@${gm.member.nickname}`) || body.includes(`@${contactName(gm.member)}`)))
    .map((gm) => gm.member!.id);
  const role = groupMembers.find((gm) => gm.member?.id === me?.id)?.role;
  const mentionEveryone = /@(all|everyone)\b/.test(body) && (role === GroupRole.OWNER || role === GroupRole.ADMIN);
  return { mentions: mentions.slice(0, 50), mentionEveryone };
}

// ---- boot ----

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  km.token = saved;
  start().catch(() => signedOut(""));
} else {
  showAuth();
}
