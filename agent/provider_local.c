/*
 * provider_local.c - the embedded default provider: data keys wrapped by
 * a 256-bit master key read from a 0600 file, exactly as the AWS
 * Encryption SDK's raw AES keyring does (AES-256-GCM, 12-byte random IV,
 * AAD = canonical encryption context).  No network, always synchronous.
 */
#include "provider.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "keyring.h"
#include "keymem.h"
#include "kms.h" /* aws_kms_new, alibaba_kms_new (agent/kms/) */

#define MASTER_KEY_LEN 32

struct provider_local {
    struct provider base; /* first: we cast between the two */
    uint8_t *master;      /* keymem slot */
};

/* Count one operation against the alias, as every provider must. */
static int
local_count(struct provider *p, int r)
{
    p->counters->provider_calls++;
    if (r != 0) {
        p->counters->provider_errors++;
    }
    return r;
}

static int
local_generate(struct provider *p, const struct esdk_ec *ec,
               const uint8_t *ec_ser, size_t ec_len, uint8_t *dk_out,
               size_t dk_len, struct esdk_edk_list *edks,
               struct provider_error *perr, provider_done_fn done, void *arg)
{
    struct provider_local *lp = (struct provider_local *)p;
    int r;

    randombytes_buf(dk_out, dk_len);
    r = rawaes_wrap(lp->master, MASTER_KEY_LEN, p->key->ns, p->key->name,
                    ec_ser, ec_len, dk_out, dk_len, edks);
    if (r != 0) {
        sodium_memzero(dk_out, dk_len);
    }
    return local_count(p, r);
}

static int
local_wrap(struct provider *p, const struct esdk_ec *ec,
           const uint8_t *ec_ser, size_t ec_len, const uint8_t *dk,
           size_t dk_len, struct esdk_edk_list *edks,
           struct provider_error *perr, provider_done_fn done, void *arg)
{
    struct provider_local *lp = (struct provider_local *)p;

    return local_count(p, rawaes_wrap(lp->master, MASTER_KEY_LEN, p->key->ns,
                                      p->key->name, ec_ser, ec_len, dk,
                                      dk_len, edks));
}

static bool
local_edk_matches(const struct provider *p, const struct esdk_edk *edk)
{
    return rawaes_edk_matches(p->key->ns, p->key->name, edk);
}

static int
local_unwrap(struct provider *p, const struct esdk_edk *edk,
             const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len,
             uint8_t *dk_out, size_t dk_len, struct provider_error *perr,
             provider_done_fn done, void *arg)
{
    struct provider_local *lp = (struct provider_local *)p;

    return local_count(p, rawaes_unwrap(lp->master, MASTER_KEY_LEN,
                                        p->key->ns, p->key->name, edk,
                                        ec_ser, ec_len, dk_out, dk_len));
}

static void
local_free(struct provider *p)
{
    struct provider_local *lp = (struct provider_local *)p;

    keymem_free(lp->master);
    free(lp);
}

static const struct provider_ops local_ops = {
    .name = "local",
    .generate = local_generate,
    .wrap = local_wrap,
    .edk_matches = local_edk_matches,
    .unwrap = local_unwrap,
    .free = local_free,
};

/*
 * The key file's directory must not let others swap the file: refuse
 * one writable by group or others without the sticky bit.
 */
static int
check_key_dir(const char *path, char *err, size_t errlen)
{
    char *copy = strdup(path), *dir;
    struct stat st;
    int r = 0;

    if (copy == NULL) {
        return KC_ENOMEM;
    }
    dir = dirname(copy);
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "key file directory %s: %s", dir,
                 strerror(errno));
        r = KC_EKEYFILE;
    } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
               (st.st_mode & S_ISVTX) == 0) {
        snprintf(err, errlen, "key file directory %s is writable by group "
                 "or others without the sticky bit: they could replace the "
                 "key", dir);
        r = KC_EKEYFILE;
    }
    free(copy);
    return r;
}

/*
 * Read exactly MASTER_KEY_LEN bytes from path into out, refusing files
 * that others could read or replace: not a regular file, group/world
 * permission bits, or owned by another user (root excepted).
 */
