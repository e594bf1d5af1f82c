/*
 * keycache_bench.c - keycache-bench: how much does going through the
 * agent cost, against doing the crypto in-process and against the SDK a
 * team would use instead?  One run measures everything (see
 * tests/bench/PERFORMANCE.md):
 *
 *   in-process  naive OpenSSL 3 envelope encrypt (naive.c), keycache's
 *               own crypto path (esdk templates), esdk decrypt;
 *   transport   raw Unix-socket echo round trip between two processes;
 *   agent       a keycache-agent it starts itself on a scratch socket
 *               (local provider, temporary master key): blocking depth 1,
 *               pipelined 16 and 64, batches of 32 and 256, encrypt and
 *               decrypt (data key cached); and a second agent, configured
 *               alike, filled with 100 000 distinct cached keys: encrypt
 *               over all of them, locked bytes per key and RSS;
 *   node peer   @aws-crypto/client-node with the caching CMM, when node
 *               and tests/bench/node/node_modules are there.
 *
 *   keycache-bench [--quick] [--json] [--agent PATH] [--node-dir DIR]
 *
 * The run is a sequence of rounds; each round measures every figure
 * once, in a short window, and a figure is the median of its rounds.
 * A shared machine's slow drifts and one-second stalls then fall on all
 * figures alike instead of on whichever was measured last, so a ratio of
 * two figures compares like with like.
 *
 * --quick shortens every measurement (CI smoke run; never a pass/fail
 * on timing).  --json prints one JSON object on stdout (and the table
 * on stderr).  Everything it starts (agent, echo child, node) runs on
 * this machine, on sockets in a fresh /tmp directory, and is stopped
 * before it exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bench.h"
#include "esdk.h"
#include "keycache.h"

#ifndef KC_BENCH_AGENT
#define KC_BENCH_AGENT "keycache-agent"
#endif
#ifndef KC_BENCH_NODE_DIR
#define KC_BENCH_NODE_DIR "tests/bench/node"
#endif

#define ALIAS "bench"
#define KEY_STRIDE 7919 /* prime: walks every key when it does not divide
                         * the key count (parse_opts checks) */

struct opts {
    bool quick, json;
    const char *agent, *node_dir;
    double secs;      /* per figure, over all rounds */
    int rounds;       /* <= ROUNDS_MAX */
    size_t nkeys;     /* distinct cached keys */
};

#define ROUNDS_MAX 5

/* Latency samples of one kind from every round (us): percentiles are
 * taken over the whole run, not per round. */
struct lat {
    double *v;
    size_t n, cap;
};

/*
 * One figure of the run.  A throughput is one sample per round, reported
 * as their median; a latency percentile is taken over its struct lat;
 * a difference is of two other figures' final values.
 */
struct fig {
    const char *json;  /* JSON field name (unique) */
    const char *label;
    double value;      /* final; < 0: not measured */
    const char *unit;
    const char *base;  /* JSON name of the figure it is compared with */
    bool higher_better;
    double s[ROUNDS_MAX];
    size_t n;
    struct lat *lat;   /* percentile p of these samples, if set */
    double p;
    const char *minus[2]; /* value of minus[0] - minus[1], if set */
};

#define NFIGS 64
static struct fig figs[NFIGS];
static size_t nfigs;

/*
 * An agent started by the bench: "one" serves the single-key figures,
 * "many" holds the 100 000 keys, so both are measured in every round.
 */
struct agent_proc {
    char dir[64]; /* scratch directory: key file, config, socket */
    char key[96], ini[96], sock[96]; /* paths in it, made once (the
                                      * signal handler cannot format) */
    pid_t pid;
};

static struct agent_proc agent_one = {.pid = -1}, agent_many = {.pid = -1};

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void agent_stop(struct agent_proc *ap);

__attribute__((format(printf, 1, 2))) static void
die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "keycache-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    /* Stop the agents and remove their directories (master keys). */
    agent_stop(&agent_one);
    agent_stop(&agent_many);
    exit(1);
}

static struct fig *
fig_find(const char *json)
{
    size_t i;

    for (i = 0; i < nfigs; i++) {
        if (strcmp(figs[i].json, json) == 0) {
            return &figs[i];
        }
    }
    return NULL;
}

/* The figure named json; the first call places it in the table. */
static struct fig *
fig_get(const char *json, const char *label, const char *unit,
        const char *base, bool higher_better)
{
    struct fig *f = fig_find(json);

    if (f == NULL) {
        if (nfigs == NFIGS) {
            die("%s", "too many figures");
        }
        f = &figs[nfigs++];
        memset(f, 0, sizeof(*f));
        f->json = json;
        f->label = label;
        f->value = -1;
        f->unit = unit;
        f->base = base;
        f->higher_better = higher_better;
    }
    return f;
}

/* Add this round's sample of a figure. */
static void
fig_add(const char *json, const char *label, double v, const char *unit,
        const char *base, bool higher_better)
{
    struct fig *f = fig_get(json, label, unit, base, higher_better);

    if (f->n == ROUNDS_MAX) {
        die("%s: more samples than rounds", json);
    }
    f->s[f->n++] = v;
}

/* A latency percentile (us) over every sample in l. */
static void
fig_pct(const char *json, const char *label, const char *base,
        struct lat *l, double p)
{
    struct fig *f = fig_get(json, label, "us", base, false);

    f->lat = l;
    f->p = p;
}

/* The difference of two figures' final values (us). */
static void
fig_diff(const char *json, const char *label, const char *a, const char *b)
{
    struct fig *f = fig_get(json, label, "us", NULL, false);

    f->minus[0] = a;
    f->minus[1] = b;
}

static void
lat_add(struct lat *l, double us)
{
    double *v;

    if (l->n == l->cap) {
        l->cap = l->cap == 0 ? 65536 : 2 * l->cap;
        if ((v = realloc(l->v, l->cap * sizeof(double))) == NULL) {
            die("%s", "out of memory");
        }
        l->v = v;
    }
    l->v[l->n++] = us;
}

