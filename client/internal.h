/*
 * internal.h - helpers shared by the client library's own files.  Not
 * installed; nothing here is exported from libkeycache.so.
 */
#ifndef KC_CLIENT_INTERNAL_H
#define KC_CLIENT_INTERNAL_H

#include <msgpack.h>
#include <stddef.h>

/*
 * kcmem_alloc - allocate n bytes that kc_free() can release: the size is
 * recorded in a hidden header so kc_free wipes exactly what was handed
 * out.  Returns NULL only when out of memory (or n is absurd).
 * The caller owns the result and frees it with kc_free.
 */
void *kcmem_alloc(size_t n);

/*
 * kcmem_dup - kcmem_alloc(n) and copy n bytes of p into it; when nul is
 * true one extra byte is allocated and set to '\0' (for strings).
 * Returns NULL when out of memory.  Free with kc_free.
 */
void *kcmem_dup(const void *p, size_t n, int nul);

/*
 * stats_to_json - render a msgpack object (the agent's stats map) as
 * compact JSON text.  Returns 0 with *out owned by the caller (kc_free),
 * KC_EPROTO when the object cannot be expressed (non-string map key,
 * nesting too deep), KC_ENOMEM.
 */
int stats_to_json(const msgpack_object *o, char **out);

#endif /* KC_CLIENT_INTERNAL_H */
