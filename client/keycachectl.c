/*
 * keycachectl.c - command-line client for keycache-agent, built on
 * libkeycache.
 *
 *   keycachectl [--socket PATH] [--timeout MS] COMMAND [ARGS]
 *
 * Exit status: 0 success (for ping/health: the agent is healthy),
 * 1 failure (one line on stderr: "keycachectl: CMD: what: why"),
 * 2 usage error.
 *
 * Plaintext read from stdin or returned by the agent lives only in
 * wiping buffers (kc_buf, kc_free) and is wiped before exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kc_buf.h"
#include "keycache.h"
#include "wire.h"

#define EXIT_USAGE 2

#define KEYGEN_BYTES 32
/* ping/health serve liveness probes: fail fast unless told otherwise. */
#define PROBE_TIMEOUT_MS 5000
/* Ciphertext on stdin may be Base64 (4/3 larger) plus whitespace. */
#define DECRYPT_INPUT_MAX (2 * (size_t)PROTO_DEFAULT_MAX_FRAME)

/* Global options, shared by every command. */
struct ctl {
    const char *socket; /* NULL: KEYCACHE_SOCKET, then the default */
    int timeout_ms;     /* 0: library default */
    const char *cmd;    /* for messages */
};

/* Options common to encrypt and decrypt. */
struct crypt_opts {
    const char *alias;
    struct kc_context_pair *ctx;
    size_t nctx;
    int base64;
};

struct command {
    const char *name;
    int (*run)(struct ctl *g, int argc, char **argv);
    const char *summary;
    const char *usage;
};

__attribute__((format(printf, 2, 3))) static int
fail(const struct ctl *g, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "keycachectl: %s: ", g->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

__attribute__((format(printf, 2, 3))) static int
usage_error(const struct ctl *g, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "keycachectl: %s: ", g->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'keycachectl %s --help')\n", g->cmd);
    return EXIT_USAGE;
}

/* Report a library failure: "<code text>: <agent or library message>". */
static int
fail_kc(const struct ctl *g, const struct kc_client *c, int r)
{
    const char *msg = c != NULL ? kc_client_last_error(c) : "";

    if (msg[0] == '\0' || strcmp(msg, kc_strerror(r)) == 0 ||
        strcmp(msg, "no error") == 0) {
        return fail(g, "%s", kc_strerror(r));
    }
    /* The agent's message often starts with the code's own text
     * ("permission denied: uid ..."): do not say it twice. */
    if (strncmp(msg, kc_strerror(r), strlen(kc_strerror(r))) == 0) {
        return fail(g, "%s", msg);
    }
    return fail(g, "%s: %s", kc_strerror(r), msg);
}

/* Open and connect a client; on failure prints why and returns 1. */
static int
client_open(const struct ctl *g, struct kc_client **out)
{
    struct kc_client *c = NULL;
    int r;

    *out = NULL;
    if ((r = kc_client_open(g->socket, g->timeout_ms, &c)) != 0) {
        if (r == KC_EINVAL) {
            /* The timeout was checked at parse time: the path is at fault. */
            return fail(g, "socket path too long (a Unix socket path must "
                           "be shorter than 108 bytes)");
        }
        return fail(g, "%s", kc_strerror(r));
    }
    if ((r = kc_client_connect(c)) != 0) {
        r = fail_kc(g, c, r);
        kc_client_free(c);
        return r;
    }
    *out = c;
    return 0;
}

/*
 * read_fd - read fd to EOF into b (whose max bounds the size).
 * Returns 0, KC_ETOOBIG, KC_ESYS (errno set).
 */
static int
read_fd(int fd, struct kc_buf *b)
{
    uint8_t chunk[16384];
    ssize_t n;
    int r = 0;

    for (;;) {
        n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = KC_ESYS;
            break;
        }
        if (n == 0) {
            break;
        }
        if ((r = kc_buf_put(b, chunk, (size_t)n)) != 0) {
            break;
        }
    }
    kc_wipe(chunk, sizeof(chunk));
    return r;
}

