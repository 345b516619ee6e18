// Sends bob's large messages to alice until the server has dropped a slow
// consumer (its /metrics counter moves), then wakes the test's thread, which
// stalls meanwhile so that its socket reads nothing. See push.test.ts.
import { workerData } from "node:worker_threads";

import { KarlMaloneClient } from "@karlmalone/client";

const { url, token, to, flag } = workerData as { url: string; token: string; to: string; flag: Int32Array };

async function slowDisconnects(): Promise<number> {
  const text = await (await fetch(url + "/metrics")).text();
  const m = /^karlmalone_push_slow_consumer_disconnects_total (\d+)/m.exec(text);
  return Number(m?.[1] ?? 0);
}

const bob = new KarlMaloneClient({ baseUrl: url, token });
const before = await slowDisconnects();
Atomics.store(flag, 1, 1);
// 4,000 characters of 4 bytes: 16 KB frames fill socket buffers quickly.
const big = "\u{1F600}".repeat(3990);
let sent = 0;
for (; sent < 3000; ) {
  await bob.chat.sendMessage({
    target: { case: "peerId", value: BigInt(to) },
    clientMsgId: `slow-${sent}`,
    content: { case: "text", value: `${sent} ${big}` },
  });
  sent++;
  if (sent % 8 === 0 && (await slowDisconnects()) > before) {
    break;
  }
}
Atomics.store(flag, 0, sent);
Atomics.notify(flag, 0);
