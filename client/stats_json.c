/*
 * stats_json.c - render the agent's stats reply (a msgpack map) as JSON.
 *
 * Stats hold counters and names only, never key material or payloads, so
 * jansson's ordinary (non-wiping) allocations are acceptable here.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kc_err.h"
#include "wire.h"

/* The stats map is three levels deep; anything far deeper is not ours. */
#define STATS_MAX_DEPTH 16

static int to_json(const msgpack_object *o, int depth, json_t **out);

static int
map_to_json(const msgpack_object *o, int depth, json_t **out)
{
    json_t *obj, *v = NULL;
    uint32_t i;
    int r;

    if ((obj = json_object()) == NULL) {
        return KC_ENOMEM;
    }
    for (i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];

        if (kv->key.type != MSGPACK_OBJECT_STR) {
            r = KC_EPROTO;
            goto out;
        }
        if ((r = to_json(&kv->val, depth + 1, &v)) != 0) {
            goto out;
        }
        if (json_object_setn_new(obj, proto_str_bytes(&kv->key),
                                 kv->key.via.str.size, v) != 0) {
            /* setn_new consumed v even on failure. */
            r = KC_EPROTO;
            goto out;
        }
    }
    *out = obj;
    obj = NULL;
    r = 0;
out:
    json_decref(obj);
    return r;
}

static int
array_to_json(const msgpack_object *o, int depth, json_t **out)
{
    json_t *arr, *v = NULL;
    uint32_t i;
    int r;

    if ((arr = json_array()) == NULL) {
        return KC_ENOMEM;
    }
    for (i = 0; i < o->via.array.size; i++) {
        if ((r = to_json(&o->via.array.ptr[i], depth + 1, &v)) != 0) {
            goto out;
        }
        if (json_array_append_new(arr, v) != 0) {
            r = KC_ENOMEM;
            goto out;
        }
    }
    *out = arr;
    arr = NULL;
    r = 0;
out:
    json_decref(arr);
    return r;
}

static json_t *
scalar_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* json_int_t is signed; counters never get near 2^63. */
        return json_integer(o->via.u64 > INT64_MAX ? INT64_MAX
                                                   : (json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    default:
        return NULL;
    }
}

static int
to_json(const msgpack_object *o, int depth, json_t **out)
{
    *out = NULL;
    if (depth > STATS_MAX_DEPTH) {
        return KC_EPROTO;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        return map_to_json(o, depth, out);
    }
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        return array_to_json(o, depth, out);
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        /* json_stringn refuses invalid UTF-8; NUL would end the text. */
        const char *s = proto_str_bytes(o);

        if (memchr(s, '\0', o->via.str.size) != NULL ||
            (*out = json_stringn(s, o->via.str.size)) == NULL) {
            return KC_EPROTO;
        }
        return 0;
    }
    /* bin and ext have no JSON form; stats never carry them. */
    if ((*out = scalar_to_json(o)) == NULL) {
        return o->type == MSGPACK_OBJECT_BIN || o->type == MSGPACK_OBJECT_EXT
                   ? KC_EPROTO
                   : KC_ENOMEM;
    }
    return 0;
}

int
stats_to_json(const msgpack_object *o, char **out)
{
    json_t *root = NULL;
    char *text = NULL;
    int r;

    *out = NULL;
    if ((r = to_json(o, 0, &root)) != 0) {
        goto out;
    }
    text = json_dumps(root, JSON_COMPACT);
    if (text == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    if ((*out = kcmem_dup(text, strlen(text), 1)) == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    r = 0;
out:
    free(text);
    json_decref(root);
    return r;
}
