/*
 * GET /api/v1/openapi.json: the OpenAPI 3.0 description of every /api/v1
 * route, built once at start-up from the table below and served from memory
 * on the loop.
 *
 * The table is written by hand, next to nothing that registers routes, so
 * it can drift from the router; a test stops that. With debug.echo on (the
 * e2e tests turn it on) GET /debug/routes lists what the router really
 * holds, and tests/e2e/test_channels_api.py checks that every /api/v1 route
 * of the router is in this document and every operation of the document is
 * a route. Add a route: add its line here.
 *
 * auth, per operation (also given as x-hearth-auth):
 *   none      anyone
 *   optional  anyone; a signed-in caller sees more (their own channel's key)
 *   user      a signed-in user: session cookie (+ X-CSRF-Token on writes) or X-API-Key
 *   session   a signed-in user by session only: an API key is refused
 *   owner     the owner of the channel, or an admin
 *   streamer  a user with the streamer role, or an admin
 *   admin     an admin
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/app.h"
#include "app/viewers.h"
#include "core/config.h"
#include "core/log.h"
#include "net/http.h"
#include "net/http_router.h"

struct op {
    const char *method, *path; /* the router's form: "/api/v1/channels/:slug" */
    const char *summary;
    const char *auth;
    const char *request;  /* a schema name, "binary" (an image body), or NULL */
    int status;           /* the success status */
    const char *response; /* a schema name, "binary", or NULL (no body) */
};

