/*
 * client_test.c - libkeycache against in-process fake agents.
 *
 * Each test starts a fake agent: a listening Unix socket in a fresh temp
 * directory, an accept thread and one thread per connection, speaking
 * the wire protocol (proto/wire.h) with a scripted behaviour (answer
 * properly, close mid-request, never answer, send errors, send stale
 * ids, send garbage).  No real agent and no network are involved.
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "keycache.h"
#include "wire.h"

#define FAKE_MAX_CONNS 8
#define FAKE_TICK_MS   20

enum fake_mode {
    FAKE_GOOD,         /* a well-behaved agent */
    FAKE_CLOSE_MID,    /* hello, then close on the next request */
    FAKE_SILENT,       /* hello, then never answer */
    FAKE_DENY,         /* hello, then an error reply to every request */
    FAKE_STALE_ID,     /* a reply to another id before the right one */
    FAKE_BUSY_HELLO,   /* error with id nil at hello, then close */
    FAKE_GARBAGE,      /* hello, then a frame that is not msgpack */
    FAKE_HUGE_LEN,     /* hello, then a length prefix of 2 GiB */
    FAKE_OLD_VERSION,  /* hello answered with version 7 */
    FAKE_TRICKLE,      /* good replies, sent a byte every 300 us */
    FAKE_REFUSE_EARLY, /* error with id nil on accept, then close, unread
                        * (as the agent refuses past max_connections) */
};

struct fake {
    char dir[64];
    char path[128];
    int lfd;
    enum fake_mode mode;
    atomic_int stop;
    atomic_int accepted;
    atomic_int requests; /* non-hello requests seen */
    pthread_t acceptor;
    pthread_t conns[FAKE_MAX_CONNS];
    int conn_fds[FAKE_MAX_CONNS];
    int nconns;
};

struct conn_arg {
    struct fake *f;
    int fd;
};

static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Set by FAKE_TRICKLE's connection thread around one reply. */
static _Thread_local bool trickle;

/*
 * This thread's next send(2), the client's included (libkeycache's calls
 * resolve to this definition), waits this long first: a fake can then
 * answer and close before the client's first bytes go out.
 */
static _Thread_local int send_delay_ms;

ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*next_send)(int, const void *, size_t, int);

    if (next_send == NULL) {
        next_send = (ssize_t(*)(int, const void *, size_t, int))dlsym(
            RTLD_NEXT, "send");
        assert_non_null(next_send);
    }
    if (send_delay_ms > 0) {
        usleep((useconds_t)send_delay_ms * 1000);
        send_delay_ms = 0;
    }
    return next_send(fd, buf, len, flags);
}

static int
send_all(int fd, const uint8_t *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        if (trickle) {
            usleep(300);
        }
        w = send(fd, p, trickle ? 1 : n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reply builder: begin a frame holding a map of n entries. */
static void
reply_begin(struct kc_buf *b, size_t *mark, msgpack_packer *pk, uint32_t n)
{
    kc_buf_init(b, 0);
    assert_int_equal(proto_frame_begin(b, mark), 0);
    proto_packer_init(pk, b);
    msgpack_pack_map(pk, n);
}

static int
reply_send(int fd, struct kc_buf *b, size_t mark)
{
    int r;

    assert_int_equal(proto_frame_end(b, mark, 1 << 30), 0);
    r = send_all(fd, b->data, b->len);
    kc_buf_clear(b);
    return r;
}

static int
error_send(int fd, bool has_id, uint64_t id, int code, const char *msg)
{
    struct kc_buf b;
    msgpack_packer pk;
    size_t mark;

    kc_buf_init(&b, 0);
    assert_int_equal(proto_frame_begin(&b, &mark), 0);
    proto_packer_init(&pk, &b);
    proto_pack_error(&pk, has_id, id, code, msg);
    return reply_send(fd, &b, mark);
}

static void
pack_ok_head(msgpack_packer *pk, uint64_t id)
{
    proto_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, id);
    proto_pack_cstr(pk, "ok");
    msgpack_pack_true(pk);
}

static int
reply_hello(struct fake *f, int fd, uint64_t id)
{
    struct kc_buf b;
    msgpack_packer pk;
    size_t mark;

    if (f->mode == FAKE_BUSY_HELLO) {
        return error_send(fd, false, 0, KC_EBUSY, "too many clients") == 0
                   ? 1
                   : -1;
    }
    reply_begin(&b, &mark, &pk, 6);
    pack_ok_head(&pk, id);
    proto_pack_cstr(&pk, "version");
    msgpack_pack_uint64(&pk, f->mode == FAKE_OLD_VERSION ? 7 : 1);
    proto_pack_cstr(&pk, "agent");
    proto_pack_cstr(&pk, "fake-agent 0.0");
    proto_pack_cstr(&pk, "max_frame");
    msgpack_pack_uint64(&pk, PROTO_DEFAULT_MAX_FRAME);
    proto_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, 1);
    proto_pack_cstr(&pk, "ping");
    return reply_send(fd, &b, mark);
}

