/*
 * dispatch.c - request decoding, the op table and the op handlers.
 *
 * Each handler reads its fields from the request map, does its work, and
 * only then packs a success response; on any failure it returns a KC_E*
 * code and leaves a client-safe message in rq->msg.  Messages never
 * contain plaintext, key bytes or encryption-context values.
 */
#include "dispatch.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keymem.h"
#include "log.h"
#include "wire.h"

#define MSG_MAX 200

struct req {
    struct agent *a;
    const struct peer *peer;
    const msgpack_object *map;
    uint64_t id;
    msgpack_packer pk;
    char msg[MSG_MAX];
    struct keyslot *slot; /* alias the request concerns, for counters */
};

typedef int (*handler_fn)(struct req *rq);

static int handle_hello(struct req *rq);
static int handle_ping(struct req *rq);
static int handle_encrypt(struct req *rq);
static int handle_decrypt(struct req *rq);
static int handle_stats(struct req *rq);

static const struct {
    const char *op;
    handler_fn fn;
} op_table[] = {
    {"hello", handle_hello},
    {"ping", handle_ping},
    {"encrypt", handle_encrypt},
    {"decrypt", handle_decrypt},
    {"stats", handle_stats},
};

#define N_OPS (sizeof(op_table) / sizeof(op_table[0]))

static int
fail(struct req *rq, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct req *rq, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(rq->msg, sizeof(rq->msg), fmt, ap);
    va_end(ap);
    return code;
}

/* Copy at most 32 printable ASCII bytes of a peer string for a message. */
static void
safe_copy(char *dst, size_t dstlen, const char *s, size_t n)
{
    size_t i, o = 0;

    for (i = 0; i < n && o + 1 < dstlen && o < 32; i++) {
        dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    }
    dst[o] = '\0';
}

static void
pack_ok_header(struct req *rq, uint32_t nfields)
{
    msgpack_pack_map(&rq->pk, 2 + nfields);
    proto_pack_cstr(&rq->pk, "id");
    msgpack_pack_uint64(&rq->pk, rq->id);
    proto_pack_cstr(&rq->pk, "ok");
    msgpack_pack_true(&rq->pk);
}

/*
 * Read the optional map field `key` as an encryption context: every key
 * and value a msgpack str.  Duplicates and bad UTF-8 are refused by
 * esdk_ec_add.
 */
static int
get_context(struct req *rq, const char *key, struct esdk_ec *ec)
{
    const msgpack_object *m;
    uint32_t i;
    int r;

    if ((r = proto_get_map(rq->map, key, false, &m)) == 1) {
        return 0;
    }
    if (r != 0) {
        return fail(rq, KC_EINVAL, "field '%s' must be a map", key);
    }
    for (i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        const msgpack_object *v = &m->via.map.ptr[i].val;

        if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR) {
            return fail(rq, KC_EINVAL,
                        "field '%s': keys and values must be strings", key);
        }
        r = esdk_ec_add(ec, k->via.str.ptr, k->via.str.size, v->via.str.ptr,
                        v->via.str.size);
        if (r == KC_ETOOBIG) {
            return fail(rq, KC_ETOOBIG, "field '%s': entry over 65535 bytes",
                        key);
        }
        if (r != 0) {
            return fail(rq, r == KC_ENOMEM ? r : KC_ECONTEXT,
                        "field '%s': empty or duplicate key, or not UTF-8",
                        key);
        }
    }
    return 0;
}

static int
get_slot(struct req *rq, struct keyslot **out)
{
    const char *alias;
    size_t len;
    char shown[40];

    if (proto_get_str(rq->map, "key", true, &alias, &len) != 0) {
        return fail(rq, KC_EINVAL, "field 'key' (string) is required");
    }
    if ((*out = keyring_find(rq->a->keys, alias, len)) == NULL) {
        safe_copy(shown, sizeof(shown), alias, len);
        return fail(rq, KC_ENOKEY, "no key alias '%s' is configured", shown);
    }
    rq->slot = *out;
    return 0;
}

