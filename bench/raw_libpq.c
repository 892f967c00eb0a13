/* raw_libpq.c: the floors tododb is measured against, in C with libpq alone.
 * Two statement sets, each sent as one pipelined round trip
 * ([prepare] set_config + [prepare] statement + sync, one implicit
 * transaction), no Lua, no objects:
 *   --floor   the natural statements a C programmer would write for the same
 *             results: plain columns, text results, every value read into C
 *             values (integers parsed, strings measured, the boolean tested).
 *             The baseline of bench/RESULTS.md's ratios.
 *   (default) tododb's own statements (csrc/sql.c, linked in) in tdb_run's
 *             form, binary results; values only touched.
 *   --rls=runner|set_config|set_local  how the row-level security setting is
 *             sent with tododb's statements: as conn.c decides at connect
 *             (runner: SET LOCAL in BEGIN … COMMIT where Citus is loaded,
 *             else set_config), or forced either way.
 *   raw_libpq [--floor] [--rls=…] WORKLOAD OPS   (environment as for
 *   bench/tododb_bench.lua); prints
 *   RESULT workload ops secs p50_ms p99_ms peak_rss_kb cpu_us_per_op
 * Build (bench/run does): cc -O2 -Icsrc bench/raw_libpq.c csrc/sql.c
 *   $(pkg-config --cflags lua5.4 libpq libsodium) $(pkg-config --libs libpq libsodium) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "tdb.h"

static PGconn *pg;
static int floor_mode;                  /* --floor: the natural statements */
static int set_local;                   /* RLS setting by SET LOCAL in BEGIN … COMMIT */
static volatile size_t sink;            /* keeps what was read alive */

