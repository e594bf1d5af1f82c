/*
 * handlers.c - the ops: hello, ping, encrypt, decrypt, stats.
 *
 * Each handler reads its fields from the request map, does its work, and
 * only then packs a success response; on failure it returns a KC_E* code
 * with a client-safe message in rq->msg (never plaintext, key bytes or
 * encryption-context values).  A handler that must wait for a provider
 * returns REQ_PENDING and is run again from the start later (request.h).
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "keymem.h"
#include "log.h"
#include "reload.h"
#include "request.h"
#include "wire.h"

#define fail req_fail

/* Pairs in a request's context: plenty for real use, and it keeps the
 * duplicate check (quadratic in the pair count) cheap on the loop. */
#define MAX_CONTEXT_PAIRS 1024

static void
pack_ok_header(struct req *rq, uint32_t nfields)
{
    if (rq->is_item) {
        msgpack_pack_map(&rq->pk, 1 + nfields);
    } else {
        msgpack_pack_map(&rq->pk, 2 + nfields);
        proto_pack_cstr(&rq->pk, "id");
        msgpack_pack_uint64(&rq->pk, rq->id);
    }
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
    if (m->via.map.size > MAX_CONTEXT_PAIRS) {
        return fail(rq, KC_ETOOBIG, "field '%s' has %u pairs; the limit is "
                    "%d", key, m->via.map.size, MAX_CONTEXT_PAIRS);
    }
    for (i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        const msgpack_object *v = &m->via.map.ptr[i].val;

        if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR) {
            return fail(rq, KC_EINVAL,
                        "field '%s': keys and values must be strings", key);
        }
        r = esdk_ec_add(ec, proto_str_bytes(k), k->via.str.size,
                        proto_str_bytes(v), v->via.str.size);
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
        req_safe_copy(shown, sizeof(shown), alias, len);
        return fail(rq, KC_ENOKEY, "no key alias '%s' is configured", shown);
    }
    rq->slot = *out;
    return 0;
}

enum op_kind {
    OPK_ENCRYPT = 0,
    OPK_DECRYPT = 1,
};

/* Audit a grant once per connection, alias and op; denials always. */
static void
audit_grant(struct req *rq, size_t bit, const char *op, const char *alias)
{
    uint64_t mask = bit < 64 ? (uint64_t)1 << bit : 0;

    if (rq->peer->grants_gen != rq->a->keys_gen) {
        rq->peer->grants_logged = 0;
        rq->peer->grants_gen = rq->a->keys_gen;
    }
    if (mask != 0 && (rq->peer->grants_logged & mask) != 0) {
        return;
    }
    rq->peer->grants_logged |= mask;
    audit_decision(rq->peer, op, alias, true);
}

/*
 * May this connection's peer run kind on slot?  Returns 0, or
 * KC_EDENIED naming the op and alias (after an audit line).
 */
static int
authorize(struct req *rq, struct keyslot *slot, enum op_kind kind)
{
    const char *op = kind == OPK_ENCRYPT ? "encrypt" : "decrypt";
    const struct authz_policy *p =
        kind == OPK_ENCRYPT ? &slot->allow_encrypt : &slot->allow_decrypt;
    size_t idx = (size_t)(slot - rq->a->keys->slots);

    if (!authz_allows(p, rq->peer)) {
        audit_decision(rq->peer, op, slot->cfg->alias, false);
        return fail(rq, KC_EDENIED,
                    "permission denied: uid %ld may not %s with key '%s'",
                    (long)rq->peer->uid, op, slot->cfg->alias);
    }
    audit_grant(rq, idx * 2 + kind, op, slot->cfg->alias);
    return 0;
}