static int
handle_hello(struct req *rq)
{
    const msgpack_object *v = proto_map_get(rq->map, "versions");
    bool found = false;
    uint32_t i;
    size_t k;

    if (v == NULL || v->type != MSGPACK_OBJECT_ARRAY) {
        return fail(rq, KC_EINVAL, "field 'versions' (array) is required");
    }
    for (i = 0; i < v->via.array.size; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];

        if (e->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            e->via.u64 == PROTO_VERSION) {
            found = true;
        }
    }
    if (!found) {
        return fail(rq, KC_EVERSION,
                    "no protocol version in common; this agent speaks %d",
                    PROTO_VERSION);
    }
    pack_ok_header(rq, 4);
    proto_pack_cstr(&rq->pk, "version");
    msgpack_pack_uint32(&rq->pk, PROTO_VERSION);
    proto_pack_cstr(&rq->pk, "agent");
    proto_pack_cstr(&rq->pk, "keycache-agent " KC_VERSION);
    proto_pack_cstr(&rq->pk, "max_frame");
    msgpack_pack_uint64(&rq->pk, rq->a->cfg->max_frame);
    proto_pack_cstr(&rq->pk, "ops");
    msgpack_pack_array(&rq->pk, N_OPS);
    for (k = 0; k < N_OPS; k++) {
        proto_pack_cstr(&rq->pk, op_table[k].op);
    }
    return 0;
}

static int
handle_ping(struct req *rq)
{
    pack_ok_header(rq, 0);
    return 0;
}

/* Count a provider call and its outcome. */
static int
provider_result(struct req *rq, struct keyslot *slot, int r, const char *op)
{
    slot->n.provider_calls++;
    if (r == PROVIDER_PENDING) {
        /* TODO: asynchronous providers (remote KMS) need handlers that
         * suspend and resume; the local provider never returns PENDING.
         * Until then a pending result is refused rather than waited on. */
        r = KC_EUNSUPPORTED;
    }
    if (r != 0) {
        slot->n.provider_errors++;
        log_warn("key %s: provider %s %s failed: %s", slot->cfg->alias,
                 slot->provider->ops->name, op, kc_errname(r));
    }
    return r;
}

/*
 * A fresh encryption entry for slot: generate a data key (wrapped with
 * AAD ec_ser) and, for the non-signing suite whose EDK is the same for
 * every message, remember a decryption entry too so reading back what we
 * just wrote costs no provider call.
 */
static int
new_enc_entry(struct req *rq, struct keyslot *slot, const uint8_t *ec_ser,
              size_t ec_len, struct cache_entry **out)
{
    struct provider *p = slot->provider;
    struct cache_entry *e = NULL, *d = NULL;
    uint8_t id[CACHE_ID_LEN];
    int r;

    if ((r = cache_entry_new(CACHE_ENC, slot, 32, &e)) != 0) {
        return fail(rq, r, "out of locked memory for keys");
    }
    r = p->ops->generate(p, ec_ser, ec_len, e->dk, e->dk_len, &e->edks, NULL,
                         NULL);
    if ((r = provider_result(rq, slot, r, "generate")) != 0) {
        cache_entry_free(e);
        return fail(rq, KC_EPROVIDER, "provider failed to generate a key");
    }
    log_info("key %s: generated a new data key", slot->cfg->alias);
    if (e->edks.n > 0 && cache_entry_new(CACHE_DEC, slot, 32, &d) == 0) {
        memcpy(d->dk, e->dk, 32);
        cache_id_dec(rq->a->cache, slot->cfg->alias, &e->edks.v[0], ec_ser,
                     ec_len, id);
        cache_insert(rq->a->cache, d, id, slot->cfg->decrypt_ttl_ms);
    }
    *out = e;
    return 0;
}

/*
 * The encryption entry to use for a plaintext of pt_len bytes.  *single
 * is set when the entry must be used once and dropped (the plaintext
 * alone is over max_bytes).
 */
