/*
 * client.c - the blocking client: one Unix-socket connection to
 * keycache-agent, one request in flight at a time (see keycache.h for the
 * contract and proto/PROTOCOL.md for the bytes).
 *
 * Every frame is built and received in a kc_buf, which wipes on growth
 * and on clear, because requests carry plaintext (encrypt) and replies
 * carry plaintext (decrypt).  The receive buffer is cleared after every
 * call, so no payload outlives the call that moved it.
 *
 * Failure policy: an error reply from the agent (with our id) leaves the
 * connection usable.  Anything that leaves the stream in an unknown state
 * (timeout, peer close, bad frame, reply over the limit) drops the
 * connection; the next call reconnects.  Nothing is retried
 * automatically: a request that timed out may still have been served.
 *
 * Pipelined and batch calls over the same connection live in async.c.
 *
 * TODO: kc_decrypt returns only the plaintext; the agent's reply also
 * names the key alias and the message's full encryption context, which
 * callers cannot see yet.  A kc_decrypt_ex with a result struct would
 * expose them.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "keycache.h"
#include "wire.h"

#define CLIENT_DEFAULT_TIMEOUT_MS 30000
#define CLIENT_RECV_CHUNK         16384
/* Default and largest kc_client_set_spin budgets, microseconds. */
#define CLIENT_DEFAULT_SPIN_US    50
#define CLIENT_MAX_SPIN_US        1000
/* A reply may exceed the agent's request limit by its own fields (a
 * decrypt reply carries the plaintext plus key alias and context). */
#define CLIENT_REPLY_SLACK 65536

/* printf-style into c->err; keeps the first message of a call. */
__attribute__((format(printf, 2, 3))) void
client_set_err(struct kc_client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

/* Copy peer-supplied text into dst (NUL-terminated, truncated to fit),
 * replacing control bytes so it is safe to print. */
void
client_copy_clean(char *dst, size_t dst_size, const char *p, size_t n)
{
    size_t i;

    if (n >= dst_size) {
        n = dst_size - 1;
    }
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];

        dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    dst[n] = '\0';
}

int64_t
client_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
client_disconnect(struct kc_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    kc_buf_clear(&c->rx);
    c->rx_off = 0;
    kc_buf_clear(&c->tx);
    c->tx_off = 0;
    /* Requests submitted on this connection can no longer be answered. */
    async_fail_all(c, KC_ECLOSED);
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
client_spin_reset(struct kc_client *c)
{
    c->spin_left_ns = (int64_t)c->spin_us * 1000;
}

/*
 * client_spin - poll pfd without sleeping while the call has spin budget
 * left (client_spin_reset) and deadline (ms, < 0: none) has not passed.
 * Returns poll's count: > 0 when ready, 0 when the budget or the time ran
 * out, < 0 on error.
 *
 * On a virtual machine, waking a thread that sleeps in poll(2) costs tens
 * of microseconds: its idle vCPU halts and must be sent an interrupt.
 * That is more than the agent takes to answer from its cache, so a short
 * busy poll first turns the wake-up into a plain system call.  The thread
 * is waiting for the reply anyway; the price is at most spin_us of its CPU
 * time per call, however many waits the call makes (a reply arriving in
 * pieces does not restart the budget).
 */
int
client_spin(struct kc_client *c, struct pollfd *pfd, int64_t deadline)
{
    int64_t start, until, t;
    int n = 0;

    if (c->spin_left_ns <= 0) {
        return 0;
    }
    start = t = now_ns();
    until = start + c->spin_left_ns;
    if (deadline >= 0 && deadline * 1000000 < until) {
        until = deadline * 1000000;
    }
    while (t < until) {
        pfd->revents = 0;
        if ((n = poll(pfd, 1, 0)) != 0 && !(n < 0 && errno == EINTR)) {
            break;
        }
        n = 0;
        t = now_ns();
    }
    c->spin_left_ns -= now_ns() - start;
    return n;
}

/*
 * client_wait_fd - poll c->fd for events until deadline, spinning
 * first (client_spin).
 * Returns 0 when ready (or on HUP/ERR: the next I/O call reports it),
 * KC_ETIMEOUT, KC_ESYS.
 */
int
client_wait_fd(struct kc_client *c, short events, int64_t deadline)
{
    struct pollfd pfd;
    int64_t left;
    int n;

    pfd.fd = c->fd;
    pfd.events = events;
    for (;;) {
        left = deadline - client_now_ms();
        if (left <= 0) {
            client_set_err(c, "timed out after %d ms waiting for the agent",
                    c->timeout_ms);
            return KC_ETIMEOUT;
        }
        if ((n = client_spin(c, &pfd, deadline)) > 0) {
            return 0;
        }
        if (n < 0) {
            client_set_err(c, "poll: %s", strerror(errno));
            return KC_ESYS;
        }
        if (c->spin_left_ns > 0) {
            continue; /* the deadline passed while spinning */
        }
        if ((left = deadline - client_now_ms()) <= 0) {
            continue; /* the spin took the rest of the time */
        }
        pfd.revents = 0;
        n = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            client_set_err(c, "poll: %s", strerror(errno));
            return KC_ESYS;
        }
        if (n > 0) {
            return 0;
        }
    }
}

