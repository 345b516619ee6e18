// Where a push session keeps its per-conversation cursors between runs: the
// app's choice. In memory by default (a reload starts from "now"); a browser
// app may keep them in localStorage, a mobile or desktop app in its database.

/**
 * A push session's saved position: for each conversation id (decimal), the
 * highest seq handed to the app, every lower one included (decimal).
 */
export interface CursorState {
  cursors: Record<string, string>;
}

/** Loads and saves a push session's CursorState. Either may be async. */
export interface CursorStore {
  load(): CursorState | undefined | Promise<CursorState | undefined>;
  save(state: CursorState): void | Promise<void>;
}

/** Keeps cursors for the life of the object (the default). */
export class MemoryCursorStore implements CursorStore {
  #state: CursorState | undefined;
  constructor(initial?: CursorState) {
    this.#state = initial;
  }
  load(): CursorState | undefined {
    return this.#state && { cursors: { ...this.#state.cursors } };
  }
  save(state: CursorState): void {
    this.#state = { cursors: { ...state.cursors } };
  }
}

/**
 * Keeps cursors in a Web Storage (localStorage by default) under key; use one
 * key per signed-in member.
 */
export function webStorageCursorStore(key: string, storage: Storage = globalThis.localStorage): CursorStore {
  return {
    load() {
      const raw = storage.getItem(key);
      if (!raw) {
        return undefined;
      }
      try {
        const v = JSON.parse(raw) as CursorState;
        return typeof v.cursors === "object" && v.cursors !== null ? v : undefined;
      } catch {
        return undefined; // a damaged entry: start over
      }
    },
    save(state) {
      storage.setItem(key, JSON.stringify(state));
    },
  };
}
