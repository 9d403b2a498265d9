-- Hearth's first schema.
--
-- Times are integer Unix seconds, so SQLite and PostgreSQL agree. Names and
-- emails compare without case (a user name becomes an XMPP localpart, and
-- those are case-insensitive). A channel's stream key is looked up by its
-- SHA-256 (stream_key_hash) and only then compared, in constant time, with
-- the key itself, so the lookup never leaks how much of a guessed key matched.
--
-- This file is checksummed into every database it is applied to: once
-- released, it must never change. Later changes go into 0002_*.sql and on.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT    UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    roles         TEXT    NOT NULL DEFAULT 'user',
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

CREATE TABLE topics (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    slug       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE channels (
    id              INTEGER PRIMARY KEY,
    owner_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slug            TEXT    NOT NULL UNIQUE,
    title           TEXT    NOT NULL,
    topic_id        INTEGER REFERENCES topics (id) ON DELETE SET NULL,
    description     TEXT    NOT NULL DEFAULT '',
    stream_key      TEXT    NOT NULL UNIQUE,
    stream_key_hash TEXT    NOT NULL UNIQUE,
    record          INTEGER NOT NULL DEFAULT 1 CHECK (record IN (0, 1)),
    created_at      INTEGER NOT NULL
);
CREATE INDEX channels_owner ON channels (owner_id);
-- Deleting a topic sets topic_id to NULL in its channels; without an index
-- that would scan every channel.
CREATE INDEX channels_topic ON channels (topic_id);

CREATE TABLE streams (
    id           INTEGER PRIMARY KEY,
    channel_id   INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    peak_viewers INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX streams_channel_started ON streams (channel_id, started_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