/* Check the request's context equals {table: users, column: email}. */
static bool
context_is_users_email(const msgpack_object *req)
{
    const msgpack_object *ctx = NULL, *v;

    if (proto_get_map(req, "context", true, &ctx) != 0 ||
        ctx->via.map.size != 2) {
        return false;
    }
    v = proto_map_get(ctx, "table");
    if (v == NULL || v->type != MSGPACK_OBJECT_STR ||
        v->via.str.size != 5 || memcmp(v->via.str.ptr, "users", 5) != 0) {
        return false;
    }
    v = proto_map_get(ctx, "column");
    return v != NULL && v->type == MSGPACK_OBJECT_STR &&
           v->via.str.size == 5 && memcmp(v->via.str.ptr, "email", 5) == 0;
}

/* encrypt: "CT:" + plaintext;  decrypt: strip the "CT:". */
static int
reply_crypt(int fd, uint64_t id, const msgpack_object *req, bool enc)
{
    const uint8_t *in = NULL;
    struct kc_buf b, out;
    msgpack_packer pk;
    size_t mark, n = 0;
    int r;

    kc_buf_init(&out, 0);
    if (enc) {
        assert_int_equal(proto_get_bin(req, "plaintext", true, &in, &n), 0);
        assert_true(context_is_users_email(req));
        assert_int_equal(kc_buf_put(&out, "CT:", 3), 0);
        assert_int_equal(kc_buf_put(&out, in, n), 0);
    } else {
        assert_int_equal(proto_get_bin(req, "ciphertext", true, &in, &n), 0);
        assert_true(n >= 3 && memcmp(in, "CT:", 3) == 0);
        assert_int_equal(kc_buf_put(&out, in + 3, n - 3), 0);
    }
    reply_begin(&b, &mark, &pk, 3);
    pack_ok_head(&pk, id);
    proto_pack_cstr(&pk, enc ? "ciphertext" : "plaintext");
    proto_pack_bin(&pk, out.len > 0 ? out.data : (const uint8_t *)"",
                   out.len);
    r = reply_send(fd, &b, mark);
    kc_buf_clear(&out);
    return r;
}

static int
reply_stats(int fd, uint64_t id)
{
    struct kc_buf b;
    msgpack_packer pk;
    size_t mark;

    reply_begin(&b, &mark, &pk, 3);
    pack_ok_head(&pk, id);
    proto_pack_cstr(&pk, "stats");
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "keys");
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "users-email");
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "encrypt");
    msgpack_pack_uint64(&pk, 300);
    proto_pack_cstr(&pk, "provider_calls");
    msgpack_pack_uint64(&pk, 3);
    proto_pack_cstr(&pk, "cache");
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "entries");
    msgpack_pack_uint64(&pk, 1);
    proto_pack_cstr(&pk, "agent");
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "version");
    proto_pack_cstr(&pk, "fake \"1\"");
    return reply_send(fd, &b, mark);
}

static int
reply_plain_ok(int fd, uint64_t id)
{
    struct kc_buf b;
    msgpack_packer pk;
    size_t mark;

    reply_begin(&b, &mark, &pk, 2);
    pack_ok_head(&pk, id);
    return reply_send(fd, &b, mark);
}

static int
reply_good(int fd, uint64_t id, const char *op, size_t op_len,
           const msgpack_object *req)
{
    if (op_len == 7 && memcmp(op, "encrypt", 7) == 0) {
        return reply_crypt(fd, id, req, true);
    }
    if (op_len == 7 && memcmp(op, "decrypt", 7) == 0) {
        return reply_crypt(fd, id, req, false);
    }
    if (op_len == 5 && memcmp(op, "stats", 5) == 0) {
        return reply_stats(fd, id);
    }
    return reply_plain_ok(fd, id);
}

