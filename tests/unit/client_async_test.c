/*
 * client_async_test.c - libkeycache's pipelining, batch and event-loop
 * API (kc_submit_*, kc_client_step/next/wait, kc_batch).
 *
 * Without arguments: against an in-process fake agent (a listening Unix
 * socket in a fresh temp directory and one server thread) that answers
 * pipelined requests out of order, answers batches item by item, stays
 * silent, or closes with requests in flight.
 * With `--agent PATH`: the same API against a real keycache-agent it
 * starts on a scratch socket (local provider, temporary master key).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "keycache.h"
#include "wire.h"

enum fake_mode {
    FAKE_SWAP,   /* answer requests in pairs, second first */
    FAKE_SILENT, /* hello, then never answer */
    FAKE_CLOSE,  /* hello, then close on the third request */
    FAKE_SLOW,   /* hello, then read slowly and never answer */
};

struct fake {
    char dir[64];
    char path[128];
    int lfd;
    enum fake_mode mode;
    atomic_int stop;
    pthread_t thr;
};

static const struct kc_context_pair ctx1[] = {{"tenant", "t1"}};

/* ---- fake agent --------------------------------------------------------- */

static int
send_frame(int fd, struct kc_buf *b, size_t mark)
{
    const uint8_t *p;
    size_t n;
    ssize_t w;

    assert_int_equal(proto_frame_end(b, mark, 1 << 30), 0);
    p = b->data;
    n = b->len;
    while (n > 0) {
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            kc_buf_clear(b);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    kc_buf_clear(b);
    return 0;
}

static void
pack_head(msgpack_packer *pk, uint64_t id, uint32_t n)
{
    msgpack_pack_map(pk, n);
    proto_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, id);
    proto_pack_cstr(pk, "ok");
    msgpack_pack_true(pk);
}

/* One encrypt/decrypt result into pk: {ok, ciphertext|plaintext} or an
 * error for a plaintext "fail".  Encrypt prefixes "CT:". */
static void
pack_item(msgpack_packer *pk, const msgpack_object *req, bool with_id,
          uint64_t id)
{
    const char *op = NULL;
    const uint8_t *in = NULL;
    size_t op_len = 0, n = 0;
    uint8_t buf[512];
    bool enc;

    assert_int_equal(proto_get_str(req, "op", true, &op, &op_len), 0);
    enc = op_len == 7 && memcmp(op, "encrypt", 7) == 0;
    assert_int_equal(proto_get_bin(req, enc ? "plaintext" : "ciphertext",
                                   true, &in, &n),
                     0);
    assert_true(n + 3 <= sizeof(buf));
    if (n == 4 && memcmp(in, "fail", 4) == 0) {
        proto_pack_error(pk, with_id, id, KC_EDENIED, "item refused");
        return;
    }
    if (with_id) {
        pack_head(pk, id, 3);
    } else {
        msgpack_pack_map(pk, 2);
        proto_pack_cstr(pk, "ok");
        msgpack_pack_true(pk);
    }
    if (enc) {
        memcpy(buf, "CT:", 3);
        memcpy(buf + 3, in, n);
        proto_pack_cstr(pk, "ciphertext");
        proto_pack_bin(pk, buf, n + 3);
    } else {
        assert_true(n >= 3);
        proto_pack_cstr(pk, "plaintext");
        proto_pack_bin(pk, in + 3, n - 3);
    }
}

static int
answer(int fd, const msgpack_object *req)
{
    const msgpack_object *items;
    const char *op = NULL;
    struct kc_buf b;
    msgpack_packer pk;
    size_t op_len = 0, mark;
    uint64_t id = 0;
    uint32_t i;

    assert_int_equal(proto_get_uint(req, "id", true, &id), 0);
    assert_int_equal(proto_get_str(req, "op", true, &op, &op_len), 0);
    kc_buf_init(&b, 0);
    assert_int_equal(proto_frame_begin(&b, &mark), 0);
    proto_packer_init(&pk, &b);
    if (op_len == 5 && memcmp(op, "hello", 5) == 0) {
        pack_head(&pk, id, 4);
        proto_pack_cstr(&pk, "version");
        msgpack_pack_uint64(&pk, 1);
        proto_pack_cstr(&pk, "max_frame");
        msgpack_pack_uint64(&pk, PROTO_DEFAULT_MAX_FRAME);
    } else if (op_len == 5 && memcmp(op, "batch", 5) == 0) {
        items = proto_map_get(req, "items");
        assert_non_null(items);
        assert_int_equal(items->type, MSGPACK_OBJECT_ARRAY);
        pack_head(&pk, id, 3);
        proto_pack_cstr(&pk, "results");
        msgpack_pack_array(&pk, items->via.array.size);
        for (i = 0; i < items->via.array.size; i++) {
            pack_item(&pk, &items->via.array.ptr[i], false, 0);
        }
    } else if (op_len == 4 && memcmp(op, "ping", 4) == 0) {
        pack_head(&pk, id, 2);
    } else {
        pack_item(&pk, req, true, id);
    }
    return send_frame(fd, &b, mark);
}