static int
get_enc_entry(struct req *rq, struct keyslot *slot, const uint8_t *ec_ser,
              size_t ec_len, size_t pt_len, struct cache_entry **out,
              bool *single)
{
    const struct key_config *k = slot->cfg;
    struct cache *c = rq->a->cache;
    struct cache_entry *e;
    uint8_t id[CACHE_ID_LEN];
    int r;

    *single = pt_len > k->max_bytes;
    cache_id_enc(c, k->alias, ec_ser, ec_len, id);
    e = *single ? NULL : cache_lookup(c, id);
    if (e != NULL && e->bytes + pt_len > k->max_bytes) {
        log_info("key %s: data key reached max_bytes; rotating", k->alias);
        cache_retire(c, e);
        e = NULL;
    }
    if (e != NULL) {
        slot->n.cache_hits++;
        *out = e;
        return 0;
    }
    slot->n.cache_misses++;
    if ((r = new_enc_entry(rq, slot, ec_ser, ec_len, &e)) != 0) {
        return r;
    }
    if (!*single) {
        cache_insert(c, e, id, k->ttl_ms);
    }
    *out = e;
    return 0;
}

/* Account one message against e; retire it exactly at a cap. */
static void
use_enc_entry(struct req *rq, struct cache_entry *e, size_t pt_len,
              bool single)
{
    const struct key_config *k = e->slot->cfg;

    e->messages++;
    e->bytes += pt_len;
    if (single) {
        cache_entry_free(e);
        return;
    }
    if (e->messages >= k->max_messages || e->bytes >= k->max_bytes) {
        log_info("key %s: data key used for %llu messages, %llu bytes; "
                 "retired at its cap", k->alias,
                 (unsigned long long)e->messages,
                 (unsigned long long)e->bytes);
        cache_retire(rq->a->cache, e);
    }
}

static int
encrypt_message(struct req *rq, struct keyslot *slot, const struct esdk_ec *ec,
                const uint8_t *pt, size_t pt_len, struct kc_buf *ct)
{
    const struct key_config *k = slot->cfg;
    struct provider *p = slot->provider;
    struct esdk_enc *enc = NULL;
    struct esdk_edk_list edks;
    struct cache_entry *e = NULL;
    struct kc_buf ec_ser;
    const uint8_t *aad;
    size_t aad_len;
    bool single = false;
    int r;

    esdk_edk_list_init(&edks);
    kc_buf_init(&ec_ser, 0);
    if ((r = esdk_ec_serialize(ec, &ec_ser)) != 0) {
        r = fail(rq, r, "encryption context over 65535 bytes serialized");
        goto out;
    }
    if ((r = esdk_enc_new(k->suite, ec, &enc)) != 0) {
        r = fail(rq, r, "cannot start message: %s", kc_strerror(r));
        goto out;
    }
    if ((r = get_enc_entry(rq, slot, ec_ser.data, ec_ser.len, pt_len, &e,
                           &single)) != 0) {
        goto out;
    }
    esdk_enc_wrapping_aad(enc, &aad, &aad_len);
    if (k->suite == ESDK_SUITE_AES256_HKDF_SHA512_COMMIT) {
        r = esdk_edk_list_copy(&edks, &e->edks);
    } else {
        /* Signing suite: the context carries this message's public key,
         * so the data key is wrapped again for every message. */
        r = p->ops->wrap(p, aad, aad_len, e->dk, e->dk_len, &edks, NULL,
                         NULL);
        r = provider_result(rq, slot, r, "wrap");
    }
    if (r != 0) {
        if (single) {
            cache_entry_free(e);
        }
        r = fail(rq, r == KC_ENOMEM ? r : KC_EPROVIDER,
                 "cannot wrap the data key");
        goto out;
    }
    r = esdk_enc_finish(enc, e->dk, e->dk_len, &edks, k->frame_len, pt,
                        pt_len, ct);
    if (r != 0) {
        if (single) {
            cache_entry_free(e);
        }
        r = fail(rq, r, "encryption failed: %s", kc_strerror(r));
        goto out;
    }
    use_enc_entry(rq, e, pt_len, single);
out:
    esdk_enc_free(enc);
    esdk_edk_list_clear(&edks);
    kc_buf_clear(&ec_ser);
    return r;
}

