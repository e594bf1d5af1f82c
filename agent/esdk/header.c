/*
 * header.c - keyless parsing of the message header (FORMATS.md 2.1-2.3)
 * and the reader's limits.
 *
 * Nothing here is trusted until esdk_decrypt has checked the commitment
 * and the header tag; the parser only makes sure that every later step
 * works on well-formed, bounded data.
 */
#include "esdk_int.h"

#include <stdlib.h>
#include <string.h>

#define DEF_MAX_EDKS      16
#define DEF_MAX_FRAME_LEN ((size_t)1 << 20)
#define DEF_MAX_MESSAGE   ((size_t)64 << 20)
#define DEF_MAX_FRAMES    ((uint64_t)1 << 20)

void
esdk_limits_default(struct esdk_limits *lim)
{
    lim->max_edks = DEF_MAX_EDKS;
    lim->max_frame_len = DEF_MAX_FRAME_LEN;
    lim->max_message = DEF_MAX_MESSAGE;
    lim->max_frames = DEF_MAX_FRAMES;
    lim->allow_legacy = false;
}

void
esdk_limits_effective(const struct esdk_limits *lim, struct esdk_limits *eff)
{
    esdk_limits_default(eff);
    if (lim == NULL) {
        return;
    }
    eff->allow_legacy = lim->allow_legacy;
    eff->max_edks = lim->max_edks == 0 ? ESDK_U16_MAX : lim->max_edks;
    if (lim->max_frame_len != 0) {
        eff->max_frame_len = lim->max_frame_len;
    }
    if (lim->max_message != 0) {
        eff->max_message = lim->max_message;
    }
    if (lim->max_frames != 0) {
        eff->max_frames = lim->max_frames;
    }
}

/* The AAD block: u16 count || pairs, exactly filling blk. */
static int
parse_ec(struct esdk_header *h, const uint8_t *blk, size_t blk_len)
{
    struct kc_rd rd;
    const uint8_t *k, *v;
    uint16_t count, klen, vlen, i;
    int r;

    if (blk_len == 0) {
        return 0;
    }
    kc_rd_init(&rd, blk, blk_len, KC_EFORMAT);
    if ((r = kc_rd_u16(&rd, &count)) != 0) {
        return r;
    }
    /* An empty context is written as AAD length 0, never count 0; each
     * pair needs at least 4 bytes. */
    if (count == 0 || (size_t)count * 4 > kc_rd_left(&rd)) {
        return KC_EFORMAT;
    }
    for (i = 0; i < count; i++) {
        if ((r = kc_rd_u16(&rd, &klen)) != 0 ||
            (r = kc_rd_bytes(&rd, klen, &k)) != 0 ||
            (r = kc_rd_u16(&rd, &vlen)) != 0 ||
            (r = kc_rd_bytes(&rd, vlen, &v)) != 0) {
            return r;
        }
        if ((r = esdk_ec_append(&h->ec, k, klen, v, vlen)) != 0) {
            return r == KC_ENOMEM ? r : KC_EFORMAT;
        }
    }
    if (kc_rd_left(&rd) != 0) {
        return KC_EFORMAT;
    }
    /* Sorting for the canonical form also finds duplicate keys. */
    r = esdk_ec_serialize(&h->ec, &h->ec_canonical);
    return r == KC_ENOMEM ? r : r != 0 ? KC_EFORMAT : 0;
}

static int
parse_edks(struct esdk_header *h, struct kc_rd *rd,
           const struct esdk_limits *lim)
{
    const uint8_t *pid, *info, *ct;
    uint16_t count, pl, il, cl, i;
    int r;

    if ((r = kc_rd_u16(rd, &count)) != 0) {
        return r;
    }
    if (count == 0) {
        return KC_EFORMAT;
    }
    /* Checked before reading a single EDK (spec: stop before parsing). */
    if (count > lim->max_edks) {
        return KC_ETOOBIG;
    }
    if ((size_t)count * 6 > kc_rd_left(rd)) {
        return KC_EFORMAT;
    }
    for (i = 0; i < count; i++) {
        if ((r = kc_rd_u16(rd, &pl)) != 0 ||
            (r = kc_rd_bytes(rd, pl, &pid)) != 0 ||
            (r = kc_rd_u16(rd, &il)) != 0 ||
            (r = kc_rd_bytes(rd, il, &info)) != 0 ||
            (r = kc_rd_u16(rd, &cl)) != 0 ||
            (r = kc_rd_bytes(rd, cl, &ct)) != 0) {
            return r;
        }
        if ((r = esdk_edk_list_add(&h->edks, pid, pl, info, il, ct, cl)) !=
            0) {
            return r;
        }
    }
    return 0;
}

