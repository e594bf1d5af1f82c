/*
 * server.c - the listening socket, connections and signals, on one
 * libevent loop.
 *
 * Each connection is a bufferevent.  Complete frames are dispatched in
 * place from the input evbuffer; their replies gather in the connection's
 * wiping reply buffer and go to the socket together when the read is
 * done (straight to the socket when nothing is queued before them, else
 * through the output evbuffer).  libevent's own allocations go through a
 * wiping allocator, so the evbuffer chains that carried plaintext are
 * zeroed when freed.  A connection whose unread replies
 * pile up past OUT_HIGH stops being read until they drain, so a client
 * that never reads cannot grow the agent's memory without bound.
 */
#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <libgen.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "reload.h"
#include "wire.h"

#define OUT_HIGH          (256u << 10) /* pause reading past 256 KiB queued */
#define SHUTDOWN_GRACE_S  10         /* force exit after this long */
#define ACCEPT_RETRY_MS   200        /* back off after EMFILE/ENFILE */
#define SHUTDOWN_DRAIN_MAX (8u << 20) /* bytes read per client at stop */
#define REPLIES_FLUSH     (16u << 10) /* hand replies to the socket past this */
#define REPLIES_KEEP      (64u << 10) /* keep a reply buffer up to this size */
#define REPLIES_KEEP_BUSY (1024u << 10) /* ... or this, while big replies
                                          * keep coming */

enum timer_mode {
    TIMER_NONE,
    TIMER_FRAME, /* a frame has begun: it must finish by read_timeout */
    TIMER_IDLE,  /* nothing in flight: close after idle_timeout */
};

struct conn {
    struct server *srv;
    struct bufferevent *bev;
    struct event *timer;
    enum timer_mode timer_mode;
    struct authz_peer peer;
    bool closing;    /* free once the output has drained */
    bool draining;   /* closing at shutdown: still answer the complete
                      * frames already read, as backpressure allows */
    bool paused;     /* reading stopped for backpressure */
    size_t inflight; /* requests waiting on a key provider */
    /* Replies to the frames of the current read, written together when
     * the read is done (one send for a pipelined burst).  Wiped after. */
    struct kc_buf replies;
    struct conn *prev;
    struct conn *next;
};

struct server {
    struct agent *a;
    uint64_t refused; /* connections refused at max_connections */
    const char *path;
    struct evconnlistener *lev;
    struct conn *conns;
    struct event *sig_term;
    struct event *sig_int;
    struct event *sig_hup;
    struct event *accept_retry;
    struct event *force_exit;
};

/* ---- wiping allocator for libevent ----------------------------------- */

#define WIPE_HDR 16 /* keeps the user block 16-byte aligned */

static void *
wipe_malloc(size_t n)
{
    uint8_t *p;

    if (n > SIZE_MAX - WIPE_HDR || (p = malloc(n + WIPE_HDR)) == NULL) {
        return NULL;
    }
    memcpy(p, &n, sizeof(n));
    return p + WIPE_HDR;
}

static void
wipe_free(void *q)
{
    uint8_t *p;
    size_t n;

    if (q == NULL) {
        return;
    }
    p = (uint8_t *)q - WIPE_HDR;
    memcpy(&n, p, sizeof(n));
    sodium_memzero(p, n + WIPE_HDR);
    free(p);
}

static void *
wipe_realloc(void *q, size_t n)
{
    size_t old;
    void *r;

    if (q == NULL) {
        return wipe_malloc(n);
    }
    if (n == 0) {
        wipe_free(q);
        return NULL;
    }
    if ((r = wipe_malloc(n)) == NULL) {
        return NULL;
    }
    memcpy(&old, (uint8_t *)q - WIPE_HDR, sizeof(old));
    memcpy(r, q, old < n ? old : n);
    wipe_free(q);
    return r;
}

