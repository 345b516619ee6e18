// Typed callbacks for the events of the chat features (docs/CHAT-FEATURES.md)
// and helpers that apply them to the messages an app already holds, so an
// app need not switch on Event.kind itself nor re-read history after an edit
// or a reaction.
import { create } from "@bufbuild/protobuf";

import { type ConversationSettings, type Message, ReactionCountSchema } from "../../../gen/es/karlmalone/v1/message_pb.js";
import type { Presence } from "../../../gen/es/karlmalone/v1/member_pb.js";
import type {
  Event,
  GroupMembersAdded,
  MemberDeleted,
  MessageEdited,
  ReactionChanged,
} from "../../../gen/es/karlmalone/v1/push_pb.js";

/** One callback per feature event; PushOptions takes them alongside onEvent. */
export interface FeatureEventHandlers {
  /** A message's text was replaced (`message_edited`). */
  onMessageEdited?: (e: MessageEdited) => void;
  /** A member set, changed or cleared its reaction (`reaction`). */
  onReaction?: (e: ReactionChanged) => void;
  /** This member's settings of a conversation changed, on any of its devices. */
  onConversationSettings?: (s: ConversationSettings) => void;
  /** Members were added to a group (`members_added`). */
  onMembersAdded?: (e: GroupMembersAdded) => void;
  /** A member deleted its account (`member_deleted`). */
  onMemberDeleted?: (e: MemberDeleted) => void;
  /** A contact went online or offline (`presence`). */
  onPresence?: (p: Presence) => void;
}

/** Calls the handler, if any, that matches the event's kind. */
export function dispatchFeatureEvent(h: FeatureEventHandlers, e: Event): void {
  const k = e.kind;
  switch (k.case) {
    case "messageEdited":
      return h.onMessageEdited?.(k.value);
    case "reaction":
      return h.onReaction?.(k.value);
    case "conversationSettingsChanged":
      return h.onConversationSettings?.(k.value);
    case "membersAdded":
      return h.onMembersAdded?.(k.value);
    case "memberDeleted":
      return h.onMemberDeleted?.(k.value);
    case "presence":
      return h.onPresence?.(k.value);
    default:
      return;
  }
}

/**
 * Applies an edit, a reaction or a recall to the message it names among
 * `messages` (matched by conversation and seq), in place, and returns that
 * message; undefined when the event is of another kind or the message is not
 * held. `meId` is the signed-in member, for `reacted_by_me`. Reaction counts
 * are kept as the event says (one off the previous emoji, one on the new);
 * ListMessages is the truth after a gap.
 */
export function applyMessageEvent(messages: Iterable<Message>, e: Event, meId?: bigint): Message | undefined {
  const k = e.kind;
  if (k.case !== "messageEdited" && k.case !== "reaction" && k.case !== "messageRecalled") {
    return undefined;
  }
  let m: Message | undefined;
  for (const x of messages) {
    if (x.conversationId === k.value.conversationId && x.seq === k.value.seq) {
      m = x;
      break;
    }
  }
  if (!m) {
    return undefined;
  }
  switch (k.case) {
    case "messageEdited":
      if (m.content.case === "text") {
        m.content.value = k.value.text;
      } else {
        m.content = { case: "text", value: k.value.text };
      }
      m.editedAt = k.value.editedAt;
      break;
    case "messageRecalled":
      m.content = { case: undefined };
      m.recalledAt = k.value.recalledAt;
      m.reactions = [];
      break;
    case "reaction": {
      const mine = meId !== undefined && k.value.memberId === meId;
      const { emoji, previousEmoji } = k.value;
      if (previousEmoji) {
        const r = m.reactions.find((x) => x.emoji === previousEmoji);
        if (r) {
          r.count--;
          if (mine) r.reactedByMe = false;
          if (r.count <= 0) m.reactions = m.reactions.filter((x) => x !== r);
        }
      }
      if (emoji) {
        let r = m.reactions.find((x) => x.emoji === emoji);
        if (!r) {
          r = create(ReactionCountSchema, { emoji });
          m.reactions.push(r);
        }
        r.count++;
        if (mine) r.reactedByMe = true;
      }
      break;
    }
  }
  return m;
}