static void
progress(const struct opts *o, const char *what)
{
    if (!o->json) {
        fprintf(stderr, "  measuring %s...\n", what);
    }
}

/* ---- latencies and medians -------------------------------------------- */

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
pct(const double *v, size_t n, double p)
{
    size_t i;

    if (n == 0) {
        return -1;
    }
    i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/*
 * Every figure's final value: a percentile of its latencies; else the
 * median of its samples (the mean of the middle two for an even count),
 * not measured if any sample was not; then the differences.
 */
static void
figs_finish(void)
{
    double v[ROUNDS_MAX];
    const struct fig *a, *b;
    struct fig *f;
    size_t i, j;

    for (i = 0; i < nfigs; i++) {
        f = &figs[i];
        if (f->lat != NULL) {
            /* Sorting twice is harmless: a second sort finds it sorted. */
            qsort(f->lat->v, f->lat->n, sizeof(double), cmp_double);
            f->value = pct(f->lat->v, f->lat->n, f->p);
            continue;
        }
        if (f->minus[0] != NULL || f->n == 0) {
            continue;
        }
        memcpy(v, f->s, f->n * sizeof(double));
        qsort(v, f->n, sizeof(double), cmp_double);
        f->value = f->n % 2 ? v[f->n / 2]
                            : (v[f->n / 2 - 1] + v[f->n / 2]) / 2;
        for (j = 0; j < f->n; j++) {
            if (f->s[j] < 0) {
                f->value = -1;
            }
        }
    }
    for (i = 0; i < nfigs; i++) {
        f = &figs[i];
        if (f->minus[0] != NULL && (a = fig_find(f->minus[0])) != NULL &&
            (b = fig_find(f->minus[1])) != NULL && a->value >= 0 &&
            b->value >= 0) {
            f->value = a->value - b->value;
        }
    }
}

/* ---- 1. and 2.: in-process ------------------------------------------ */

struct inproc {
    uint8_t dk[32];
    struct esdk_ec ec;
    struct kc_buf ec_ser;
    struct esdk_edk_list edks;
    struct esdk_tmpl *tmpl;
    struct naive_key nk;
};

static void
inproc_init(struct inproc *ip)
{
    static const uint8_t wkey[32] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct esdk_enc *enc = NULL;
    const uint8_t *aad;
    size_t aad_len;

    randombytes_buf(ip->dk, sizeof(ip->dk));
    esdk_ec_init(&ip->ec);
    esdk_edk_list_init(&ip->edks);
    kc_buf_init(&ip->ec_ser, 0);
    if (esdk_ec_add(&ip->ec, "tenant", 6, "t000000", 7) != 0 ||
        esdk_ec_serialize(&ip->ec, &ip->ec_ser) != 0 ||
        esdk_enc_new(0x0478, &ip->ec, &enc) != 0) {
        die("%s", "cannot set up the in-process key");
    }
    esdk_enc_wrapping_aad(enc, &aad, &aad_len);
    if (rawaes_wrap(wkey, 32, "keycache", ALIAS, aad, aad_len, ip->dk, 32,
                    &ip->edks) != 0 ||
        esdk_tmpl_new(0x0478, &ip->ec, &ip->edks, 4096, &ip->tmpl) != 0) {
        die("%s", "cannot wrap the in-process key");
    }
    esdk_enc_free(enc);
    memcpy(ip->nk.dk, ip->dk, 32);
    ip->nk.ec = ip->ec_ser.data;
    ip->nk.ec_len = ip->ec_ser.len;
    ip->nk.pid = ip->edks.v[0].provider_id;
    ip->nk.pid_len = ip->edks.v[0].provider_id_len;
    ip->nk.info = ip->edks.v[0].provider_info;
    ip->nk.info_len = ip->edks.v[0].provider_info_len;
    ip->nk.ct = ip->edks.v[0].ciphertext;
    ip->nk.ct_len = ip->edks.v[0].ciphertext_len;
}

static void
inproc_clear(struct inproc *ip)
{
    esdk_tmpl_free(ip->tmpl);
    esdk_edk_list_clear(&ip->edks);
    esdk_ec_clear(&ip->ec);
    kc_buf_clear(&ip->ec_ser);
    sodium_memzero(ip, sizeof(*ip));
}

/* The esdk reader must accept a message and give pt back. */
static void
check_msg(const struct inproc *ip, const uint8_t *m, size_t len,
          const uint8_t *pt, size_t n)
{
    struct esdk_header *h = NULL;
    struct kc_buf out;

    kc_buf_init(&out, 0);
    if (esdk_header_parse(m, len, NULL, &h) != 0 ||
        esdk_decrypt(h, m, len, ip->dk, 32, NULL, &out) != 0 ||
        out.len != n || memcmp(out.data, pt, n) != 0) {
        die("%s", "a message did not decrypt: format mismatch");
    }
    esdk_header_free(h);
    kc_buf_clear(&out);
}

enum inproc_kind { IP_NAIVE, IP_KEYCACHE, IP_DECRYPT };

static double
inproc_run(struct inproc *ip, enum inproc_kind kind, size_t n, double secs)
{
    uint8_t pt[1024], out[4096];
    struct esdk_header *h = NULL;
    struct kc_buf b, p;
    size_t ops = 0, len = 0, i;
    double t0, t;

    randombytes_buf(pt, n);
    kc_buf_init(&b, 0);
    kc_buf_init(&p, 0);
    if (esdk_tmpl_encrypt(ip->tmpl, ip->dk, 32, pt, n, &b) != 0) {
        die("%s", "esdk_tmpl_encrypt failed");
    }
    if ((len = naive_encrypt(&ip->nk, pt, n, out)) == 0) {
        die("%s", "naive encrypt failed");
    }
    check_msg(ip, out, len, pt, n);
    check_msg(ip, b.data, b.len, pt, n);
    t0 = now_s();
    do {
        for (i = 0; i < 256; i++) {
            if (kind == IP_NAIVE) {
                len = naive_encrypt(&ip->nk, pt, n, out);
            } else if (kind == IP_KEYCACHE) {
                b.len = 0;
                len = esdk_tmpl_encrypt(ip->tmpl, ip->dk, 32, pt, n, &b);
            } else {
                p.len = 0;
                len = esdk_header_parse(b.data, b.len, NULL, &h) != 0 ||
                      esdk_decrypt(h, b.data, b.len, ip->dk, 32, NULL, &p);
                esdk_header_free(h);
                h = NULL;
            }
            (void)len;
        }
        ops += 256;
        t = now_s() - t0;
    } while (t < secs);
    kc_buf_clear(&b);
    kc_buf_clear(&p);
    return (double)ops / t;
}

/* ---- 3.: raw Unix-socket echo ---------------------------------------- */

/* libkeycache's default kc_client_set_spin budget (client.c). */
#define CLIENT_SPIN_US 50

enum echo_mode {
    ECHO_BLOCKING, /* blocking read and write on both ends */
    ECHO_EVLOOP,   /* child in epoll_wait, parent in poll */
    ECHO_SPIN,     /* as ECHO_EVLOOP, the parent polls CLIENT_SPIN_US first */
};

/* Wait for events on fd, busy-polling for spin_us microseconds first. */
static void
wait_fd(int fd, short events, int spin_us)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    double until = now_s() + spin_us * 1e-6;

    while (spin_us > 0 && now_s() < until) {
        if (poll(&pfd, 1, 0) > 0) {
            return;
        }
    }
    (void)poll(&pfd, 1, 1000);
}