int
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
    pack_ok_header(rq, 5);
    proto_pack_cstr(&rq->pk, "version");
    msgpack_pack_uint32(&rq->pk, PROTO_VERSION);
    proto_pack_cstr(&rq->pk, "agent");
    proto_pack_cstr(&rq->pk, "keycache-agent " KC_VERSION);
    proto_pack_cstr(&rq->pk, "max_frame");
    msgpack_pack_uint64(&rq->pk, rq->a->cfg->max_frame);
    proto_pack_cstr(&rq->pk, "max_response");
    msgpack_pack_uint64(&rq->pk,
                        rq->a->cfg->max_frame + PROTO_RESPONSE_SLACK);
    proto_pack_cstr(&rq->pk, "ops");
    msgpack_pack_array(&rq->pk, dispatch_op_count());
    for (k = 0; k < dispatch_op_count(); k++) {
        proto_pack_cstr(&rq->pk, dispatch_op_name(k));
    }
    return 0;
}

int
handle_ping(struct req *rq)
{
    pack_ok_header(rq, 0);
    return 0;
}

/*
 * Account one message against e; retire it exactly at a cap, so with
 * max_messages = N exactly N messages use one data key.
 */
static void
use_enc_entry(struct req *rq, struct cache_entry *e, size_t pt_len)
{
    const struct key_config *k = e->slot->cfg;

    e->messages++;
    e->bytes += pt_len;
    if (e->messages >= k->max_messages || e->bytes >= k->max_bytes) {
        log_debug("key %s: data key used for %llu messages, %llu bytes",
                  k->alias, (unsigned long long)e->messages,
                  (unsigned long long)e->bytes);
        cache_retire(rq->a->cache, e);
    }
}

/*
 * The EDKs for one message of a signing suite: its context carries this
 * message's public key, so the data key is wrapped again (by local keys,
 * see keyring.c) with that context, under the primary key and every
 * also_wrap_with key.  (The non-signing suite uses the entry's header
 * template instead.)
 */
static int
message_edks(struct req *rq, struct keyslot *slot, struct cache_entry *e,
             const struct esdk_ec *ec, struct esdk_enc *enc,
             struct esdk_edk_list *edks)
{
    const uint8_t *aad;
    size_t aad_len, i;
    int r;

    esdk_enc_wrapping_aad(enc, &aad, &aad_len);
    for (i = 0; i <= slot->nextra; i++) {
        struct provider *p = i == 0 ? slot->provider
                                    : slot->extra[i - 1]->provider;

        r = p->ops->wrap(p, ec, aad, aad_len, e->dk, e->dk_len, edks, NULL,
                         NULL, NULL);
        if (r != 0) {
            return r == PROVIDER_PENDING ? KC_EUNSUPPORTED : r;
        }
    }
    return 0;
}

/* The success reply of an encrypt, up to the ciphertext's bytes. */
static void
pack_encrypt_reply(struct req *rq, size_t ct_len)
{
    pack_ok_header(rq, 1);
    proto_pack_cstr(&rq->pk, "ciphertext");
    msgpack_pack_bin(&rq->pk, ct_len);
}

/*
 * The non-signing suite: every message under e's data key shares its
 * header but for the message ID, so the header parts are serialized once
 * per entry (esdk_tmpl) and each message costs only the crypto.  The
 * message is written straight into the reply (its length is known
 * beforehand); on failure the caller discards the partial reply.
 */
static int
encrypt_with_tmpl(struct req *rq, struct cache_entry *e,
                  const struct esdk_ec *ec, struct esdk_msg_start *ms,
                  const uint8_t *pt, size_t pt_len)
{
    const struct key_config *k = e->slot->cfg;
    struct kc_buf *out = rq->pk.data;
    size_t len, start;
    int r;

    /* A reload that changes frame_len wipes the alias's entries
     * (reload.c), so a template always matches its alias. */
    if (e->tmpl != NULL && esdk_tmpl_frame_len(e->tmpl) != k->frame_len) {
        return fail(rq, KC_EINVAL, "stale header template");
    }
    if (e->tmpl == NULL) {
        if (e->edks.n == 0) {
            return fail(rq, KC_EINVAL, "data key entry lost its EDKs");
        }
        if ((r = cache_entry_build_tmpl(e, k->suite, ec, k->frame_len)) !=
            0) {
            return fail(rq, r, "cannot start message: %s", kc_strerror(r));
        }
    }
    len = esdk_tmpl_msg_len(e->tmpl, pt_len);
    pack_encrypt_reply(rq, len);
    start = out->len;
    if ((r = esdk_tmpl_encrypt_started(e->tmpl, ms, e->dk, e->dk_len, pt,
                                       pt_len, out)) != 0) {
        return fail(rq, r, "encryption failed: %s", kc_strerror(r));
    }
    if (out->len - start != len) {
        return fail(rq, KC_ESYS, "internal error: message length");
    }
    use_enc_entry(rq, e, pt_len);
    return 0;
}