static int
handle_encrypt(struct req *rq)
{
    struct keyslot *slot;
    struct esdk_ec ec;
    struct kc_buf ct;
    const uint8_t *pt;
    size_t pt_len;
    int r;

    esdk_ec_init(&ec);
    kc_buf_init(&ct, 0);
    if ((r = get_slot(rq, &slot)) != 0) {
        goto out;
    }
    if (proto_get_bin(rq->map, "plaintext", true, &pt, &pt_len) != 0) {
        r = fail(rq, KC_EINVAL, "field 'plaintext' (bin) is required");
        goto out;
    }
    if (pt_len > PROTO_MAX_PLAINTEXT) {
        r = fail(rq, KC_ETOOBIG, "plaintext is %zu bytes; the limit is %d",
                 pt_len, PROTO_MAX_PLAINTEXT);
        goto out;
    }
    if ((r = get_context(rq, "context", &ec)) != 0) {
        goto out;
    }
    if (esdk_ec_check_caller(&ec) != 0) {
        r = fail(rq, KC_ECONTEXT,
                 "context keys starting with 'aws-crypto-' are reserved");
        goto out;
    }
    if ((r = encrypt_message(rq, slot, &ec, pt, pt_len, &ct)) != 0) {
        goto out;
    }
    slot->n.encrypt++;
    pack_ok_header(rq, 1);
    proto_pack_cstr(&rq->pk, "ciphertext");
    proto_pack_bin(&rq->pk, ct.data, ct.len);
out:
    esdk_ec_clear(&ec);
    kc_buf_clear(&ct);
    return r;
}

/*
 * The data key for one EDK through slot: from the cache, or unwrapped by
 * the provider and then cached.  *dk borrows the entry's key.
 */
static int
get_dec_key(struct req *rq, struct keyslot *slot,
            const struct esdk_header *h, const struct esdk_edk *edk,
            const uint8_t **dk)
{
    struct cache *c = rq->a->cache;
    struct provider *p = slot->provider;
    struct cache_entry *e;
    uint8_t id[CACHE_ID_LEN];
    int r;

    cache_id_dec(c, slot->cfg->alias, edk, h->ec_canonical.data,
                 h->ec_canonical.len, id);
    if ((e = cache_lookup(c, id)) != NULL && e->dk_len == h->suite->key_len) {
        slot->n.cache_hits++;
        *dk = e->dk;
        return 0;
    }
    slot->n.cache_misses++;
    if ((r = cache_entry_new(CACHE_DEC, slot, h->suite->key_len, &e)) != 0) {
        return r;
    }
    r = p->ops->unwrap(p, edk, h->ec_canonical.data, h->ec_canonical.len,
                       e->dk, e->dk_len, NULL, NULL);
    if ((r = provider_result(rq, slot, r, "unwrap")) != 0) {
        cache_entry_free(e);
        return r;
    }
    cache_insert(c, e, id, slot->cfg->decrypt_ttl_ms);
    *dk = e->dk;
    return 0;
}

/*
 * Try every EDK of the message against every alias whose provider claims
 * it, in header order; the first data key that unwraps decrypts.
 */
static int
decrypt_message(struct req *rq, const struct esdk_header *h,
                const uint8_t *msg, size_t len, struct kc_buf *pt)
{
    struct keyring *kr = rq->a->keys;
    const uint8_t *dk;
    size_t i, j;
    int r;

    for (i = 0; i < h->edks.n; i++) {
        for (j = 0; j < kr->n; j++) {
            struct keyslot *slot = &kr->slots[j];

            if (!slot->provider->ops->edk_matches(slot->provider,
                                                  &h->edks.v[i])) {
                continue;
            }
            if (get_dec_key(rq, slot, h, &h->edks.v[i], &dk) != 0) {
                continue;
            }
            rq->slot = slot;
            r = esdk_decrypt(h, msg, len, dk, h->suite->key_len,
                             &rq->a->limits, pt);
            if (r != 0) {
                return fail(rq, r, "message does not verify: %s",
                            kc_strerror(r));
            }
            return 0;
        }
    }
    return fail(rq, KC_ENODATAKEY,
                "no configured key could unwrap any of the message's %zu "
                "data keys", h->edks.n);
}

