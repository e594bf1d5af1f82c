/*
 * kc_migrate.c - encrypt a PostgreSQL text column in place, resumably.
 *
 *   kc_migrate [options] encrypt   --table T --column C --key ALIAS
 *   kc_migrate [options] reencrypt --table T --column C --key NEW_ALIAS
 *   kc_migrate [options] status
 *
 * encrypt    turns every plaintext value of T.C into PREFIX + Base64 of
 *            an AWS Encryption SDK message made by keycache-agent under
 *            ALIAS, with the context {"table": T, "column": C}.
 * reencrypt  decrypts every PREFIX value (requiring that context) and
 *            encrypts it again under NEW_ALIAS (key rotation / moving a
 *            column to another key).
 * status     prints the progress rows of every job.
 *
 * Resumable: rows are visited in primary-key order in batches (keyset
 * pagination, `pk > last`).  Each batch is one transaction that locks
 * its rows, rewrites them and advances the job's checkpoint row in the
 * table kc_migrate_progress -- committed together, so a kill at any
 * moment leaves either the whole batch done and recorded or none of it.
 * Running again resumes after the checkpoint: nothing is lost and
 * nothing is encrypted twice.  As a second guard, encrypt leaves alone a
 * value that already starts with PREFIX (so a plaintext that itself
 * starts with PREFIX would be skipped: choose a prefix that cannot occur).
 * A session advisory lock keeps two runs of one job apart.  NULL values
 * stay NULL.
 *
 * The agent's `batch` op carries up to 1024 rows per request
 * (kc_batch), so a batch costs one round trip to the agent and one to
 * the database.
 *
 * Options:
 *   --dsn CONNINFO   libpq connection string (default: libpq's PG* env)
 *   --socket PATH    agent socket (default $KEYCACHE_SOCKET)
 *   --pk COL         primary-key column (default id); any orderable type
 *   --batch N        rows per batch/transaction, 1..1024 (default 500)
 *   --job NAME       checkpoint name (default MODE:T.C:ALIAS)
 *   --prefix STR     marker before the Base64 (default "kc1:")
 *   --restart        forget the job's checkpoint and start over
 *   --quiet          no progress lines
 *
 * Exit: 0 done (or already done), 1 failure (resumable), 2 bad usage.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keycache.h>

#define MIG_DEFAULT_BATCH  500
#define MIG_DEFAULT_PREFIX "kc1:"
#define MIG_PROGRESS_EVERY 20 /* batches between progress lines */

enum mig_mode { MODE_ENCRYPT, MODE_REENCRYPT, MODE_STATUS };

struct mig {
    enum mig_mode mode;
    const char *dsn, *sock, *table, *column, *pk, *alias, *prefix;
    char job[512];
    int batch;
    bool restart, quiet;

    PGconn *db;
    struct kc_client *kc;
    char *qtable, *qcolumn, *qpk; /* quoted identifiers (PQfreemem) */
    char pktype[128];
    struct kc_context_pair ctx[2];

    long long rows_done, rows_skipped; /* this run */
    long long total_done;              /* over the whole job */
    int batches;
    double t0;
};

