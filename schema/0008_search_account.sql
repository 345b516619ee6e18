-- +goose Up

-- Full-text search over messages (ChatService.SearchMessages). The vector is
-- an expression, not a stored column, so the messages table and every query
-- that reads it with RETURNING * or sqlc.embed stay as they are; the index
-- holds the only copy. The 'simple' configuration lower-cases and splits on
-- non-letters without stemming or stop words, so it works the same for every
-- language (at the price of no English stemming: "runs" does not find "run").
-- message_search_vector is the one place the expression is written: the index
-- and the query both call it, which is what lets the planner use the index.
-- A recalled message has neither body nor caption, so its vector is empty.
-- +goose StatementBegin
CREATE FUNCTION message_search_vector(body text, caption text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_tsvector('simple'::regconfig, coalesce(body, '') || ' ' || coalesce(caption, ''));
-- +goose StatementEnd
CREATE INDEX messages_search ON messages USING gin (message_search_vector(body, caption));

-- Leaving for good (MemberService.DeleteAccount): the row stays as a
-- tombstone, because messages keep their sender_id for the other members.
-- deleted_at set means the profile is cleared and the phone freed.
ALTER TABLE members ADD COLUMN deleted_at timestamptz;

-- +goose Down
ALTER TABLE members DROP COLUMN deleted_at;
DROP INDEX messages_search;
DROP FUNCTION message_search_vector(text, text);
