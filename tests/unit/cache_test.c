/*
 * cache_test.c - the data-key cache and the encrypt/decrypt paths through
 * it, driven with a controllable clock and without sockets: requests are
 * built with msgpack and handed to dispatch_request directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "cache.h"
#include "config.h"
#include "dispatch.h"
#include "keymem.h"
#include "keyring.h"
#include "log.h"
#include "provider.h"
#include "wire.h"

static uint64_t fake_now;

static uint64_t
fake_clock(void)
{
    return fake_now;
}

struct fixture {
    char dir[64];
    struct agent_config *cfg;
    struct agent a;
    struct authz_peer peer;
};

/* Write a master key and a config with the given [key.k] extra lines. */
static struct fixture *
fixture_new(const char *key_extra, size_t capacity)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128], keyp[128], err[512];
    uint8_t key[32];
    FILE *fp;
    int fd;

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/kccacheXXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(keyp, sizeof(keyp), "%s/k.key", f->dir);
    fd = open(keyp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    memset(key, 0x42, sizeof(key));
    assert_int_equal(write(fd, key, sizeof(key)), (ssize_t)sizeof(key));
    close(fd);

    snprintf(path, sizeof(path), "%s/c.ini", f->dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "[agent]\ncapacity = %zu\nlog_level = error\n", capacity);
    fprintf(fp, "[key.k]\nprovider = local\nkey_file = %s\n%s\n", keyp,
            key_extra);
    /* Exact-count tests: no random TTL jitter, no refresh-ahead unless
     * the test asks for them. */
    if (strstr(key_extra, "ttl_jitter") == NULL) {
        fprintf(fp, "ttl_jitter = 0\n");
    }
    if (strstr(key_extra, "refresh_ahead") == NULL) {
        fprintf(fp, "refresh_ahead = 0\n");
    }
    fprintf(fp, "[key.other]\nprovider = local\nkey_file = %s\n", keyp);
    fclose(fp);

    assert_int_equal(config_load(path, &f->cfg, err, sizeof(err)), 0);
    log_init(getenv("KC_TEST_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR, false);
    assert_int_equal(keymem_init(capacity + 4, err, sizeof(err)), 0);
    f->a.cfg = f->cfg;
    esdk_limits_default(&f->a.limits);
    assert_int_equal(keyring_new(f->cfg, NULL, &f->a.keys, err,
                                 sizeof(err)), 0);
    assert_int_equal(cache_new(capacity, fake_clock, &f->a.cache), 0);
    fake_now = 1000000;
    return f;
}

static void
fixture_free(struct fixture *f)
{
    char path[128];

    dispatch_shutdown(&f->a); /* a no-op but for the spare msgpack zone */
    cache_free(f->a.cache);
    keyring_free(f->a.keys);
    config_free(f->cfg);
    snprintf(path, sizeof(path), "%s/k.key", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/c.ini", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
}

/*
 * Send one request and return the response map (in *u, which the caller
 * destroys).  The body is packed by fill().
 */
static const msgpack_object *
roundtrip(struct fixture *f, struct kc_buf *req, msgpack_unpacked *u,
          struct kc_buf *resp)
{
    const uint8_t *body;
    size_t body_len, total;

    kc_buf_init(resp, 0);
    assert_int_equal(dispatch_request(&f->a, NULL, &f->peer, req->data,
                                      req->len, resp), 0);
    assert_int_equal(proto_frame_decode(resp->data, resp->len, SIZE_MAX,
                                        &body, &body_len, &total), 0);
    assert_int_equal(total, resp->len);
    msgpack_unpacked_init(u);
    assert_int_equal(proto_unpack_map(body, body_len, u), 0);
    return &u->data;
}

static bool
is_ok(const msgpack_object *m)
{
    const msgpack_object *ok = proto_map_get(m, "ok");

    return ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
}

static int64_t
err_code(const msgpack_object *m)
{
    const msgpack_object *e = proto_map_get(m, "error");
    const msgpack_object *c = proto_map_get(e, "code");

    assert_non_null(c);
    return c->via.i64;
}

/* encrypt pt_len bytes under alias k with context {table: users}. */
static void
do_encrypt(struct fixture *f, const char *alias, size_t pt_len,
           struct kc_buf *ct_out, int expect)
{
    struct kc_buf req, resp;
    msgpack_packer pk;
    msgpack_unpacked u;
    const msgpack_object *m;
    uint8_t *pt = calloc(1, pt_len + 1);
    const uint8_t *ct;
    size_t ct_len;

    kc_buf_init(&req, 0);
    proto_packer_init(&pk, &req);
    msgpack_pack_map(&pk, 5);
    proto_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 9);
    proto_pack_cstr(&pk, "op");
    proto_pack_cstr(&pk, "encrypt");
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, alias);
    proto_pack_cstr(&pk, "plaintext");
    proto_pack_bin(&pk, pt, pt_len);
    proto_pack_cstr(&pk, "context");
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "table");
    proto_pack_cstr(&pk, "users");
    m = roundtrip(f, &req, &u, &resp);
    if (expect == 0) {
        assert_true(is_ok(m));
        assert_int_equal(proto_get_bin(m, "ciphertext", true, &ct, &ct_len),
                         0);
        if (ct_out != NULL) {
            assert_int_equal(kc_buf_put(ct_out, ct, ct_len), 0);
        }
    } else {
        assert_false(is_ok(m));
        assert_int_equal(err_code(m), expect);
    }
    msgpack_unpacked_destroy(&u);
    kc_buf_clear(&req);
    kc_buf_clear(&resp);
    free(pt);
}