/*
 * handle_request - act on one request per the fake's mode.
 * Returns 0 to keep going, 1 to close the connection, -1 on I/O error.
 */
static int
handle_request(struct fake *f, int fd, const msgpack_object *req)
{
    static const uint8_t garbage[] = {0, 0, 0, 2, 0xc1, 0xc1};
    static const uint8_t huge[] = {0x80, 0, 0, 0, 0x80};
    const char *op = NULL;
    size_t op_len = 0;
    uint64_t id = 0;
    int r;

    assert_int_equal(proto_get_uint(req, "id", true, &id), 0);
    assert_int_equal(proto_get_str(req, "op", true, &op, &op_len), 0);
    if (op_len == 5 && memcmp(op, "hello", 5) == 0) {
        return reply_hello(f, fd, id);
    }
    atomic_fetch_add(&f->requests, 1);
    switch (f->mode) {
    case FAKE_CLOSE_MID:
        return 1;
    case FAKE_SILENT:
        return 0;
    case FAKE_DENY:
        return error_send(fd, true, id, KC_EDENIED,
                          "peer uid 1000 may not use key 'users-email'\n");
    case FAKE_STALE_ID:
        if (reply_plain_ok(fd, id + 1000) != 0) {
            return -1;
        }
        return reply_good(fd, id, op, op_len, req);
    case FAKE_GARBAGE:
        return send_all(fd, garbage, sizeof(garbage));
    case FAKE_HUGE_LEN:
        return send_all(fd, huge, sizeof(huge));
    case FAKE_TRICKLE:
        trickle = true;
        r = reply_good(fd, id, op, op_len, req);
        trickle = false;
        return r;
    default:
        return reply_good(fd, id, op, op_len, req);
    }
}

/* Wait for fd to be readable, waking regularly to honour f->stop. */
static bool
wait_readable(struct fake *f, int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    while (!atomic_load(&f->stop)) {
        if (poll(&pfd, 1, FAKE_TICK_MS) > 0) {
            return true;
        }
    }
    return false;
}

static void *
conn_main(void *arg)
{
    struct conn_arg *ca = arg;
    struct fake *f = ca->f;
    const uint8_t *body;
    uint8_t chunk[65536];
    struct kc_buf in;
    size_t body_len, total;
    ssize_t n;
    int fd = ca->fd, r = 0;

    free(ca);
    if (f->mode == FAKE_REFUSE_EARLY) {
        (void)error_send(fd, false, 0, KC_EBUSY, "too many clients");
        shutdown(fd, SHUT_RDWR);
        return NULL;
    }
    kc_buf_init(&in, 0);
    while (r == 0 && wait_readable(f, fd)) {
        if ((n = recv(fd, chunk, sizeof(chunk), 0)) <= 0) {
            break;
        }
        assert_int_equal(kc_buf_put(&in, chunk, (size_t)n), 0);
        for (;;) {
            msgpack_unpacked u;

            assert_int_equal(proto_frame_decode(in.data, in.len,
                                                PROTO_DEFAULT_MAX_FRAME,
                                                &body, &body_len, &total),
                             0);
            if (total == 0 || r != 0) {
                break;
            }
            msgpack_unpacked_init(&u);
            assert_int_equal(proto_unpack_map(body, body_len, &u), 0);
            r = handle_request(f, fd, &u.data);
            msgpack_unpacked_destroy(&u);
            memmove(in.data, in.data + total, in.len - total);
            in.len -= total;
        }
    }
    kc_buf_clear(&in);
    shutdown(fd, SHUT_RDWR);
    return NULL;
}

static void *
accept_main(void *arg)
{
    struct fake *f = arg;
    struct conn_arg *ca;
    int fd;

    while (wait_readable(f, f->lfd)) {
        if ((fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
            continue;
        }
        atomic_fetch_add(&f->accepted, 1);
        assert_true(f->nconns < FAKE_MAX_CONNS);
        ca = malloc(sizeof(*ca));
        assert_non_null(ca);
        ca->f = f;
        ca->fd = fd;
        f->conn_fds[f->nconns] = fd;
        assert_int_equal(pthread_create(&f->conns[f->nconns], NULL,
                                        conn_main, ca), 0);
        f->nconns++;
    }
    return NULL;
}

static void
fake_paths(struct fake *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/kc-client-test.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/agent.sock", f->dir);
}

static struct fake *
fake_start(enum fake_mode mode)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct fake *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->mode = mode;
    fake_paths(f);
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    assert_int_equal(pthread_create(&f->acceptor, NULL, accept_main, f), 0);
    return f;
}