static const struct op ops[] = {
    /* accounts (api_auth.c) */
    {"POST", "/api/v1/auth/register", "Create an account", "none", "Register", 201, "Session"},
    {"POST", "/api/v1/auth/verify", "Confirm an e-mail address with the emailed token", "none", "Token", 200, "Session"},
    {"POST", "/api/v1/auth/login", "Log in by name or e-mail; sets the hearth_session cookie", "none", "Login", 200, "Session"},
    {"POST", "/api/v1/auth/logout", "End the session", "user", NULL, 200, "Ok"},
    {"POST", "/api/v1/auth/password-reset", "E-mail a password reset link (always 202)", "none", "ResetRequest", 202, "Ok"},
    {"POST", "/api/v1/auth/password-reset/confirm", "Set a new password with the emailed token", "none", "ResetConfirm", 200, "Ok"},
    {"GET", "/api/v1/me", "The caller, and the session's CSRF token", "user", NULL, 200, "Me"},
    {"PATCH", "/api/v1/me", "Change e-mail or password", "session", "MePatch", 200, "Me"},
    {"DELETE", "/api/v1/me", "Delete the account and its channels: their live streams end (publishers dropped), their images and chat rooms go", "session", "Password", 200, "Ok"},
    {"POST", "/api/v1/me/totp", "Begin two-factor setup: a TOTP secret", "session", NULL, 200, "TotpSecret"},
    {"POST", "/api/v1/me/totp/confirm", "Turn two-factor login on with a first code", "session", "TotpCode", 200, "TotpState"},
    {"DELETE", "/api/v1/me/totp", "Turn two-factor login off", "session", "TotpOff", 200, "TotpState"},
    {"GET", "/api/v1/me/api-keys", "The caller's API keys (never the keys themselves)", "user", NULL, 200, "ApiKeyList"},
    {"POST", "/api/v1/me/api-keys", "Create an API key; the key is shown once", "session", "ApiKeyCreate", 201, "ApiKeyNew"},
    {"DELETE", "/api/v1/me/api-keys/:id", "Revoke an API key", "user", NULL, 200, "Ok"},

    /* channels (api_channels.c) */
    {"GET", "/api/v1/channels", "List channels (public fields); ?topic= ?q= ?owner= ?sort=slug|recent|new ?limit= ?offset=. With q, \"users\" also lists accounts whose name contains q, with or without channels", "optional", NULL, 200, "ChannelList"},
    {"POST", "/api/v1/channels", "Open a channel (up to the max_channels_per_user setting)", "streamer", "ChannelCreate", 201, "ChannelOwnerView"},
    {"GET", "/api/v1/channels/:slug", "A channel; its owner (session or own API key) also gets stream_key and OBS settings, admins rtmp_url and has_invite_code but never the key. Protected channels: owner, admin, invited users, ?invite=CODE or a watch-token cookie", "optional", NULL, 200, "ChannelOwnerView"},
    {"PATCH", "/api/v1/channels/:slug", "Edit a channel; a new title or live_title shows at once while live", "owner", "ChannelPatch", 200, "ChannelOwnerView"},
    {"DELETE", "/api/v1/channels/:slug", "Delete a channel, ending its live stream", "owner", NULL, 204, NULL},
    {"POST", "/api/v1/channels/:slug/stream-key", "Make a new stream key (the old one stops working); the answer carries it for the owner only, an admin's leaves it out", "owner", NULL, 200, "ChannelOwnerView"},
    {"POST", "/api/v1/channels/:slug/follow", "Follow a channel (or change notify_email)", "user", "Follow", 200, "FollowState"},
    {"DELETE", "/api/v1/channels/:slug/follow", "Stop following a channel", "user", NULL, 200, "FollowState"},
    {"POST", "/api/v1/channels/:slug/invite-code", "Make a new invite code for a protected channel (shown once)", "owner", NULL, 200, "InviteCode"},
    {"DELETE", "/api/v1/channels/:slug/invite-code", "Remove the invite code", "owner", NULL, 204, NULL},
    {"GET", "/api/v1/channels/:slug/invites", "Users invited to watch the channel", "owner", NULL, 200, "InviteList"},
    {"POST", "/api/v1/channels/:slug/invites", "Invite a user", "owner", "InviteCreate", 201, "Invite"},
    {"DELETE", "/api/v1/channels/:slug/invites/:user", "Withdraw an invitation (revokes watch tokens)", "owner", NULL, 204, NULL},
    {"GET", "/api/v1/channels/:slug/avatar", "The channel's avatar image", "optional", NULL, 200, "binary"},
    {"PUT", "/api/v1/channels/:slug/avatar", "Set the avatar: PNG, JPEG or WebP, at most 1 MiB and 8192 px a side", "owner", "binary", 200, "ChannelOwnerView"},
    {"DELETE", "/api/v1/channels/:slug/avatar", "Remove the avatar", "owner", NULL, 204, NULL},
    {"GET", "/api/v1/channels/:slug/banner", "The channel's banner image", "optional", NULL, 200, "binary"},
    {"PUT", "/api/v1/channels/:slug/banner", "Set the banner: PNG, JPEG or WebP, at most 4 MiB and 8192 px a side", "owner", "binary", 200, "ChannelOwnerView"},
    {"DELETE", "/api/v1/channels/:slug/banner", "Remove the banner", "owner", NULL, 204, NULL},
    {"GET", "/api/v1/me/following", "Channels the caller follows, with their live state", "user", NULL, 200, "ChannelList"},
    {"GET", "/api/v1/me/notifications", "The caller's notifications, newest first; ?unread=1 ?limit=", "user", NULL, 200, "NotificationList"},
    {"POST", "/api/v1/me/notifications/read", "Mark one notification ({id}) or all ({}) read", "user", "NotificationRead", 200, "Marked"},
    {"GET", "/api/v1/live", "Live channels, most watched first, with viewer counts; ?topic=", "none", NULL, 200, "LiveList"},
    {"GET", "/api/v1/topics", "The topics", "none", NULL, 200, "TopicList"},
    {"POST", "/api/v1/topics", "Add a topic", "admin", "TopicCreate", 201, "Topic"},
    {"PATCH", "/api/v1/topics/:slug", "Rename a topic; its slug stays, so /topic/<slug> links keep working", "admin", "TopicCreate", 200, "Topic"},
    {"DELETE", "/api/v1/topics/:slug", "Remove a topic; its channels are left without one", "admin", NULL, 204, NULL},
    /* the instance (api_health.c) */
    {"GET", "/api/v1/site", "The instance: its name, whether it takes new accounts and must verify their e-mail, its public address", "none", NULL, 200, "Site"},
    /* users (api_users.c) */
    {"GET", "/api/v1/users/:name", "A user's public profile: name, created_at and channels with live state (no e-mail); 404 for unknown or disabled accounts", "optional", NULL, 200, "UserProfile"},
    /* chat (api_chat.c); "user" routes marked "moderators:" are for the channel's owner, its chat moderators and admins */
    {"POST", "/api/v1/chat/token", "A short-lived token to log in to chat as the caller's account (XMPP SASL PLAIN, as the password)", "user", NULL, 200, "ChatToken"},
    {"GET", "/api/v1/channels/:slug/chat", "What a client needs to join the channel's chat room, its policy and occupant count; protected channels as GET /channels/:slug", "optional", NULL, 200, "ChatInfo"},
    {"GET", "/api/v1/channels/:slug/moderators", "The channel's chat moderators", "owner", NULL, 200, "ChatModeratorList"},
    {"POST", "/api/v1/channels/:slug/moderators", "Make a user a chat moderator of the channel (201; 200 when they were one)", "owner", "UserRef", 201, "ChatModerator"},
    {"DELETE", "/api/v1/channels/:slug/moderators/:name", "Remove a chat moderator", "owner", NULL, 204, NULL},
    {"GET", "/api/v1/channels/:slug/bans", "Moderators: the bans in force in the channel's chat room", "user", NULL, 200, "ChatBanList"},
    {"POST", "/api/v1/channels/:slug/bans", "Moderators: ban an account or a JID from the room (until lifted, or for duration seconds); 409 for the owner, moderators and admins", "user", "ChatBanCreate", 201, "ChatBan"},
    {"DELETE", "/api/v1/channels/:slug/bans/:id", "Moderators: lift a ban", "user", NULL, 204, NULL},
    {"GET", "/api/v1/channels/:slug/banned-words", "Moderators: the words the room refuses in messages", "user", NULL, 200, "BannedWords"},
    {"PUT", "/api/v1/channels/:slug/banned-words", "Moderators: replace the room's banned words (at most 500, 100 characters each)", "user", "BannedWords", 200, "BannedWords"},
    {"GET", "/api/v1/admin/chat-bans", "Site-wide chat bans in force", "admin", NULL, 200, "ChatBanList"},
    {"POST", "/api/v1/admin/chat-bans", "Ban an account, a JID or an IP address from every room", "admin", "ChatBanCreate", 201, "ChatBan"},
    {"DELETE", "/api/v1/admin/chat-bans/:id", "Lift a site-wide ban", "admin", NULL, 204, NULL},
    {"GET", "/api/v1/admin/banned-words", "Words every room refuses", "admin", NULL, 200, "BannedWords"},
    {"PUT", "/api/v1/admin/banned-words", "Replace the site-wide banned words (at most 500, 100 characters each)", "admin", "BannedWords", 200, "BannedWords"},
    {"GET", "/api/v1/openapi.json", "This document", "none", NULL, 200, "OpenApi"},
};