static bool
full_io(int fd, uint8_t *p, size_t n, bool wr, int spin_us)
{
    ssize_t k;

    while (n > 0) {
        k = wr ? write(fd, p, n) : read(fd, p, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_fd(fd, wr ? POLLOUT : POLLIN, spin_us); /* non-blocking */
            continue;
        }
        if (k <= 0) {
            return false;
        }
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/*
 * Round trips of a 120-byte message (about an encrypt request) to a
 * child that echoes it: round trips/s, each one's time added to lat.  With
 * evloop, both ends wait the way the agent and libkeycache do (the child
 * in epoll_wait, the parent in poll on a non-blocking socket) instead of
 * in a blocking read: the floor for any event-loop server.  ECHO_SPIN
 * adds libkeycache's wait (a short busy poll before sleeping), so the
 * agent's depth-1 latency can be compared like for like.
 */
static void
echo_child(int fd, bool evloop)
{
    struct epoll_event ev = {.events = EPOLLIN};
    uint8_t msg[120];
    int ep = -1;

    if (evloop) {
        ev.data.fd = fd;
        if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0 ||
            (ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            _exit(1);
        }
    }
    for (;;) {
        if (evloop && epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR) {
            _exit(1);
        }
        if (!full_io(fd, msg, sizeof(msg), false, 0) ||
            !full_io(fd, msg, sizeof(msg), true, 0)) {
            _exit(0);
        }
    }
}

static double
echo_run(double secs, enum echo_mode mode, struct lat *lat)
{
    bool evloop = mode != ECHO_BLOCKING;
    int spin_us = mode == ECHO_SPIN ? CLIENT_SPIN_US : 0;
    uint8_t msg[120];
    int sv[2], st;
    size_t n = 0;
    double t0, t1, start;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        die("%s", "socketpair failed");
    }
    if ((pid = fork()) < 0) {
        die("%s", "fork failed");
    }
    if (pid == 0) {
        close(sv[0]);
        echo_child(sv[1], evloop);
        _exit(0);
    }
    if (evloop && fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0) {
        die("%s", "fcntl failed");
    }
    close(sv[1]);
    memset(msg, 0x5a, sizeof(msg));
    start = now_s();
    do {
        t0 = now_s();
        if (!full_io(sv[0], msg, sizeof(msg), true, spin_us) ||
            !full_io(sv[0], msg, sizeof(msg), false, spin_us)) {
            die("%s", "echo child failed");
        }
        t1 = now_s();
        lat_add(lat, (t1 - t0) * 1e6);
        n++;
    } while (t1 - start < secs);
    close(sv[0]);
    waitpid(pid, &st, 0);
    return (double)n / (t1 - start);
}

/* ---- 4. and 5.: through the agent ------------------------------------ */

static void
write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    if (fd < 0 || !full_io(fd, (uint8_t *)p, n, true, 0)) {
        die("cannot write %s", path);
    }
    close(fd);
}

/* Remove what the bench wrote for ap; async-signal-safe. */
static void
agent_files_remove(const struct agent_proc *ap)
{
    if (ap->dir[0] != '\0') {
        unlink(ap->sock);
        unlink(ap->ini);
        unlink(ap->key);
        rmdir(ap->dir);
    }
}

/*
 * Both agents get the same configuration: only what they hold differs.
 * Each dies with the bench (PR_SET_PDEATHSIG), and its key file and
 * configuration are removed once it has read them, so a bench killed
 * any way leaves no master key behind.
 */
