-- Groups and their membership. A group's members are the conversation_members
-- rows of its conversation (role 1 member, 2 admin, 3 owner); member_count
-- mirrors them. Every write to a group's membership or roles first takes the
-- group row lock (LockGroup), so the checks that follow it cannot go stale.

-- name: CreateGroup :one
INSERT INTO groups (name, avatar, notice, owner_id, join_policy, member_count, max_members, conversation_id)
VALUES (@name, @avatar, @notice, @owner_id, @join_policy, @member_count, @max_members, @conversation_id)
RETURNING *;

-- name: GetGroupByID :one
-- A dissolved group is gone for every caller.
SELECT * FROM groups WHERE id = @id AND dissolved_at IS NULL;

-- name: LockGroup :one
SELECT * FROM groups WHERE id = @id AND dissolved_at IS NULL FOR UPDATE;

-- name: UpdateGroup :one
UPDATE groups SET
    name        = coalesce(sqlc.narg(name), name),
    avatar      = coalesce(sqlc.narg(avatar), avatar),
    notice      = coalesce(sqlc.narg(notice), notice),
    join_policy = coalesce(sqlc.narg(join_policy), join_policy),
    updated_at  = now()
WHERE id = @id AND dissolved_at IS NULL
RETURNING *;

-- name: UpdateGroupMemberCount :one
-- Moves member_count by delta unless that would pass max_members: no row back
-- means the group is full. The CHECK constraint backs this up.
UPDATE groups SET member_count = member_count + @delta::integer
WHERE id = @id AND dissolved_at IS NULL AND member_count + @delta::integer <= max_members
RETURNING *;

-- name: UpdateGroupOwner :one
-- Conditional on the old owner, so of two racing transfers only one lands.
UPDATE groups SET owner_id = @new_owner_id, updated_at = now()
WHERE id = @id AND owner_id = @old_owner_id AND dissolved_at IS NULL
RETURNING *;

-- name: DissolveGroup :one
-- The row stays (its conversation keeps the history) but every query above
-- skips it, and its members' rows are deleted with DeleteGroupMembers.
UPDATE groups SET dissolved_at = now(), member_count = 0, updated_at = now()
WHERE id = @id AND dissolved_at IS NULL
RETURNING *;

-- name: ListGroupsByMember :many
-- Paged by conversation id, which the member index serves in order.
SELECT sqlc.embed(g)
FROM conversation_members cm
JOIN groups g ON g.conversation_id = cm.conversation_id
WHERE cm.member_id = @member_id AND cm.conversation_id > @after_conversation_id AND g.dissolved_at IS NULL
ORDER BY cm.conversation_id
LIMIT @max_rows;

-- name: ListGroupMembersWithProfiles :many
-- Paged by member id (the primary key's order): roles may change between
-- pages, ids never do.
SELECT sqlc.embed(m), cm.role, cm.joined_at
FROM conversation_members cm
JOIN members m ON m.id = cm.member_id
WHERE cm.conversation_id = @conversation_id AND cm.member_id > @after_member_id
ORDER BY cm.member_id
LIMIT @max_rows;

-- name: ListGroupInvitees :many
-- What an inviter needs to know about each id it wants to add, in one round
-- trip: does the member exist, is it in the conversation already, is it the
-- inviter's contact, and is there a block between them either way. One row
-- per id given, and the handler bounds the ids (GroupMaxInvitees). It runs
-- before any contact lock is taken, and again once they are held.
-- @sqlc-vet-disable bounded-list
SELECT ids.id::bigint AS member_id,
    EXISTS (SELECT 1 FROM members m WHERE m.id = ids.id) AS member_exists,
    EXISTS (SELECT 1 FROM conversation_members cm
            WHERE cm.conversation_id = @conversation_id AND cm.member_id = ids.id) AS already_member,
    EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = @inviter_id AND c.member_id = ids.id) AS is_contact,
    EXISTS (SELECT 1 FROM blocks b
            WHERE (b.blocker_id = ids.id AND b.blocked_id = @inviter_id)
               OR (b.blocker_id = @inviter_id AND b.blocked_id = ids.id)) AS blocked
FROM unnest(@member_ids::bigint[]) WITH ORDINALITY AS ids (id, ord)
ORDER BY ids.ord;

-- name: CreateGroupMembers :many
-- Adds plain members at once, starting with everything already sent marked
-- read (as AddConversationMember does); those already in are skipped and not
-- returned.
INSERT INTO conversation_members (conversation_id, member_id, role, read_seq)
SELECT c.id, ids.id, 1, c.last_seq
FROM conversations c, unnest(@member_ids::bigint[]) AS ids (id)
WHERE c.id = @conversation_id
ORDER BY ids.id
ON CONFLICT (conversation_id, member_id) DO NOTHING
RETURNING *;

-- name: UpdateGroupMemberRole :one
UPDATE conversation_members SET role = @role
WHERE conversation_id = @conversation_id AND member_id = @member_id
RETURNING *;

-- name: DeleteGroupMember :one
-- Removes a member whose role is below below_role: an admin (2) cannot remove
-- an admin or the owner, and nobody removes the owner (3).
DELETE FROM conversation_members
WHERE conversation_id = @conversation_id AND member_id = @member_id AND role < @below_role
RETURNING *;

-- name: DeleteGroupMembers :many
-- Everyone out at once (dissolve); returns who was in, for the event.
DELETE FROM conversation_members WHERE conversation_id = @conversation_id
RETURNING member_id;
