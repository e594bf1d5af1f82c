/*
 * users_data.c - deterministic demo users.
 */
#include "users_data.h"

#include <stdio.h>
#include <time.h>

const struct kc_context_pair users_email_ctx[2] = {
    {"table", "users"},
    {"column", "email"},
};

static const char *const first_names[] = {
    "Ada", "Ben", "Chloe", "Dmitri", "Elif", "Farah", "Goran", "Hana",
    "Ines", "Jonas", "Keiko", "Luis", "Maya", "Nils", "Olu", "Priya",
    "Quentin", "Rosa", "Sven", "Tariq",
};
static const char *const last_names[] = {
    "Abara", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia",
    "Haddad", "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Moreau",
    "Nakamura", "Okafor",
};
#define NFIRST (sizeof(first_names) / sizeof(first_names[0]))
#define NLAST  (sizeof(last_names) / sizeof(last_names[0]))

void
users_make(int i, char *name, char *email)
{
    const char *first = first_names[(size_t)i % NFIRST];
    const char *last = last_names[((size_t)i * 7 + (size_t)i / NFIRST) %
                                  NLAST];
    size_t k;

    snprintf(name, USERS_FIELD_MAX, "%s %s", first, last);
    snprintf(email, USERS_FIELD_MAX, "%s.%s.%d@example.org", first, last,
             i);
    for (k = 0; email[k] != '\0'; k++) {
        if (email[k] >= 'A' && email[k] <= 'Z') {
            email[k] = (char)(email[k] - 'A' + 'a');
        }
    }
}

double
users_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
