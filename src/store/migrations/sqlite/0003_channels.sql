-- Channels on the web: chat and protection switches, images, the live
-- title, following, in-app notifications and invitations.
--
-- A protected channel is watched only by its owner, admins, invited users
-- and holders of its invite code. The code is 128 random bits, so, like the
-- session tokens of 0002, only its lowercase hex SHA-256 is kept. access_gen
-- is part of every watch token the server signs for the channel (the
-- hearth_access cookie): bumping it revokes them all at once, which is what
-- happens when the code changes or an invitation is withdrawn.
--
-- Images are files under storage.data_dir; the rows keep their paths
-- relative to it.
--
-- This file is checksummed into every database it is applied to: once
-- released, it must never change.

ALTER TABLE channels ADD COLUMN chat_enabled INTEGER NOT NULL DEFAULT 1 CHECK (chat_enabled IN (0, 1));
ALTER TABLE channels ADD COLUMN protected INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1));
-- lowercase hex SHA-256 of the invite code; NULL when there is none
ALTER TABLE channels ADD COLUMN invite_code_hash TEXT;
ALTER TABLE channels ADD COLUMN access_gen INTEGER NOT NULL DEFAULT 1;
ALTER TABLE channels ADD COLUMN avatar_path TEXT;
ALTER TABLE channels ADD COLUMN banner_path TEXT;
-- the title of the broadcast, shown while live; NULL: the channel's title
ALTER TABLE channels ADD COLUMN live_title TEXT;

CREATE TABLE follows (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id   INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    notify_email INTEGER NOT NULL DEFAULT 0 CHECK (notify_email IN (0, 1)),
    PRIMARY KEY (user_id, channel_id)
);
-- "who follows this channel" when it goes live
CREATE INDEX follows_channel ON follows (channel_id);

CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    channel_id INTEGER REFERENCES channels (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    read_at    INTEGER
);
CREATE INDEX notifications_user ON notifications (user_id, created_at);
CREATE INDEX notifications_channel ON notifications (channel_id);

CREATE TABLE channel_invites (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_invites_user ON channel_invites (user_id);

-- How many channels a user who is not an admin may own.
INSERT INTO settings (key, value) VALUES ('max_channels_per_user', '5')
    ON CONFLICT (key) DO NOTHING;