/* Component schemas, brief: the fields and their types. */
static const char schemas_json[] =
    "{"
    "\"Error\":{\"type\":\"object\",\"required\":[\"error\",\"code\"],\"properties\":{"
    "\"error\":{\"type\":\"string\"},\"code\":{\"type\":\"string\"}}},"
    "\"Ok\":{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"},\"message\":{\"type\":\"string\"}}},"
    "\"OpenApi\":{\"type\":\"object\"},"
    "\"User\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
    "\"email\":{\"type\":\"string\",\"nullable\":true},\"roles\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
    "\"created_at\":{\"type\":\"integer\"},\"disabled\":{\"type\":\"boolean\"}}},"
    "\"Register\":{\"type\":\"object\",\"required\":[\"name\",\"password\"],\"properties\":{"
    "\"name\":{\"type\":\"string\"},\"email\":{\"type\":\"string\"},\"password\":{\"type\":\"string\"}}},"
    "\"Login\":{\"type\":\"object\",\"required\":[\"login\",\"password\"],\"properties\":{"
    "\"login\":{\"type\":\"string\",\"description\":\"name or e-mail\"},\"password\":{\"type\":\"string\"},"
    "\"totp\":{\"type\":\"string\"}}},"
    "\"Session\":{\"type\":\"object\",\"properties\":{\"user\":{\"$ref\":\"#/components/schemas/User\"},"
    "\"csrf_token\":{\"type\":\"string\"},\"expires_at\":{\"type\":\"integer\"},"
    "\"verification_required\":{\"type\":\"boolean\"}}},"
    "\"Me\":{\"type\":\"object\",\"properties\":{\"user\":{\"$ref\":\"#/components/schemas/User\"},"
    "\"via\":{\"type\":\"string\",\"enum\":[\"session\",\"api_key\"]},\"csrf_token\":{\"type\":\"string\"}}},"
    "\"Token\":{\"type\":\"object\",\"required\":[\"token\"],\"properties\":{\"token\":{\"type\":\"string\"}}},"
    "\"ResetRequest\":{\"type\":\"object\",\"required\":[\"email\"],\"properties\":{\"email\":{\"type\":\"string\"}}},"
    "\"ResetConfirm\":{\"type\":\"object\",\"required\":[\"token\",\"password\"],\"properties\":{"
    "\"token\":{\"type\":\"string\"},\"password\":{\"type\":\"string\"}}},"
    "\"MePatch\":{\"type\":\"object\",\"required\":[\"current_password\"],\"properties\":{"
    "\"email\":{\"type\":\"string\"},\"password\":{\"type\":\"string\"},\"current_password\":{\"type\":\"string\"}}},"
    "\"Password\":{\"type\":\"object\",\"required\":[\"password\"],\"properties\":{\"password\":{\"type\":\"string\"}}},"
    "\"TotpSecret\":{\"type\":\"object\",\"properties\":{\"secret\":{\"type\":\"string\"},\"uri\":{\"type\":\"string\"}}},"
    "\"TotpCode\":{\"type\":\"object\",\"required\":[\"code\"],\"properties\":{\"code\":{\"type\":\"string\"}}},"
    "\"TotpOff\":{\"type\":\"object\",\"properties\":{\"code\":{\"type\":\"string\"},\"password\":{\"type\":\"string\"}}},"
    "\"TotpState\":{\"type\":\"object\",\"properties\":{\"totp_enabled\":{\"type\":\"boolean\"}}},"
    "\"ApiKey\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
    "\"prefix\":{\"type\":\"string\"},\"created_at\":{\"type\":\"integer\"},"
    "\"last_used\":{\"type\":\"integer\",\"nullable\":true},\"expires_at\":{\"type\":\"integer\",\"nullable\":true},"
    "\"expired\":{\"type\":\"boolean\"}}},"
    "\"ApiKeyNew\":{\"allOf\":[{\"$ref\":\"#/components/schemas/ApiKey\"},{\"type\":\"object\",\"properties\":{"
    "\"key\":{\"type\":\"string\",\"description\":\"shown once\"}}}]},"
    "\"ApiKeyList\":{\"type\":\"object\",\"properties\":{\"keys\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/ApiKey\"}}}},"
    "\"ApiKeyCreate\":{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"expires_at\":{\"type\":\"integer\"}}},"
    "\"LiveState\":{\"type\":\"object\",\"nullable\":true,\"properties\":{\"started_at\":{\"type\":\"integer\"},"
    "\"viewers\":{\"type\":\"integer\"},\"peak_viewers\":{\"type\":\"integer\"},\"title\":{\"type\":\"string\"}}},"
    "\"Channel\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"slug\":{\"type\":\"string\"},"
    "\"title\":{\"type\":\"string\"},\"live_title\":{\"type\":\"string\",\"nullable\":true},"
    "\"owner\":{\"type\":\"string\"},\"topic\":{\"type\":\"string\",\"nullable\":true},"
    "\"topic_slug\":{\"type\":\"string\",\"nullable\":true},"
    "\"description\":{\"type\":\"string\",\"description\":\"Markdown, as typed; render without raw HTML\"},"
    "\"record\":{\"type\":\"boolean\"},\"chat_enabled\":{\"type\":\"boolean\"},\"protected\":{\"type\":\"boolean\"},"
    "\"followers\":{\"type\":\"integer\"},\"created_at\":{\"type\":\"integer\"},"
    "\"chat_guests_may_talk\":{\"type\":\"boolean\"},\"chat_slow_mode\":{\"type\":\"integer\"},"
    "\"chat_subject\":{\"type\":\"string\",\"nullable\":true},\"chatters\":{\"type\":\"integer\"},"
    "\"last_live_at\":{\"type\":\"integer\",\"nullable\":true},\"owner_disabled\":{\"type\":\"boolean\"},"
    "\"avatar_url\":{\"type\":\"string\",\"nullable\":true},\"banner_url\":{\"type\":\"string\",\"nullable\":true},"
    "\"hls_url\":{\"type\":\"string\"},\"watch_url\":{\"type\":\"string\"},"
    "\"following\":{\"type\":\"boolean\",\"description\":\"signed-in callers only\"},"
    "\"notify_email\":{\"type\":\"boolean\",\"description\":\"signed-in callers only\"},"
    "\"live\":{\"$ref\":\"#/components/schemas/LiveState\"}}},"
    "\"ChannelOwnerView\":{\"allOf\":[{\"$ref\":\"#/components/schemas/Channel\"},{\"type\":\"object\","
    "\"description\":\"stream_key and obs come only to the owner (session or own API key); rtmp_url and "
    "has_invite_code to the owner and admins\",\"properties\":{"
    "\"stream_key\":{\"type\":\"string\"},\"rtmp_url\":{\"type\":\"string\"},"
    "\"obs\":{\"type\":\"object\",\"properties\":{\"server\":{\"type\":\"string\"},\"key\":{\"type\":\"string\"}}},"
    "\"has_invite_code\":{\"type\":\"boolean\"}}}]},"
    "\"ChannelList\":{\"type\":\"object\",\"properties\":{\"channels\":{\"type\":\"array\",\"items\":"
    "{\"$ref\":\"#/components/schemas/Channel\"}},\"users\":{\"type\":\"array\",\"description\":"
    "\"with q: enabled accounts whose name contains q (an exact match first, then by name; at most 20, "
    "the same on every page); otherwise empty\",\"items\":{\"$ref\":\"#/components/schemas/UserHit\"}},"
    "\"limit\":{\"type\":\"integer\"},\"offset\":{\"type\":\"integer\"}}},"
    "\"UserHit\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"created_at\":{\"type\":\"integer\"},\"profile_url\":{\"type\":\"string\",\"description\":\"/u/<name>\"}}},"
    "\"Site\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"allow_registration\":{\"type\":\"boolean\"},\"require_verification\":{\"type\":\"boolean\"},"
    "\"public_url\":{\"type\":\"string\"}}},"
    "\"ChannelPatch\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"title\":{\"type\":\"string\",\"maxLength\":140},\"description\":{\"type\":\"string\",\"maxLength\":2000},"
    "\"topic\":{\"type\":\"string\",\"nullable\":true},\"live_title\":{\"type\":\"string\",\"nullable\":true},"
    "\"record\":{\"type\":\"boolean\"},\"chat_enabled\":{\"type\":\"boolean\"},\"protected\":{\"type\":\"boolean\"},"
    "\"chat_guests_may_talk\":{\"type\":\"boolean\"},\"chat_slow_mode\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":3600},"
    "\"chat_subject\":{\"type\":\"string\",\"nullable\":true,\"maxLength\":200}}},"
    "\"ChannelCreate\":{\"allOf\":[{\"$ref\":\"#/components/schemas/ChannelPatch\"},{\"type\":\"object\","
    "\"required\":[\"title\"],\"properties\":{\"slug\":{\"type\":\"string\",\"pattern\":\"^[a-z0-9][a-z0-9-]{0,47}$\"}}}]},"
    "\"Follow\":{\"type\":\"object\",\"properties\":{\"notify_email\":{\"type\":\"boolean\"}}},"
    "\"FollowState\":{\"type\":\"object\",\"properties\":{\"slug\":{\"type\":\"string\"},\"following\":{\"type\":\"boolean\"},"
    "\"notify_email\":{\"type\":\"boolean\"},\"followers\":{\"type\":\"integer\"}}},"
    "\"InviteCode\":{\"type\":\"object\",\"properties\":{\"invite_code\":{\"type\":\"string\"},"
    "\"invite_url\":{\"type\":\"string\"},\"protected\":{\"type\":\"boolean\"}}},"
    "\"Invite\":{\"type\":\"object\",\"properties\":{\"user\":{\"type\":\"string\"},\"invited_at\":{\"type\":\"integer\"}}},"
    "\"InviteList\":{\"type\":\"object\",\"properties\":{\"invites\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Invite\"}}}},"
    "\"InviteCreate\":{\"type\":\"object\",\"required\":[\"user\"],\"properties\":{\"user\":{\"type\":\"string\"}}},"
    "\"Notification\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"kind\":{\"type\":\"string\",\"enum\":[\"live\"]},"
    "\"channel\":{\"type\":\"object\",\"nullable\":true,\"properties\":{\"slug\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"}}},"
    "\"created_at\":{\"type\":\"integer\"},\"read_at\":{\"type\":\"integer\",\"nullable\":true}}},"
    "\"NotificationList\":{\"type\":\"object\",\"properties\":{\"notifications\":{\"type\":\"array\",\"items\":"
    "{\"$ref\":\"#/components/schemas/Notification\"}}}},"
    "\"NotificationRead\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}}},"
    "\"Marked\":{\"type\":\"object\",\"properties\":{\"marked\":{\"type\":\"integer\"}}},"
    "\"LiveChannel\":{\"type\":\"object\",\"properties\":{\"slug\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},"
    "\"owner\":{\"type\":\"string\"},\"topic\":{\"type\":\"string\",\"nullable\":true},"
    "\"topic_slug\":{\"type\":\"string\",\"nullable\":true},\"viewers\":{\"type\":\"integer\"},"
    "\"peak_viewers\":{\"type\":\"integer\"},\"started_at\":{\"type\":\"integer\"},"
    "\"avatar_url\":{\"type\":\"string\",\"nullable\":true},\"hls_url\":{\"type\":\"string\"},\"channel_url\":{\"type\":\"string\"},"
    "\"chatters\":{\"type\":\"integer\"}}},"
    "\"LiveList\":{\"type\":\"object\",\"properties\":{\"live\":{\"type\":\"array\",\"items\":"
    "{\"$ref\":\"#/components/schemas/LiveChannel\"}},\"count\":{\"type\":\"integer\"}}},"
    "\"Topic\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
    "\"slug\":{\"type\":\"string\"},\"created_at\":{\"type\":\"integer\"}}},"
    "\"UserProfile\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"created_at\":{\"type\":\"integer\"},\"channels\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Channel\"}}}},"
    "\"ChatToken\":{\"type\":\"object\",\"properties\":{\"jid\":{\"type\":\"string\"},\"token\":{\"type\":\"string\"},"
    "\"expires_in\":{\"type\":\"integer\",\"description\":\"seconds the token may be used to log in\"}}},"
    "\"ChatInfo\":{\"type\":\"object\",\"properties\":{\"enabled\":{\"type\":\"boolean\"},"
    "\"room\":{\"type\":\"string\",\"description\":\"SLUG@chat.DOMAIN\"},\"websocket\":{\"type\":\"string\"},"
    "\"domain\":{\"type\":\"string\"},\"guest_domain\":{\"type\":\"string\"},\"muc_domain\":{\"type\":\"string\"},"
    "\"guests_may_talk\":{\"type\":\"boolean\"},\"slow_mode\":{\"type\":\"integer\"},"
    "\"subject\":{\"type\":\"string\",\"description\":\"plain text\"},\"occupants\":{\"type\":\"integer\"},"
    "\"can_moderate\":{\"type\":\"boolean\"}}},"
    "\"UserRef\":{\"type\":\"object\",\"required\":[\"user\"],\"properties\":{\"user\":{\"type\":\"string\"}}},"
    "\"ChatModerator\":{\"type\":\"object\",\"properties\":{\"user\":{\"type\":\"string\"},\"jid\":{\"type\":\"string\"},"
    "\"added_at\":{\"type\":\"integer\"}}},"
    "\"ChatModeratorList\":{\"type\":\"object\",\"properties\":{\"moderators\":{\"type\":\"array\",\"items\":"
    "{\"$ref\":\"#/components/schemas/ChatModerator\"}}}},"
    "\"ChatBanCreate\":{\"type\":\"object\",\"description\":\"exactly one of user, jid or (site-wide only) ip\","
    "\"properties\":{\"user\":{\"type\":\"string\"},\"jid\":{\"type\":\"string\"},\"ip\":{\"type\":\"string\"},"
    "\"reason\":{\"type\":\"string\",\"maxLength\":200},\"duration\":{\"type\":\"integer\",\"minimum\":1}}},"
    "\"ChatBan\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},"
    "\"user\":{\"type\":\"string\",\"nullable\":true},\"jid\":{\"type\":\"string\",\"nullable\":true},"
    "\"ip\":{\"type\":\"string\",\"nullable\":true,\"description\":\"admins only\"},\"guest\":{\"type\":\"boolean\"},"
    "\"nick\":{\"type\":\"string\",\"nullable\":true},\"reason\":{\"type\":\"string\",\"nullable\":true},"
    "\"banned_by\":{\"type\":\"string\",\"nullable\":true},\"created_at\":{\"type\":\"integer\"},"
    "\"expires_at\":{\"type\":\"integer\",\"nullable\":true}}},"
    "\"ChatBanList\":{\"type\":\"object\",\"properties\":{\"bans\":{\"type\":\"array\",\"items\":"
    "{\"$ref\":\"#/components/schemas/ChatBan\"}}}},"
    "\"BannedWords\":{\"type\":\"object\",\"required\":[\"words\"],\"properties\":{\"words\":{\"type\":\"array\","
    "\"maxItems\":500,\"items\":{\"type\":\"string\",\"maxLength\":100}}}},"
    "\"TopicList\":{\"type\":\"object\",\"properties\":{\"topics\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Topic\"}}}},"
    "\"TopicCreate\":{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":64}}}"
    "}";