/* ------------------------------------------------------------ helpers */

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
err(const char *fmt, ...)
{
    va_list ap;

    fputs("kc_migrate: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* A growable string. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
    char *np;
    size_t ncap;

    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + n + 1) {
            ncap *= 2;
        }
        np = realloc(b->p, ncap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Append s as one element of a PostgreSQL array literal: "..." with
 * backslash and double quote escaped. */
static void
sb_array_elem(struct sbuf *b, const char *s)
{
    const char *p;

    if (b->len > 1) {
        sb_add(b, ",", 1);
    }
    sb_add(b, "\"", 1);
    for (p = s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            sb_add(b, "\\", 1);
        }
        sb_add(b, p, 1);
    }
    sb_add(b, "\"", 1);
}

static void
sb_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Run a command; true when it gave the wanted status. */
static PGresult *
q(struct mig *m, ExecStatusType want, const char *sql, int n,
  const char *const *params)
{
    PGresult *res = PQexecParams(m->db, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != want) {
        err("SQL failed: %s  [%s]", PQerrorMessage(m->db), sql);
        PQclear(res);
        return NULL;
    }
    return res;
}

static bool
exec_ok(struct mig *m, const char *sql)
{
    PGresult *res = q(m, PGRES_COMMAND_OK, sql, 0, NULL);

    PQclear(res);
    return res != NULL;
}

/* --------------------------------------------------------------- setup */

/* Quote "table" or "schema.table" as identifiers. */
static char *
quote_table(PGconn *db, const char *name)
{
    const char *dot = strchr(name, '.');
    char *schema, *rel, *out;
    size_t n;

    if (dot == NULL) {
        return PQescapeIdentifier(db, name, strlen(name));
    }
    schema = PQescapeIdentifier(db, name, (size_t)(dot - name));
    rel = PQescapeIdentifier(db, dot + 1, strlen(dot + 1));
    out = NULL;
    if (schema != NULL && rel != NULL) {
        n = strlen(schema) + strlen(rel) + 2;
        out = malloc(n);
        if (out != NULL) {
            snprintf(out, n, "%s.%s", schema, rel);
        }
    }
    PQfreemem(schema);
    PQfreemem(rel);
    return out; /* malloc'd: freed with free(), see mig_free */
}

static int
column_type(struct mig *m, const char *col, char *out, size_t outlen)
{
    const char *params[2] = {m->qtable, col};
    PGresult *res;

    res = q(m, PGRES_TUPLES_OK,
            "SELECT format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a WHERE a.attrelid = $1::regclass "
            "AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            2, params);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) != 1) {
        err("table %s has no column %s", m->table, col);
        PQclear(res);
        return -1;
    }
    snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

static int
check_schema(struct mig *m)
{
    char ctype[128];

    if (column_type(m, m->pk, m->pktype, sizeof(m->pktype)) != 0 ||
        column_type(m, m->column, ctype, sizeof(ctype)) != 0) {
        return -1;
    }
    if (strcmp(ctype, "text") != 0 &&
        strcmp(ctype, "character varying") != 0) {
        err("column %s is %s; it must be text (or varchar without a "
            "length) to hold Base64 ciphertext", m->column, ctype);
        return -1;
    }
    return 0;
}

static int
ensure_job(struct mig *m, bool *finished)
{
    const char *mode = m->mode == MODE_ENCRYPT ? "encrypt" : "reencrypt";
    const char *p[5] = {m->job, m->table, m->column, mode, m->alias};
    PGresult *res;
    int r = -1;

    if (!exec_ok(m, "CREATE TABLE IF NOT EXISTS kc_migrate_progress ("
                    " job text PRIMARY KEY, tbl text NOT NULL,"
                    " col text NOT NULL, mode text NOT NULL,"
                    " key_alias text NOT NULL, last_pk text,"
                    " rows_done bigint NOT NULL DEFAULT 0,"
                    " rows_skipped bigint NOT NULL DEFAULT 0,"
                    " runs integer NOT NULL DEFAULT 0,"
                    " started timestamptz NOT NULL DEFAULT now(),"
                    " updated timestamptz, finished timestamptz)")) {
        return -1;
    }
    if (m->restart) {
        PQclear(res = q(m, PGRES_COMMAND_OK,
                        "DELETE FROM kc_migrate_progress WHERE job = $1",
                        1, p));
        if (res == NULL) {
            return -1;
        }
    }
    res = q(m, PGRES_COMMAND_OK,
            "INSERT INTO kc_migrate_progress (job, tbl, col, mode, "
            "key_alias) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (job) DO NOTHING", 5, p);
    PQclear(res);
    if (res == NULL) {
        return -1;
    }
    res = q(m, PGRES_TUPLES_OK,
            "UPDATE kc_migrate_progress SET runs = runs + 1 WHERE job = $1 "
            "RETURNING tbl, col, mode, key_alias, last_pk, rows_done, "
            "finished IS NOT NULL, runs", 1, p);
    if (res == NULL) {
        return -1;
    }
    if (strcmp(PQgetvalue(res, 0, 0), m->table) != 0 ||
        strcmp(PQgetvalue(res, 0, 1), m->column) != 0 ||
        strcmp(PQgetvalue(res, 0, 2), mode) != 0 ||
        strcmp(PQgetvalue(res, 0, 3), m->alias) != 0) {
        err("job '%s' exists for %s %s.%s under '%s'; use another --job "
            "or --restart", m->job, PQgetvalue(res, 0, 2),
            PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
            PQgetvalue(res, 0, 3));
        goto out;
    }
    m->total_done = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
    *finished = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    if (*finished) {
        printf("kc_migrate: job '%s' already finished (%lld rows); "
               "nothing to do\n", m->job, m->total_done);
    } else if (!PQgetisnull(res, 0, 4)) {
        printf("kc_migrate: resuming job '%s' (run %s) after %s = %s: "
               "%lld rows were done before\n", m->job,
               PQgetvalue(res, 0, 7), m->pk, PQgetvalue(res, 0, 4),
               m->total_done);
    } else {
        printf("kc_migrate: starting job '%s': %s %s.%s under key '%s', "
               "%d rows per batch\n", m->job, mode, m->table, m->column,
               m->alias, m->batch);
    }
    r = 0;
out:
    PQclear(res);
    return r;
}

static int
lock_job(struct mig *m)
{
    const char *p[1] = {m->job};
    PGresult *res = q(m, PGRES_TUPLES_OK,
                      "SELECT pg_try_advisory_lock(hashtext("
                      "'kc_migrate:' || $1))", 1, p);
    bool got;

    if (res == NULL) {
        return -1;
    }
    got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!got) {
        err("another kc_migrate is running job '%s'", m->job);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- batches */

static bool
has_prefix(const struct mig *m, const char *v)
{
    size_t n = strlen(m->prefix);

    return n > 0 && strncmp(v, m->prefix, n) == 0;
}

/* Encrypt items[0..n) (plaintexts) under alias into "PREFIX+Base64"
 * strings appended to the array literal vals.  pks name rows in errors. */
static int
seal_items(struct mig *m, struct kc_batch_item *items, size_t n,
           const char *const *pks, struct sbuf *vals)
{
    struct kc_item_result *res;
    char *b64;
    size_t i;
    int r, rc = -1;

    res = calloc(n, sizeof(*res));
    if (res == NULL) {
        err("out of memory");
        return -1;
    }
    for (i = 0; i < n; i++) {
        items[i].op = KC_OP_ENCRYPT;
        items[i].alias = m->alias;
        items[i].ctx = m->ctx;
        items[i].nctx = 2;
    }
    if ((r = kc_batch(m->kc, items, n, res)) != 0) {
        err("agent batch (encrypt) failed: %s: %s", kc_strerror(r),
            kc_client_last_error(m->kc));
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (res[i].status != 0) {
            err("encrypting %s = %s failed: %s", m->pk, pks[i],
                kc_strerror(res[i].status));
            goto out;
        }
        if (kc_base64_encode(res[i].data, res[i].len, &b64) != 0) {
            err("out of memory");
            goto out;
        }
        {
            struct sbuf one = {0};

            sb_str(&one, m->prefix);
            sb_str(&one, b64);
            if (one.oom) {
                err("out of memory");
                kc_free(b64);
                goto out;
            }
            sb_array_elem(vals, one.p);
            sb_free(&one);
        }
        kc_free(b64);
    }
    rc = 0;
out:
    kc_item_results_clear(res, n);
    free(res);
    return rc;
}

/* reencrypt: decrypt the stored values, then seal them again. */
static int
reseal_items(struct mig *m, const char *const *stored,
             const char *const *pks, size_t n, struct sbuf *vals)
{
    struct kc_batch_item *items = calloc(n, sizeof(*items));
    struct kc_item_result *pts = calloc(n, sizeof(*pts));
    uint8_t **cts = calloc(n, sizeof(*cts));
    size_t plen = strlen(m->prefix), i, len;
    int r, rc = -1;

    if (items == NULL || pts == NULL || cts == NULL) {
        err("out of memory");
        goto out;
    }
    for (i = 0; i < n; i++) {
        const char *b64 = stored[i] + plen;

        if (kc_base64_decode(b64, strlen(b64), &cts[i], &len) != 0) {
            err("%s = %s: stored value is not %sBase64", m->pk, pks[i],
                m->prefix);
            goto out;
        }
        items[i].op = KC_OP_DECRYPT;
        items[i].ctx = m->ctx;
        items[i].nctx = 2;
        items[i].data = cts[i];
        items[i].len = len;
    }
    if ((r = kc_batch(m->kc, items, n, pts)) != 0) {
        err("agent batch (decrypt) failed: %s: %s", kc_strerror(r),
            kc_client_last_error(m->kc));
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (pts[i].status != 0) {
            err("decrypting %s = %s failed: %s", m->pk, pks[i],
                kc_strerror(pts[i].status));
            goto out;
        }
        memset(&items[i], 0, sizeof(items[i]));
        items[i].data = pts[i].data;
        items[i].len = pts[i].len;
    }
    rc = seal_items(m, items, n, pks, vals);
out:
    if (pts != NULL) {
        kc_item_results_clear(pts, n); /* wipes the plaintexts */
    }
    for (i = 0; cts != NULL && i < n; i++) {
        kc_free(cts[i]);
    }
    free(cts);
    free(pts);
    free(items);
    return rc;
}

/*
 * One batch in one transaction.  Returns 1 when rows were processed, 0
 * when none were left (job finished), -1 on failure (rolled back).
 */
static int
one_batch(struct mig *m)
{
    char sql[1024], nbuf[32], dbuf[32], sbuf_[32];
    const char *jp[1] = {m->job};
    PGresult *job = NULL, *rows = NULL, *res = NULL;
    struct kc_batch_item *items = NULL;
    const char **todo_pk = NULL, **todo_val = NULL;
    struct sbuf pks = {0}, vals = {0};
    size_t ntodo = 0;
    int i, nrows, skipped = 0, rc = -1;
    const char *last;

    if (!exec_ok(m, "BEGIN")) {
        return -1;
    }
    job = q(m, PGRES_TUPLES_OK,
            "SELECT last_pk FROM kc_migrate_progress WHERE job = $1 "
            "FOR UPDATE", 1, jp);
    if (job == NULL || PQntuples(job) != 1) {
        err("job row '%s' vanished", m->job);
        goto fail;
    }
    snprintf(nbuf, sizeof(nbuf), "%d", m->batch);
    if (PQgetisnull(job, 0, 0)) {
        const char *p[1] = {nbuf};

        /* Qualified t.pk everywhere: an unqualified ORDER BY name would
         * pick the output column (the ::text cast) and sort as text. */
        snprintf(sql, sizeof(sql),
                 "SELECT t.%s::text AS kc_pk, t.%s AS kc_val FROM %s AS t "
                 "ORDER BY t.%s LIMIT $1::int FOR UPDATE", m->qpk,
                 m->qcolumn, m->qtable, m->qpk);
        rows = q(m, PGRES_TUPLES_OK, sql, 1, p);
    } else {
        const char *p[2] = {PQgetvalue(job, 0, 0), nbuf};

        snprintf(sql, sizeof(sql),
                 "SELECT t.%s::text AS kc_pk, t.%s AS kc_val FROM %s AS t "
                 "WHERE t.%s > $1::%s ORDER BY t.%s LIMIT $2::int "
                 "FOR UPDATE", m->qpk, m->qcolumn, m->qtable, m->qpk,
                 m->pktype, m->qpk);
        rows = q(m, PGRES_TUPLES_OK, sql, 2, p);
    }
    if (rows == NULL) {
        goto fail;
    }
    nrows = PQntuples(rows);
    if (nrows == 0) {
        res = q(m, PGRES_COMMAND_OK,
                "UPDATE kc_migrate_progress SET finished = now(), "
                "updated = now() WHERE job = $1", 1, jp);
        if (res == NULL || !exec_ok(m, "COMMIT")) {
            goto fail;
        }
        rc = 0;
        goto out;
    }
    items = calloc((size_t)nrows, sizeof(*items));
    todo_pk = calloc((size_t)nrows, sizeof(*todo_pk));
    todo_val = calloc((size_t)nrows, sizeof(*todo_val));
    if (items == NULL || todo_pk == NULL || todo_val == NULL) {
        err("out of memory");
        goto fail;
    }
    for (i = 0; i < nrows; i++) {
        const char *v = PQgetvalue(rows, i, 1);

        if (PQgetisnull(rows, i, 1)) {
            skipped++; /* NULL stays NULL */
            continue;
        }
        if (m->mode == MODE_ENCRYPT && has_prefix(m, v)) {
            skipped++; /* already encrypted (second guard) */
            continue;
        }
        if (m->mode == MODE_REENCRYPT && !has_prefix(m, v)) {
            err("%s = %s is not encrypted (no '%s' prefix); run encrypt "
                "first", m->pk, PQgetvalue(rows, i, 0), m->prefix);
            goto fail;
        }
        todo_pk[ntodo] = PQgetvalue(rows, i, 0);
        todo_val[ntodo] = v;
        items[ntodo].data = (const uint8_t *)v;
        items[ntodo].len = (size_t)PQgetlength(rows, i, 1);
        ntodo++;
    }
    sb_add(&pks, "{", 1);
    sb_add(&vals, "{", 1);
    for (size_t k = 0; k < ntodo; k++) {
        sb_array_elem(&pks, todo_pk[k]);
    }
    if (ntodo > 0) {
        if (m->mode == MODE_ENCRYPT) {
            if (seal_items(m, items, ntodo, todo_pk, &vals) != 0) {
                goto fail;
            }
        } else if (reseal_items(m, todo_val, todo_pk, ntodo, &vals) != 0) {
            goto fail;
        }
    }
    sb_add(&pks, "}", 1);
    sb_add(&vals, "}", 1);
    if (pks.oom || vals.oom) {
        err("out of memory");
        goto fail;
    }
    if (ntodo > 0) {
        const char *p[2] = {pks.p, vals.p};

        snprintf(sql, sizeof(sql),
                 "UPDATE %s AS t SET %s = v.val FROM unnest($1::text[], "
                 "$2::text[]) AS v(k, val) WHERE t.%s = v.k::%s",
                 m->qtable, m->qcolumn, m->qpk, m->pktype);
        res = q(m, PGRES_COMMAND_OK, sql, 2, p);
        if (res == NULL) {
            goto fail;
        }
        if (strtoull(PQcmdTuples(res), NULL, 10) != ntodo) {
            err("updated %s rows, expected %zu", PQcmdTuples(res), ntodo);
            goto fail;
        }
        PQclear(res);
        res = NULL;
    }
    last = PQgetvalue(rows, nrows - 1, 0);
    snprintf(dbuf, sizeof(dbuf), "%zu", ntodo);
    snprintf(sbuf_, sizeof(sbuf_), "%d", skipped);
    {
        const char *p[4] = {m->job, last, dbuf, sbuf_};

        res = q(m, PGRES_COMMAND_OK,
                "UPDATE kc_migrate_progress SET last_pk = $2, "
                "rows_done = rows_done + $3::bigint, "
                "rows_skipped = rows_skipped + $4::bigint, updated = now() "
                "WHERE job = $1", 4, p);
    }
    if (res == NULL || !exec_ok(m, "COMMIT")) {
        goto fail;
    }
    m->rows_done += (long long)ntodo;
    m->total_done += (long long)ntodo;
    m->rows_skipped += skipped;
    m->batches++;
    if (!m->quiet && m->batches % MIG_PROGRESS_EVERY == 0) {
        double dt = now_s() - m->t0;

        printf("kc_migrate: %lld rows this run (%lld in all), %s = %s "
               "committed, %.0f rows/s\n", m->rows_done, m->total_done,
               m->pk, last, dt > 0 ? (double)m->rows_done / dt : 0.0);
        fflush(stdout);
    }
    rc = 1;
    goto out;
fail:
    PQclear(PQexec(m->db, "ROLLBACK"));
    rc = -1;
out:
    sb_free(&pks);
    if (vals.p != NULL) {
        explicit_bzero(vals.p, vals.cap);
    }
    sb_free(&vals);
    free(items);
    free(todo_pk);
    free(todo_val);
    PQclear(res);
    PQclear(rows);
    PQclear(job);
    return rc;
}

/* -------------------------------------------------------------- status */

static int
show_status(struct mig *m)
{
    PGresult *res;
    int i;

    res = PQexec(m->db,
                 "SELECT job, mode, tbl || '.' || col, key_alias, "
                 "coalesce(last_pk, '-'), rows_done, rows_skipped, runs, "
                 "coalesce(finished::text, 'in progress') "
                 "FROM kc_migrate_progress ORDER BY started");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err("no progress table (no job has run?): %s",
            PQerrorMessage(m->db));
        PQclear(res);
        return 1;
    }
    printf("%-40s %-9s %-20s %-14s %10s %10s %8s %5s %s\n", "job", "mode",
           "column", "key", "last_pk", "done", "skipped", "runs",
           "finished");
    for (i = 0; i < PQntuples(res); i++) {
        printf("%-40s %-9s %-20s %-14s %10s %10s %8s %5s %s\n",
               PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
               PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
               PQgetvalue(res, i, 6), PQgetvalue(res, i, 7),
               PQgetvalue(res, i, 8));
    }
    PQclear(res);
    return 0;
}

/* ---------------------------------------------------------------- main */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: kc_migrate [options] encrypt|reencrypt|status\n"
            "  --table T --column C --key ALIAS (encrypt, reencrypt)\n"
            "  --dsn CONNINFO  --socket PATH  --pk COL (default id)\n"
            "  --batch N (1..%d, default %d)  --job NAME  --prefix STR "
            "(default %s)\n"
            "  --restart  --quiet\n"
            "Encrypts a text column in place (or re-encrypts it under a new "
            "key)\nin resumable batches; see the comment at the top of "
            "kc_migrate.c.\n",
            KC_BATCH_MAX, MIG_DEFAULT_BATCH, MIG_DEFAULT_PREFIX);
}

