-- Friend requests, contacts and blocks (ContactService). Whether a direct
-- message may be sent is decided from the same rows by CreateMessage and
-- GetDirectSendTarget (messages.sql); group invitations check them with
-- ListGroupInvitees (groups.sql).

-- name: LockContactPair :exec
-- Serializes every change to one pair of members (request, answer, remove,
-- block) for the rest of the transaction, so "blocked", "contacts" and
-- "pending request" never go out of step under concurrent calls. The pair is
-- ordered so A–B and B–A take the same lock; the two-key form keeps these
-- locks apart from any single-key advisory locks elsewhere.
SELECT pg_advisory_xact_lock(
    hashtext('karlmalone.contact_pair'),
    hashtext(least(@a::bigint, @b::bigint)::text || ':' || greatest(@a::bigint, @b::bigint)::text)
);

-- name: LockContactPairsOf :exec
-- LockContactPair for one member with each of many (a group invitation), so
-- a block between them cannot commit between the check and the add. Taken in
-- id order, so two such calls cannot deadlock.
SELECT pg_advisory_xact_lock(
    hashtext('karlmalone.contact_pair'),
    hashtext(least(@a::bigint, s.id)::text || ':' || greatest(@a::bigint, s.id)::text)
)
FROM (SELECT DISTINCT u.id FROM unnest(@others::bigint[]) AS u (id) ORDER BY u.id) AS s;

-- name: CreateFriendRequest :one
INSERT INTO friend_requests (from_member_id, to_member_id, note)
VALUES (@from_member_id, @to_member_id, @note)
RETURNING *;

-- name: GetPendingFriendRequest :one
SELECT * FROM friend_requests
WHERE from_member_id = @from_member_id AND to_member_id = @to_member_id AND status = 1;

-- name: GetIncomingFriendRequest :one
-- A request as its addressee sees it; anyone else finds nothing.
SELECT * FROM friend_requests WHERE id = @id AND to_member_id = @to_member_id;

-- name: UpdateFriendRequestStatus :one
-- Answers a pending request; a request already answered (or answered by a
-- concurrent call that won) matches no row.
UPDATE friend_requests SET status = @status, responded_at = now()
WHERE id = @id AND to_member_id = @to_member_id AND status = 1
RETURNING *;

-- name: ResolvePendingFriendRequestsBetween :many
-- Closes every pending request between the pair, either direction: accepted
-- when they become contacts, declined when one blocks the other.
UPDATE friend_requests SET status = @status, responded_at = now()
WHERE status = 1
  AND ((from_member_id = @a AND to_member_id = @b) OR (from_member_id = @b AND to_member_id = @a))
RETURNING *;

-- name: ListIncomingFriendRequests :many
-- Newest first; @before_id 0 means from the newest.
SELECT sqlc.embed(fr), sqlc.embed(m)
FROM friend_requests fr JOIN members m ON m.id = fr.from_member_id
WHERE fr.to_member_id = @member_id AND (@before_id::bigint = 0 OR fr.id < @before_id::bigint)
ORDER BY fr.id DESC
LIMIT @max_rows;

-- name: ListOutgoingFriendRequests :many
-- Newest first; @before_id 0 means from the newest.
SELECT sqlc.embed(fr), sqlc.embed(m)
FROM friend_requests fr JOIN members m ON m.id = fr.to_member_id
WHERE fr.from_member_id = @member_id AND (@before_id::bigint = 0 OR fr.id < @before_id::bigint)
ORDER BY fr.id DESC
LIMIT @max_rows;

-- name: CreateContactPair :many
-- Both sides at once: one statement, so no one ever sees half a friendship.
INSERT INTO contacts (owner_id, member_id, conversation_id)
VALUES (@a, @b, @conversation_id), (@b, @a, @conversation_id)
RETURNING *;

-- name: GetContact :one
-- owner_id's contact row for member_id: no rows means they are not contacts.
SELECT * FROM contacts WHERE owner_id = @owner_id AND member_id = @member_id;

-- name: ListContactsByOwner :many
-- Keyed on member_id, which never changes for a row, so paging is stable.
SELECT sqlc.embed(c), sqlc.embed(m)
FROM contacts c JOIN members m ON m.id = c.member_id
WHERE c.owner_id = @owner_id AND c.member_id > @after_member_id
ORDER BY c.member_id
LIMIT @max_rows;

-- name: UpdateContactRemark :one
UPDATE contacts SET remark = @remark
WHERE owner_id = @owner_id AND member_id = @member_id
RETURNING *;

-- name: DeleteContactPair :execrows
-- Removes both sides; the pair's conversation and its history stay.
DELETE FROM contacts
WHERE (owner_id = @a AND member_id = @b) OR (owner_id = @b AND member_id = @a);

-- name: CreateBlock :exec
-- Blocking twice is a no-op, so a retried BlockMember succeeds.
INSERT INTO blocks (blocker_id, blocked_id) VALUES (@blocker_id, @blocked_id)
ON CONFLICT (blocker_id, blocked_id) DO NOTHING;

-- name: DeleteBlock :execrows
DELETE FROM blocks WHERE blocker_id = @blocker_id AND blocked_id = @blocked_id;

-- name: GetBlocksBetween :one
-- Which way a pair is blocked, as seen from @me.
SELECT
    EXISTS (SELECT 1 FROM blocks mine WHERE mine.blocker_id = @me::bigint AND mine.blocked_id = @peer::bigint) AS blocked_by_me,
    EXISTS (SELECT 1 FROM blocks theirs WHERE theirs.blocker_id = @peer::bigint AND theirs.blocked_id = @me::bigint) AS blocked_by_peer;

-- name: ListBlockedByBlocker :many
-- Keyed on blocked_id, the primary key's second column.
SELECT sqlc.embed(m)
FROM blocks b JOIN members m ON m.id = b.blocked_id
WHERE b.blocker_id = @blocker_id AND b.blocked_id > @after_member_id
ORDER BY b.blocked_id
LIMIT @max_rows;
