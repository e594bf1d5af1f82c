/*
 * reader.c - authenticated decryption of a whole message (FORMATS.md
 * 2.3-2.7, 4 and the checklist in 6).
 *
 * Order of checks, each before the next may run:
 *   1. key commitment (v2), constant time;
 *   2. header tag (with any required-context AAD appended);
 *   3. body structure: sequence numbers, lengths, frame count, footer,
 *      no trailing bytes (all keyless, nothing decrypted yet);
 *   4. footer signature over header and body (signing suites);
 *   5. every frame tag, decrypting into pt.
 * Any failure empties and wipes pt, so a caller never sees plaintext from
 * a message that did not verify completely.
 */
#include "esdk_int.h"

#include <sodium.h>
#include <string.h>

/* One frame of a framed body, or the single block of a non-framed one. */
struct body_part {
    enum esdk_body_kind kind;
    uint32_t seq;
    const uint8_t *iv;
    const uint8_t *ct;
    uint64_t len;
    const uint8_t *tag;
};

static int
read_single(struct kc_rd *rd, struct body_part *bp)
{
    int r;

    bp->kind = ESDK_BODY_SINGLE;
    bp->seq = 1;
    if ((r = kc_rd_bytes(rd, ESDK_IV_LEN, &bp->iv)) != 0 ||
        (r = kc_rd_u64(rd, &bp->len)) != 0) {
        return r;
    }
    if (bp->len > ESDK_NONFRAMED_MAX || bp->len > kc_rd_left(rd)) {
        return KC_EFORMAT;
    }
    if ((r = kc_rd_bytes(rd, (size_t)bp->len, &bp->ct)) != 0) {
        return r;
    }
    return kc_rd_bytes(rd, ESDK_TAG_LEN, &bp->tag);
}

/* The next frame, which must carry sequence number seq. */
static int
read_frame(struct kc_rd *rd, const struct esdk_header *h, uint32_t seq,
           struct body_part *bp)
{
    uint32_t first, clen;
    int r;

    if ((r = kc_rd_u32(rd, &first)) != 0) {
        return r;
    }
    bp->kind = ESDK_BODY_FRAME;
    bp->len = h->frame_len;
    if (first == UINT32_MAX) {
        bp->kind = ESDK_BODY_FINAL;
        if ((r = kc_rd_u32(rd, &first)) != 0) {
            return r;
        }
    }
    if (first != seq) {
        return KC_EFORMAT;
    }
    bp->seq = seq;
    if ((r = kc_rd_bytes(rd, ESDK_IV_LEN, &bp->iv)) != 0) {
        return r;
    }
    if (bp->kind == ESDK_BODY_FINAL) {
        if ((r = kc_rd_u32(rd, &clen)) != 0) {
            return r;
        }
        if (clen > h->frame_len) {
            return KC_EFORMAT;
        }
        bp->len = clen;
    }
    if ((r = kc_rd_bytes(rd, (size_t)bp->len, &bp->ct)) != 0) {
        return r;
    }
    return kc_rd_bytes(rd, ESDK_TAG_LEN, &bp->tag);
}

static int
read_part(struct kc_rd *rd, const struct esdk_header *h, uint32_t seq,
          struct body_part *bp)
{
    if (h->content_type == 1) {
        return read_single(rd, bp);
    }
    return read_frame(rd, h, seq, bp);
}

/*
 * Walk the body without keys: *total is the plaintext length, *end the
 * offset in msg just past the body.
 */
static int
body_walk(const struct esdk_header *h, const uint8_t *msg, size_t len,
          const struct esdk_limits *lim, size_t *total, size_t *end)
{
    struct body_part bp;
    struct kc_rd rd;
    uint32_t seq;
    int r;

    kc_rd_init(&rd, msg + h->body_off, len - h->body_off, KC_EFORMAT);
    *total = 0;
    for (seq = 1;; seq++) {
        if (seq > lim->max_frames) {
            return KC_ETOOBIG;
        }
        if ((r = read_part(&rd, h, seq, &bp)) != 0) {
            return r;
        }
        *total += (size_t)bp.len; /* bounded by len: cannot wrap */
        /* seq cannot wrap: a part numbered 0xFFFFFFFF is always read as
         * the final frame, whose marker has that value. */
        if (bp.kind != ESDK_BODY_FRAME) {
            break;
        }
    }
    *end = h->body_off + rd.off;
    return 0;
}

/* Footer of signing suites; nothing may follow it (or the body). */
static int
footer_parse(const struct esdk_header *h, const uint8_t *msg, size_t len,
             size_t body_end, const uint8_t **sig, size_t *sig_len)
{
    struct kc_rd rd;
    uint16_t n = 0;
    int r;

    kc_rd_init(&rd, msg + body_end, len - body_end, KC_EFORMAT);
    *sig = NULL;
    if (h->suite->sig_nid != 0) {
        if ((r = kc_rd_u16(&rd, &n)) != 0 ||
            (r = kc_rd_bytes(&rd, n, sig)) != 0) {
            return r;
        }
    }
    *sig_len = n;
    return kc_rd_left(&rd) == 0 ? 0 : KC_EFORMAT;
}

