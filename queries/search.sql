-- Full-text search over the messages a member may read (ChatService.SearchMessages).
-- message_search_vector (schema/0008) is the indexed expression; the query
-- must call it exactly so for the GIN index messages_search to serve it.
-- What a member may read is what ListMessages shows it: the conversations it
-- is a member of now (a group it left, or one dissolved, is no longer
-- searched at all), never a recalled message.
-- TODO(h14a floor): when conversation_members gains the per-member "clear
-- history" floor, add `AND m.seq > cm.<floor column>` to both queries below.
-- Newest first, keyed on (sent_at, conversation_id, seq), which never changes
-- for a message; the first page passes the largest key.

-- name: SearchMessagesInConversation :many
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size
FROM conversation_members cm
JOIN messages m ON m.conversation_id = cm.conversation_id
LEFT JOIN attachments a ON a.id = m.attachment_id
WHERE cm.member_id = @member_id AND cm.conversation_id = @conversation_id
  AND message_search_vector(m.body, m.caption) @@ websearch_to_tsquery('simple', @query::text)
  AND m.recalled_at IS NULL
  AND (m.sent_at, m.conversation_id, m.seq) < (@before_sent_at::timestamptz, @before_conversation_id::bigint, @before_seq::bigint)
ORDER BY m.sent_at DESC, m.conversation_id DESC, m.seq DESC
LIMIT @max_rows;

-- name: SearchMessagesAll :many
SELECT sqlc.embed(m), a.content_type AS attachment_content_type, a.size AS attachment_size
FROM conversation_members cm
JOIN messages m ON m.conversation_id = cm.conversation_id
LEFT JOIN attachments a ON a.id = m.attachment_id
WHERE cm.member_id = @member_id
  AND message_search_vector(m.body, m.caption) @@ websearch_to_tsquery('simple', @query::text)
  AND m.recalled_at IS NULL
  AND (m.sent_at, m.conversation_id, m.seq) < (@before_sent_at::timestamptz, @before_conversation_id::bigint, @before_seq::bigint)
ORDER BY m.sent_at DESC, m.conversation_id DESC, m.seq DESC
LIMIT @max_rows;
