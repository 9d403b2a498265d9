/*
 * Everything that was here is in xmpp.h now (xmpp_server_session_find,
 * xmpp_server_notify_gone). Kept only so that files that still include it
 * build; delete once none does.
 */
#ifndef HEARTH_CHAT_XMPP_INTERNAL_H
#define HEARTH_CHAT_XMPP_INTERNAL_H

#include "chat/xmpp.h"

#endif