static int
connect_error(struct kc_client *c, int e)
{
    client_set_err(c, "%s: %s", c->path, strerror(e));
    return KC_ECONNECT;
}

/*
 * sock_connect - open c->fd to c->path.  A Unix socket whose listen
 * backlog is full fails with EAGAIN and has no pending connect to wait
 * on, so that case is retried until the deadline.
 * Returns 0, KC_ECONNECT, KC_ETIMEOUT, KC_ESYS.
 */
static int
sock_connect(struct kc_client *c, int64_t deadline)
{
    struct sockaddr_un sa;
    socklen_t elen = sizeof(int);
    int e = 0, r;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        client_set_err(c, "socket: %s", strerror(errno));
        return KC_ESYS;
    }
    client_own(c);
    for (;;) {
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EISCONN) {
            return 0; /* an interrupted attempt that completed */
        }
        if (errno == EINPROGRESS) {
            break;
        }
        if (errno != EAGAIN) {
            return connect_error(c, errno);
        }
        if (client_now_ms() >= deadline) {
            client_set_err(c, "agent at %s is not accepting connections "
                       "(listen backlog full)", c->path);
            return KC_ETIMEOUT;
        }
        poll(NULL, 0, 10);
    }
    if ((r = client_wait_fd(c, POLLOUT, deadline)) != 0) {
        return r;
    }
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0) {
        e = errno;
    }
    return e == 0 ? 0 : connect_error(c, e);
}

int
client_send_all(struct kc_client *c, const uint8_t *p, size_t n, int64_t deadline)
{
    ssize_t w;
    int r;

    while (n > 0) {
        w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if ((r = client_wait_fd(c, POLLOUT, deadline)) != 0) {
                return r;
            }
            continue;
        }
        if (w < 0 && errno != EPIPE && errno != ECONNRESET) {
            client_set_err(c, "send: %s", strerror(errno));
            return KC_ESYS;
        }
        client_set_err(c, "connection closed by the agent");
        return KC_ECLOSED;
    }
    return 0;
}

/*
 * client_recv_some - read what is available (waiting until deadline) into rx.
 * Returns 0, KC_ECLOSED, KC_ETIMEOUT, KC_ETOOBIG (rx limit), KC_ESYS,
 * KC_ENOMEM.
 */
int
client_recv_some(struct kc_client *c, int64_t deadline)
{
    ssize_t got;
    size_t room;
    int r;

    /* Move a partial frame to the front; consumed bytes are already
     * wiped (client_reply_done). */
    if (c->rx_off > 0) {
        memmove(c->rx.data, c->rx.data + c->rx_off, c->rx.len - c->rx_off);
        c->rx.len -= c->rx_off;
        kc_wipe(c->rx.data + c->rx.len, c->rx_off);
        c->rx_off = 0;
    }
    room = c->rx.max - c->rx.len;
    if (room == 0) {
        client_set_err(c, "reply larger than the client's limit");
        return KC_ETOOBIG;
    }
    if ((r = kc_buf_reserve(&c->rx, room < CLIENT_RECV_CHUNK
                                        ? room
                                        : CLIENT_RECV_CHUNK)) != 0) {
        return r;
    }
    for (;;) {
        got = recv(c->fd, c->rx.data + c->rx.len, c->rx.cap - c->rx.len,
                   MSG_DONTWAIT);
        if (got > 0) {
            break;
        }
        if (got == 0 || errno == ECONNRESET) {
            client_set_err(c, "connection closed by the agent");
            return KC_ECLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            client_set_err(c, "recv: %s", strerror(errno));
            return KC_ESYS;
        }
        if (deadline < 0) {
            return KC_EAGAIN_INTERNAL;
        }
        if ((r = client_wait_fd(c, POLLIN, deadline)) != 0) {
            return r;
        }
    }
    c->rx.len += (size_t)got;
    return 0;
}

