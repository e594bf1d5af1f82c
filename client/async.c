/*
 * async.c - many requests in flight on one connection: submit, step,
 * collect (see keycache.h, "many requests on one connection").
 *
 * Submitted frames are appended to c->tx (a wiping buffer) and sent by
 * kc_client_step, kc_client_wait or the next blocking call, so a burst of
 * submits costs one send(2).  Each request waits in a list in submit
 * order; replies, matched by id, turn requests into completions, which
 * wait in a second list until the caller takes them.  Since every
 * request gets the same timeout at submit, the list is also in deadline
 * order and expiry only looks at its head.
 *
 * Payload copies: request bytes are wiped from tx once sent, reply bytes
 * from rx once consumed (client_reply_done); results are handed out in
 * kc_free-able buffers, which wipe.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "keycache.h"
#include "wire.h"

/* Past this many unsent bytes a submit tries to send at once. */
#define ASYNC_EAGER_SEND ((size_t)256 << 10)
/* A tx buffer grown past this is freed (not kept) once drained. */
#define ASYNC_TX_KEEP ((size_t)1 << 20)

struct async_req {
    uint64_t id;
    void *user;
    enum kc_op op;
    size_t nitems;
    int64_t deadline;
    struct async_req *prev;
    struct async_req *next;
};

struct async_done {
    struct kc_completion cp;
    struct async_done *next;
};

/* ---- completions ------------------------------------------------------ */

static void
done_push(struct kc_client *c, struct async_done *d)
{
    d->next = NULL;
    if (c->done_tail != NULL) {
        c->done_tail->next = d;
    } else {
        c->done_head = d;
    }
    c->done_tail = d;
    c->ndone++;
}

/* Take the oldest completion with this id (0: any) into *out. */
static bool
done_take(struct kc_client *c, uint64_t id, struct kc_completion *out)
{
    struct async_done *d, *prev = NULL;

    for (d = c->done_head; d != NULL; prev = d, d = d->next) {
        if (id == 0 || d->cp.id == id) {
            break;
        }
    }
    if (d == NULL) {
        return false;
    }
    if (prev != NULL) {
        prev->next = d->next;
    } else {
        c->done_head = d->next;
    }
    if (c->done_tail == d) {
        c->done_tail = prev;
    }
    c->ndone--;
    *out = d->cp;
    free(d);
    return true;
}

void
kc_completion_clear(struct kc_completion *cp)
{
    if (cp == NULL) {
        return;
    }
    kc_free(cp->data);
    kc_free(cp->message);
    kc_item_results_clear(cp->items, cp->nitems);
    free(cp->items);
    memset(cp, 0, sizeof(*cp));
}

void
kc_item_results_clear(struct kc_item_result *results, size_t n)
{
    size_t i;

    if (results == NULL) {
        return;
    }
    for (i = 0; i < n; i++) {
        kc_free(results[i].data);
        results[i].data = NULL;
        results[i].len = 0;
    }
}

/* ---- requests in flight ----------------------------------------------- */

static void
pend_unlink(struct kc_client *c, struct async_req *q)
{
    if (q->prev != NULL) {
        q->prev->next = q->next;
    } else {
        c->pend_head = q->next;
    }
    if (q->next != NULL) {
        q->next->prev = q->prev;
    } else {
        c->pend_tail = q->prev;
    }
    c->npend--;
}

static struct async_req *
pend_find(struct kc_client *c, uint64_t id)
{
    struct async_req *q;

    /* Replies mostly come in order: the head is the usual hit. */
    for (q = c->pend_head; q != NULL; q = q->next) {
        if (q->id == id) {
            return q;
        }
    }
    return NULL;
}

/*
 * A completion record for q with status and nothing else.  NULL only
 * when out of memory: the request then ends without a completion (it
 * leaves kc_client_in_flight all the same).
 */
static struct async_done *
done_from(struct async_req *q, int status)
{
    struct async_done *d;

    if ((d = calloc(1, sizeof(*d))) == NULL) {
        return NULL;
    }
    d->cp.id = q->id;
    d->cp.user = q->user;
    d->cp.op = q->op;
    d->cp.status = status;
    return d;
}

static void
pend_fail(struct kc_client *c, struct async_req *q, int code,
          const char *msg)
{
    struct async_done *d;

    pend_unlink(c, q);
    if ((d = done_from(q, code)) != NULL) {
        if (msg != NULL) {
            d->cp.message = kcmem_dup(msg, strlen(msg), 1);
        }
        done_push(c, d);
    }
    free(q);
}

