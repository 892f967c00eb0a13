/* raw_libpq.c: the floor tododb is measured against. The very statements of
 * csrc/sql.c (linked in), sent with libpq alone in the pipelined form of
 * tdb_run: [prepare] set_config + [prepare] statement + sync, one round trip,
 * one implicit transaction. No Lua, no objects: results are only touched.
 *   raw_libpq WORKLOAD OPS    (environment as for bench/tododb_bench.lua)
 * Prints: RESULT workload ops secs p50_ms p99_ms peak_rss_kb cpu_us_per_op
 * Build (bench/run does): cc -O2 -Icsrc bench/raw_libpq.c csrc/sql.c
 *   $(pkg-config --cflags lua5.4 libpq libsodium) $(pkg-config --libs libpq libsodium) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "tdb.h"

static PGconn *pg;
static unsigned char prepared[TDB_NSQL];
static volatile size_t sink;            /* keeps the touched results alive */

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

/* The floor's row-level security setting: set_config() pipelined with the
 * statement in the pipeline's implicit transaction, the cheapest correct way
 * on plain PostgreSQL (tododb sends BEGIN; SET LOCAL; statement; COMMIT,
 * which Citus workers also see): the ratio to it is that mechanism's cost. */
static const tdb_Sql set_config_sql = { "tdb_set_config",
  "SELECT set_config('tododb.user_id', $1, true)", 1, 1 };

/* Queues statement id, preparing it first when needed (as conn.c send_stmt). */
static int send_stmt(int id, const char *const *vals, int *prep) {
  const tdb_Sql *q = id == TDB_SQL_SET_USER ? &set_config_sql : &tdb_sql[id];
  *prep = 0;
  if (!prepared[id]) {
    if (!PQsendPrepare(pg, q->name, q->text, q->nparams, NULL)) return 0;
    *prep = 1;
  }
  return PQsendQueryPrepared(pg, q->name, q->nparams, vals, NULL, NULL, 0);
}

/* One pipelined round trip, as conn.c run_once. Dies on any failure. */
static PGresult *run(const char *owner, int id, const char *const *vals) {
  int cmd[4], ncmd = 0, prep, i = 0, nulls = 0;
  PGresult *main = NULL;
  if (!PQenterPipelineMode(pg)) die("enter pipeline");
  if (owner) {
    if (!send_stmt(TDB_SQL_SET_USER, &owner, &prep)) die("send");
    if (prep) cmd[ncmd++] = -1;
    cmd[ncmd++] = -2;
  }
  if (!send_stmt(id, vals, &prep)) die("send");
  if (prep) cmd[ncmd++] = -3;
  cmd[ncmd++] = -4;
  if (!PQpipelineSync(pg)) die("sync");
  for (;;) {
    PGresult *r = PQgetResult(pg);
    ExecStatusType st;
    if (!r) {
      if (++nulls > 1) break;
      i++;
      continue;
    }
    nulls = 0;
    st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) { PQclear(r); break; }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      fprintf(stderr, "raw_libpq: %s: %s", tdb_sql[id].name, PQresultErrorMessage(r));
      exit(1);
    }
    if (i < ncmd) {
      if (cmd[i] == -1) prepared[TDB_SQL_SET_USER] = 1;
      else if (cmd[i] == -3) prepared[id] = 1;
      else if (cmd[i] == -4) { PQclear(main); main = r; continue; }
    }
    PQclear(r);
  }
  PQexitPipelineMode(pg);
  if (!main) die("no result");
  return main;
}

/* Reads every field (what a caller of the rows would do), then clears. */
static int consume(PGresult *r) {
  int n = PQntuples(r), m = PQnfields(r);
  size_t s = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++) s += (size_t)PQgetlength(r, i, j) + (size_t)PQgetvalue(r, i, j)[0];
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

/* ---- the operations, statement for statement what tododb sends --------------- */

static const char *MAXB = "9223372036854775807";

static void op_get(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char id[24];
  const char *vals[2] = { u->owner, id };
  (void)i;
  snprintf(id, sizeof id, "%lld", u->ids[rnd((unsigned)u->n)]);
  if (consume(run(u->owner, TDB_SQL_TODO_GET, vals)) != 1) die("get: no row");
}