static void
fake_stop(struct fake *f)
{
    int i;

    atomic_store(&f->stop, 1);
    pthread_join(f->acceptor, NULL);
    for (i = 0; i < f->nconns; i++) {
        pthread_join(f->conns[i], NULL);
        close(f->conn_fds[i]);
    }
    close(f->lfd);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
}

static const struct kc_context_pair users_ctx[] = {
    {"table", "users"},
    {"column", "email"},
};

/* ---- connection failures ------------------------------------------ */

static void
test_missing_socket(void **state)
{
    struct kc_client *c = (struct kc_client *)1;
    struct fake f0;

    (void)state;
    fake_paths(&f0);
    assert_int_equal(kc_client_new(f0.path, 1000, &c), KC_ECONNECT);
    assert_null(c);
    /* kc_client_open defers the connect and keeps the reason. */
    assert_int_equal(kc_client_open(f0.path, 1000, &c), 0);
    assert_int_equal(kc_ping(c), KC_ECONNECT);
    assert_non_null(strstr(kc_client_last_error(c), f0.path));
    assert_non_null(strstr(kc_client_last_error(c), "No such file"));
    kc_client_free(c);
    rmdir(f0.dir);
}

static void
test_stale_socket_file(void **state)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct kc_client *c = NULL;
    struct fake f0;
    int fd;

    (void)state;
    /* A socket file nobody listens on: what a crashed agent leaves. */
    fake_paths(&f0);
    memcpy(sa.sun_path, f0.path, strlen(f0.path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_int_equal(kc_client_new(f0.path, 1000, &c), KC_ECONNECT);
    unlink(f0.path);
    rmdir(f0.dir);
}

static void
test_path_too_long(void **state)
{
    char path[200];
    struct kc_client *c = NULL;

    (void)state;
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(kc_client_new(path, 1000, &c), KC_EINVAL);
    assert_null(c);
    assert_int_equal(kc_client_open(path, 1000, &c), KC_EINVAL);
    assert_int_equal(kc_client_new("/tmp/x", -5, &c), KC_EINVAL);
}

static void
test_env_socket(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(setenv("KEYCACHE_SOCKET", f->path, 1), 0);
    assert_int_equal(kc_client_new(NULL, 1000, &c), 0);
    assert_string_equal(kc_client_socket_path(c), f->path);
    assert_string_equal(kc_client_agent(c), "fake-agent 0.0");
    assert_int_equal(kc_ping(c), 0);
    unsetenv("KEYCACHE_SOCKET");
    kc_client_free(c);
    fake_stop(f);
}

static void
test_closed_mid_request(void **state)
{
    struct fake *f = fake_start(FAKE_CLOSE_MID);
    struct kc_client *c = NULL;
    uint8_t *ct = NULL;
    size_t ct_len = 99;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 2000, &c), 0);
    assert_int_equal(kc_encrypt(c, "users-email", users_ctx, 2,
                                (const uint8_t *)"a@b", 3, &ct, &ct_len),
                     KC_ECLOSED);
    assert_null(ct);
    assert_int_equal(ct_len, 0);
    assert_non_null(strstr(kc_client_last_error(c), "closed"));
    /* The next call dials a fresh connection (and fails the same way). */
    assert_int_equal(kc_ping(c), KC_ECLOSED);
    assert_int_equal(atomic_load(&f->accepted), 2);
    kc_client_free(c);
    fake_stop(f);
}

static void
test_timeout(void **state)
{
    struct fake *f = fake_start(FAKE_SILENT);
    struct kc_client *c = NULL;
    int64_t t0, dt;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 300, &c), 0);
    t0 = mono_ms();
    assert_int_equal(kc_ping(c), KC_ETIMEOUT);
    dt = mono_ms() - t0;
    assert_true(dt >= 290);
    assert_true(dt < 2000);
    assert_non_null(strstr(kc_client_last_error(c), "timed out"));
    kc_client_free(c);
    fake_stop(f);
}

static void
test_busy_at_hello(void **state)
{
    struct fake *f = fake_start(FAKE_BUSY_HELLO);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(kc_client_open(f->path, 1000, &c), 0);
    assert_int_equal(kc_client_connect(c), KC_EBUSY);
    assert_string_equal(kc_client_last_error(c), "too many clients");
    kc_client_free(c);
    fake_stop(f);
}

