/*
 * users_pg.c - the encrypted-column scenario on PostgreSQL (libpq).
 *
 * Like users_demo (SQLite), but the application is a libpq client of a
 * real PostgreSQL server: it creates a users table (id, name, email),
 * encrypts each email through keycache-agent under a key alias with the
 * context {"table": "users", "column": "email"}, stores it as Base64
 * text, then reads every row back, decrypts it (requiring that context)
 * and checks it equals what was inserted.  It also checks with SQL that
 * no stored email is readable, and that a ciphertext read under another
 * column's context is refused.
 *
 *   users_pg [--dsn CONNINFO] [--socket PATH] [--key ALIAS]
 *            [--table NAME] [--count N]
 *
 * CONNINFO is a libpq connection string ("host=/tmp/pg port=5432
 * dbname=app user=app"); without it libpq's PG* environment applies.
 * Inserts go through the agent's batch op (up to 256 emails per
 * request); reads decrypt row by row, as an application serving one
 * user at a time would.
 *
 * Exit status 0 when every row round-trips, 1 otherwise, 2 on bad usage.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keycache.h>

#include "users_data.h"

#define PG_DEFAULT_COUNT 300
#define PG_SHOW_ROWS     3
#define PG_SHOW_CHARS    56
#define PG_CHUNK         256

struct pgdemo {
    struct kc_client *kc;
    PGconn *db;
    const char *alias;
    const char *table;
    char *qtable; /* quoted identifier, PQfreemem */
    int count;
    size_t b64_chars;
    double enc_ms, dec_ms;
};

static int
kc_fail(const struct pgdemo *d, const char *what, int id, int r)
{
    fprintf(stderr, "users_pg: %s (row %d): %s: %s\n", what, id,
            kc_strerror(r), kc_client_last_error(d->kc));
    return -1;
}

static int
pq_fail(const struct pgdemo *d, const char *what, PGresult *res)
{
    fprintf(stderr, "users_pg: %s: %s", what, PQerrorMessage(d->db));
    PQclear(res);
    return -1;
}

static int
pq_cmd(struct pgdemo *d, const char *sql)
{
    PGresult *res = PQexec(d->db, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        return pq_fail(d, sql, res);
    }
    PQclear(res);
    return 0;
}

/* Encrypt users first..first+n-1 in one batch and insert them. */
static int
insert_chunk(struct pgdemo *d, int first, int n)
{
    char names[PG_CHUNK][USERS_FIELD_MAX], emails[PG_CHUNK][USERS_FIELD_MAX];
    struct kc_batch_item items[PG_CHUNK];
    struct kc_item_result res[PG_CHUNK];
    char idbuf[16], *b64 = NULL;
    const char *params[3];
    PGresult *pr;
    double t0;
    int i, r, rc = -1;

    memset(items, 0, sizeof(items));
    memset(res, 0, sizeof(res));
    for (i = 0; i < n; i++) {
        users_make(first + i, names[i], emails[i]);
        items[i].op = KC_OP_ENCRYPT;
        items[i].alias = d->alias;
        items[i].ctx = users_email_ctx;
        items[i].nctx = USERS_EMAIL_NCTX;
        items[i].data = (const uint8_t *)emails[i];
        items[i].len = strlen(emails[i]);
    }
    t0 = users_now_ms();
    r = kc_batch(d->kc, items, (size_t)n, res);
    d->enc_ms += users_now_ms() - t0;
    if (r != 0) {
        kc_fail(d, "encrypt batch", first, r);
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (res[i].status != 0) {
            kc_fail(d, "encrypt", first + i, res[i].status);
            goto out;
        }
        if ((r = kc_base64_encode(res[i].data, res[i].len, &b64)) != 0) {
            kc_fail(d, "base64", first + i, r);
            goto out;
        }
        d->b64_chars += strlen(b64);
        snprintf(idbuf, sizeof(idbuf), "%d", first + i);
        params[0] = idbuf;
        params[1] = names[i];
        params[2] = b64;
        pr = PQexecPrepared(d->db, "ins", 3, params, NULL, NULL, 0);
        kc_free(b64);
        b64 = NULL;
        if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
            pq_fail(d, "insert", pr);
            goto out;
        }
        PQclear(pr);
    }
    rc = 0;
out:
    kc_item_results_clear(res, (size_t)n);
    for (i = 0; i < n; i++) {
        explicit_bzero(emails[i], USERS_FIELD_MAX);
    }
    return rc;
}

