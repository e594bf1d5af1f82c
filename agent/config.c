/*
 * config.c - INI parsing (libinih) and validation of the agent config.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "esdk.h"

/* Bits of key_config.seen. */
#define SEEN_DECRYPT_TTL 0x1u

struct parse_state {
    struct agent_config *cfg;
    struct key_config *cur;      /* section being filled, or NULL */
    struct key_config **tail;
    char cur_section[128];
    char seen_names[32][32]; /* names set in the current section */
    size_t nseen;
    char err[256];
};

static int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s == '\0' || *s == '-' || *s == '+') {
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 ||
        strcmp(s, "1") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 ||
        strcmp(s, "0") == 0) {
        *out = false;
        return 0;
    }
    return -1;
}

static bool
alias_is_valid(const char *a)
{
    size_t n = strlen(a), i;

    if (n == 0 || n >= CONFIG_ALIAS_MAX) {
        return false;
    }
    for (i = 0; i < n; i++) {
        char c = a[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            return false;
        }
    }
    return true;
}

static int
set_str(char **dst, const char *v)
{
    char *s = strdup(v);

    if (s == NULL) {
        return -1;
    }
    free(*dst);
    *dst = s;
    return 0;
}

static int
agent_key(struct parse_state *st, const char *name, const char *v)
{
    struct agent_config *cfg = st->cfg;
    uint64_t n;

    if (strcmp(name, "socket") == 0) {
        return set_str(&cfg->socket_path, v);
    }
    if (strcmp(name, "socket_mode") == 0) {
        char *end;
        unsigned long m;

        errno = 0;
        m = strtoul(v, &end, 8);
        if (errno != 0 || *v == '\0' || *end != '\0' || m > 0777 ||
            (m & 0600) != 0600 || (m & 0007) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "socket_mode must be octal, owner rw, no world access "
                     "(e.g. 0660)");
            return -1;
        }
        cfg->socket_mode = (mode_t)m;
        return 0;
    }
    if (strcmp(name, "capacity") == 0) {
        if (parse_u64(v, 1, 10000000, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "capacity must be 1..10000000");
            return -1;
        }
        cfg->capacity = (size_t)n;
        return 0;
    }
    if (strcmp(name, "log_level") == 0) {
        if (log_level_parse(v, &cfg->log_level) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "log_level must be error, warn, info or debug");
            return -1;
        }
        return 0;
    }
    if (strcmp(name, "log_format") == 0) {
        if (strcmp(v, "text") != 0 && strcmp(v, "json") != 0) {
            snprintf(st->err, sizeof(st->err),
                     "log_format must be text or json");
            return -1;
        }
        cfg->log_json = strcmp(v, "json") == 0;
        return 0;
    }
    if (strcmp(name, "max_frame") == 0) {
        if (parse_u64(v, 4096, 64ULL << 20, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "max_frame must be 4096..67108864 bytes");
            return -1;
        }
        cfg->max_frame = (size_t)n;
        return 0;
    }
    if (strcmp(name, "allow_legacy_suites") == 0) {
        if (parse_bool(v, &cfg->allow_legacy) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "allow_legacy_suites must be true or false");
            return -1;
        }
        return 0;
    }
    {
        static const struct {
            const char *name;
            uint64_t min, max;
            size_t off;
        } lims[] = {
            {"max_edks", 1, 65535, offsetof(struct agent_config, max_edks)},
            {"max_message_size", 0, 1ULL << 36,
             offsetof(struct agent_config, max_message_size)},
            {"max_body_frames", 1, 0xffffffffULL,
             offsetof(struct agent_config, max_body_frames)},
            {"max_frame_length", 1, 0xffffffffULL,
             offsetof(struct agent_config, max_frame_length)},
        };
        size_t i;

        for (i = 0; i < sizeof(lims) / sizeof(lims[0]); i++) {
            if (strcmp(name, lims[i].name) != 0) {
                continue;
            }
            if (parse_u64(v, lims[i].min, lims[i].max, &n) != 0) {
                snprintf(st->err, sizeof(st->err),
                         "%s must be an integer in %llu..%llu", name,
                         (unsigned long long)lims[i].min,
                         (unsigned long long)lims[i].max);
                return -1;
            }
            *(uint64_t *)((char *)cfg + lims[i].off) = n;
            return 0;
        }
    }
    if (strcmp(name, "allow_stats") == 0) {
        return set_str(&cfg->allow_stats, v);
    }
    if (strcmp(name, "socket_group") == 0) {
        return set_str(&cfg->socket_group, v);
    }
    if (strcmp(name, "metrics_listen") == 0) {
        return set_str(&cfg->metrics_listen, v);
    }
    if (strcmp(name, "max_connections") == 0) {
        if (parse_u64(v, 1, 1000000, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "max_connections must be 1..1000000");
            return -1;
        }
        cfg->max_connections = (size_t)n;
        return 0;
    }
    if (strcmp(name, "max_connections_per_uid") == 0) {
        if (parse_u64(v, 1, 1000000, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "max_connections_per_uid must be 1..1000000");
            return -1;
        }
        cfg->max_connections_per_uid = (size_t)n;
        return 0;
    }
    if (strcmp(name, "max_inflight") == 0) {
        if (parse_u64(v, 1, 1000000, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "max_inflight must be 1..1000000");
            return -1;
        }
        cfg->max_inflight = (size_t)n;
        return 0;
    }
    if (strcmp(name, "read_timeout") == 0) {
        if (parse_u64(v, 1, 3600, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "read_timeout must be 1..3600 seconds");
            return -1;
        }
        cfg->read_timeout_ms = n * 1000;
        return 0;
    }
    if (strcmp(name, "idle_timeout") == 0) {
        if (parse_u64(v, 0, 86400 * 7, &n) != 0) {
            snprintf(st->err, sizeof(st->err),
                     "idle_timeout must be 0..604800 seconds");
            return -1;
        }
        cfg->idle_timeout_ms = n * 1000;
        return 0;
    }
    snprintf(st->err, sizeof(st->err), "unknown key '%s' in [agent]", name);
    return -1;
}

