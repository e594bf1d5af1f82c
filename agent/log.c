/*
 * log.c - leveled, escaped log lines on stderr.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 1024

static enum log_level log_threshold = LOG_LEVEL_INFO;
static bool log_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
log_init(enum log_level level, bool json)
{
    log_threshold = level;
    log_json = json;
}

int
log_level_parse(const char *s, enum log_level *out)
{
    size_t i;

    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -1;
}

bool
log_enabled(enum log_level level)
{
    return level <= log_threshold;
}

/*
 * Copy src to dst escaping anything that could break a line or a JSON
 * string: control bytes, DEL, backslash and (for JSON) the double quote.
 * Bytes >= 0x80 pass through so UTF-8 alias names stay readable.
 */
static void
escape_line(char *dst, size_t dstlen, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (; *src != '\0' && o + 5 < dstlen; src++) {
        unsigned char c = (unsigned char)*src;

        if (c < 0x20 || c == 0x7f || c == '\\' || (log_json && c == '"')) {
            dst[o++] = '\\';
            if (c == '\\' || c == '"') {
                dst[o++] = (char)c;
                continue;
            }
            dst[o++] = log_json ? 'u' : 'x';
            if (log_json) {
                dst[o++] = '0';
                dst[o++] = '0';
            }
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 0xf];
            continue;
        }
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    char raw[LOG_LINE_MAX], esc[LOG_LINE_MAX * 2], ts[32];
    struct timespec now;
    struct tm tm;
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    escape_line(esc, sizeof(esc), raw);

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    if (log_json) {
        fprintf(stderr,
                "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"agent_pid\":%ld,"
                "\"msg\":\"%s\"}\n",
                ts, now.tv_nsec / 1000000, level_names[level],
                (long)getpid(), esc);
    } else {
        fprintf(stderr, "%s.%03ldZ keycache-agent[%ld] %s: %s\n", ts,
                now.tv_nsec / 1000000, (long)getpid(), level_names[level],
                esc);
    }
}

static void
timestamp(char *ts, size_t len, long *ms)
{
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, len, "%Y-%m-%dT%H:%M:%S", &tm);
    *ms = now.tv_nsec / 1000000;
}

void
log_fields(enum log_level level, const char *const *kv, size_t n)
{
    char line[LOG_LINE_MAX * 2], esc[LOG_LINE_MAX], ts[32];
    size_t i, o = 0;
    long ms;
    int w;

    if (!log_enabled(level)) {
        return;
    }
    timestamp(ts, sizeof(ts), &ms);
    if (log_json) {
        w = snprintf(line, sizeof(line),
                     "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"agent_pid\":%ld",
                     ts, ms, level_names[level], (long)getpid());
    } else {
        w = snprintf(line, sizeof(line), "%s.%03ldZ keycache-agent[%ld] %s:",
                     ts, ms, (long)getpid(), level_names[level]);
    }
    o = w > 0 ? (size_t)w : 0;
    for (i = 0; i < n && o < sizeof(line); i++) {
        escape_line(esc, sizeof(esc), kv[2 * i + 1]);
        w = snprintf(line + o, sizeof(line) - o,
                     log_json ? ",\"%s\":\"%s\"" : " %s=%s", kv[2 * i], esc);
        o += w > 0 ? (size_t)w : 0;
    }
    if (o >= sizeof(line)) {
        o = sizeof(line) - 1;
    }
    line[o] = '\0';
    fprintf(stderr, "%s%s\n", line, log_json ? "}" : "");
}
