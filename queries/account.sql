-- Leaving for good (MemberService.DeleteAccount) and taking one's data along
-- (GET /v1/export). DeleteAccount runs these in one transaction, in this
-- order: the member row, its groups, its contacts, the rest.

-- name: LockMemberForDelete :one
-- The live member row, locked: of two concurrent deletions one waits and
-- then finds nothing.
SELECT * FROM members WHERE id = @id AND deleted_at IS NULL FOR UPDATE;

-- name: ListGroupsOfMemberForDelete :many
-- Every live group the member belongs to, locked in id order (so two
-- deletions cannot deadlock on each other), with the member's role. Unpaged:
-- a deletion must walk them all, once; each costs a few statements.
-- @sqlc-vet-disable bounded-list
SELECT sqlc.embed(g), cm.role
FROM conversation_members cm
JOIN groups g ON g.conversation_id = cm.conversation_id
WHERE cm.member_id = @member_id AND g.dissolved_at IS NULL
ORDER BY g.id
FOR UPDATE OF g;

-- name: GetGroupSuccessor :one
-- Who inherits a group from its departing owner: the oldest admin, else the
-- oldest member (joined_at, then id). No row: the owner was alone.
SELECT member_id FROM conversation_members
WHERE conversation_id = @conversation_id AND member_id <> @owner_id
ORDER BY role DESC, joined_at, member_id
LIMIT 1;

-- name: ListContactIDsForDelete :many
-- The member's contacts, for their pair locks and their events. Unpaged, as
-- ListGroupsOfMemberForDelete.
-- @sqlc-vet-disable bounded-list
SELECT member_id FROM contacts WHERE owner_id = @owner_id ORDER BY member_id;

-- name: DeleteContactsOfMember :exec
-- Both sides of every contact relation of the member.
DELETE FROM contacts WHERE owner_id = @member_id OR member_id = @member_id;

-- name: DeleteFriendRequestsOfMember :exec
DELETE FROM friend_requests WHERE from_member_id = @member_id OR to_member_id = @member_id;

-- name: DeleteBlocksOfMember :exec
DELETE FROM blocks WHERE blocker_id = @member_id OR blocked_id = @member_id;

-- name: DeleteConversationMembershipsOfMember :exec
-- What is left once the groups are handled: the direct conversations. Their
-- messages stay for the other side.
DELETE FROM conversation_members WHERE member_id = @member_id;

-- name: DeleteSessionsOfMember :many
DELETE FROM sessions WHERE member_id = @member_id RETURNING id;

-- name: TombstoneMember :one
-- Clears the profile and frees the phone: the row stays for the messages'
-- sender_id, as "Deleted member". The phone becomes a value no E.164 phone
-- can equal, so a new Register may take the old one; the empty hash matches
-- no password.
UPDATE members SET
    phone = 'deleted:' || id, password_hash = '', nickname = 'Deleted member',
    avatar = '', gender = 0, memo = '', deleted_at = now(), updated_at = now()
WHERE id = @id AND deleted_at IS NULL
RETURNING *;

-- name: ListConversationsForExport :many
-- The member's conversations, by id, with the peer of a direct one and the
-- group of a group one (peer_id 0 for a group).
SELECT c.id, c.kind, c.last_seq, cm.read_seq, cm.role, cm.joined_at,
       coalesce(CASE WHEN c.kind = 1 THEN CASE WHEN c.member_lo = @member_id::bigint THEN c.member_hi ELSE c.member_lo END END, 0)::bigint AS peer_id,
       g.id AS group_id, g.name AS group_name
FROM conversation_members cm
JOIN conversations c ON c.id = cm.conversation_id
LEFT JOIN groups g ON c.kind = 2 AND g.conversation_id = c.id
WHERE cm.member_id = @member_id AND cm.conversation_id > @after_id
ORDER BY cm.conversation_id
LIMIT @max_rows;