static int
key_number(struct parse_state *st, const char *name, const char *v,
           uint64_t min, uint64_t max, uint64_t *out)
{
    if (parse_u64(v, min, max, out) != 0) {
        snprintf(st->err, sizeof(st->err),
                 "[key.%s] %s must be an integer in %llu..%llu",
                 st->cur->alias, name, (unsigned long long)min,
                 (unsigned long long)max);
        return -1;
    }
    return 0;
}

static int
key_key(struct parse_state *st, const char *name, const char *v)
{
    struct key_config *k = st->cur;
    uint64_t n;

    if (strcmp(name, "provider") == 0) {
        if (strcmp(v, "local") != 0 && strcmp(v, "aws-kms") != 0 &&
            strcmp(v, "alibaba-kms") != 0) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] provider '%s' is not supported "
                     "(supported: local, aws-kms, alibaba-kms)", k->alias, v);
            return -1;
        }
        return set_str(&k->provider, v);
    }
    if (strcmp(name, "signature") == 0) {
        if (strcmp(v, "v3") != 0 && strcmp(v, "v1") != 0) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] signature must be v3 or v1", k->alias);
            return -1;
        }
        return set_str(&k->signature, v);
    }
    if (strcmp(name, "ttl_jitter") == 0 ||
        strcmp(name, "refresh_ahead") == 0) {
        char *end;
        double d;

        errno = 0;
        d = strtod(v, &end);
        if (errno != 0 || *v == '\0' || *end != '\0' || d < 0 ||
            d > (name[0] == 't' ? 0.5 : 0.99)) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] %s must be a fraction in 0..%s", k->alias,
                     name, name[0] == 't' ? "0.5" : "0.99");
            return -1;
        }
        *(name[0] == 't' ? &k->ttl_jitter : &k->refresh_ahead) = d;
        return 0;
    }
    if (strcmp(name, "encrypt_grace") == 0 ||
        strcmp(name, "decrypt_grace") == 0) {
        if (key_number(st, name, v, 0, 86400 * 7, &n) != 0) {
            return -1;
        }
        *(name[0] == 'e' ? &k->encrypt_grace_ms : &k->decrypt_grace_ms) =
            n * 1000;
        return 0;
    }
    if (strcmp(name, "connect_timeout") == 0) {
        return key_number(st, name, v, 1, 600000, &k->connect_timeout_ms);
    }
    if (strcmp(name, "request_timeout") == 0) {
        return key_number(st, name, v, 1, 600000, &k->request_timeout_ms);
    }
    {
        static const struct {
            const char *name;
            size_t off;
        } strs[] = {
            {"prewarm", offsetof(struct key_config, prewarm)},
            {"allow_encrypt", offsetof(struct key_config, allow_encrypt)},
            {"allow_decrypt", offsetof(struct key_config, allow_decrypt)},
            {"also_wrap_with", offsetof(struct key_config, also_wrap_with)},
            {"key_id", offsetof(struct key_config, key_id)},
            {"region", offsetof(struct key_config, region)},
            {"endpoint", offsetof(struct key_config, endpoint)},
            {"ca_file", offsetof(struct key_config, ca_file)},
            {"credentials_file",
             offsetof(struct key_config, credentials_file)},
            {"profile", offsetof(struct key_config, profile)},
        };
        size_t i;

        for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
            if (strcmp(name, strs[i].name) == 0) {
                return set_str((char **)((char *)k + strs[i].off), v);
            }
        }
    }
    if (strcmp(name, "key_file") == 0) {
        return set_str(&k->key_file, v);
    }
    if (strcmp(name, "namespace") == 0) {
        if (*v == '\0' || strncmp(v, "aws-kms", 7) == 0) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] namespace must be non-empty and must not "
                     "start with aws-kms", k->alias);
            return -1;
        }
        return set_str(&k->ns, v);
    }
    if (strcmp(name, "name") == 0) {
        if (*v == '\0') {
            snprintf(st->err, sizeof(st->err), "[key.%s] name is empty",
                     k->alias);
            return -1;
        }
        return set_str(&k->name, v);
    }
    if (strcmp(name, "ttl") == 0) {
        if (key_number(st, name, v, 1, 86400 * 365, &n) != 0) {
            return -1;
        }
        k->ttl_ms = n * 1000;
        return 0;
    }
    if (strcmp(name, "decrypt_ttl") == 0) {
        if (key_number(st, name, v, 1, 86400 * 365, &n) != 0) {
            return -1;
        }
        k->decrypt_ttl_ms = n * 1000;
        k->seen |= SEEN_DECRYPT_TTL;
        return 0;
    }
    if (strcmp(name, "max_messages") == 0) {
        return key_number(st, name, v, 1, 1ULL << 32, &k->max_messages);
    }
    if (strcmp(name, "max_bytes") == 0) {
        return key_number(st, name, v, 1, 1ULL << 62, &k->max_bytes);
    }
    if (strcmp(name, "frame_len") == 0) {
        if (key_number(st, name, v, 1, 1 << 20, &n) != 0) {
            return -1;
        }
        k->frame_len = (uint32_t)n;
        return 0;
    }
    if (strcmp(name, "suite") == 0) {
        if (parse_u64(v, 0, 0xffff, &n) != 0 ||
            (n != ESDK_SUITE_AES256_HKDF_SHA512_COMMIT &&
             n != ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384)) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] suite must be 0x0478 or 0x0578", k->alias);
            return -1;
        }
        k->suite = (uint16_t)n;
        return 0;
    }
    snprintf(st->err, sizeof(st->err), "unknown key '%s' in [key.%s]", name,
             k->alias);
    return -1;
}