size_t
client_reply_max(const struct kc_client *c)
{
    size_t m = c->max_frame;

    if (m < PROTO_DEFAULT_MAX_FRAME) {
        m = PROTO_DEFAULT_MAX_FRAME;
    }
    return m + CLIENT_REPLY_SLACK;
}

/* set_max_frame - adopt the agent's request limit; replies may be a
 * little larger, and the receive buffer may never grow past that. */
static void
set_max_frame(struct kc_client *c, size_t max_frame)
{
    c->max_frame = max_frame;
    c->rx.max = client_reply_max(c) + PROTO_FRAME_HDR;
}

/*
 * client_frame_take - unpack the first complete frame in rx, if there is
 * one.  Returns 0 with rep live (rep->u borrows from rx until
 * client_reply_done), 1 when more bytes are needed, or an error.
 */
int
client_frame_take(struct kc_client *c, struct reply *rep)
{
    const uint8_t *body = NULL;
    size_t body_len = 0, total = 0;
    int r;

    r = proto_frame_decode(c->rx.data + c->rx_off, c->rx.len - c->rx_off,
                           client_reply_max(c), &body, &body_len, &total);
    if (r != 0) {
        client_set_err(c, "bad reply frame from the agent (%s)",
                       kc_strerror(r));
        return r;
    }
    if (total == 0) {
        return 1;
    }
    msgpack_unpacked_init(&rep->u);
    rep->live = true;
    rep->total = total;
    if ((r = proto_unpack_map(body, body_len, &rep->u)) != 0) {
        client_set_err(c, "malformed reply from the agent");
    }
    return r;
}

/*
 * recv_frame - wait for one complete frame in rx and unpack it.
 * On success rep->u borrows from rx; the caller ends with
 * client_reply_done.
 */
static int
recv_frame(struct kc_client *c, int64_t deadline, struct reply *rep)
{
    int r;

    while ((r = client_frame_take(c, rep)) == 1) {
        if ((r = client_recv_some(c, deadline)) != 0) {
            return r;
        }
    }
    return r;
}

/* Drop the reply's frame from rx; wipe what it occupied. */
void
client_reply_done(struct kc_client *c, struct reply *rep)
{
    if (!rep->live) {
        return;
    }
    msgpack_unpacked_destroy(&rep->u);
    rep->live = false;
    kc_wipe(c->rx.data + c->rx_off, rep->total);
    c->rx_off += rep->total;
    if (c->rx_off >= c->rx.len) {
        c->rx.len = 0;
        c->rx_off = 0;
    }
}

/*
 * client_reply_error - turn {ok: false, error: {...}} into a code and message.
 * A code that is not a negative integer is itself a protocol error.
 */
int
client_reply_error(struct kc_client *c, const msgpack_object *map)
{
    const msgpack_object *err = NULL, *code;
    const char *msg = NULL;
    size_t msg_len = 0;
    int r;

    if (proto_get_map(map, "error", true, &err) != 0 ||
        (code = proto_map_get(err, "code")) == NULL ||
        code->type != MSGPACK_OBJECT_NEGATIVE_INTEGER ||
        code->via.i64 < INT32_MIN) {
        client_set_err(c, "agent sent an error reply without a valid code");
        return KC_EPROTO;
    }
    r = (int)code->via.i64;
    if (proto_get_str(err, "message", false, &msg, &msg_len) == 0) {
        client_copy_clean(c->err, sizeof(c->err), msg, msg_len);
    } else {
        client_set_err(c, "%s", kc_strerror(r));
    }
    return r;
}

/*
 * client_check_reply - classify one unpacked reply.
 * Returns 0 for ok with our id, 1 for a reply to another id (stale;
 * skip it), or the error code (agent error or KC_EPROTO).  *conn_err is
 * set when the error concerns the connection rather than the request.
 */
