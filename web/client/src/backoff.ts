// Reconnect delays: capped exponential backoff with jitter, so that a
// restarted server is not hit by every client at the same instant.

/** How a push session waits between connection attempts. */
export interface BackoffOptions {
  /** The first delay's ceiling, in ms (default 500). */
  initialMs?: number;
  /** The cap, in ms (default 30,000). */
  maxMs?: number;
  /** Growth per failed attempt (default 2). */
  multiplier?: number;
  /** Random source in [0, 1) (default Math.random); tests pin it. */
  random?: () => number;
}

/**
 * The delay before attempt number `attempt` (0 for the first retry): a random
 * point in the upper half of min(maxMs, initialMs × multiplier^attempt)
 * ("equal jitter": spread out, yet never a tight loop).
 */
export function backoffDelay(attempt: number, o: BackoffOptions = {}): number {
  const initial = o.initialMs ?? 500;
  const max = o.maxMs ?? 30_000;
  const mult = o.multiplier ?? 2;
  const random = o.random ?? Math.random;
  const ceiling = Math.min(max, initial * Math.pow(mult, Math.max(0, attempt)));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
