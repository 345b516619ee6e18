-- +goose Up
-- The attachment quota sums a member's uploads; garbage collection finds
-- old unsent uploads and asks whether other rows share their content.
CREATE INDEX attachments_uploader ON attachments (uploader_id);
CREATE INDEX attachments_created ON attachments (created_at);
CREATE INDEX attachments_sha256 ON attachments (sha256);

-- +goose Down
DROP INDEX attachments_sha256;
DROP INDEX attachments_created;
DROP INDEX attachments_uploader;