static void
agent_start(const struct opts *o, struct agent_proc *ap)
{
    pid_t bench = getpid();
    char conf[1024];
    uint8_t key[32];
    struct kc_client *c = NULL;
    int i, n, st;

    snprintf(ap->dir, sizeof(ap->dir), "/tmp/kc-bench-XXXXXX");
    if (mkdtemp(ap->dir) == NULL) {
        ap->dir[0] = '\0';
        die("mkdtemp failed: %s", strerror(errno));
    }
    snprintf(ap->key, sizeof(ap->key), "%s/bench.key", ap->dir);
    snprintf(ap->ini, sizeof(ap->ini), "%s/agent.ini", ap->dir);
    snprintf(ap->sock, sizeof(ap->sock), "%s/agent.sock", ap->dir);
    randombytes_buf(key, sizeof(key));
    write_file(ap->key, key, sizeof(key), 0600);
    sodium_memzero(key, sizeof(key));
    /* Capacity: one entry per data key (cache.h), plus room. */
    n = snprintf(conf, sizeof(conf),
                 "[agent]\nsocket = %s\ncapacity = %zu\nlog_level = warn\n"
                 "max_inflight = 1024\nidle_timeout = 3600\n\n"
                 "[key.%s]\nprovider = local\nkey_file = %s\n"
                 "ttl = 3600\ndecrypt_ttl = 3600\n"
                 "max_messages = 4294967296\n",
                 ap->sock, o->nkeys + 1000, ALIAS, ap->key);
    write_file(ap->ini, conf, (size_t)n, 0600);
    if ((ap->pid = fork()) < 0) {
        die("fork failed: %s", strerror(errno));
    }
    if (ap->pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != bench) {
            _exit(127);
        }
        execl(o->agent, o->agent, "--config", ap->ini, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 500; i++) {
        if (waitpid(ap->pid, &st, WNOHANG) == ap->pid) {
            ap->pid = -1;
            die("agent %s exited before serving (%s %d)", o->agent,
                WIFEXITED(st) ? "status" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        }
        if (kc_client_new(ap->sock, 2000, &c) == 0) {
            kc_client_free(c);
            unlink(ap->key); /* read at start; the bench never reloads */
            unlink(ap->ini);
            return;
        }
        usleep(10000);
    }
    die("agent %s did not start in 5 s", o->agent);
}

/* SIGTERM, then SIGKILL after 5 s; then its files. */
static void
agent_stop(struct agent_proc *ap)
{
    int i, st;

    if (ap->pid > 0) {
        kill(ap->pid, SIGTERM);
        for (i = 0; i < 500 && waitpid(ap->pid, &st, WNOHANG) == 0; i++) {
            usleep(10000);
        }
        if (i == 500) {
            kill(ap->pid, SIGKILL);
            waitpid(ap->pid, &st, 0);
        }
        ap->pid = -1;
    }
    agent_files_remove(ap);
    ap->dir[0] = '\0';
}

/* Interrupted: stop the agents, remove their files, die of the signal. */
static void
on_signal(int sig)
{
    if (agent_one.pid > 0) {
        kill(agent_one.pid, SIGTERM);
    }
    if (agent_many.pid > 0) {
        kill(agent_many.pid, SIGTERM);
    }
    agent_files_remove(&agent_one);
    agent_files_remove(&agent_many);
    signal(sig, SIG_DFL);
    raise(sig);
}

static struct kc_client *
agent_client(const struct agent_proc *ap)
{
    struct kc_client *c = NULL;
    char sock[128];

    snprintf(sock, sizeof(sock), "%s/agent.sock", ap->dir);
    if (kc_client_new(sock, 30000, &c) != 0) {
        die("%s", "cannot connect to the agent");
    }
    return c;
}

/* Key contexts: {"tenant": "tNNNNNN"}, one per cached key. */
static char (*tenants)[12];
static struct kc_context_pair *ctxs;

static void
contexts_init(size_t n)
{
    size_t i;

    tenants = calloc(n, sizeof(*tenants));
    ctxs = calloc(n, sizeof(*ctxs));
    if (tenants == NULL || ctxs == NULL) {
        die("%s", "out of memory");
    }
    for (i = 0; i < n; i++) {
        snprintf(tenants[i], sizeof(tenants[i]), "t%06zu", i % 1000000);
        ctxs[i].key = "tenant";
        ctxs[i].value = tenants[i];
    }
}

struct load {
    bool decrypt;
    size_t size;            /* plaintext bytes */
    size_t nkeys;           /* cycle over this many contexts */
    const uint8_t *ct;      /* decrypt: a ciphertext of ctxs[0] */
    size_t ct_len;
    uint64_t next;          /* where the walk over the keys goes on */
    uint8_t pt[1024];
};

static size_t
key_index(const struct load *l, uint64_t i)
{
    /* A stride coprime with the key count scatters consecutive requests
     * over the table. */
    return l->nkeys <= 1 ? 0 : (size_t)((i * KEY_STRIDE) % l->nkeys);
}

static void
check_status(int r, struct kc_client *c)
{
    if (r != 0) {
        die("request failed: %s (%s)", kc_strerror(r),
            kc_client_last_error(c));
    }
}

/* Blocking depth 1: ops/s, each latency (us) added to lat. */
static double
run_depth1(struct kc_client *c, const struct load *l, double secs,
           struct lat *lat)
{
    uint8_t *out = NULL;
    size_t n = 0, out_len;
    double t0, t1, start;
    int r;

    start = now_s();
    do {
        t0 = now_s();
        if (l->decrypt) {
            r = kc_decrypt(c, l->ct, l->ct_len, NULL, 0, &out, &out_len);
        } else {
            r = kc_encrypt(c, ALIAS, &ctxs[key_index(l, n)], 1, l->pt,
                           l->size, &out, &out_len);
        }
        t1 = now_s();
        check_status(r, c);
        kc_free(out);
        lat_add(lat, (t1 - t0) * 1e6);
        n++;
    } while (t1 - start < secs);
    return (double)n / (t1 - start);
}

static void
submit_one(struct kc_client *c, const struct load *l, uint64_t seq,
           size_t batch)
{
    struct kc_batch_item items[256];
    size_t i;
    int r;

    if (batch == 0) {
        r = l->decrypt ? kc_submit_decrypt(c, l->ct, l->ct_len, NULL, 0,
                                           NULL, NULL)
                       : kc_submit_encrypt(c, ALIAS,
                                           &ctxs[key_index(l, seq)], 1,
                                           l->pt, l->size, NULL, NULL);
        check_status(r, c);
        return;
    }
    for (i = 0; i < batch; i++) {
        items[i].op = l->decrypt ? KC_OP_DECRYPT : KC_OP_ENCRYPT;
        items[i].alias = ALIAS;
        items[i].ctx = l->decrypt ? NULL : &ctxs[key_index(l, seq + i)];
        items[i].nctx = l->decrypt ? 0 : 1;
        items[i].data = l->decrypt ? l->ct : l->pt;
        items[i].len = l->decrypt ? l->ct_len : l->size;
    }
    check_status(kc_submit_batch(c, items, batch, NULL, NULL), c);
}

/* Operations finished by one completion; any failure ends the run. */
static size_t
completion_ops(struct kc_client *c, struct kc_completion *cp)
{
    size_t i, n = 1;

    check_status(cp->status, c);
    if (cp->op == KC_OP_BATCH) {
        for (i = 0; i < cp->nitems; i++) {
            check_status(cp->items[i].status, c);
        }
        n = cp->nitems;
    }
    kc_completion_clear(cp);
    return n;
}

/*
 * Keep depth requests (batch == 0) or depth batches of batch items in
 * flight on one connection for secs (or until `total` operations when
 * total > 0).  Returns operations per second.  The walk over the keys
 * goes on where the load's previous run stopped, so short windows
 * still visit every key in turn and none finds its keys left in the
 * CPU caches by the window before.
 */
static double
run_pipelined(struct kc_client *c, struct load *l, size_t depth,
              size_t batch, double secs, uint64_t total)
{
    struct kc_completion cp;
    struct pollfd pfd;
    uint64_t seq = l->next, end = l->next + total, done = 0;
    size_t per = batch == 0 ? 1 : batch;
    double start = now_s(), t = 0;
    bool stop = false;
    int r;

    while (kc_client_in_flight(c) < depth) {
        submit_one(c, l, seq, batch);
        seq += per;
    }
    for (;;) {
        if ((r = kc_client_step(c)) < 0) {
            check_status(r, c);
        }
        while (kc_client_next(c, &cp) == 1) {
            done += completion_ops(c, &cp);
            if (!stop) {
                t = now_s() - start;
                stop = total > 0 ? seq >= end : t >= secs;
            }
            if (!stop) {
                submit_one(c, l, seq, batch);
                seq += per;
            }
        }
        if (kc_client_in_flight(c) == 0) {
            break;
        }
        if (r == 0) {
            pfd.fd = kc_client_fd(c);
            pfd.events = kc_client_events(c);
            pfd.revents = 0;
            (void)poll(&pfd, 1, 1000);
        }
    }
    t = now_s() - start;
    l->next = seq;
    return (double)done / t;
}

static void
encrypt_once(struct kc_client *c, size_t size, uint8_t **ct, size_t *len)
{
    uint8_t pt[1024];

    randombytes_buf(pt, size);
    check_status(kc_encrypt(c, ALIAS, &ctxs[0], 1, pt, size, ct, len), c);
}

/* One "Name: N kB" line of a /proc/<agent>/ file, in bytes, or -1. */
static long
agent_proc_kb(const struct agent_proc *ap, const char *file,
              const char *name)
{
    char path[64], line[256];
    size_t n = strlen(name);
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/%s", (long)ap->pid, file);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static long
agent_rss(const struct agent_proc *ap)
{
    return agent_proc_kb(ap, "status", "VmRSS");
}

/* Cache entries and locked bytes from the agent's stats. */
static void
agent_cache_stats(struct kc_client *c, double *entries, double *locked)
{
    json_t *root, *cache;
    char *js = NULL;

    check_status(kc_stats_json(c, &js), c);
    if ((root = json_loads(js, 0, NULL)) == NULL ||
        (cache = json_object_get(root, "cache")) == NULL) {
        die("%s", "cannot read the agent's stats");
    }
    *entries = (double)json_integer_value(json_object_get(cache, "entries"));
    *locked =
        (double)json_integer_value(json_object_get(cache, "locked_bytes"));
    json_decref(root);
    kc_free(js);
}

/*
 * What the rounds share: the two agents' clients and the loads.  The
 * one-key figures come from agent_one; agent_many holds o->nkeys keys,
 * filled once before the first round.
 */
struct agents {
    struct kc_client *c;  /* to agent_one */
    struct kc_client *c0; /* to agent_one, spin off */
    struct kc_client *cm; /* to agent_many */
    uint8_t *ct64, *ct1k; /* agent_one's messages, to decrypt */
    size_t ct64_len, ct1k_len;
    struct load one;      /* one key */
    struct load many;     /* every key of agent_many in turn */
    struct load many_one; /* one key of agent_many */
    double rss_before_fill, fill_per_s;
};

static void
agents_setup(const struct opts *o, struct agents *ag)
{
    char what[96];
    double t;

    memset(ag, 0, sizeof(*ag));
    agent_start(o, &agent_one);
    agent_start(o, &agent_many);
    ag->c = agent_client(&agent_one);
    ag->c0 = agent_client(&agent_one);
    if (kc_client_set_spin(ag->c0, 0) != 0) {
        die("%s", "kc_client_set_spin failed");
    }
    ag->cm = agent_client(&agent_many);
    encrypt_once(ag->c, 64, &ag->ct64, &ag->ct64_len);
    encrypt_once(ag->c, 1024, &ag->ct1k, &ag->ct1k_len);
    randombytes_buf(ag->one.pt, sizeof(ag->one.pt));
    ag->one.nkeys = 1;
    ag->one.size = 64;
    ag->many_one = ag->one;
    ag->many = ag->one;
    ag->many.nkeys = o->nkeys;

    /* Fill agent_many: one provider call per key. */
    snprintf(what, sizeof(what), "a second agent with %zu cached keys "
             "(filling)", o->nkeys);
    progress(o, what);
    ag->rss_before_fill = (double)agent_rss(&agent_many);
    t = now_s();
    run_pipelined(ag->cm, &ag->many, 64, 0, 0, o->nkeys);
    ag->fill_per_s = (double)o->nkeys / (now_s() - t);
}

/* Latencies of the agent's depth-1 runs, over all rounds. */
static struct lat lat_enc1, lat_enc1_nospin, lat_dec1;

/*
 * One pass over every key of agent_many, unmeasured, before each of its
 * many-key windows: a window then starts with the CPU caches as steady
 * traffic over all the keys leaves them, not with what survived from
 * the previous round while the other figures ran.
 */
static void
many_warm(struct agents *ag)
{
    run_pipelined(ag->cm, &ag->many, 64, 0, 0, ag->many.nkeys);
}

/*
 * 5.: the one-key depth-64 window and the windows compared with it: the
 * many-key agent over all its keys, then over one of them (what the
 * lookups cost inside one process).  The order flips every round so that
 * no side always runs first.
 */
static void
depth64_trio(struct agents *ag, struct load *l, double secs, int round)
{
    double v = 0, many = 0, one = 0;
    int i;

    for (i = 0; i < 3; i++) {
        switch (round % 2 ? 2 - i : i) {
        case 0:
            v = run_pipelined(ag->c, l, 64, 0, secs, 0);
            break;
        case 1:
            many_warm(ag);
            many = run_pipelined(ag->cm, &ag->many, 64, 0, secs, 0);
            break;
        default:
            one = run_pipelined(ag->cm, &ag->many_one, 64, 0, secs, 0);
            break;
        }
    }
    fig_add("agent_depth64_ops", "agent encrypt 64 B, pipelined 64", v,
            "ops/s", "inproc_keycache_ops", true);
    fig_add("agent_100k_keys_depth64_ops",
            "agent encrypt 64 B, pipelined 64, many keys", many, "ops/s",
            "agent_depth64_ops", true);
    fig_add("agent_1key_paired_depth64_ops",
            "  the same agent, one of its keys", one, "ops/s", NULL, true);
    fig_add("agent_100k_keys_paired_ratio",
            "  many keys / one key (median of rounds)", many / one, "x",
            NULL, true);
}

/* One round of every agent figure, each in a window of secs. */
static void
agents_round(struct agents *ag, double secs, int round)
{
    struct load l = ag->one;
    struct lat *lat;
    double v;
    int d;

    for (d = 0; d < 2; d++) {
        l.decrypt = d == 1;
        l.size = 64;
        l.ct = ag->ct64;
        l.ct_len = ag->ct64_len;
        lat = d ? &lat_dec1 : &lat_enc1;
        v = run_depth1(ag->c, &l, secs, lat);
        fig_add(d ? "agent_decrypt_depth1_ops" : "agent_depth1_ops",
                d ? "agent decrypt 64 B, blocking depth 1"
                  : "agent encrypt 64 B, blocking depth 1",
                v, "ops/s", "inproc_keycache_ops", true);
        fig_pct(d ? "agent_decrypt_depth1_p50_us" : "agent_depth1_p50_us",
                "  latency p50", "uds_echo_p50_us", lat, 0.50);
        fig_pct(d ? "agent_decrypt_depth1_p99_us" : "agent_depth1_p99_us",
                "  latency p99", "uds_echo_p50_us", lat, 0.99);
        fig_pct(d ? "agent_decrypt_depth1_p999_us" : "agent_depth1_p999_us",
                "  latency p99.9", "uds_echo_p50_us", lat, 0.999);
        if (!d) {
            /* What the agent adds to an echo that waits the way
             * libkeycache does, and what that spin buys. */
            fig_diff("agent_depth1_p50_over_spin_echo_us",
                     "  p50 minus spin-echo p50", "agent_depth1_p50_us",
                     "uds_echo_spin_p50_us");
            v = run_depth1(ag->c0, &l, secs, &lat_enc1_nospin);
            fig_add("agent_depth1_nospin_ops",
                    "agent encrypt 64 B, depth 1, spin off", v, "ops/s",
                    "agent_depth1_ops", true);
            fig_pct("agent_depth1_nospin_p50_us", "  latency p50",
                    "uds_echo_evloop_p50_us", &lat_enc1_nospin, 0.50);
            fig_pct("agent_depth1_nospin_p99_us", "  latency p99",
                    "uds_echo_evloop_p50_us", &lat_enc1_nospin, 0.99);
        }
        v = run_pipelined(ag->c, &l, 16, 0, secs, 0);
        fig_add(d ? "agent_decrypt_depth16_ops" : "agent_depth16_ops",
                d ? "agent decrypt 64 B, pipelined 16"
                  : "agent encrypt 64 B, pipelined 16",
                v, "ops/s", "inproc_keycache_ops", true);
        if (!d) {
            depth64_trio(ag, &l, secs, round);
        } else {
            v = run_pipelined(ag->c, &l, 64, 0, secs, 0);
            fig_add("agent_decrypt_depth64_ops",
                    "agent decrypt 64 B, pipelined 64", v, "ops/s",
                    "inproc_keycache_ops", true);
        }
        v = run_pipelined(ag->c, &l, 2, 32, secs, 0);
        fig_add(d ? "agent_decrypt_batch32_ops" : "agent_batch32_ops",
                d ? "agent decrypt 64 B, batches of 32"
                  : "agent encrypt 64 B, batches of 32",
                v, "ops/s", "inproc_keycache_ops", true);
        v = run_pipelined(ag->c, &l, 2, 256, secs, 0);
        fig_add(d ? "agent_decrypt_batch256_ops" : "agent_batch256_ops",
                d ? "agent decrypt 64 B, batches of 256"
                  : "agent encrypt 64 B, batches of 256",
                v, "ops/s", "inproc_keycache_ops", true);
        if (!d) {
            many_warm(ag);
            v = run_pipelined(ag->cm, &ag->many, 2, 256, secs, 0);
            fig_add("agent_100k_keys_batch256_ops",
                    "agent encrypt 64 B, batches of 256, many keys", v,
                    "ops/s", "agent_batch256_ops", true);
        }
        /* 1 KiB */
        l.size = 1024;
        l.ct = ag->ct1k;
        l.ct_len = ag->ct1k_len;
        v = run_pipelined(ag->c, &l, 64, 0, secs, 0);
        fig_add(d ? "agent_decrypt_1k_depth64_ops" : "agent_1k_depth64_ops",
                d ? "agent decrypt 1 KiB, pipelined 64"
                  : "agent encrypt 1 KiB, pipelined 64",
                v, "ops/s", "inproc_keycache_1k_ops", true);
        v = run_pipelined(ag->c, &l, 2, 256, secs, 0);
        fig_add(d ? "agent_decrypt_1k_batch256_ops" : "agent_1k_batch256_ops",
                d ? "agent decrypt 1 KiB, batches of 256"
                  : "agent encrypt 1 KiB, batches of 256",
                v, "ops/s", "inproc_keycache_1k_ops", true);
    }
}

/* The many-key agent's memory, then both agents stopped. */
static void
agents_finish(struct agents *ag)
{
    double entries, locked;

    fig_add("agent_rss_bytes_before_fill", "many-key agent RSS before filling",
            ag->rss_before_fill, "bytes", NULL, false);
    fig_add("agent_fill_keys_per_s", "  cache fill (new data keys)",
            ag->fill_per_s, "keys/s", NULL, true);
    agent_cache_stats(ag->cm, &entries, &locked);
    fig_add("agent_cached_keys", "  cached data keys", entries, "keys", NULL,
            true);
    fig_add("locked_bytes_per_key", "  locked memory per cached key",
            entries > 0 ? locked / entries : -1, "bytes", NULL, false);
    fig_add("agent_rss_bytes_100k_keys", "  agent RSS",
            (double)agent_rss(&agent_many), "bytes", NULL, false);
    /* How much of it the kernel backs with transparent huge pages (the
     * cache's entries ask for them; 0 where THP is off). */
    fig_add("agent_hugepage_bytes_100k_keys", "  of which huge pages",
            (double)agent_proc_kb(&agent_many, "smaps_rollup",
                                  "AnonHugePages"),
            "bytes", NULL, false);
    kc_free(ag->ct64);
    kc_free(ag->ct1k);
    kc_client_free(ag->c);
    kc_client_free(ag->c0);
    kc_client_free(ag->cm);
    agent_stop(&agent_one);
    agent_stop(&agent_many);
}

/* ---- 6.: the node peer ------------------------------------------------ */

static double
node_run(const struct opts *o, size_t size)
{
    char cmd[1024], line[512], mod[600];
    struct stat st;
    double ops = -1;
    FILE *p;

    snprintf(mod, sizeof(mod), "%s/node_modules/@aws-crypto/client-node",
             o->node_dir);
    if (stat(mod, &st) != 0 || system("command -v node >/dev/null") != 0) {
        return -1;
    }
    snprintf(cmd, sizeof(cmd), "cd '%s' && node peer.js %.2f %zu",
             o->node_dir, o->secs * 2, size);
    if ((p = popen(cmd, "r")) == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), p) != NULL) {
        json_t *j = json_loads(line, 0, NULL);

        if (j != NULL && json_is_number(json_object_get(j, "ops"))) {
            ops = json_number_value(json_object_get(j, "ops"));
        }
        json_decref(j);
    }
    pclose(p);
    return ops;
}