static int
insert_users(struct pgdemo *d)
{
    char sql[512];
    PGresult *res;
    int i, n;

    snprintf(sql, sizeof(sql),
             "DROP TABLE IF EXISTS %s; CREATE TABLE %s (id integer "
             "PRIMARY KEY, name text NOT NULL, email text NOT NULL)",
             d->qtable, d->qtable);
    if (pq_cmd(d, sql) != 0) {
        return -1;
    }
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s (id, name, email) VALUES ($1::int, $2, $3)",
             d->qtable);
    res = PQprepare(d->db, "ins", sql, 3, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        return pq_fail(d, "prepare insert", res);
    }
    PQclear(res);
    if (pq_cmd(d, "BEGIN") != 0) {
        return -1;
    }
    for (i = 1; i <= d->count; i += n) {
        n = d->count - i + 1 < PG_CHUNK ? d->count - i + 1 : PG_CHUNK;
        if (insert_chunk(d, i, n) != 0) {
            PQclear(PQexec(d->db, "ROLLBACK"));
            return -1;
        }
    }
    return pq_cmd(d, "COMMIT");
}

static void
print_truncated(const char *s)
{
    size_t n = strlen(s);

    if (n <= PG_SHOW_CHARS) {
        printf("%s", s);
    } else {
        printf("%.*s... (%zu chars)", PG_SHOW_CHARS, s, n);
    }
}

/* What anyone with the database (or a pg_dump) sees; and SQL can find no
 * readable email. */
static int
show_stored(struct pgdemo *d)
{
    char sql[256];
    PGresult *res;
    int i;

    snprintf(sql, sizeof(sql),
             "SELECT id, name, email FROM %s ORDER BY id LIMIT %d",
             d->qtable, PG_SHOW_ROWS);
    res = PQexec(d->db, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return pq_fail(d, "select", res);
    }
    printf("\nAs stored in PostgreSQL (email column, Base64 ciphertext):\n");
    for (i = 0; i < PQntuples(res); i++) {
        printf("  %3s | %-18s | ", PQgetvalue(res, i, 0),
               PQgetvalue(res, i, 1));
        print_truncated(PQgetvalue(res, i, 2));
        printf("\n");
    }
    PQclear(res);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM %s WHERE email LIKE '%%@%%' OR "
             "email LIKE '%%example%%'", d->qtable);
    res = PQexec(d->db, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return pq_fail(d, "count", res);
    }
    printf("Rows whose stored email is readable (SQL LIKE '%%@%%'): %s\n",
           PQgetvalue(res, 0, 0));
    i = strcmp(PQgetvalue(res, 0, 0), "0") == 0 ? 0 : -1;
    PQclear(res);
    return i;
}

/* Check one row; 1 when it matches, 0 when not, -1 on error. */
static int
check_row(struct pgdemo *d, int id, const char *name, const char *b64)
{
    char want_name[USERS_FIELD_MAX], want[USERS_FIELD_MAX];
    uint8_t *ct = NULL, *pt = NULL;
    size_t ct_len = 0, pt_len = 0;
    double t0;
    int r, ok;

    if ((r = kc_base64_decode(b64, strlen(b64), &ct, &ct_len)) != 0) {
        return kc_fail(d, "stored email is not Base64", id, r);
    }
    t0 = users_now_ms();
    r = kc_decrypt(d->kc, ct, ct_len, users_email_ctx, USERS_EMAIL_NCTX,
                   &pt, &pt_len);
    d->dec_ms += users_now_ms() - t0;
    kc_free(ct);
    if (r != 0) {
        return kc_fail(d, "decrypt", id, r);
    }
    users_make(id, want_name, want);
    ok = pt_len == strlen(want) && memcmp(pt, want, pt_len) == 0 &&
         strcmp(name, want_name) == 0;
    if (id <= PG_SHOW_ROWS) {
        printf("  %3d | %-18s | %.*s\n", id, name, (int)pt_len,
               (const char *)pt);
    }
    if (!ok) {
        fprintf(stderr, "users_pg: row %d does not match what was "
                        "inserted\n", id);
    }
    kc_free(pt);
    explicit_bzero(want, sizeof(want));
    return ok;
}

static int
read_back(struct pgdemo *d, int *rows, int *matched)
{
    char sql[256];
    PGresult *res;
    int i, ok, r = 0;

    *rows = *matched = 0;
    snprintf(sql, sizeof(sql), "SELECT id, name, email FROM %s ORDER BY id",
             d->qtable);
    res = PQexec(d->db, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return pq_fail(d, "select", res);
    }
    printf("\nAs read by the application (decrypted):\n");
    for (i = 0; i < PQntuples(res); i++) {
        ok = check_row(d, (int)strtol(PQgetvalue(res, i, 0), NULL, 10),
                       PQgetvalue(res, i, 1),
                       PQgetvalue(res, i, 2));
        if (ok < 0) {
            r = -1;
            break;
        }
        (*rows)++;
        *matched += ok;
    }
    PQclear(res);
    return r;
}

