-- +goose Up

-- Replies, forwards, edits and mentions live on the message itself.
-- reply_to_seq quotes a message of the same conversation (its preview is read
-- live, so a recall or an edit of the quoted message shows at once);
-- forwarded marks a copy made by ForwardMessage; edited_at is set by the last
-- edit (only the current text is kept); mentions are member ids of the group,
-- mention_everyone the owner's or an admin's @everyone.
ALTER TABLE messages
    ADD COLUMN reply_to_seq      bigint,
    ADD COLUMN forwarded         boolean     NOT NULL DEFAULT false,
    ADD COLUMN edited_at         timestamptz,
    ADD COLUMN mentions          bigint[],
    ADD COLUMN mention_everyone  boolean     NOT NULL DEFAULT false,
    ADD CONSTRAINT messages_reply_before CHECK (reply_to_seq IS NULL OR (reply_to_seq > 0 AND reply_to_seq < seq));
-- mentioned_me: a member's unread mentions are found through this index alone,
-- however many plain messages it has not read.
CREATE INDEX messages_mentions ON messages (conversation_id, seq)
    WHERE mentions IS NOT NULL OR mention_everyone;

-- Reactions: one emoji per member per message.
CREATE TABLE message_reactions (
    conversation_id bigint      NOT NULL,
    seq             bigint      NOT NULL,
    member_id       bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    emoji           text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq, member_id),
    FOREIGN KEY (conversation_id, seq) REFERENCES messages (conversation_id, seq) ON DELETE CASCADE,
    CHECK (octet_length(emoji) BETWEEN 1 AND 64)
);

-- Per-member conversation settings. muted_until: muted until then (NULL: not
-- by time); muted_forever: until unmuted. pinned_at orders pinned
-- conversations (latest pin first). cleared_seq is the "clear history for me"
-- floor: the member sees only messages after it.
ALTER TABLE conversation_members
    ADD COLUMN muted_until   timestamptz,
    ADD COLUMN muted_forever boolean     NOT NULL DEFAULT false,
    ADD COLUMN pinned_at     timestamptz,
    ADD COLUMN archived      boolean     NOT NULL DEFAULT false,
    ADD COLUMN cleared_seq   bigint      NOT NULL DEFAULT 0,
    ADD CONSTRAINT conversation_members_cleared_nonnegative CHECK (cleared_seq >= 0);

-- +goose Down
ALTER TABLE conversation_members
    DROP CONSTRAINT conversation_members_cleared_nonnegative,
    DROP COLUMN cleared_seq,
    DROP COLUMN archived,
    DROP COLUMN pinned_at,
    DROP COLUMN muted_forever,
    DROP COLUMN muted_until;
DROP TABLE message_reactions;
DROP INDEX messages_mentions;
ALTER TABLE messages
    DROP CONSTRAINT messages_reply_before,
    DROP COLUMN mention_everyone,
    DROP COLUMN mentions,
    DROP COLUMN edited_at,
    DROP COLUMN forwarded,
    DROP COLUMN reply_to_seq;