/* ---- output ----------------------------------------------------------- */

static void
print_json(const struct opts *o)
{
    const char *required[] = {
        "inproc_naive_ops", "inproc_keycache_ops", "uds_echo_p50_us",
        "agent_depth1_ops", "agent_depth1_p50_us", "agent_depth1_p99_us",
        "agent_depth64_ops", "agent_batch256_ops",
        "agent_decrypt_depth64_ops", "agent_100k_keys_depth64_ops",
        "node_peer_ops", "locked_bytes_per_key",
        "agent_rss_bytes_100k_keys"};
    const struct fig *f;
    size_t i;
    bool first = true;

    printf("{");
    for (i = 0; i < nfigs; i++) {
        f = &figs[i];
        printf("%s\"%s\": ", first ? "" : ", ", f->json);
        first = false;
        if (f->value < 0) {
            printf("null");
        } else if (f->value >= 1000) {
            printf("%.0f", f->value);
        } else {
            printf("%.3f", f->value);
        }
    }
    for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (fig_find(required[i]) == NULL) {
            printf(", \"%s\": null", required[i]);
        }
    }
    printf(", \"cached_keys_target\": %zu, \"quick\": %s, "
           "\"plaintext_bytes\": 64}\n",
           o->nkeys, o->quick ? "true" : "false");
}

