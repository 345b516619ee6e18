-- Messages and the read cursors of ChatService.

-- name: GetDirectSendTarget :one
-- The conversation with a contact, and whether either side blocked the other.
-- No row: the peer is not the sender's contact.
SELECT ct.conversation_id,
       EXISTS (
           SELECT 1 FROM blocks b
           WHERE (b.blocker_id = @sender_id AND b.blocked_id = @peer_id)
              OR (b.blocker_id = @peer_id AND b.blocked_id = @sender_id)
       ) AS blocked
FROM contacts ct
WHERE ct.owner_id = @sender_id AND ct.member_id = @peer_id;

-- name: GetGroupSendTarget :one
-- A group's conversation, whether it is dissolved, its join policy, and
-- whether the sender is a current member. No row: no such group.
SELECT g.conversation_id, g.join_policy,
       (g.dissolved_at IS NOT NULL)::boolean AS dissolved,
       EXISTS (
           SELECT 1 FROM conversation_members cm
           WHERE cm.conversation_id = g.conversation_id AND cm.member_id = @sender_id
       ) AS is_member
FROM groups g
WHERE g.id = @group_id;

-- name: GetConversationAccess :one
-- A member's view of one conversation, and whether it may post there now
-- (the rules of SendMessage). No row: not a member.
SELECT c.kind, c.last_seq, cm.read_seq,
       CASE WHEN c.kind = 1 THEN
           EXISTS (
               SELECT 1 FROM contacts ct
               WHERE ct.owner_id = @member_id AND ct.conversation_id = c.id
           ) AND NOT EXISTS (
               SELECT 1 FROM blocks b
               WHERE (b.blocker_id = c.member_lo AND b.blocked_id = c.member_hi)
                  OR (b.blocker_id = c.member_hi AND b.blocked_id = c.member_lo)
           )
       ELSE
           EXISTS (SELECT 1 FROM groups g WHERE g.conversation_id = c.id AND g.dissolved_at IS NULL)
       END::boolean AS can_post
FROM conversation_members cm
JOIN conversations c ON c.id = cm.conversation_id
WHERE cm.conversation_id = @conversation_id AND cm.member_id = @member_id;

-- name: CreateMessage :batchone
-- Stores a message under the next seq of its conversation in one statement,
-- deciding in the same snapshot whether the sender may post there: to a peer
-- only while they are contacts and neither blocked the other, to a group only
-- while it is live and the sender is a member. No row: not allowed (the
-- caller asks GetDirectSendTarget / GetGroupSendTarget why), or a
-- client_msg_id the sender already used (a retry, even one earlier in the
-- same batch: it costs no seq and aborts nothing).
-- The UPDATE takes the conversation's row lock, so concurrent senders to one
-- conversation (and only to it) queue there and get consecutive seqs; a
-- statement that fails rolls its bump back and leaves no gap.
-- clock_timestamp() is read after the lock is granted, so sent_at grows with
-- seq. The sender's own read cursor moves to the new seq (its own messages
-- are never unread), and recipient_ids are the members at that moment. A
-- batch runs as one implicit transaction: one commit for all its messages
-- (see server/sendpipe.go). A reply's reply_to_seq was checked before
-- (GetReplyQuote: messages are never deleted, so it stays valid);
-- mention_everyone is refused here unless the sender is the group's owner or
-- an admin, and mentions keep only the conversation's members.
WITH target AS (
    SELECT ct.conversation_id AS id
    FROM contacts ct
    WHERE ct.owner_id = @sender_id AND ct.member_id = sqlc.narg(peer_id)::bigint
      AND NOT EXISTS (
          SELECT 1 FROM blocks b
          WHERE (b.blocker_id = @sender_id AND b.blocked_id = sqlc.narg(peer_id)::bigint)
             OR (b.blocker_id = sqlc.narg(peer_id)::bigint AND b.blocked_id = @sender_id)
      )
    UNION ALL
    SELECT g.conversation_id
    FROM groups g
    WHERE g.id = sqlc.narg(group_id)::bigint AND g.dissolved_at IS NULL
), c AS (
    UPDATE conversations
    SET last_seq = last_seq + 1, last_message_at = clock_timestamp()
    WHERE id = (SELECT id FROM target LIMIT 1)
      AND EXISTS (
          SELECT 1 FROM conversation_members cm
          WHERE cm.conversation_id = conversations.id AND cm.member_id = @sender_id
      )
      AND NOT EXISTS (
          SELECT 1 FROM messages m
          WHERE m.sender_id = @sender_id AND m.client_msg_id = @client_msg_id
      )
      -- @everyone is the owner's and the admins' (docs/CHAT-FEATURES.md).
      AND (NOT @mention_everyone::boolean OR EXISTS (
          SELECT 1 FROM conversation_members cm
          WHERE cm.conversation_id = conversations.id AND cm.member_id = @sender_id AND cm.role >= 2
      ))
    RETURNING id, last_seq, last_message_at
), r AS (
    UPDATE conversation_members cm SET read_seq = c.last_seq
    FROM c
    WHERE cm.conversation_id = c.id AND cm.member_id = @sender_id AND cm.read_seq < c.last_seq
)
INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body, attachment_id, attachment_kind, caption, sent_at,
                      reply_to_seq, forwarded, mentions, mention_everyone)
