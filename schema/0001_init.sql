-- +goose Up

-- Members and their sessions (one row per signed-in device).
CREATE TABLE members (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone         text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    nickname      text        NOT NULL,
    avatar        text        NOT NULL DEFAULT '',
    gender        smallint    NOT NULL DEFAULT 0,
    memo          text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Nickname prefix search, case-insensitive, paged by id.
CREATE INDEX members_nickname_prefix ON members (lower(nickname) text_pattern_ops, id);

-- A session is revoked by deleting its row: a token whose hash is gone is dead at once.
CREATE TABLE sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id    bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    token_hash   bytea       NOT NULL UNIQUE,
    device_name  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_member ON sessions (member_id, id);

-- Conversations: one per pair of members (kind 1, the pair stored low id first so
-- it is unique and survives a contact being removed and re-added) and one per
-- group (kind 2). last_seq is the gapless message counter.
CREATE TABLE conversations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            smallint    NOT NULL,
    member_lo       bigint REFERENCES members (id),
    member_hi       bigint REFERENCES members (id),
    last_seq        bigint      NOT NULL DEFAULT 0,
    last_message_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 1 AND member_lo < member_hi) OR (kind = 2 AND member_lo IS NULL AND member_hi IS NULL))
);
CREATE UNIQUE INDEX conversations_direct_pair ON conversations (member_lo, member_hi) WHERE kind = 1;

-- Who may read a conversation, and how far each has read. For a group it is
-- the membership itself (role 1 member, 2 admin, 3 owner); for a direct
-- conversation the two members with role 0. Unread = last_seq - read_seq.
CREATE TABLE conversation_members (
    conversation_id bigint      NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    member_id       bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    role            smallint    NOT NULL DEFAULT 0,
    read_seq        bigint      NOT NULL DEFAULT 0,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, member_id)
);
CREATE INDEX conversation_members_member ON conversation_members (member_id, conversation_id);

-- Friend requests: status 1 pending, 2 accepted, 3 declined.
CREATE TABLE friend_requests (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_member_id bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    to_member_id   bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    note           text        NOT NULL DEFAULT '',
    status         smallint    NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    responded_at   timestamptz,
    CHECK (from_member_id <> to_member_id)
);
-- At most one pending request from A to B.
CREATE UNIQUE INDEX friend_requests_one_pending ON friend_requests (from_member_id, to_member_id) WHERE status = 1;
CREATE INDEX friend_requests_to ON friend_requests (to_member_id, id);
CREATE INDEX friend_requests_from ON friend_requests (from_member_id, id);

-- Contacts: one row per side, so each side keeps its own remark.
CREATE TABLE contacts (
    owner_id        bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    member_id       bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    remark          text        NOT NULL DEFAULT '',
    conversation_id bigint      NOT NULL REFERENCES conversations (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, member_id),
    CHECK (owner_id <> member_id)
);

CREATE TABLE blocks (
    blocker_id bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    blocked_id bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_blocked ON blocks (blocked_id, blocker_id);

-- Groups: join_policy 1 invite only, 2 open. Membership lives in
-- conversation_members of the group's conversation; member_count mirrors it.
CREATE TABLE groups (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL,
    avatar          text        NOT NULL DEFAULT '',
    notice          text        NOT NULL DEFAULT '',
    owner_id        bigint      NOT NULL REFERENCES members (id),
    join_policy     smallint    NOT NULL DEFAULT 1,
    member_count    integer     NOT NULL DEFAULT 0,
    max_members     integer     NOT NULL,
    conversation_id bigint      NOT NULL UNIQUE REFERENCES conversations (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    dissolved_at    timestamptz,
    CHECK (member_count <= max_members)
);

-- Uploaded files, stored content-addressed by sha256; one row per upload so
-- access follows the uploader and the conversations the row is sent in.
CREATE TABLE attachments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uploader_id  bigint      NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    sha256       bytea       NOT NULL,
    size         bigint      NOT NULL,
    content_type text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Messages: (conversation_id, seq) is the gapless order; (sender_id,
-- client_msg_id) makes SendMessage idempotent.
CREATE TABLE messages (
    conversation_id bigint      NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    sender_id       bigint      NOT NULL REFERENCES members (id),
    client_msg_id   text        NOT NULL,
    body            text,
    attachment_id   bigint REFERENCES attachments (id),
    attachment_kind smallint,
    caption         text,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    recalled_at     timestamptz,
    PRIMARY KEY (conversation_id, seq),
    CHECK ((body IS NULL) <> (attachment_id IS NULL) OR recalled_at IS NOT NULL)
);
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, client_msg_id);
CREATE INDEX messages_attachment ON messages (attachment_id) WHERE attachment_id IS NOT NULL;

-- +goose Down
DROP TABLE messages;
DROP TABLE attachments;
DROP TABLE groups;
DROP TABLE blocks;
DROP TABLE contacts;
DROP TABLE friend_requests;
DROP TABLE conversation_members;
DROP TABLE conversations;
DROP TABLE sessions;
DROP TABLE members;
