/*
 * writer.c - writing v2 messages (suites 0x0478 and 0x0578), framed,
 * with derived frame IVs and the canonical (sorted) context.
 */
#include "esdk_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct esdk_enc {
    const struct esdk_suite *suite;
    struct esdk_ec ec;      /* caller pairs + aws-crypto-public-key */
    struct kc_buf ec_ser;   /* canonical serialization of ec */
    EVP_PKEY *sign_key;     /* signing suites only */
    uint8_t msg_id[32];
    bool used;              /* one message per esdk_enc */
};

/* Fresh key pair; its compressed public point goes into the context. */
static int
enc_add_signer(struct esdk_enc *e)
{
    char b64[96];
    size_t b64_len;
    int r;

    if ((r = esdk_sig_keygen(e->suite->sig_nid, &e->sign_key)) != 0 ||
        (r = esdk_sig_pub_b64(e->sign_key, e->suite->sig_nid, b64,
                              sizeof(b64), &b64_len)) != 0) {
        return r;
    }
    return esdk_ec_add(&e->ec, ESDK_PUBKEY_EC_KEY,
                       strlen(ESDK_PUBKEY_EC_KEY), b64, b64_len);
}

int
esdk_enc_new(uint16_t suite, const struct esdk_ec *ec, struct esdk_enc **out)
{
    struct esdk_enc *e = NULL;
    const struct esdk_ec_pair *p;
    size_t i;
    int r;

    *out = NULL;
    if (ec == NULL) {
        return KC_EINVAL;
    }
    if (suite != ESDK_SUITE_AES256_HKDF_SHA512_COMMIT &&
        suite != ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384) {
        return KC_EUNSUPPORTED;
    }
    if ((r = esdk_ec_check_caller(ec)) != 0) {
        return r;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL) {
        return KC_ENOMEM;
    }
    e->suite = esdk_suite_get(suite);
    esdk_ec_init(&e->ec);
    kc_buf_init(&e->ec_ser, ESDK_U16_MAX);
    for (i = 0; i < ec->n; i++) {
        p = &ec->pairs[i];
        if ((r = esdk_ec_add(&e->ec, p->key, p->key_len, p->val,
                             p->val_len)) != 0) {
            goto out;
        }
    }
    if (e->suite->sig_nid != 0 && (r = enc_add_signer(e)) != 0) {
        goto out;
    }
    if ((r = esdk_ec_serialize(&e->ec, &e->ec_ser)) != 0 ||
        (r = esdk_rand(e->msg_id, sizeof(e->msg_id))) != 0) {
        goto out;
    }
    *out = e;
    e = NULL;
out:
    esdk_enc_free(e);
    return r;
}

void
esdk_enc_wrapping_aad(const struct esdk_enc *enc, const uint8_t **p,
                      size_t *len)
{
    *p = enc->ec_ser.data;
    *len = enc->ec_ser.len;
}

void
esdk_enc_free(struct esdk_enc *enc)
{
    if (enc == NULL) {
        return;
    }
    esdk_ec_clear(&enc->ec);
    kc_buf_clear(&enc->ec_ser);
    EVP_PKEY_free(enc->sign_key); /* frees (and cleanses) the private key */
    sodium_memzero(enc, sizeof(*enc));
    free(enc);
}

/* Header body (FORMATS.md 2.1) appended to out. */
static int
put_header(const struct esdk_enc *e, const struct esdk_edk_list *edks,
           uint32_t frame_len, const uint8_t *commit, struct kc_buf *out)
{
    const struct esdk_edk *k;
    size_t i;
    int r;

    if ((r = kc_buf_put_u8(out, 2)) != 0 ||
        (r = kc_buf_put_u16(out, e->suite->id)) != 0 ||
        (r = kc_buf_put(out, e->msg_id, sizeof(e->msg_id))) != 0 ||
        (r = kc_buf_put_u16(out, (uint16_t)e->ec_ser.len)) != 0 ||
        (r = kc_buf_put(out, e->ec_ser.data, e->ec_ser.len)) != 0 ||
        (r = kc_buf_put_u16(out, (uint16_t)edks->n)) != 0) {
        return r;
    }
    for (i = 0; i < edks->n; i++) {
        k = &edks->v[i];
        if ((r = kc_buf_put_u16(out, (uint16_t)k->provider_id_len)) != 0 ||
            (r = kc_buf_put(out, k->provider_id, k->provider_id_len)) != 0 ||
            (r = kc_buf_put_u16(out, (uint16_t)k->provider_info_len)) != 0 ||
            (r = kc_buf_put(out, k->provider_info, k->provider_info_len)) !=
                0 ||
            (r = kc_buf_put_u16(out, (uint16_t)k->ciphertext_len)) != 0 ||
            (r = kc_buf_put(out, k->ciphertext, k->ciphertext_len)) != 0) {
            return r;
        }
    }
    if ((r = kc_buf_put_u8(out, 2)) != 0 ||
        (r = kc_buf_put_u32(out, frame_len)) != 0) {
        return r;
    }
    return kc_buf_put(out, commit, ESDK_COMMIT_LEN);
}