/*
 * The agent refuses a connection past max_connections by answering at
 * once and closing.  A hello sent after that close meets a broken pipe;
 * the refusal must still be what the caller gets (it was KC_ECLOSED).
 */
static void
test_refused_before_hello_sent(void **state)
{
    struct fake *f = fake_start(FAKE_REFUSE_EARLY);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(kc_client_open(f->path, 2000, &c), 0);
    send_delay_ms = 300;
    assert_int_equal(kc_client_connect(c), KC_EBUSY);
    assert_string_equal(kc_client_last_error(c), "too many clients");
    kc_client_free(c);
    fake_stop(f);
}

static void
test_version_mismatch(void **state)
{
    struct fake *f = fake_start(FAKE_OLD_VERSION);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), KC_EVERSION);
    fake_stop(f);
}

/* ---- replies ------------------------------------------------------- */

static void
test_error_reply(void **state)
{
    struct fake *f = fake_start(FAKE_DENY);
    struct kc_client *c = NULL;
    uint8_t *ct = NULL;
    size_t ct_len = 0;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), 0);
    assert_int_equal(kc_encrypt(c, "users-email", NULL, 0,
                                (const uint8_t *)"x", 1, &ct, &ct_len),
                     KC_EDENIED);
    assert_null(ct);
    /* The message comes through, control bytes neutralised. */
    assert_string_equal(kc_client_last_error(c),
                        "peer uid 1000 may not use key 'users-email'?");
    assert_string_equal(kc_strerror(KC_EDENIED), "permission denied");
    assert_string_equal(kc_errname(KC_EDENIED), "KC_EDENIED");
    /* An error reply leaves the connection usable. */
    assert_int_equal(kc_ping(c), KC_EDENIED);
    assert_int_equal(atomic_load(&f->accepted), 1);
    kc_client_free(c);
    fake_stop(f);
}

static void
roundtrip(struct kc_client *c, const uint8_t *pt, size_t n)
{
    uint8_t *ct = NULL, *back = NULL;
    size_t ct_len = 0, back_len = 0;

    assert_int_equal(kc_encrypt(c, "users-email", users_ctx, 2, pt, n, &ct,
                                &ct_len), 0);
    assert_int_equal(ct_len, n + 3);
    assert_int_equal(kc_decrypt(c, ct, ct_len, users_ctx, 2, &back,
                                &back_len), 0);
    assert_non_null(back);
    assert_int_equal(back_len, n);
    if (n > 0) {
        assert_memory_equal(back, pt, n);
    }
    kc_free(ct);
    kc_free(back);
}

static void
test_roundtrip(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    size_t big = 512 * 1024, i;
    uint8_t *pt = malloc(big);

    (void)state;
    assert_non_null(pt);
    for (i = 0; i < big; i++) {
        pt[i] = (uint8_t)(i * 7);
    }
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    roundtrip(c, (const uint8_t *)"", 0);
    roundtrip(c, (const uint8_t *)"alice@example.com", 17);
    roundtrip(c, pt, big);
    assert_int_equal(atomic_load(&f->accepted), 1);
    kc_client_free(c);
    free(pt);
    fake_stop(f);
}

/* Thread CPU time in milliseconds. */
static int64_t
thread_cpu_ms(void)
{
    struct rusage ru;

    assert_int_equal(getrusage(RUSAGE_THREAD, &ru), 0);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* The busy poll before sleeping is bounded: waiting 300 ms on a silent
 * agent with the largest spin costs about a millisecond of CPU, not 300,
 * and still times out on time.  Spin settings outside 0..1000 are refused. */
static void
test_spin_is_bounded(void **state)
{
    struct fake *f = fake_start(FAKE_SILENT);
    struct kc_client *c = NULL;
    int64_t t0, cpu0, dt;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 300, &c), 0);
    assert_int_equal(kc_client_set_spin(c, -1), KC_EINVAL);
    assert_int_equal(kc_client_set_spin(c, 1001), KC_EINVAL);
    assert_int_equal(kc_client_set_spin(NULL, 0), KC_EINVAL);
    assert_int_equal(kc_client_set_spin(c, 1000), 0);
    t0 = mono_ms();
    cpu0 = thread_cpu_ms();
    assert_int_equal(kc_ping(c), KC_ETIMEOUT);
    dt = mono_ms() - t0;
    assert_true(dt >= 290 && dt < 2000);
    assert_true(thread_cpu_ms() - cpu0 < 60);
    kc_client_free(c);
    fake_stop(f);
}