static void die(const char *what) {
  fprintf(stderr, "raw_libpq: %s: %s\n", what, PQerrorMessage(pg));
  exit(1);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long status_kb(const char *field) {
  char line[256];
  long v = -1;
  size_t n = strlen(field);
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') { v = atol(line + n + 1); break; }
  fclose(f);
  return v;
}

static unsigned long long rng = 88172645463325252ULL;
static unsigned rnd(unsigned n) {      /* xorshift64, uniform enough for picking */
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return (unsigned)(rng % n);
}
static double rnd01(void) { return (double)rnd(1u << 30) / (double)(1u << 30); }

/* A statement and whether this connection has prepared it. */
typedef struct { const tdb_Sql *q; int prepared; } Stmt;
static Stmt stmts[TDB_NSQL];            /* tododb's, by csrc/sql.c index */
static Stmt *S(int id) { stmts[id].q = &tdb_sql[id]; return &stmts[id]; }

/* The natural statements (--floor): what one writes by hand for the same
 * results. Ids count per user (migration 0002), so a new todo takes its id
 * from the user's counter row, as in tododb. */
#define COLS "id, user_id, title, description, completed, created_at, updated_at"
static const tdb_Sql floor_sql[] = {
  { "f_get", "SELECT " COLS " FROM todos WHERE user_id = $1 AND id = $2", 2, 1 },
  { "f_list", "SELECT " COLS " FROM todos WHERE user_id = $1 ORDER BY id DESC LIMIT $2", 2, 1 },
  { "f_list_after", "SELECT " COLS " FROM todos WHERE user_id = $1 AND id < $2"
    " ORDER BY id DESC LIMIT $3", 3, 1 },
  { "f_insert", "WITH n AS (INSERT INTO todo_counters AS c (user_id, last_id) VALUES ($1, 1)"
    " ON CONFLICT (user_id) DO UPDATE SET last_id = c.last_id + 1 RETURNING c.last_id)"
    " INSERT INTO todos (user_id, id, title, description) SELECT $1, n.last_id, $2, $3 FROM n"
    " RETURNING " COLS, 3, 0 },
  { "f_toggle", "UPDATE todos SET completed = NOT completed, updated_at = now()"
    " WHERE user_id = $1 AND id = $2 RETURNING " COLS, 2, 0 },
  { "f_count", "SELECT count(*) FROM todos WHERE user_id = $1", 1, 1 },
};
enum { F_GET, F_LIST, F_LIST_AFTER, F_INSERT, F_TOGGLE, F_COUNT, F_N };
static Stmt floors[F_N];
static Stmt *F(int k) { floors[k].q = &floor_sql[k]; return &floors[k]; }

/* What the k-th queued command's results are. */
enum { R_PREPARE = 1, R_OTHER, R_MAIN };

/* Queues st (preparing it first when needed, as conn.c send_stmt). */
static void queue(Stmt *st, const char *const *vals, int *what, int *n, int main) {
  int fmt = floor_mode ? 0 : TDB_BINARY;
  if (!st->prepared) {
    if (!PQsendPrepare(pg, st->q->name, st->q->text, st->q->nparams, NULL)) die("send");
    what[(*n)++] = R_PREPARE;
  }
  if (!PQsendQueryPrepared(pg, st->q->name, st->q->nparams, vals, NULL, NULL, fmt)) die("send");
  what[(*n)++] = main ? R_MAIN : R_OTHER;
}

/* One pipelined round trip, as conn.c run_once: the RLS setting
 * (set_config, or BEGIN; SET LOCAL …; … COMMIT), the statement, sync.
 * Returns the statement's result; dies on any failure. */
static PGresult *run(const char *owner, Stmt *st, const char *const *vals) {
  int what[8], n = 0, i = 0, nulls = 0;
  PGresult *main = NULL;
  if (!PQenterPipelineMode(pg)) die("enter pipeline");
  if (owner && set_local) {
    char text[96];
    queue(S(TDB_SQL_BEGIN), NULL, what, &n, 0);
    snprintf(text, sizeof text, "%s%s'", tdb_sql[TDB_SQL_SET_USER].text, owner);
    if (!PQsendQueryParams(pg, text, 0, NULL, NULL, NULL, NULL, 0)) die("send");
    what[n++] = R_OTHER;
  } else if (owner)
    queue(S(TDB_SQL_SET_CONFIG), &owner, what, &n, 0);
  queue(st, vals, what, &n, 1);
  if (owner && set_local) queue(S(TDB_SQL_COMMIT), NULL, what, &n, 0);
  if (!PQpipelineSync(pg)) die("sync");
  for (;;) {
    PGresult *r = PQgetResult(pg);
    ExecStatusType rs;
    if (!r) {
      if (++nulls > 1) break;
      i++;
      continue;
    }
    nulls = 0;
    rs = PQresultStatus(r);
    if (rs == PGRES_PIPELINE_SYNC) { PQclear(r); break; }
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
      fprintf(stderr, "raw_libpq: %s: %s", st->q->name, PQresultErrorMessage(r));
      exit(1);
    }
    if (i < n && what[i] == R_MAIN) { PQclear(main); main = r; continue; }
    PQclear(r);
  }
  PQexitPipelineMode(pg);
  /* Every queued statement is prepared now (the run died otherwise). */
  if (owner && set_local) S(TDB_SQL_BEGIN)->prepared = S(TDB_SQL_COMMIT)->prepared = 1;
  if (owner && !set_local) S(TDB_SQL_SET_CONFIG)->prepared = 1;
  st->prepared = 1;
  if (!main) die("no result");
  return main;
}

/* An integer column, text or binary (big-endian int8). */
static long long int8_at(const PGresult *r, int row, int col) {
  const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
  unsigned long long v = 0;
  if (PQfformat(r, col) == 0) return atoll((const char *)p);
  for (int k = 0; k < 8; k++) v = v << 8 | p[k];
  return (long long)v;
}

/* Reads the rows, then clears. tododb's statements: every field touched (the
 * values are tododb's to decode). Natural statements: every value read into
 * C values, as a caller of the rows would: ids parsed, the boolean tested,
 * strings (title, description, timestamps as the server prints them) measured. */
static int consume(PGresult *r) {
  int n = PQntuples(r), m = PQnfields(r);
  size_t s = 0;
  for (int i = 0; i < n; i++) {
    if (floor_mode && m == 7) {
      s += (size_t)int8_at(r, i, 0) + (size_t)int8_at(r, i, 1);
      s += strlen(PQgetvalue(r, i, 2));
      if (!PQgetisnull(r, i, 3)) s += strlen(PQgetvalue(r, i, 3));
      s += PQgetvalue(r, i, 4)[0] == 't';
      s += strlen(PQgetvalue(r, i, 5)) + strlen(PQgetvalue(r, i, 6));
    } else
      for (int j = 0; j < m; j++) s += (size_t)PQgetlength(r, i, j) + (size_t)PQgetvalue(r, i, j)[0];
  }
  sink += s;
  PQclear(r);
  return n;
}