void
server_wiping_allocator_install(void)
{
    event_set_mem_functions(wipe_malloc, wipe_realloc, wipe_free);
}

/* ---- listening socket ------------------------------------------------ */

static int
check_parent_dir(const char *path, char *err, size_t errlen)
{
    char *copy, *dir;
    struct stat st;
    int r = 0;

    if ((copy = strdup(path)) == NULL) {
        return KC_ENOMEM;
    }
    dir = dirname(copy);
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "socket directory %s: %s", dir,
                 strerror(errno));
        r = KC_ESYS;
    } else if ((st.st_mode & S_IWOTH) != 0 && (st.st_mode & S_ISVTX) == 0) {
        snprintf(err, errlen,
                 "socket directory %s is world-writable without the sticky "
                 "bit: anyone could replace the socket", dir);
        r = KC_EINVAL;
    }
    free(copy);
    return r;
}

/* Remove a socket file left by a dead agent; refuse a live one. */
static int
clear_stale_socket(const struct sockaddr_un *sun, char *err, size_t errlen)
{
    struct stat st;
    int fd, r;

    if (lstat(sun->sun_path, &st) != 0) {
        return errno == ENOENT ? 0 : KC_ESYS;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket; not replacing "
                 "it", sun->sun_path);
        return KC_EINVAL;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return KC_ESYS;
    }
    r = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
    close(fd);
    if (r == 0) {
        snprintf(err, errlen, "another agent is already listening on %s",
                 sun->sun_path);
        return KC_EBUSY;
    }
    if (errno != ECONNREFUSED) {
        snprintf(err, errlen, "cannot probe existing socket %s: %s",
                 sun->sun_path, strerror(errno));
        return KC_ESYS;
    }
    if (unlink(sun->sun_path) != 0) {
        snprintf(err, errlen, "cannot remove stale socket %s: %s",
                 sun->sun_path, strerror(errno));
        return KC_ESYS;
    }
    log_info("removed stale socket %s left by a previous agent",
             sun->sun_path);
    return 0;
}

int
server_socket_open(const char *path, mode_t mode, gid_t gid, int *out,
                   char *err, size_t errlen)
{
    struct sockaddr_un sun;
    mode_t old_umask;
    int fd, r;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen,
                 "socket path too long: %zu bytes; a Unix socket path must "
                 "be shorter than %zu", strlen(path), sizeof(sun.sun_path));
        return KC_EINVAL;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if ((r = check_parent_dir(path, err, errlen)) != 0) {
        return r;
    }
    if ((r = clear_stale_socket(&sun, err, errlen)) != 0) {
        return r;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return KC_ESYS;
    }
    /* Owner-only while it appears; widened to mode once it exists. */
    old_umask = umask(0177);
    r = bind(fd, (const struct sockaddr *)&sun, sizeof(sun));
    umask(old_umask);
    if (r != 0) {
        snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
        close(fd);
        return KC_ESYS;
    }
    if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) != 0) {
        snprintf(err, errlen, "chown %s to group %ld: %s", path, (long)gid,
                 strerror(errno));
        close(fd);
        unlink(path);
        return KC_ESYS;
    }
    if (chmod(path, mode) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "chmod/listen %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return KC_ESYS;
    }
    *out = fd;
    return 0;
}

/* ---- connections ----------------------------------------------------- */

static void
conn_free(struct conn *c)
{
    struct server *srv = c->srv;
    struct agent *a = srv->a;

    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    dispatch_conn_closed(a, c);
    kc_buf_clear(&c->replies); /* wipes */
    if (c->timer != NULL) {
        event_free(c->timer);
    }
    bufferevent_free(c->bev);
    log_debug("connection from pid %ld closed", (long)c->peer.pid);
    free(c);
    a->nconns--;
    if (a->shutting_down && a->nconns == 0) {
        event_base_loopexit(a->base, NULL);
    }
}

static void timer_arm(struct conn *c, enum timer_mode mode, uint64_t ms);