static void
print_table(void)
{
    const struct fig *f, *b;
    char ratio[48];
    size_t i;

    printf("%-48s %14s %-6s  %s\n", "measurement", "value", "unit",
           "ratio");
    for (i = 0; i < nfigs; i++) {
        f = &figs[i];
        ratio[0] = '\0';
        b = f->base != NULL ? fig_find(f->base) : NULL;
        if (b != NULL && b->value > 0 && f->value >= 0) {
            snprintf(ratio, sizeof(ratio), "%.2fx %s", f->value / b->value,
                     b->json);
        }
        if (f->value < 0) {
            printf("%-48s %14s %-6s  %s\n", f->label, "n/a", f->unit,
                   "(not measured)");
        } else {
            printf("%-48s %14.*f %-6s  %s\n", f->label,
                   strcmp(f->unit, "x") == 0 ? 2 : 1, f->value, f->unit,
                   ratio);
        }
    }
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: keycache-bench [--quick] [--json] [--agent PATH] "
            "[--node-dir DIR] [--keys N]\n"
            "  --keys N  distinct keys the second agent caches (default "
            "100000, 10000 with --quick;\n"
            "            1 to 1000000, not a multiple of %d); the JSON "
            "names say 100k\n"
            "            whatever N is, and cached_keys_target gives N\n",
            KEY_STRIDE);
    exit(2);
}

