// A real KarlMalone server for the web tests: the Go binary (bin/karlmalone,
// built by `make build`) on a private PostgreSQL that bin/devpg starts in a
// temp dir, as `make run` does. PostgreSQL stays up across restart(), so a
// restart is what clients see of a server restart, and nothing more.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, type WriteStream } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { once } from "node:events";

// The tests run bundled from .build/, started at the repository root (web/scripts/test.sh).
export const repoRoot = resolve(process.env["KARLMALONE_ROOT"] ?? process.cwd());

/** Where tests leave what a person may want to look at: logs, screenshots. */
export const artifactsDir = join(repoRoot, "web", "artifacts");

// Children still running when this process exits (a test failed hard, or the
// runner was interrupted) are ended with it: the server at once, devpg by a
// signal it forwards to its command, after which it stops PostgreSQL.
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) {
    c.kill(c.spawnargs[0]?.endsWith("devpg") ? "SIGTERM" : "SIGKILL");
  }
});
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => process.exit(130));
}

function track(c: ChildProcess): ChildProcess {
  children.add(c);
  c.on("exit", () => children.delete(c));
  return c;
}

export interface ServerOptions {
  /** A name for the log files (web/artifacts/<name>-server.log). */
  name: string;
  /** More flags for `karlmalone serve`. */
  flags?: string[];
}

export class TestServer {
  readonly #opts: ServerOptions;
  readonly #dir: string;
  readonly #log: WriteStream;
  #pg: ChildProcess | undefined;
  #databaseURL = "";
  #server: ChildProcess | undefined;
  #addr = "127.0.0.1:0";

  private constructor(opts: ServerOptions) {
    this.#opts = opts;
    this.#dir = mkdtempSync(join(tmpdir(), `kmweb-${opts.name}-`));
    mkdirSync(artifactsDir, { recursive: true });
    this.#log = createWriteStream(join(artifactsDir, `${opts.name}-server.log`));
  }

  /** Starts PostgreSQL and the server. */
  static async start(opts: ServerOptions): Promise<TestServer> {
    const s = new TestServer(opts);
    await s.#startPostgres();
    await s.startServer();
    return s;
  }

  /** The server's base URL, like http://127.0.0.1:34567. */
  get url(): string {
    return `http://${this.#addr}`;
  }

  async #startPostgres(): Promise<void> {
    // devpg runs its command with DATABASE_URL set and stops the cluster when
    // the command exits; the command here prints the URL and waits for its
    // stdin to close (at close(), or when this process dies).
    const pg = track(spawn(
      join(repoRoot, "bin/devpg"),
      ["-dir", join(this.#dir, "pg"), "-db", "karlmalone", "--", "sh", "-c", 'echo "DATABASE_URL=$DATABASE_URL"; exec cat'],
      { stdio: ["pipe", "pipe", "pipe"] },
    ));
    this.#pg = pg;
    pg.stderr!.pipe(this.#log, { end: false });
    this.#databaseURL = await new Promise<string>((resolve, reject) => {
      let out = "";
      pg.stdout!.on("data", (b: Buffer) => {
        out += b.toString();
        const m = /DATABASE_URL=(\S+)/.exec(out);
        if (m?.[1]) resolve(m[1]);
      });
      pg.on("exit", (code) => reject(new Error(`devpg exited with ${code}; see ${this.#log.path}`)));
    });
  }

  /** Starts the server (again, on the same address after stop()). */
  async startServer(): Promise<void> {
    const args = [
      "serve",
      "-listen", this.#addr,
      "-attachment-dir", join(this.#dir, "attachments"),
      "-insecure-fast-password-hash",
      "-register-rate", "0",
      "-login-rate-addr", "0",
      "-login-rate-phone-addr", "0",
      "-shutdown-timeout", "5s",
      "-shutdown-drain", "0", // no load balancer to drain: restart at once
      ...(this.#opts.flags ?? []),
    ];
    const srv = track(spawn(join(repoRoot, "bin/karlmalone"), args, {
      env: { ...process.env, DATABASE_URL: this.#databaseURL },
      stdio: ["ignore", "pipe", "pipe"],
    }));
    this.#server = srv;
    srv.stdout!.pipe(this.#log, { end: false });
    this.#addr = await new Promise<string>((resolve, reject) => {
      let out = "";
      const onData = (b: Buffer) => {
        this.#log.write(b);
        out += b.toString();
        const m = /msg=serving addr=(\S+)/.exec(out);
        if (m?.[1]) {
          srv.stderr!.off("data", onData);
          srv.stderr!.pipe(this.#log, { end: false });
          resolve(m[1]);
        }
      };
      srv.stderr!.on("data", onData);
      srv.on("exit", (code) => reject(new Error(`karlmalone exited with ${code}; see ${this.#log.path}`)));
    });
  }

  /** Stops the server gracefully (SIGTERM: sockets get 1001) and waits for it. */
  async stopServer(): Promise<void> {
    const srv = this.#server;
    this.#server = undefined;
    if (!srv || srv.exitCode !== null) {
      return;
    }
    srv.kill("SIGTERM");
    await once(srv, "exit");
  }

  /** Stops and starts the server on the same address. */
  async restart(): Promise<void> {
    await this.stopServer();
    await this.startServer();
  }

  /** A counter or gauge from /metrics (the sum over its label sets). */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(this.url + "/metrics")).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(name + " ") || line.startsWith(name + "{")) {
        sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      }
    }
    return sum;
  }

  /** Stops the server and PostgreSQL and removes the temp dir. */
  async close(): Promise<void> {
    await this.stopServer();
    const pg = this.#pg;
    if (pg && pg.exitCode === null) {
      pg.stdin!.end();
      await once(pg, "exit");
    }
    this.#log.end();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** Polls cond until it holds, for conditions with no event to wait on. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) {
      return;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

let phoneSeq = 0;
/** A phone number no other test uses. */
export function newPhone(): string {
  phoneSeq++;
  const n = (Date.now() % 1_000_000) * 1000 + (process.pid % 100) * 10 + phoneSeq;
  return "+1555" + String(n).padStart(9, "0").slice(-9);
}