static void
do_decrypt(struct fixture *f, const struct kc_buf *ct, int expect)
{
    struct kc_buf req, resp;
    msgpack_packer pk;
    msgpack_unpacked u;
    const msgpack_object *m;

    kc_buf_init(&req, 0);
    proto_packer_init(&pk, &req);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 10);
    proto_pack_cstr(&pk, "op");
    proto_pack_cstr(&pk, "decrypt");
    proto_pack_cstr(&pk, "ciphertext");
    proto_pack_bin(&pk, ct->data, ct->len);
    m = roundtrip(f, &req, &u, &resp);
    if (expect == 0) {
        assert_true(is_ok(m));
    } else {
        assert_false(is_ok(m));
        assert_int_equal(err_code(m), expect);
    }
    msgpack_unpacked_destroy(&u);
    kc_buf_clear(&req);
    kc_buf_clear(&resp);
}

static struct keyslot *
slot_of(struct fixture *f, const char *alias)
{
    struct keyslot *s = keyring_find(f->a.keys, alias, strlen(alias));

    assert_non_null(s);
    return s;
}

static void
test_ttl_expiry_makes_new_key(void **state)
{
    struct fixture *f = fixture_new("ttl = 10", 100);
    struct keyslot *s = slot_of(f, "k");

    do_encrypt(f, "k", 16, NULL, 0);
    do_encrypt(f, "k", 16, NULL, 0);
    assert_int_equal(s->n.provider_calls, 1);
    fake_now += 9999; /* just inside the 10 s TTL */
    do_encrypt(f, "k", 16, NULL, 0);
    assert_int_equal(s->n.provider_calls, 1);
    fake_now += 1; /* exactly at the TTL: expired */
    do_encrypt(f, "k", 16, NULL, 0);
    assert_int_equal(s->n.provider_calls, 2);
    assert_int_equal(s->n.cache_hits, 2);
    fixture_free(f);
}

static void
test_max_messages_exact(void **state)
{
    struct fixture *f = fixture_new("max_messages = 7", 100);
    struct keyslot *s = slot_of(f, "k");
    struct cache_totals t;
    int i;

    for (i = 0; i < 7; i++) {
        do_encrypt(f, "k", 1, NULL, 0);
    }
    /* Seven messages, one key; the key retired right at the cap. */
    assert_int_equal(s->n.provider_calls, 1);
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.retired, 1);
    do_encrypt(f, "k", 1, NULL, 0);
    assert_int_equal(s->n.provider_calls, 2);
    for (i = 0; i < 6; i++) {
        do_encrypt(f, "k", 1, NULL, 0);
    }
    assert_int_equal(s->n.provider_calls, 2);
    do_encrypt(f, "k", 1, NULL, 0);
    assert_int_equal(s->n.provider_calls, 3); /* 15 messages: ceil(15/7) */
    fixture_free(f);
}

