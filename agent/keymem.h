/*
 * keymem.h - locked, non-dumpable memory for plaintext data keys.
 *
 * Keys are small (16-32 bytes), so instead of one guarded page per key
 * they are packed into fixed-size slots inside slabs.  Each slab comes
 * from sodium_malloc: guard pages on both sides, mlock()ed, excluded from
 * core dumps (MADV_DONTDUMP).  A slot is wiped when freed; a slab is
 * wiped again by sodium_free when it is released at exit.
 *
 * Not thread-safe (the agent is single-threaded).
 */
#ifndef KC_KEYMEM_H
#define KC_KEYMEM_H

#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"

#define KEYMEM_SLOT_SIZE 32 /* bytes per slot: one AES-256 data key */

/*
 * keymem_init - check that slot_count slots can be locked: reads
 * RLIMIT_MEMLOCK (raising the soft limit toward the hard one if needed)
 * and locks a first slab.  Returns 0, or KC_ESYS with a one-line reason
 * in err (e.g. the limit and how much is needed).  Call once at start.
 */
KC_MUST_USE int keymem_init(size_t slot_count, char *err, size_t errlen);

/*
 * keymem_alloc - a zeroed slot of at least n bytes (n <= KEYMEM_SLOT_SIZE),
 * or NULL when out of memory or n is too large.  Free with keymem_free.
 */
uint8_t *keymem_alloc(size_t n);

/* keymem_free - wipe and release a slot; NULL is a no-op. */
void keymem_free(uint8_t *p);

/* keymem_locked_bytes - bytes of locked slab memory currently mapped. */
size_t keymem_locked_bytes(void);

/* keymem_slots_used - slots currently handed out. */
size_t keymem_slots_used(void);

/* keymem_shutdown - wipe and release every slab (at exit). */
void keymem_shutdown(void);

#endif /* KC_KEYMEM_H */
