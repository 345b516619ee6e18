-- +goose Up

-- Serves the sweep of expired sessions (DeleteExpiredSessions): without it,
-- each run would scan the whole table.
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- +goose Down
DROP INDEX sessions_expires_at;