SELECT c.id, c.last_seq, @sender_id, @client_msg_id, sqlc.narg(body), sqlc.narg(attachment_id),
       sqlc.narg(attachment_kind), sqlc.narg(caption), c.last_message_at,
       sqlc.narg(reply_to_seq)::bigint, @forwarded::boolean,
       -- Only members of the conversation are mentioned; NULL when none is
       -- (plain messages stay out of the messages_mentions index).
       CASE WHEN sqlc.narg(mentions)::bigint[] IS NOT NULL THEN
           nullif(ARRAY(
               SELECT cm.member_id FROM conversation_members cm
               WHERE cm.conversation_id = c.id AND cm.member_id = ANY (sqlc.narg(mentions)::bigint[])
               ORDER BY cm.member_id
           ), '{}')
       END,
       @mention_everyone::boolean
FROM c
RETURNING *,
    ARRAY(
        SELECT cm.member_id FROM conversation_members cm WHERE cm.conversation_id = messages.conversation_id
    )::bigint[] AS recipient_ids;

-- name: GetMessageByClientMsgID :one
-- The message a sender already stored under an idempotency key.
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size,
       q.sender_id AS quoted_sender_id, q.body AS quoted_body, q.attachment_kind AS quoted_attachment_kind,
       q.caption AS quoted_caption, q.recalled_at AS quoted_recalled_at
FROM messages m
LEFT JOIN attachments a ON a.id = m.attachment_id
LEFT JOIN messages q ON q.conversation_id = m.conversation_id AND q.seq = m.reply_to_seq
WHERE m.sender_id = @sender_id AND m.client_msg_id = @client_msg_id;

-- name: GetMessageForMember :one
-- One message, if member_id may read its conversation and has not cleared it
-- (cleared_seq).
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size,
       q.sender_id AS quoted_sender_id, q.body AS quoted_body, q.attachment_kind AS quoted_attachment_kind,
       q.caption AS quoted_caption, q.recalled_at AS quoted_recalled_at
FROM messages m
LEFT JOIN attachments a ON a.id = m.attachment_id
LEFT JOIN messages q ON q.conversation_id = m.conversation_id AND q.seq = m.reply_to_seq
WHERE m.conversation_id = @conversation_id AND m.seq = @seq
  AND EXISTS (
      SELECT 1 FROM conversation_members cm
      WHERE cm.conversation_id = m.conversation_id AND cm.member_id = @member_id AND m.seq > cm.cleared_seq
  );

-- name: ListMessagesAfterSeq :many
-- The oldest messages after a seq, ascending; none at or below the reader's
-- floor (cleared_seq).
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size,
       q.sender_id AS quoted_sender_id, q.body AS quoted_body, q.attachment_kind AS quoted_attachment_kind,
       q.caption AS quoted_caption, q.recalled_at AS quoted_recalled_at
FROM messages m
LEFT JOIN attachments a ON a.id = m.attachment_id
LEFT JOIN messages q ON q.conversation_id = m.conversation_id AND q.seq = m.reply_to_seq
WHERE m.conversation_id = @conversation_id AND m.seq > @after_seq AND m.seq > @floor_seq
ORDER BY m.seq
LIMIT @max_rows;

-- name: ListMessagesBeforeSeq :many
-- The newest messages before a seq, descending (the caller reverses them);
-- none at or below the reader's floor (cleared_seq).
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size,
       q.sender_id AS quoted_sender_id, q.body AS quoted_body, q.attachment_kind AS quoted_attachment_kind,
       q.caption AS quoted_caption, q.recalled_at AS quoted_recalled_at
FROM messages m
LEFT JOIN attachments a ON a.id = m.attachment_id
LEFT JOIN messages q ON q.conversation_id = m.conversation_id AND q.seq = m.reply_to_seq
WHERE m.conversation_id = @conversation_id AND m.seq < @before_seq AND m.seq > @floor_seq
ORDER BY m.seq DESC
LIMIT @max_rows;

