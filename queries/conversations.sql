-- Conversations and their membership, shared by contacts (direct), groups and chat.

-- name: UpsertDirectConversation :one
-- One conversation per pair, whatever order the pair comes in; re-befriending
-- finds the old conversation and its history.
INSERT INTO conversations (kind, member_lo, member_hi)
VALUES (1, least(@a::bigint, @b::bigint), greatest(@a::bigint, @b::bigint))
ON CONFLICT (member_lo, member_hi) WHERE kind = 1 DO UPDATE SET kind = excluded.kind
RETURNING *;

-- name: CreateGroupConversation :one
INSERT INTO conversations (kind) VALUES (2) RETURNING *;

-- name: AddConversationMember :exec
-- A new member starts with everything already sent marked read; re-adding an
-- existing member changes nothing.
INSERT INTO conversation_members (conversation_id, member_id, role, read_seq)
SELECT c.id, @member_id, @role, c.last_seq FROM conversations c WHERE c.id = @conversation_id
ON CONFLICT (conversation_id, member_id) DO NOTHING;

-- name: GetConversationMember :one
SELECT * FROM conversation_members WHERE conversation_id = @conversation_id AND member_id = @member_id;

-- name: ListConversationMemberIDs :many
-- Everyone an event about the conversation goes to. Unpaged: a direct
-- conversation has two members, a group at most its max_members.
-- @sqlc-vet-disable bounded-list
SELECT member_id FROM conversation_members WHERE conversation_id = @conversation_id;

-- name: UpdateConversationSettings :one
-- Changes a member's own settings of a conversation: the mute when set_mute,
-- the pin and the archive when given (NULL keeps them). Pinning moves the
-- conversation to the top of the pinned ones. No row: not a member.
UPDATE conversation_members cm
SET muted_until   = CASE WHEN @set_mute::boolean THEN sqlc.narg(muted_until)::timestamptz ELSE cm.muted_until END,
    muted_forever = CASE WHEN @set_mute::boolean THEN @muted_forever::boolean ELSE cm.muted_forever END,
    pinned_at     = CASE sqlc.narg(pinned)::boolean WHEN true THEN clock_timestamp() WHEN false THEN NULL ELSE cm.pinned_at END,
    archived      = coalesce(sqlc.narg(archived)::boolean, cm.archived)
WHERE cm.conversation_id = @conversation_id AND cm.member_id = @member_id
RETURNING cm.conversation_id, cm.muted_until, cm.muted_forever, cm.pinned_at, cm.archived, cm.cleared_seq;

-- name: ClearConversationHistory :one
-- Raises a member's floor to up_to_seq (0: the last message), never past the
-- last message and never back. No row: not a member.
UPDATE conversation_members cm
SET cleared_seq = greatest(cm.cleared_seq,
        CASE WHEN @up_to_seq::bigint = 0 THEN c.last_seq ELSE least(@up_to_seq::bigint, c.last_seq) END)
FROM conversations c
WHERE c.id = cm.conversation_id AND cm.conversation_id = @conversation_id AND cm.member_id = @member_id
RETURNING cm.conversation_id, cm.muted_until, cm.muted_forever, cm.pinned_at, cm.archived, cm.cleared_seq;

-- name: NotifiableMembers :many
-- Of the given members of a conversation, those an offline notification may
-- reach: not muted now, unless the message mentions them (by id, or everyone).
-- Unpaged: bounded by the member_ids given, a message's offline recipients.
-- @sqlc-vet-disable bounded-list
SELECT member_id FROM conversation_members
WHERE conversation_id = @conversation_id AND member_id = ANY(@member_ids::bigint[])
  AND ((NOT muted_forever AND (muted_until IS NULL OR muted_until <= now()))
       OR member_id = ANY(@mentions::bigint[]) OR @mention_everyone::boolean)
ORDER BY member_id;
