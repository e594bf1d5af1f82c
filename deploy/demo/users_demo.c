/*
 * users_demo.c - the encrypted-column scenario, end to end.
 *
 * An application stores a users table (id, name, email) in SQLite with
 * the email column encrypted through keycache-agent: each email is
 * encrypted under a key alias with the context
 * {"table": "users", "column": "email"} and stored as Base64 text.  The
 * program then reads every row back, decrypts it (requiring that
 * context), and checks it equals what was inserted.
 *
 *   users_demo [--socket PATH] [--key ALIAS] [--count N] DB_FILE
 *
 * Links libkeycache and SQLite only: this is what an application sees.
 * Exit status 0 when every row round-trips, 1 otherwise, 2 on bad usage.
 */
#include <getopt.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keycache.h>

#include "users_data.h"

#define DEMO_DEFAULT_COUNT 300
#define DEMO_SHOW_ROWS     3
#define DEMO_SHOW_CHARS    56

struct demo {
    struct kc_client *kc;
    sqlite3 *db;
    const char *alias;
    int count;
    size_t ct_bytes;   /* ciphertext bytes over all rows */
    size_t b64_chars;  /* stored text over all rows */
    double enc_ms, dec_ms;
};

static int
kc_fail(const struct demo *d, const char *what, int id, int r)
{
    fprintf(stderr, "users_demo: %s (row %d): %s: %s\n", what, id,
            kc_strerror(r), kc_client_last_error(d->kc));
    return -1;
}

static int
db_fail(const struct demo *d, const char *what)
{
    fprintf(stderr, "users_demo: %s: %s\n", what, sqlite3_errmsg(d->db));
    return -1;
}

static void
print_truncated(const char *s)
{
    size_t n = strlen(s);

    if (n <= DEMO_SHOW_CHARS) {
        printf("%s", s);
    } else {
        printf("%.*s... (%zu chars)", DEMO_SHOW_CHARS, s, n);
    }
}

/* Encrypt one email and return it as Base64 text (free with kc_free). */
static int
seal_email(struct demo *d, int id, const char *email, char **b64)
{
    uint8_t *ct = NULL;
    size_t ct_len = 0;
    double t0 = users_now_ms();
    int r;

    r = kc_encrypt(d->kc, d->alias, users_email_ctx, USERS_EMAIL_NCTX,
                   (const uint8_t *)email, strlen(email), &ct, &ct_len);
    d->enc_ms += users_now_ms() - t0;
    if (r != 0) {
        return kc_fail(d, "encrypt", id, r);
    }
    d->ct_bytes += ct_len;
    r = kc_base64_encode(ct, ct_len, b64);
    kc_free(ct);
    if (r != 0) {
        return kc_fail(d, "base64", id, r);
    }
    d->b64_chars += strlen(*b64);
    return 0;
}