static bool
conn_is_drained(struct conn *c)
{
    return c->inflight == 0 &&
           evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

/* Close once requests in flight are answered and replies written. */
static void
conn_close_after_flush(struct conn *c)
{
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    if (conn_is_drained(c)) {
        conn_free(c);
    }
}

/*
 * Stop reading while too many replies are queued or too many requests
 * wait on providers; start again once both are back under their limits.
 * Returns true when reading is (still) allowed.
 */
static bool
conn_update_reading(struct conn *c)
{
    size_t queued = evbuffer_get_length(bufferevent_get_output(c->bev));
    bool over = queued > OUT_HIGH ||
                c->inflight >= c->srv->a->cfg->max_inflight;

    if (over && !c->paused) {
        c->paused = true;
        bufferevent_disable(c->bev, EV_READ);
        timer_arm(c, TIMER_NONE, 0);
    } else if (!over && c->paused && (!c->closing || c->draining)) {
        c->paused = false;
        if (!c->closing) {
            bufferevent_enable(c->bev, EV_READ);
        }
    }
    return !c->paused;
}

static void
timer_arm(struct conn *c, enum timer_mode mode, uint64_t ms)
{
    struct timeval tv;

    c->timer_mode = mode;
    if (ms == 0) {
        evtimer_del(c->timer);
        c->timer_mode = TIMER_NONE;
        return;
    }
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    evtimer_add(c->timer, &tv);
}

/*
 * Choose the connection's deadline.  A frame that has begun must finish
 * within read_timeout however slowly its bytes trickle in (slowloris);
 * the deadline is not moved by each new byte.  A connection with nothing
 * in flight closes after idle_timeout.  While requests wait on providers
 * or reading is paused for backpressure there is no deadline here.
 */
static void
conn_timer_update(struct conn *c)
{
    const struct agent_config *cfg = c->srv->a->cfg;
    size_t in = evbuffer_get_length(bufferevent_get_input(c->bev));

    if (c->closing) {
        return;
    }
    if (c->paused || (in == 0 && c->inflight > 0)) {
        timer_arm(c, TIMER_NONE, 0);
    } else if (in > 0) {
        if (c->timer_mode != TIMER_FRAME) {
            timer_arm(c, TIMER_FRAME, cfg->read_timeout_ms);
        }
    } else {
        timer_arm(c, TIMER_IDLE, cfg->idle_timeout_ms);
    }
}

static void conn_fail(struct conn *c, int code, const char *msg);

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (c->timer_mode == TIMER_FRAME) {
        conn_fail(c, KC_ETIMEOUT, "request frame not completed within "
                  "read_timeout; closing");
    } else if (c->timer_mode == TIMER_IDLE) {
        conn_fail(c, KC_ETIMEOUT, "idle for longer than idle_timeout; "
                  "closing");
    }
}

/* A framing error: answer with id nil, then close (cannot resync). */
static void
conn_fail(struct conn *c, int code, const char *msg)
{
    struct kc_buf out;

    kc_buf_init(&out, 0);
    if (proto_error_frame(&out, false, 0, code, msg) == 0) {
        bufferevent_write(c->bev, out.data, out.len);
    }
    kc_buf_clear(&out);
    log_debug("connection from pid %ld: %s; closing", (long)c->peer.pid, msg);
    c->draining = false; /* what follows cannot be framed */
    conn_close_after_flush(c);
}

/*
 * Queue replies.  When nothing is queued before them, write straight to
 * the socket: they leave at once, without a trip through the output
 * evbuffer and the write event it would arm.  Only what the socket does
 * not take is queued, so the order is kept.
 */
