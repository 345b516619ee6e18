-- Full-text search over the messages a member may read (ChatService.SearchMessages).
-- message_search_vector (schema/0008) is the indexed expression; the query
-- must call it exactly so for the GIN index messages_search to serve it.
-- What a member may read is what ListMessages shows it: the conversations it
-- is a member of now (a group it left, or one dissolved, is no longer
-- searched at all), above the member's own floor (cleared_seq, "clear
-- history for me"), never a recalled message. Replies carry their quote as
-- the read queries of messages.sql join it.

-- name: SearchMessages :many
-- Newest first, keyed on (sent_at, conversation_id, seq), which never changes
-- for a message; the first page passes a key above every message. One
-- conversation, or all the member's (@conversation_id 0).
-- Each conversation is searched on its own (the LATERAL) for its newest
-- max_rows matches, and those few are merged: within a conversation seq
-- order is sent_at order (CreateMessage stamps sent_at under the
-- conversation's lock), so the planner may walk a conversation backwards on
-- its primary key and stop at max_rows matches when a word is common, or
-- take the GIN index when it is rare (docs/BENCHMARKS.md, "Search"). The
-- hits are MATERIALIZED, sorted and cut before the messages are read: left
-- to itself the planner would drive the whole thing from a scan of messages
-- in sent_at order.
WITH hits AS MATERIALIZED (
    SELECT cm.conversation_id, hit.seq, hit.sent_at
    FROM conversation_members cm
    CROSS JOIN LATERAL (
        SELECT mm.seq, mm.sent_at FROM messages mm
        WHERE mm.conversation_id = cm.conversation_id
          AND message_search_vector(mm.body, mm.caption) @@ websearch_to_tsquery('simple', @query::text)
          AND mm.recalled_at IS NULL
          AND mm.seq > cm.cleared_seq
          AND (mm.sent_at, mm.conversation_id, mm.seq) < (@before_sent_at::timestamptz, @before_conversation_id::bigint, @before_seq::bigint)
        ORDER BY mm.seq DESC
        LIMIT @max_rows
    ) hit
    WHERE cm.member_id = @member_id AND (@conversation_id::bigint = 0 OR cm.conversation_id = @conversation_id::bigint)
    ORDER BY hit.sent_at DESC, cm.conversation_id DESC, hit.seq DESC
    LIMIT @max_rows
)
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size,
       q.sender_id AS quoted_sender_id, q.body AS quoted_body, q.attachment_kind AS quoted_attachment_kind,
       q.caption AS quoted_caption, q.recalled_at AS quoted_recalled_at
FROM hits
JOIN messages m ON m.conversation_id = hits.conversation_id AND m.seq = hits.seq
LEFT JOIN attachments a ON a.id = m.attachment_id
LEFT JOIN messages q ON q.conversation_id = m.conversation_id AND q.seq = m.reply_to_seq
ORDER BY m.sent_at DESC, m.conversation_id DESC, m.seq DESC;