/* Exact size of the header body plus its tag. */
static size_t
header_size(const struct esdk_enc *e, const struct esdk_edk_list *edks)
{
    size_t n = 1 + 2 + 32 + 2 + e->ec_ser.len + 2 + 1 + 4 + 32 + 16, i;

    for (i = 0; i < edks->n; i++) {
        n += 6 + edks->v[i].provider_id_len + edks->v[i].provider_info_len +
             edks->v[i].ciphertext_len;
    }
    return n;
}

/* One frame: regular when !final, else the final frame of n bytes. */
static int
put_frame(const uint8_t *msg_id, struct esdk_gcm *g, uint32_t seq,
          bool final, const uint8_t *pt, size_t n, struct kc_buf *out)
{
    uint8_t iv[ESDK_IV_LEN], aad[ESDK_BODY_AAD_MAX], tag[ESDK_TAG_LEN];
    size_t aad_len;
    int r;

    esdk_frame_iv(iv, seq);
    aad_len = esdk_body_aad(aad, msg_id, ESDK_COMMIT_LEN,
                            final ? ESDK_BODY_FINAL : ESDK_BODY_FRAME, seq,
                            n);
    if ((final && (r = kc_buf_put_u32(out, UINT32_MAX)) != 0) ||
        (r = kc_buf_put_u32(out, seq)) != 0 ||
        (r = kc_buf_put(out, iv, sizeof(iv))) != 0 ||
        (final && (r = kc_buf_put_u32(out, (uint32_t)n)) != 0) ||
        (r = kc_buf_reserve(out, n + ESDK_TAG_LEN)) != 0) {
        return r;
    }
    if ((r = esdk_gcm_seal(g, iv, aad, aad_len, NULL, 0, pt, n,
                           n > 0 ? out->data + out->len : NULL, tag)) != 0) {
        return r;
    }
    out->len += n;
    return kc_buf_put(out, tag, sizeof(tag));
}

static int
put_body(const uint8_t *msg_id, struct esdk_gcm *g, uint32_t frame_len,
         uint32_t nframes, const uint8_t *pt, size_t pt_len,
         struct kc_buf *out)
{
    size_t off = 0;
    uint32_t seq;
    int r;

    for (seq = 1; seq < nframes; seq++) {
        if ((r = put_frame(msg_id, g, seq, false, pt + off, frame_len,
                           out)) != 0) {
            return r;
        }
        off += frame_len;
    }
    return put_frame(msg_id, g, nframes, true,
                     pt_len > 0 ? pt + off : NULL, pt_len - off, out);
}

static int
put_footer(const struct esdk_enc *e, size_t start, struct kc_buf *out)
{
    uint8_t sig[ESDK_MAX_SIG_LEN];
    size_t sig_len;
    int r;

    if ((r = esdk_sig_sign(e->sign_key, e->suite->sig_nid,
                           out->data + start, out->len - start, sig,
                           &sig_len)) != 0 ||
        (r = kc_buf_put_u16(out, (uint16_t)sig_len)) != 0) {
        return r;
    }
    return kc_buf_put(out, sig, sig_len);
}

