/*
 * wire.c - frame codec and MessagePack field helpers (see PROTOCOL.md).
 */
#include "wire.h"

#include <string.h>

int
proto_frame_decode(const uint8_t *p, size_t n, size_t max,
                   const uint8_t **body, size_t *body_len, size_t *total)
{
    uint32_t len;

    *total = 0;
    if (n < PROTO_FRAME_HDR) {
        return 0;
    }
    len = kc_load_u32(p);
    if (len == 0) {
        return KC_EPROTO;
    }
    if (len > max) {
        return KC_ETOOBIG;
    }
    if (n - PROTO_FRAME_HDR < len) {
        return 0;
    }
    *body = p + PROTO_FRAME_HDR;
    *body_len = len;
    *total = PROTO_FRAME_HDR + (size_t)len;
    return 0;
}

int
proto_frame_begin(struct kc_buf *b, size_t *mark)
{
    *mark = b->len;
    return kc_buf_put_u32(b, 0);
}

int
proto_frame_end(struct kc_buf *b, size_t mark, size_t max)
{
    size_t body;

    if (mark > b->len || b->len - mark < PROTO_FRAME_HDR) {
        return KC_EINVAL;
    }
    body = b->len - mark - PROTO_FRAME_HDR;
    if (body == 0) {
        return KC_EPROTO;
    }
    if (body > max || body > UINT32_MAX) {
        return KC_ETOOBIG;
    }
    kc_store_u32(b->data + mark, (uint32_t)body);
    return 0;
}

static int
kc_buf_write_cb(void *data, const char *buf, size_t len)
{
    struct kc_buf *b = data;

    return kc_buf_put(b, buf, len) == 0 ? 0 : -1;
}

void
proto_packer_init(msgpack_packer *pk, struct kc_buf *b)
{
    msgpack_packer_init(pk, b, kc_buf_write_cb);
}

/* Bytes of payload following a msgpack type byte, or SIZE_MAX if the
 * byte is a container or invalid (handled by the caller). */
static int
scan_scalar(struct kc_rd *r, uint8_t t)
{
    static const uint8_t fixed[] = {
        /* 0xc0..0xdf: bytes after the type byte for fixed-size types */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 8, 1, 2, 4, 8,
        1, 2, 4, 8, 2, 3, 5, 9, 17, 0, 0, 0, 0, 0, 0, 0,
    };
    const uint8_t *p;
    uint8_t l8;
    uint16_t l16;
    uint32_t l32;
    size_t n;

    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        return 0;
    }
    if (t >= 0xa0 && t <= 0xbf) {
        return kc_rd_bytes(r, t & 0x1f, &p);
    }
    switch (t) {
    case 0xc4: case 0xd9: /* bin8, str8 */
        if (kc_rd_u8(r, &l8) != 0) {
            return KC_EPROTO;
        }
        return kc_rd_bytes(r, l8, &p);
    case 0xc5: case 0xda:
        if (kc_rd_u16(r, &l16) != 0) {
            return KC_EPROTO;
        }
        return kc_rd_bytes(r, l16, &p);
    case 0xc6: case 0xdb:
        if (kc_rd_u32(r, &l32) != 0) {
            return KC_EPROTO;
        }
        return kc_rd_bytes(r, l32, &p);
    case 0xc7: /* ext8: length, type, data */
        if (kc_rd_u8(r, &l8) != 0) {
            return KC_EPROTO;
        }
        return kc_rd_bytes(r, (size_t)l8 + 1, &p);
    case 0xc8:
        if (kc_rd_u16(r, &l16) != 0) {
            return KC_EPROTO;
        }
        return kc_rd_bytes(r, (size_t)l16 + 1, &p);
    case 0xc9:
        if (kc_rd_u32(r, &l32) != 0) {
            return KC_EPROTO;
        }
        return kc_rd_bytes(r, (size_t)l32 + 1, &p);
    default:
        break;
    }
    if (t >= 0xc0 && t <= 0xdf && (n = fixed[t - 0xc0]) != 0) {
        return kc_rd_bytes(r, n, &p);
    }
    return KC_EPROTO; /* 0xc1 is never used; containers handled above */
}