static int
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    ssize_t w;

    while (n > 0) {
        w = write(fd, q, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return KC_ESYS;
        }
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
read_stdin(const struct ctl *g, struct kc_buf *in, size_t max)
{
    int r;

    kc_buf_init(in, max);
    if ((r = read_fd(STDIN_FILENO, in)) == KC_ETOOBIG) {
        return fail(g, "input larger than %zu bytes", max);
    }
    if (r != 0) {
        return fail(g, "reading stdin: %s", strerror(errno));
    }
    return 0;
}

static int
write_stdout(const struct ctl *g, const void *p, size_t n)
{
    if (write_all(STDOUT_FILENO, p, n) != 0) {
        return fail(g, "writing stdout: %s", strerror(errno));
    }
    return 0;
}

/*
 * parse_pair - split "k=v" at the first '=' in place (argv strings are
 * writable).  Returns 0, or -1 when there is no '=' or the key is empty.
 */
static int
parse_pair(char *arg, struct kc_context_pair *out)
{
    char *eq = strchr(arg, '=');

    if (eq == NULL || eq == arg) {
        return -1;
    }
    *eq = '\0';
    out->key = arg;
    out->value = eq + 1;
    return 0;
}

static void
print_help(const struct command *cmd)
{
    printf("usage: keycachectl [--socket PATH] [--timeout MS] %s\n\n%s\n",
           cmd->usage, cmd->summary);
}

/*
 * parse_crypt - options of encrypt/decrypt.  Returns -1 to continue,
 * else the exit status (0 after --help, EXIT_USAGE on a bad option).
 */
static int
parse_crypt(struct ctl *g, const struct command *cmd, int argc, char **argv,
            int want_key, struct crypt_opts *o)
{
    static const struct option longopts[] = {
        {"key", required_argument, NULL, 'k'},
        {"context", required_argument, NULL, 'c'},
        {"base64", no_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    memset(o, 0, sizeof(*o));
    if ((o->ctx = calloc((size_t)argc, sizeof(*o->ctx))) == NULL) {
        return fail(g, "out of memory");
    }
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, want_key ? "k:c:bh" : "c:bh",
                             longopts, NULL)) != -1) {
        switch (ch) {
        case 'k':
            if (!want_key) {
                return usage_error(g, "--key is not used here");
            }
            o->alias = optarg;
            break;
        case 'c':
            if (parse_pair(optarg, &o->ctx[o->nctx]) != 0) {
                return usage_error(g, "--context wants KEY=VALUE with a "
                                      "non-empty KEY");
            }
            o->nctx++;
            break;
        case 'b':
            o->base64 = 1;
            break;
        case 'h':
            print_help(cmd);
            return 0;
        default:
            return usage_error(g, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) {
        return usage_error(g, "unexpected argument '%s'", argv[optind]);
    }
    if (want_key && o->alias == NULL) {
        return usage_error(g, "--key ALIAS is required");
    }
    return -1;
}

/*
 * parse_simple - commands whose only options are --help and maybe one
 * flag (--json).  Returns -1 to continue, else the exit status.
 */
static int
parse_simple(struct ctl *g, const struct command *cmd, int argc, char **argv,
             int *json, int npos, char **pos)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch, i;

    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, json != NULL ? "jh" : "h", longopts,
                             NULL)) != -1) {
        if (ch == 'h') {
            print_help(cmd);
            return 0;
        }
        if (ch == 'j' && json != NULL) {
            *json = 1;
            continue;
        }
        return usage_error(g, "bad option '%s'", argv[optind - 1]);
    }
    if (argc - optind != npos) {
        return usage_error(g, "expected %d argument%s", npos,
                           npos == 1 ? "" : "s");
    }
    for (i = 0; i < npos; i++) {
        pos[i] = argv[optind + i];
    }
    return -1;
}

static const struct command *find_command(const char *name);

static int
cmd_encrypt(struct ctl *g, int argc, char **argv)
{
    struct kc_client *c = NULL;
    struct crypt_opts o;
    struct kc_buf in;
    uint8_t *ct = NULL;
    char *b64 = NULL;
    size_t ct_len = 0;
    int r;

    kc_buf_init(&in, 0);
    if ((r = parse_crypt(g, find_command("encrypt"), argc, argv, 1, &o)) !=
        -1) {
        goto out;
    }
    if ((r = read_stdin(g, &in, PROTO_MAX_PLAINTEXT)) != 0 ||
        (r = client_open(g, &c)) != 0) {
        goto out;
    }
    r = kc_encrypt(c, o.alias, o.ctx, o.nctx, in.data, in.len, &ct, &ct_len);
    if (r != 0) {
        r = fail_kc(g, c, r);
        goto out;
    }
    if (!o.base64) {
        r = write_stdout(g, ct, ct_len);
        goto out;
    }
    if ((r = kc_base64_encode(ct, ct_len, &b64)) != 0) {
        r = fail(g, "%s", kc_strerror(r));
        goto out;
    }
    if ((r = write_stdout(g, b64, strlen(b64))) == 0) {
        r = write_stdout(g, "\n", 1);
    }
out:
    kc_free(b64);
    kc_free(ct);
    kc_client_free(c);
    kc_buf_clear(&in);
    free(o.ctx);
    return r;
}