/* N for --keys, or exit with what is wrong with it. */
static size_t
parse_keys(const char *arg)
{
    unsigned long n;
    char *end;

    errno = 0;
    n = strtoul(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || arg[0] == '-' ||
        n == 0 || n > 1000000 || n % KEY_STRIDE == 0) {
        fprintf(stderr,
                "keycache-bench: --keys %s: want a whole number from 1 to "
                "1000000 that is not a multiple of %d\n",
                arg, KEY_STRIDE);
        exit(2);
    }
    return n;
}

static void
parse_opts(int argc, char **argv, struct opts *o)
{
    int i;

    o->quick = false;
    o->json = false;
    o->agent = KC_BENCH_AGENT;
    o->node_dir = KC_BENCH_NODE_DIR;
    o->nkeys = 0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            o->quick = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            o->json = true;
        } else if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc) {
            o->agent = argv[++i];
        } else if (strcmp(argv[i], "--node-dir") == 0 && i + 1 < argc) {
            o->node_dir = argv[++i];
        } else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            o->nkeys = parse_keys(argv[++i]);
        } else {
            fprintf(stderr, "keycache-bench: %s: %s\n", argv[i],
                    strcmp(argv[i], "--agent") == 0 ||
                            strcmp(argv[i], "--node-dir") == 0 ||
                            strcmp(argv[i], "--keys") == 0
                        ? "needs a value"
                        : "unknown option");
            usage();
        }
    }
    o->secs = o->quick ? 0.15 : 1.5;
    o->rounds = o->quick ? 3 : ROUNDS_MAX;
    if (o->nkeys == 0) {
        o->nkeys = o->quick ? 10000 : 100000;
    }
}

