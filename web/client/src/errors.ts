// Reading the server's errors. Every failure, RPC or attachment route, is a
// ConnectError with one of the codes docs/ERRORS.md lists.
import { Code, ConnectError } from "@connectrpc/connect";

export { Code, ConnectError };

/**
 * Whether the same call may succeed if simply made again (after a backoff):
 * the server or the network was unavailable, or a concurrent change won.
 * ResourceExhausted is not among them: a rate limit wants a longer wait, a
 * size or a full group never changes (see docs/ERRORS.md).
 */
export function isRetryable(err: unknown): boolean {
  const ce = ConnectError.from(err);
  switch (ce.code) {
    case Code.Unavailable:
    case Code.Aborted:
    case Code.DeadlineExceeded:
      return true;
    case Code.Unknown:
      return isNetworkError(ce);
    default:
      return false;
  }
}

/** Whether the call never reached the server (fetch itself failed). */
export function isNetworkError(err: unknown): boolean {
  const ce = ConnectError.from(err);
  if (ce.code === Code.Unavailable && ce.rawMessage.startsWith("network:")) {
    return true;
  }
  return ce.code === Code.Unknown && ce.cause instanceof TypeError;
}

/** Whether the token is missing, expired or revoked: sign in again. */
export function isUnauthenticated(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Unauthenticated;
}

/**
 * The bad fields an InvalidArgument (or another code naming a field) reports:
 * the server writes "field: problem", several joined with "; ".
 * Returns an empty map when the message names no field.
 */
export function fieldErrors(err: unknown): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of ConnectError.from(err).rawMessage.split("; ")) {
    const m = /^([a-z][a-z0-9_.]*): (.+)$/.exec(part);
    if (m?.[1] && m[2]) {
      out.set(m[1], m[2]);
    }
  }
  return out;
}

/** A short sentence for a person, from any error. */
export function describeError(err: unknown): string {
  const ce = ConnectError.from(err);
  if (isNetworkError(ce)) {
    return "Cannot reach the server. Check your connection and try again.";
  }
  switch (ce.code) {
    case Code.Unauthenticated:
      return ce.rawMessage === "wrong phone or password" ? "Wrong phone or password." : "Please sign in again.";
    case Code.Unavailable:
      return "The server is busy or restarting. Try again in a moment.";
    case Code.Internal:
      return "Something went wrong on the server.";
    default: {
      const msg = ce.rawMessage || Code[ce.code];
      return msg.charAt(0).toUpperCase() + msg.slice(1) + (/[.!?]$/.test(msg) ? "" : ".");
    }
  }
}
