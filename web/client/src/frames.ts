// Push frames: the subprotocols the SDK offers and how each decodes. A frame
// decodes to a list of events: one for the single-event subprotocols, all
// those of its EventBatch for the batched ones (docs/PUSH.md).
import { fromBinary, fromJsonString } from "@bufbuild/protobuf";

import { type Event, EventBatchSchema, EventSchema } from "../../../gen/es/karlmalone/v1/push_pb.js";

/** Binary protobuf frames: one Event per binary message. */
export const SUBPROTOCOL_PROTO = "karlmalone.v1.proto";
/** protojson frames: one Event per text message. */
export const SUBPROTOCOL_JSON = "karlmalone.v1.json";
/** Binary protobuf frames: one EventBatch (every event waiting) per binary message. */
export const SUBPROTOCOL_PROTO_BATCH = "karlmalone.v1.proto.batch";
/** protojson frames: one EventBatch per text message. */
export const SUBPROTOCOL_JSON_BATCH = "karlmalone.v1.json.batch";
/** Offered beside the encoding to carry the token, since browsers cannot set headers. */
export const BEARER_PREFIX = "karlmalone.bearer.";

/** Which frames a session asks for. */
export type PushEncoding = "proto" | "json";

/** Turns one WebSocket message into the events it carries. */
export type FrameDecoder = (data: unknown) => Event[];

/**
 * The subprotocols to offer for an encoding, most preferred first. Batched
 * comes first and its single-event twin after it: the server takes the first
 * it knows, so a server without batches still answers.
 */
export function subprotocolsFor(encoding: PushEncoding, batched: boolean): string[] {
  const single = encoding === "json" ? SUBPROTOCOL_JSON : SUBPROTOCOL_PROTO;
  return batched ? [`${single}.batch`, single] : [single];
}

/**
 * The decoder for the subprotocol the server chose (WebSocket.protocol), or
 * for single events of `offered` when the server named none.
 */
export function decoderFor(chosen: string, offered: PushEncoding): FrameDecoder {
  const batched = chosen === SUBPROTOCOL_PROTO_BATCH || chosen === SUBPROTOCOL_JSON_BATCH;
  const json = chosen === SUBPROTOCOL_JSON || chosen === SUBPROTOCOL_JSON_BATCH || (chosen === "" && offered === "json");
  // Unknown fields come from a newer server: skip them.
  const opts = { ignoreUnknownFields: true };
  if (json) {
    return (data) => {
      if (typeof data !== "string") {
        throw new Error("push: binary frame on a JSON socket");
      }
      return batched ? fromJsonString(EventBatchSchema, data, opts).events : [fromJsonString(EventSchema, data, opts)];
    };
  }
  return (data) => {
    if (!(data instanceof ArrayBuffer)) {
      throw new Error("push: text frame on a binary socket");
    }
    const bytes = new Uint8Array(data);
    return batched ? fromBinary(EventBatchSchema, bytes).events : [fromBinary(EventSchema, bytes)];
  };
}
