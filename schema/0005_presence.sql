-- +goose Up
-- Presence (docs/CLUSTER.md): when a member was last online, written by the
-- node that saw its last socket or stream close (batched, after the
-- debounce), and whether it hides its presence from everyone.
ALTER TABLE members
    ADD COLUMN last_seen_at  timestamptz,
    ADD COLUMN hide_presence boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE members DROP COLUMN last_seen_at, DROP COLUMN hide_presence;