/* Round trips of the three echoes, over all rounds. */
static struct lat lat_echo, lat_echo_evloop, lat_echo_spin;

/* One round of the in-process and transport figures. */
static void
local_round(struct inproc *ip, double secs)
{
    fig_add("inproc_naive_ops", "in-process naive OpenSSL encrypt 64 B",
            inproc_run(ip, IP_NAIVE, 64, secs), "ops/s", NULL, true);
    fig_add("inproc_keycache_ops", "in-process keycache encrypt 64 B",
            inproc_run(ip, IP_KEYCACHE, 64, secs), "ops/s",
            "inproc_naive_ops", true);
    fig_add("inproc_keycache_decrypt_ops", "in-process keycache decrypt 64 B",
            inproc_run(ip, IP_DECRYPT, 64, secs), "ops/s",
            "inproc_naive_ops", true);
    fig_add("inproc_naive_1k_ops", "in-process naive OpenSSL encrypt 1 KiB",
            inproc_run(ip, IP_NAIVE, 1024, secs), "ops/s", NULL, true);
    fig_add("inproc_keycache_1k_ops", "in-process keycache encrypt 1 KiB",
            inproc_run(ip, IP_KEYCACHE, 1024, secs), "ops/s",
            "inproc_naive_1k_ops", true);
    fig_add("uds_echo_ops", "raw Unix-socket echo, depth 1",
            echo_run(secs, ECHO_BLOCKING, &lat_echo), "ops/s", NULL, true);
    fig_pct("uds_echo_p50_us", "  round trip p50", NULL, &lat_echo, 0.50);
    fig_pct("uds_echo_p99_us", "  round trip p99", NULL, &lat_echo, 0.99);
    fig_add("uds_echo_evloop_ops",
            "Unix-socket echo, epoll server, poll client",
            echo_run(secs, ECHO_EVLOOP, &lat_echo_evloop), "ops/s", NULL,
            true);
    fig_pct("uds_echo_evloop_p50_us", "  round trip p50", "uds_echo_p50_us",
            &lat_echo_evloop, 0.50);
    fig_pct("uds_echo_evloop_p99_us", "  round trip p99", NULL,
            &lat_echo_evloop, 0.99);
    fig_add("uds_echo_spin_ops", "Unix-socket echo, client spins, then polls",
            echo_run(secs, ECHO_SPIN, &lat_echo_spin), "ops/s", NULL, true);
    fig_pct("uds_echo_spin_p50_us", "  round trip p50", "uds_echo_p50_us",
            &lat_echo_spin, 0.50);
    fig_pct("uds_echo_spin_p99_us", "  round trip p99", NULL, &lat_echo_spin,
            0.99);
}

int
main(int argc, char **argv)
{
    struct inproc ip;
    struct agents ag;
    struct opts o;
    char what[64];
    int r;

    parse_opts(argc, argv, &o);
    if (sodium_init() < 0) {
        die("%s", "libsodium failed to initialise");
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    contexts_init(o.nkeys);
    inproc_init(&ip);
    agents_setup(&o, &ag);
    for (r = 0; r < o.rounds; r++) {
        snprintf(what, sizeof(what), "round %d of %d", r + 1, o.rounds);
        progress(&o, what);
        local_round(&ip, o.secs / o.rounds);
        agents_round(&ag, o.secs / o.rounds, r);
    }
    agents_finish(&ag);
    progress(&o, "node peer");
    fig_add("node_peer_ops",
            "node @aws-crypto/client-node, caching CMM, 64 B",
            node_run(&o, 64), "ops/s", "agent_depth64_ops", true);
    fig_add("node_peer_1k_ops",
            "node @aws-crypto/client-node, caching CMM, 1 KiB",
            node_run(&o, 1024), "ops/s", "agent_1k_depth64_ops", true);
    figs_finish();
    if (o.json) {
        print_json(&o); /* the table goes to stderr alongside */
        fflush(stdout);
        if (dup2(STDERR_FILENO, STDOUT_FILENO) >= 0) {
            print_table();
        }
    } else {
        print_table();
    }
    inproc_clear(&ip);
    free(lat_echo.v);
    free(lat_echo_evloop.v);
    free(lat_echo_spin.v);
    free(lat_enc1.v);
    free(lat_enc1_nospin.v);
    free(lat_dec1.v);
    free(tenants);
    free(ctxs);
    esdk_rand_shutdown();
    return 0;
}
