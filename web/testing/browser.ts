// Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven
// by playwright-core (no browser download is possible here). Each launch has
// a fresh profile (playwright's own temporary user data dir).
import { join } from "node:path";

import { type Browser, type Page, chromium } from "playwright-core";

import { artifactsDir } from "./server.js";

export const chromiumPath = process.env["CHROMIUM"] ?? "/usr/bin/chromium";

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox", // root in CI
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      // Without these Chromium calls out to hosts this network refuses.
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Saves a screenshot as a test artefact: web/artifacts/<name>.png. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(artifactsDir, `${name}.png`) });
}

/** Collects the page's console errors and uncaught exceptions (CSP violations included). */
export function watchErrors(page: Page, label: string): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${label} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${label} exception: ${e.message}`));
  return errors;
}

// Steps in the chat app that several browser tests take.

/** Opens the chat list's conversation titled `title` and waits for it to show. */
export async function openChatWith(page: Page, title: string): Promise<void> {
  await page.click("#tab-chats");
  await page.click(`#conv-list li:has(.title:text-is("${title}"))`);
  await page.waitForSelector(`#conv-title:text-is("${title}")`);
}

/** Writes a text in the open conversation's composer and sends it. */
export async function sendInApp(page: Page, text: string): Promise<void> {
  await page.fill("#composer-text", text);
  await page.click("#send");
}