static int
verify_signature(const struct esdk_header *h, const uint8_t *msg,
                 size_t body_end, const uint8_t *sig, size_t sig_len)
{
    const struct esdk_ec_pair *pk;
    EVP_PKEY *pub = NULL;
    int r;

    pk = esdk_ec_get(&h->ec, ESDK_PUBKEY_EC_KEY, strlen(ESDK_PUBKEY_EC_KEY));
    if (pk == NULL) {
        return KC_EFORMAT;
    }
    /* The key is inside the authenticated header, so a bad one is an
     * authentication failure of the message as a whole. */
    if ((r = esdk_sig_pub_from_b64(h->suite->sig_nid, pk->val, pk->val_len,
                                   &pub)) != 0) {
        return r == KC_ENOMEM ? r : KC_EAUTH;
    }
    r = esdk_sig_verify(pub, h->suite->sig_nid, msg, body_end, sig, sig_len);
    EVP_PKEY_free(pub);
    return r;
}

/* Decrypt every part into pt (already sized); each tag must verify. */
static int
body_decrypt(const struct esdk_header *h, const uint8_t *msg, size_t len,
             struct esdk_gcm *g, struct kc_buf *pt)
{
    uint8_t aad[ESDK_BODY_AAD_MAX];
    struct body_part bp;
    struct kc_rd rd;
    uint8_t *dst;
    size_t aad_len;
    uint32_t seq;
    int r;

    kc_rd_init(&rd, msg + h->body_off, len - h->body_off, KC_EFORMAT);
    for (seq = 1;; seq++) {
        if ((r = read_part(&rd, h, seq, &bp)) != 0) {
            return r;
        }
        aad_len = esdk_body_aad(aad, h->message_id, h->message_id_len,
                                bp.kind, bp.seq, bp.len);
        /* The stored IV, not the derived one: see FORMATS.md 2.4. */
        dst = bp.len > 0 ? pt->data + pt->len : NULL;
        if ((r = esdk_gcm_open(g, bp.iv, aad, aad_len, NULL, 0, bp.ct,
                               (size_t)bp.len, dst, bp.tag)) != 0) {
            return r;
        }
        pt->len += (size_t)bp.len;
        if (bp.kind != ESDK_BODY_FRAME) {
            return 0;
        }
    }
}

/* Commitment, then header tag. */
static int
verify_header(const struct esdk_header *h, const uint8_t *msg,
              const uint8_t *key, const uint8_t *commit,
              const uint8_t *req_ser, size_t req_len, struct esdk_gcm *g)
{
    int r;

    if (h->suite->committing &&
        sodium_memcmp(commit, h->commitment, ESDK_COMMIT_LEN) != 0) {
        return KC_EAUTH;
    }
    if ((r = esdk_gcm_init(g, false, key, h->suite->key_len)) != 0) {
        return r;
    }
    return esdk_gcm_open(g, h->header_iv, msg, h->header_len, req_ser,
                         req_len, NULL, 0, NULL, h->header_tag);
}

static int
check_args(const struct esdk_header *h, const uint8_t *msg, size_t len,
           const uint8_t *data_key, size_t dk_len, const uint8_t *req_ser,
           size_t req_len, const struct esdk_limits *lim)
{
    if (h == NULL || h->suite == NULL || msg == NULL || data_key == NULL ||
        (req_ser == NULL && req_len > 0)) {
        return KC_EINVAL;
    }
    if (len < h->body_off || dk_len != h->suite->key_len) {
        return KC_EINVAL;
    }
    if (len > lim->max_message || h->frame_len > lim->max_frame_len ||
        h->edks.n > lim->max_edks) {
        return KC_ETOOBIG;
    }
    if (!h->suite->committing && !lim->allow_legacy) {
        return KC_EUNSUPPORTED;
    }
    return 0;
}

int
esdk_decrypt_required(const struct esdk_header *h, const uint8_t *msg,
                      size_t len, const uint8_t *data_key, size_t dk_len,
                      const uint8_t *req_ser, size_t req_len,
                      const struct esdk_limits *lim, struct kc_buf *pt)
{
    uint8_t key[ESDK_MAX_KEY_LEN], commit[ESDK_COMMIT_LEN];
    struct esdk_gcm g = {NULL, false};
    struct esdk_limits eff;
    const uint8_t *sig;
    size_t total, body_end, sig_len;
    int r;

    if (pt == NULL) {
        return KC_EINVAL;
    }
    kc_buf_clear(pt);
    esdk_limits_effective(lim, &eff);
    if ((r = check_args(h, msg, len, data_key, dk_len, req_ser, req_len,
                        &eff)) != 0) {
        return r;
    }
    if ((r = esdk_derive_keys(h->suite, data_key, dk_len, h->message_id,
                              h->message_id_len, key, commit)) != 0 ||
        (r = verify_header(h, msg, key, commit, req_ser, req_len, &g)) !=
            0 ||
        (r = body_walk(h, msg, len, &eff, &total, &body_end)) != 0 ||
        (r = footer_parse(h, msg, len, body_end, &sig, &sig_len)) != 0) {
        goto out;
    }
    if (h->suite->sig_nid != 0 &&
        (r = verify_signature(h, msg, body_end, sig, sig_len)) != 0) {
        goto out;
    }
    if ((r = kc_buf_reserve(pt, total)) != 0 ||
        (r = body_decrypt(h, msg, len, &g, pt)) != 0) {
        goto out;
    }
out:
    sodium_memzero(key, sizeof(key));
    sodium_memzero(commit, sizeof(commit));
    esdk_gcm_clear(&g);
    if (r != 0) {
        kc_buf_clear(pt);
    }
    return r;
}

int
esdk_decrypt(const struct esdk_header *h, const uint8_t *msg, size_t len,
             const uint8_t *data_key, size_t dk_len,
             const struct esdk_limits *lim, struct kc_buf *pt)
{
    return esdk_decrypt_required(h, msg, len, data_key, dk_len, NULL, 0, lim,
                                 pt);
}
