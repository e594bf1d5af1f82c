/*
 * config.h - the agent's INI configuration: parsed and fully validated
 * before anything uses it.
 *
 *   [agent]
 *   socket = /run/keycache/agent.sock
 *   socket_mode = 0660
 *   capacity = 10000        ; cached data keys, all aliases together
 *   log_level = info        ; error | warn | info | debug
 *   log_format = text       ; text | json
 *   max_frame = 1114112     ; largest request/response body, bytes
 *   allow_legacy_suites = false
 *
 *   [key.users-email]       ; alias: letters, digits, '-', '_'
 *   provider = local
 *   key_file = /etc/keycache/users-email.key
 *   ttl = 300               ; seconds an encryption data key is used
 *   decrypt_ttl = 300       ; seconds an unwrapped data key is kept
 *   max_messages = 10000    ; messages per encryption data key
 *   max_bytes = 1073741824  ; plaintext bytes per encryption data key
 *   namespace = keycache    ; raw-AES key namespace (EDK provider id)
 *   name = users-email      ; raw-AES key name (default: the alias)
 *   suite = 0x0478          ; 0x0478 or 0x0578
 *   frame_len = 4096        ; plaintext bytes per body frame
 */
#ifndef KC_CONFIG_H
#define KC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc_buf.h"
#include "log.h"

#define CONFIG_ALIAS_MAX 64

#define CONFIG_DEFAULT_SOCKET       "/run/keycache/agent.sock"
#define CONFIG_DEFAULT_SOCKET_MODE  0660
#define CONFIG_DEFAULT_CAPACITY     10000
#define CONFIG_DEFAULT_TTL          300
#define CONFIG_DEFAULT_MAX_MESSAGES 10000
#define CONFIG_DEFAULT_MAX_BYTES    (1ULL << 30)
#define CONFIG_DEFAULT_NAMESPACE    "keycache"

struct key_config {
    char alias[CONFIG_ALIAS_MAX];
    char *provider;      /* "local" */
    char *key_file;      /* local provider: 32-byte master key */
    char *ns;            /* raw-AES key namespace */
    char *name;          /* raw-AES key name */
    uint64_t ttl_ms;
    uint64_t decrypt_ttl_ms;
    uint64_t max_messages;
    uint64_t max_bytes;
    uint16_t suite;
    uint32_t frame_len;
    unsigned int seen;   /* bit set of keys given, for defaults */
    struct key_config *next;
};

struct agent_config {
    char *socket_path;
    mode_t socket_mode;
    size_t capacity;
    enum log_level log_level;
    bool log_json;
    size_t max_frame;
    bool allow_legacy;
    struct key_config *keys; /* in file order */
    size_t nkeys;
};

/*
 * config_load - parse and validate path.  On failure writes a one-line
 * reason ("FILE:LINE: ...") to err.  Returns 0 with *out owned by the
 * caller (config_free), KC_ECONFIG, or KC_ENOMEM.
 */
KC_MUST_USE int config_load(const char *path, struct agent_config **out,
                            char *err, size_t errlen);

/* config_find_key - the alias's section, or NULL. */
const struct key_config *config_find_key(const struct agent_config *cfg,
                                         const char *alias, size_t len);

/* config_free - free everything; NULL is a no-op. */
void config_free(struct agent_config *cfg);

#endif /* KC_CONFIG_H */