static bool
is_hello(const msgpack_object *req)
{
    const char *op = NULL;
    size_t n = 0;

    return proto_get_str(req, "op", true, &op, &n) == 0 && n == 5 &&
           memcmp(op, "hello", 5) == 0;
}

/* Serve one connection until it closes or the fake stops. */
static void
serve(struct fake *f, int fd)
{
    struct kc_buf rx, held;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    const uint8_t *body;
    size_t body_len, total;
    msgpack_unpacked u, hu;
    uint8_t chunk[8192];
    ssize_t got;
    int nreq = 0, pr;

    kc_buf_init(&rx, 0);
    kc_buf_init(&held, 0);
    while (!atomic_load(&f->stop)) {
        if ((pr = poll(&pfd, 1, 20)) == 0) {
            if (held.len > 0) { /* a lone request: answer it now */
                msgpack_unpacked_init(&hu);
                assert_int_equal(proto_unpack_map(held.data, held.len, &hu),
                                 0);
                (void)answer(fd, &hu.data);
                msgpack_unpacked_destroy(&hu);
                held.len = 0;
            }
            continue;
        }
        if ((got = recv(fd, chunk, sizeof(chunk), 0)) <= 0) {
            break;
        }
        if (f->mode == FAKE_SLOW && nreq++ > 0) {
            usleep(100); /* about 80 MB/s at most: the socket stays full */
        }
        assert_int_equal(kc_buf_put(&rx, chunk, (size_t)got), 0);
        for (;;) {
            assert_int_equal(proto_frame_decode(rx.data, rx.len, 1 << 30,
                                                &body, &body_len, &total),
                             0);
            if (total == 0) {
                break;
            }
            msgpack_unpacked_init(&u);
            assert_int_equal(proto_unpack_map(body, body_len, &u), 0);
            if (is_hello(&u.data)) {
                (void)answer(fd, &u.data);
            } else if (f->mode == FAKE_CLOSE && ++nreq >= 3) {
                msgpack_unpacked_destroy(&u);
                goto out;
            } else if (f->mode == FAKE_SWAP && held.len == 0) {
                assert_int_equal(kc_buf_put(&held, body, body_len), 0);
            } else if (f->mode == FAKE_SWAP) {
                (void)answer(fd, &u.data);
                msgpack_unpacked_init(&hu);
                assert_int_equal(proto_unpack_map(held.data, held.len, &hu),
                                 0);
                (void)answer(fd, &hu.data);
                msgpack_unpacked_destroy(&hu);
                held.len = 0;
            }
            msgpack_unpacked_destroy(&u);
            memmove(rx.data, rx.data + total, rx.len - total);
            rx.len -= total;
        }
    }
out:
    kc_buf_clear(&rx);
    kc_buf_clear(&held);
    close(fd);
}

static void *
fake_main(void *arg)
{
    struct fake *f = arg;
    struct pollfd pfd = {.fd = f->lfd, .events = POLLIN};
    int fd;

    while (!atomic_load(&f->stop)) {
        if (poll(&pfd, 1, 20) <= 0) {
            continue;
        }
        if ((fd = accept(f->lfd, NULL, NULL)) >= 0) {
            serve(f, fd);
        }
    }
    return NULL;
}

static struct fake *
fake_start(enum fake_mode mode)
{
    struct sockaddr_un sa;
    struct fake *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/kc-async-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/s", f->dir);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    f->mode = mode;
    assert_int_equal(pthread_create(&f->thr, NULL, fake_main, f), 0);
    return f;
}

static void
fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thr, NULL);
    close(f->lfd);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
}

/* ---- tests against the fake ------------------------------------------- */