/*
 * The spin budget is per call: a reply trickling in a byte every 300 us
 * (each wait ends before the budget would) must not keep the thread
 * busy-polling for the whole reply.  With the budget restarting on every
 * wait, the thread spun through the whole reply (CPU time = wall time).
 */
static void
test_spin_budget_per_call(void **state)
{
    struct fake *f = fake_start(FAKE_TRICKLE);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    uint8_t pt[100], *ct = NULL;
    size_t ct_len = 0;
    int64_t cpu0, t0, dt;
    int i;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 10000, &c), 0);
    assert_int_equal(kc_client_set_spin(c, 1000), 0);
    memset(pt, 'x', sizeof(pt));
    cpu0 = thread_cpu_ms();
    t0 = mono_ms();
    assert_int_equal(kc_encrypt(c, "users-email", users_ctx, 2, pt,
                                sizeof(pt), &ct, &ct_len), 0);
    dt = mono_ms() - t0;
    assert_int_equal(ct_len, sizeof(pt) + 3);
    kc_free(ct);
    /* The reply takes tens of ms to arrive; the thread slept through it. */
    assert_true(dt >= 10);
    assert_true(thread_cpu_ms() - cpu0 < dt / 2);
    kc_client_free(c);
    fake_stop(f);

    f = fake_start(FAKE_SILENT);
    assert_int_equal(kc_client_new(f->path, 10000, &c), 0);
    assert_int_equal(kc_client_set_spin(c, 1000), 0);
    /* Short waits time out (by how much a wait may overrun, at most
     * the spin, is checked by reading client_wait_fd and wait_for: a
     * millisecond is below what a loaded CI machine can time). */
    for (i = 0; i < 5; i++) {
        assert_int_equal(kc_submit_ping(c, NULL, NULL), 0);
        assert_int_equal(kc_client_wait(c, &cp, i), KC_ETIMEOUT);
    }
    kc_client_free(c);
    fake_stop(f);
}

/* kc_buf's inline fast path: a limit lowered below what a buffer
 * already holds (the client lowers rx.max) refuses more bytes. */
static void
test_buf_max_lowered(void **state)
{
    uint8_t x[100] = {0};
    struct kc_buf b;

    (void)state;
    kc_buf_init(&b, 0);
    assert_int_equal(kc_buf_put(&b, x, sizeof(x)), 0);
    assert_true(b.cap > b.len);
    b.max = 50;
    assert_int_equal(kc_buf_reserve(&b, 10), KC_ETOOBIG);
    assert_int_equal(kc_buf_put(&b, x, 3), KC_ETOOBIG);
    assert_int_equal(b.len, sizeof(x));
    b.max = 120;
    assert_int_equal(kc_buf_put(&b, x, 20), 0);
    assert_int_equal(kc_buf_put(&b, x, 1), KC_ETOOBIG);
    kc_buf_clear(&b);
}

/* Every spin setting gets the same answers. */
static void
test_spin_settings_roundtrip(void **state)
{
    static const int spins[] = {0, 1, 50, 1000};
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    size_t i;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    for (i = 0; i < sizeof(spins) / sizeof(spins[0]); i++) {
        assert_int_equal(kc_client_set_spin(c, spins[i]), 0);
        roundtrip(c, (const uint8_t *)"alice@example.com", 17);
        assert_int_equal(kc_ping(c), 0);
    }
    kc_client_free(c);
    fake_stop(f);
}

static void
test_too_big_local(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    size_t n = PROTO_DEFAULT_MAX_FRAME;
    uint8_t *pt = calloc(1, n), *ct = NULL;
    size_t ct_len = 0;

    (void)state;
    assert_non_null(pt);
    assert_int_equal(kc_client_new(f->path, 2000, &c), 0);
    assert_int_equal(kc_encrypt(c, "users-email", users_ctx, 2, pt, n, &ct,
                                &ct_len), KC_ETOOBIG);
    assert_int_equal(atomic_load(&f->requests), 0);
    /* Nothing was sent, so the connection is still good. */
    assert_int_equal(kc_ping(c), 0);
    kc_client_free(c);
    free(pt);
    fake_stop(f);
}

