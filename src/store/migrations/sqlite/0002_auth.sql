-- Accounts on the web: sessions, API keys, e-mail tokens, TOTP.
--
-- No secret a person could log in with is stored as is: session tokens, API
-- keys and e-mail tokens are kept as the lowercase hex SHA-256 of the token
-- (they are 256 random bits, so a plain hash is enough; there is nothing to
-- brute-force). The CSRF token is stored as is: it is no credential on its
-- own, and GET /api/v1/me hands it back to the session's own page.
--
-- Accounts made before this migration, or by the CLI, are verified.
-- A TOTP secret must be readable to check codes, so it is kept as is (base32).
--
-- This file is checksummed into every database it is applied to: once
-- released, it must never change.

ALTER TABLE users ADD COLUMN verified INTEGER NOT NULL DEFAULT 1 CHECK (verified IN (0, 1));
-- base32; NULL when two-factor login is off
ALTER TABLE users ADD COLUMN totp_secret TEXT;
-- a secret handed out by POST /me/totp that no code has confirmed yet
ALTER TABLE users ADD COLUMN totp_pending TEXT;
-- the last time step whose code was accepted: a code works once
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;

CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT    NOT NULL UNIQUE,
    csrf_token TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ip         TEXT    NOT NULL DEFAULT '',
    user_agent TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    -- "hk_" and the first characters, so a person can tell keys apart
    prefix     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    last_used  INTEGER,
    expires_at INTEGER
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Links sent by e-mail: 'verify' (an address, new or changed) and 'reset'
-- (a forgotten password).
CREATE TABLE auth_tokens (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT    NOT NULL CHECK (purpose IN ('verify', 'reset')),
    token_hash TEXT    NOT NULL UNIQUE,
    -- verify: the address this link confirms
    email      TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id, purpose);
CREATE INDEX auth_tokens_expires ON auth_tokens (expires_at);

-- The roles a self-registered account gets; admins change it later.
INSERT INTO settings (key, value) VALUES ('registration_roles', 'streamer,user')
    ON CONFLICT (key) DO NOTHING;
