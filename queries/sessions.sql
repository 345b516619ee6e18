-- name: CreateSession :one
INSERT INTO sessions (member_id, token_hash, device_name, expires_at)
VALUES (@member_id, @token_hash, @device_name, @expires_at)
RETURNING *;

-- name: GetSessionByTokenHash :one
-- Only live sessions: an expired token is as dead as a revoked one.
SELECT * FROM sessions WHERE token_hash = @token_hash AND expires_at > now();

-- name: TouchSession :exec
UPDATE sessions SET last_seen_at = now() WHERE id = @id;

-- name: ListSessionsByMember :many
-- Unpaged, as ListSessions has no page fields: a member's unexpired sessions,
-- which only a login with the member's password makes, and which expire
-- (DeleteExpiredSessions sweeps them). A candidate for paging should members
-- keep many devices.
-- @sqlc-vet-disable bounded-list
SELECT * FROM sessions WHERE member_id = @member_id AND expires_at > now() ORDER BY id;

-- name: DeleteSession :execrows
DELETE FROM sessions WHERE id = @id AND member_id = @member_id;

-- name: DeleteOtherSessions :many
DELETE FROM sessions WHERE member_id = @member_id AND id <> @keep_id RETURNING id;

-- name: SessionIsLive :one
-- Whether a session still exists and has not expired: a Subscribe stream
-- asks once it is registered with the hub, to catch a revocation that ran
-- between its authentication and its registration.
SELECT EXISTS (SELECT 1 FROM sessions WHERE id = @id AND expires_at > now());

-- name: DeleteExpiredSessions :execrows
-- One bounded step of the sweep: at most max_rows expired sessions, oldest
-- first (the sessions_expires_at index), so no run holds locks for long.
DELETE FROM sessions
WHERE id IN (SELECT id FROM sessions WHERE expires_at <= now() ORDER BY expires_at LIMIT @max_rows);