int
client_check_reply(struct kc_client *c, const msgpack_object *map, uint64_t id,
            bool *conn_err)
{
    const msgpack_object *ok, *oid;

    *conn_err = false;
    oid = proto_map_get(map, "id");
    ok = proto_map_get(map, "ok");
    if (ok == NULL || ok->type != MSGPACK_OBJECT_BOOLEAN || oid == NULL ||
        (oid->type != MSGPACK_OBJECT_NIL &&
         oid->type != MSGPACK_OBJECT_POSITIVE_INTEGER)) {
        client_set_err(c, "agent reply lacks a valid id or ok field");
        *conn_err = true;
        return KC_EPROTO;
    }
    if (oid->type == MSGPACK_OBJECT_NIL) {
        /* About the connection, not a request (limit, busy, bad frame). */
        *conn_err = true;
        return ok->via.boolean ? KC_EPROTO : client_reply_error(c, map);
    }
    if (oid->via.u64 != id) {
        return 1;
    }
    return ok->via.boolean ? 0 : client_reply_error(c, map);
}

/*
 * await_reply - read frames until the reply to id arrives.  Failures of
 * the stream itself (as opposed to an error reply to this request) drop
 * the connection, since what follows on it can no longer be trusted.
 */
static int
await_reply(struct kc_client *c, uint64_t id, int64_t deadline,
            struct reply *rep)
{
    bool conn_err = false;
    int r;

    for (;;) {
        if ((r = recv_frame(c, deadline, rep)) != 0) {
            conn_err = true;
            goto out;
        }
        r = client_check_reply(c, &rep->u.data, id, &conn_err);
        if (r != 1) {
            break;
        }
        /* Another id: a reply to a submitted (asynchronous) request
         * becomes its completion; anything else is stale. */
        if ((r = async_route(c, rep)) != 0) {
            conn_err = true;
            goto out;
        }
        client_reply_done(c, rep);
    }
out:
    if (r != 0) {
        client_reply_done(c, rep);
        if (conn_err) {
            client_disconnect(c);
        }
    }
    return r;
}

/*
 * Exact MessagePack sizes of what requests contain, so a request can be
 * measured before it is packed: checked against the agent's limit
 * without building it, and its buffer reserved once (proto's pack
 * helpers do not report write errors, so nothing may fail half-way).
 * All saturate at SIZE_MAX.
 */
size_t
client_sat_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

