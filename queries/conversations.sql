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