static json_t *ref(const char *name)
{
    char r[128];
    snprintf(r, sizeof r, "#/components/schemas/%s", name);
    return json_pack("{s:s}", "$ref", r);
}

static json_t *content(const char *schema)
{
    if (strcmp(schema, "binary") == 0)
        return json_pack("{s:{s:{s:s,s:s}}, s:{s:{s:s,s:s}}, s:{s:{s:s,s:s}}}", "image/png", "schema",
                         "type", "string", "format", "binary", "image/jpeg", "schema", "type",
                         "string", "format", "binary", "image/webp", "schema", "type", "string",
                         "format", "binary");
    return json_pack("{s:{s:o}}", "application/json", "schema", ref(schema));
}

static json_t *security_for(const char *auth)
{
    if (strcmp(auth, "none") == 0)
        return json_array();
    if (strcmp(auth, "optional") == 0) /* anonymous, or either credential */
        return json_pack("[{}, {s:[]}, {s:[]}]", "session", "apiKey");
    if (strcmp(auth, "session") == 0)
        return json_pack("[{s:[], s:[]}]", "session", "csrf");
    return json_pack("[{s:[], s:[]}, {s:[]}]", "session", "csrf", "apiKey");
}

static json_t *error_response(const char *why)
{
    return json_pack("{s:s, s:o}", "description", why, "content", content("Error"));
}

