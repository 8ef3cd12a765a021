-- The natter database schema, as a list of migrations.
--
-- Each section below starts with a `-- version: N` line and is applied, in one transaction,
-- to a database whose `PRAGMA user_version` is lower than N; then user_version becomes N.
-- A released section is never edited: a change to the schema is a new section at the end.
-- `application_id` marks the file as a natter database ('NATT').

-- version: 1
PRAGMA application_id = 1312904276;

-- Accounts. Email and username are unique case-insensitively. The password column holds
-- an argon2id PHC string over the client's md5 digest, never the digest itself.
-- Ids are never reused (AUTOINCREMENT), so nothing left over from a deleted account can
-- ever point at a new one.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL -- unix seconds
);

-- The friends list: one row per direction, so a login reads its own rows only, most
-- recent first. `last_id` is the id of the latest personal message between the two.
CREATE TABLE contacts (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) WITHOUT ROWID;
CREATE INDEX contacts_by_recency ON contacts(user_id, last_id DESC);

-- version: 2
-- Personal messages. Ids are given by the server from `meta.last_message_id` (never
-- reused, even after rows are deleted), so they increase with every message and the table
-- only ever grows at its end. A message counts as delivered when its id is at or below its
-- recipient's `users.delivered_upto` watermark: one UPDATE per recipient per loop
-- iteration instead of one per message.
ALTER TABLE users ADD COLUMN delivered_upto INTEGER NOT NULL DEFAULT 0;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('last_message_id', 0);

-- No foreign keys here: checking two parents on every insert is the hot path's biggest
-- avoidable cost. Deleting an account deletes its messages explicitly (store/users.rs).
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL,
    sender_id    INTEGER NOT NULL,
    body         TEXT NOT NULL,
    media        TEXT,
    client_time  INTEGER NOT NULL, -- the client's `time`, or the server's when absent
    server_time  INTEGER NOT NULL, -- unix seconds when stored
    client_id    TEXT              -- the sender's idempotency key, if it gave one
);
-- A recipient's backlog in id order (catch-up at login).
CREATE INDEX messages_to ON messages(recipient_id, id);
-- History between two users, newest first (and deleting a sender's messages).
CREATE INDEX messages_pair ON messages(sender_id, recipient_id, id);
-- Idempotent send: one message per sender and client_id.
CREATE UNIQUE INDEX messages_client_id ON messages(sender_id, client_id) WHERE client_id IS NOT NULL;

-- version: 3
-- Voice calls: one row per call attempt, written when it rings and when it ends.
CREATE TABLE calls (
    id               INTEGER PRIMARY KEY,
    caller_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    callee_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    rang_at          INTEGER NOT NULL, -- unix seconds
    answered_at      INTEGER,
    ended_at         INTEGER,
    outcome          TEXT,             -- rejected, timeout, cancelled, ended, hangup, disconnected, silence
    caller_datagrams INTEGER NOT NULL DEFAULT 0, -- relayed from the caller to the callee
    caller_bytes     INTEGER NOT NULL DEFAULT 0,
    callee_datagrams INTEGER NOT NULL DEFAULT 0, -- relayed from the callee to the caller
    callee_bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX calls_by_caller ON calls(caller_id, id);
CREATE INDEX calls_by_callee ON calls(callee_id, id);

-- version: 4
-- The friends list no longer follows every message: its order (most recent first) is read
-- at login from the messages themselves (two index seeks per contact in messages_pair), so
-- a personal message writes no contacts row unless the two never talked before. `last_id`
-- becomes `first_id`: the message that made them contacts.
DROP INDEX contacts_by_recency;
ALTER TABLE contacts RENAME COLUMN last_id TO first_id;

-- version: 5
-- The two message indexes without `id`: it is the rowid, which every index entry already
-- ends with, so naming it stored it twice. Range scans on the id (catch-up after a
-- watermark, history before an id) use the implicit rowid just the same; the entries are
-- about a quarter smaller, and every message writes one entry into each.
DROP INDEX messages_to;
CREATE INDEX messages_to ON messages(recipient_id);
DROP INDEX messages_pair;
CREATE INDEX messages_pair ON messages(sender_id, recipient_id);

-- version: 6
-- Groups (PROTOCOL.md section 14). A group message is one row whatever the number of
-- members; its id comes from the same sequence as personal messages (`meta`), so one
-- watermark per user (`users.delivered_upto`) says what was delivered of both. A member
-- may read a group's messages from `from_id` on (the next id at its latest joining);
-- `joined` orders the members by joining (the earliest becomes owner when the owner
-- leaves). A member who left or was removed keeps its row with `until_id` (the first id
-- after its membership), so that what was sent while it was a member still reaches it at
-- its next login; `until_id` is NULL while it is a member. `last_id` orders a user's
-- groups by activity.
CREATE TABLE groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    owner_id   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_id    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined   INTEGER NOT NULL,
    from_id  INTEGER NOT NULL,
    until_id INTEGER,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
-- A user's groups (login catch-up, `groups`, account deletion).
CREATE INDEX group_members_by_user ON group_members(user_id);
-- No foreign keys, as for personal messages: deleting a group deletes its messages.
CREATE TABLE group_messages (
    id          INTEGER PRIMARY KEY,
    group_id    INTEGER NOT NULL,
    sender_id   INTEGER NOT NULL,
    body        TEXT NOT NULL,
    media       TEXT,
    client_time INTEGER NOT NULL,
    server_time INTEGER NOT NULL,
    client_id   TEXT
);
-- A group's messages in id order (catch-up per membership, history): the rowid ends it.
CREATE INDEX group_messages_by_group ON group_messages(group_id);
CREATE UNIQUE INDEX group_messages_client_id ON group_messages(sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX group_messages_by_sender ON group_messages(sender_id);

-- version: 7
-- Blocks (PROTOCOL.md section 16): one row per blocker and blocked user. Read whole at
-- start (blocks are few), so a message checks them in memory.
CREATE TABLE blocks (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    blocked_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;

-- version: 8
-- Read marks (PROTOCOL.md section 15): per user, how far it has read each personal
-- conversation and each group. Marks only move forward.
CREATE TABLE read_personal (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    upto    INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) WITHOUT ROWID;
CREATE TABLE read_groups (
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    upto     INTEGER NOT NULL,
    PRIMARY KEY (user_id, group_id)
) WITHOUT ROWID;

-- version: 9
-- Deleting an account (`natter user del`, self-service deletion) deletes or checks every
-- row that names it. Without an index that starts with the naming column, SQLite finds
-- them by reading the whole table: 0.12 s per deletion at 100,000 accounts with 10
-- conversations each, growing with every account, and the write lock held meanwhile.
CREATE INDEX contacts_by_peer ON contacts(peer_id);
CREATE INDEX read_personal_by_peer ON read_personal(peer_id);
CREATE INDEX blocks_by_blocked ON blocks(blocked_id);