static int
conn_send(struct conn *c, const uint8_t *p, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    ssize_t n;

    if (evbuffer_get_length(out) == 0) {
        n = send(bufferevent_getfd(c->bev), p, len,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
        /* An error (peer gone) is left for the bufferevent to report. */
    }
    if (len > 0 && bufferevent_write(c->bev, p, len) != 0) {
        return KC_ENOMEM;
    }
    return 0;
}

/* Send the replies gathered so far, then wipe them. */
static int
conn_flush_replies(struct conn *c)
{
    size_t sent = c->replies.len;
    int r = 0;

    if (c->replies.len > 0) {
        r = conn_send(c, c->replies.data, c->replies.len);
        kc_buf_truncate(&c->replies, 0);
    }
    /* A big buffer stays while big replies keep coming (a client sending
     * large batches back to back would otherwise have it freed and grown
     * again, with copies and page faults, for every batch), and goes at
     * the first small flush after them. */
    if (c->replies.cap > REPLIES_KEEP_BUSY ||
        (c->replies.cap > REPLIES_KEEP && sent <= REPLIES_KEEP)) {
        kc_buf_clear(&c->replies);
    }
    return r;
}

/*
 * Handle one complete frame of len body bytes at the head of in, its
 * reply appended to c->replies.  The body is read in place (pulled up
 * into one chain if it spans several), so it is not copied, and wiped
 * once handled; a request that must wait for a provider keeps its own
 * copy (dispatch.c).
 */
static int
conn_handle_frame(struct conn *c, struct evbuffer *in, uint32_t len)
{
    uint8_t *frame;
    int r;

    if ((frame = evbuffer_pullup(in, (ev_ssize_t)PROTO_FRAME_HDR + len)) ==
        NULL) {
        return KC_ENOMEM;
    }
    r = dispatch_request(c->srv->a, c, &c->peer, frame + PROTO_FRAME_HDR,
                         len, &c->replies);
    /* Draining only moves the chain's start: wipe the bytes first, or a
     * plaintext would stay in a chain kept for a frame still arriving. */
    kc_wipe(frame, (size_t)PROTO_FRAME_HDR + len);
    evbuffer_drain(in, (size_t)PROTO_FRAME_HDR + len);
    if (r == DISPATCH_PENDING) {
        c->inflight++;
        return 0;
    }
    return r;
}

/*
 * A client that stops reading its replies: libevent's write timeout only
 * runs while output is pending and restarts on progress, so a peer that
 * reads nothing for idle_timeout (or 60 s without one) is dropped.
 */
static void
conn_set_write_timeout(struct conn *c)
{
    uint64_t ms = c->srv->a->cfg->idle_timeout_ms;
    struct timeval tv;

    if (ms == 0) {
        ms = 60000;
    }
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

/*
 * Handle the complete frames waiting in c's input, as backpressure
 * allows, and send their replies.  Returns false when c may be gone
 * (freed, or closing after a framing error).
 */
static bool
conn_process(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t max = c->srv->a->cfg->max_frame;
    uint8_t hdr[PROTO_FRAME_HDR];
    bool stopped = false;
    uint32_t len;
    int r = 0;

    while ((!c->closing || c->draining) && !c->paused &&
           evbuffer_get_length(in) >= PROTO_FRAME_HDR) {
        evbuffer_copyout(in, hdr, sizeof(hdr));
        len = kc_load_u32(hdr);
        if (len == 0 || len > max) {
            /* Replies already made go out before the error. */
            if ((r = conn_flush_replies(c)) != 0) {
                break;
            }
            conn_fail(c, len == 0 ? KC_EPROTO : KC_ETOOBIG,
                      len == 0 ? "frame length 0 is invalid"
                               : "frame length exceeds max_frame");
            return false;
        }
        if (evbuffer_get_length(in) - PROTO_FRAME_HDR < len) {
            break; /* wait for the rest, under the frame deadline */
        }
        if ((r = conn_handle_frame(c, in, len)) != 0 ||
            (c->replies.len >= REPLIES_FLUSH &&
             (r = conn_flush_replies(c)) != 0)) {
            break;
        }
        /* Each frame gets its own read_timeout: a client pipelining
         * complete frames is progressing, not a slowloris. */
        if (c->timer_mode == TIMER_FRAME) {
            c->timer_mode = TIMER_NONE;
        }
        if (!conn_update_reading(c)) {
            stopped = true;
            break;
        }
    }
    if (r != 0 || (r = conn_flush_replies(c)) != 0) {
        log_warn("connection from pid %ld: out of memory; closing",
                 (long)c->peer.pid);
        conn_free(c);
        return false;
    }
    if (!stopped && !c->closing) {
        conn_timer_update(c);
    }
    return true;
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)conn_process(arg);
}

/*
 * A closing connection made progress (output drained, or a provider
 * answered): one draining at shutdown answers more of the frames it had
 * read; any goes once nothing is owed.  Paused means replies are queued
 * or requests are in flight, so this runs again when they move.
 */
static void
conn_settle_closing(struct conn *c)
{
    if (c->draining && conn_update_reading(c) && !conn_process(c)) {
        return; /* c may be gone */
    }
    if (conn_is_drained(c)) {
        conn_free(c);
    }
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    /* Called when the output has drained (low watermark 0). */
    if (c->closing) {
        conn_settle_closing(c);
        return;
    }
    if (c->paused && conn_update_reading(c)) {
        conn_read_cb(bev, c); /* frames may already be buffered */
    }
}

void
server_conn_reply(struct conn *c, const uint8_t *frame, size_t len)
{
    c->inflight--;
    if (len > 0 && conn_send(c, frame, len) != 0) {
        log_warn("connection from pid %ld: cannot queue a reply; closing",
                 (long)c->peer.pid);
        conn_free(c);
        return;
    }
    if (c->closing) {
        conn_settle_closing(c);
        return;
    }
    if (c->paused && conn_update_reading(c)) {
        (void)conn_process(c);
        return;
    }
    conn_timer_update(c);
}

static void
conn_event_cb(struct bufferevent *bev, short events, void *arg)
{
    struct conn *c = arg;

    if ((events & BEV_EVENT_EOF) != 0 && !conn_is_drained(c)) {
        /* Half-closed peer: still deliver replies owed to it. */
        conn_close_after_flush(c);
        return;
    }
    if ((events & BEV_EVENT_TIMEOUT) != 0) {
        log_debug("connection from pid %ld: replies unread past the write "
                  "timeout; closing", (long)c->peer.pid);
        conn_free(c);
        return;
    }
    if ((events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) != 0) {
        conn_free(c);
    }
}

/*
 * The peer's credentials as the kernel recorded them at connect time.
 * If they cannot be read the uid stays -1, which no policy allows.
 */
static void
read_peer(int fd, struct authz_peer *p)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->uid = (uid_t)-1;
    p->gid = (gid_t)-1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        p->pid = cred.pid;
        p->uid = cred.uid;
        p->gid = cred.gid;
    }
    len = sizeof(p->groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, p->groups, &len) == 0) {
        p->ngroups = len / sizeof(p->groups[0]);
    }
    /* TODO: a peer in more than AUTHZ_MAX_GROUPS groups gets ERANGE and
     * is matched on its primary gid only (fails closed, never open). */
}