/* Strip leading and trailing ASCII whitespace; returns the new bounds. */
static void
trim_space(const uint8_t *p, size_t n, size_t *start, size_t *len)
{
    size_t a = 0, b = n;

    while (a < b && (p[a] == ' ' || (p[a] >= '\t' && p[a] <= '\r'))) {
        a++;
    }
    while (b > a && (p[b - 1] == ' ' || (p[b - 1] >= '\t' &&
                                         p[b - 1] <= '\r'))) {
        b--;
    }
    *start = a;
    *len = b - a;
}

static int
cmd_decrypt(struct ctl *g, int argc, char **argv)
{
    struct kc_client *c = NULL;
    struct crypt_opts o;
    struct kc_buf in;
    uint8_t *pt = NULL, *bin = NULL;
    const uint8_t *ct;
    size_t pt_len = 0, ct_len, start = 0, len = 0;
    int r;

    kc_buf_init(&in, 0);
    if ((r = parse_crypt(g, find_command("decrypt"), argc, argv, 0, &o)) !=
        -1) {
        goto out;
    }
    if ((r = read_stdin(g, &in, DECRYPT_INPUT_MAX)) != 0) {
        goto out;
    }
    ct = in.data;
    ct_len = in.len;
    if (o.base64) {
        trim_space(in.data, in.len, &start, &len);
        if (kc_base64_decode((const char *)in.data + start, len, &bin,
                             &ct_len) != 0) {
            r = fail(g, "input is not valid Base64");
            goto out;
        }
        ct = bin;
    }
    if ((r = client_open(g, &c)) != 0) {
        goto out;
    }
    if ((r = kc_decrypt(c, ct, ct_len, o.ctx, o.nctx, &pt, &pt_len)) != 0) {
        r = fail_kc(g, c, r);
        goto out;
    }
    r = write_stdout(g, pt, pt_len);
out:
    kc_free(pt);
    kc_free(bin);
    kc_client_free(c);
    kc_buf_clear(&in);
    free(o.ctx);
    return r;
}

/* A counter from a stats object, or -1 when absent. */
static json_int_t
counter(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);

    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static void
print_num(json_int_t v, int width)
{
    if (v < 0) {
        printf(" %*s", width, "-");
    } else {
        printf(" %*lld", width, (long long)v);
    }
}

static const char *const key_cols[][2] = {
    {"encrypt", "ENCRYPT"},
    {"decrypt", "DECRYPT"},
    {"errors", "ERRORS"},
    {"cache_hits", "HITS"},
    {"cache_misses", "MISSES"},
    {"provider_calls", "PROVIDER_CALLS"},
    {"provider_errors", "PROVIDER_ERRORS"},
    {"entries", "ENTRIES"},
    {"locked_bytes", "LOCKED_BYTES"},
};
#define NKEY_COLS (sizeof(key_cols) / sizeof(key_cols[0]))

static void
print_key_table(const json_t *keys)
{
    const char *alias;
    json_t *row;
    int w = 9;
    size_t i;

    json_object_foreach((json_t *)keys, alias, row) {
        if ((int)strlen(alias) > w) {
            w = (int)strlen(alias);
        }
    }
    printf("%-*s", w, "KEY ALIAS");
    for (i = 0; i < NKEY_COLS; i++) {
        printf(" %s", key_cols[i][1]);
    }
    printf("\n");
    json_object_foreach((json_t *)keys, alias, row) {
        printf("%-*s", w, alias);
        for (i = 0; i < NKEY_COLS; i++) {
            print_num(counter(row, key_cols[i][0]),
                      (int)strlen(key_cols[i][1]));
        }
        printf("\n");
    }
    if (json_object_size(keys) == 0) {
        printf("(no keys configured)\n");
    }
}