static void plain(const char *sql) {
  PGresult *r = PQexec(pg, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) die(sql);
  PQclear(r);
}

/* ---- the data: users with 10 000 todos and their ids --------------------- */

typedef struct { long long uid; char owner[24]; long long *ids; int n, cap; } User;
static User *users;
static int nusers;

static void load_ids(const char *file) {
  FILE *f = fopen(file, "r");
  long long u, id;
  if (!f) { perror(file); exit(1); }
  while (fscanf(f, "%lld\t%lld", &u, &id) == 2) {
    User *x;
    if (nusers == 0 || users[nusers - 1].uid != u) {
      users = realloc(users, sizeof *users * (size_t)(nusers + 1));
      x = &users[nusers++];
      memset(x, 0, sizeof *x);
      x->uid = u;
      snprintf(x->owner, sizeof x->owner, "%lld", u);
    }
    x = &users[nusers - 1];
    if (x->n == x->cap) {
      x->cap = x->cap ? x->cap * 2 : 1024;
      x->ids = realloc(x->ids, sizeof *x->ids * (size_t)x->cap);
    }
    x->ids[x->n++] = id;
  }
  fclose(f);
  if (nusers == 0) { fprintf(stderr, "raw_libpq: no ids in %s\n", file); exit(1); }
}

/* ---- measuring ------------------------------------------------------------- */

static const char *workload;
static double *lat;

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(int n, double secs, double cpus) {
  double p50, p99;
  qsort(lat, (size_t)n, sizeof *lat, cmp);
  p50 = lat[(int)(0.50 * n + 0.999999) - 1];
  p99 = lat[(int)(0.99 * n + 0.999999) - 1];
  printf("RESULT\t%s\t%d\t%.6f\t%.4f\t%.4f\t%ld\t%.2f\n", workload, n, secs, p50 * 1000,
         p99 * 1000, status_kb("VmHWM"), cpus / n * 1e6);
}

typedef void (*Op)(int i);

static void measure(Op op, int ops, int warm) {
  double c0, t0;
  for (int i = 1; i <= warm; i++) op(-i);
  c0 = cpu(); t0 = mono();
  for (int i = 1; i <= ops; i++) {
    double a = mono();
    op(i);
    lat[i - 1] = mono() - a;
  }
  report(ops, mono() - t0, cpu() - c0);
}

/* --rls=A,B: op alternately with RLS setting A and B (0 set_config, 1 SET
 * LOCAL), so that both meet the same load; a RESULT line for A, then B. */
static void measure_pair(Op op, int ops, int warm, int a, int b) {
  double *lat_b = malloc(sizeof *lat_b * (size_t)ops), ca = 0, cb = 0, ta = 0, tb = 0;
  for (int i = 1; i <= warm; i++) { set_local = a; op(-i); set_local = b; op(-i); }
  for (int i = 1; i <= ops; i++) {
    double c = cpu(), t = mono();
    set_local = a;
    op(i);
    lat[i - 1] = mono() - t;
    ta += lat[i - 1];
    ca += cpu() - c;
    c = cpu(); t = mono();
    set_local = b;
    op(i);
    lat_b[i - 1] = mono() - t;
    tb += lat_b[i - 1];
    cb += cpu() - c;
  }
  report(ops, ta, ca);
  free(lat);
  lat = lat_b;
  report(ops, tb, cb);
}

/* ---- the operations: tododb's statements, or the natural ones (--floor) ---- */

static const char *MAXB = "9223372036854775807";

static void op_get(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char id[24];
  const char *vals[2] = { u->owner, id };
  (void)i;
  snprintf(id, sizeof id, "%lld", u->ids[rnd((unsigned)u->n)]);
  if (consume(run(u->owner, floor_mode ? F(F_GET) : S(TDB_SQL_TODO_GET), vals)) != 1)
    die("get: no row");
}

static void op_create(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char title[48];
  const char *vals[4] = { u->owner, title, "created by the benchmark", NULL };
  snprintf(title, sizeof title, "Bench todo %d", i);
  if (consume(run(u->owner, floor_mode ? F(F_INSERT) : S(TDB_SQL_TODO_INSERT), vals)) != 1)
    die("create: no row");
}