/* 50 requests in flight, answered out of order: each completion carries
 * its own id, user pointer and result. */
static void
test_pipeline_out_of_order(void **state)
{
    struct fake *f = fake_start(FAKE_SWAP);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    uint64_t ids[50];
    char pt[50][16];
    bool seen[50] = {false};
    size_t i, k;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    for (i = 0; i < 50; i++) {
        snprintf(pt[i], sizeof(pt[i]), "field-%02zu", i);
        assert_int_equal(kc_submit_encrypt(c, "k", ctx1, 1,
                                           (const uint8_t *)pt[i],
                                           strlen(pt[i]), &seen[i], &ids[i]),
                         0);
    }
    assert_int_equal(kc_client_in_flight(c), 50);
    for (k = 0; k < 50; k++) {
        assert_int_equal(kc_client_wait(c, &cp, 5000), 0);
        assert_int_equal(cp.status, 0);
        assert_int_equal(cp.op, KC_OP_ENCRYPT);
        i = (size_t)((bool *)cp.user - seen);
        assert_true(i < 50);
        assert_false(seen[i]);
        seen[i] = true;
        assert_int_equal(cp.id, ids[i]);
        assert_int_equal(cp.len, 3 + strlen(pt[i]));
        assert_memory_equal(cp.data, "CT:", 3);
        assert_memory_equal(cp.data + 3, pt[i], strlen(pt[i]));
        kc_completion_clear(&cp);
        assert_null(cp.data);
    }
    assert_int_equal(kc_client_in_flight(c), 0);
    assert_int_equal(kc_client_wait(c, &cp, 10), KC_EINVAL);
    kc_client_free(c);
    fake_stop(f);
}

/* Batches: per-item results in item order; a failed item fails alone. */
static void
test_batch(void **state)
{
    struct fake *f = fake_start(FAKE_SWAP);
    struct kc_client *c = NULL;
    struct kc_batch_item items[4];
    struct kc_item_result res[4];
    struct kc_completion cp;
    uint64_t id = 0;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    items[0] = (struct kc_batch_item){KC_OP_ENCRYPT, "k", ctx1, 1,
                                      (const uint8_t *)"abc", 3};
    items[1] = (struct kc_batch_item){KC_OP_ENCRYPT, "k", NULL, 0,
                                      (const uint8_t *)"fail", 4};
    items[2] = (struct kc_batch_item){KC_OP_DECRYPT, NULL, ctx1, 1,
                                      (const uint8_t *)"CT:xyz", 6};
    items[3] = (struct kc_batch_item){KC_OP_ENCRYPT, "k", NULL, 0, NULL, 0};
    assert_int_equal(kc_batch(c, items, 4, res), 0);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(res[0].len, 6);
    assert_memory_equal(res[0].data, "CT:abc", 6);
    assert_int_equal(res[1].status, KC_EDENIED);
    assert_null(res[1].data);
    assert_int_equal(res[2].status, 0);
    assert_memory_equal(res[2].data, "xyz", 3);
    assert_int_equal(res[3].status, 0);
    assert_int_equal(res[3].len, 3);
    kc_item_results_clear(res, 4);
    assert_null(res[0].data);
    /* Asynchronously, mixed with a single request. */
    assert_int_equal(kc_submit_batch(c, items, 3, "b", &id), 0);
    assert_int_equal(kc_submit_ping(c, "p", NULL), 0);
    assert_int_equal(kc_client_wait(c, &cp, 5000), 0);
    assert_int_equal(cp.op, KC_OP_PING); /* the fake swaps the pair */
    kc_completion_clear(&cp);
    assert_int_equal(kc_client_wait(c, &cp, 5000), 0);
    assert_int_equal(cp.op, KC_OP_BATCH);
    assert_int_equal(cp.id, id);
    assert_string_equal((const char *)cp.user, "b");
    assert_int_equal(cp.nitems, 3);
    assert_int_equal(cp.items[1].status, KC_EDENIED);
    kc_completion_clear(&cp);
    /* Refused locally. */
    assert_int_equal(kc_submit_batch(c, items, 0, NULL, NULL), KC_EINVAL);
    assert_int_equal(kc_submit_batch(c, items, KC_BATCH_MAX + 1, NULL, NULL),
                     KC_EINVAL);
    items[0].op = KC_OP_PING;
    assert_int_equal(kc_submit_batch(c, items, 1, NULL, NULL), KC_EINVAL);
    kc_client_free(c);
    fake_stop(f);
}

