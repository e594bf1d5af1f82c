/*
 * request_fuzz.c - libFuzzer target over the agent's whole request path:
 * each input is one frame body handed to dispatch_request, with a real
 * configuration and local key (made in a temporary directory at start).
 * Every input must yield exactly one well-formed response frame.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "dispatch.h"
#include "keymem.h"
#include "log.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct agent fz;
static struct agent_config *fz_cfg;
static struct authz_peer fz_peer;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/kcfuzzXXXXXX", path[128], keyp[128], err[512];
    uint8_t key[32] = {0x11, 0x22};
    FILE *f;
    int fd;

    if (mkdtemp(dir) == NULL) {
        abort();
    }
    snprintf(keyp, sizeof(keyp), "%s/k.key", dir);
    fd = open(keyp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || write(fd, key, sizeof(key)) != (ssize_t)sizeof(key)) {
        abort();
    }
    close(fd);
    snprintf(path, sizeof(path), "%s/c.ini", dir);
    if ((f = fopen(path, "w")) == NULL) {
        abort();
    }
    fprintf(f, "[agent]\ncapacity = 64\n[key.users-email]\nprovider = local\n"
               "key_file = %s\nmax_messages = 5\n[key.signed]\n"
               "provider = local\nkey_file = %s\nsuite = 0x0578\n", keyp, keyp);
    fclose(f);
    log_init(LOG_LEVEL_ERROR, false);
    if (config_load(path, &fz_cfg, err, sizeof(err)) != 0 ||
        keymem_init(128, err, sizeof(err)) != 0 ||
        keyring_new(fz_cfg, NULL, &fz.keys, err, sizeof(err)) != 0 ||
        cache_new(64, NULL, &fz.cache) != 0 ||
        authz_policy_parse(NULL, &fz.stats_policy, err, sizeof(err)) != 0) {
        fprintf(stderr, "request_fuzz: setup: %s\n", err);
        abort();
    }
    unlink(keyp);
    unlink(path);
    rmdir(dir);
    fz.cfg = fz_cfg;
    esdk_limits_default(&fz.limits);
    fz_peer.uid = geteuid();
    fz_peer.gid = getegid();
    fz_peer.pid = getpid();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *body;
    size_t body_len, total;
    struct kc_buf out;
    msgpack_unpacked u;
    int r;

    kc_buf_init(&out, 0);
    r = dispatch_request(&fz, NULL, &fz_peer, data, size, &out);
    if (r != 0) {
        abort(); /* the local provider never waits; never out of memory */
    }
    if (proto_frame_decode(out.data, out.len, SIZE_MAX, &body, &body_len,
                           &total) != 0 ||
        total != out.len) {
        abort(); /* exactly one whole frame */
    }
    msgpack_unpacked_init(&u);
    if (proto_unpack_map(body, body_len, &u) != 0) {
        abort();
    }
    msgpack_unpacked_destroy(&u);
    kc_buf_clear(&out);
    return 0;
}