static void op_toggle(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char id[24];
  const char *vals[2] = { u->owner, id };
  (void)i;
  snprintf(id, sizeof id, "%lld", u->ids[rnd((unsigned)u->n)]);
  if (consume(run(u->owner, floor_mode ? F(F_TOGGLE) : S(TDB_SQL_TODO_TOGGLE), vals)) != 1)
    die("toggle: no row");
}

/* A page of 50 newest first, after bound (NULL: the first page); one row
 * more tells whether a next page exists, as tododb does. */
static void list_page(User *u, const char *bound) {
  const char *vals[4] = { u->owner, bound ? bound : MAXB, NULL, "51" };
  PGresult *r;
  if (!floor_mode) r = run(u->owner, S(TDB_SQL_TODO_LIST_NEW), vals);
  else if (!bound) {
    vals[1] = "51";
    r = run(u->owner, F(F_LIST), vals);
  } else {
    vals[2] = "51";
    r = run(u->owner, F(F_LIST_AFTER), vals);
  }
  if (consume(r) < 50) die("list: short page");
}

static void op_list(int i) { (void)i; list_page(&users[rnd((unsigned)nusers)], NULL); }

static char deep_bound[24];
static void op_deep(int i) { (void)i; list_page(&users[0], deep_bound); }

static void op_count(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  const char *vals[2] = { u->owner, NULL };
  PGresult *r = run(u->owner, floor_mode ? F(F_COUNT) : S(TDB_SQL_TODO_COUNT), vals);
  (void)i;
  if (int8_at(r, 0, 0) < 10000) die("count: too few");
  PQclear(r);
}

