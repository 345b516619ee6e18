// A page written against the SDK alone — no transport code of its own — that
// records every message its push session hands over. sdk.test.ts serves it
// on the server's origin and forces gaps while a peer sends.
import { KarlMaloneClient, type PushState } from "@karlmalone/client";

declare global {
  interface Window {
    received: { conversation: string; seq: number; text: string }[];
    states: PushState[];
  }
}

window.received = [];
window.states = [];
const [baseUrl = "", token = ""] = location.hash.slice(1).split("#").map(decodeURIComponent);
const km = new KarlMaloneClient({ baseUrl, token });
km.push({
  onMessage: (m) =>
    window.received.push({
      conversation: m.conversationId.toString(),
      seq: Number(m.seq),
      text: m.content.case === "text" ? m.content.value : "",
    }),
  onState: (s) => window.states.push(s),
  backoff: { initialMs: 200, maxMs: 2000 },
});
document.body.textContent = "listening";
