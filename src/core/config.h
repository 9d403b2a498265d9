/*
 * Configuration: hearth.conf (INI, read with inih), then HEARTH_<SECTION>_<KEY>
 * environment variables, then DB_URL. Every key has a default and a type; a
 * value that does not parse, or a key nobody knows, is an error that names the
 * key, so a typo stops start-up instead of being silently ignored.
 *
 * The table of keys lives in config.c; docs/configuration.md describes each
 * one and a test checks that the two agree.
 */
#ifndef HEARTH_CORE_CONFIG_H
#define HEARTH_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"

#define CONFIG_STR 256
#define CONFIG_PATH 1024

struct config {
    char source[CONFIG_PATH]; /* the file read, or "" when none */

    struct {
        int workers;
    } server;

    struct {
        char listen[CONFIG_STR];
        size_t max_header_bytes;
        size_t max_body_bytes;
        uint64_t header_timeout_ms;
        uint64_t idle_timeout_ms;
        uint64_t shutdown_timeout_ms;
        int max_connections;
        char static_dir[CONFIG_PATH];
        char cors_origin[CONFIG_STR];
        bool access_log;
        char trusted_proxies[CONFIG_PATH];
    } http;

    struct {
        char listen[CONFIG_STR];
        size_t max_message_size;
        uint64_t handshake_timeout_ms;
        uint64_t idle_timeout_ms;
        int max_connections;
    } rtmp;

    struct {
        uint64_t segment_target_ms;
        uint64_t part_target_ms;
        uint64_t window_ms;
        uint64_t reconnect_grace_ms;
    } hls;

    struct {
        char data_dir[CONFIG_PATH];
    } storage;

    struct {
        char url[CONFIG_PATH + 16];
    } db;

    struct {
        char name[CONFIG_STR];
        char public_url[CONFIG_STR];
        bool allow_registration;
        bool require_verification;
    } site;

    struct {
        char domain[CONFIG_STR];
        char c2s_listen[CONFIG_STR];
        char s2s_listen[CONFIG_STR];
        bool federation;
        char tls_cert[CONFIG_PATH];
        char tls_key[CONFIG_PATH];
        char tls_ca[CONFIG_PATH];
        bool s2s_secure_auth;
        char s2s_routes[CONFIG_PATH];
        char websocket_origins[CONFIG_PATH];
        int max_connections;
        uint64_t keepalive_ms;
        uint64_t idle_timeout_ms;
        uint64_t token_lifetime_ms;
        int max_occupants;
        int max_message_length;
        int message_burst;
        uint64_t message_interval_ms;
        int join_history;
        uint64_t history_retention_ms;
    } xmpp;

    struct {
        enum log_level level;
    } log;

    struct {
        bool echo;
    } debug;

    struct {
        char host[CONFIG_STR];
        int port;
        char user[CONFIG_STR];
        char password[CONFIG_STR];
        char from[CONFIG_STR];
        char tls[16]; /* "starttls", "tls" or "none"; checked by app/mail.c */
    } smtp;

    struct {
        uint64_t session_lifetime_ms;
        int login_attempts;
        uint64_t login_window_ms;
    } auth;
};

/* Fill every key with its default. */
void config_defaults(struct config *cfg);

/*
 * Set one key from text, as the file and the environment do. On error returns
 * a negative code and writes a message naming the key into err.
 */
int config_set(struct config *cfg, const char *section, const char *key, const char *value,
               char *err, size_t errlen);

/* Read an INI file on top of what cfg holds. */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen);

/* Apply HEARTH_<SECTION>_<KEY> and DB_URL from envp (NULL-terminated). */
int config_apply_env(struct config *cfg, char *const *envp, char *err, size_t errlen);

/* Derive what depends on other keys (db.url from storage.data_dir). */
int config_finalize(struct config *cfg, char *err, size_t errlen);

/*
 * The whole sequence used by every command: defaults, the file (path, or
 * $HEARTH_CONFIG, or ./hearth.conf when present), the environment, finalize.
 */
int config_load(struct config *cfg, const char *path, char *const *envp, char *err,
                size_t errlen);

/* Print every key with its current value, as an INI file. */
void config_write(const struct config *cfg, void *file /* FILE* */);

/* Iterate the key table: returns 0 and fills section/key for index i. */
int config_key_at(size_t i, const char **section, const char **key, const char **help);

/* Parse "HOST:PORT" / "[V6]:PORT" into host (no brackets) and port. */
int config_parse_listen(const char *s, char *host, size_t hostlen, int *port);
/* "10s", "500ms", "2m", "1h"; a bare number is seconds. */
int config_parse_duration(const char *s, uint64_t *ms);
/* "4096", "16KiB", "8MiB", "1GiB" (also K/M/G, KB/MB/GB as powers of 1024). */
int config_parse_size(const char *s, size_t *bytes);
int config_parse_bool(const char *s, bool *out);

#endif