/* The caller's own poll loop: fd, events, step, next. */
static void
test_event_loop(void **state)
{
    struct fake *f = fake_start(FAKE_SWAP);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    struct pollfd pfd;
    int got = 0, rounds = 0, i;

    (void)state;
    assert_int_equal(kc_client_open(f->path, 5000, &c), 0);
    assert_int_equal(kc_client_fd(c), -1);
    assert_int_equal(kc_client_events(c), 0);
    for (i = 0; i < 9; i++) {
        assert_int_equal(kc_submit_encrypt(c, "k", ctx1, 1,
                                           (const uint8_t *)"x", 1, NULL,
                                           NULL),
                         0);
    }
    assert_true(kc_client_fd(c) >= 0);
    assert_true(kc_client_events(c) & POLLOUT); /* nothing sent yet */
    while (got < 9 && rounds++ < 1000) {
        pfd.fd = kc_client_fd(c);
        pfd.events = kc_client_events(c);
        pfd.revents = 0;
        assert_true(poll(&pfd, 1, 1000) >= 0);
        assert_true(kc_client_step(c) >= 0);
        while (kc_client_next(c, &cp) == 1) {
            assert_int_equal(cp.status, 0);
            kc_completion_clear(&cp);
            got++;
        }
    }
    assert_int_equal(got, 9);
    assert_int_equal(kc_client_events(c), 0);
    assert_int_equal(kc_client_next(c, &cp), 0);
    kc_client_free(c);
    fake_stop(f);
}

/* Each request times out on its own; a blocking call still works. */
static void
test_timeout(void **state)
{
    struct fake *f = fake_start(FAKE_SILENT);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    int i;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 200, &c), 0);
    for (i = 0; i < 3; i++) {
        assert_int_equal(kc_submit_ping(c, NULL, NULL), 0);
    }
    assert_int_equal(kc_client_wait(c, &cp, 20), KC_ETIMEOUT);
    for (i = 0; i < 3; i++) {
        assert_int_equal(kc_client_wait(c, &cp, 5000), 0);
        assert_int_equal(cp.status, KC_ETIMEOUT);
        assert_non_null(cp.message);
        kc_completion_clear(&cp);
    }
    assert_int_equal(kc_client_in_flight(c), 0);
    kc_client_free(c);
    fake_stop(f);
}

/* A connection lost with requests in flight fails each of them; the
 * next submit reconnects.  Uncollected completions are freed with the
 * client. */
static void
test_close_fails_all(void **state)
{
    struct fake *f = fake_start(FAKE_CLOSE);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    int i, n = 0;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    for (i = 0; i < 5; i++) {
        assert_int_equal(kc_submit_encrypt(c, "k", NULL, 0,
                                           (const uint8_t *)"sec", 3, NULL,
                                           NULL),
                         0);
    }
    while (kc_client_wait(c, &cp, 5000) == 0) {
        assert_int_equal(cp.status, KC_ECLOSED);
        assert_null(cp.data);
        kc_completion_clear(&cp);
        n++;
    }
    assert_int_equal(n, 5);
    assert_int_equal(kc_client_fd(c), -1);
    assert_int_equal(kc_submit_ping(c, NULL, NULL), 0); /* reconnects */
    assert_true(kc_client_fd(c) >= 0);
    assert_int_equal(kc_submit_ping(c, NULL, NULL), 0);
    kc_client_free(c); /* in flight: dropped with the client */
    fake_stop(f);
}

/* Blocking calls on a client with submitted requests keep their
 * replies for kc_client_wait. */
static void
test_mixed_blocking(void **state)
{
    struct fake *f = fake_start(FAKE_SWAP);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    uint8_t *out = NULL;
    size_t len = 0;
    int i;

    (void)state;
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    for (i = 0; i < 3; i++) {
        assert_int_equal(kc_submit_encrypt(c, "k", ctx1, 1,
                                           (const uint8_t *)"a", 1,
                                           (void *)(intptr_t)i, NULL),
                         0);
    }
    assert_int_equal(kc_encrypt(c, "k", ctx1, 1, (const uint8_t *)"zz", 2,
                                &out, &len),
                     0);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "CT:zz", 5);
    kc_free(out);
    for (i = 0; i < 3; i++) {
        assert_int_equal(kc_client_wait(c, &cp, 5000), 0);
        assert_int_equal(cp.status, 0);
        assert_memory_equal(cp.data, "CT:a", 4);
        kc_completion_clear(&cp);
    }
    kc_client_free(c);
    fake_stop(f);
}