size_t
client_mp_str_size(size_t n)
{
    return client_sat_add(n, n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
}

size_t
client_mp_bin_size(size_t n)
{
    return client_sat_add(n, n < 256 ? 2 : n < 65536 ? 3 : 5);
}

size_t
client_mp_map_size(size_t n)
{
    return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

size_t
client_mp_uint_size(uint64_t v)
{
    return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5
                                                                       : 9;
}

/*
 * client_req_begin - start a request frame {id, op, ...nfields} in *b, whose
 * fields will take exactly fields_size bytes.  Returns 0, KC_ETOOBIG
 * (over the agent's limit; nothing is built), KC_ENOMEM.
 */
int
client_req_begin(struct kc_client *c, struct kc_buf *b, size_t *mark,
          msgpack_packer *pk, const char *op, uint32_t nfields,
          size_t fields_size, uint64_t *id)
{
    size_t body;
    int r;

    *id = c->next_id;
    body = client_mp_map_size(2 + (size_t)nfields) + client_mp_str_size(2) +
           client_mp_uint_size(*id) + client_mp_str_size(2) + client_mp_str_size(strlen(op));
    body = client_sat_add(body, fields_size);
    if (body > c->max_frame) {
        client_set_err(c, "request larger than the agent's limit of %zu bytes",
                c->max_frame);
        return KC_ETOOBIG;
    }
    /* The cap makes any size mistake fail loudly in client_req_end. */
    kc_buf_init(b, PROTO_FRAME_HDR + body);
    if ((r = kc_buf_reserve(b, PROTO_FRAME_HDR + body)) != 0 ||
        (r = proto_frame_begin(b, mark)) != 0) {
        return r;
    }
    c->next_id++;
    proto_packer_init(pk, b);
    msgpack_pack_map(pk, 2 + nfields);
    proto_pack_cstr(pk, "id");
    msgpack_pack_uint64(pk, *id);
    proto_pack_cstr(pk, "op");
    proto_pack_cstr(pk, op);
    return 0;
}

/* client_req_end - finish the frame; it must have filled its reservation. */
int
client_req_end(struct kc_client *c, struct kc_buf *b, size_t mark)
{
    if (b->len != b->max) {
        client_set_err(c, "internal error: request size mismatch");
        return KC_EPROTO;
    }
    return proto_frame_end(b, mark, c->max_frame);
}

/* hello: agree on version 1 and learn the agent's frame limit. */
static int
client_hello(struct kc_client *c, int64_t deadline)
{
    struct reply rep = {.live = false};
    struct kc_buf req;
    msgpack_packer pk;
    const char *agent = NULL;
    size_t mark = 0, agent_len = 0;
    uint64_t id = 0, v = 0, mf = 0;
    int r;

    kc_buf_init(&req, 0);
    if ((r = client_req_begin(c, &req, &mark, &pk, "hello", 1,
                       client_mp_str_size(8) + 1 + client_mp_uint_size(PROTO_VERSION),
                       &id)) != 0) {
        goto out;
    }
    proto_pack_cstr(&pk, "versions");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint64(&pk, PROTO_VERSION);
    if ((r = client_req_end(c, &req, mark)) != 0) {
        goto out;
    }
    /* An agent refusing the connection (max_connections) sends its
     * reason at once and closes, so the hello may meet a closed pipe
     * while that answer waits to be read: read it either way. */
    r = client_send_all(c, req.data, req.len, deadline);
    if ((r == 0 || r == KC_ECLOSED) &&
        (r = await_reply(c, id, deadline, &rep)) != 0) {
        goto out;
    }
    if (r != 0) {
        goto out;
    }
    if (proto_get_uint(&rep.u.data, "version", true, &v) != 0 ||
        v != PROTO_VERSION) {
        client_set_err(c, "agent chose an unsupported protocol version");
        r = KC_EVERSION;
        goto out;
    }
    if (proto_get_uint(&rep.u.data, "max_frame", false, &mf) == 0 &&
        mf >= 64 && mf <= UINT32_MAX) {
        set_max_frame(c, (size_t)mf);
    }
    if (proto_get_str(&rep.u.data, "agent", false, &agent, &agent_len) == 0) {
        client_copy_clean(c->agent, sizeof(c->agent), agent, agent_len);
    }
out:
    client_reply_done(c, &rep);
    kc_buf_clear(&req);
    return r;
}

/*
 * Forks of this process image.  Asking getpid() on every request would
 * cost a system call; a pthread_atfork child handler counts forks
 * instead, and a connection remembers the count it was opened under.
 * Only a child writes the counter, right after fork, while it is the
 * one thread of that process.  If the handler cannot be registered, the
 * pid is compared as before.
 */
static unsigned long fork_generation;
static pthread_once_t fork_watch_once = PTHREAD_ONCE_INIT;
static bool fork_watched;

static void
on_fork_child(void)
{
    fork_generation++;
}

static void
fork_watch(void)
{
    fork_watched = pthread_atfork(NULL, NULL, on_fork_child) == 0;
}

void
client_own(struct kc_client *c)
{
    (void)pthread_once(&fork_watch_once, fork_watch);
    c->owner = fork_watched ? fork_generation : (unsigned long)getpid();
}

bool
client_forked(const struct kc_client *c)
{
    return c->owner != (fork_watched ? fork_generation
                                     : (unsigned long)getpid());
}

/*
 * client_ensure - make sure c has a connection of this process: after a
 * fork the child drops its copy of the parent's socket (closing it does
 * not disturb the parent) and dials its own.
 */
int
client_ensure(struct kc_client *c, int64_t deadline)
{
    int r;

    if (c->fd >= 0 && client_forked(c)) {
        client_disconnect(c);
    }
    if (c->fd >= 0) {
        return 0;
    }
    set_max_frame(c, PROTO_DEFAULT_MAX_FRAME);
    c->agent[0] = '\0';
    if ((r = sock_connect(c, deadline)) != 0 ||
        (r = client_hello(c, deadline)) != 0) {
        client_disconnect(c);
    }
    return r;
}

/* Send a finished request frame and wait for its reply. */
static int
client_call(struct kc_client *c, struct kc_buf *req, uint64_t id,
            int64_t deadline, struct reply *rep)
{
    int r;

    /* Submitted requests go first: frames must not interleave. */
    if ((r = async_flush(c, deadline)) != 0 ||
        (r = client_send_all(c, req->data, req->len, deadline)) != 0) {
        client_disconnect(c);
        return r;
    }
    return await_reply(c, id, deadline, rep);
}

/*
 * call_begin - common start of every public operation: reset the error,
 * set the call's deadline (one for connecting and the request together),
 * connect if needed, and begin the request frame.
 */
static int
call_begin(struct kc_client *c, struct kc_buf *req, size_t *mark,
           msgpack_packer *pk, const char *op, uint32_t nfields,
           size_t fields_size, uint64_t *id, int64_t *deadline)
{
    int r;

    kc_buf_init(req, 0);
    c->err[0] = '\0';
    client_spin_reset(c);
    *deadline = client_now_ms() + c->timeout_ms;
    if ((r = client_ensure(c, *deadline)) != 0) {
        return r;
    }
    return client_req_begin(c, req, mark, pk, op, nfields, fields_size, id);
}

/* Make sure a failed call leaves a message, and the rx buffer empty. */
static int
call_end(struct kc_client *c, int r)
{
    if (r != 0 && c->err[0] == '\0') {
        client_set_err(c, "%s", kc_strerror(r));
    }
    if (c->rx.len == 0 && c->pend_head == NULL) {
        kc_buf_clear(&c->rx);
    }
    return r;
}

static int
resolve_path(const char *socket_path, const char **out)
{
    const char *p = socket_path;

    if (p == NULL || p[0] == '\0') {
        p = secure_getenv("KEYCACHE_SOCKET");
    }
    if (p == NULL || p[0] == '\0') {
        p = KC_DEFAULT_SOCKET;
    }
    *out = p;
    return strlen(p) < sizeof(((struct sockaddr_un *)0)->sun_path)
               ? 0
               : KC_EINVAL;
}

/* CPUs this thread may run on (1 when unknown). */
static int
cpus_available(void)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return 1;
    }
    return CPU_COUNT(&set);
}