/* Version, type (v1), suite and message ID. */
static int
parse_prefix(struct esdk_header *h, struct kc_rd *rd,
             const struct esdk_limits *lim)
{
    const uint8_t *id;
    uint8_t version, type;
    uint16_t suite_id;
    int r;

    if ((r = kc_rd_u8(rd, &version)) != 0) {
        return r;
    }
    if (version != 1 && version != 2) {
        return KC_EFORMAT;
    }
    if (version == 1 && ((r = kc_rd_u8(rd, &type)) != 0 || type != 0x80)) {
        return KC_EFORMAT;
    }
    if ((r = kc_rd_u16(rd, &suite_id)) != 0) {
        return r;
    }
    h->suite = esdk_suite_get(suite_id);
    if (h->suite == NULL || h->suite->version != version) {
        return KC_EFORMAT;
    }
    if (!h->suite->committing && !lim->allow_legacy) {
        return KC_EUNSUPPORTED;
    }
    h->message_id_len = version == 2 ? 32 : 16;
    if ((r = kc_rd_bytes(rd, h->message_id_len, &id)) != 0) {
        return r;
    }
    memcpy(h->message_id, id, h->message_id_len);
    return 0;
}

/* Content type, v1 reserved/IV length, frame length, v2 suite data. */
static int
parse_content(struct esdk_header *h, struct kc_rd *rd,
              const struct esdk_limits *lim)
{
    const uint8_t *p;
    uint32_t reserved;
    uint8_t iv_len;
    int r;

    if ((r = kc_rd_u8(rd, &h->content_type)) != 0) {
        return r;
    }
    if (h->content_type != 1 && h->content_type != 2) {
        return KC_EFORMAT;
    }
    if (h->suite->version == 1) {
        if ((r = kc_rd_u32(rd, &reserved)) != 0 ||
            (r = kc_rd_u8(rd, &iv_len)) != 0) {
            return r;
        }
        if (reserved != 0 || iv_len != ESDK_IV_LEN) {
            return KC_EFORMAT;
        }
    }
    if ((r = kc_rd_u32(rd, &h->frame_len)) != 0) {
        return r;
    }
    if ((h->content_type == 1) != (h->frame_len == 0)) {
        return KC_EFORMAT;
    }
    if (h->frame_len > lim->max_frame_len) {
        return KC_ETOOBIG;
    }
    if (h->suite->version == 2) {
        if ((r = kc_rd_bytes(rd, ESDK_COMMIT_LEN, &p)) != 0) {
            return r;
        }
        memcpy(h->commitment, p, ESDK_COMMIT_LEN);
    }
    return 0;
}

/* The public key entry must be present exactly for signing suites. */
static int
check_pubkey_entry(const struct esdk_header *h)
{
    const struct esdk_ec_pair *pk;

    pk = esdk_ec_get(&h->ec, ESDK_PUBKEY_EC_KEY, strlen(ESDK_PUBKEY_EC_KEY));
    if ((h->suite->sig_nid != 0) != (pk != NULL)) {
        return KC_EFORMAT;
    }
    return 0;
}

static int
parse_all(struct esdk_header *h, const uint8_t *msg, size_t len,
          const struct esdk_limits *lim)
{
    struct kc_rd rd;
    const uint8_t *blk, *p;
    uint16_t aad_len;
    int r;

    kc_rd_init(&rd, msg, len, KC_EFORMAT);
    if ((r = parse_prefix(h, &rd, lim)) != 0 ||
        (r = kc_rd_u16(&rd, &aad_len)) != 0 ||
        (r = kc_rd_bytes(&rd, aad_len, &blk)) != 0 ||
        (r = parse_ec(h, blk, aad_len)) != 0 ||
        (r = check_pubkey_entry(h)) != 0 ||
        (r = parse_edks(h, &rd, lim)) != 0 ||
        (r = parse_content(h, &rd, lim)) != 0) {
        return r;
    }
    h->header_len = rd.off;
    if (h->suite->version == 1) {
        if ((r = kc_rd_bytes(&rd, ESDK_IV_LEN, &p)) != 0) {
            return r;
        }
        memcpy(h->header_iv, p, ESDK_IV_LEN);
    }
    if ((r = kc_rd_bytes(&rd, ESDK_TAG_LEN, &p)) != 0) {
        return r;
    }
    memcpy(h->header_tag, p, ESDK_TAG_LEN);
    h->body_off = rd.off;
    return 0;
}

int
esdk_header_parse(const uint8_t *msg, size_t len,
                  const struct esdk_limits *lim, struct esdk_header **out)
{
    struct esdk_limits eff;
    struct esdk_header *h = NULL;
    int r;

    *out = NULL;
    esdk_limits_effective(lim, &eff);
    if (len > eff.max_message) {
        return KC_ETOOBIG;
    }
    if (msg == NULL && len > 0) {
        return KC_EINVAL;
    }
    if ((h = calloc(1, sizeof(*h))) == NULL) {
        return KC_ENOMEM;
    }
    esdk_ec_init(&h->ec);
    kc_buf_init(&h->ec_canonical, ESDK_U16_MAX);
    esdk_edk_list_init(&h->edks);
    if ((r = parse_all(h, msg, len, &eff)) != 0) {
        goto out;
    }
    *out = h;
    h = NULL;
out:
    esdk_header_free(h);
    return r;
}

void
esdk_header_free(struct esdk_header *h)
{
    if (h == NULL) {
        return;
    }
    esdk_ec_clear(&h->ec);
    kc_buf_clear(&h->ec_canonical);
    esdk_edk_list_clear(&h->edks);
    kc_wipe(h, sizeof(*h));
    free(h);
}
