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

-- name: LockAttachmentUploader :exec
-- Serializes one member's uploads for the rest of the transaction, so that
-- the quota check (AttachmentBytesByUploader) sees every earlier upload and
-- two concurrent uploads cannot both fit in the last free bytes.
SELECT pg_advisory_xact_lock(hashtext('karlmalone.attachment_uploader'), hashtext(concat(@member_id::bigint)));

-- name: AttachmentBytesByUploader :one
-- What counts against a member's quota: every attachment row it uploaded
-- that garbage collection has not removed.
SELECT coalesce(sum(size), 0)::bigint AS bytes FROM attachments WHERE uploader_id = @uploader_id;

-- name: LockAttachmentContent :exec
-- Serializes uploads and garbage collection of the same content (one file
-- serves every row with its sha256): an upload that finds the file already
-- stored keeps it, so collection must not remove it in between.
SELECT pg_advisory_xact_lock(hashtext('karlmalone.attachment_content'), hashtext(encode(@sha256::bytea, 'hex')));

-- name: DeleteUnsentAttachments :many
-- Garbage collection: removes up to @max_rows attachments uploaded before
-- @before that no message carries, and returns their content sums. Rows a
-- concurrent send has locked (its foreign key check) are skipped, not
-- waited for; the send then keeps them.
DELETE FROM attachments
WHERE id IN (
    SELECT a.id FROM attachments a
    WHERE a.created_at < @before
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.attachment_id = a.id)
    ORDER BY a.id
    LIMIT @max_rows
    FOR UPDATE SKIP LOCKED
)
RETURNING sha256;

-- name: AttachmentContentInUse :one
-- Whether any attachment row still names this content.
SELECT EXISTS (SELECT 1 FROM attachments WHERE sha256 = @sha256) AS in_use;

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