int
kc_client_open(const char *socket_path, int timeout_ms,
               struct kc_client **out)
{
    struct kc_client *c;
    const char *path = NULL;

    if (out == NULL) {
        return KC_EINVAL;
    }
    *out = NULL;
    if (timeout_ms < 0 || resolve_path(socket_path, &path) != 0) {
        return KC_EINVAL;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return KC_ENOMEM;
    }
    c->fd = -1;
    client_own(c);
    c->timeout_ms = timeout_ms == 0 ? CLIENT_DEFAULT_TIMEOUT_MS : timeout_ms;
    c->spin_us = cpus_available() > 1 ? CLIENT_DEFAULT_SPIN_US : 0;
    c->next_id = 1;
    kc_buf_init(&c->rx, 0);
    kc_buf_init(&c->tx, CLIENT_TX_MAX);
    set_max_frame(c, PROTO_DEFAULT_MAX_FRAME);
    snprintf(c->path, sizeof(c->path), "%s", path);
    *out = c;
    return 0;
}

int
kc_client_set_spin(struct kc_client *c, int spin_us)
{
    if (c == NULL || spin_us < 0 || spin_us > CLIENT_MAX_SPIN_US) {
        return KC_EINVAL;
    }
    c->spin_us = spin_us;
    return 0;
}

int
kc_client_connect(struct kc_client *c)
{
    if (c == NULL) {
        return KC_EINVAL;
    }
    c->err[0] = '\0';
    client_spin_reset(c);
    return call_end(c, client_ensure(c, client_now_ms() + c->timeout_ms));
}

int
kc_client_new(const char *socket_path, int timeout_ms, struct kc_client **out)
{
    struct kc_client *c = NULL;
    int r;

    if (out == NULL) {
        return KC_EINVAL;
    }
    *out = NULL;
    if ((r = kc_client_open(socket_path, timeout_ms, &c)) != 0) {
        return r;
    }
    if ((r = kc_client_connect(c)) != 0) {
        kc_client_free(c);
        return r;
    }
    *out = c;
    return 0;
}