static void
pack_context(msgpack_packer *pk, const struct esdk_ec *ec)
{
    size_t i;

    msgpack_pack_map(pk, ec->n);
    for (i = 0; i < ec->n; i++) {
        proto_pack_strn(pk, (const char *)ec->pairs[i].key,
                        ec->pairs[i].key_len);
        proto_pack_strn(pk, (const char *)ec->pairs[i].val,
                        ec->pairs[i].val_len);
    }
}

static int
handle_decrypt(struct req *rq)
{
    struct esdk_header *h = NULL;
    struct esdk_ec want;
    struct kc_buf pt;
    const uint8_t *ct;
    size_t ct_len;
    int r;

    esdk_ec_init(&want);
    kc_buf_init(&pt, 0);
    if (proto_get_bin(rq->map, "ciphertext", true, &ct, &ct_len) != 0) {
        r = fail(rq, KC_EINVAL, "field 'ciphertext' (bin) is required");
        goto out;
    }
    if ((r = get_context(rq, "context", &want)) != 0) {
        goto out;
    }
    if ((r = esdk_header_parse(ct, ct_len, &rq->a->limits, &h)) != 0) {
        r = fail(rq, r, "cannot read message header: %s", kc_strerror(r));
        goto out;
    }
    if (!esdk_ec_contains(&h->ec, &want)) {
        r = fail(rq, KC_ECONTEXT,
                 "the message's encryption context does not contain the "
                 "requested pairs");
        goto out;
    }
    if ((r = decrypt_message(rq, h, ct, ct_len, &pt)) != 0) {
        goto out;
    }
    rq->slot->n.decrypt++;
    pack_ok_header(rq, 3);
    proto_pack_cstr(&rq->pk, "plaintext");
    proto_pack_bin(&rq->pk, pt.data, pt.len);
    proto_pack_cstr(&rq->pk, "key");
    proto_pack_cstr(&rq->pk, rq->slot->cfg->alias);
    proto_pack_cstr(&rq->pk, "context");
    pack_context(&rq->pk, &h->ec);
out:
    esdk_header_free(h);
    esdk_ec_clear(&want);
    kc_buf_clear(&pt);
    return r;
}

static void
pack_u64(msgpack_packer *pk, const char *name, uint64_t v)
{
    proto_pack_cstr(pk, name);
    msgpack_pack_uint64(pk, v);
}

static void
pack_key_stats(msgpack_packer *pk, const struct keyslot *s)
{
    msgpack_pack_map(pk, 9);
    pack_u64(pk, "encrypt", s->n.encrypt);
    pack_u64(pk, "decrypt", s->n.decrypt);
    pack_u64(pk, "errors", s->n.errors);
    pack_u64(pk, "cache_hits", s->n.cache_hits);
    pack_u64(pk, "cache_misses", s->n.cache_misses);
    pack_u64(pk, "provider_calls", s->n.provider_calls);
    pack_u64(pk, "provider_errors", s->n.provider_errors);
    pack_u64(pk, "entries", s->entries);
    pack_u64(pk, "locked_bytes", (uint64_t)s->entries * KEYMEM_SLOT_SIZE);
}

static int
handle_stats(struct req *rq)
{
    struct agent *a = rq->a;
    msgpack_packer *pk = &rq->pk;
    struct cache_totals t;
    size_t i;

    cache_totals_get(a->cache, &t);
    pack_ok_header(rq, 1);
    proto_pack_cstr(pk, "stats");
    msgpack_pack_map(pk, 3);

    proto_pack_cstr(pk, "keys");
    msgpack_pack_map(pk, a->keys->n);
    for (i = 0; i < a->keys->n; i++) {
        proto_pack_cstr(pk, a->keys->slots[i].cfg->alias);
        pack_key_stats(pk, &a->keys->slots[i]);
    }

    proto_pack_cstr(pk, "cache");
    msgpack_pack_map(pk, 7);
    pack_u64(pk, "entries", t.entries);
    pack_u64(pk, "capacity", t.capacity);
    pack_u64(pk, "locked_bytes", keymem_locked_bytes());
    pack_u64(pk, "locked_bytes_in_use",
             (uint64_t)keymem_slots_used() * KEYMEM_SLOT_SIZE);
    pack_u64(pk, "evictions", t.evictions);
    pack_u64(pk, "expirations", t.expirations);
    pack_u64(pk, "retired", t.retired);

    proto_pack_cstr(pk, "agent");
    msgpack_pack_map(pk, 5);
    proto_pack_cstr(pk, "version");
    proto_pack_cstr(pk, KC_VERSION);
    pack_u64(pk, "uptime_seconds",
             (cache_clock_monotonic() - a->started_ms) / 1000);
    pack_u64(pk, "connections", a->nconns);
    pack_u64(pk, "connections_total", a->n.connections);
    pack_u64(pk, "requests", a->n.requests);
    return 0;
}