/* "/api/v1/channels/:slug" -> "/api/v1/channels/{slug}", and its parameters. */
static void openapi_path(const char *pattern, char *out, size_t n, json_t *params)
{
    size_t k = 0;
    for (const char *p = pattern; *p && k + 2 < n;) {
        if (*p == ':' && (p == pattern || p[-1] == '/')) {
            size_t len = strcspn(p + 1, "/");
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)len, p + 1);
            k += (size_t)snprintf(out + k, n - k, "{%s}", name);
            if (params)
                json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", name, "in",
                                                        "path", "required", 1, "schema", "type", "string"));
            p += 1 + len;
        } else {
            out[k++] = *p++;
        }
    }
    out[k < n ? k : n - 1] = '\0';
}

static json_t *operation(const struct op *o)
{
    json_t *params = json_array();
    char path[256];
    openapi_path(o->path, path, sizeof path, params);
    char opid[160];
    size_t k = (size_t)snprintf(opid, sizeof opid, "%s", o->method);
    for (size_t i = 0; opid[i]; i++)
        opid[i] = (char)(opid[i] >= 'A' && opid[i] <= 'Z' ? opid[i] - 'A' + 'a' : opid[i]);
    for (const char *p = o->path + strlen("/api/v1"); *p && k + 1 < sizeof opid; p++)
        opid[k++] = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_';
    opid[k] = '\0';

    json_t *responses = json_object();
    char status[8];
    snprintf(status, sizeof status, "%d", o->status);
    json_t *ok = json_pack("{s:s}", "description", "success");
    if (o->response)
        json_object_set_new(ok, "content", content(o->response));
    json_object_set_new(responses, status, ok);
    json_object_set_new(responses, "400", error_response("a value breaks a rule (code invalid, bad_json, ...)"));
    if (strcmp(o->auth, "none") != 0)
        json_object_set_new(responses, "401", error_response("not signed in (unauthenticated, invalid_api_key)"));
    if (strcmp(o->auth, "none") != 0 || strstr(o->path, ":slug"))
        json_object_set_new(responses, "403",
                            error_response("not allowed (forbidden, csrf, session_required, protected, "
                                           "channel_limit)"));
    if (strchr(o->path, ':'))
        json_object_set_new(responses, "404", error_response("no such thing (not_found)"));

    json_t *op = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "summary", o->summary, "operationId", opid,
                           "x-hearth-auth", o->auth, "security", security_for(o->auth), "parameters",
                           params, "responses", responses);
    if (o->request)
        json_object_set_new(op, "requestBody",
                            json_pack("{s:b, s:o}", "required", strcmp(o->request, "Follow") != 0 &&
                                                                    strcmp(o->request, "NotificationRead") != 0,
                                      "content", content(o->request)));
    return op;
}