-- name: RecallMessage :one
-- Withdraws a message: only by its sender while still a member, only within
-- the window, judged by the database clock that also stamped sent_at. The
-- content goes, so the attachment is no longer readable through it.
UPDATE messages m
SET body = NULL, attachment_id = NULL, attachment_kind = NULL, caption = NULL, recalled_at = clock_timestamp()
WHERE m.conversation_id = @conversation_id AND m.seq = @seq
  AND m.sender_id = @sender_id
  AND m.recalled_at IS NULL
  AND m.sent_at > clock_timestamp() - sqlc.arg(window_micros)::bigint * '1 microsecond'::interval
  AND EXISTS (
      SELECT 1 FROM conversation_members cm
      WHERE cm.conversation_id = m.conversation_id AND cm.member_id = @sender_id
  )
RETURNING *;

-- name: MarkConversationRead :one
-- Moves a member's read cursor forward to seq, never back and never past the
-- last message. The row lock makes old_read_seq the value this statement
-- replaced, so the caller knows whether the cursor moved. No row: not a member.
WITH cur AS (
    SELECT cm.conversation_id, cm.member_id, cm.read_seq, c.last_seq
    FROM conversation_members cm
    JOIN conversations c ON c.id = cm.conversation_id
    WHERE cm.conversation_id = @conversation_id AND cm.member_id = @member_id
    FOR UPDATE OF cm
), upd AS (
    UPDATE conversation_members cm SET read_seq = @seq::bigint
    FROM cur
    WHERE cm.conversation_id = cur.conversation_id AND cm.member_id = cur.member_id
      AND @seq::bigint > cur.read_seq AND @seq::bigint <= cur.last_seq
    RETURNING cm.read_seq
)
SELECT cur.read_seq AS old_read_seq, cur.last_seq,
       coalesce((SELECT upd.read_seq FROM upd), cur.read_seq)::bigint AS read_seq
FROM cur;

-- name: ListConversationsByMember :many
-- A member's conversations, pinned ones first (latest pin first), then by
-- recent activity (last message, else creation), newest first, after the
-- keyset (pin_rank, active_at, id) of the previous page, with everything a
-- list row shows: the member's settings, the peer or the group, the last
-- message (unless the member cleared it) and whether an unread message
-- mentions the member (found through the messages_mentions index alone).
SELECT c.id, c.kind, c.last_seq, cm.read_seq,
       cm.cleared_seq, cm.muted_until, cm.muted_forever, cm.pinned_at, cm.archived,
       coalesce(c.last_message_at, c.created_at)::timestamptz AS active_at,
       coalesce(extract(epoch FROM cm.pinned_at) * 1000000, 0)::bigint AS pin_rank,
       EXISTS (
           SELECT 1 FROM messages mm
           WHERE mm.conversation_id = c.id AND mm.seq > greatest(cm.read_seq, cm.cleared_seq)
             AND (mm.mentions IS NOT NULL OR mm.mention_everyone)
             AND (mm.mention_everyone OR @member_id::bigint = ANY (mm.mentions))
             AND mm.recalled_at IS NULL AND mm.sender_id <> @member_id::bigint
       ) AS mentioned_me,
       p.id AS peer_id, p.nickname AS peer_nickname, p.avatar AS peer_avatar, p.gender AS peer_gender,
       p.memo AS peer_memo, p.created_at AS peer_created_at,
       g.id AS group_id, g.name AS group_name, g.avatar AS group_avatar, g.notice AS group_notice,
       g.owner_id AS group_owner_id, g.member_count AS group_member_count, g.max_members AS group_max_members,
       g.join_policy AS group_join_policy, g.created_at AS group_created_at,
       m.seq AS msg_seq, m.sender_id AS msg_sender_id, m.client_msg_id AS msg_client_msg_id, m.body AS msg_body,
       m.attachment_id AS msg_attachment_id, m.attachment_kind AS msg_attachment_kind, m.caption AS msg_caption,
       m.sent_at AS msg_sent_at, m.recalled_at AS msg_recalled_at,
       m.reply_to_seq AS msg_reply_to_seq, m.forwarded AS msg_forwarded, m.edited_at AS msg_edited_at,
       m.mentions AS msg_mentions, m.mention_everyone AS msg_mention_everyone,
       a.content_type AS msg_attachment_content_type, a.size AS msg_attachment_size,
       q.sender_id AS quoted_sender_id, q.body AS quoted_body, q.attachment_kind AS quoted_attachment_kind,
       q.caption AS quoted_caption, q.recalled_at AS quoted_recalled_at
FROM conversation_members cm
JOIN conversations c ON c.id = cm.conversation_id
LEFT JOIN members p ON c.kind = 1
    AND p.id = CASE WHEN c.member_lo = @member_id::bigint THEN c.member_hi ELSE c.member_lo END