/* Element count of a container type byte (pairs count double). */
static int
scan_container(struct kc_rd *r, uint8_t t, uint64_t *elems, bool *is_cont)
{
    uint16_t c16;
    uint32_t c32;

    *is_cont = true;
    if (t >= 0x80 && t <= 0x8f) {
        *elems = (uint64_t)(t & 0x0f) * 2;
    } else if (t >= 0x90 && t <= 0x9f) {
        *elems = t & 0x0f;
    } else if (t == 0xdc || t == 0xde) {
        if (kc_rd_u16(r, &c16) != 0) {
            return KC_EPROTO;
        }
        *elems = t == 0xde ? (uint64_t)c16 * 2 : c16;
    } else if (t == 0xdd || t == 0xdf) {
        if (kc_rd_u32(r, &c32) != 0) {
            return KC_EPROTO;
        }
        *elems = t == 0xdf ? (uint64_t)c32 * 2 : c32;
    } else {
        *is_cont = false;
    }
    return 0;
}

int
proto_msgpack_check(const uint8_t *p, size_t len, size_t max_elems,
                    size_t max_depth)
{
    uint64_t stack[PROTO_MAX_DEPTH];
    size_t depth = 0, total = 0;
    struct kc_rd r;

    if (max_depth > PROTO_MAX_DEPTH) {
        max_depth = PROTO_MAX_DEPTH;
    }
    kc_rd_init(&r, p, len, KC_EPROTO);
    stack[0] = 1; /* one top-level value */
    depth = 1;
    while (depth > 0) {
        uint64_t elems;
        bool is_cont;
        uint8_t t;

        if (stack[depth - 1] == 0) {
            depth--;
            continue;
        }
        stack[depth - 1]--;
        if (kc_rd_u8(&r, &t) != 0 ||
            scan_container(&r, t, &elems, &is_cont) != 0) {
            return KC_EPROTO;
        }
        if (!is_cont) {
            if (scan_scalar(&r, t) != 0) {
                return KC_EPROTO;
            }
            continue;
        }
        /* Every element takes at least one byte: a count larger than
         * what is left is a lie meant to make the decoder allocate. */
        if (elems > kc_rd_left(&r)) {
            return KC_EPROTO;
        }
        total += (size_t)elems;
        if (total > max_elems) {
            return KC_ETOOBIG;
        }
        if (depth >= max_depth) {
            return KC_ETOOBIG;
        }
        stack[depth++] = elems;
    }
    return kc_rd_left(&r) == 0 ? 0 : KC_EPROTO;
}

int
proto_unpack_map(const uint8_t *body, size_t len, msgpack_unpacked *u)
{
    size_t off = 0;
    msgpack_unpack_return ret;
    int r;

    /* Validate sizes first: msgpack-c allocates a container's declared
     * element count before it reads the elements. */
    if ((r = proto_msgpack_check(body, len, PROTO_MAX_ELEMS,
                                 PROTO_MAX_DEPTH)) != 0) {
        return r;
    }
    if (len == 0 ||
        ((body[0] & 0xf0) != 0x80 && body[0] != 0xde && body[0] != 0xdf)) {
        return KC_EPROTO;
    }

    /* msgpack_unpack with the caller's zone, not msgpack_unpack_next,
     * which frees the zone and makes a new one on every call. */
    if (u->zone == NULL &&
        (u->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE)) == NULL) {
        return KC_ENOMEM;
    }
    ret = msgpack_unpack((const char *)body, len, &off, u->zone, &u->data);
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR) {
        return KC_ENOMEM;
    }
    if (ret != MSGPACK_UNPACK_SUCCESS) {
        return KC_EPROTO;
    }
    if (off != len || u->data.type != MSGPACK_OBJECT_MAP) {
        return KC_EPROTO;
    }
    return 0;
}

const char *
proto_str_bytes(const msgpack_object *o)
{
    const char *p = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr
                                                  : o->via.str.ptr;

    return p != NULL ? p : "";
}

int
proto_map_check_keys(const msgpack_object *map)
{
    const msgpack_object_kv *kv = map->via.map.ptr;
    uint32_t n = map->via.map.size, i, j;

    if (n > PROTO_MAX_MAP_KEYS) {
        return KC_ETOOBIG;
    }
    for (i = 0; i < n; i++) {
        if (kv[i].key.type != MSGPACK_OBJECT_STR) {
            return KC_EPROTO;
        }
        for (j = 0; j < i; j++) {
            if (kv[j].key.via.str.size == kv[i].key.via.str.size &&
                memcmp(proto_str_bytes(&kv[j].key),
                       proto_str_bytes(&kv[i].key),
                       kv[i].key.via.str.size) == 0) {
                return KC_EPROTO;
            }
        }
    }
    return 0;
}