static int
finish_check(const struct esdk_enc *enc, const uint8_t *data_key,
             size_t dk_len, const struct esdk_edk_list *edks,
             uint32_t frame_len, const uint8_t *pt, size_t pt_len,
             const struct kc_buf *out, uint64_t *nframes)
{
    if (enc == NULL || enc->used || data_key == NULL || edks == NULL ||
        out == NULL || (pt == NULL && pt_len > 0)) {
        return KC_EINVAL;
    }
    if (dk_len != enc->suite->key_len || edks->n == 0 ||
        edks->n > ESDK_U16_MAX || frame_len == 0) {
        return KC_EINVAL;
    }
    /* The final frame carries 1..frame_len bytes, or 0 for empty input. */
    *nframes = pt_len == 0 ? 1 : (uint64_t)(pt_len - 1) / frame_len + 1;
    if (*nframes > UINT32_MAX) {
        return KC_ETOOBIG;
    }
    return 0;
}

int
esdk_enc_finish(struct esdk_enc *enc, const uint8_t *data_key, size_t dk_len,
                const struct esdk_edk_list *edks, uint32_t frame_len,
                const uint8_t *pt, size_t pt_len, struct kc_buf *out)
{
    uint8_t key[ESDK_MAX_KEY_LEN], commit[ESDK_COMMIT_LEN];
    uint8_t tag[ESDK_TAG_LEN], iv[ESDK_IV_LEN];
    struct esdk_gcm g = {NULL, true};
    uint64_t nframes;
    size_t start, hlen, overhead;
    int r;

    if ((r = finish_check(enc, data_key, dk_len, edks, frame_len, pt,
                          pt_len, out, &nframes)) != 0) {
        return r;
    }
    enc->used = true;
    start = out->len;
    memset(iv, 0, sizeof(iv));
    /* One allocation up front for the whole message.  The footer uses
     * the largest DER signature (104 bytes for P-384). */
    overhead = header_size(enc, edks) + (size_t)nframes * 32 + 8 +
               (enc->suite->sig_nid != 0 ? 2 + 104 : 0);
    if (pt_len > SIZE_MAX - overhead) {
        r = KC_ETOOBIG;
        goto out;
    }
    if ((r = kc_buf_reserve(out, pt_len + overhead)) != 0 ||
        (r = esdk_derive_keys(enc->suite, data_key, dk_len, enc->msg_id,
                              sizeof(enc->msg_id), key, commit)) != 0 ||
        (r = esdk_gcm_init(&g, true, key, enc->suite->key_len)) != 0 ||
        (r = put_header(enc, edks, frame_len, commit, out)) != 0) {
        goto out;
    }
    /* v2 header tag: IV of 12 zero bytes, empty plaintext. */
    hlen = out->len - start;
    if ((r = esdk_gcm_seal(&g, iv, out->data + start, hlen, NULL, 0, NULL,
                           0, NULL, tag)) != 0 ||
        (r = kc_buf_put(out, tag, sizeof(tag))) != 0 ||
        (r = put_body(enc->msg_id, &g, frame_len, (uint32_t)nframes, pt,
                      pt_len, out)) != 0) {
        goto out;
    }
    if (enc->suite->sig_nid != 0 && (r = put_footer(enc, start, out)) != 0) {
        goto out;
    }
out:
    sodium_memzero(key, sizeof(key));
    sodium_memzero(commit, sizeof(commit));
    esdk_gcm_clear(&g);
    if (r != 0) {
        kc_buf_truncate(out, start);
    }
    return r;
}

/* ---- per-data-key header templates ------------------------------------ */

struct esdk_tmpl {
    const struct esdk_suite *suite;
    uint32_t frame_len;
    size_t mid_len;  /* bytes from the AAD length through the frame length */
    uint8_t mid[];
};

/* The fixed middle of a v2 header: u16 AAD length || AAD || u16 EDK count
 * || EDKs || content type 2 || u32 frame length. */
static int
tmpl_put_mid(const struct kc_buf *ec_ser, const struct esdk_edk_list *edks,
             uint32_t frame_len, struct kc_buf *b)
{
    const struct esdk_edk *k;
    size_t i;
    int r;

    if ((r = kc_buf_put_u16(b, (uint16_t)ec_ser->len)) != 0 ||
        (r = kc_buf_put(b, ec_ser->data, ec_ser->len)) != 0 ||
        (r = kc_buf_put_u16(b, (uint16_t)edks->n)) != 0) {
        return r;
    }
    for (i = 0; i < edks->n; i++) {
        k = &edks->v[i];
        if ((r = kc_buf_put_u16(b, (uint16_t)k->provider_id_len)) != 0 ||
            (r = kc_buf_put(b, k->provider_id, k->provider_id_len)) != 0 ||
            (r = kc_buf_put_u16(b, (uint16_t)k->provider_info_len)) != 0 ||
            (r = kc_buf_put(b, k->provider_info, k->provider_info_len)) !=
                0 ||
            (r = kc_buf_put_u16(b, (uint16_t)k->ciphertext_len)) != 0 ||
            (r = kc_buf_put(b, k->ciphertext, k->ciphertext_len)) != 0) {
            return r;
        }
    }
    if ((r = kc_buf_put_u8(b, 2)) != 0) {
        return r;
    }
    return kc_buf_put_u32(b, frame_len);
}