static void
print_stats_table(const json_t *root)
{
    const json_t *cache = json_object_get(root, "cache");
    const json_t *agent = json_object_get(root, "agent");
    const json_t *ver = json_object_get(agent, "version");

    print_key_table(json_object_get(root, "keys"));
    printf("\ncache: entries %lld of %lld, locked %lld bytes, "
           "evictions %lld, expirations %lld\n",
           (long long)counter(cache, "entries"),
           (long long)counter(cache, "capacity"),
           (long long)counter(cache, "locked_bytes"),
           (long long)counter(cache, "evictions"),
           (long long)counter(cache, "expirations"));
    printf("agent: version %s, uptime %lld s, connections %lld, "
           "requests %lld\n",
           json_is_string(ver) ? json_string_value(ver) : "?",
           (long long)counter(agent, "uptime_seconds"),
           (long long)counter(agent, "connections"),
           (long long)counter(agent, "requests"));
}

/* One stats fetch, printed as JSON or as the table. */
static int
stats_once(struct ctl *g, struct kc_client *c, int as_json)
{
    json_t *root = NULL;
    json_error_t jerr;
    char *json = NULL;
    int r;

    if ((r = kc_stats_json(c, &json)) != 0) {
        r = fail_kc(g, c, r);
        goto out;
    }
    if (as_json) {
        printf("%s\n", json);
        r = 0;
        goto out;
    }
    if ((root = json_loads(json, 0, &jerr)) == NULL || !json_is_object(root)) {
        r = fail(g, "agent stats are not a JSON object");
        goto out;
    }
    print_stats_table(root);
    r = 0;
out:
    json_decref(root);
    kc_free(json);
    return r;
}

/*
 * stats [--json] [--watch [--interval S]]: with --watch the table is
 * redrawn in place every S seconds (default 2) until interrupted.
 */
static int
cmd_stats(struct ctl *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kc_client *c = NULL;
    int as_json = 0, watch = 0, interval = 2, ch, r;
    char *end;
    long v;

    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "jwi:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'j':
            as_json = 1;
            break;
        case 'w':
            watch = 1;
            break;
        case 'i':
            v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 1 || v > 3600) {
                return usage_error(g, "--interval must be 1..3600 seconds");
            }
            interval = (int)v;
            break;
        case 'h':
            print_help(find_command("stats"));
            return 0;
        default:
            return usage_error(g, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc != optind) {
        return usage_error(g, "expected no arguments");
    }
    if ((r = client_open(g, &c)) != 0) {
        return r;
    }
    if (!watch) {
        r = stats_once(g, c, as_json);
        kc_client_free(c);
        return r;
    }
    for (;;) {
        if (!as_json) {
            printf("\033[H\033[2J"); /* home and clear: redraw in place */
        }
        if ((r = stats_once(g, c, as_json)) != 0) {
            break;
        }
        fflush(stdout);
        sleep((unsigned int)interval);
    }
    kc_client_free(c);
    return r;
}