/* Open connections from uid: one peer may not take every slot. */
static size_t
conns_of_uid(const struct server *srv, uid_t uid)
{
    const struct conn *c;
    size_t n = 0;

    for (c = srv->conns; c != NULL; c = c->next) {
        n += c->peer.uid == uid;
    }
    return n;
}

/*
 * Over max_connections (or the per-uid share): tell the client why in
 * one small frame (it fits the empty socket buffer, so a non-blocking
 * send completes), then close.
 */
static void
refuse_connection(struct server *srv, int fd, const struct authz_peer *peer)
{
    static uint64_t last_log_ms;
    struct kc_buf out;
    uint64_t now = cache_clock_monotonic();

    kc_buf_init(&out, 0);
    if (proto_error_frame(&out, false, 0, KC_EBUSY,
                          "too many connections (max_connections or "
                          "max_connections_per_uid); try again later") ==
        0) {
        (void)send(fd, out.data, out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    kc_buf_clear(&out);
    close(fd);
    srv->refused++;
    if (now - last_log_ms >= 1000) { /* at most one line a second */
        last_log_ms = now;
        log_warn("refused connection from pid %ld uid %ld: %zu connections "
                 "open (max_connections); %llu refused so far",
                 (long)peer->pid, (long)peer->uid, srv->a->nconns,
                 (unsigned long long)srv->refused);
    }
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
          struct sockaddr *sa, int salen, void *arg)
{
    struct server *srv = arg;
    struct agent *a = srv->a;
    struct authz_peer peer;
    struct conn *c;

    read_peer(fd, &peer);
    if (a->shutting_down) {
        close(fd);
        return;
    }
    if (a->nconns >= a->cfg->max_connections ||
        conns_of_uid(srv, peer.uid) >= a->cfg->max_connections_per_uid) {
        refuse_connection(srv, fd, &peer);
        return;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        close(fd);
        return;
    }
    c->srv = srv;
    c->peer = peer;
    kc_buf_init(&c->replies, 0);
    c->bev = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(a->base, conn_timer_cb, c);
    if (c->bev == NULL || c->timer == NULL) {
        if (c->bev != NULL) {
            bufferevent_free(c->bev);
        } else {
            close(fd);
        }
        if (c->timer != NULL) {
            event_free(c->timer);
        }
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_enable(c->bev, EV_READ);
    conn_set_write_timeout(c);
    conn_timer_update(c);
    c->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    a->nconns++;
    a->n.connections++;
    log_debug("connection from pid %ld uid %ld gid %ld", (long)c->peer.pid,
              (long)c->peer.uid, (long)c->peer.gid);
}

static void
accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    if (srv->lev != NULL) {
        evconnlistener_enable(srv->lev);
    }
}

/*
 * accept() failed.  Out of descriptors is not fatal: pause accepting
 * briefly (otherwise the pending connection would wake the loop forever)
 * and try again once some may have been freed.
 */
static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct server *srv = arg;
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
    int err = EVUTIL_SOCKET_ERROR();

    static uint64_t last_log_ms, pauses;
    uint64_t now = cache_clock_monotonic();

    pauses++;
    if (now - last_log_ms >= 1000) { /* at most one line a second */
        last_log_ms = now;
        log_warn("accept: %s; pausing new connections for %d ms (%llu "
                 "pauses so far)", strerror(err), ACCEPT_RETRY_MS,
                 (unsigned long long)pauses);
    }
    evconnlistener_disable(lev);
    evtimer_add(srv->accept_retry, &tv);
}

/* ---- shutdown -------------------------------------------------------- */

static void
force_exit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    log_warn("connections still open after %d s; exiting anyway",
             SHUTDOWN_GRACE_S);
    event_base_loopexit(srv->a->base, NULL);
}

