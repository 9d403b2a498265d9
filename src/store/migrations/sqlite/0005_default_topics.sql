-- Default topics, so that a fresh instance has something to file channels
-- under (OSP ships a starting set too). Admins rename or remove them with
-- PATCH / DELETE /api/v1/topics/:slug or `hearth topic`.
--
-- Only a database without any topic gets them: an instance whose admins
-- already made their own keeps exactly those. The slugs are what topic_add
-- (accounts.c) would derive from the names.
--
-- This file is checksummed into every database it is applied to: once
-- released, it must never change.

WITH defaults (name, slug) AS (VALUES
    ('Art', 'art'),
    ('Education', 'education'),
    ('Entertainment', 'entertainment'),
    ('Gaming', 'gaming'),
    ('Music', 'music'),
    ('Science & Technology', 'science-technology'),
    ('Software Development', 'software-development'),
    ('Sports', 'sports'),
    ('Talk Shows', 'talk-shows'),
    ('Other', 'other')
)
INSERT INTO topics (name, slug, created_at)
    SELECT name, slug, CAST(strftime('%s', 'now') AS INTEGER) FROM defaults
    WHERE NOT EXISTS (SELECT 1 FROM topics);