void
async_fail_all(struct kc_client *c, int code)
{
    const char *msg = c->err[0] != '\0' ? c->err : kc_strerror(code);

    while (c->pend_head != NULL) {
        pend_fail(c, c->pend_head, code, msg);
    }
}

void
async_free_all(struct kc_client *c)
{
    struct kc_completion cp;

    while (done_take(c, 0, &cp)) {
        kc_completion_clear(&cp);
    }
}

/* Requests past their deadline complete with KC_ETIMEOUT. */
static void
pend_expire(struct kc_client *c)
{
    int64_t now;

    if (c->pend_head == NULL) {
        return;
    }
    now = client_now_ms();
    while (c->pend_head != NULL && c->pend_head->deadline <= now) {
        pend_fail(c, c->pend_head, KC_ETIMEOUT,
                  "timed out waiting for the agent's reply");
    }
}

/* ---- replies ---------------------------------------------------------- */

/* {code, message} of an error map into *status and a kc_free string. */
static void
parse_error(const msgpack_object *map, int *status, char **message)
{
    const msgpack_object *err = NULL, *code;
    const char *msg = NULL;
    size_t len = 0;
    char buf[256];

    *status = KC_EPROTO;
    *message = NULL;
    if (proto_get_map(map, "error", true, &err) != 0 ||
        (code = proto_map_get(err, "code")) == NULL ||
        code->type != MSGPACK_OBJECT_NEGATIVE_INTEGER ||
        code->via.i64 < INT32_MIN) {
        return;
    }
    *status = (int)code->via.i64;
    if (proto_get_str(err, "message", false, &msg, &len) == 0) {
        client_copy_clean(buf, sizeof(buf), msg, len);
        *message = kcmem_dup(buf, strlen(buf), 1);
    }
}

/* The ciphertext or plaintext of a successful result map. */
static int
take_payload(const msgpack_object *map, uint8_t **data, size_t *len)
{
    const uint8_t *p = NULL;
    size_t n = 0;

    if (proto_get_bin(map, "ciphertext", true, &p, &n) != 0 &&
        proto_get_bin(map, "plaintext", true, &p, &n) != 0) {
        return KC_EPROTO;
    }
    if ((*data = kcmem_dup(p, n, 0)) == NULL) {
        return KC_ENOMEM;
    }
    *len = n;
    return 0;
}

static bool
map_ok(const msgpack_object *map)
{
    const msgpack_object *ok = proto_map_get(map, "ok");

    return ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN &&
           ok->via.boolean;
}

/* One item of a batch reply. */
static void
batch_item(const msgpack_object *o, struct kc_item_result *it)
{
    char *msg = NULL;

    if (o->type != MSGPACK_OBJECT_MAP) {
        it->status = KC_EPROTO;
        return;
    }
    if (!map_ok(o)) {
        parse_error(o, &it->status, &msg);
        kc_free(msg);
        return;
    }
    it->status = take_payload(o, &it->data, &it->len);
}

static int
batch_results(const msgpack_object *map, size_t nitems,
              struct kc_completion *cp)
{
    const msgpack_object *res = proto_map_get(map, "results");
    size_t i;

    if (res == NULL || res->type != MSGPACK_OBJECT_ARRAY ||
        res->via.array.size != nitems) {
        return KC_EPROTO;
    }
    if ((cp->items = calloc(nitems, sizeof(*cp->items))) == NULL) {
        return KC_ENOMEM;
    }
    cp->nitems = nitems;
    for (i = 0; i < nitems; i++) {
        batch_item(&res->via.array.ptr[i], &cp->items[i]);
    }
    return 0;
}

/* Fill a completion from the reply map of request q. */
static void
complete(struct async_req *q, const msgpack_object *map,
         struct kc_completion *cp)
{
    int r = 0;

    if (!map_ok(map)) {
        parse_error(map, &cp->status, &cp->message);
        return;
    }
    switch (q->op) {
    case KC_OP_ENCRYPT:
    case KC_OP_DECRYPT:
        r = take_payload(map, &cp->data, &cp->len);
        break;
    case KC_OP_BATCH:
        r = batch_results(map, q->nitems, cp);
        break;
    default:
        break;
    }
    if (r != 0) {
        kc_completion_clear(cp);
        cp->id = q->id;
        cp->user = q->user;
        cp->op = q->op;
        cp->status = r;
    }
}

