/*
 * kms_creds.c - static credentials for the KMS providers, from the
 * environment or an INI credentials file, held in locked memory.
 *
 * AWS:     credentials_file (config) > AWS_ACCESS_KEY_ID /
 *          AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (legacy
 *          AWS_SECURITY_TOKEN) > AWS_SHARED_CREDENTIALS_FILE or
 *          ~/.aws/credentials; profile from the config, AWS_PROFILE,
 *          "default".  Keys aws_access_key_id, aws_secret_access_key,
 *          aws_session_token.
 * Alibaba: credentials_file (config) > ALIBABA_CLOUD_ACCESS_KEY_ID /
 *          ALIBABA_CLOUD_ACCESS_KEY_SECRET / ALIBABA_CLOUD_SECURITY_TOKEN
 *          > ALIBABA_CLOUD_CREDENTIALS_FILE or ~/.alibabacloud/credentials;
 *          profile from the config, ALIBABA_CLOUD_PROFILE, "default".
 *          Keys access_key_id, access_key_secret, security_token.
 */
#include "kms.h"

#include <ini.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* TODO: credentials are read once at start.  Rotated session tokens
 * (STS, instance roles) need a restart; re-reading the file when it
 * changes, and the container/instance metadata providers behind a flag
 * with a configurable base URL, would fix that. */

struct cred_names {
    const char *env_id, *env_secret, *env_token, *env_token2;
    const char *env_file, *env_profile, *home_file;
    const char *key_id, *key_secret, *key_token;
};

static const struct cred_names aws_names = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE",
    ".aws/credentials", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token",
};

static const struct cred_names ali_names = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN", NULL, "ALIBABA_CLOUD_CREDENTIALS_FILE",
    "ALIBABA_CLOUD_PROFILE", ".alibabacloud/credentials", "access_key_id",
    "access_key_secret", "security_token",
};

/* Copy the three strings into one locked block. */
static int
creds_set(struct kms_creds *c, const char *id, const char *secret,
          const char *token)
{
    size_t il = strlen(id), sl = strlen(secret);
    size_t tl = token != NULL && *token != '\0' ? strlen(token) : 0;
    char *b;

    if ((b = sodium_malloc(il + sl + tl + 3)) == NULL) {
        return KC_ENOMEM;
    }
    c->block = b;
    c->access_key = b;
    memcpy(b, id, il + 1);
    c->secret = b + il + 1;
    memcpy(c->secret, secret, sl + 1);
    c->token = NULL;
    if (tl > 0) {
        c->token = c->secret + sl + 1;
        memcpy(c->token, token, tl + 1);
    }
    return 0;
}

void
kms_creds_clear(struct kms_creds *c)
{
    if (c->block != NULL) {
        sodium_free(c->block); /* wipes */
    }
    c->block = NULL;
    c->access_key = c->secret = c->token = NULL;
}

/* What the INI handler collects: the three values of one section. */
struct ini_state {
    const struct cred_names *names;
    const char *profile;
    char *id;
    char *secret;
    char *token;
    int err;
};

static int
set_dup(char **dst, const char *v)
{
    if (*dst != NULL) {
        kc_free_wipe(*dst, strlen(*dst));
    }
    *dst = strdup(v);
    return *dst != NULL;
}

static int
creds_ini_line(void *user, const char *section, const char *name,
            const char *value)
{
    struct ini_state *st = user;

    if (strcmp(section, st->profile) != 0) {
        return 1;
    }
    if (strcmp(name, st->names->key_id) == 0) {
        return set_dup(&st->id, value);
    }
    if (strcmp(name, st->names->key_secret) == 0) {
        return set_dup(&st->secret, value);
    }
    if (strcmp(name, st->names->key_token) == 0) {
        return set_dup(&st->token, value);
    }
    return 1;
}

static void
free_wipe_str(char *s)
{
    if (s != NULL) {
        kc_free_wipe(s, strlen(s));
    }
}

static int
load_file(const char *path, const char *profile, const struct cred_names *n,
          struct kms_creds *c, char *err, size_t errlen)
{
    struct ini_state st;
    int r = KC_ECONFIG, pr;

    memset(&st, 0, sizeof(st));
    st.names = n;
    st.profile = profile;
    /* inih's line buffer is on its stack and not wiped.
     * TODO: a wiping reader would keep secrets out of freed stack. */
    pr = ini_parse(path, creds_ini_line, &st);
    if (pr < 0) {
        snprintf(err, errlen, "credentials file %s cannot be read", path);
        goto out;
    }
    if (pr > 0) {
        snprintf(err, errlen, "credentials file %s: error on line %d", path,
                 pr);
        goto out;
    }
    if (st.id == NULL || st.secret == NULL) {
        snprintf(err, errlen,
                 "credentials file %s: profile [%s] lacks %s or %s", path,
                 profile, n->key_id, n->key_secret);
        goto out;
    }
    if ((r = creds_set(c, st.id, st.secret, st.token)) != 0) {
        goto out;
    }
    snprintf(c->source, sizeof(c->source), "file %s [%s]", path, profile);
out:
    free_wipe_str(st.id);
    free_wipe_str(st.secret);
    free_wipe_str(st.token);
    return r;
}

static int
creds_load(const struct key_config *k, const struct cred_names *n,
           struct kms_creds *c, char *err, size_t errlen)
{
    const char *profile = k->profile, *id, *secret, *token, *file, *home;
    char path[4096];

    memset(c, 0, sizeof(*c));
    if (profile == NULL) {
        profile = getenv(n->env_profile);
    }
    if (profile == NULL || *profile == '\0') {
        profile = "default";
    }
    if (k->credentials_file != NULL) {
        return load_file(k->credentials_file, profile, n, c, err, errlen);
    }
    id = getenv(n->env_id);
    secret = getenv(n->env_secret);
    if (id != NULL && *id != '\0' && secret != NULL && *secret != '\0') {
        token = getenv(n->env_token);
        if ((token == NULL || *token == '\0') && n->env_token2 != NULL) {
            token = getenv(n->env_token2);
        }
        snprintf(c->source, sizeof(c->source), "environment %s", n->env_id);
        return creds_set(c, id, secret, token);
    }
    file = getenv(n->env_file);
    if (file == NULL || *file == '\0') {
        if ((home = getenv("HOME")) == NULL) {
            snprintf(err, errlen, "no credentials: set %s and %s, or "
                     "credentials_file", n->env_id, n->env_secret);
            return KC_ECONFIG;
        }
        snprintf(path, sizeof(path), "%s/%s", home, n->home_file);
        file = path;
    }
    if (access(file, R_OK) != 0) {
        snprintf(err, errlen, "no credentials: set %s and %s, or "
                 "credentials_file (and %s is not readable)", n->env_id,
                 n->env_secret, file);
        return KC_ECONFIG;
    }
    return load_file(file, profile, n, c, err, errlen);
}

int
kms_creds_load_aws(const struct key_config *k, struct kms_creds *c,
                   char *err, size_t errlen)
{
    return creds_load(k, &aws_names, c, err, errlen);
}

int
kms_creds_load_alibaba(const struct key_config *k, struct kms_creds *c,
                       char *err, size_t errlen)
{
    return creds_load(k, &ali_names, c, err, errlen);
}