static int
parse_args(int argc, char **argv, struct mig *m)
{
    static const struct option lo[] = {
        {"dsn", required_argument, NULL, 'd'},
        {"socket", required_argument, NULL, 's'},
        {"table", required_argument, NULL, 't'},
        {"column", required_argument, NULL, 'c'},
        {"pk", required_argument, NULL, 'p'},
        {"key", required_argument, NULL, 'k'},
        {"batch", required_argument, NULL, 'b'},
        {"job", required_argument, NULL, 'j'},
        {"prefix", required_argument, NULL, 'x'},
        {"restart", no_argument, NULL, 'r'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *job = NULL, *mode;
    char *end;
    long v;
    int ch;

    while ((ch = getopt_long(argc, argv, "d:s:t:c:p:k:b:j:x:rqh", lo,
                             NULL)) != -1) {
        switch (ch) {
        case 'd': m->dsn = optarg; break;
        case 's': m->sock = optarg; break;
        case 't': m->table = optarg; break;
        case 'c': m->column = optarg; break;
        case 'p': m->pk = optarg; break;
        case 'k': m->alias = optarg; break;
        case 'j': job = optarg; break;
        case 'x': m->prefix = optarg; break;
        case 'r': m->restart = true; break;
        case 'q': m->quiet = true; break;
        case 'b':
            v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > KC_BATCH_MAX) {
                err("--batch wants 1..%d", KC_BATCH_MAX);
                return 2;
            }
            m->batch = (int)v;
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
    mode = argv[optind];
    if (strcmp(mode, "encrypt") == 0) {
        m->mode = MODE_ENCRYPT;
    } else if (strcmp(mode, "reencrypt") == 0) {
        m->mode = MODE_REENCRYPT;
    } else if (strcmp(mode, "status") == 0) {
        m->mode = MODE_STATUS;
        return -1;
    } else {
        usage(stderr);
        return 2;
    }
    if (m->table == NULL || m->column == NULL || m->alias == NULL) {
        err("%s needs --table, --column and --key", mode);
        return 2;
    }
    if (job != NULL) {
        snprintf(m->job, sizeof(m->job), "%s", job);
    } else {
        snprintf(m->job, sizeof(m->job), "%s:%s.%s:%s", mode, m->table,
                 m->column, m->alias);
    }
    return -1;
}

static void
mig_free(struct mig *m)
{
    if (m->qtable != NULL) {
        if (strchr(m->table, '.') != NULL) {
            free(m->qtable);
        } else {
            PQfreemem(m->qtable);
        }
    }
    PQfreemem(m->qcolumn);
    PQfreemem(m->qpk);
    kc_client_free(m->kc);
    PQfinish(m->db);
}

int
main(int argc, char **argv)
{
    struct mig m = {.pk = "id", .batch = MIG_DEFAULT_BATCH,
                    .prefix = MIG_DEFAULT_PREFIX};
    bool finished = false;
    double dt;
    int r, kr, status = 1;

    if ((r = parse_args(argc, argv, &m)) != -1) {
        return r;
    }
    m.db = PQconnectdb(m.dsn != NULL ? m.dsn : "");
    if (PQstatus(m.db) != CONNECTION_OK) {
        err("cannot connect to PostgreSQL: %s", PQerrorMessage(m.db));
        goto out;
    }
    PQclear(PQexec(m.db, "SET application_name = 'kc_migrate'; "
                         "SET client_min_messages = warning"));
    if (m.mode == MODE_STATUS) {
        status = show_status(&m);
        goto out;
    }
    m.qtable = quote_table(m.db, m.table);
    m.qcolumn = PQescapeIdentifier(m.db, m.column, strlen(m.column));
    m.qpk = PQescapeIdentifier(m.db, m.pk, strlen(m.pk));
    if (m.qtable == NULL || m.qcolumn == NULL || m.qpk == NULL) {
        err("bad identifier: %s", PQerrorMessage(m.db));
        goto out;
    }
    m.ctx[0] = (struct kc_context_pair){"table", m.table};
    m.ctx[1] = (struct kc_context_pair){"column", m.column};
    if (check_schema(&m) != 0 || lock_job(&m) != 0 ||
        ensure_job(&m, &finished) != 0) {
        goto out;
    }
    if (finished) {
        status = 0;
        goto out;
    }
    if ((kr = kc_client_open(m.sock, 30000, &m.kc)) != 0 ||
        (kr = kc_client_connect(m.kc)) != 0) {
        err("cannot reach keycache-agent: %s%s%s", kc_strerror(kr),
            m.kc != NULL ? ": " : "",
            m.kc != NULL ? kc_client_last_error(m.kc) : "");
        goto out;
    }
    m.t0 = now_s();
    while ((r = one_batch(&m)) == 1) {
    }
    if (r < 0) {
        err("stopped after %lld rows this run; the job resumes from its "
            "last committed batch when run again", m.rows_done);
        goto out;
    }
    dt = now_s() - m.t0;
    printf("kc_migrate: job '%s' finished: %lld rows %s this run "
           "(%lld in all), %lld skipped (NULL or already done), "
           "%d batches, %.2f s, %.0f rows/s\n", m.job, m.rows_done,
           m.mode == MODE_ENCRYPT ? "encrypted" : "re-encrypted",
           m.total_done, m.rows_skipped, m.batches, dt,
           dt > 0 ? (double)m.rows_done / dt : 0.0);
    status = 0;
out:
    mig_free(&m);
    return status;
}