/* Row 1's email read as if it were the name column must be refused. */
static int
check_context_binding(struct pgdemo *d)
{
    static const struct kc_context_pair wrong[] = {
        {"table", "users"},
        {"column", "name"},
    };
    char sql[256];
    PGresult *res;
    uint8_t *ct = NULL, *pt = NULL;
    size_t ct_len = 0, pt_len = 0;
    int kr, r = -1;

    snprintf(sql, sizeof(sql), "SELECT email FROM %s WHERE id = 1",
             d->qtable);
    res = PQexec(d->db, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return pq_fail(d, "select row 1", res);
    }
    kr = kc_base64_decode(PQgetvalue(res, 0, 0),
                          (size_t)PQgetlength(res, 0, 0), &ct, &ct_len);
    if (kr == 0) {
        kr = kc_decrypt(d->kc, ct, ct_len, wrong, 2, &pt, &pt_len);
    }
    if (kr == KC_ECONTEXT && pt == NULL) {
        printf("\nRow 1 read with context column=name: refused (%s), as "
               "it should be.\n", kc_strerror(kr));
        r = 0;
    } else {
        fprintf(stderr, "users_pg: reading row 1 under the wrong context "
                        "gave %s, expected %s\n", kc_errname(kr),
                kc_errname(KC_ECONTEXT));
    }
    kc_free(pt);
    kc_free(ct);
    PQclear(res);
    return r;
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: users_pg [--dsn CONNINFO] [--socket PATH] [--key ALIAS] "
            "[--table NAME] [--count N]\n\n"
            "Create a users table (default name users, replacing one "
            "there) in PostgreSQL,\ninsert N users (default %d) with the "
            "email column encrypted by keycache-agent\nunder ALIAS (default "
            "users-email), read them back, decrypt and verify every row.\n",
            PG_DEFAULT_COUNT);
}

static int
parse_args(int argc, char **argv, const char **sock, const char **dsn,
           struct pgdemo *d)
{
    static const struct option longopts[] = {
        {"dsn", required_argument, NULL, 'd'},
        {"socket", required_argument, NULL, 's'},
        {"key", required_argument, NULL, 'k'},
        {"table", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char *end;
    long v;
    int ch;

    while ((ch = getopt_long(argc, argv, "d:s:k:t:n:h", longopts, NULL)) !=
           -1) {
        switch (ch) {
        case 'd':
            *dsn = optarg;
            break;
        case 's':
            *sock = optarg;
            break;
        case 'k':
            d->alias = optarg;
            break;
        case 't':
            d->table = optarg;
            break;
        case 'n':
            v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 1000000) {
                fprintf(stderr, "users_pg: --count wants 1..1000000\n");
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
    if (argc != optind) {
        usage(stderr);
        return 2;
    }
    return -1;
}

int
main(int argc, char **argv)
{
    struct pgdemo d = {.alias = "users-email", .table = "users",
                       .count = PG_DEFAULT_COUNT};
    const char *sock = NULL, *dsn = NULL;
    int r, kr, rows = 0, matched = 0;

    if ((r = parse_args(argc, argv, &sock, &dsn, &d)) != -1) {
        return r;
    }
    if ((r = kc_client_open(sock, 10000, &d.kc)) != 0) {
        fprintf(stderr, "users_pg: bad socket path: %s\n", kc_strerror(r));
        return 2;
    }
    r = 1;
    if ((kr = kc_client_connect(d.kc)) != 0) {
        kc_fail(&d, "connect to keycache-agent", 0, kr);
        goto out;
    }
    d.db = PQconnectdb(dsn != NULL ? dsn : "");
    if (PQstatus(d.db) != CONNECTION_OK) {
        fprintf(stderr, "users_pg: cannot connect to PostgreSQL: %s",
                PQerrorMessage(d.db));
        goto out;
    }
    PQclear(PQexec(d.db, "SET client_min_messages = warning"));
    d.qtable = PQescapeIdentifier(d.db, d.table, strlen(d.table));
    if (d.qtable == NULL) {
        fprintf(stderr, "users_pg: bad table name\n");
        goto out;
    }
    printf("users_pg: %d users into PostgreSQL %s (server %d) table %s, "
           "email encrypted under key '%s' with context "
           "{\"table\":\"users\",\"column\":\"email\"}\n",
           d.count, PQdb(d.db), PQserverVersion(d.db), d.table, d.alias);
    if (insert_users(&d) != 0 || show_stored(&d) != 0 ||
        read_back(&d, &rows, &matched) != 0 ||
        check_context_binding(&d) != 0) {
        goto out;
    }
    printf("\nSummary: inserted %d rows, read back %d, %d emails match "
           "what was inserted.\n"
           "  %zu Base64 chars stored per email on average\n"
           "  encrypt %.3f ms per row (batched), decrypt %.3f ms per row "
           "(one request each)\n",
           d.count, rows, matched, d.b64_chars / (size_t)d.count,
           d.enc_ms / d.count, d.dec_ms / d.count);
    if (rows != d.count || matched != d.count) {
        fprintf(stderr, "users_pg: FAILED: %d of %d rows matched\n",
                matched, d.count);
        goto out;
    }
    r = 0;
out:
    PQfreemem(d.qtable);
    PQfinish(d.db);
    kc_client_free(d.kc);
    return r;
}