LEFT JOIN groups g ON c.kind = 2 AND g.conversation_id = c.id
LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq AND m.seq > cm.cleared_seq
LEFT JOIN attachments a ON a.id = m.attachment_id
LEFT JOIN messages q ON q.conversation_id = m.conversation_id AND q.seq = m.reply_to_seq
WHERE cm.member_id = @member_id::bigint
  AND (sqlc.narg(after_active_at)::timestamptz IS NULL
       OR (coalesce(extract(epoch FROM cm.pinned_at) * 1000000, 0)::bigint, coalesce(c.last_message_at, c.created_at), c.id)
          < (@after_pin_rank::bigint, sqlc.narg(after_active_at)::timestamptz, @after_id::bigint))
ORDER BY pin_rank DESC, active_at DESC, c.id DESC
LIMIT @max_rows;

-- name: GetReplyQuote :one
-- The message a reply quotes: in the conversation the reply goes to (with a
-- contact, or a group's), and one the sender may read (a member, after its
-- floor). No row: no such message there for the sender.
SELECT m.seq, m.sender_id, m.body, m.attachment_kind, m.caption, m.recalled_at
FROM messages m
JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.member_id = @sender_id
WHERE m.seq = @seq AND m.seq > cm.cleared_seq
  AND m.conversation_id = (
      SELECT ct.conversation_id FROM contacts ct
      WHERE ct.owner_id = @sender_id AND ct.member_id = sqlc.narg(peer_id)::bigint
      UNION ALL
      SELECT g.conversation_id FROM groups g WHERE g.id = sqlc.narg(group_id)::bigint
      LIMIT 1
  );

-- name: EditMessage :one
-- Replaces the text of a message: only by its sender while still a member,
-- only a text message of its own (not recalled, not a forwarded copy), only
-- within the window, judged by the database clock that also stamped sent_at.
-- The earlier text is not kept.
UPDATE messages m
SET body = @body, edited_at = clock_timestamp()
WHERE m.conversation_id = @conversation_id AND m.seq = @seq
  AND m.sender_id = @sender_id
  AND m.recalled_at IS NULL AND m.body IS NOT NULL AND NOT m.forwarded
  AND m.sent_at > clock_timestamp() - sqlc.arg(window_micros)::bigint * '1 microsecond'::interval
  AND EXISTS (
      SELECT 1 FROM conversation_members cm
      WHERE cm.conversation_id = m.conversation_id AND cm.member_id = @sender_id
  )
RETURNING *;

-- name: SetReaction :one
-- Sets a member's one reaction to a message it may read (a member, after its
-- floor, not recalled), replacing any earlier one. The reaction's row lock
-- makes previous_emoji the value this statement replaced. No row: no such
-- message for the member.
WITH target AS (
    SELECT m.conversation_id, m.seq
    FROM messages m
    JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.member_id = @member_id
    WHERE m.conversation_id = @conversation_id AND m.seq = @seq AND m.seq > cm.cleared_seq AND m.recalled_at IS NULL
), prev AS (
    SELECT r.emoji FROM message_reactions r
    WHERE r.conversation_id = @conversation_id AND r.seq = @seq AND r.member_id = @member_id
    FOR UPDATE
), up AS (
    INSERT INTO message_reactions (conversation_id, seq, member_id, emoji)
    -- Joining prev locks the old reaction before the insert replaces it (a
    -- CTE read after the insert would skip the row this statement changed).
    SELECT target.conversation_id, target.seq, @member_id, @emoji FROM target LEFT JOIN prev ON true
    ON CONFLICT (conversation_id, seq, member_id) DO UPDATE SET emoji = excluded.emoji, created_at = now()
    RETURNING emoji
)
SELECT up.emoji, coalesce((SELECT prev.emoji FROM prev), '')::text AS previous_emoji
FROM up;

-- name: ClearReaction :one
-- Clears a member's reaction to a message of a conversation it belongs to.
-- No row: it had none (or may not see the conversation).
DELETE FROM message_reactions r
WHERE r.conversation_id = @conversation_id AND r.seq = @seq AND r.member_id = @member_id
  AND EXISTS (
      SELECT 1 FROM conversation_members cm
      WHERE cm.conversation_id = r.conversation_id AND cm.member_id = @member_id
  )
RETURNING r.emoji;

-- name: ListReactionCounts :many
-- The reactions to some messages of a conversation, per message and emoji,
-- in the order each emoji first came, and whether member_id is among them.
-- Unpaged: the messages are one page of ListMessages (at most 200), and a
-- message has at most one reaction per member of its conversation.
-- @sqlc-vet-disable bounded-list
SELECT r.seq, r.emoji, count(*)::integer AS count, bool_or(r.member_id = @member_id)::boolean AS reacted_by_me
FROM message_reactions r
WHERE r.conversation_id = @conversation_id AND r.seq = ANY (@seqs::bigint[])
GROUP BY r.seq, r.emoji
ORDER BY r.seq, min(r.created_at), r.emoji;
