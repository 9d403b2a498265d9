-- Chat: each channel's XMPP room (SLUG@chat.DOMAIN), its archive (XEP-0313
-- MAM, also the history a newcomer gets), moderators, bans and banned words.
--
-- Rooms are keyed by channel_id, not slug, so a renamed channel keeps its
-- history, moderators and bans.
--
-- The archive keeps each message as the room broadcast it (the <message/>
-- element with stanza-id and occupant-id, serialized), so MAM replays it as
-- it was. A retraction (XEP-0424 by the author, XEP-0425 by a moderator)
-- replaces the stanza with its tombstone and sets retracted_at; the row
-- stays so that paging and replies still line up.
--
-- Bans: by bare JID (accounts, federated users), by account (user_id, which
-- holds across the account's JIDs), and by IP address for guests, whose
-- JIDs are thrown away with each login. channel_id NULL is site-wide.
--
-- This file is checksummed into every database it is applied to: once
-- released, it must never change.

-- whether guests (guest.DOMAIN) get voice on joining; off: visitors
ALTER TABLE channels ADD COLUMN chat_guests_may_talk INTEGER NOT NULL DEFAULT 1 CHECK (chat_guests_may_talk IN (0, 1));
-- slow mode: seconds an occupant waits between messages; 0 = the site's rate limit only
ALTER TABLE channels ADD COLUMN chat_slow_mode INTEGER NOT NULL DEFAULT 0 CHECK (chat_slow_mode >= 0);
-- the room subject; NULL: the channel title
ALTER TABLE channels ADD COLUMN chat_subject TEXT;

CREATE TABLE chat_messages (
    id           INTEGER PRIMARY KEY,
    channel_id   INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- XEP-0359 stanza-id given by the room; the MAM result id
    stanza_id    TEXT    NOT NULL UNIQUE,
    -- the sender's message id (origin-id or id), for XEP-0424/0444/0461 references
    origin_id    TEXT,
    ts_ms        INTEGER NOT NULL, -- Unix time in milliseconds
    nick         TEXT    NOT NULL,
    occupant_id  TEXT    NOT NULL, -- XEP-0421
    -- the real bare JID of the sender (moderators and MAM of non-anonymous rooms)
    from_jid     TEXT    NOT NULL,
    user_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    body         TEXT,
    stanza       TEXT    NOT NULL, -- the <message/> as broadcast
    retracted_at INTEGER,
    retracted_by TEXT
);
CREATE INDEX chat_messages_channel ON chat_messages (channel_id, id);
CREATE INDEX chat_messages_ts ON chat_messages (ts_ms);

-- Channel moderators named by the owner on the web page (affiliation admin).
CREATE TABLE chat_moderators (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX chat_moderators_user ON chat_moderators (user_id);

CREATE TABLE chat_bans (
    id         INTEGER PRIMARY KEY,
    channel_id INTEGER REFERENCES channels (id) ON DELETE CASCADE, -- NULL: site-wide
    jid        TEXT,    -- bare JID
    user_id    INTEGER REFERENCES users (id) ON DELETE CASCADE,
    ip         TEXT,    -- a guest's address
    nick       TEXT,    -- as shown when banned, for the ban list
    reason     TEXT,
    banned_by  TEXT,    -- bare JID of the moderator
    created_at INTEGER NOT NULL,
    expires_at INTEGER, -- NULL: until lifted
    CHECK (jid IS NOT NULL OR user_id IS NOT NULL OR ip IS NOT NULL)
);
CREATE INDEX chat_bans_channel ON chat_bans (channel_id);
CREATE INDEX chat_bans_jid ON chat_bans (jid);
CREATE INDEX chat_bans_ip ON chat_bans (ip);

CREATE TABLE chat_banned_words (
    id         INTEGER PRIMARY KEY,
    channel_id INTEGER REFERENCES channels (id) ON DELETE CASCADE, -- NULL: site-wide
    word       TEXT    NOT NULL COLLATE NOCASE,
    created_at INTEGER NOT NULL,
    UNIQUE (channel_id, word)
);
