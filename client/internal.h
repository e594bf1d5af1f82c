/*
 * internal.h - helpers shared by the client library's own files.  Not
 * installed; nothing here is exported from libkeycache.so.
 */
#ifndef KC_CLIENT_INTERNAL_H
#define KC_CLIENT_INTERNAL_H

#include <msgpack.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "kc_buf.h"
#include "keycache.h"

/* Internal status: a non-blocking receive found nothing to read. */
#define KC_EAGAIN_INTERNAL 2

/* Unsent request bytes a client may queue (submit returns KC_EBUSY
 * beyond it until the caller lets kc_client_step send). */
#define CLIENT_TX_MAX ((size_t)64 << 20)

struct async_req;  /* a submitted request awaiting its reply (async.c) */
struct async_done; /* a completion not yet collected (async.c) */

struct kc_client {
    int fd;               /* -1 when not connected */
    unsigned long owner;  /* fork generation that opened fd (client.c) */
    int timeout_ms;
    int spin_us;          /* busy-poll budget per call (client_spin) */
    int64_t spin_left_ns; /* what this call has left of it */
    uint64_t next_id;
    size_t max_frame;     /* agent's request body limit, from hello */
    struct kc_buf rx;     /* received bytes; rx.data[rx_off..len) unread */
    size_t rx_off;
    struct kc_buf tx;     /* submitted frames; tx.data[tx_off..len) unsent */
    size_t tx_off;
    struct async_req *pend_head; /* submitted, oldest first */
    struct async_req *pend_tail;
    size_t npend;
    struct async_done *done_head; /* completions, oldest first */
    struct async_done *done_tail;
    size_t ndone;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char agent[128];      /* agent's self-description from hello */
    char err[256];        /* message of the last failure */
};

/* A reply held in c->rx: u borrows from rx until client_reply_done. */
struct reply {
    msgpack_unpacked u;
    size_t total; /* frame bytes to consume from rx */
    bool live;
};

/* ---- client.c: the connection and request framing ---- */

/*
 * client_own - record that c's connection belongs to this process;
 * client_forked - true if this process is a fork of the one that did.
 */
void client_own(struct kc_client *c);
bool client_forked(const struct kc_client *c);

__attribute__((format(printf, 2, 3))) void
client_set_err(struct kc_client *c, const char *fmt, ...);
void client_copy_clean(char *dst, size_t dst_size, const char *p, size_t n);
int64_t client_now_ms(void);
/* client_disconnect - close; every submitted request completes with
 * KC_ECLOSED. */
void client_disconnect(struct kc_client *c);
/* client_ensure - connect (and hello) if needed, before deadline. */
int client_ensure(struct kc_client *c, int64_t deadline);
int client_wait_fd(struct kc_client *c, short events, int64_t deadline);
/* client_spin_reset - give the call now starting its spin budget. */
void client_spin_reset(struct kc_client *c);
int client_spin(struct kc_client *c, struct pollfd *pfd, int64_t deadline);
/* client_recv_some - read into rx; deadline < 0 never waits and returns
 * KC_EAGAIN_INTERNAL when nothing is there. */
int client_recv_some(struct kc_client *c, int64_t deadline);
int client_send_all(struct kc_client *c, const uint8_t *p, size_t n,
                    int64_t deadline);
int client_frame_take(struct kc_client *c, struct reply *rep);
void client_reply_done(struct kc_client *c, struct reply *rep);
int client_check_reply(struct kc_client *c, const msgpack_object *map,
                       uint64_t id, bool *conn_err);
int client_reply_error(struct kc_client *c, const msgpack_object *map);
int client_req_begin(struct kc_client *c, struct kc_buf *b, size_t *mark,
                     msgpack_packer *pk, const char *op, uint32_t nfields,
                     size_t fields_size, uint64_t *id);
int client_req_end(struct kc_client *c, struct kc_buf *b, size_t mark);
size_t client_sat_add(size_t a, size_t b);
size_t client_mp_str_size(size_t n);
size_t client_mp_bin_size(size_t n);
size_t client_mp_map_size(size_t n);
size_t client_mp_uint_size(uint64_t v);
size_t client_context_size(const struct kc_context_pair *ctx, size_t nctx);
void client_pack_context(msgpack_packer *pk,
                         const struct kc_context_pair *ctx, size_t nctx);
size_t client_reply_max(const struct kc_client *c);

/* ---- async.c: submitted requests and completions ---- */

/* async_route - rep answers a submitted request: queue its completion.
 * Replies to unknown ids are ignored.  0 or KC_ENOMEM. */
int async_route(struct kc_client *c, const struct reply *rep);
/* async_flush - send every queued frame before deadline. */
int async_flush(struct kc_client *c, int64_t deadline);
/* async_fail_all - complete every submitted request with code. */
void async_fail_all(struct kc_client *c, int code);
/* async_free_all - drop uncollected completions (at kc_client_free). */
void async_free_all(struct kc_client *c);

/*
 * kcmem_alloc - allocate n bytes that kc_free() can release: the size is
 * recorded in a hidden header so kc_free wipes exactly what was handed
 * out.  Returns NULL only when out of memory (or n is absurd).
 * The caller owns the result and frees it with kc_free.
 */
void *kcmem_alloc(size_t n);

/*
 * kcmem_dup - kcmem_alloc(n) and copy n bytes of p into it; when nul is
 * true one extra byte is allocated and set to '\0' (for strings).
 * Returns NULL when out of memory.  Free with kc_free.
 */
void *kcmem_dup(const void *p, size_t n, int nul);

/*
 * stats_to_json - render a msgpack object (the agent's stats map) as
 * compact JSON text.  Returns 0 with *out owned by the caller (kc_free),
 * KC_EPROTO when the object cannot be expressed (non-string map key,
 * nesting too deep), KC_ENOMEM.
 */
int stats_to_json(const msgpack_object *o, char **out);

#endif /* KC_CLIENT_INTERNAL_H */