static int
insert_one(struct demo *d, sqlite3_stmt *st, int id)
{
    char name[USERS_FIELD_MAX], email[USERS_FIELD_MAX];
    char *b64 = NULL;
    int r = -1;

    users_make(id, name, email);
    if (seal_email(d, id, email, &b64) != 0) {
        goto out;
    }
    if (sqlite3_bind_int(st, 1, id) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_text(st, 3, b64, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE) {
        db_fail(d, "insert");
        goto out;
    }
    sqlite3_reset(st);
    r = 0;
out:
    kc_free(b64);
    explicit_bzero(email, sizeof(email));
    return r;
}

static int
insert_users(struct demo *d)
{
    sqlite3_stmt *st = NULL;
    int i, r = -1;

    if (sqlite3_exec(d->db,
                     "DROP TABLE IF EXISTS users;"
                     "CREATE TABLE users (id INTEGER PRIMARY KEY,"
                     " name TEXT NOT NULL, email TEXT NOT NULL);"
                     "BEGIN;",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(d->db,
                           "INSERT INTO users (id, name, email) "
                           "VALUES (?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(d, "create table");
        goto out;
    }
    for (i = 1; i <= d->count; i++) {
        if (insert_one(d, st, i) != 0) {
            goto out;
        }
    }
    if (sqlite3_exec(d->db, "COMMIT;", NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(d, "commit");
        goto out;
    }
    r = 0;
out:
    sqlite3_finalize(st);
    return r;
}

/* Stored form: what anyone with the database file (or a backup) sees. */
static int
show_stored(struct demo *d)
{
    sqlite3_stmt *st = NULL;
    int n = 0;

    if (sqlite3_prepare_v2(d->db,
                           "SELECT id, name, email FROM users ORDER BY id "
                           "LIMIT ?", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_int(st, 1, DEMO_SHOW_ROWS) != SQLITE_OK) {
        sqlite3_finalize(st);
        return db_fail(d, "select");
    }
    printf("\nAs stored in the database (email column, Base64 ciphertext):\n");
    while (sqlite3_step(st) == SQLITE_ROW) {
        printf("  %3d | %-18s | ", sqlite3_column_int(st, 0),
               (const char *)sqlite3_column_text(st, 1));
        print_truncated((const char *)sqlite3_column_text(st, 2));
        printf("\n");
        n++;
    }
    sqlite3_finalize(st);
    return n == DEMO_SHOW_ROWS || n == d->count ? 0 : -1;
}

/*
 * open_email - decode and decrypt one stored email, requiring the
 * column's context.  *pt is NUL-terminated; free with kc_free.
 */
static int
open_email(struct demo *d, int id, const char *b64, uint8_t **pt,
           size_t *pt_len)
{
    uint8_t *ct = NULL, *raw = NULL;
    size_t ct_len = 0, raw_len = 0;
    double t0;
    int r;

    if ((r = kc_base64_decode(b64, strlen(b64), &ct, &ct_len)) != 0) {
        return kc_fail(d, "stored email is not Base64", id, r);
    }
    t0 = users_now_ms();
    r = kc_decrypt(d->kc, ct, ct_len, users_email_ctx, USERS_EMAIL_NCTX,
                   &raw, &raw_len);
    d->dec_ms += users_now_ms() - t0;
    kc_free(ct);
    if (r != 0) {
        return kc_fail(d, "decrypt", id, r);
    }
    if (raw_len >= USERS_FIELD_MAX) {
        kc_free(raw);
        fprintf(stderr, "users_demo: row %d: email too long\n", id);
        return -1;
    }
    *pt = raw;
    *pt_len = raw_len;
    return 0;
}

/* Check one row; returns 1 when it matches, 0 when not, -1 on error. */
static int
check_row(struct demo *d, int id, const char *name, const char *b64)
{
    char want_name[USERS_FIELD_MAX], want[USERS_FIELD_MAX];
    char got[USERS_FIELD_MAX];
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    int ok;

    if (open_email(d, id, b64, &pt, &pt_len) != 0) {
        return -1;
    }
    memcpy(got, pt, pt_len);
    got[pt_len] = '\0';
    kc_free(pt);
    users_make(id, want_name, want);
    ok = strcmp(got, want) == 0 && strcmp(name, want_name) == 0;
    if (id <= DEMO_SHOW_ROWS) {
        printf("  %3d | %-18s | %s\n", id, name, got);
    }
    if (!ok) {
        fprintf(stderr, "users_demo: row %d does not match what was "
                        "inserted\n", id);
    }
    explicit_bzero(got, sizeof(got));
    explicit_bzero(want, sizeof(want));
    return ok;
}

static int
read_back(struct demo *d, int *rows, int *matched)
{
    sqlite3_stmt *st = NULL;
    int r = -1, ok;

    *rows = 0;
    *matched = 0;
    if (sqlite3_prepare_v2(d->db,
                           "SELECT id, name, email FROM users ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        return db_fail(d, "select");
    }
    printf("\nAs read by the application (decrypted):\n");
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        ok = check_row(d, sqlite3_column_int(st, 0),
                       (const char *)sqlite3_column_text(st, 1),
                       (const char *)sqlite3_column_text(st, 2));
        if (ok < 0) {
            r = -1;
            goto out;
        }
        (*rows)++;
        *matched += ok;
    }
    r = r == SQLITE_DONE ? 0 : db_fail(d, "select");
out:
    sqlite3_finalize(st);
    return r;
}

/*
 * The context binds a ciphertext to its column: asking for row 1's email
 * as if it were another column must be refused, with no plaintext.
 */
static int
check_context_binding(struct demo *d)
{
    static const struct kc_context_pair wrong[] = {
        {"table", "users"},
        {"column", "name"},
    };
    sqlite3_stmt *st = NULL;
    uint8_t *ct = NULL, *pt = NULL;
    size_t ct_len = 0, pt_len = 0;
    int r = -1, kr;

    if (sqlite3_prepare_v2(d->db, "SELECT email FROM users WHERE id = 1",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return db_fail(d, "select row 1");
    }
    kr = kc_base64_decode((const char *)sqlite3_column_text(st, 0),
                          (size_t)sqlite3_column_bytes(st, 0), &ct, &ct_len);
    if (kr == 0) {
        kr = kc_decrypt(d->kc, ct, ct_len, wrong, 2, &pt, &pt_len);
    }
    if (kr == KC_ECONTEXT && pt == NULL) {
        printf("\nRow 1 read with context column=name: refused (%s), as "
               "it should be.\n", kc_strerror(kr));
        r = 0;
    } else {
        fprintf(stderr, "users_demo: reading row 1 under the wrong context "
                        "gave %s, expected %s\n", kc_errname(kr),
                kc_errname(KC_ECONTEXT));
    }
    kc_free(pt);
    kc_free(ct);
    sqlite3_finalize(st);
    return r;
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: users_demo [--socket PATH] [--key ALIAS] [--count N] "
            "DB_FILE\n\n"
            "Create a users table in the SQLite file DB_FILE (replacing one "
            "there),\ninsert N users (default %d) with the email column "
            "encrypted by\nkeycache-agent under ALIAS (default users-email), "
            "read them back,\ndecrypt and verify every row.\n",
            DEMO_DEFAULT_COUNT);
}

static int
parse_args(int argc, char **argv, const char **sock, struct demo *d,
           const char **db_path)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"key", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char *end;
    long v;
    int ch;

    while ((ch = getopt_long(argc, argv, "s:k:n:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            *sock = optarg;
            break;
        case 'k':
            d->alias = optarg;
            break;
        case 'n':
            v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 1000000) {
                fprintf(stderr, "users_demo: --count wants 1..1000000\n");
                return 2;
            }
            d->count = (int)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        usage(stderr);
        return 2;
    }
    *db_path = argv[optind];
    return -1;
}

int
main(int argc, char **argv)
{
    struct demo d = {.alias = "users-email", .count = DEMO_DEFAULT_COUNT};
    const char *sock = NULL, *db_path = NULL;
    int r, kr, rows = 0, matched = 0;

    if ((r = parse_args(argc, argv, &sock, &d, &db_path)) != -1) {
        return r;
    }
    if ((r = kc_client_open(sock, 10000, &d.kc)) != 0) {
        fprintf(stderr, "users_demo: bad socket path: %s\n", kc_strerror(r));
        return 2;
    }
    r = 1;
    if ((kr = kc_client_connect(d.kc)) != 0) {
        kc_fail(&d, "connect", 0, kr);
        goto out;
    }
    if (sqlite3_open_v2(db_path, &d.db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK) {
        db_fail(&d, db_path);
        goto out;
    }
    printf("users_demo: %d users into %s, email encrypted under key '%s' "
           "with context {\"table\":\"users\",\"column\":\"email\"}\n",
           d.count, db_path, d.alias);
    if (insert_users(&d) != 0 || show_stored(&d) != 0 ||
        read_back(&d, &rows, &matched) != 0 ||
        check_context_binding(&d) != 0) {
        goto out;
    }
    printf("\nSummary: inserted %d rows, read back %d, %d emails match "
           "what was inserted.\n"
           "  ciphertext %zu bytes per email on average (%zu Base64 chars "
           "stored)\n"
           "  encrypt %.3f ms and decrypt %.3f ms per row on average "
           "(round trip to the agent)\n",
           d.count, rows, matched, d.ct_bytes / (size_t)d.count,
           d.b64_chars / (size_t)d.count, d.enc_ms / d.count,
           d.dec_ms / d.count);
    if (rows != d.count || matched != d.count) {
        fprintf(stderr, "users_demo: FAILED: %d of %d rows matched\n",
                matched, d.count);
        goto out;
    }
    r = 0;
out:
    sqlite3_close(d.db);
    kc_client_free(d.kc);
    return r;
}