/*
 * At shutdown, requests a client has already sent count as in flight:
 * read what its socket holds (bounded), answer every complete frame,
 * then close once the replies are written.
 */
static void
conn_drain_on_shutdown(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    size_t total = 0;
    int n;

    /* A bufferevent keeps its input's end frozen outside its own read
     * callback; thaw it for these reads. */
    evbuffer_unfreeze(in, 0);
    while (total < SHUTDOWN_DRAIN_MAX &&
           (n = evbuffer_read(in, fd, 65536)) > 0) {
        total += (size_t)n;
    }
    evbuffer_freeze(in, 0);
    c->paused = false;
    conn_read_cb(c->bev, c);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    struct agent *a = srv->a;
    struct timeval grace = {SHUTDOWN_GRACE_S, 0};
    struct conn *c, *next;

    if (a->shutting_down) {
        return;
    }
    log_info("received %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    a->shutting_down = true;
    evconnlistener_free(srv->lev); /* closes the listening socket */
    srv->lev = NULL;
    if (srv->path != NULL && unlink(srv->path) != 0 && errno != ENOENT) {
        log_warn("unlink %s: %s", srv->path, strerror(errno));
    }
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (!c->closing) {
            c->draining = true;
            conn_drain_on_shutdown(c);
        }
    }
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        conn_close_after_flush(c);
    }
    if (a->nconns == 0) {
        event_base_loopexit(a->base, NULL);
        return;
    }
    evtimer_add(srv->force_exit, &grace);
}