void
kc_client_free(struct kc_client *c)
{
    if (c == NULL) {
        return;
    }
    /* A forked child closing its inherited copy does not affect the
     * parent's connection, so no pid check is needed here. */
    client_disconnect(c);
    async_free_all(c);
    kc_wipe(c->err, sizeof(c->err));
    free(c);
}

const char *
kc_client_last_error(const struct kc_client *c)
{
    if (c == NULL) {
        return "no client";
    }
    return c->err[0] != '\0' ? c->err : "no error";
}

const char *
kc_client_agent(const struct kc_client *c)
{
    if (c == NULL || c->fd < 0) {
        return "";
    }
    return c->agent;
}

const char *
kc_client_socket_path(const struct kc_client *c)
{
    return c != NULL ? c->path : "";
}

int
kc_ping(struct kc_client *c)
{
    struct reply rep = {.live = false};
    struct kc_buf req;
    msgpack_packer pk;
    size_t mark = 0;
    uint64_t id = 0;
    int64_t deadline = 0;
    int r;

    if (c == NULL) {
        return KC_EINVAL;
    }
    if ((r = call_begin(c, &req, &mark, &pk, "ping", 0, 0, &id,
                        &deadline)) != 0 ||
        (r = client_req_end(c, &req, mark)) != 0) {
        goto out;
    }
    r = client_call(c, &req, id, deadline, &rep);
out:
    client_reply_done(c, &rep);
    kc_buf_clear(&req);
    return call_end(c, r);
}

/* Packed size of the "context" field, or SIZE_MAX when ctx is invalid. */
size_t
client_context_size(const struct kc_context_pair *ctx, size_t nctx)
{
    size_t i, n;

    if ((nctx > 0 && ctx == NULL) || nctx > UINT32_MAX) {
        return SIZE_MAX;
    }
    n = client_mp_str_size(7) + client_mp_map_size(nctx);
    for (i = 0; i < nctx; i++) {
        if (ctx[i].key == NULL || ctx[i].value == NULL) {
            return SIZE_MAX;
        }
        n = client_sat_add(n, client_mp_str_size(strlen(ctx[i].key)));
        n = client_sat_add(n, client_mp_str_size(strlen(ctx[i].value)));
    }
    return n;
}

void
client_pack_context(msgpack_packer *pk, const struct kc_context_pair *ctx,
             size_t nctx)
{
    size_t i;

    proto_pack_cstr(pk, "context");
    msgpack_pack_map(pk, nctx);
    for (i = 0; i < nctx; i++) {
        proto_pack_cstr(pk, ctx[i].key);
        proto_pack_cstr(pk, ctx[i].value);
    }
}

/* Copy a bin result field into a kc_free-able buffer. */
static int
client_take_bin(struct kc_client *c, const struct reply *rep, const char *field,
         uint8_t **out, size_t *out_len)
{
    const uint8_t *p = NULL;
    size_t n = 0;

    if (proto_get_bin(&rep->u.data, field, true, &p, &n) != 0) {
        client_set_err(c, "agent reply lacks the '%s' field", field);
        return KC_EPROTO;
    }
    if ((*out = kcmem_dup(p, n, 0)) == NULL) {
        return KC_ENOMEM;
    }
    *out_len = n;
    return 0;
}

int
kc_encrypt(struct kc_client *c, const char *alias,
           const struct kc_context_pair *ctx, size_t nctx, const uint8_t *pt,
           size_t pt_len, uint8_t **ct, size_t *ct_len)
{
    struct reply rep = {.live = false};
    struct kc_buf req;
    msgpack_packer pk;
    size_t mark = 0, fsize;
    uint64_t id = 0;
    int64_t deadline = 0;
    int r;

    if (ct != NULL) {
        *ct = NULL;
    }
    if (ct_len != NULL) {
        *ct_len = 0;
    }
    if (c == NULL || alias == NULL || ct == NULL || ct_len == NULL ||
        (pt == NULL && pt_len > 0) ||
        (fsize = client_context_size(ctx, nctx)) == SIZE_MAX) {
        return KC_EINVAL;
    }
    fsize = client_sat_add(fsize, client_mp_str_size(3) + client_mp_str_size(9));
    fsize = client_sat_add(fsize, client_mp_str_size(strlen(alias)));
    fsize = client_sat_add(fsize, client_mp_bin_size(pt_len));
    if ((r = call_begin(c, &req, &mark, &pk, "encrypt", 3, fsize, &id,
                        &deadline)) != 0) {
        goto out;
    }
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, alias);
    proto_pack_cstr(&pk, "plaintext");
    proto_pack_bin(&pk, pt_len > 0 ? pt : (const uint8_t *)"", pt_len);
    client_pack_context(&pk, ctx, nctx);
    if ((r = client_req_end(c, &req, mark)) != 0 ||
        (r = client_call(c, &req, id, deadline, &rep)) != 0) {
        goto out;
    }
    r = client_take_bin(c, &rep, "ciphertext", ct, ct_len);
