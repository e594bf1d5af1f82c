/*
 * server.h - the listening Unix socket, client connections and the
 * event loop.
 */
#ifndef KC_SERVER_H
#define KC_SERVER_H

#include "agent.h"

/*
 * server_wiping_allocator_install - route libevent's allocations through
 * size-prefixed blocks that are wiped on free and on realloc, because
 * evbuffers carry plaintext and ciphertext.  Call before any other
 * libevent function.
 */
void server_wiping_allocator_install(void);

/*
 * server_socket_open - create, bind and listen on path with mode and,
 * unless gid is -1, that group (the socket is created under a umask that
 * never exposes it beyond owner-only until both are set).  A
 * stale socket left by a dead agent (connect refused) is replaced; a live
 * one, a non-socket file, a path too long for sun_path, or a parent
 * directory writable by others without the sticky bit is refused with a
 * reason in err.  Returns 0 with *fd, KC_EINVAL, KC_EBUSY, KC_ESYS.
 */
KC_MUST_USE int server_socket_open(const char *path, mode_t mode, gid_t gid,
                                   int *fd, char *err, size_t errlen);

/*
 * server_run - serve on listen_fd (takes ownership) until SIGTERM or
 * SIGINT; then stop accepting, finish what is in flight, unlink path
 * (NULL: a socket passed by systemd, which owns its file).
 * Returns 0 after a clean stop, KC_ESYS if the loop could not start.
 */
KC_MUST_USE int server_run(struct agent *a, int listen_fd, const char *path);

/*
 * server_conn_reply - deliver the response frame of a request that waited
 * on a provider (len 0: none could be built) to conn, which must still be
 * open (dispatch forgets closed ones).  May free conn.
 */
void server_conn_reply(struct conn *c, const uint8_t *frame, size_t len);

#endif /* KC_SERVER_H */