static void
test_max_bytes(void **state)
{
    struct fixture *f = fixture_new("max_bytes = 100", 100);
    struct keyslot *s = slot_of(f, "k");

    do_encrypt(f, "k", 60, NULL, 0);
    do_encrypt(f, "k", 40, NULL, 0); /* 100 bytes: at the cap, retired */
    assert_int_equal(s->n.provider_calls, 1);
    do_encrypt(f, "k", 60, NULL, 0);
    assert_int_equal(s->n.provider_calls, 2);
    do_encrypt(f, "k", 41, NULL, 0); /* 101 would pass the cap: new key */
    assert_int_equal(s->n.provider_calls, 3);
    /* Alone over the cap: the used key rotates, a fresh key serves this
     * one message and is retired at once. */
    do_encrypt(f, "k", 500, NULL, 0);
    assert_int_equal(s->n.provider_calls, 4);
    do_encrypt(f, "k", 10, NULL, 0);
    assert_int_equal(s->n.provider_calls, 5);
    do_encrypt(f, "k", 10, NULL, 0);
    assert_int_equal(s->n.provider_calls, 5);
    fixture_free(f);
}

static void
test_decrypt_uses_cache_and_survives_expiry(void **state)
{
    struct fixture *f = fixture_new("ttl = 10\ndecrypt_ttl = 20", 100);
    struct keyslot *s = slot_of(f, "k");
    struct kc_buf ct;

    kc_buf_init(&ct, 0);
    do_encrypt(f, "k", 32, &ct, 0);
    do_decrypt(f, &ct, 0);
    assert_int_equal(s->n.provider_calls, 1); /* the encrypting key decrypts */
    fake_now += 20000;
    do_decrypt(f, &ct, 0); /* decryption entry expired: unwrap again */
    assert_int_equal(s->n.provider_calls, 2);
    do_decrypt(f, &ct, 0);
    assert_int_equal(s->n.provider_calls, 2);
    assert_int_equal(s->n.decrypt, 3);
    kc_buf_clear(&ct);
    fixture_free(f);
}

/*
 * One entry per data key: while a key encrypts, decrypts of what it wrote
 * find it under its encryption entry; when it stops encrypting (cap or
 * TTL) the same entry stays on as a decryption key until decrypt_ttl,
 * holding one locked slot, never two.
 */
static void
test_one_entry_per_data_key(void **state)
{
    struct fixture *f = fixture_new("max_messages = 2\nttl = 10\n"
                                    "decrypt_ttl = 30", 100);
    struct keyslot *s = slot_of(f, "k");
    struct cache_totals t;
    struct kc_buf ct1, ct2, ct3;
    size_t slots0 = keymem_slots_used();

    kc_buf_init(&ct1, 0);
    kc_buf_init(&ct2, 0);
    kc_buf_init(&ct3, 0);
    do_encrypt(f, "k", 16, &ct1, 0);
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.entries, 1);
    assert_int_equal(keymem_slots_used() - slots0, 1);
    do_decrypt(f, &ct1, 0); /* found under the encryption entry */
    assert_int_equal(s->n.provider_calls, 1);
    do_encrypt(f, "k", 16, &ct2, 0); /* second message: cap, retired */
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.retired, 1);
    assert_int_equal(t.entries, 1); /* kept, now decrypt-only */
    do_decrypt(f, &ct1, 0);
    do_decrypt(f, &ct2, 0);
    assert_int_equal(s->n.provider_calls, 1);
    do_encrypt(f, "k", 16, &ct3, 0); /* a retired key never encrypts */
    assert_int_equal(s->n.provider_calls, 2);
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.entries, 2);
    assert_int_equal(keymem_slots_used() - slots0, 2);
    fake_now += 15000; /* key 2's encryption TTL over; decryption not */
    do_decrypt(f, &ct3, 0);
    do_decrypt(f, &ct1, 0);
    assert_int_equal(s->n.provider_calls, 2);
    do_encrypt(f, "k", 16, NULL, 0); /* key 2 expired for encryption */
    assert_int_equal(s->n.provider_calls, 3);
    do_decrypt(f, &ct3, 0); /* key 2 still decrypts */
    assert_int_equal(s->n.provider_calls, 3);
    fake_now += 15000; /* 30 s: keys 1 and 2 done decrypting */
    do_decrypt(f, &ct1, 0);
    do_decrypt(f, &ct3, 0);
    assert_int_equal(s->n.provider_calls, 5);
    kc_buf_clear(&ct1);
    kc_buf_clear(&ct2);
    kc_buf_clear(&ct3);
    fixture_free(f);
}