int
async_route(struct kc_client *c, const struct reply *rep)
{
    const msgpack_object *oid = proto_map_get(&rep->u.data, "id");
    struct async_req *q;
    struct async_done *d;

    if (oid == NULL || oid->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        (q = pend_find(c, oid->via.u64)) == NULL) {
        return 0; /* stale: a request that timed out, or not ours */
    }
    if ((d = done_from(q, 0)) == NULL) {
        return KC_ENOMEM;
    }
    complete(q, &rep->u.data, &d->cp);
    pend_unlink(c, q);
    free(q);
    done_push(c, d);
    return 0;
}

/*
 * One reply taken from rx during a step.  A reply with id nil speaks
 * about the connection (the agent closes it next): every request fails
 * with its code.  Returns 0 or a connection error.
 */
static int
step_reply(struct kc_client *c, struct reply *rep)
{
    const msgpack_object *oid = proto_map_get(&rep->u.data, "id");
    int r;

    if (oid == NULL || (oid->type != MSGPACK_OBJECT_NIL &&
                        oid->type != MSGPACK_OBJECT_POSITIVE_INTEGER)) {
        client_set_err(c, "agent reply lacks a valid id");
        return KC_EPROTO;
    }
    if (oid->type == MSGPACK_OBJECT_NIL) {
        r = client_reply_error(c, &rep->u.data);
        return r == 0 ? KC_EPROTO : r;
    }
    return async_route(c, rep);
}

/* ---- sending ---------------------------------------------------------- */

static void
tx_drained(struct kc_client *c)
{
    if (c->tx.cap > ASYNC_TX_KEEP) {
        kc_buf_clear(&c->tx);
    } else {
        kc_wipe(c->tx.data, c->tx.len);
        c->tx.len = 0;
    }
    c->tx_off = 0;
}

/*
 * Move the unsent bytes to the front of tx, wiping what they leave
 * behind.  Without this, a socket that never quite drains would keep
 * every byte ever sent in tx until it hit CLIENT_TX_MAX.
 */
static void
tx_compact(struct kc_client *c)
{
    size_t left = c->tx.len - c->tx_off;

    if (c->tx_off == 0) {
        return;
    }
    memmove(c->tx.data, c->tx.data + c->tx_off, left);
    kc_wipe(c->tx.data + left, c->tx_off);
    c->tx.len = left;
    c->tx_off = 0;
}