/* Bad arguments are refused before anything is queued. */
/*
 * A socket that never drains completely: sent bytes must not pile up in
 * the client's queue, or it refuses requests (KC_EBUSY) once 64 MiB have
 * passed through it, however little is actually unsent.  Each round
 * queues more than the socket holds, so some bytes always wait; 75 MB
 * pass in all.
 */
static void
test_backlog_that_never_drains(void **state)
{
    struct fake *f = fake_start(FAKE_SLOW);
    struct kc_client *c;
    struct pollfd pfd;
    uint8_t *pt = calloc(1, 250000);
    int i, j, r, waiting = 0;

    (void)state;
    assert_non_null(pt);
    assert_int_equal(kc_client_new(f->path, 60000, &c), 0);
    for (i = 0; i < 150; i++) {
        for (j = 0; j < 2; j++) {
            r = kc_submit_encrypt(c, "k", NULL, 0, pt, 250000, NULL, NULL);
            if (r != 0) {
                fail_msg("round %d: %s (%s)", i, kc_strerror(r),
                         kc_client_last_error(c));
            }
        }
        assert_true(kc_client_step(c) >= 0);
        waiting += (kc_client_events(c) & POLLOUT) != 0;
        pfd.fd = kc_client_fd(c);
        pfd.events = POLLOUT;
        pfd.revents = 0;
        (void)poll(&pfd, 1, 1000);
    }
    /* The case is only tested if bytes were left unsent throughout. */
    assert_true(waiting >= 140);
    kc_client_free(c);
    fake_stop(f);
    free(pt);
}

static void
test_bad_arguments(void **state)
{
    struct fake *f = fake_start(FAKE_SWAP);
    struct kc_client *c = NULL;
    struct kc_completion cp;
    static uint8_t big[PROTO_DEFAULT_MAX_FRAME];

    (void)state;
    assert_int_equal(kc_submit_ping(NULL, NULL, NULL), KC_EINVAL);
    assert_int_equal(kc_client_step(NULL), KC_EINVAL);
    assert_int_equal(kc_client_wait(NULL, &cp, 0), KC_EINVAL);
    assert_int_equal(kc_client_next(NULL, &cp), 0);
    assert_int_equal(kc_client_fd(NULL), -1);
    kc_completion_clear(NULL);
    assert_int_equal(kc_client_new(f->path, 5000, &c), 0);
    assert_int_equal(kc_submit_encrypt(c, NULL, NULL, 0,
                                       (const uint8_t *)"a", 1, NULL, NULL),
                     KC_EINVAL);
    assert_int_equal(kc_submit_decrypt(c, NULL, 5, NULL, 0, NULL, NULL),
                     KC_EINVAL);
    assert_int_equal(kc_submit_encrypt(c, "k", NULL, 0, big, sizeof(big),
                                       NULL, NULL),
                     KC_ETOOBIG);
    assert_int_equal(kc_client_in_flight(c), 0);
    kc_client_free(c);
    fake_stop(f);
}

/* ---- against a real agent ------------------------------------------------ */

static const char *agent_path;

struct real {
    char dir[64];
    char sock[128];
    pid_t pid;
};