static void
test_lru_eviction_and_wipe(void **state)
{
    struct fixture *f = fixture_new("", 3);
    struct keyslot *s = slot_of(f, "k");
    struct cache_entry *e[4];
    uint8_t id[4][CACHE_ID_LEN];
    uint8_t *dk0;
    struct cache_totals t;
    int i;

    for (i = 0; i < 4; i++) {
        uint8_t ctx = (uint8_t)i;

        assert_int_equal(cache_entry_new(CACHE_DEC, s, 32, &e[i]), 0);
        memset(e[i]->dk, 0xA0 + i, 32);
        cache_id_enc(f->a.cache, "k", &ctx, 1, id[i]);
    }
    cache_insert(f->a.cache, e[0], id[0], 60000);
    cache_insert(f->a.cache, e[1], id[1], 60000);
    cache_insert(f->a.cache, e[2], id[2], 60000);
    /* Touch 0 so 1 becomes least recently used. */
    assert_ptr_equal(cache_lookup(f->a.cache, id[0]), e[0]);
    dk0 = e[1]->dk;
    cache_insert(f->a.cache, e[3], id[3], 60000);
    assert_null(cache_lookup(f->a.cache, id[1]));
    assert_non_null(cache_lookup(f->a.cache, id[0]));
    assert_non_null(cache_lookup(f->a.cache, id[2]));
    assert_non_null(cache_lookup(f->a.cache, id[3]));
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.entries, 3);
    assert_int_equal(t.evictions, 1);
    assert_int_equal(s->entries, 3);
    /* The evicted key's slot is back in locked memory, zeroed. */
    for (i = 0; i < 32; i++) {
        assert_int_equal(dk0[i], 0);
    }
    fixture_free(f);
}

static void
test_errors_are_responses(void **state)
{
    struct fixture *f = fixture_new("", 10);
    struct kc_buf bad;

    do_encrypt(f, "missing", 4, NULL, KC_ENOKEY);
    kc_buf_init(&bad, 0);
    assert_int_equal(kc_buf_put(&bad, "\x02\x04\x78junk", 7), 0);
    do_decrypt(f, &bad, KC_EFORMAT);
    kc_buf_clear(&bad);
    fixture_free(f);
}

/* ---- a provider that answers later, to drive single flight ---------- */

struct slow_provider {
    struct provider base;
    int calls;
    provider_done_fn done;
    void *arg;
    uint8_t *dk_out;
    size_t dk_len;
    struct esdk_edk_list *edks;
    const uint8_t *ec_ser;
    size_t ec_len;
    struct provider_error *perr;
};

static const uint8_t slow_master[32] = {7};

static int
slow_generate(struct provider *p, const struct esdk_ec *ec,
              const uint8_t *ec_ser, size_t ec_len, uint8_t *dk_out,
              size_t dk_len, struct esdk_edk_list *edks,
              struct provider_error *perr, provider_done_fn done, void *arg)
{
    struct slow_provider *sp = (struct slow_provider *)p;

    sp->calls++;
    p->counters->provider_calls++;
    sp->done = done;
    sp->arg = arg;
    sp->dk_out = dk_out;
    sp->dk_len = dk_len;
    sp->edks = edks;
    sp->ec_ser = ec_ser;
    sp->ec_len = ec_len;
    sp->perr = perr;
    return PROVIDER_PENDING;
}

static bool
slow_matches(const struct provider *p, const struct esdk_edk *edk)
{
    return rawaes_edk_matches("slow", "k", edk);
}

static void
slow_free(struct provider *p)
{
    free(p);
}

static const struct provider_ops slow_ops = {
    .name = "slow",
    .generate = slow_generate,
    .edk_matches = slow_matches,
    .free = slow_free,
};

/* Finish the outstanding generate: success or a provider error. */
static void
slow_complete(struct slow_provider *sp, int status)
{
    provider_done_fn done = sp->done;
    struct provider_error pe;

    assert_non_null(done);
    sp->done = NULL;
    memset(&pe, 0, sizeof(pe));
    if (status == 0) {
        memset(sp->dk_out, 0x5a, sp->dk_len);
        assert_int_equal(rawaes_wrap(slow_master, 32, "slow", "k", sp->ec_ser,
                                     sp->ec_len, sp->dk_out, sp->dk_len,
                                     sp->edks), 0);
        done(sp->arg, 0, NULL);
        return;
    }
    pe.http_status = 400;
    snprintf(pe.code, sizeof(pe.code), "Forbidden.KeyNotFound");
    snprintf(pe.request_id, sizeof(pe.request_id), "req-123");
    done(sp->arg, status, &pe);
}