out:
    client_reply_done(c, &rep);
    kc_buf_clear(&req);
    return call_end(c, r);
}

int
kc_decrypt(struct kc_client *c, const uint8_t *ct, size_t ct_len,
           const struct kc_context_pair *ctx, size_t nctx, uint8_t **pt,
           size_t *pt_len)
{
    struct reply rep = {.live = false};
    struct kc_buf req;
    msgpack_packer pk;
    size_t mark = 0, fsize;
    uint64_t id = 0;
    int64_t deadline = 0;
    int r;

    if (pt != NULL) {
        *pt = NULL;
    }
    if (pt_len != NULL) {
        *pt_len = 0;
    }
    if (c == NULL || pt == NULL || pt_len == NULL ||
        (ct == NULL && ct_len > 0) ||
        (fsize = client_context_size(ctx, nctx)) == SIZE_MAX) {
        return KC_EINVAL;
    }
    if (nctx == 0) {
        fsize = 0;
    }
    fsize = client_sat_add(fsize, client_mp_str_size(10) + client_mp_bin_size(ct_len));
    if ((r = call_begin(c, &req, &mark, &pk, "decrypt", nctx > 0 ? 2 : 1,
                        fsize, &id, &deadline)) != 0) {
        goto out;
    }
    proto_pack_cstr(&pk, "ciphertext");
    proto_pack_bin(&pk, ct_len > 0 ? ct : (const uint8_t *)"", ct_len);
    if (nctx > 0) {
        client_pack_context(&pk, ctx, nctx);
    }
    if ((r = client_req_end(c, &req, mark)) != 0 ||
        (r = client_call(c, &req, id, deadline, &rep)) != 0) {
        goto out;
    }
    r = client_take_bin(c, &rep, "plaintext", pt, pt_len);
out:
    client_reply_done(c, &rep);
    kc_buf_clear(&req);
    return call_end(c, r);
}

/*
 * Send op (no fields) and return, as JSON, the reply's map field (or,
 * with field NULL, the whole reply map).
 */
static int
call_fieldless_json(struct kc_client *c, const char *op, const char *field,
                    char **json)
{
    struct reply rep = {.live = false};
    const msgpack_object *obj = NULL;
    struct kc_buf req;
    msgpack_packer pk;
    size_t mark = 0;
    uint64_t id = 0;
    int64_t deadline = 0;
    int r;

    if (json != NULL) {
        *json = NULL;
    }
    if (c == NULL || op == NULL || json == NULL) {
        return KC_EINVAL;
    }
    if ((r = call_begin(c, &req, &mark, &pk, op, 0, 0, &id, &deadline)) !=
            0 ||
        (r = client_req_end(c, &req, mark)) != 0 ||
        (r = client_call(c, &req, id, deadline, &rep)) != 0) {
        goto out;
    }
    obj = &rep.u.data;
    if (field != NULL && proto_get_map(&rep.u.data, field, true, &obj) != 0) {
        client_set_err(c, "agent reply lacks the '%s' map", field);
        r = KC_EPROTO;
        goto out;
    }
    if ((r = stats_to_json(obj, json)) == KC_EPROTO) {
        client_set_err(c, "agent reply cannot be expressed as JSON");
    }
out:
    client_reply_done(c, &rep);
    kc_buf_clear(&req);
    return call_end(c, r);
}

int
kc_stats_json(struct kc_client *c, char **json)
{
    return call_fieldless_json(c, "stats", "stats", json);
}

int
kc_call_json(struct kc_client *c, const char *op, char **json)
{
    return call_fieldless_json(c, op, NULL, json);
}
