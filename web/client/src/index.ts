// @karlmalone/client: the TypeScript SDK of KarlMalone. See web/client/README.md.
export { KarlMaloneClient, type ClientOptions, type UploadedAttachment, type WebSocketConstructor } from "./client.js";
export { PushSession, CloseCode, type PushOptions, type PushState, type PushItem } from "./push.js";
export { type FeatureEventHandlers, dispatchFeatureEvent, applyMessageEvent } from "./events.js";
export { type CursorStore, type CursorState, MemoryCursorStore, webStorageCursorStore } from "./cursors.js";
export { type BackoffOptions, backoffDelay } from "./backoff.js";
export {
  SUBPROTOCOL_PROTO,
  SUBPROTOCOL_JSON,
  SUBPROTOCOL_PROTO_BATCH,
  SUBPROTOCOL_JSON_BATCH,
  BEARER_PREFIX,
  type PushEncoding,
  type FrameDecoder,
  decoderFor,
  subprotocolsFor,
} from "./frames.js";
export { Code, ConnectError, isRetryable, isNetworkError, isUnauthenticated, fieldErrors, describeError } from "./errors.js";

// The generated types and service descriptors (gen/es), for apps that need them.
export * from "../../../gen/es/karlmalone/v1/chat_pb.js";
export * from "../../../gen/es/karlmalone/v1/contact_pb.js";
export * from "../../../gen/es/karlmalone/v1/group_pb.js";
export * from "../../../gen/es/karlmalone/v1/member_pb.js";
export * from "../../../gen/es/karlmalone/v1/message_pb.js";
export * from "../../../gen/es/karlmalone/v1/push_pb.js";
