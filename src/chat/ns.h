/*
 * XMPP namespace names used by more than one chat module.
 *
 * Kept in one place so that a typo in a URI is a compile error (an unknown
 * macro) rather than a stanza that silently matches nothing. Modules for a
 * single extension (disco, ping, MUC, MAM) define their own next to the code.
 */
#ifndef HEARTH_CHAT_NS_H
#define HEARTH_CHAT_NS_H

#define XMPP_NS_XML "http://www.w3.org/XML/1998/namespace" /* the xml: prefix */
#define XMPP_NS_STREAMS "http://etherx.jabber.org/streams"
#define XMPP_NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing" /* RFC 7395 */
#define XMPP_NS_CLIENT "jabber:client"
#define XMPP_NS_SERVER "jabber:server"
#define XMPP_NS_DIALBACK "jabber:server:dialback"
#define XMPP_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define XMPP_NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define XMPP_NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define XMPP_NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define XMPP_NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define XMPP_NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"

#endif
