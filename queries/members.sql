-- name: CreateMember :one
INSERT INTO members (phone, password_hash, nickname, avatar, gender, memo)
VALUES (@phone, @password_hash, @nickname, @avatar, @gender, @memo)
RETURNING *;

-- name: GetMemberByID :one
SELECT * FROM members WHERE id = @id;

-- name: GetMemberByPhone :one
SELECT * FROM members WHERE phone = @phone;

-- name: ListMembersByIDs :many
-- One row per id given; callers bound the ids (the group limit).
-- @sqlc-vet-disable bounded-list
SELECT * FROM members WHERE id = ANY(@ids::bigint[]) ORDER BY id;

-- name: UpdateMemberProfile :one
UPDATE members SET
    nickname   = coalesce(sqlc.narg(nickname), nickname),
    avatar     = coalesce(sqlc.narg(avatar), avatar),
    gender     = coalesce(sqlc.narg(gender), gender),
    memo       = coalesce(sqlc.narg(memo), memo),
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: UpdateMemberPassword :exec
UPDATE members SET password_hash = @password_hash, updated_at = now() WHERE id = @id;

-- name: RehashMemberPassword :execrows
-- Replaces a hash made with older parameters by one of the same password
-- made with today's, unless the password changed meanwhile (old_hash).
UPDATE members SET password_hash = @new_hash WHERE id = @id AND password_hash = @old_hash;

-- name: SearchMembersByNicknamePrefix :many
-- @pattern is the escaped, lower-cased prefix followed by '%'.
SELECT * FROM members
WHERE lower(nickname) LIKE @pattern::text AND id > @after_id AND deleted_at IS NULL
ORDER BY id
LIMIT @max_rows;