static json_t *document(const struct config *cfg)
{
    json_error_t jerr;
    json_t *schemas = json_loads(schemas_json, 0, &jerr);
    if (!schemas) {
        log_error("openapi: the schemas do not parse: %s at %d", jerr.text, jerr.position);
        return NULL;
    }
    json_t *paths = json_object();
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char path[256], method[12];
        openapi_path(ops[i].path, path, sizeof path, NULL);
        snprintf(method, sizeof method, "%s", ops[i].method);
        for (char *m = method; *m; m++)
            *m = (char)(*m >= 'A' && *m <= 'Z' ? *m - 'A' + 'a' : *m);
        json_t *item = json_object_get(paths, path);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, path, item);
        }
        json_object_set_new(item, method, operation(&ops[i]));
    }
    return json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:[{s:s}], s:o, s:{s:o, s:{s:{s:s,s:s,s:s}, s:{s:s,s:s,s:s}, s:{s:s,s:s,s:s}}}}",
        "openapi", "3.0.3", "info", "title", "Hearth API", "version", HEARTH_VERSION, "description",
        "The REST API of Hearth, the one its web front end uses. JSON in and out; errors are "
        "{\"error\", \"code\"} with the HTTP status. Sign in with POST /api/v1/auth/login "
        "(the hearth_session cookie; state-changing requests then carry X-CSRF-Token from the "
        "login answer or GET /api/v1/me) or send X-API-Key.",
        "servers", "url", cfg->site.public_url[0] ? cfg->site.public_url : "/", "paths", paths,
        "components", "schemas", schemas, "securitySchemes", "session", "type", "apiKey", "in",
        "cookie", "name", "hearth_session", "csrf", "type", "apiKey", "in", "header", "name",
        "X-CSRF-Token", "apiKey", "type", "apiKey", "in", "header", "name", "X-API-Key");
}

