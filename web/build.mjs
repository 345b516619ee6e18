// Builds with esbuild: `node web/build.mjs app` writes the chat app's bundle
// (web/app/dist, checked in and embedded by the server); `node web/build.mjs
// tests` bundles the web tests into .build/web-tests for node --test.
// Deterministic: the same sources give the same bytes (make checkgenerate).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

const what = process.argv[2];

if (what === "app") {
  const out = "web/app/dist";
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: { app: "web/app/src/main.ts" },
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    legalComments: "none",
    outdir: out,
    logLevel: "warning",
  });
  await build({
    entryPoints: { app: "web/app/app.css" },
    bundle: true,
    minify: true,
    outdir: out,
    logLevel: "warning",
  });
  // The page names its assets with a hash of their content, so a browser
  // never runs a stale script after an upgrade (the server also revalidates).
  const hash = (f) => createHash("sha256").update(readFileSync(join(out, f))).digest("hex").slice(0, 12);
  const html = readFileSync("web/app/index.html", "utf8")
    .replace("app.js", `app/app.js?v=${hash("app.js")}`)
    .replace("app.css", `app/app.css?v=${hash("app.css")}`);
  writeFileSync(join(out, "index.html"), html);
} else if (what === "tests") {
  const out = ".build/web-tests";
  rmSync(out, { recursive: true, force: true });
  const entries = {};
  for (const dir of ["web/client/test", "web/e2e"]) {
    for (const f of readdirSync(dir)) {
      if (f.endsWith(".test.ts") || f.endsWith(".worker.ts")) {
        entries[f.replace(/\.ts$/, "")] = join(dir, f);
      }
    }
  }
  await build({
    entryPoints: entries,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outdir: out,
    outExtension: { ".js": ".mjs" },
    external: ["playwright-core"],
    sourcemap: "inline",
    logLevel: "warning",
  });
  // The pages the browser tests load are bundled for the browser.
  for (const f of readdirSync("web/e2e")) {
    if (f.endsWith(".page.ts")) {
      await build({
        entryPoints: [join("web/e2e", f)],
        bundle: true,
        format: "esm",
        target: "es2022",
        outfile: join(out, f.replace(/\.ts$/, ".js")),
        logLevel: "warning",
      });
    }
  }
} else {
  console.error("usage: node web/build.mjs app|tests");
  process.exit(2);
}
