/*
 * log.h - the agent's operator log: one line per event on stderr.
 *
 * Never pass key bytes, plaintext, ciphertext, encryption-context values
 * or credentials to these functions.  Peer-supplied strings are escaped
 * (control characters become \xNN) and long lines are cut, so a client
 * cannot forge log lines.  Not thread-safe (the agent is single-threaded).
 */
#ifndef KC_LOG_H
#define KC_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
    LOG_LEVEL_ERROR = 0, /* the operator must act */
    LOG_LEVEL_WARN,      /* degraded or recovered */
    LOG_LEVEL_INFO,      /* lifecycle: start, stop, key generated */
    LOG_LEVEL_DEBUG,     /* per request; off in production */
};

/* log_init - set the threshold and output style (text or JSON lines). */
void log_init(enum log_level level, bool json);

/* log_level_parse - "error", "warn", "info", "debug"; 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);

/* log_enabled - true when messages at level would be written. */
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * log_fields - one structured line: "k1=v1 k2=v2 ..." in text mode, or
 * a JSON object {"time", "level", k1: v1, ...} in JSON mode.  kv holds
 * n name/value string pairs (2n entries); values are escaped.
 */
void log_fields(enum log_level level, const char *const *kv, size_t n);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif /* KC_LOG_H */
