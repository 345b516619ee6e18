-- name: CreateAttachment :one
INSERT INTO attachments (uploader_id, sha256, size, content_type)
VALUES (@uploader_id, @sha256, @size, @content_type)
RETURNING *;

-- name: GetAttachmentByID :one
SELECT * FROM attachments WHERE id = @id;

-- name: CanReadAttachment :one
-- The uploader, or a member of any conversation where a message carries it.
SELECT EXISTS (
    SELECT 1 FROM attachments a WHERE a.id = @attachment_id AND a.uploader_id = @member_id
) OR EXISTS (
    SELECT 1 FROM messages m
    JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.member_id = @member_id
    WHERE m.attachment_id = @attachment_id
) AS allowed;

-- name: EnsureAttachmentURLKey :one
-- Stores @key unless a key is already stored, and returns the stored one:
-- the first node to start picks the key, every node reads the same.
WITH inserted AS (
    INSERT INTO attachment_url_key (key) VALUES (@key)
    ON CONFLICT (singleton) DO NOTHING
    RETURNING key
)
SELECT key FROM inserted
UNION ALL
SELECT key FROM attachment_url_key
LIMIT 1;