/*
 * The request size check is exact: a body of exactly max_frame goes
 * through, one byte more is refused locally.  The encrypt request below
 * has 81 bytes besides the plaintext: map header 1, "id" 3, id 2 -> 1,
 * "op" 3, "encrypt" 8, "key" 4, "users-email" 12, "plaintext" 10, bin32
 * header 5, and the context field 34.
 */
static void
test_exact_limit(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    size_t n = PROTO_DEFAULT_MAX_FRAME - 81;
    uint8_t *pt = calloc(1, n + 1), *ct = NULL;
    size_t ct_len = 0;

    (void)state;
    assert_non_null(pt);
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    assert_int_equal(kc_encrypt(c, "users-email", users_ctx, 2, pt, n, &ct,
                                &ct_len), 0);
    assert_int_equal(ct_len, n + 3);
    kc_free(ct);
    ct = NULL;
    assert_int_equal(kc_encrypt(c, "users-email", users_ctx, 2, pt, n + 1,
                                &ct, &ct_len), KC_ETOOBIG);
    assert_int_equal(atomic_load(&f->requests), 1);
    kc_client_free(c);
    free(pt);
    fake_stop(f);
}

static void
test_stale_id_skipped(void **state)
{
    struct fake *f = fake_start(FAKE_STALE_ID);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), 0);
    roundtrip(c, (const uint8_t *)"bob@example.com", 15);
    assert_int_equal(kc_ping(c), 0);
    kc_client_free(c);
    fake_stop(f);
}

static void
test_garbage_reply(void **state)
{
    struct fake *f = fake_start(FAKE_GARBAGE);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), 0);
    assert_int_equal(kc_ping(c), KC_EPROTO);
    kc_client_free(c);
    fake_stop(f);
}

static void
test_huge_reply_refused(void **state)
{
    struct fake *f = fake_start(FAKE_HUGE_LEN);
    struct kc_client *c = NULL;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), 0);
    assert_int_equal(kc_ping(c), KC_ETOOBIG);
    /* The stream is unusable after that: the client reconnects. */
    assert_int_equal(kc_ping(c), KC_ETOOBIG);
    assert_int_equal(atomic_load(&f->accepted), 2);
    kc_client_free(c);
    fake_stop(f);
}

static void
test_stats_json(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    char *json = NULL;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), 0);
    assert_int_equal(kc_stats_json(c, &json), 0);
    assert_string_equal(json,
                        "{\"keys\":{\"users-email\":{\"encrypt\":300,"
                        "\"provider_calls\":3}},\"cache\":{\"entries\":1},"
                        "\"agent\":{\"version\":\"fake \\\"1\\\"\"}}");
    kc_free(json);
    kc_client_free(c);
    fake_stop(f);
}

static void
test_fork_reconnects(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    int status = 0, fds[2], child_r = 1;
    pid_t pid;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 2000, &c), 0);
    assert_int_equal(kc_ping(c), 0);
    /* The child reports through a pipe, not its exit status, which tools
     * such as valgrind may override (the child inherits a copy of the
     * fake's thread buffers that it can never free). */
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int r = kc_ping(c);

        kc_client_free(c);
        (void)!write(fds[1], &r, sizeof(r));
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], &child_r, sizeof(child_r)),
                     sizeof(child_r));
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(child_r, 0);
    /* The child dialled its own connection; the parent's still works. */
    assert_int_equal(atomic_load(&f->accepted), 2);
    assert_int_equal(kc_ping(c), 0);
    assert_int_equal(atomic_load(&f->accepted), 2);
    kc_client_free(c);
    fake_stop(f);
}

static void
test_bad_arguments(void **state)
{
    struct fake *f = fake_start(FAKE_GOOD);
    struct kc_client *c = NULL;
    struct kc_context_pair bad[] = {{"table", NULL}};
    uint8_t *out = NULL;
    size_t n = 0;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 1000, &c), 0);
    assert_int_equal(kc_encrypt(c, NULL, NULL, 0, (const uint8_t *)"x", 1,
                                &out, &n), KC_EINVAL);
    assert_int_equal(kc_encrypt(c, "k", bad, 1, (const uint8_t *)"x", 1,
                                &out, &n), KC_EINVAL);
    assert_int_equal(kc_encrypt(c, "k", NULL, 1, (const uint8_t *)"x", 1,
                                &out, &n), KC_EINVAL);
    assert_int_equal(kc_decrypt(c, NULL, 5, NULL, 0, &out, &n), KC_EINVAL);
    assert_int_equal(kc_ping(NULL), KC_EINVAL);
    assert_int_equal(atomic_load(&f->requests), 0);
    kc_client_free(c);
    kc_client_free(NULL);
    kc_free(NULL);
    fake_stop(f);
}