/* Encrypt pt and pack the success reply. */
static int
encrypt_message(struct req *rq, struct keyslot *slot, const struct esdk_ec *ec,
                const uint8_t *pt, size_t pt_len)
{
    const struct key_config *k = slot->cfg;
    const bool tmpl = k->suite == ESDK_SUITE_AES256_HKDF_SHA512_COMMIT;
    struct esdk_msg_start ms;
    struct esdk_enc *enc = NULL;
    struct esdk_edk_list edks;
    struct cache_entry *e = NULL;
    struct kc_buf ec_ser, ct;
    uint8_t ec_small[512]; /* a typical context, serialized (public) */
    const uint8_t *ec_bytes = ec_small;
    size_t ec_len = 0;
    int r;

    esdk_edk_list_init(&edks);
    kc_buf_init(&ec_ser, 0);
    kc_buf_init(&ct, 0);
    r = esdk_ec_serialized_len(ec) <= sizeof(ec_small)
            ? esdk_ec_serialize_to(ec, ec_small, sizeof(ec_small), &ec_len)
            : esdk_ec_serialize(ec, &ec_ser);
    if (r != 0) {
        r = fail(rq, r, "encryption context over 65535 bytes serialized");
        goto out;
    }
    if (ec_ser.len > 0) {
        ec_bytes = ec_ser.data;
        ec_len = ec_ser.len;
    }
    ms.stage = ESDK_MSG_UNUSED;
    if ((r = flight_enc_entry(rq, slot, ec, ec_bytes, ec_len, pt_len,
                              tmpl ? &ms : NULL, &e)) != 0) {
        goto out;
    }
    if (tmpl) {
        r = encrypt_with_tmpl(rq, e, ec, &ms, pt, pt_len);
        goto out;
    }
    if ((r = esdk_enc_new(k->suite, ec, &enc)) != 0) {
        r = fail(rq, r, "cannot start message: %s", kc_strerror(r));
        goto out;
    }
    if ((r = message_edks(rq, slot, e, ec, enc, &edks)) != 0) {
        r = fail(rq, r == KC_ENOMEM ? r : KC_EPROVIDER,
                 "cannot wrap the data key: %s", kc_strerror(r));
        goto out;
    }
    r = esdk_enc_finish(enc, e->dk, e->dk_len, &edks, k->frame_len, pt,
                        pt_len, &ct);
    if (r != 0) {
        r = fail(rq, r, "encryption failed: %s", kc_strerror(r));
        goto out;
    }
    use_enc_entry(rq, e, pt_len);
    pack_encrypt_reply(rq, ct.len);
    msgpack_pack_bin_body(&rq->pk, ct.data, ct.len);
out:
    esdk_enc_free(enc);
    esdk_edk_list_clear(&edks);
    kc_buf_clear(&ec_ser);
    kc_buf_clear(&ct);
    return r;
}