static handler_fn
find_handler(const char *op, size_t len)
{
    size_t i;

    for (i = 0; i < N_OPS; i++) {
        if (strlen(op_table[i].op) == len &&
            memcmp(op_table[i].op, op, len) == 0) {
            return op_table[i].fn;
        }
    }
    return NULL;
}

static const char *
op_name_of(handler_fn fn)
{
    size_t i;

    for (i = 0; i < N_OPS; i++) {
        if (op_table[i].fn == fn) {
            return op_table[i].op;
        }
    }
    return "?";
}

/* Run the op named in the request; returns its code, message in rq. */
static int
run_op(struct req *rq, const char **opname)
{
    const char *op;
    size_t op_len;
    char shown[40];
    handler_fn fn;

    if (proto_get_str(rq->map, "op", true, &op, &op_len) != 0) {
        return fail(rq, KC_EINVAL, "field 'op' (string) is required");
    }
    if ((fn = find_handler(op, op_len)) == NULL) {
        safe_copy(shown, sizeof(shown), op, op_len);
        return fail(rq, KC_EUNKNOWNOP, "unknown op '%s'", shown);
    }
    *opname = op_name_of(fn);
    return fn(rq);
}

int
dispatch_request(struct agent *a, const struct peer *peer,
                 const uint8_t *body, size_t len, struct kc_buf *out)
{
    msgpack_unpacked u;
    struct req rq;
    const char *opname = NULL;
    bool has_id = false;
    size_t mark, start = out->len;
    int r;

    memset(&rq, 0, sizeof(rq));
    rq.a = a;
    rq.peer = peer;
    a->n.requests++;
    msgpack_unpacked_init(&u);
    if (proto_frame_begin(out, &mark) != 0) {
        msgpack_unpacked_destroy(&u);
        return KC_ENOMEM;
    }
    proto_packer_init(&rq.pk, out);

    if ((r = proto_unpack_map(body, len, &u)) != 0) {
        fail(&rq, r, "request is not a single msgpack map");
    } else {
        rq.map = &u.data;
        if (proto_get_uint(rq.map, "id", true, &rq.id) != 0) {
            r = fail(&rq, KC_EINVAL,
                     "field 'id' (unsigned integer) is required");
        } else {
            has_id = true;
            r = run_op(&rq, &opname);
        }
    }
    if (r == 0 && proto_frame_end(out, mark, a->cfg->max_frame) != 0) {
        r = fail(&rq, KC_ETOOBIG, "response would exceed max_frame");
    }
    if (r != 0) {
        int code = r;

        /* Drop any partial success body; send the error instead. */
        kc_wipe(out->data + mark, out->len - mark);
        out->len = mark;
        r = proto_frame_begin(out, &mark);
        if (r == 0) {
            proto_pack_error(&rq.pk, has_id, rq.id, code, rq.msg);
            r = proto_frame_end(out, mark, a->cfg->max_frame);
        }
        if (rq.slot != NULL) {
            rq.slot->n.errors++;
        }
        if (!has_id) {
            a->n.bad_requests++;
        }
        log_debug("request from pid %ld uid %ld: op %s failed: %s: %s",
                  (long)peer->pid, (long)peer->uid,
                  opname != NULL ? opname : "(none)", kc_errname(code),
                  rq.msg);
    }
    msgpack_unpacked_destroy(&u);
    if (r != 0) {
        kc_wipe(out->data + start, out->len - start);
        out->len = start;
        return KC_ENOMEM;
    }
    return 0;
}