/* The document, rendered once (the loop only reads it). */
static char *doc_text;
static size_t doc_len;

static void release_nothing(void *opaque) {}

static int h_openapi(struct http_request *req, void *ud)
{
    http_response_status(req, 200);
    http_response_header(req, "Content-Type", "application/json");
    http_response_header(req, "Cache-Control", "public, max-age=300");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    http_response_body_ref(req, doc_text, doc_len, release_nothing, NULL);
    return 0;
}

static int h_routes(struct http_request *req, void *ud)
{
    struct http_router *r = http_server_router(req->server);
    json_t *arr = json_array();
    for (size_t i = 0; r && i < r->count; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s}", "method", r->routes[i].method, "path",
                                             r->routes[i].pattern));
    json_t *o = json_pack("{s:o}", "routes", arr);
    http_response_json(req, 200, o);
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    json_decref(o);
    return 0;
}

int openapi_register(struct app *app, struct http_server *srv)
{
    if (!doc_text) {
        json_t *doc = document(app->cfg);
        doc_text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(doc);
        if (!doc_text)
            return -1;
        doc_len = strlen(doc_text);
    }
    int rc = http_server_route(srv, "GET", "/api/v1/openapi.json", h_openapi, app, HTTP_ROUTE_CORS);
    if (rc == 0 && app->cfg->debug.echo)
        rc = http_server_route(srv, "GET", "/debug/routes", h_routes, app, 0);
    return rc;
}
