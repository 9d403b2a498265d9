/*
 * Outgoing e-mail: verification and password-reset links.
 *
 * mail_send() never touches the network itself: it puts a copy of the
 * message on a bounded queue that one mail thread empties through libcurl
 * (smtp:// with STARTTLS, smtps://, or plain smtp:// for a local relay). An
 * SMTP server that hangs for its whole timeout then holds that one thread,
 * not a worker of the API pool, and an answer such as "a reset link is on
 * its way" takes the same time whether or not a mail was sent.
 *
 * With smtp.host empty nothing is sent: the message, link included, is
 * logged at info level, so a fresh instance with one admin still works.
 */
#ifndef HEARTH_APP_MAIL_H
#define HEARTH_APP_MAIL_H

#include <stddef.h>
#include <stdint.h>

struct config;

#define MAIL_QUEUE_MAX 256 /* messages waiting; more are dropped with a warning */

/* smtp.tls and smtp.from make sense. 0, or -EINVAL with a message naming the key. */
int mail_config_check(const struct config *cfg, char *err, size_t errlen);

/*
 * Queue one plain-text message (UTF-8). to and subject must be one line each.
 * Returns 0 (also when it was only logged), -EINVAL for a bad address or a
 * header with a line break, -ENOSPC when the queue is full, -ENOMEM.
 */
int mail_send(const struct config *cfg, const char *to, const char *subject, const char *body);

/* Send one message now, on the calling thread (the queue uses it). */
int mail_send_now(const struct config *cfg, const char *to, const char *subject,
                  const char *body, char *err, size_t errlen);

/*
 * The message as sent: headers (From, To, Subject encoded per RFC 2047 when
 * not ASCII, Date, Message-ID, MIME), a blank line and the body, every line
 * ending in CRLF. *out is malloc'd. from may be "Name <addr>" or "addr".
 */
int mail_format(const char *from, const char *to, const char *subject, const char *body,
                int64_t date, char **out);

/* The envelope address of a From value: what is inside <...>, or all of it. */
int mail_address_of(const char *from, char *out, size_t n);

/* smtp.from, or "noreply@<host of site.public_url>" when it is empty. */
void mail_from(const struct config *cfg, char *out, size_t n);

/* Wait up to timeout_ms for the queue to empty, then stop the thread. */
void mail_shutdown(uint64_t timeout_ms);

#endif
