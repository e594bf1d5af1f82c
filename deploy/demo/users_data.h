/*
 * users_data.h - the demo applications' made-up users: the i-th user is
 * the same on every run, so what is read back can be checked against
 * what was inserted.  Shared by users_demo (SQLite) and users_pg.
 */
#ifndef KC_USERS_DATA_H
#define KC_USERS_DATA_H

#include <stddef.h>

#include <keycache.h>

#define USERS_FIELD_MAX 96 /* bytes for a name or an email, NUL included */

/* users_make - the i-th user's name and (lower-case) email, each at most
 * USERS_FIELD_MAX bytes. */
void users_make(int i, char *name, char *email);

/* The encryption context of the email column, the same in both demos so
 * each can read what the other wrote. */
extern const struct kc_context_pair users_email_ctx[2];
#define USERS_EMAIL_NCTX 2

/* users_now_ms - milliseconds on CLOCK_MONOTONIC, for timings. */
double users_now_ms(void);

#endif /* KC_USERS_DATA_H */