int
handle_encrypt(struct req *rq)
{
    struct keyslot *slot;
    struct esdk_ec ec;
    const uint8_t *pt;
    size_t pt_len;
    int r;

    esdk_ec_init_borrowed(&ec); /* the request map outlives it */
    if ((r = get_slot(rq, &slot)) != 0 ||
        (r = authorize(rq, slot, OPK_ENCRYPT)) != 0) {
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
    if ((r = encrypt_message(rq, slot, &ec, pt, pt_len)) != 0) {
        goto out;
    }
    slot->n.encrypt++;
out:
    esdk_ec_clear(&ec);
    return r;
}

/*
 * Why a header was refused, naming the algorithm suite when that is the
 * reason (the suite ID sits at byte 1 in v2 headers, byte 2 in v1).
 */
static int
fail_header(struct req *rq, int r, const uint8_t *ct, size_t len)
{
    const struct esdk_suite *s = NULL;
    uint16_t id = 0;

    if (len >= 4 && (ct[0] == 1 || ct[0] == 2)) {
        id = ct[0] == 2 ? kc_load_u16(ct + 1) : kc_load_u16(ct + 2);
        s = esdk_suite_get(id);
    }
    if (r == KC_EUNSUPPORTED && s != NULL && !s->committing) {
        return fail(rq, r, "algorithm suite 0x%04x (%s) has no key "
                    "commitment; reading it needs allow_legacy_suites = "
                    "true", id, s->name);
    }
    if (r == KC_EFORMAT && len >= 2 && ct[0] == 'A' &&
        (ct[1] == 'Y' || ct[1] == 'g')) {
        return fail(rq, r, "malformed message header: the input looks "
                    "like Base64; decode it first");
    }
    if (r == KC_ETOOBIG) {
        return fail(rq, r, "message over a reader limit (max_edks, "
                    "max_message_size, max_body_frames or "
                    "max_frame_length)");
    }
    return fail(rq, r, "cannot read message header: %s", kc_strerror(r));
}

/*
 * Try every EDK of the message against every alias whose provider claims
 * it, in header order; the first data key that unwraps decrypts.  A
 * provider failure on one EDK moves on to the next; the last such
 * failure is reported if none works.
 */
static int
decrypt_message(struct req *rq, const struct esdk_header *h,
                const uint8_t *msg, size_t len, struct kc_buf *pt)
{
    struct keyring *kr = rq->a->keys;
    const uint8_t *dk;
    size_t i, j;
    int r, last = 0;

    for (i = 0; i < h->edks.n; i++) {
        for (j = 0; j < kr->n; j++) {
            struct keyslot *slot = &kr->slots[j];

            if (!slot->provider->ops->edk_matches(slot->provider,
                                                  &h->edks.v[i])) {
                continue;
            }
            if ((r = authorize(rq, slot, OPK_DECRYPT)) != 0) {
                last = r; /* another alias may hold this key */
                continue;
            }
            r = flight_dec_key(rq, slot, h, &h->edks.v[i], &dk);
            if (r == REQ_PENDING) {
                return r;
            }
            if (r != 0) {
                last = r;
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
    if (last != 0) {
        return last; /* message already set by the failing flight */
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

int
handle_decrypt(struct req *rq)
{
    struct esdk_header *h = NULL;
    struct esdk_ec want;
    struct kc_buf pt;
    const uint8_t *ct;
    size_t ct_len;
    int r;

    esdk_ec_init_borrowed(&want);
    kc_buf_init(&pt, 0);
    if (proto_get_bin(rq->map, "ciphertext", true, &ct, &ct_len) != 0) {
        r = fail(rq, KC_EINVAL, "field 'ciphertext' (bin) is required");
        goto out;
    }
    if ((r = get_context(rq, "context", &want)) != 0) {
        goto out;
    }
    if ((r = esdk_header_parse(ct, ct_len, &rq->a->limits, &h)) != 0) {
        r = fail_header(rq, r, ct, ct_len);
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

int
handle_stats(struct req *rq)
{
    struct agent *a = rq->a;
    msgpack_packer *pk = &rq->pk;
    struct cache_totals t;
    size_t i;

    if (!authz_allows(&a->stats_policy, rq->peer)) {
        audit_decision(rq->peer, "stats", NULL, false);
        return fail(rq, KC_EDENIED, "permission denied: uid %ld may not "
                    "read stats", (long)rq->peer->uid);
    }
    audit_grant(rq, 63, "stats", NULL);
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


/* ---- batch ------------------------------------------------------------ */

#define MAX_BATCH_ITEMS 1024

void
batch_state_free(struct batch_state *bs)
{
    size_t i;

    if (bs == NULL) {
        return;
    }
    for (i = 0; i < bs->n; i++) {
        kc_buf_clear(&bs->results[i]);
    }
    free(bs->results);
    free(bs->done);
    free(bs);
}

static struct batch_state *
batch_state_new(size_t n)
{
    struct batch_state *bs = calloc(1, sizeof(*bs));
    size_t i;

    if (bs == NULL) {
        return NULL;
    }
    bs->results = calloc(n, sizeof(*bs->results));
    bs->done = calloc(n, sizeof(*bs->done));
    if (bs->results == NULL || bs->done == NULL) {
        free(bs->results);
        free(bs->done);
        free(bs);
        return NULL;
    }
    bs->n = n;
    for (i = 0; i < n; i++) {
        kc_buf_init(&bs->results[i], 0);
    }
    return bs;
}

/*
 * Run one batch item, appending its result map to dst.  Returns
 * REQ_PENDING (nothing appended; the item waits on *wait_on) or 0 (a
 * success or an error result appended).
 */
static int
batch_run_item(struct req *rq, const msgpack_object *item,
               struct kc_buf *dst, struct flight **wait_on)
{
    struct req sub;
    const char *op = NULL, *noted = NULL;
    size_t op_len = 0, start = dst->len;
    int r;

    /* Only what an item's handler reads (not the 400-byte message). */
    sub.a = rq->a;
    sub.peer = rq->peer;
    sub.map = item;
    sub.id = rq->id;
    sub.msg[0] = '\0';
    sub.slot = NULL;
    sub.pend = rq->pend;
    sub.wait_on = NULL;
    sub.is_item = true;
    sub.start_ns = rq->start_ns;
    sub.batch_new = NULL;
    proto_packer_init(&sub.pk, dst);
    if (proto_get_str(item, "op", true, &op, &op_len) != 0) {
        r = fail(&sub, KC_EINVAL, "item field 'op' (string) is required");
    } else if (op_len == 7 && memcmp(op, "encrypt", 7) == 0) {
        noted = "encrypt";
        r = handle_encrypt(&sub);
    } else if (op_len == 7 && memcmp(op, "decrypt", 7) == 0) {
        noted = "decrypt";
        r = handle_decrypt(&sub);
    } else {
        r = fail(&sub, KC_EUNKNOWNOP,
                 "batch items may only be encrypt or decrypt");
    }
    if (r == REQ_PENDING) {
        kc_buf_truncate(dst, start);
        *wait_on = sub.wait_on;
        return REQ_PENDING;
    }
    if (r != 0) {
        kc_buf_truncate(dst, start);
        proto_pack_error_body(&sub.pk, r, sub.msg);
        if (sub.slot != NULL) {
            sub.slot->n.errors++;
        }
    }
    req_note(&sub, noted, r); /* metrics count encrypts and decrypts */
    return 0;
}

/*
 * Run the items from `from` on that are not done yet, each into its own
 * bs->results[i], and mark them done unless they wait; *wait_on is set
 * to the flight of the first that waits (if it was still NULL).
 */
static void
batch_run_held(struct req *rq, const msgpack_object *items,
               struct batch_state *bs, size_t from, struct flight **wait_on)
{
    struct flight *w;
    size_t i;

    for (i = from; i < bs->n; i++) {
        if (bs->done[i]) {
            continue;
        }
        kc_buf_clear(&bs->results[i]);
        /* Room for a typical result at once, not grown in copy-and-wipe
         * steps: a message is its plaintext plus a few hundred bytes. */
        if (kc_buf_reserve(&bs->results[i], 512) != 0) {
            /* Out of memory: packing below grows it, or fails the same
             * way every other reply does. */
        }
        if (batch_run_item(rq, &items->via.array.ptr[i], &bs->results[i],
                           &w) != REQ_PENDING) {
            bs->done[i] = true;
        } else if (*wait_on == NULL) {
            *wait_on = w;
        }
    }
}

static int
batch_items(struct req *rq, const msgpack_object **out)
{
    const msgpack_object *items = proto_map_get(rq->map, "items");
    uint32_t i;

    if (items == NULL || items->type != MSGPACK_OBJECT_ARRAY ||
        items->via.array.size == 0) {
        return fail(rq, KC_EINVAL,
                    "field 'items' (non-empty array of maps) is required");
    }
    if (items->via.array.size > MAX_BATCH_ITEMS) {
        return fail(rq, KC_ETOOBIG, "batch has %u items; the limit is %d",
                    items->via.array.size, MAX_BATCH_ITEMS);
    }
    for (i = 0; i < items->via.array.size; i++) {
        if (items->via.array.ptr[i].type != MSGPACK_OBJECT_MAP) {
            return fail(rq, KC_EINVAL, "batch item %u is not a map", i);
        }
        if (proto_map_check_keys(&items->via.array.ptr[i]) != 0) {
            return fail(rq, KC_EPROTO, "batch item %u: at most %d keys, "
                        "all distinct strings", i, PROTO_MAX_MAP_KEYS);
        }
    }
    *out = items;
    return 0;
}

/*
 * First run of a batch: results go straight into the reply while every
 * item completes.  At the first item that waits, the results so far move
 * into a batch_state (the slow path, which keeps each result apart until
 * all are in) and the rest run into it.  Returns 0 (reply packed),
 * REQ_PENDING with *bsp and *wait_on set, or an error.
 */
static int
batch_first_run(struct req *rq, const msgpack_object *items,
                struct batch_state **bsp, struct flight **wait_on)
{
    struct kc_buf *out = rq->pk.data;
    struct batch_state *bs = NULL;
    struct flight *w;
    size_t n = items->via.array.size, i, j, reply_start = out->len;
    size_t ends[MAX_BATCH_ITEMS + 1]; /* item i: [ends[i], ends[i + 1]) */

    pack_ok_header(rq, 1);
    proto_pack_cstr(&rq->pk, "results");
    msgpack_pack_array(&rq->pk, n);
    ends[0] = out->len;
    for (i = 0; i < n; i++) {
        if (batch_run_item(rq, &items->via.array.ptr[i], out, &w) !=
            REQ_PENDING) {
            ends[i + 1] = out->len;
            if (i == 0 && n > 1) {
                /* Room for the rest at the first result's size, within
                 * what a reply may hold: one growth instead of a copy
                 * at every doubling.  Failing is fine: packing grows it,
                 * or fails like any reply. */
                size_t more = (n - 1) * (ends[1] - ends[0]);
                size_t cap = rq->a->cfg->max_frame + PROTO_RESPONSE_SLACK;

                if (kc_buf_reserve(out, more < cap ? more : cap) != 0) {
                    /* see above */
                }
            }
            continue;
        }
        /* Item i waits: switch to the slow path. */
        *wait_on = w;
        if ((bs = batch_state_new(n)) == NULL) {
            kc_buf_truncate(out, reply_start);
            return fail(rq, KC_ENOMEM, "out of memory for a batch");
        }
        for (j = 0; j < i; j++) {
            if (kc_buf_put(&bs->results[j], out->data + ends[j],
                           ends[j + 1] - ends[j]) != 0) {
                batch_state_free(bs);
                kc_buf_truncate(out, reply_start);
                return fail(rq, KC_ENOMEM, "out of memory for a batch");
            }
            bs->done[j] = true;
        }
        kc_buf_truncate(out, reply_start);
        batch_run_held(rq, items, bs, i + 1, wait_on);
        *bsp = bs;
        return REQ_PENDING;
    }
    return 0;
}

/*
 * Items run in order; one that waits on a provider does not hold up the
 * others.  Only when every item has a result is the reply packed, so a
 * re-run (request.h) runs just the items still waiting.
 *
 * TODO: a batch joins only the flight of its first waiting item, so a
 * failure of another item's flight before the re-run is not recorded and
 * that item fetches again (an extra KMS call and audit line); and
 * max_inflight counts a batch as one request although its items may
 * start up to 1024 flights.  Joining every flight a batch waits on, and
 * counting items against max_inflight, would close both.
 */
int
handle_batch(struct req *rq)
{
    const msgpack_object *items = NULL;
    struct batch_state *bs = NULL;
    struct flight *wait_on = NULL;
    size_t i, n;
    int r;

    if ((r = batch_items(rq, &items)) != 0) {
        return r;
    }
    n = items->via.array.size;
    if (rq->pend != NULL) {
        bs = rq->pend->batch;
    }
    if (bs == NULL) {
        if ((r = batch_first_run(rq, items, &bs, &wait_on)) != REQ_PENDING) {
            return r;
        }
    } else {
        if (bs->n != n) {
            return fail(rq, KC_EINVAL, "batch changed between runs");
        }
        batch_run_held(rq, items, bs, 0, &wait_on);
    }
    if (wait_on != NULL) {
        rq->wait_on = wait_on;
        if (rq->pend == NULL) {
            rq->batch_new = bs; /* the dispatcher keeps it for re-runs */
        }
        return REQ_PENDING;
    }
    pack_ok_header(rq, 1);
    proto_pack_cstr(&rq->pk, "results");
    msgpack_pack_array(&rq->pk, n);
    for (i = 0; i < n; i++) {
        /* Already-packed maps: append their bytes as they are. */
        rq->pk.callback(rq->pk.data, (const char *)bs->results[i].data,
                        bs->results[i].len);
    }
    if (rq->pend == NULL) {
        batch_state_free(bs);
    }
    return 0;
}

/* ---- metrics and health ---------------------------------------------- */

int
handle_metrics(struct req *rq)
{
    struct kc_buf text;
    int r;

    if (!authz_allows(&rq->a->stats_policy, rq->peer)) {
        audit_decision(rq->peer, "metrics", NULL, false);
        return fail(rq, KC_EDENIED, "permission denied: uid %ld may not "
                    "read metrics", (long)rq->peer->uid);
    }
    kc_buf_init(&text, 0);
    if ((r = metrics_render(rq->a, &text)) != 0) {
        kc_buf_clear(&text);
        return fail(rq, r, "cannot render metrics");
    }
    pack_ok_header(rq, 1);
    proto_pack_cstr(&rq->pk, "text");
    proto_pack_strn(&rq->pk, (const char *)text.data, text.len);
    kc_buf_clear(&text);
    return 0;
}

/*
 * Liveness is answering at all (the loop turns); readiness also needs
 * the configured pre-warm fetches to have finished.  Open to any peer
 * that can reach the socket: it reveals no key or count.
 */
int
handle_health(struct req *rq)
{
    struct agent *a = rq->a;

    pack_ok_header(rq, 4);
    proto_pack_cstr(&rq->pk, "live");
    msgpack_pack_true(&rq->pk);
    proto_pack_cstr(&rq->pk, "ready");
    if (a->ready) {
        msgpack_pack_true(&rq->pk);
    } else {
        msgpack_pack_false(&rq->pk);
    }
    proto_pack_cstr(&rq->pk, "warmup_pending");
    msgpack_pack_uint64(&rq->pk, a->warmup_pending);
    proto_pack_cstr(&rq->pk, "warmup_failed");
    msgpack_pack_uint64(&rq->pk, a->warmup_failed);
    return 0;
}

/*
 * Reload the config file, as SIGHUP does.  Only the agent's own uid may
 * (the same rule as for signalling the process).
 */
int
handle_reload(struct req *rq)
{
    static const struct authz_policy own_uid = {NULL, 0, true};
    char err[512] = "";
    int r;

    if (!authz_allows(&own_uid, rq->peer)) {
        audit_decision(rq->peer, "reload", NULL, false);
        return fail(rq, KC_EDENIED, "permission denied: uid %ld may not "
                    "reload the agent", (long)rq->peer->uid);
    }
    audit_decision(rq->peer, "reload", NULL, true);
    if ((r = reload_request(rq->a, err, sizeof(err))) != 0) {
        return fail(rq, r, "reload failed, running config kept: %.300s",
                    err);
    }
    pack_ok_header(rq, 1);
    proto_pack_cstr(&rq->pk, "applied");
    msgpack_pack_true(&rq->pk);
    return 0;
}