static void
sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    char err[512];

    log_info("received SIGHUP: reloading %s", srv->a->config_path);
    if (reload_request(srv->a, err, sizeof(err)) != 0) {
        return; /* logged; the running config stays */
    }
}

int
server_run(struct agent *a, int listen_fd, const char *path)
{
    struct server srv;
    int r = KC_ESYS;

    memset(&srv, 0, sizeof(srv));
    srv.a = a;
    srv.path = path;
    /* A socket from systemd may be blocking; libevent accepts in a loop
     * until EAGAIN, which a blocking socket would never return. */
    if (evutil_make_socket_nonblocking(listen_fd) != 0 ||
        evutil_make_socket_closeonexec(listen_fd) != 0) {
        log_error("cannot make the listening socket non-blocking");
        close(listen_fd);
        return KC_ESYS;
    }
    srv.lev = evconnlistener_new(a->base, accept_cb, &srv,
                                 LEV_OPT_CLOSE_ON_FREE |
                                     LEV_OPT_CLOSE_ON_EXEC,
                                 0, listen_fd);
    if (srv.lev == NULL) {
        close(listen_fd);
        log_error("cannot listen on %s", path != NULL ? path : "(systemd)");
        return KC_ESYS;
    }
    evconnlistener_set_error_cb(srv.lev, accept_error_cb);
    srv.sig_term = evsignal_new(a->base, SIGTERM, signal_cb, &srv);
    srv.sig_int = evsignal_new(a->base, SIGINT, signal_cb, &srv);
    srv.sig_hup = evsignal_new(a->base, SIGHUP, sighup_cb, &srv);
    srv.accept_retry = evtimer_new(a->base, accept_retry_cb, &srv);
    srv.force_exit = evtimer_new(a->base, force_exit_cb, &srv);
    if (srv.sig_term == NULL || srv.sig_int == NULL ||
        srv.accept_retry == NULL || srv.force_exit == NULL ||
        srv.sig_hup == NULL || evsignal_add(srv.sig_term, NULL) != 0 ||
        evsignal_add(srv.sig_int, NULL) != 0 ||
        evsignal_add(srv.sig_hup, NULL) != 0) {
        log_error("cannot set up signal handling");
        goto out;
    }
    log_info("listening on %s", path != NULL ? path : "the systemd socket");
    if (a->on_serving != NULL && a->on_serving(a) != 0) {
        goto out;
    }
    if (event_base_dispatch(a->base) == -1) {
        log_error("event loop failed");
        goto out;
    }
    r = 0;
out:
    while (srv.conns != NULL) {
        conn_free(srv.conns);
    }
    if (srv.lev != NULL) {
        evconnlistener_free(srv.lev);
        if (path != NULL) {
            unlink(path);
        }
    }
    if (srv.sig_term != NULL) {
        event_free(srv.sig_term);
    }
    if (srv.sig_int != NULL) {
        event_free(srv.sig_int);
    }
    if (srv.sig_hup != NULL) {
        event_free(srv.sig_hup);
    }
    if (srv.accept_retry != NULL) {
        event_free(srv.accept_retry);
    }
    if (srv.force_exit != NULL) {
        event_free(srv.force_exit);
    }
    return r;
}