/* The local provider's EDK test, for a slow stand-in of that key. */
static bool
local_like_matches(const struct provider *p, const struct esdk_edk *edk)
{
    return rawaes_edk_matches(p->key->ns, p->key->name, edk);
}

static struct slow_provider *
install_slow(struct fixture *f, struct keyslot *s)
{
    struct slow_provider *sp = calloc(1, sizeof(*sp));

    assert_non_null(sp);
    sp->base.ops = &slow_ops;
    sp->base.key = s->cfg;
    sp->base.counters = &s->n;
    provider_free(s->provider);
    s->provider = &sp->base;
    return sp;
}

/*
 * Dispatch the request packed in req and expect rc (a request left
 * waiting on a flight answers nothing yet); req is cleared.
 */
static void
dispatch_expect(struct fixture *f, struct kc_buf *req, int rc)
{
    struct kc_buf resp;

    kc_buf_init(&resp, 0);
    assert_int_equal(dispatch_request(&f->a, NULL, &f->peer, req->data,
                                      req->len, &resp), rc);
    if (rc == DISPATCH_PENDING) {
        assert_int_equal(resp.len, 0);
    }
    kc_buf_clear(req);
    kc_buf_clear(&resp);
}

static void
send_encrypt_pending(struct fixture *f, int expect_rc)
{
    struct kc_buf req;
    msgpack_packer pk;

    kc_buf_init(&req, 0);
    proto_packer_init(&pk, &req);
    msgpack_pack_map(&pk, 5);
    proto_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 1);
    proto_pack_cstr(&pk, "op");
    proto_pack_cstr(&pk, "encrypt");
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, "k");
    proto_pack_cstr(&pk, "plaintext");
    proto_pack_bin(&pk, (const uint8_t *)"secret", 6);
    proto_pack_cstr(&pk, "context"); /* the same as do_encrypt's */
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "table");
    proto_pack_cstr(&pk, "users");
    dispatch_expect(f, &req, expect_rc);
}

