// Push frames: the subprotocols the SDK offers and how each decodes. A frame
// decodes to a list of events so that a batched subprotocol (several Events in
// one WebSocket message) slots in beside the one-event-per-frame ones.
import { fromBinary, fromJsonString } from "@bufbuild/protobuf";

import { type Event, EventSchema } from "../../../gen/es/karlmalone/v1/push_pb.js";

/** Binary protobuf frames: one Event per binary message. */
export const SUBPROTOCOL_PROTO = "karlmalone.v1.proto";
/** protojson frames: one Event per text message. */
export const SUBPROTOCOL_JSON = "karlmalone.v1.json";
// PHASE B: the batched subprotocol of issue #12 (EventBatch frames) goes here,
// offered before the single-event ones; decoderFor picks by what the server chose.
/** Offered beside the encoding to carry the token, since browsers cannot set headers. */
export const BEARER_PREFIX = "karlmalone.bearer.";

/** Which frames a session asks for. */
export type PushEncoding = "proto" | "json";

/** Turns one WebSocket message into the events it carries. */
export type FrameDecoder = (data: unknown) => Event[];

/** The subprotocols to offer for an encoding, most preferred first. */
export function subprotocolsFor(encoding: PushEncoding): string[] {
  return encoding === "json" ? [SUBPROTOCOL_JSON] : [SUBPROTOCOL_PROTO];
}

/**
 * The decoder for the subprotocol the server chose (WebSocket.protocol), or
 * for `offered` when the server named none.
 */
export function decoderFor(chosen: string, offered: PushEncoding): FrameDecoder {
  const json = chosen === SUBPROTOCOL_JSON || (chosen === "" && offered === "json");
  if (json) {
    return (data) => {
      if (typeof data !== "string") {
        throw new Error("push: binary frame on a JSON socket");
      }
      // Unknown fields come from a newer server: skip them.
      return [fromJsonString(EventSchema, data, { ignoreUnknownFields: true })];
    };
  }
  return (data) => {
    if (!(data instanceof ArrayBuffer)) {
      throw new Error("push: text frame on a binary socket");
    }
    return [fromBinary(EventSchema, new Uint8Array(data))];
  };
}
