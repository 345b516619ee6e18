-- name: ListPresenceWatchers :many
-- Who hears of the presence changes of @member_ids, as (member, watcher)
-- pairs: each member's contacts (a contact is one row per side, so its own
-- rows name them) and its fellow members of live groups, but nobody for a
-- member who hides its presence, and nobody it blocked. One statement for
-- every member whose debounce window ended together.
-- Unpaged: the recipients of these events, as a group message's are (a group
-- is bounded by its max_members); the caller pushes to all of them.
-- @sqlc-vet-disable bounded-list
SELECT w.member_id::bigint AS member_id, w.watcher_id::bigint AS watcher_id FROM (
    SELECT c.owner_id AS member_id, c.member_id AS watcher_id
    FROM contacts c WHERE c.owner_id = ANY(@member_ids::bigint[])
    UNION
    SELECT mine.member_id, fellow.member_id FROM conversation_members mine
    JOIN groups g ON g.conversation_id = mine.conversation_id AND g.dissolved_at IS NULL
    JOIN conversation_members fellow ON fellow.conversation_id = mine.conversation_id
    WHERE mine.member_id = ANY(@member_ids::bigint[]) AND fellow.member_id <> mine.member_id
) w
JOIN members m ON m.id = w.member_id AND NOT m.hide_presence
WHERE NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = w.member_id AND b.blocked_id = w.watcher_id)
ORDER BY w.member_id;

-- name: ListVisiblePresence :many
-- Of @ids, the members whose presence @caller_id may see, with when each
-- was last seen: the caller itself, and its contacts and fellow members of
-- live groups who neither hide their presence nor blocked the caller.
-- Bounded by the ids given (GetMemberPresence takes at most 200).
-- @sqlc-vet-disable bounded-list
SELECT m.id, m.last_seen_at FROM members m
WHERE m.id = ANY(@ids::bigint[])
  AND (m.id = @caller_id OR (
        NOT m.hide_presence
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = m.id AND b.blocked_id = @caller_id)
    AND (EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = @caller_id AND c.member_id = m.id)
      OR EXISTS (SELECT 1 FROM conversation_members mine
                 JOIN groups g ON g.conversation_id = mine.conversation_id AND g.dissolved_at IS NULL
                 JOIN conversation_members fellow ON fellow.conversation_id = mine.conversation_id
                 WHERE mine.member_id = @caller_id AND fellow.member_id = m.id))))
ORDER BY m.id;

-- name: SetMembersLastSeen :exec
-- Records that members went offline at about @at, many at once (one
-- statement per debounce round, all with the round's time); a later time
-- never goes back.
UPDATE members SET last_seen_at = @at
WHERE id = ANY(@ids::bigint[]) AND (last_seen_at IS NULL OR last_seen_at < @at);
