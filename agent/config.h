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
 *   allow_legacy_suites = false ; read suites without key commitment
 *   max_edks = 16           ; encrypted data keys per message read
 *   max_message_size = 0    ; bytes per message read (0: max_frame)
 *   max_body_frames = 1048576 ; body frames per message read
 *   max_frame_length = 1048576 ; a message's frame length, read
 *   allow_stats = uid:0, group:ops ; who may read stats (default: own uid)
 *   max_connections = 1024
 *   max_connections_per_uid = 256 ; so one peer cannot take every slot
 *   max_inflight = 128      ; requests per connection waiting on a KMS
 *   idle_timeout = 300      ; seconds without a request before closing
 *   read_timeout = 10       ; seconds to finish a frame once begun
 *   socket_group = app      ; group owning the socket (default: ours)
 *   metrics_listen = 127.0.0.1:9464 ; serve /metrics over HTTP on a
 *                           ;  loopback address (default: off)
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
 *   ttl_jitter = 0.05       ; TTLs shortened by up to this fraction, at
 *                           ;  random, so keys do not all expire together
 *   refresh_ahead = 0.8     ; fetch a successor in the background once a
 *                           ;  key is this far into its TTL or caps (0=off)
 *   encrypt_grace = 0       ; seconds past the TTL a key may still encrypt
 *   decrypt_grace = 0       ;  / decrypt while the provider is down
 *   prewarm = table=users,column=email | - ; contexts to fetch at
 *                           ;  start, separated by '|' ('-': empty)
 *   allow_encrypt = uid:1000, group:app   ; who may encrypt (default:
 *   allow_decrypt = uid:1000               ;  the agent's own uid)
 *   also_wrap_with = other-alias, ...      ; extra EDKs per message
 *
 *   [key.kms-key]
 *   provider = aws-kms      ; or alibaba-kms
 *   key_id = arn:aws:kms:...  ; AWS key ARN/alias, Alibaba key id/alias
 *   region = eu-west-1
 *   endpoint = https://...  ; URL override (tests: a fake on 127.0.0.1)
 *   ca_file = /path/ca.pem  ; CA bundle for the endpoint
 *   signature = v3          ; alibaba-kms: v3 (ACS3-HMAC-SHA256) or v1
 *   credentials_file = ...  ; instead of the environment
 *   profile = default       ; aws-kms shared credentials profile
 *   connect_timeout = 2000  ; ms
 *   request_timeout = 10000 ; ms, whole request including retries
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
    double ttl_jitter;
    double refresh_ahead;
    uint64_t encrypt_grace_ms;
    uint64_t decrypt_grace_ms;
    char *prewarm;        /* "k=v,k=v; k=v" or NULL */
    char *allow_encrypt; /* policy text, NULL = agent's own uid only */
    char *allow_decrypt;
    char *also_wrap_with; /* comma-separated aliases, or NULL */
    /* remote KMS providers */
    char *key_id;
    char *region;
    char *endpoint;
    char *ca_file;
    char *signature;      /* alibaba-kms: "v3" (default) or "v1" */
    char *credentials_file;
    char *profile;
    uint64_t connect_timeout_ms;
    uint64_t request_timeout_ms;
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
    uint64_t max_edks;
    uint64_t max_message_size;
    uint64_t max_body_frames;
    uint64_t max_frame_length;
    char *allow_stats;     /* policy text, NULL = agent's own uid only */
    char *socket_group;    /* group owning the socket, or NULL */
    char *metrics_listen;  /* "127.0.0.1:9464", or NULL: off */
    size_t max_connections;
    size_t max_connections_per_uid;
    uint64_t idle_timeout_ms;  /* 0 = none */
    uint64_t read_timeout_ms;  /* to finish a frame once it has begun */
    size_t max_inflight;   /* per connection */
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

/*
 * config_parse_listen - split "host:port" ("[::1]:port") into host and
 * port; 0 only for a loopback address (127.0.0.0/8 or ::1), else -1.
 */
int config_parse_listen(const char *spec, char *host, size_t hostlen,
                        uint16_t *port);

/*
 * config_list_next - step through a list value ("a, b c"): items are
 * separated by commas and blanks alike.  Sets *item and *len to the next
 * item and advances *pos past it; returns false at the end.
 */
bool config_list_next(const char **pos, const char **item, size_t *len);

/* config_list_count - how many items config_list_next will yield. */
size_t config_list_count(const char *text);

/* config_str_same - equal strings, or both NULL. */
bool config_str_same(const char *a, const char *b);

/* config_find_key - the alias's section, or NULL. */
const struct key_config *config_find_key(const struct agent_config *cfg,
                                         const char *alias, size_t len);

/* config_free - free everything; NULL is a no-op. */
void config_free(struct agent_config *cfg);

#endif /* KC_CONFIG_H */