const msgpack_object *
proto_map_get(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);
    uint32_t i;

    if (map == NULL || map->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    for (i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];

        if (kv->key.type == MSGPACK_OBJECT_STR &&
            kv->key.via.str.size == klen &&
            memcmp(proto_str_bytes(&kv->key), key, klen) == 0) {
            return &kv->val;
        }
    }
    return NULL;
}

static int
get_field(const msgpack_object *map, const char *key, bool required,
          const msgpack_object **o)
{
    *o = proto_map_get(map, key);
    if (*o == NULL || (*o)->type == MSGPACK_OBJECT_NIL) {
        return required ? KC_EINVAL : 1;
    }
    return 0;
}

int
proto_get_uint(const msgpack_object *map, const char *key, bool required,
               uint64_t *v)
{
    const msgpack_object *o;
    int r;

    if ((r = get_field(map, key, required, &o)) != 0) {
        return r;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return KC_EINVAL;
    }
    *v = o->via.u64;
    return 0;
}

int
proto_get_str(const msgpack_object *map, const char *key, bool required,
              const char **p, size_t *len)
{
    const msgpack_object *o;
    int r;

    if ((r = get_field(map, key, required, &o)) != 0) {
        return r;
    }
    if (o->type != MSGPACK_OBJECT_STR) {
        return KC_EINVAL;
    }
    *p = proto_str_bytes(o);
    *len = o->via.str.size;
    return 0;
}

int
proto_get_bin(const msgpack_object *map, const char *key, bool required,
              const uint8_t **p, size_t *len)
{
    const msgpack_object *o;
    int r;

    if ((r = get_field(map, key, required, &o)) != 0) {
        return r;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = (const uint8_t *)proto_str_bytes(o);
        *len = o->via.bin.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = (const uint8_t *)proto_str_bytes(o);
        *len = o->via.str.size;
        return 0;
    }
    return KC_EINVAL;
}

int
proto_get_map(const msgpack_object *map, const char *key, bool required,
              const msgpack_object **out)
{
    const msgpack_object *o;
    int r;

    if ((r = get_field(map, key, required, &o)) != 0) {
        return r;
    }
    if (o->type != MSGPACK_OBJECT_MAP) {
        return KC_EINVAL;
    }
    *out = o;
    return 0;
}

void
proto_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void
proto_pack_cstr(msgpack_packer *pk, const char *s)
{
    proto_pack_strn(pk, s, strlen(s));
}

void
proto_pack_bin(msgpack_packer *pk, const uint8_t *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

static void
pack_error_fields(msgpack_packer *pk, int code, const char *message)
{
    proto_pack_cstr(pk, "ok");
    msgpack_pack_false(pk);
    proto_pack_cstr(pk, "error");
    msgpack_pack_map(pk, 3);
    proto_pack_cstr(pk, "code");
    msgpack_pack_int(pk, code);
    proto_pack_cstr(pk, "name");
    proto_pack_cstr(pk, kc_errname(code));
    proto_pack_cstr(pk, "message");
    proto_pack_cstr(pk, message != NULL && message[0] != '\0'
                            ? message
                            : kc_strerror(code));
}

void
proto_pack_error_body(msgpack_packer *pk, int code, const char *message)
{
    msgpack_pack_map(pk, 2);
    pack_error_fields(pk, code, message);
}

void
proto_pack_error(msgpack_packer *pk, bool has_id, uint64_t id, int code,
                 const char *message)
{
    msgpack_pack_map(pk, 3);
    proto_pack_cstr(pk, "id");
    if (has_id) {
        msgpack_pack_uint64(pk, id);
    } else {
        msgpack_pack_nil(pk);
    }
    pack_error_fields(pk, code, message);
}

int
proto_error_frame(struct kc_buf *b, bool has_id, uint64_t id, int code,
                  const char *message)
{
    msgpack_packer pk;
    size_t mark;
    int r;

    if ((r = proto_frame_begin(b, &mark)) != 0) {
        return r;
    }
    proto_packer_init(&pk, b);
    proto_pack_error(&pk, has_id, id, code, message);
    return proto_frame_end(b, mark, SIZE_MAX);
}