int
esdk_tmpl_new(uint16_t suite, const struct esdk_ec *ec,
              const struct esdk_edk_list *edks, uint32_t frame_len,
              struct esdk_tmpl **out)
{
    return esdk_tmpl_new_in(suite, ec, edks, frame_len, NULL, 0, out);
}

int
esdk_tmpl_new_in(uint16_t suite, const struct esdk_ec *ec,
                 const struct esdk_edk_list *edks, uint32_t frame_len,
                 void *room, size_t room_len, struct esdk_tmpl **out)
{
    struct esdk_tmpl *t = NULL;
    struct kc_buf ec_ser, mid;
    int r;

    *out = NULL;
    if (suite != ESDK_SUITE_AES256_HKDF_SHA512_COMMIT) {
        return KC_EUNSUPPORTED;
    }
    if (ec == NULL || edks == NULL || edks->n == 0 ||
        edks->n > ESDK_U16_MAX || frame_len == 0) {
        return KC_EINVAL;
    }
    if ((r = esdk_ec_check_caller(ec)) != 0) {
        return r;
    }
    kc_buf_init(&ec_ser, ESDK_U16_MAX);
    kc_buf_init(&mid, 0);
    if ((r = esdk_ec_serialize(ec, &ec_ser)) != 0 ||
        (r = tmpl_put_mid(&ec_ser, edks, frame_len, &mid)) != 0) {
        goto out;
    }
    if (room != NULL && ((uintptr_t)room & (_Alignof(struct esdk_tmpl) - 1)) ==
                            0 && room_len >= sizeof(*t) + mid.len) {
        t = room;
    } else if ((t = malloc(sizeof(*t) + mid.len)) == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    t->suite = esdk_suite_get(suite);
    t->frame_len = frame_len;
    t->mid_len = mid.len;
    memcpy(t->mid, mid.data, mid.len);
    *out = t;
out:
    kc_buf_clear(&ec_ser);
    kc_buf_clear(&mid);
    return r;
}

uint32_t
esdk_tmpl_frame_len(const struct esdk_tmpl *t)
{
    return t->frame_len;
}

void
esdk_tmpl_free(struct esdk_tmpl *t)
{
    free(t);
}

static uint64_t
tmpl_frames(const struct esdk_tmpl *t, size_t pt_len)
{
    return pt_len == 0 ? 1 : (uint64_t)(pt_len - 1) / t->frame_len + 1;
}

size_t
esdk_tmpl_msg_len(const struct esdk_tmpl *t, size_t pt_len)
{
    uint64_t nframes = tmpl_frames(t, pt_len);

    /* version, suite, id, mid, commitment, tag; per frame: seq, IV,
     * tag; the final frame also has its marker and length. */
    return 1 + 2 + 32 + t->mid_len + ESDK_COMMIT_LEN + ESDK_TAG_LEN +
           (size_t)nframes * (4 + ESDK_IV_LEN + ESDK_TAG_LEN) + 8 + pt_len;
}

/* Header (with its tag) and body, after the keys are derived. */
static int
tmpl_write(const struct esdk_tmpl *t, const uint8_t *msg_id,
           const uint8_t *commit, struct esdk_gcm *g, const uint8_t *pt,
           size_t pt_len, struct kc_buf *out)
{
    static const uint8_t zero_iv[ESDK_IV_LEN];
    uint8_t *h = out->data + out->len, *tag;
    size_t hlen = 1 + 2 + 32 + t->mid_len + ESDK_COMMIT_LEN;
    int r;

    /* The caller reserved the whole message: write the header in place. */
    h[0] = 2;
    kc_store_u16(h + 1, t->suite->id);
    memcpy(h + 3, msg_id, 32);
    memcpy(h + 35, t->mid, t->mid_len);
    memcpy(h + 35 + t->mid_len, commit, ESDK_COMMIT_LEN);
    tag = h + hlen;
    if ((r = esdk_gcm_seal(g, zero_iv, h, hlen, NULL, 0, NULL, 0, NULL,
                           tag)) != 0) {
        return r;
    }
    out->len += hlen + ESDK_TAG_LEN;
    return put_body(msg_id, g, t->frame_len,
                    (uint32_t)tmpl_frames(t, pt_len), pt, pt_len, out);
}

int
esdk_msg_start_begin(uint16_t suite, struct esdk_msg_start *ms)
{
    const struct esdk_suite *s = esdk_suite_get(suite);
    int r;

    if (ms == NULL) {
        return KC_EINVAL;
    }
    ms->stage = ESDK_MSG_UNUSED;
    if (s == NULL || s->version != 2 || s->kdf == ESDK_KDF_IDENTITY) {
        return KC_EUNSUPPORTED;
    }
    if ((r = esdk_rand(ms->msg_id, sizeof(ms->msg_id))) != 0) {
        return r;
    }
    ms->suite = suite;
    ms->kdf = (uint8_t)s->kdf;
    esdk_hkdf_salt_half(s->kdf, ms->msg_id, sizeof(ms->msg_id), 0, ms->salt);
    ms->stage = ESDK_MSG_BEGUN;
    return 0;
}

void
esdk_msg_start_finish(struct esdk_msg_start *ms)
{
    if (ms->stage == ESDK_MSG_BEGUN) {
        esdk_hkdf_salt_half((enum esdk_kdf)ms->kdf, ms->msg_id,
                            sizeof(ms->msg_id), 1, ms->salt);
        ms->stage = ESDK_MSG_FINISHED;
    }
}

int
esdk_tmpl_encrypt_started(const struct esdk_tmpl *t,
                          struct esdk_msg_start *ms, const uint8_t *data_key,
                          size_t dk_len, const uint8_t *pt, size_t pt_len,
                          struct kc_buf *out)
{
    uint8_t key[ESDK_MAX_KEY_LEN], commit[ESDK_COMMIT_LEN];
    struct esdk_gcm g = {NULL, true};
    size_t start, need;
    int r;

    if (ms == NULL) {
        return KC_EINVAL;
    }
    if (t == NULL || data_key == NULL || out == NULL ||
        (pt == NULL && pt_len > 0) || dk_len != t->suite->key_len ||
        ms->stage == ESDK_MSG_UNUSED || ms->suite != t->suite->id) {
        r = KC_EINVAL;
        goto out;
    }
    if (tmpl_frames(t, pt_len) > UINT32_MAX ||
        pt_len > SIZE_MAX - esdk_tmpl_msg_len(t, 0)) {
        r = KC_ETOOBIG;
        goto out;
    }
    esdk_msg_start_finish(ms);
    start = out->len;
    need = esdk_tmpl_msg_len(t, pt_len);
    if ((r = kc_buf_reserve(out, need)) != 0 ||
        (r = esdk_derive_keys_started(t->suite, data_key, dk_len, ms, key,
                                      commit)) != 0 ||
        (r = esdk_gcm_init(&g, true, key, t->suite->key_len)) != 0 ||
        (r = tmpl_write(t, ms->msg_id, commit, &g, pt, pt_len, out)) != 0) {
        kc_buf_truncate(out, start);
    }
    sodium_memzero(key, sizeof(key));
    sodium_memzero(commit, sizeof(commit));
    esdk_gcm_clear(&g);
out:
    /* The derivation wiped the salt's state, which held the PRK by then;
     * before it, that state and the ID are public. */
    ms->stage = ESDK_MSG_UNUSED;
    return r;
}

int
esdk_tmpl_encrypt(const struct esdk_tmpl *t, const uint8_t *data_key,
                  size_t dk_len, const uint8_t *pt, size_t pt_len,
                  struct kc_buf *out)
{
    struct esdk_msg_start ms;
    int r;

    if (t == NULL) {
        return KC_EINVAL;
    }
    if ((r = esdk_msg_start_begin(t->suite->id, &ms)) != 0) {
        return r;
    }
    return esdk_tmpl_encrypt_started(t, &ms, data_key, dk_len, pt, pt_len,
                                     out);
}