static void op_create(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char title[48];
  const char *vals[4] = { u->owner, title, "created by the benchmark", NULL };
  snprintf(title, sizeof title, "Bench todo %d", i);
  if (consume(run(u->owner, TDB_SQL_TODO_INSERT, vals)) != 1) die("create: no row");
}

static void op_update(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  char id[24];
  const char *vals[7] = { u->owner, id, "f", NULL, "f", NULL, i % 2 == 0 ? "t" : "f" };
  snprintf(id, sizeof id, "%lld", u->ids[rnd((unsigned)u->n)]);
  if (consume(run(u->owner, TDB_SQL_TODO_UPDATE, vals)) != 1) die("update: no row");
}

static void list_page(User *u, const char *bound, int want) {
  const char *vals[4] = { u->owner, bound, NULL, "51" };   /* limit + 1, as tododb */
  if (consume(run(u->owner, TDB_SQL_TODO_LIST_NEW, vals)) < want) die("list: short page");
}

static void op_list(int i) { (void)i; list_page(&users[rnd((unsigned)nusers)], MAXB, 50); }

static char deep_bound[24];
static void op_deep(int i) { (void)i; list_page(&users[0], deep_bound, 50); }

static void op_count(int i) {
  User *u = &users[rnd((unsigned)nusers)];
  const char *vals[2] = { u->owner, NULL };
  PGresult *r = run(u->owner, TDB_SQL_TODO_COUNT, vals);
  (void)i;
  if (atoll(PQgetvalue(r, 0, 0)) < 10000) die("count: too few");
  PQclear(r);
}

static const char *auth_email, *auth_pw;
static void op_auth(int i) {
  const char *vals[1] = { auth_email };
  PGresult *r = run(NULL, TDB_SQL_USER_AUTH, vals);
  const char *hash;
  (void)i;
  if (PQntuples(r) != 1) die("auth: no user");
  hash = PQgetvalue(r, 0, 4);
  if (crypto_pwhash_str_verify(hash, auth_pw, strlen(auth_pw)) != 0) die("auth: wrong password");
  if (crypto_pwhash_str_needs_rehash(hash, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                     crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) die("auth: rehash");
  consume(r);
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
  r = run(u->owner, TDB_SQL_TODO_INSERT, vals);
  mine[nmine].u = k;
  mine[nmine++].id = atoll(PQgetvalue(r, 0, 0));
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
  r = run(users[m.u].owner, TDB_SQL_TODO_DELETE, vals);
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
    r = run(bu, TDB_SQL_TODO_INSERT_MANY, vals);
    if (atoi(PQcmdTuples(r)) != n) die("bulk: short insert");
    PQclear(r);
    lat[k - 1] = mono() - a;
    total += lat[k - 1];
    cpus += cpu() - c;
  }
  report(ops, total, cpus);
  clear_user(bu);
}

int main(int argc, char **argv) {
  const char *url = getenv("BENCH_URL"), *ids = getenv("BENCH_IDS");
  int ops, warm;
  if (argc < 3 || !url || !ids) {
    fprintf(stderr, "usage: BENCH_URL=… BENCH_IDS=… raw_libpq WORKLOAD OPS\n");
    return 2;
  }
  if (sodium_init() < 0) return 1;
  workload = argv[1];
  ops = atoi(argv[2]);
  warm = ops / 10 < 10 ? 10 : ops / 10 > 200 ? 200 : ops / 10;
  lat = malloc(sizeof *lat * (size_t)(ops > 0 ? ops : 1));
  if (getenv("BENCH_WORKER")) rng += 7919ULL * (unsigned long long)atoi(getenv("BENCH_WORKER"));
  pg = PQconnectdb(url);
  if (PQstatus(pg) != CONNECTION_OK) die("connect");
  load_ids(ids);
  if (!strcmp(workload, "get")) measure(op_get, ops, warm);
  else if (!strcmp(workload, "create")) measure(op_create, ops, warm);
  else if (!strcmp(workload, "update")) measure(op_update, ops, warm);
  else if (!strcmp(workload, "list")) measure(op_list, ops, warm);
  else if (!strcmp(workload, "deep")) {
    int deep = getenv("BENCH_DEEP") ? atoi(getenv("BENCH_DEEP")) : 9950;
    snprintf(deep_bound, sizeof deep_bound, "%lld", users[0].ids[users[0].n - deep]);
    measure(op_deep, ops, warm);
  }
  else if (!strcmp(workload, "count")) measure(op_count, ops, warm);
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