static void
write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void
real_start(struct real *a)
{
    char conf[512], kpath[128], cpath[128];
    struct kc_client *c = NULL;
    uint8_t key[32];
    int i, n, fd;

    snprintf(a->dir, sizeof(a->dir), "/tmp/kc-async-agent-XXXXXX");
    assert_non_null(mkdtemp(a->dir));
    snprintf(a->sock, sizeof(a->sock), "%s/a.sock", a->dir);
    snprintf(kpath, sizeof(kpath), "%s/k.key", a->dir);
    snprintf(cpath, sizeof(cpath), "%s/agent.ini", a->dir);
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    assert_int_equal(read(fd, key, sizeof(key)), (ssize_t)sizeof(key));
    close(fd);
    write_file(kpath, key, sizeof(key));
    n = snprintf(conf, sizeof(conf),
                 "[agent]\nsocket = %s\nlog_level = warn\n\n"
                 "[key.k]\nprovider = local\nkey_file = %s\n",
                 a->sock, kpath);
    write_file(cpath, conf, (size_t)n);
    a->pid = fork();
    assert_true(a->pid >= 0);
    if (a->pid == 0) {
        execl(agent_path, agent_path, "--config", cpath, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 500; i++) {
        if (kc_client_new(a->sock, 2000, &c) == 0) {
            kc_client_free(c);
            return;
        }
        usleep(10000);
    }
    fail_msg("agent did not start");
}

static void
real_stop(struct real *a)
{
    char p[160];
    int st = 0;

    kill(a->pid, SIGTERM);
    assert_int_equal(waitpid(a->pid, &st, 0), a->pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(p, sizeof(p), "%s/k.key", a->dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/agent.ini", a->dir);
    unlink(p);
    unlink(a->sock);
    rmdir(a->dir);
}

/* Pipelined encrypts, then a batch decrypting them all back (with one
 * tampered item failing alone), then blocking calls on the same client. */
static void
test_real_agent(void **state)
{
    enum { N = 100 };
    struct kc_batch_item items[N + 1];
    struct kc_item_result res[N + 1];
    struct kc_client *c = NULL;
    struct kc_completion cp;
    uint8_t *ct[N] = {NULL}, *bad, *out = NULL;
    size_t ct_len[N], i, k, out_len = 0;
    char pt[N][24];
    struct real a;

    (void)state;
    real_start(&a);
    assert_int_equal(kc_client_new(a.sock, 10000, &c), 0);
    for (i = 0; i < N; i++) {
        snprintf(pt[i], sizeof(pt[i]), "secret field %zu", i);
        assert_int_equal(kc_submit_encrypt(c, "k", ctx1, 1,
                                           (const uint8_t *)pt[i],
                                           strlen(pt[i]), (void *)i, NULL),
                         0);
    }
    for (k = 0; k < N; k++) {
        assert_int_equal(kc_client_wait(c, &cp, 10000), 0);
        assert_int_equal(cp.status, 0);
        i = (size_t)cp.user;
        ct[i] = cp.data;
        ct_len[i] = cp.len;
        cp.data = NULL;
        kc_completion_clear(&cp);
    }
    for (i = 0; i < N; i++) {
        items[i] = (struct kc_batch_item){KC_OP_DECRYPT, NULL, ctx1, 1,
                                          ct[i], ct_len[i]};
    }
    bad = malloc(ct_len[0]);
    assert_non_null(bad);
    memcpy(bad, ct[0], ct_len[0]);
    bad[ct_len[0] - 1] ^= 1;
    items[N] = (struct kc_batch_item){KC_OP_DECRYPT, NULL, NULL, 0, bad,
                                      ct_len[0]};
    assert_int_equal(kc_batch(c, items, N + 1, res), 0);
    for (i = 0; i < N; i++) {
        assert_int_equal(res[i].status, 0);
        assert_int_equal(res[i].len, strlen(pt[i]));
        assert_memory_equal(res[i].data, pt[i], res[i].len);
    }
    assert_int_equal(res[N].status, KC_EAUTH);
    kc_item_results_clear(res, N + 1);
    assert_int_equal(kc_decrypt(c, ct[5], ct_len[5], ctx1, 1, &out,
                                &out_len),
                     0);
    assert_memory_equal(out, pt[5], out_len);
    kc_free(out);
    for (i = 0; i < N; i++) {
        kc_free(ct[i]);
    }
    free(bad);
    kc_client_free(c);
    real_stop(&a);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest fake_tests[] = {
        cmocka_unit_test(test_pipeline_out_of_order),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_event_loop),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_close_fails_all),
        cmocka_unit_test(test_mixed_blocking),
        cmocka_unit_test(test_backlog_that_never_drains),
        cmocka_unit_test(test_bad_arguments),
    };
    const struct CMUnitTest agent_tests[] = {
        cmocka_unit_test(test_real_agent),
    };

    signal(SIGPIPE, SIG_IGN);
    unsetenv("KEYCACHE_SOCKET");
    if (argc == 3 && strcmp(argv[1], "--agent") == 0) {
        agent_path = argv[2];
        return cmocka_run_group_tests(agent_tests, NULL, NULL);
    }
    return cmocka_run_group_tests(fake_tests, NULL, NULL);
}