static int
read_master_key(const char *path, uint8_t *out, char *err, size_t errlen)
{
    struct stat st;
    uint8_t extra;
    size_t got = 0;
    ssize_t n;
    int fd, r = KC_EKEYFILE;

    if ((r = check_key_dir(path, err, errlen)) != 0) {
        return r;
    }
    r = KC_EKEYFILE; /* until every check below has passed */
    /* O_NONBLOCK: a FIFO planted at the path must not block the agent
     * before the regular-file check below refuses it. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd == -1) {
        snprintf(err, errlen, "key file %s: %s%s", path, strerror(errno),
                 errno == ELOOP ? " (symbolic links are refused)" : "");
        return KC_EKEYFILE;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "key file %s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "key file %s has mode %04o: it must not be accessible by "
                 "group or others (chmod 600)",
                 path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(err, errlen, "key file %s is owned by uid %u, not by us",
                 path, (unsigned)st.st_uid);
        goto out;
    }
    while (got < MASTER_KEY_LEN) {
        n = read(fd, out + got, MASTER_KEY_LEN - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    if (got != MASTER_KEY_LEN || read(fd, &extra, 1) != 0) {
        snprintf(err, errlen, "key file %s: must be exactly %d bytes", path,
                 MASTER_KEY_LEN);
        sodium_memzero(out, MASTER_KEY_LEN);
        goto out;
    }
    if (sodium_is_zero(out, MASTER_KEY_LEN)) {
        snprintf(err, errlen, "key file %s is all zero bytes: make a real "
                 "key with keycachectl keygen", path);
        goto out;
    }
    r = 0;
out:
    sodium_memzero(&extra, sizeof(extra));
    close(fd);
    return r;
}

int
provider_local_new(const struct key_config *key, struct provider **out,
                   char *err, size_t errlen)
{
    /* Counters and loop are filled in by provider_new. */
    struct provider_local *lp;
    int r;

    if ((lp = calloc(1, sizeof(*lp))) == NULL) {
        return KC_ENOMEM;
    }
    lp->base.ops = &local_ops;
    lp->base.key = key;
    if ((lp->master = keymem_alloc(MASTER_KEY_LEN)) == NULL) {
        free(lp);
        snprintf(err, errlen, "cannot allocate locked memory for key %s",
                 key->alias);
        return KC_ENOMEM;
    }
    if ((r = read_master_key(key->key_file, lp->master, err, errlen)) != 0) {
        local_free(&lp->base);
        return r;
    }
    *out = &lp->base;
    return 0;
}

int
provider_local_keygen(const char *path, char *err, size_t errlen)
{
    uint8_t key[MASTER_KEY_LEN];
    size_t off = 0;
    ssize_t n;
    int fd, r = KC_ESYS;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
              0600);
    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return errno == EEXIST ? KC_EKEYFILE : KC_ESYS;
    }
    randombytes_buf(key, sizeof(key));
    while (off < sizeof(key)) {
        n = write(fd, key + off, sizeof(key) - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            snprintf(err, errlen, "%s: write: %s", path, strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "%s: fsync: %s", path, strerror(errno));
        goto out;
    }
    r = 0;
out:
    sodium_memzero(key, sizeof(key));
    close(fd);
    if (r != 0) {
        unlink(path);
    }
    return r;
}

int
provider_new(const struct key_config *key, struct key_counters *counters,
             struct event_base *base, struct provider **out, char *err,
             size_t errlen)
{
    int r;

    if (strcmp(key->provider, "local") == 0) {
        r = provider_local_new(key, out, err, errlen);
    } else if (strcmp(key->provider, "aws-kms") == 0) {
        r = aws_kms_new(key, counters, base, out, err, errlen);
    } else if (strcmp(key->provider, "alibaba-kms") == 0) {
        r = alibaba_kms_new(key, counters, base, out, err, errlen);
    } else {
        snprintf(err, errlen, "[key.%s]: unknown provider %s", key->alias,
                 key->provider);
        return KC_ECONFIG;
    }
    if (r == 0) {
        (*out)->counters = counters;
        (*out)->base = base;
    }
    return r;
}

bool
provider_same_key(const struct provider *a, const struct provider *b)
{
    const struct key_config *ka = a->key, *kb = b->key;

    if (a->ops != b->ops || !config_str_same(ka->provider, kb->provider)) {
        return false;
    }
    if (a->ops == &local_ops) {
        const struct provider_local *la = (const struct provider_local *)a;
        const struct provider_local *lb = (const struct provider_local *)b;

        return sodium_memcmp(la->master, lb->master, MASTER_KEY_LEN) == 0 &&
               config_str_same(ka->ns, kb->ns) &&
               config_str_same(ka->name, kb->name);
    }
    return config_str_same(ka->key_id, kb->key_id) &&
           config_str_same(ka->region, kb->region) &&
           config_str_same(ka->endpoint, kb->endpoint);
}

void
provider_free(struct provider *p)
{
    if (p != NULL) {
        p->ops->free(p);
    }
}
