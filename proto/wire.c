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

int
proto_unpack_map(const uint8_t *body, size_t len, msgpack_unpacked *u)
{
    size_t off = 0;
    msgpack_unpack_return ret;

    ret = msgpack_unpack_next(u, (const char *)body, len, &off);
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
            memcmp(kv->key.via.str.ptr, key, klen) == 0) {
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
    *p = o->via.str.ptr;
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
        *p = (const uint8_t *)o->via.bin.ptr;
        *len = o->via.bin.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = (const uint8_t *)o->via.str.ptr;
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
    proto_pack_cstr(pk, "ok");
    msgpack_pack_false(pk);
    proto_pack_cstr(pk, "error");
    msgpack_pack_map(pk, 3);
    proto_pack_cstr(pk, "code");
    msgpack_pack_int(pk, code);
    proto_pack_cstr(pk, "name");
    proto_pack_cstr(pk, kc_errname(code));
    proto_pack_cstr(pk, "message");
    proto_pack_cstr(pk, message != NULL ? message : kc_strerror(code));
}