/* Send queued bytes; deadline < 0: only what the socket takes now. */
static int
tx_send(struct kc_client *c, int64_t deadline)
{
    ssize_t w;
    int r;

    while (c->tx_off < c->tx.len) {
        w = send(c->fd, c->tx.data + c->tx_off, c->tx.len - c->tx_off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->tx_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (deadline < 0) {
                return 0;
            }
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
    tx_drained(c);
    return 0;
}

int
async_flush(struct kc_client *c, int64_t deadline)
{
    if (c->tx_off >= c->tx.len) {
        return 0;
    }
    return tx_send(c, deadline);
}

/* ---- submitting ------------------------------------------------------- */

struct submit {
    struct async_req *q;
    msgpack_packer pk;
    size_t start, mark, body;
};

/*
 * Start a frame {id, op, ...nfields} in c->tx whose fields take exactly
 * fields_size bytes.  Connects first if needed.
 */
static int
submit_begin(struct kc_client *c, struct submit *s, enum kc_op op,
             const char *opname, uint32_t nfields, size_t fields_size,
             void *user)
{
    size_t body;
    int r;

    c->err[0] = '\0';
    s->q = NULL;
    client_spin_reset(c); /* for the hello, should this call connect */
    if ((r = client_ensure(c, client_now_ms() + c->timeout_ms)) != 0) {
        return r;
    }
    body = client_mp_map_size(2 + (size_t)nfields) + client_mp_str_size(2) +
           client_mp_uint_size(c->next_id) + client_mp_str_size(2) +
           client_mp_str_size(strlen(opname));
    body = client_sat_add(body, fields_size);
    if (body > c->max_frame) {
        client_set_err(c, "request larger than the agent's limit of %zu "
                       "bytes", c->max_frame);
        return KC_ETOOBIG;
    }
    if (c->tx.len - c->tx_off + PROTO_FRAME_HDR + body > CLIENT_TX_MAX) {
        client_set_err(c, "too many unsent requests: step the client");
        return KC_EBUSY;
    }
    if ((s->q = calloc(1, sizeof(*s->q))) == NULL) {
        return KC_ENOMEM;
    }
    /* Reuse the room of sent bytes before growing (amortized: only when
     * the buffer is full). */
    if (c->tx.len + PROTO_FRAME_HDR + body > c->tx.cap) {
        tx_compact(c);
    }
    if ((r = kc_buf_reserve(&c->tx, PROTO_FRAME_HDR + body)) != 0) {
        free(s->q);
        s->q = NULL;
        if (r == KC_ETOOBIG) {
            client_set_err(c, "too many unsent requests: step the client");
            return KC_EBUSY;
        }
        return r;
    }
    s->start = c->tx.len;
    s->body = body;
    s->q->id = c->next_id;
    s->q->user = user;
    s->q->op = op;
    s->q->deadline = client_now_ms() + c->timeout_ms;
    if ((r = proto_frame_begin(&c->tx, &s->mark)) != 0) {
        free(s->q); /* cannot happen: the space is reserved */
        s->q = NULL;
        return r;
    }
    c->next_id++;
    proto_packer_init(&s->pk, &c->tx);
    msgpack_pack_map(&s->pk, 2 + nfields);
    proto_pack_cstr(&s->pk, "id");
    msgpack_pack_uint64(&s->pk, s->q->id);
    proto_pack_cstr(&s->pk, "op");
    proto_pack_cstr(&s->pk, opname);
    return 0;
}

/* Finish the frame and put the request in flight. */
static int
submit_end(struct kc_client *c, struct submit *s, uint64_t *id)
{
    struct async_req *q = s->q;

    if (c->tx.len != s->start + PROTO_FRAME_HDR + s->body ||
        proto_frame_end(&c->tx, s->mark, c->max_frame) != 0) {
        kc_buf_truncate(&c->tx, s->start);
        free(q);
        client_set_err(c, "internal error: request size mismatch");
        return KC_EPROTO;
    }
    q->prev = c->pend_tail;
    if (c->pend_tail != NULL) {
        c->pend_tail->next = q;
    } else {
        c->pend_head = q;
    }
    c->pend_tail = q;
    c->npend++;
    if (id != NULL) {
        *id = q->id;
    }
    if (c->tx.len - c->tx_off >= ASYNC_EAGER_SEND &&
        tx_send(c, -1) != 0) {
        async_fail_all(c, KC_ECLOSED);
        client_disconnect(c);
    }
    return 0;
}

/* Packed size of an encrypt's or decrypt's fields (SIZE_MAX: invalid). */
static size_t
item_fields_size(enum kc_op op, const char *alias,
                 const struct kc_context_pair *ctx, size_t nctx,
                 size_t len, uint32_t *nfields)
{
    size_t n = client_context_size(ctx, nctx);

    if (n == SIZE_MAX) {
        return SIZE_MAX;
    }
    if (op == KC_OP_ENCRYPT) {
        if (alias == NULL) {
            return SIZE_MAX;
        }
        *nfields = 3;
        n = client_sat_add(n, client_mp_str_size(3) +
                                  client_mp_str_size(strlen(alias)));
        return client_sat_add(n, client_mp_str_size(9) +
                                     client_mp_bin_size(len));
    }
    if (op != KC_OP_DECRYPT) {
        return SIZE_MAX;
    }
    *nfields = nctx > 0 ? 2 : 1;
    if (nctx == 0) {
        n = 0;
    }
    return client_sat_add(n, client_mp_str_size(10) +
                                 client_mp_bin_size(len));
}

static void
pack_item_fields(msgpack_packer *pk, const struct kc_batch_item *it)
{
    const uint8_t *p = it->len > 0 ? it->data : (const uint8_t *)"";

    if (it->op == KC_OP_ENCRYPT) {
        proto_pack_cstr(pk, "key");
        proto_pack_cstr(pk, it->alias);
        proto_pack_cstr(pk, "plaintext");
        proto_pack_bin(pk, p, it->len);
        client_pack_context(pk, it->ctx, it->nctx);
        return;
    }
    proto_pack_cstr(pk, "ciphertext");
    proto_pack_bin(pk, p, it->len);
    if (it->nctx > 0) {
        client_pack_context(pk, it->ctx, it->nctx);
    }
}

static int
submit_item(struct kc_client *c, const struct kc_batch_item *it, void *user,
            uint64_t *id)
{
    struct submit s;
    uint32_t nfields = 0;
    size_t fsize;
    int r;

    if (c == NULL || (it->data == NULL && it->len > 0)) {
        return KC_EINVAL;
    }
    fsize = item_fields_size(it->op, it->alias, it->ctx, it->nctx, it->len,
                             &nfields);
    if (fsize == SIZE_MAX) {
        return KC_EINVAL;
    }
    if ((r = submit_begin(c, &s, it->op,
                          it->op == KC_OP_ENCRYPT ? "encrypt" : "decrypt",
                          nfields, fsize, user)) != 0) {
        return r;
    }
    pack_item_fields(&s.pk, it);
    return submit_end(c, &s, id);
}

int
kc_submit_encrypt(struct kc_client *c, const char *alias,
                  const struct kc_context_pair *ctx, size_t nctx,
                  const uint8_t *pt, size_t pt_len, void *user, uint64_t *id)
{
    struct kc_batch_item it = {KC_OP_ENCRYPT, alias, ctx, nctx, pt, pt_len};

    return submit_item(c, &it, user, id);
}

int
kc_submit_decrypt(struct kc_client *c, const uint8_t *ct, size_t ct_len,
                  const struct kc_context_pair *ctx, size_t nctx, void *user,
                  uint64_t *id)
{
    struct kc_batch_item it = {KC_OP_DECRYPT, NULL, ctx, nctx, ct, ct_len};

    return submit_item(c, &it, user, id);
}

int
kc_submit_ping(struct kc_client *c, void *user, uint64_t *id)
{
    struct submit s;
    int r;

    if (c == NULL) {
        return KC_EINVAL;
    }
    if ((r = submit_begin(c, &s, KC_OP_PING, "ping", 0, 0, user)) != 0) {
        return r;
    }
    return submit_end(c, &s, id);
}

int
kc_submit_batch(struct kc_client *c, const struct kc_batch_item *items,
                size_t n, void *user, uint64_t *id)
{
    struct submit s;
    uint32_t nf = 0;
    size_t i, fsize, isize;
    int r;

    if (c == NULL || items == NULL || n == 0 || n > KC_BATCH_MAX) {
        return KC_EINVAL;
    }
    /* "items": array of maps {op, ...fields}. */
    fsize = client_mp_str_size(5) + (n < 16 ? 1 : 3);
    for (i = 0; i < n; i++) {
        if (items[i].data == NULL && items[i].len > 0) {
            return KC_EINVAL;
        }
        isize = item_fields_size(items[i].op, items[i].alias, items[i].ctx,
                                 items[i].nctx, items[i].len, &nf);
        if (isize == SIZE_MAX) {
            return KC_EINVAL;
        }
        isize = client_sat_add(isize, client_mp_map_size(1 + nf) +
                                          client_mp_str_size(2) +
                                          client_mp_str_size(7));
        fsize = client_sat_add(fsize, isize);
    }
    if ((r = submit_begin(c, &s, KC_OP_BATCH, "batch", 1, fsize, user)) !=
        0) {
        return r;
    }
    s.q->nitems = n;
    proto_pack_cstr(&s.pk, "items");
    msgpack_pack_array(&s.pk, n);
    for (i = 0; i < n; i++) {
        item_fields_size(items[i].op, items[i].alias, items[i].ctx,
                         items[i].nctx, items[i].len, &nf);
        msgpack_pack_map(&s.pk, 1 + nf);
        proto_pack_cstr(&s.pk, "op");
        proto_pack_cstr(&s.pk, items[i].op == KC_OP_ENCRYPT ? "encrypt"
                                                            : "decrypt");
        pack_item_fields(&s.pk, &items[i]);
    }
    return submit_end(c, &s, id);
}

/* ---- stepping and collecting ------------------------------------------ */

int
kc_client_fd(const struct kc_client *c)
{
    return c != NULL ? c->fd : -1;
}

short
kc_client_events(const struct kc_client *c)
{
    short ev = 0;

    if (c == NULL || c->fd < 0) {
        return 0;
    }
    if (c->npend > 0) {
        ev |= POLLIN;
    }
    if (c->tx_off < c->tx.len) {
        ev |= POLLOUT;
    }
    return ev;
}

size_t
kc_client_in_flight(const struct kc_client *c)
{
    return c != NULL ? c->npend : 0;
}

/* Read and route every reply that has arrived. */
static int
step_read(struct kc_client *c)
{
    struct reply rep = {.live = false};
    int r;

    for (;;) {
        r = client_frame_take(c, &rep);
        if (r == 0) {
            r = step_reply(c, &rep);
            client_reply_done(c, &rep);
            if (r != 0) {
                return r;
            }
            continue;
        }
        client_reply_done(c, &rep);
        if (r != 1) {
            return r;
        }
        r = client_recv_some(c, -1);
        if (r == KC_EAGAIN_INTERNAL) {
            return 0;
        }
        if (r != 0) {
            return r;
        }
    }
}

int
kc_client_step(struct kc_client *c)
{
    int r = 0;

    if (c == NULL) {
        return KC_EINVAL;
    }
    if (c->fd >= 0 && client_forked(c)) {
        client_set_err(c, "connection belongs to the parent process");
        client_disconnect(c); /* completes the copies with KC_ECLOSED */
    }
    if (c->fd >= 0 && ((r = tx_send(c, -1)) != 0 ||
                       (c->npend > 0 && (r = step_read(c)) != 0))) {
        async_fail_all(c, r);
        client_disconnect(c);
    }
    pend_expire(c);
    if (c->npend == 0 && c->rx.len == 0) {
        kc_buf_clear(&c->rx);
        c->rx_off = 0;
    }
    return r != 0 ? r : (int)(c->ndone > INT32_MAX ? INT32_MAX : c->ndone);
}

int
kc_client_next(struct kc_client *c, struct kc_completion *out)
{
    if (c == NULL || out == NULL) {
        return 0;
    }
    return done_take(c, 0, out) ? 1 : 0;
}

/* Wait for the completion of id (0: any) until deadline (< 0: none). */
static int
wait_for(struct kc_client *c, uint64_t id, struct kc_completion *out,
         int64_t deadline)
{
    struct pollfd pfd;
    int64_t until, now;

    client_spin_reset(c);
    for (;;) {
        if (done_take(c, id, out)) {
            return 0;
        }
        if (c->npend == 0) {
            client_set_err(c, "no request in flight");
            return KC_EINVAL;
        }
        (void)kc_client_step(c);
        if (done_take(c, id, out)) {
            return 0;
        }
        now = client_now_ms();
        if (deadline >= 0 && now >= deadline) {
            client_set_err(c, "no completion within the wait");
            return KC_ETIMEOUT;
        }
        if (c->fd < 0 || c->npend == 0) {
            continue;
        }
        until = c->pend_head->deadline;
        if (deadline >= 0 && deadline < until) {
            until = deadline;
        }
        pfd.fd = c->fd;
        pfd.events = kc_client_events(c);
        pfd.revents = 0;
        if (until > now && client_spin(c, &pfd, until) == 0 &&
            (now = client_now_ms()) < until) {
            (void)poll(&pfd, 1, (int)(until - now));
        }
    }
}

int
kc_client_wait(struct kc_client *c, struct kc_completion *out,
               int timeout_ms)
{
    if (c == NULL || out == NULL) {
        return KC_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    return wait_for(c, 0, out,
                    timeout_ms < 0 ? -1 : client_now_ms() + timeout_ms);
}

int
kc_batch(struct kc_client *c, const struct kc_batch_item *items, size_t n,
         struct kc_item_result *results)
{
    struct kc_completion cp;
    uint64_t id = 0;
    size_t i;
    int r;

    if (results == NULL) {
        return KC_EINVAL;
    }
    memset(results, 0, n * sizeof(*results));
    if ((r = kc_submit_batch(c, items, n, NULL, &id)) != 0) {
        return r;
    }
    memset(&cp, 0, sizeof(cp));
    if ((r = wait_for(c, id, &cp, -1)) != 0) {
        return r;
    }
    if ((r = cp.status) != 0) {
        if (cp.message != NULL) {
            client_copy_clean(c->err, sizeof(c->err), cp.message,
                              strlen(cp.message));
        }
    } else {
        for (i = 0; i < n && i < cp.nitems; i++) {
            results[i] = cp.items[i];
            cp.items[i].data = NULL;
        }
    }
    kc_completion_clear(&cp);
    return r;
}