static struct key_config *
key_new(struct parse_state *st, const char *alias)
{
    struct key_config *k;

    if (!alias_is_valid(alias)) {
        snprintf(st->err, sizeof(st->err),
                 "invalid key alias '%.80s' (letters, digits, '-', '_'; "
                 "at most %d)", alias, CONFIG_ALIAS_MAX - 1);
        return NULL;
    }
    if (config_find_key(st->cfg, alias, strlen(alias)) != NULL) {
        snprintf(st->err, sizeof(st->err),
                 "key alias '%s' defined twice", alias);
        return NULL;
    }
    if ((k = calloc(1, sizeof(*k))) == NULL) {
        snprintf(st->err, sizeof(st->err), "out of memory");
        return NULL;
    }
    snprintf(k->alias, sizeof(k->alias), "%s", alias);
    k->ttl_ms = CONFIG_DEFAULT_TTL * 1000ULL;
    k->max_messages = CONFIG_DEFAULT_MAX_MESSAGES;
    k->max_bytes = CONFIG_DEFAULT_MAX_BYTES;
    k->suite = ESDK_SUITE_AES256_HKDF_SHA512_COMMIT;
    k->frame_len = ESDK_DEFAULT_FRAME_LEN;
    k->ttl_jitter = 0.05;
    k->refresh_ahead = 0.8;
    *st->tail = k;
    st->tail = &k->next;
    st->cfg->nkeys++;
    return k;
}

/*
 * A name set twice in one section is an error, not a silent override:
 * it is usually a section repeated by mistake (inih merges a section
 * that appears twice in a row).
 */