static void
test_single_flight_shares_one_call(void **state)
{
    struct fixture *f = fixture_new("", 100);
    struct keyslot *s = slot_of(f, "k");
    struct slow_provider *sp = install_slow(f, s);
    int i;

    for (i = 0; i < 200; i++) {
        send_encrypt_pending(f, DISPATCH_PENDING);
    }
    assert_int_equal(sp->calls, 1);
    assert_int_equal(f->a.npending, 200);
    slow_complete(sp, 0);
    assert_int_equal(f->a.npending, 0);
    assert_int_equal(s->n.encrypt, 200);
    assert_int_equal(s->n.provider_calls, 1);
    /* Now cached: answered at once. */
    send_encrypt_pending(f, 0);
    assert_int_equal(sp->calls, 1);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

static void
test_single_flight_shares_failure_and_caches_nothing(void **state)
{
    struct fixture *f = fixture_new("", 100);
    struct keyslot *s = slot_of(f, "k");
    struct slow_provider *sp = install_slow(f, s);
    struct cache_totals t;
    int i;

    for (i = 0; i < 50; i++) {
        send_encrypt_pending(f, DISPATCH_PENDING);
    }
    slow_complete(sp, KC_EPROVIDER);
    assert_int_equal(f->a.npending, 0);
    assert_int_equal(s->n.encrypt, 0);
    assert_int_equal(s->n.errors, 50);
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.entries, 0);
    /* The failure was not cached: the next request calls again. */
    send_encrypt_pending(f, DISPATCH_PENDING);
    assert_int_equal(sp->calls, 2);
    slow_complete(sp, 0);
    assert_int_equal(s->n.encrypt, 1);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

static void
test_max_messages_with_waiters(void **state)
{
    struct fixture *f = fixture_new("max_messages = 3", 100);
    struct keyslot *s = slot_of(f, "k");
    struct slow_provider *sp = install_slow(f, s);
    int i;

    /* 10 waiters on one flight; each key serves exactly 3 of them. */
    for (i = 0; i < 10; i++) {
        send_encrypt_pending(f, DISPATCH_PENDING);
    }
    slow_complete(sp, 0);
    for (i = 0; i < 3; i++) {
        assert_int_equal(f->a.npending, (size_t)(7 - 3 * i > 0 ? 7 - 3 * i
                                                                : 0));
        if (f->a.npending == 0) {
            break;
        }
        slow_complete(sp, 0);
    }
    assert_int_equal(f->a.npending, 0);
    assert_int_equal(s->n.encrypt, 10);
    assert_int_equal(sp->calls, 4); /* ceil(10 / 3) */
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

static void
test_batch_items_wait_and_resume(void **state)
{
    struct fixture *f = fixture_new("max_messages = 3", 100);
    struct keyslot *s = slot_of(f, "k");
    struct slow_provider *sp = install_slow(f, s);
    struct kc_buf req;
    msgpack_packer pk;
    int i;

    kc_buf_init(&req, 0);
    proto_packer_init(&pk, &req);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 5);
    proto_pack_cstr(&pk, "op");
    proto_pack_cstr(&pk, "batch");
    proto_pack_cstr(&pk, "items");
    msgpack_pack_array(&pk, 8);
    for (i = 0; i < 8; i++) {
        msgpack_pack_map(&pk, 3);
        proto_pack_cstr(&pk, "op");
        proto_pack_cstr(&pk, i == 7 ? "nope" : "encrypt");
        proto_pack_cstr(&pk, "key");
        proto_pack_cstr(&pk, "k");
        proto_pack_cstr(&pk, "plaintext");
        proto_pack_bin(&pk, (const uint8_t *)"abc", 3);
    }
    dispatch_expect(f, &req, DISPATCH_PENDING);
    /* 7 encrypt items with a cap of 3 per key: three flights in turn. */
    for (i = 0; i < 3; i++) {
        assert_int_equal(f->a.npending, 1);
        slow_complete(sp, 0);
    }
    assert_int_equal(f->a.npending, 0);
    assert_int_equal(sp->calls, 3);
    assert_int_equal(s->n.encrypt, 7);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

static void
test_refresh_ahead_no_request_path_calls(void **state)
{
    struct fixture *f = fixture_new("ttl = 10\nrefresh_ahead = 0.5", 100);
    struct keyslot *s = slot_of(f, "k");
    int i;

    do_encrypt(f, "k", 8, NULL, 0); /* warm-up: the one request-path call */
    assert_int_equal(s->n.cache_misses, 1);
    for (i = 0; i < 60; i++) {
        fake_now += 1000; /* a request a second for a minute */
        do_encrypt(f, "k", 8, NULL, 0);
    }
    /* Steady traffic: every later key was fetched ahead, none on the
     * request path, and keys did rotate. */
    assert_int_equal(s->n.cache_misses, 1);
    assert_true(s->m.refreshes >= 6);
    assert_int_equal(s->n.provider_calls, 1 + s->m.refreshes);
    fixture_free(f);
}

static void
test_refresh_ahead_keeps_caps_exact(void **state)
{
    struct fixture *f =
        fixture_new("ttl = 10\nrefresh_ahead = 0.5\nmax_messages = 4", 100);
    struct keyslot *s = slot_of(f, "k");
    struct cache_totals t;

    do_encrypt(f, "k", 1, NULL, 0);
    fake_now += 6000;
    do_encrypt(f, "k", 1, NULL, 0); /* successor fetched, not used yet */
    assert_int_equal(s->n.provider_calls, 2);
    do_encrypt(f, "k", 1, NULL, 0);
    do_encrypt(f, "k", 1, NULL, 0); /* fourth message: key retired */
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.retired, 1);
    do_encrypt(f, "k", 1, NULL, 0); /* the successor takes over */
    assert_int_equal(s->n.provider_calls, 2);
    assert_int_equal(s->n.cache_misses, 1);
    fixture_free(f);
}

static void
test_grace_bridges_outage_and_ends_exactly(void **state)
{
    struct fixture *f = fixture_new("ttl = 10\nencrypt_grace = 5", 100);
    struct keyslot *s = slot_of(f, "k");
    struct slow_provider *sp;

    do_encrypt(f, "k", 8, NULL, 0); /* local provider: key cached */
    sp = install_slow(f, s);
    fake_now += 10000; /* expired; inside the 5 s grace */
    send_encrypt_pending(f, DISPATCH_PENDING); /* tries the provider */
    slow_complete(sp, KC_ETIMEOUT);           /* provider down */
    assert_int_equal(s->n.encrypt, 2);        /* served by grace */
    assert_int_equal(s->m.grace_uses[METRICS_OP_ENCRYPT], 1);
    fake_now += 4999; /* last millisecond of grace */
    send_encrypt_pending(f, DISPATCH_PENDING);
    slow_complete(sp, KC_ETIMEOUT);
    assert_int_equal(s->n.encrypt, 3);
    fake_now += 1; /* grace over: the failure reaches the client */
    send_encrypt_pending(f, DISPATCH_PENDING);
    slow_complete(sp, KC_ETIMEOUT);
    assert_int_equal(s->n.encrypt, 3);
    assert_int_equal(s->m.grace_uses[METRICS_OP_ENCRYPT], 2);
    /* The provider comes back: a fresh key, no more grace. */
    send_encrypt_pending(f, DISPATCH_PENDING);
    slow_complete(sp, 0);
    assert_int_equal(s->n.encrypt, 4);
    send_encrypt_pending(f, 0); /* cached again: answered at once */
    assert_int_equal(s->n.encrypt, 5);
    assert_int_equal(s->m.grace_uses[METRICS_OP_ENCRYPT], 2);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

/* A provider whose unwrap answers later (the test says how). */
static provider_done_fn slow_unwrap_done;
static void *slow_unwrap_arg;

static int
slow_unwrap(struct provider *p, const struct esdk_edk *edk,
            const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len,
            uint8_t *dk_out, size_t dk_len, struct provider_error *perr,
            provider_done_fn done, void *arg)
{
    p->counters->provider_calls++;
    slow_unwrap_done = done;
    slow_unwrap_arg = arg;
    return PROVIDER_PENDING;
}

static void
send_decrypt_pending(struct fixture *f, const struct kc_buf *ct, int rc)
{
    struct kc_buf req;
    msgpack_packer pk;

    kc_buf_init(&req, 0);
    proto_packer_init(&pk, &req);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 11);
    proto_pack_cstr(&pk, "op");
    proto_pack_cstr(&pk, "decrypt");
    proto_pack_cstr(&pk, "ciphertext");
    proto_pack_bin(&pk, ct->data, ct->len);
    dispatch_expect(f, &req, rc);
}

static struct slow_provider *
install_slow_unwrap(struct fixture *f, struct keyslot *s)
{
    static struct provider_ops ops;
    struct slow_provider *sp = install_slow(f, s);

    ops = *sp->base.ops;
    ops.unwrap = slow_unwrap;
    ops.edk_matches = local_like_matches;
    sp->base.ops = &ops;
    return sp;
}

static void
test_decrypt_grace_bridges_outage(void **state)
{
    struct fixture *f = fixture_new("decrypt_ttl = 10\ndecrypt_grace = 5",
                                    100);
    struct keyslot *s = slot_of(f, "k");
    struct kc_buf ct;
    int i;

    kc_buf_init(&ct, 0);
    do_encrypt(f, "k", 16, &ct, 0); /* its data key also decrypts */
    install_slow_unwrap(f, s);
    fake_now += 10000; /* decryption lifetime over; inside the grace */
    for (i = 0; i < 3; i++) {
        send_decrypt_pending(f, &ct, DISPATCH_PENDING);
        slow_unwrap_done(slow_unwrap_arg, KC_ETIMEOUT, NULL);
        if (i == 1) {
            fake_now += 5000; /* grace over for the third try */
        }
    }
    assert_int_equal(s->n.decrypt, 2);
    assert_int_equal(s->m.grace_uses[METRICS_OP_DECRYPT], 2);
    kc_buf_clear(&ct);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

/* ---- one entry per data key: retirement edge cases ---- */

/* Decrypt outage grace survives an encrypt that ends the key's
 * encryption use (TTL): the retired entry stays a decryption key until
 * decrypt_ttl + decrypt_grace. */
static void
test_decrypt_grace_survives_encrypt_ttl(void **state)
{
    struct fixture *f = fixture_new("ttl = 10\ndecrypt_grace = 60", 100);
    struct keyslot *s = slot_of(f, "k");
    struct slow_provider *sp;
    struct kc_buf ct;

    kc_buf_init(&ct, 0);
    do_encrypt(f, "k", 16, &ct, 0);
    sp = install_slow_unwrap(f, s);
    fake_now += 11000; /* 1 s past decrypt_ttl (= ttl); 59 s of grace left */
    send_decrypt_pending(f, &ct, DISPATCH_PENDING);
    slow_unwrap_done(slow_unwrap_arg, KC_ETIMEOUT, NULL);
    assert_int_equal(s->n.decrypt, 1); /* bridged by grace */
    send_encrypt_pending(f, DISPATCH_PENDING); /* provider still down */
    slow_complete(sp, KC_ETIMEOUT);
    send_decrypt_pending(f, &ct, DISPATCH_PENDING);
    slow_unwrap_done(slow_unwrap_arg, KC_ETIMEOUT, NULL);
    assert_int_equal(s->n.decrypt, 2); /* still inside decrypt grace */
    kc_buf_clear(&ct);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

/* Same at a usage cap, with decrypt_ttl < ttl. */
static void
test_decrypt_grace_survives_cap(void **state)
{
    struct fixture *f = fixture_new("ttl = 300\ndecrypt_ttl = 10\n"
                                    "decrypt_grace = 60\nmax_messages = 3",
                                    100);
    struct keyslot *s = slot_of(f, "k");
    struct kc_buf ct;

    kc_buf_init(&ct, 0);
    do_encrypt(f, "k", 16, &ct, 0);
    fake_now += 11000;
    do_encrypt(f, "k", 16, NULL, 0);
    do_encrypt(f, "k", 16, NULL, 0); /* third message: retired */
    install_slow_unwrap(f, s);
    send_decrypt_pending(f, &ct, DISPATCH_PENDING);
    slow_unwrap_done(slow_unwrap_arg, KC_ETIMEOUT, NULL);
    assert_int_equal(s->n.decrypt, 1); /* expected: bridged by grace */
    kc_buf_clear(&ct);
    dispatch_shutdown(&f->a);
    fixture_free(f);
}

/* capacity 1 + refresh-ahead: no successor is fetched, since its insert
 * would evict the entry the request is about to use (ASan caught it). */
static void
test_refresh_ahead_capacity_one(void **state)
{
    struct fixture *f = fixture_new("ttl = 10\nrefresh_ahead = 0.5", 1);

    do_encrypt(f, "k", 8, NULL, 0);
    fake_now += 6000;
    do_encrypt(f, "k", 8, NULL, 0);
    fixture_free(f);
}

/* A key that never encrypted anything is removed, not kept for
 * decryption, when it stops encrypting. */
static void
test_unused_key_not_kept(void **state)
{
    struct fixture *f = fixture_new("ttl = 10\ndecrypt_ttl = 300\n"
                                    "refresh_ahead = 0.5", 100);
    struct cache_totals t;
    size_t slots0 = keymem_slots_used();

    do_encrypt(f, "k", 8, NULL, 0);
    fake_now += 6000;
    do_encrypt(f, "k", 8, NULL, 0); /* successor fetched */
    fake_now += 20000;              /* both past ttl */
    do_encrypt(f, "k", 8, NULL, 0);
    cache_totals_get(f->a.cache, &t);
    assert_int_equal(t.entries, 2); /* old key (decrypts) + new key */
    assert_int_equal(keymem_slots_used() - slots0, 2);
    fixture_free(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_expiry_makes_new_key),
        cmocka_unit_test(test_max_messages_exact),
        cmocka_unit_test(test_max_bytes),
        cmocka_unit_test(test_decrypt_uses_cache_and_survives_expiry),
        cmocka_unit_test(test_one_entry_per_data_key),
        cmocka_unit_test(test_lru_eviction_and_wipe),
        cmocka_unit_test(test_errors_are_responses),
        cmocka_unit_test(test_single_flight_shares_one_call),
        cmocka_unit_test(
            test_single_flight_shares_failure_and_caches_nothing),
        cmocka_unit_test(test_max_messages_with_waiters),
        cmocka_unit_test(test_batch_items_wait_and_resume),
        cmocka_unit_test(test_refresh_ahead_no_request_path_calls),
        cmocka_unit_test(test_refresh_ahead_keeps_caps_exact),
        cmocka_unit_test(test_grace_bridges_outage_and_ends_exactly),
        cmocka_unit_test(test_decrypt_grace_bridges_outage),
        cmocka_unit_test(test_decrypt_grace_survives_encrypt_ttl),
        cmocka_unit_test(test_decrypt_grace_survives_cap),
        cmocka_unit_test(test_unused_key_not_kept),
        cmocka_unit_test(test_refresh_ahead_capacity_one),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