static double
elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static int
cmd_ping(struct ctl *g, int argc, char **argv)
{
    struct kc_client *c = NULL;
    struct timespec t0;
    int r;

    if ((r = parse_simple(g, find_command("ping"), argc, argv, NULL, 0,
                          NULL)) != -1) {
        return r;
    }
    if (g->timeout_ms == 0) {
        g->timeout_ms = PROBE_TIMEOUT_MS;
    }
    if ((r = client_open(g, &c)) != 0) {
        return r;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((r = kc_ping(c)) != 0) {
        r = fail_kc(g, c, r);
    } else {
        printf("pong from %s at %s in %.2f ms\n", kc_client_agent(c),
               kc_client_socket_path(c), elapsed_ms(&t0));
    }
    kc_client_free(c);
    return r;
}

/*
 * Open a client and send op (no fields).  On success *c, *json (the
 * reply as JSON text) and *root (parsed) belong to the caller, freed by
 * call_op_done; on failure the message is printed and the exit status
 * returned.
 */
static int
call_op(struct ctl *g, const char *op, struct kc_client **c, char **json,
        json_t **root)
{
    int r;

    *c = NULL;
    *json = NULL;
    *root = NULL;
    if ((r = client_open(g, c)) != 0) {
        return r;
    }
    if ((r = kc_call_json(*c, op, json)) != 0) {
        return fail_kc(g, *c, r);
    }
    if ((*root = json_loads(*json, 0, NULL)) == NULL) {
        return fail(g, "agent reply is not JSON");
    }
    return 0;
}

static void
call_op_done(struct kc_client *c, char *json, json_t *root)
{
    json_decref(root);
    kc_free(json);
    kc_client_free(c);
}

/*
 * health [--live | --ready] [--json]: ask the agent's health op, which
 * any peer that can reach the socket may use.  --live: exit 0 when the
 * agent answers (its loop turns); --ready: exit 0 only once its pre-warm
 * keys are fetched; no flag: as --live, printing readiness too.
 */
static int
cmd_health(struct ctl *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"live", no_argument, NULL, 'l'},
        {"ready", no_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kc_client *c = NULL;
    json_t *root = NULL;
    char *json = NULL;
    int want_ready = 0, as_json = 0, ch, r;
    bool ready;

    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "lrjh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l':
            want_ready = 0;
            break;
        case 'r':
            want_ready = 1;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            print_help(find_command("health"));
            return 0;
        default:
            return usage_error(g, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc != optind) {
        return usage_error(g, "expected no arguments");
    }
    if (g->timeout_ms == 0) {
        g->timeout_ms = PROBE_TIMEOUT_MS;
    }
    if ((r = call_op(g, "health", &c, &json, &root)) != 0) {
        goto out;
    }
    ready = json_is_true(json_object_get(root, "ready"));
    if (as_json) {
        printf("%s\n", json);
    } else {
        printf("%s: %s at %s, %s (%lld pre-warm keys pending)\n",
               want_ready && !ready ? "not ready" : "healthy",
               kc_client_agent(c), kc_client_socket_path(c),
               ready ? "ready" : "warming up",
               (long long)counter(root, "warmup_pending"));
    }
    r = want_ready && !ready ? EXIT_FAILURE : 0;
out:
    call_op_done(c, json, root);
    return r;
}

/* metrics: the Prometheus text exposition, as the agent renders it. */
static int
cmd_metrics(struct ctl *g, int argc, char **argv)
{
    struct kc_client *c = NULL;
    json_t *root = NULL;
    const json_t *text;
    char *json = NULL;
    int r;

    if ((r = parse_simple(g, find_command("metrics"), argc, argv, NULL, 0,
                          NULL)) != -1) {
        return r;
    }
    if ((r = call_op(g, "metrics", &c, &json, &root)) != 0) {
        goto out;
    }
    text = json_object_get(root, "text");
    if (!json_is_string(text)) {
        r = fail(g, "agent reply lacks the metrics text");
        goto out;
    }
    fputs(json_string_value(text), stdout);
out:
    call_op_done(c, json, root);
    return r;
}

/* reload: re-read and validate the agent's config, as SIGHUP does. */
static int
cmd_reload(struct ctl *g, int argc, char **argv)
{
    struct kc_client *c = NULL;
    json_t *root = NULL;
    char *json = NULL;
    int r;

    if ((r = parse_simple(g, find_command("reload"), argc, argv, NULL, 0,
                          NULL)) != -1) {
        return r;
    }
    /* The agent applies a valid config at once (or answers an error). */
    if ((r = call_op(g, "reload", &c, &json, &root)) == 0) {
        printf("reloaded: new config applied\n");
    }
    call_op_done(c, json, root);
    return r;
}

/* Write a fresh random master key; never replaces an existing file. */
static int
cmd_keygen(struct ctl *g, int argc, char **argv)
{
    uint8_t key[KEYGEN_BYTES];
    char *path = NULL;
    int fd = -1, r;

    if ((r = parse_simple(g, find_command("keygen"), argc, argv, NULL, 1,
                          &path)) != -1) {
        return r;
    }
    if (sodium_init() < 0) {
        return fail(g, "libsodium failed to initialise");
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0) {
        return fail(g, "%s: %s%s", path, strerror(errno),
                    errno == EEXIST ? " (refusing to overwrite a key)" : "");
    }
    randombytes_buf(key, sizeof(key));
    /* The umask can only remove bits; set 0600 exactly anyway. */
    if (fchmod(fd, 0600) != 0 || write_all(fd, key, sizeof(key)) != 0 ||
        fsync(fd) != 0) {
        r = fail(g, "%s: %s", path, strerror(errno));
        unlink(path);
        goto out;
    }
    printf("wrote a new %d-byte master key to %s (mode 0600)\n",
           KEYGEN_BYTES, path);
    r = 0;
out:
    sodium_memzero(key, sizeof(key));
    if (fd >= 0 && close(fd) != 0 && r == 0) {
        r = fail(g, "%s: %s", path, strerror(errno));
        unlink(path);
    }
    return r;
}

static const struct command commands[] = {
    {"stats", cmd_stats,
     "Show the agent's counters: one row per key alias, then cache and\n"
     "agent totals.\n\n"
     "  --json          print the agent's stats object as one line of JSON:\n"
     "                  {\"keys\": {ALIAS: {...}}, \"cache\": {...}, "
     "\"agent\": {...}}\n"
     "  --watch         redraw every few seconds until interrupted\n"
     "  --interval S    seconds between redraws (default 2)",
     "stats [--json] [--watch [--interval S]]"},
    {"metrics", cmd_metrics,
     "Print the agent's metrics in the Prometheus text exposition format.",
     "metrics"},
    {"reload", cmd_reload,
     "Re-read and fully validate the agent's config file, then apply it\n"
     "without dropping connections (as SIGHUP does).  On a bad file the\n"
     "running config stays and the reason is printed.",
     "reload"},
    {"ping", cmd_ping,
     "Round trip to the agent.  Exit 0 when it answers, 1 otherwise.\n"
     "The timeout defaults to 5000 ms here.",
     "ping"},
    {"health", cmd_health,
     "Ask the agent how it is.  Exit 0 when healthy, 1 otherwise.\n\n"
     "  --live    healthy when the agent answers (liveness probe; default)\n"
     "  --ready   healthy only once its pre-warm keys are fetched\n"
     "            (readiness probe)\n"
     "  --json    print the agent's reply as JSON\n"
     "The timeout defaults to 5000 ms here.",
     "health [--live | --ready] [--json]"},
    {"encrypt", cmd_encrypt,
     "Encrypt stdin under key ALIAS; the ciphertext (an AWS Encryption SDK\n"
     "message) goes to stdout.\n\n"
     "  -k, --key ALIAS        key alias from the agent's config (required)\n"
     "  -c, --context K=V      encryption-context pair; repeatable; split\n"
     "                         at the first '='. Authenticated, not secret.\n"
     "  -b, --base64           write Base64 and a newline instead of bytes",
     "encrypt --key ALIAS [--context K=V ...] [--base64]"},
    {"decrypt", cmd_decrypt,
     "Decrypt a message from stdin; the plaintext goes to stdout.\n\n"
     "  -c, --context K=V      pair the message's context must contain\n"
     "                         (repeatable); a mismatch is an error\n"
     "  -b, --base64           input is Base64 (surrounding whitespace\n"
     "                         and a trailing newline are ignored)",
     "decrypt [--context K=V ...] [--base64]"},
    {"keygen", cmd_keygen,
     "Create a 32-byte random master key file for the local provider,\n"
     "mode 0600.  Refuses to overwrite an existing file.",
     "keygen PATH"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *
find_command(const char *name)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static void
print_top_help(FILE *f)
{
    size_t i;

    fprintf(f,
            "usage: keycachectl [--socket PATH] [--timeout MS] COMMAND "
            "[ARGS]\n\n"
            "Talk to keycache-agent over its Unix socket.\n\n"
            "Options:\n"
            "  -s, --socket PATH   agent socket (default: $KEYCACHE_SOCKET, "
            "else\n"
            "                      %s)\n"
            "  -t, --timeout MS    per-request timeout in milliseconds "
            "(default 30000;\n"
            "                      5000 for ping and health)\n"
            "  -h, --help          this text; 'COMMAND --help' for a "
            "command\n"
            "  -V, --version       print the version\n\n"
            "Commands:\n",
            KC_DEFAULT_SOCKET);
    for (i = 0; i < NCOMMANDS; i++) {
        fprintf(f, "  %s\n", commands[i].usage);
    }
    fprintf(f, "\nExit status: 0 success, 1 failure, 2 usage error.\n");
}

static int
parse_timeout(const char *s, int *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > INT_MAX) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct ctl g = {.socket = NULL, .timeout_ms = 0, .cmd = "usage"};
    const struct command *cmd;
    int ch;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+s:t:hV", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            g.socket = optarg;
            break;
        case 't':
            if (parse_timeout(optarg, &g.timeout_ms) != 0) {
                fprintf(stderr, "keycachectl: --timeout wants a positive "
                                "number of milliseconds\n");
                return EXIT_USAGE;
            }
            break;
        case 'h':
            print_top_help(stdout);
            return 0;
        case 'V':
            printf("keycachectl %s\n", KC_VERSION_STRING);
            return 0;
        default:
            fprintf(stderr, "keycachectl: bad option '%s' (see keycachectl "
                            "--help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        print_top_help(stderr);
        return EXIT_USAGE;
    }
    if ((cmd = find_command(argv[optind])) == NULL) {
        fprintf(stderr, "keycachectl: unknown command '%s' (see keycachectl "
                        "--help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    g.cmd = cmd->name;
    return cmd->run(&g, argc - optind, argv + optind);
}