/* ---- Base64 -------------------------------------------------------- */

static void
b64_ok(const char *bin, size_t n, const char *text)
{
    char *s = NULL;
    uint8_t *back = NULL;
    size_t back_len = 99;

    assert_int_equal(kc_base64_encode((const uint8_t *)bin, n, &s), 0);
    assert_string_equal(s, text);
    assert_int_equal(kc_base64_decode(s, strlen(s), &back, &back_len), 0);
    assert_non_null(back);
    assert_int_equal(back_len, n);
    if (n > 0) {
        assert_memory_equal(back, bin, n);
    }
    kc_free(s);
    kc_free(back);
}

static void
test_base64_vectors(void **state)
{
    (void)state;
    /* RFC 4648 section 10. */
    b64_ok("", 0, "");
    b64_ok("f", 1, "Zg==");
    b64_ok("fo", 2, "Zm8=");
    b64_ok("foo", 3, "Zm9v");
    b64_ok("foob", 4, "Zm9vYg==");
    b64_ok("fooba", 5, "Zm9vYmE=");
    b64_ok("foobar", 6, "Zm9vYmFy");
    b64_ok("\0\xff\xfe", 3, "AP/+");
}

static void
test_base64_roundtrip_lengths(void **state)
{
    uint8_t bin[300];
    uint8_t *back = NULL;
    char *s = NULL;
    size_t n, i, back_len;

    (void)state;
    for (i = 0; i < sizeof(bin); i++) {
        bin[i] = (uint8_t)(i * 31 + 7);
    }
    for (n = 0; n <= sizeof(bin); n++) {
        assert_int_equal(kc_base64_encode(bin, n, &s), 0);
        assert_int_equal(strlen(s), (n + 2) / 3 * 4);
        assert_int_equal(kc_base64_decode(s, strlen(s), &back, &back_len),
                         0);
        assert_int_equal(back_len, n);
        if (n > 0) {
            assert_memory_equal(back, bin, n);
        }
        kc_free(s);
        kc_free(back);
    }
}

static void
test_base64_invalid(void **state)
{
    static const char *const bad[] = {
        "Zg",        /* no padding */
        "Zg=",       /* short padding */
        "Zg===",     /* too much */
        "Z===",      /* padding where data belongs */
        "Zh==",      /* non-zero trailing bits */
        "Zm9v\n",    /* whitespace is the caller's business */
        "Zm9v YmFy", /* inner space */
        "Zm9v-_8=",  /* URL-safe alphabet */
        "****",
        "=Zm9",
    };
    uint8_t *out = (uint8_t *)1;
    size_t i, n = 7;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kc_base64_decode(bad[i], strlen(bad[i]), &out, &n),
                         KC_EINVAL);
        assert_null(out);
        assert_int_equal(n, 0);
    }
    /* An embedded NUL counts against the given length. */
    assert_int_equal(kc_base64_decode("Zm\0v", 4, &out, &n), KC_EINVAL);
    assert_int_equal(kc_base64_decode(NULL, 4, &out, &n), KC_EINVAL);
    assert_int_equal(kc_base64_encode(NULL, 3, (char **)&out), KC_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_socket),
        cmocka_unit_test(test_stale_socket_file),
        cmocka_unit_test(test_path_too_long),
        cmocka_unit_test(test_env_socket),
        cmocka_unit_test(test_closed_mid_request),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_spin_is_bounded),
        cmocka_unit_test(test_spin_settings_roundtrip),
        cmocka_unit_test(test_spin_budget_per_call),
        cmocka_unit_test(test_buf_max_lowered),
        cmocka_unit_test(test_busy_at_hello),
        cmocka_unit_test(test_refused_before_hello_sent),
        cmocka_unit_test(test_version_mismatch),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_too_big_local),
        cmocka_unit_test(test_exact_limit),
        cmocka_unit_test(test_stale_id_skipped),
        cmocka_unit_test(test_garbage_reply),
        cmocka_unit_test(test_huge_reply_refused),
        cmocka_unit_test(test_stats_json),
        cmocka_unit_test(test_fork_reconnects),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_roundtrip_lengths),
        cmocka_unit_test(test_base64_invalid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