static bool
seen_twice(struct parse_state *st, const char *section, const char *name)
{
    size_t i;

    for (i = 0; i < st->nseen; i++) {
        if (strcmp(st->seen_names[i], name) == 0) {
            snprintf(st->err, sizeof(st->err),
                     "'%.40s' set twice in [%.80s] (is the section or "
                     "alias defined twice?)", name, section);
            return true;
        }
    }
    if (st->nseen < sizeof(st->seen_names) / sizeof(st->seen_names[0])) {
        snprintf(st->seen_names[st->nseen++], sizeof(st->seen_names[0]),
                 "%s", name);
    }
    return false;
}

static int
config_ini_line(void *user, const char *section, const char *name,
            const char *value)
{
    struct parse_state *st = user;

    if (st->err[0] != '\0') {
        return 0;
    }
    if (strcmp(section, st->cur_section) != 0) {
        snprintf(st->cur_section, sizeof(st->cur_section), "%s", section);
        st->cur = NULL;
        st->nseen = 0;
        if (strncmp(section, "key.", 4) == 0) {
            if ((st->cur = key_new(st, section + 4)) == NULL) {
                return 0;
            }
        } else if (strcmp(section, "agent") != 0) {
            snprintf(st->err, sizeof(st->err),
                     "unknown section [%.80s] (expected [agent] or "
                     "[key.ALIAS])", section);
            return 0;
        }
    }
    if (name[0] == '\0') {
        snprintf(st->err, sizeof(st->err), "malformed line (the INI reader "
                 "takes at most 200 characters a line)");
        return 0;
    }
    if (seen_twice(st, section, name)) {
        return 0;
    }
    if (st->cur != NULL) {
        return key_key(st, name, value) == 0;
    }
    return agent_key(st, name, value) == 0;
}

int
config_parse_listen(const char *spec, char *host, size_t hostlen,
                    uint16_t *port)
{
    const char *colon = strrchr(spec, ':');
    unsigned char addr[16];
    char *end;
    unsigned long p;
    size_t len;

    if (colon == NULL || colon == spec) {
        return -1;
    }
    len = (size_t)(colon - spec);
    if (spec[0] == '[' && len >= 2 && spec[len - 1] == ']') {
        spec++;
        len -= 2;
    }
    if (len >= hostlen) {
        return -1;
    }
    memcpy(host, spec, len);
    host[len] = '\0';
    errno = 0;
    p = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || p == 0 || p > 65535) {
        return -1;
    }
    *port = (uint16_t)p;
    if (inet_pton(AF_INET, host, addr) == 1) {
        return addr[0] == 127 ? 0 : -1;
    }
    if (inet_pton(AF_INET6, host, addr) == 1) {
        return IN6_IS_ADDR_LOOPBACK((struct in6_addr *)addr) ? 0 : -1;
    }
    return -1;
}

/* [agent] settings that need the system (groups, addresses). */
static int
validate_agent(struct parse_state *st)
{
    struct agent_config *cfg = st->cfg;
    char host[64];
    uint16_t port;

    if (cfg->metrics_listen != NULL &&
        config_parse_listen(cfg->metrics_listen, host, sizeof(host),
                            &port) != 0) {
        snprintf(st->err, sizeof(st->err),
                 "metrics_listen '%.80s' must be a loopback address and "
                 "port, e.g. 127.0.0.1:9464", cfg->metrics_listen);
        return KC_ECONFIG;
    }
    if (cfg->socket_group != NULL && getgrnam(cfg->socket_group) == NULL) {
        snprintf(st->err, sizeof(st->err), "socket_group '%.80s': no such "
                 "group", cfg->socket_group);
        return KC_ECONFIG;
    }
    return 0;
}

static int
validate(struct parse_state *st)
{
    struct agent_config *cfg = st->cfg;
    struct key_config *k;
    int r;

    if ((r = validate_agent(st)) != 0) {
        return r;
    }

    if (cfg->socket_path == NULL &&
        (cfg->socket_path = strdup(CONFIG_DEFAULT_SOCKET)) == NULL) {
        return KC_ENOMEM;
    }
    for (k = cfg->keys; k != NULL; k = k->next) {
        if (k->provider == NULL) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] needs provider (e.g. provider = local)",
                     k->alias);
            return KC_ECONFIG;
        }
        if (strcmp(k->provider, "local") == 0 && k->key_file == NULL) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] provider local needs key_file", k->alias);
            return KC_ECONFIG;
        }
        if (strcmp(k->provider, "local") != 0 &&
            (k->key_id == NULL || k->region == NULL)) {
            snprintf(st->err, sizeof(st->err),
                     "[key.%s] provider %s needs key_id and region",
                     k->alias, k->provider);
            return KC_ECONFIG;
        }
        if (k->connect_timeout_ms == 0) {
            k->connect_timeout_ms = 2000;
        }
        if (k->request_timeout_ms == 0) {
            k->request_timeout_ms = 10000;
        }
        if (k->signature == NULL && set_str(&k->signature, "v3") != 0) {
            return KC_ENOMEM;
        }
        if (k->ns == NULL && set_str(&k->ns, CONFIG_DEFAULT_NAMESPACE) != 0) {
            return KC_ENOMEM;
        }
        if (k->name == NULL && set_str(&k->name, k->alias) != 0) {
            return KC_ENOMEM;
        }
        if ((k->seen & SEEN_DECRYPT_TTL) == 0) {
            k->decrypt_ttl_ms = k->ttl_ms;
        }
    }
    return 0;
}