static const char *auth_email, *auth_pw;
static void op_auth(int i) {
  const char *vals[2] = { auth_email, "7919" };   /* $2: picks the stand-in account */
  PGresult *r = run(NULL, S(TDB_SQL_USER_AUTH), vals);
  const char *hash;
  (void)i;
  if (PQntuples(r) < 1 || PQgetisnull(r, 0, 0)) die("auth: no user");
  hash = PQgetvalue(r, 0, 4);
  if (crypto_pwhash_str_verify(hash, auth_pw, strlen(auth_pw)) != 0) die("auth: wrong password");
  if (crypto_pwhash_str_needs_rehash(hash, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                     crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) die("auth: rehash");
  consume(r);
}

/* mixed: update_todo (completed only), as the Lua side's mix */
static void op_update(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char id[24];
  const char *vals[7] = { u->owner, id, "f", NULL, "f", NULL, i % 2 == 0 ? "t" : "f" };
  snprintf(id, sizeof id, "%lld", u->ids[rnd((unsigned)u->n)]);
  if (consume(run(u->owner, S(TDB_SQL_TODO_UPDATE), vals)) != 1) die("update: no row");
}

/* mixed: per worker, created todos to delete later */
typedef struct { int u; long long id; } Mine;
static Mine *mine;
static int nmine;

static void op_mixed_create(int i) {
  int k = (int)rnd((unsigned)nusers);
  User *u = &users[k];
  char title[48];
  const char *vals[4] = { u->owner, title, NULL, NULL };
  PGresult *r;
  snprintf(title, sizeof title, "Mixed todo %d", i);
  r = run(u->owner, S(TDB_SQL_TODO_INSERT), vals);
  mine[nmine].u = k;
  mine[nmine++].id = int8_at(r, 0, 0);
  consume(r);
}

static void op_mixed_delete(int i) {
  int j = (int)rnd((unsigned)nmine);
  Mine m = mine[j];
  char id[24];
  const char *vals[2] = { users[m.u].owner, id };
  PGresult *r;
  (void)i;
  mine[j] = mine[--nmine];
  snprintf(id, sizeof id, "%lld", m.id);
  r = run(users[m.u].owner, S(TDB_SQL_TODO_DELETE), vals);
  if (atoll(PQcmdTuples(r)) != 1) die("delete: not found");
  PQclear(r);
}

static Op choose(double r) {
  return r < 0.35 ? op_get : r < 0.70 ? op_list : r < 0.825 ? op_update
       : r < 0.95 ? op_mixed_create : op_mixed_delete;
}

static void mixed(int ops) {
  const char *start = getenv("BENCH_START_AT"), *out = getenv("BENCH_LATFILE");
  double c0, t0;
  FILE *f;
  mine = malloc(sizeof *mine * (size_t)(ops + 200));
  for (int i = 1; i <= 50; i++) op_mixed_create(-i);
  for (int i = 1; i <= 100; i++) choose(rnd01())(-i);
  if (start) {
    double at = atof(start);
    while (wall() < at) { struct timespec ts = { 0, 1000000 }; nanosleep(&ts, NULL); }
  }
  c0 = cpu(); t0 = mono();
  for (int i = 1; i <= ops; i++) {
    Op op = choose(rnd01());
    double a = mono();
    op(i);
    lat[i - 1] = mono() - a;
  }
  {
    double secs = mono() - t0, cpus = cpu() - c0;
    if (!out || !(f = fopen(out, "w"))) { perror("BENCH_LATFILE"); exit(1); }
    for (int i = 0; i < ops; i++) fprintf(f, "%.4f\n", lat[i] * 1000);
    fclose(f);
    report(ops, secs, cpus);
  }
}

/* bulk: one INSERT … SELECT FROM unnest of three array literals, built here
 * from C strings exactly as session.c builds them from the Lua table. */
static void add_element(char **p, const char *s) {
  char *o = *p;
  *o++ = '"';
  for (; *s; s++) { if (*s == '"' || *s == '\\') *o++ = '\\'; *o++ = *s; }
  *o++ = '"';
  *p = o;
}

static void clear_user(const char *owner) {
  char sql[160];
  plain("BEGIN");
  snprintf(sql, sizeof sql, "SELECT set_config('tododb.user_id', '%s', true)", owner);
  plain(sql);
  snprintf(sql, sizeof sql, "DELETE FROM todos WHERE user_id = %s", owner);
  plain(sql);
  plain("COMMIT");
}

static void bulk(int ops) {
  const char *bu = getenv("BENCH_BULK_USER");
  int n = getenv("BENCH_BULK_ROWS") ? atoi(getenv("BENCH_BULK_ROWS")) : 100000;
  char **title = malloc(sizeof *title * (size_t)n), **desc = malloc(sizeof *desc * (size_t)n);
  char *done = malloc((size_t)n), *cols[3];
  size_t cap = 0;
  double cpus = 0, total = 0;
  if (!bu) { fprintf(stderr, "raw_libpq: BENCH_BULK_USER not set\n"); exit(1); }
  for (int i = 0; i < n; i++) {
    char b[64];
    snprintf(b, sizeof b, "Imported todo %d", i + 1);
    title[i] = strdup(b);
    snprintf(b, sizeof b, "Imported description %d", i + 1);
    desc[i] = (i + 1) % 3 == 0 ? strdup(b) : NULL;
    done[i] = (i + 1) % 5 == 0;
    cap += 2 * strlen(b) + 16;
  }
  for (int c = 0; c < 3; c++) cols[c] = malloc(cap);
  for (int k = 1; k <= ops; k++) {
    double a, c;
    const char *vals[4];
    PGresult *r;
    clear_user(bu);
    c = cpu(); a = mono();
    for (int col = 0; col < 3; col++) {
      char *p = cols[col];
      *p++ = '{';
      for (int i = 0; i < n; i++) {
        if (i) *p++ = ',';
        if (col == 0) add_element(&p, title[i]);
        else if (col == 1) { if (desc[i]) add_element(&p, desc[i]); else { memcpy(p, "NULL", 4); p += 4; } }
        else *p++ = done[i] ? 't' : 'f';
      }
      *p++ = '}';
      *p = '\0';
    }
    vals[0] = bu; vals[1] = cols[0]; vals[2] = cols[1]; vals[3] = cols[2];
    r = run(bu, S(TDB_SQL_TODO_INSERT_MANY), vals);
    /* The statement counts what it inserted (or, older ones, the command tag). */
    if ((PQntuples(r) == 1 && PQnfields(r) == 1 ? int8_at(r, 0, 0) : atoll(PQcmdTuples(r))) != n)
      die("bulk: short insert");
    PQclear(r);
    lat[k - 1] = mono() - a;
    total += lat[k - 1];
    cpus += cpu() - c;
  }
  report(ops, total, cpus);
  clear_user(bu);
}

/* 1: SET LOCAL, 0: set_config, -2: unknown; "runner" as conn.c decided. */
static int runner_local;
static int rls_mode(const char *s) {
  return !strcmp(s, "runner") ? runner_local : !strcmp(s, "set_local") ? 1
       : !strcmp(s, "set_config") ? 0 : -2;
}

int main(int argc, char **argv) {
  const char *url = getenv("BENCH_URL"), *ids = getenv("BENCH_IDS"), *rls = "runner";
  const char *rls2 = NULL;
  int ops, warm, a = 1;
  for (; a < argc && !strncmp(argv[a], "--", 2); a++) {
    if (!strcmp(argv[a], "--floor")) {
      floor_mode = 1;
      /* Its own picks: with the same seed as the other C loop it would
       * toggle the very rows that loop has just toggled, in the same order. */
      rng ^= 0x9E3779B97F4A7C15ULL;
    }
    else if (!strncmp(argv[a], "--rls=", 6)) {
      static char buf[64];
      char *comma;
      snprintf(buf, sizeof buf, "%s", argv[a] + 6);
      rls = buf;
      if ((comma = strchr(buf, ',')) != NULL) { *comma = '\0'; rls2 = comma + 1; }
    }
    else break;
  }
  if (argc - a != 2 || !url || !ids || rls_mode(rls) < -1 || (rls2 && rls_mode(rls2) < -1)) {
    fprintf(stderr, "usage: BENCH_URL=… BENCH_IDS=… raw_libpq [--floor]"
                    " [--rls=S[,S2]] WORKLOAD OPS  (S: runner, set_config or set_local;"
                    " S2: alternate op by op)\n");
    return 2;
  }
  if (sodium_init() < 0) return 1;
  workload = argv[a];
  ops = atoi(argv[a + 1]);
  warm = ops / 10 < 10 ? 10 : ops / 10 > 200 ? 200 : ops / 10;
  lat = malloc(sizeof *lat * (size_t)(ops > 0 ? ops : 1));
  if (getenv("BENCH_WORKER")) rng += 7919ULL * (unsigned long long)atoi(getenv("BENCH_WORKER"));
  pg = PQconnectdb(url);
  if (PQstatus(pg) != CONNECTION_OK) die("connect");
  {                                     /* conn.c connect_retry's probe */
    PGresult *r = PQexec(pg, tdb_sql[TDB_SQL_CITUS].text);
    runner_local = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                   && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
  }
  set_local = rls_mode(rls);
  if (rls2) {
    Op op = !strcmp(workload, "get") ? op_get : !strcmp(workload, "list") ? op_list
          : !strcmp(workload, "create") ? op_create : !strcmp(workload, "toggle") ? op_toggle : NULL;
    if (!op || floor_mode) { fprintf(stderr, "raw_libpq: --rls=A,B takes get, list, create or toggle\n"); return 2; }
    load_ids(ids);
    measure_pair(op, ops, warm, set_local, rls_mode(rls2));
    PQfinish(pg);
    return 0;
  }
  if (floor_mode && set_local) { fprintf(stderr, "raw_libpq: --floor sends set_config\n"); return 2; }
  load_ids(ids);
  if (!strcmp(workload, "get")) measure(op_get, ops, warm);
  else if (!strcmp(workload, "create")) measure(op_create, ops, warm);
  else if (!strcmp(workload, "toggle")) measure(op_toggle, ops, warm);
  else if (!strcmp(workload, "list")) measure(op_list, ops, warm);
  else if (!strcmp(workload, "deep")) {
    int deep = getenv("BENCH_DEEP") ? atoi(getenv("BENCH_DEEP")) : 9950;
    snprintf(deep_bound, sizeof deep_bound, "%lld", users[0].ids[users[0].n - deep]);
    measure(op_deep, ops, warm);
  }
  else if (!strcmp(workload, "count")) measure(op_count, ops, warm);
  else if (floor_mode) { fprintf(stderr, "raw_libpq: no natural floor for %s\n", workload); return 2; }
  else if (!strcmp(workload, "auth")) {
    auth_email = getenv("BENCH_EMAIL");
    auth_pw = getenv("BENCH_PASSWORD");
    if (!auth_email || !auth_pw) { fprintf(stderr, "raw_libpq: BENCH_EMAIL/PASSWORD\n"); return 2; }
    measure(op_auth, ops, 1);
  }
  else if (!strcmp(workload, "bulk")) bulk(ops);
  else if (!strcmp(workload, "mixed")) mixed(ops);
  else { fprintf(stderr, "raw_libpq: unknown workload %s\n", workload); return 2; }
  PQfinish(pg);
  return 0;
}
