/*
 * audit.c - audit lines through the log (text or JSON lines).
 */
#include "audit.h"

#include <stdio.h>

#include "log.h"

void
audit_decision(const struct authz_peer *peer, const char *op,
               const char *alias, bool allowed)
{
    char uid[24], gid[24], pid[24];
    const char *kv[] = {
        "audit", "decision", "op", op, "key", alias != NULL ? alias : "-",
        "uid", uid, "gid", gid, "pid", pid,
        "result", allowed ? "allowed" : "denied",
    };

    snprintf(uid, sizeof(uid), "%ld", (long)peer->uid);
    snprintf(gid, sizeof(gid), "%ld", (long)peer->gid);
    snprintf(pid, sizeof(pid), "%ld", (long)peer->pid);
    log_fields(allowed ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, kv,
               sizeof(kv) / sizeof(kv[0]) / 2);
}

void
audit_key_event(const char *alias, const char *event, const char *detail)
{
    const char *kv[] = {
        "audit", "key", "event", event, "key", alias,
        "detail", detail != NULL ? detail : "-",
    };

    log_fields(LOG_LEVEL_INFO, kv, sizeof(kv) / sizeof(kv[0]) / 2);
}