int
config_load(const char *path, struct agent_config **out, char *err,
            size_t errlen)
{
    struct parse_state st;
    struct agent_config *cfg;
    int line, r;

    *out = NULL;
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return KC_ENOMEM;
    }
    cfg->socket_mode = CONFIG_DEFAULT_SOCKET_MODE;
    cfg->capacity = CONFIG_DEFAULT_CAPACITY;
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->max_frame = 1048576 + 65536;
    cfg->max_connections = 1024;
    cfg->max_connections_per_uid = 256;
    cfg->max_edks = 16;
    cfg->max_body_frames = 1 << 20;
    cfg->max_frame_length = 1 << 20;
    cfg->max_inflight = 128;
    cfg->idle_timeout_ms = 300000;
    cfg->read_timeout_ms = 10000;

    memset(&st, 0, sizeof(st));
    st.cfg = cfg;
    st.tail = &cfg->keys;
    line = ini_parse(path, config_ini_line, &st);
    if (line == -1) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        r = KC_ECONFIG;
        goto out;
    }
    if (line != 0) {
        snprintf(err, errlen, "%s:%d: %s", path, line,
                 st.err[0] != '\0' ? st.err : "syntax error");
        r = KC_ECONFIG;
        goto out;
    }
    if ((r = validate(&st)) != 0) {
        snprintf(err, errlen, "%s: %s", path,
                 st.err[0] != '\0' ? st.err : "out of memory");
        goto out;
    }
    *out = cfg;
    cfg = NULL;
out:
    config_free(cfg);
    return r;
}

bool
config_str_same(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

#define LIST_SEPARATORS " \t,"

bool
config_list_next(const char **pos, const char **item, size_t *len)
{
    const char *p = *pos + strspn(*pos, LIST_SEPARATORS);

    *item = p;
    *len = strcspn(p, LIST_SEPARATORS);
    *pos = p + *len;
    return *len > 0;
}

size_t
config_list_count(const char *text)
{
    const char *item;
    size_t len, n = 0;

    while (config_list_next(&text, &item, &len)) {
        n++;
    }
    return n;
}

const struct key_config *
config_find_key(const struct agent_config *cfg, const char *alias,
                size_t len)
{
    const struct key_config *k;

    for (k = cfg->keys; k != NULL; k = k->next) {
        if (strlen(k->alias) == len && memcmp(k->alias, alias, len) == 0) {
            return k;
        }
    }
    return NULL;
}

void
config_free(struct agent_config *cfg)
{
    struct key_config *k, *next;

    if (cfg == NULL) {
        return;
    }
    for (k = cfg->keys; k != NULL; k = next) {
        next = k->next;
        free(k->provider);
        free(k->key_file);
        free(k->ns);
        free(k->name);
        free(k->prewarm);
        free(k->allow_encrypt);
        free(k->allow_decrypt);
        free(k->also_wrap_with);
        free(k->key_id);
        free(k->region);
        free(k->endpoint);
        free(k->ca_file);
        free(k->signature);
        free(k->credentials_file);
        free(k->profile);
        free(k);
    }
    free(cfg->socket_path);
    free(cfg->allow_stats);
    free(cfg->socket_group);
    free(cfg->metrics_listen);
    free(cfg);
}

void
agent_limits_from_config(struct esdk_limits *lim,
                         const struct agent_config *cfg)
{
    esdk_limits_default(lim);
    lim->allow_legacy = cfg->allow_legacy;
    lim->max_edks = (size_t)cfg->max_edks;
    lim->max_message = cfg->max_message_size != 0
                           ? (size_t)cfg->max_message_size
                           : cfg->max_frame;
    lim->max_frames = cfg->max_body_frames;
    lim->max_frame_len = (size_t)cfg->max_frame_length;
}
