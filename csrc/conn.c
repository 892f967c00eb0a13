/* conn.c: Connection — the class, the statement runner (named, ad-hoc and
 * simple-protocol statements under one policy), reconnect, db:exec, db:query
 * and db:info. Connecting is connect.c's, reading values decode.c's. */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "tdb.h"

#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_CALL_TIMEOUT 30.0       /* below nginx's 60 s proxy and client timeouts */
#define MAX_ADHOC 256                   /* named ad-hoc statements per connection */

/* ---- secrets never reach a message ---------------------------------- */

/* Replaces every occurrence of secret in buf (NUL-terminated) by "***". */
static void redact(char *buf, size_t cap, const char *secret) {
  size_t n;
  char *p = buf;
  if (!secret || !*secret) return;
  n = strlen(secret);
  while ((p = strstr(p, secret)) != NULL) {
    size_t rest = strlen(p + n);
    if ((size_t)(p - buf) + 3 + rest + 1 > cap) { *p = '\0'; return; }
    memmove(p + 3, p + n, rest + 1);
    memcpy(p, "***", 3);
    p += 3;
  }
}

/* The password as written in a URL (userinfo after the first ':'). */
static void url_password(const char *ci, char *out, size_t cap) {
  const char *s = strstr(ci, "://"), *at, *colon, *end;
  out[0] = '\0';
  if (!s) return;
  s += 3;
  end = s + strcspn(s, "/?#");
  at = NULL;
  for (const char *p = s; p < end; p++) if (*p == '@') at = p;
  if (!at) return;
  colon = memchr(s, ':', (size_t)(at - s));
  if (!colon || (size_t)(at - colon - 1) >= cap) return;
  memcpy(out, colon + 1, (size_t)(at - colon - 1));
  out[at - colon - 1] = '\0';
}

/* The password as written in a key=value conninfo. */
static void kv_password(const char *ci, char *out, size_t cap) {
  const char *p = strstr(ci, "password");
  size_t n;
  out[0] = '\0';
  if (!p) return;
  p += 8;
  while (*p == ' ') p++;
  if (*p != '=') return;
  p++;
  while (*p == ' ') p++;
  if (*p == '\'') p++;
  n = strcspn(p, " '");
  if (n >= cap) return;
  memcpy(out, p, n);
  out[n] = '\0';
}

/* Does msg contain a word of what follows "password=" in a key=value string,
 * up to the next key=value pair? */
static int mentions_kv_password(const char *ci, const char *msg) {
  const char *p = strstr(ci, "password");
  if (!p) return 0;
  p += 8;
  while (*p == ' ') p++;
  if (*p++ != '=') return 0;
  for (;;) {
    char word[256];
    size_t n;
    while (*p == ' ' || *p == '\'') p++;
    n = strcspn(p, " '");
    if (n == 0 || memchr(p, '=', n)) return 0;
    if (n < sizeof word) {
      memcpy(word, p, n);
      word[n] = '\0';
      if (strstr(msg, word)) { sodium_memzero(word, sizeof word); return 1; }
      sodium_memzero(word, sizeof word);
    } else return 1;
    p += n;
  }
}

/* Copies msg into buf with every form of the password of ci removed and
 * the trailing newline libpq adds stripped. */
static void clean_message(const char *ci, const char *msg, char *buf, size_t cap) {
  char pw[256];
  PQconninfoOption *opts;
  size_t n;
  snprintf(buf, cap, "%s", msg ? msg : "unknown error");
  n = strlen(buf);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = '\0';
  if (!ci) return;
  if ((opts = PQconninfoParse(ci, NULL)) != NULL) {
    for (PQconninfoOption *o = opts; o->keyword; o++)
      if (!strcmp(o->keyword, "password") && o->val) redact(buf, cap, o->val);
    PQconninfoFree(opts);
  }
  url_password(ci, pw, sizeof pw);
  redact(buf, cap, pw);
  kv_password(ci, pw, sizeof pw);
  redact(buf, cap, pw);
  sodium_memzero(pw, sizeof pw);
}

static int conn_error(lua_State *L, tdb_Conn *c, const char *code,
                      const char *sqlstate, const char *prefix, const char *msg) {
  char buf[1024];
  clean_message(c ? c->conninfo : NULL, msg, buf, sizeof buf);
  return tdb_push_error(L, code, NULL, sqlstate, "%s%s", prefix, buf);
}

/* ---- connecting ------------------------------------------------------ */

static void noop_notice(void *arg, const char *msg) { (void)arg; (void)msg; }

/* Connects (connect.c: hosts in turn, retries until c->connect_timeout).
 * Returns the connection or NULL with nil, err pushed: `unauthorized` when
 * the server refused the credentials, else `unavailable`; err.sqlstate is
 * the server's when it sent one. */
static PGconn *connect_retry(lua_State *L, tdb_Conn *c) {
  tdb_ConnectError e;
  PGconn *pg = tdb_connect(c->conninfo, c->connect_timeout, &e);
  if (pg) {
    PGresult *r;
    PQsetNoticeProcessor(pg, noop_notice, NULL);
    /* Citus? (its settings exist only when it is loaded): decides how the
     * row-level security setting is sent (see queue_user_setting). */
    r = PQexec(pg, tdb_sql[TDB_SQL_CITUS].text);
    c->set_local = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                   && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return pg;
  }
  conn_error(L, c, e.refused && (!strncmp(e.sqlstate, "28", 2) || !strcmp(e.sqlstate, "42501"))
                   ? "unauthorized" : "unavailable",
             e.sqlstate[0] ? e.sqlstate : NULL, "could not connect to the database: ", e.message);
  sodium_memzero(&e, sizeof e);
  return NULL;
}

/* A new server session: no statement is prepared there any more. */
static void forget_statements(tdb_Conn *c) {
  memset(c->prepared, 0, sizeof c->prepared);
  c->nadhoc = 0;
  c->generation++;                      /* ad-hoc names of before never match */
}

static int alive(tdb_Conn *c) {
  return !c->broken && PQstatus(c->pg) == CONNECTION_OK;
}

/* Re-establishes a broken connection. 1 ok, 0 with nil, err pushed. */
static int ensure(lua_State *L, tdb_Conn *c) {
  PGconn *pg;
  if (alive(c)) return 1;
  if ((pg = connect_retry(L, c)) == NULL) return 0;
  PQfinish(c->pg);
  c->pg = pg;
  c->broken = 0;
  forget_statements(c);
  return 1;
}

/* Frees what the connection holds; idempotent (close, __gc, __close and a
 * failed connect all end here). */
static void release(tdb_Conn *c) {
  sodium_memzero(c->cursor_keys, sizeof c->cursor_keys);
  if (c->pg) { PQfinish(c->pg); c->pg = NULL; }
  if (c->conninfo) {
    sodium_memzero(c->conninfo, strlen(c->conninfo));
    free(c->conninfo);
    c->conninfo = NULL;
  }
}

/* tododb.core.connect(conninfo [, opts]) -> db | nil, err
 * opts: connect_timeout (seconds, default 10), timeout (seconds a call may
 * wait for the server, default 30; false: no limit), prepare (default true),
 * pwhash ("interactive" | "moderate" | "min" | {ops=, mem=}),
 * allow_rls_bypass (sessions on a superuser or BYPASSRLS role),
 * cursor_key (a secret of 32+ bytes, or { current, previous… }). */
static int conn_connect(lua_State *L) {
  size_t n;
  const char *ci = luaL_checklstring(L, 1, &n);
  char *perr = NULL;
  PQconninfoOption *parsed;
  tdb_Conn *c;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  c = tdb_newudata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, TDB_CONN_MT);
  lua_newtable(L);                            /* statement cache: sql -> name */
  tdb_setuservalue(L, -2);
  c->connect_timeout = DEFAULT_CONNECT_TIMEOUT;
  c->call_timeout = DEFAULT_CALL_TIMEOUT;
  c->prepare = 1;
  randombytes_buf(&c->nonce, sizeof c->nonce);
  tdb_password_config(L, 2, c);
  tdb_cursor_config(L, 2, c);
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "connect_timeout");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0))
        tdb_argerror(L, 2, "connect_timeout must be a positive number of seconds");
      c->connect_timeout = lua_tonumber(L, -1);
    }
    lua_getfield(L, 2, "prepare");
    if (!lua_isnil(L, -1)) c->prepare = lua_toboolean(L, -1);
    lua_getfield(L, 2, "allow_rls_bypass");
    c->allow_rls_bypass = lua_toboolean(L, -1);
    lua_getfield(L, 2, "timeout");
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) c->call_timeout = 0;
    else if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0))
        tdb_argerror(L, 2, "timeout must be a positive number of seconds or false");
      c->call_timeout = lua_tonumber(L, -1);
    }
    lua_pop(L, 4);
  }
  if ((parsed = PQconninfoParse(ci, &perr)) == NULL) {
    char buf[1024];
    clean_message(ci, perr ? perr : "out of memory", buf, sizeof buf);
    if (perr) PQfreemem(perr);
    /* A malformed string may hold a password that redaction cannot find
     * whole (password=two words): then libpq's text stays out. */
    if (mentions_kv_password(ci, buf))
      snprintf(buf, sizeof buf, "%s", "malformed (details withheld: they would show the password)");
    return tdb_push_error(L, "invalid", NULL, NULL, "invalid connection string: %s", buf);
  }
  PQconninfoFree(parsed);
  if ((c->conninfo = malloc(n + 1)) == NULL) return luaL_error(L, "out of memory");
  memcpy(c->conninfo, ci, n + 1);
  if ((c->pg = connect_retry(L, c)) == NULL) {
    release(c);                               /* now, not at collection */
    return 2;
  }
  return 1;
}

tdb_Conn *tdb_check_conn(lua_State *L, int idx) {
  tdb_Conn *c = luaL_checkudata(L, idx, TDB_CONN_MT);
  if (!c->pg) tdb_argerror(L, idx, "connection is closed");
  if (c->tx)
    tdb_argerror(L, idx, "connection is inside a transaction: use the transaction's session");
  return c;
}

/* db:close() — also __gc and __close; safe to call twice. */
static int conn_close(lua_State *L) {
  release(luaL_checkudata(L, 1, TDB_CONN_MT));
  return 0;
}

/* tostring(db) */
static int conn_tostring(lua_State *L) {
  tdb_Conn *c = luaL_checkudata(L, 1, TDB_CONN_MT);
  if (!c->pg) lua_pushliteral(L, "tododb.Connection (closed)");
  else lua_pushfstring(L, "tododb.Connection (%s@%s)", PQuser(c->pg), PQdb(c->pg));
  return 1;
}

/* ---- the statement runner --------------------------------------------------
 * Every statement runs through run(): sql.c's named ones (tdb_run), db:query's
 * ad-hoc ones and simple-protocol text (db:exec, tdb_exec); s:batch's
 * pipelines (tdb_run_batch) share its sending and reading. One policy:
 * - prepared once per server session and reused (unnamed with c->prepare off);
 * - bounded by the per-call deadline (c->call_timeout), counted once the
 *   connection is there (reconnecting is bounded by c->connect_timeout);
 * - a broken connection is re-made before the statement (never inside
 *   s:transaction, c->tx);
 * - after a lost connection a read is retried once, a write never: it may
 *   have run;
 * - a statement the server lost (26000: a pooler's DISCARD ALL, DEALLOCATE)
 *   or already has (42P05) did not run: prepared afresh and tried once more. */

/* One statement as the runner sees it. */
typedef struct Stmt {
  tdb_Sql q;                    /* name (NULL: unnamed), text, nparams, readonly */
  int simple;                   /* simple protocol: several statements, no parameters */
  int format;                   /* result format: TDB_BINARY, or 0 for text */
  unsigned char *prepared;      /* set once the server session has q.name */
  /* db:query: the stack index of the connection, whose uservalue maps text
   * to the name it was prepared under (0 for sql.c's statements). */
  int cache;
  int cached;                   /* the name came from that cache */
  unsigned char flag;           /* *prepared of an ad-hoc statement */
  char name[64];
} Stmt;

/* sql.c's statement id on c, into *s. The ad-hoc name buffer is left as
 * it is: only db:query's statements use it, and clearing it cost every call. */
static void named(const tdb_Conn *c, int id, Stmt *s) {
  s->q = tdb_sql[id];
  if (!c->prepare) s->q.name = NULL;
  s->simple = 0;
  s->format = TDB_BINARY;
  s->prepared = (unsigned char *)&c->prepared[id];
  s->cache = s->cached = 0;
  s->flag = 0;
}

/* Names db:query's statement for this attempt: the name its text was
 * prepared under in this server session, or a new one; unnamed with prepare
 * off or past MAX_ADHOC. A name holds this client's random nonce and the
 * server session's generation, so behind a transaction pooler a server
 * session prepared by another client can never run its statement for ours:
 * ours is missing there (26000, prepared again), never a different one under
 * the same name. */
static void name_adhoc(lua_State *L, tdb_Conn *c, Stmt *s) {
  char prefix[40];
  s->q.name = NULL;
  s->prepared = &s->flag;
  s->flag = 0;
  s->cached = 0;
  if (!c->prepare) return;
  tdb_getuservalue(L, s->cache);
  if (c->cache_generation != c->generation) {    /* names of before: all gone */
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    tdb_setuservalue(L, s->cache);
    c->cache_generation = c->generation;
  }
  snprintf(prefix, sizeof prefix, "tdb_q%016llx_%u_", c->nonce, c->generation);
  lua_getfield(L, -1, s->q.text);
  if (lua_isstring(L, -1)) {
    snprintf(s->name, sizeof s->name, "%s", lua_tostring(L, -1));
    s->flag = s->cached = 1;
  } else if (c->nadhoc < MAX_ADHOC) {
    snprintf(s->name, sizeof s->name, "%s%d", prefix, ++c->nadhoc);
  }
  lua_pop(L, 2);
  if (s->name[0]) s->q.name = s->name;
}

/* Keeps the name of an ad-hoc statement the server session now has. */
static void note_adhoc(lua_State *L, tdb_Conn *c, const Stmt *s) {
  if (!s->q.name || !s->flag || s->cached || c->cache_generation != c->generation) return;
  tdb_getuservalue(L, s->cache);
  lua_pushstring(L, s->name);
  lua_setfield(L, -2, s->q.text);
  lua_pop(L, 1);
}

static int result_failed(const PGresult *r) {
  ExecStatusType s = PQresultStatus(r);
  return s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_PIPELINE_SYNC;
}

static int is_copy(const PGresult *r) {
  ExecStatusType s = PQresultStatus(r);
  return s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH;
}

/* Pushes nil, err for a failed result (or a broken connection). */
static int push_result_error(lua_State *L, tdb_Conn *c, const PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (r && is_copy(r))
    return tdb_push_error(L, "invalid", NULL, NULL,
                          "COPY from or to the client is not supported (use psql)");
  if (!alive(c))
    return conn_error(L, c, "unavailable", state, "database connection lost: ",
                      PQerrorMessage(c->pg));
  if (!msg) msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg);
  return conn_error(L, c, tdb_sqlstate_code(state), state, "", msg);
}

static int has_state(const PGresult *r, const char *state) {
  const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  return s && !strcmp(s, state);
}

static int is_conflict(const PGresult *r) {
  return has_state(r, "40001") || has_state(r, "40P01");
}

/* What each command queued in a pipeline is: a prepare (the flag its
 * result sets), statement k's execution (stmt k >= 0), or another (-1). */
typedef struct Pipe {
  int n;
  unsigned char **prepare;
  int *stmt;
} Pipe;

static void queued(Pipe *p, unsigned char *prepare, int stmt) {
  p->prepare[p->n] = prepare;
  p->stmt[p->n++] = stmt;
}

/* Queues s as statement k (-1: not one whose result is wanted), preparing
 * it first unless it is prepared or its prepare is queued (flag 2). */
static int send_stmt(tdb_Conn *c, const Stmt *s, const char *const *vals, Pipe *p, int k) {
  const tdb_Sql *q = &s->q;
  if (!q->name) {
    if (!PQsendQueryParams(c->pg, q->text, q->nparams, NULL, vals, NULL, NULL, s->format))
      return 0;
  } else {
    if (!*s->prepared) {
      if (!PQsendPrepare(c->pg, q->name, q->text, q->nparams, NULL)) return 0;
      *s->prepared = 2;
      queued(p, s->prepared, -1);
    }
    if (!PQsendQueryPrepared(c->pg, q->name, q->nparams, vals, NULL, NULL, s->format)) return 0;
  }
  queued(p, NULL, k);
  return 1;
}

static int send_named(tdb_Conn *c, int id, const char *const *vals, Pipe *p, int k) {
  Stmt s;
  named(c, id, &s);
  return send_stmt(c, &s, vals, p, k);
}

/* Queues parameterless text (simple statements, never prepared). */
static int send_text(tdb_Conn *c, const char *text, Pipe *p) {
  if (!PQsendQueryParams(c->pg, text, 0, NULL, NULL, NULL, NULL, 0)) return 0;
  queued(p, NULL, -1);
  return 1;
}

/* Reads what was sent until the deadline (tdb_now() seconds, 0: none): in
 * pipeline mode the results of p's commands up to the sync, else those of
 * one simple-protocol text (all statement 0's; the last one kept). res[k]
 * gets statement k's result; *err the first failure and *failed its
 * statement (-1: another command, or the connection). A prepare's flag
 * becomes 1 when it succeeded or the statement was there already (42P05),
 * and flags left queued (2) become 0. 0 when the deadline passed first: the
 * connection is broken (reopened next call) and nothing is kept. */
static int drain(tdb_Conn *c, Pipe *p, int piped, double deadline, PGresult **res,
                 int nres, PGresult **err, int *failed) {
  int i = 0, nulls = 0, ok = 1;
  *err = NULL;
  *failed = -1;
  for (;;) {
    PGresult *r;
    int k;
    if (deadline > 0 && !tdb_wait_result(c->pg, deadline)) {
      c->timed_out = c->broken = 1;     /* a hung server: give up on this connection */
      ok = 0;
      break;
    }
    if ((r = PQgetResult(c->pg)) == NULL) {
      if (!piped || ++nulls > 1) break;          /* nothing more will come */
      i++;
      continue;
    }
    nulls = 0;
    k = !piped ? 0 : i < p->n ? p->stmt[i] : -1;
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) { PQclear(r); break; }
    if (is_copy(r)) {                   /* never started: the connection is stuck */
      c->broken = 1;
      PQclear(*err);
      *err = r;
      *failed = k;
      break;
    }
    if (piped && i < p->n && p->prepare[i])
      *p->prepare[i] = !result_failed(r) || has_state(r, "42P05");
    if (result_failed(r)) {
      if (!*err && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
        *err = r;
        *failed = k;
        continue;
      }
    } else if (k >= 0 && k < nres && (!piped || !res[k])) {
      PQclear(res[k]);
      res[k] = r;
      continue;
    }
    PQclear(r);
  }
  for (i = 0; i < p->n; i++)            /* prepares never answered */
    if (p->prepare[i] && *p->prepare[i] == 2) *p->prepare[i] = 0;
  if (!ok) {
    for (i = 0; i < nres; i++) { PQclear(res[i]); res[i] = NULL; }
    PQclear(*err);
    *err = NULL;
  }
  return ok;
}

/* ---- the row-level security setting ------------------------------------
 * On a server with Citus (c->set_local, probed at connect) a session
 * statement runs as
 *   BEGIN; SET LOCAL tododb.user_id = '<id>'; statement; COMMIT
 * in one pipeline: one round trip. SET LOCAL inside an explicit transaction
 * block is what Citus propagates to its workers (with
 * citus.propagate_set_commands = local); set_config() is evaluated on the
 * coordinator only. The id is an int64 formatted in C, checked again here.
 * On plain PostgreSQL it runs as set_config(..., true); statement — the
 * pipeline's implicit transaction bounds the setting just as well, with two
 * statements fewer (the explicit block cost ~10 % per read there).
 * Inside s:transaction (c->tx) the setting is in force already: statements
 * go alone. */

static int queue_user_setting(tdb_Conn *c, const char *owner, Pipe *p) {
  char text[96];
  size_t n = strlen(owner);
  if (n == 0 || n > 20 || strspn(owner, "-0123456789") != n) return 0;
  if (!c->set_local) return send_named(c, TDB_SQL_SET_CONFIG, &owner, p, -1);
  if (!send_named(c, TDB_SQL_BEGIN, NULL, p, -1)) return 0;
  snprintf(text, sizeof text, "%s%s'", tdb_sql[TDB_SQL_SET_USER].text, owner);
  return send_text(c, text, p);
}

/* Leaves pipeline mode after a drain; a connection that cannot is useless
 * (reconnect). A transaction block left open by a failure is rolled back (a
 * second round trip, on errors only) unless keep_tx. */
static void end_pipeline(tdb_Conn *c, int block) {
  if (!PQexitPipelineMode(c->pg)) c->broken = 1;
  else if (block && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
    PQclear(PQexec(c->pg, tdb_sql[TDB_SQL_ROLLBACK].text));
}

/* Sends s and reads its results: simple protocol, or one pipelined round
 * trip of [BEGIN; SET LOCAL | set_config] [prepare] statement [COMMIT],
 * sync. Returns the statement's result (the last one of simple-protocol
 * text) or NULL with *err the first failure (NULL too when the connection
 * broke or the deadline passed: c->timed_out). */
static PGresult *run_once(tdb_Conn *c, const char *owner, const Stmt *s,
                          const char *const *vals, double deadline, PGresult **err) {
  unsigned char *prepare[8];
  int stmt[8], failed;
  Pipe p;
  PGresult *main = NULL;
  p.n = 0;
  p.prepare = prepare;
  p.stmt = stmt;
  *err = NULL;
  c->timed_out = 0;
  if (s->simple) {
    if (!PQsendQuery(c->pg, s->q.text)) return NULL;
  } else {
    if (!PQenterPipelineMode(c->pg)) return NULL;
    if ((!owner || queue_user_setting(c, owner, &p)) && send_stmt(c, s, vals, &p, 0)
        && owner && c->set_local)
      (void)send_named(c, TDB_SQL_COMMIT, NULL, &p, -1);
    /* Even after a failed send, sync and drain: the connection must leave
     * pipeline mode idle, or be broken (and reconnected on the next call). */
    if (!PQpipelineSync(c->pg)) p.n = 0;
  }
  (void)drain(c, &p, !s->simple, deadline, &main, 1, err, &failed);
  if (!s->simple && !c->timed_out) end_pipeline(c, owner != NULL);
  if (*err || !main) { PQclear(main); return NULL; }
  return main;
}

/* A call that hit c->call_timeout: nil, err pushed; NULL. */
static PGresult *timed_out(lua_State *L, tdb_Conn *c, int readonly) {
  char msg[256];
  snprintf(msg, sizeof msg, "no answer within %.3g s from host %s%s", c->call_timeout,
           PQhost(c->pg) ? PQhost(c->pg) : "?",
           readonly ? "" : "; the change may have been made");
  conn_error(L, c, "unavailable", NULL, "database timed out: ", msg);
  return NULL;
}

/* Runs s under the policy above. Inside s:transaction the RLS setting is in
 * force already and a failure is final (the transaction is aborted; a new
 * connection would not hold it). Returns the result (the caller clears it)
 * or NULL with nil, err pushed. */
static PGresult *run(lua_State *L, tdb_Conn *c, const char *owner, Stmt *s,
                     const char *const *vals) {
  for (int attempt = 0; ; attempt++) {
    PGresult *err = NULL, *r;
    double deadline;
    if (c->tx ? !alive(c) : !ensure(L, c)) {
      if (c->tx) push_result_error(L, c, NULL);
      return NULL;
    }
    /* Counted from here, per attempt: reconnecting has its own bound
     * (connect_timeout), and time spent on a hung host must not be charged
     * to the host that answers. */
    deadline = c->call_timeout > 0 ? tdb_now() + c->call_timeout : 0;
    if (s->cache) name_adhoc(L, c, s);
    r = run_once(c, c->tx ? NULL : owner, s, vals, deadline, &err);
    if (s->cache) note_adhoc(L, c, s);
    if (r) return r;
    if (c->timed_out) return timed_out(L, c, s->q.readonly);   /* never retried: it may have run */
    if (c->tx) {
      if (is_conflict(err)) c->tx_conflict = 1;
    } else if (attempt == 0 && !alive(c) && s->q.readonly && !s->simple) {
      PQclear(err);                     /* a read may be retried once */
      continue;
    } else if (attempt == 0 && alive(c) && !s->simple
               && (has_state(err, "26000") || has_state(err, "42P05"))) {
      if (has_state(err, "26000")) forget_statements(c);
      PQclear(err);
      continue;
    }
    push_result_error(L, c, err);
    PQclear(err);
    return NULL;
  }
}

PGresult *tdb_run(lua_State *L, tdb_Conn *c, const char *owner, int id,
                  const char *const *vals) {
  Stmt s;
  named(c, id, &s);
  return run(L, c, owner, &s, vals);
}

PGresult *tdb_exec(lua_State *L, tdb_Conn *c, const char *sql) {
  Stmt s;
  memset(&s, 0, sizeof s);
  s.q.text = sql;
  s.simple = 1;
  return run(L, c, NULL, &s, NULL);
}

int tdb_run_batch(lua_State *L, tdb_Conn *c, const char *const *head, int nhead,
                  int n, const int *ids, const char *const *const *vals,
                  const char *tail, PGresult **res) {
  double deadline;
  int i, failed = -1, sent = 0, max = nhead + 2 * n + 1;
  PGresult *err = NULL;
  Pipe p;
  for (i = 0; i < n; i++) res[i] = NULL;
  if (c->tx ? !alive(c) : !ensure(L, c)) {
    if (c->tx) push_result_error(L, c, NULL);
    return n;
  }
  deadline = c->call_timeout > 0 ? tdb_now() + c->call_timeout : 0;   /* as in run() */
  p.n = 0;
  p.prepare = malloc(sizeof *p.prepare * (size_t)max);
  p.stmt = malloc(sizeof *p.stmt * (size_t)max);
  if (!p.prepare || !p.stmt) {
    free(p.prepare);
    free(p.stmt);
    return luaL_error(L, "out of memory");
  }
  c->timed_out = 0;
  if (PQenterPipelineMode(c->pg)) {
    sent = 1;
    for (i = 0; sent && i < nhead; i++) sent = send_text(c, head[i], &p);
    for (i = 0; sent && i < n; i++) sent = send_named(c, ids[i], vals[i], &p, i);
    if (sent && tail) sent = send_text(c, tail, &p);
    /* As in run_once: always sync and drain, so pipeline mode ends idle. */
    if (!PQpipelineSync(c->pg)) p.n = sent = 0;
    if (drain(c, &p, 1, deadline, res, n, &err, &failed)) end_pipeline(c, 0);
  }
  free(p.prepare);
  free(p.stmt);
  if (failed < 0 && err) failed = n;    /* head, tail or a prepare */
  for (i = 0; i < n && failed < 0; i++) if (!res[i]) failed = n;
  if (!sent || !alive(c)) failed = failed < 0 ? n : failed;
  if (failed < 0) return -1;
  if (c->timed_out) timed_out(L, c, 0);      /* it ends in COMMIT: a write */
  else {
    if (c->tx && is_conflict(err)) c->tx_conflict = 1;
    push_result_error(L, c, err);
  }
  PQclear(err);
  for (i = 0; i < n; i++) { PQclear(res[i]); res[i] = NULL; }
  return failed;
}

/* ---- db:exec, db:query, db:info ----------------------------------------- */

/* db:exec(sql) -> true | nil, err   (simple protocol; several statements) */
static int conn_exec(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  PGresult *r = tdb_exec(L, c, luaL_checkstring(L, 2));
  if (!r) return 2;
  PQclear(r);
  lua_pushboolean(L, 1);
  return 1;
}

/* Pushes the string form of parameter i, or nil for NULL. */
static void push_param(lua_State *L, int i) {
  switch (lua_type(L, i)) {
    case LUA_TNIL: lua_pushnil(L); return;
    case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, i) ? "true" : "false"); return;
    case LUA_TNUMBER: {
      long long v;
      char buf[32];
      if (tdb_to_int64(L, i, &v)) (void)tdb_int8_text(buf, v);
      else snprintf(buf, sizeof buf, "%.17g", (double)lua_tonumber(L, i));
      lua_pushstring(L, buf);
      return;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, i, &n);
      if (strlen(s) != n) tdb_argerror(L, i, "string parameter contains a NUL byte");
      lua_pushvalue(L, i);
      return;
    }
    default:
      if (tdb_is_null(L, i)) { lua_pushnil(L); return; }
      tdb_argerror(L, i, "parameter must be nil, tododb.null, boolean, number or string, got %s",
                   luaL_typename(L, i));
  }
}

/* Skips white space and SQL comments (block comments nest). NULL when a
 * comment does not end. */
static const char *skip_space(const char *p) {
  for (;;) {
    p += strspn(p, " \t\r\n\f\v");
    if (p[0] == '-' && p[1] == '-') p += strcspn(p, "\n");
    else if (p[0] == '/' && p[1] == '*') {
      int depth = 0;
      do {
        if (!*p) return NULL;
        if (p[0] == '/' && p[1] == '*') { depth++; p += 2; }
        else if (p[0] == '*' && p[1] == '/') { depth--; p += 2; }
        else p++;
      } while (depth > 0);
    } else return p;
  }
}

static int word_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
         || ch == '_' || ch == '$' || (unsigned char)ch >= 0x80;
}

/* Is the word w (lower case) at p, whole? */
static int word_at(const char *p, const char *w) {
  size_t n = strlen(w);
  for (size_t i = 0; i < n; i++) if ((p[i] | 0x20) != w[i]) return 0;
  return !word_char(p[n]);
}

/* Is db:query's text a read, which may run twice? Its first word is SELECT,
 * VALUES, TABLE or SHOW and no word is INTO (SELECT … INTO makes a table).
 * Anything else is taken for a write. */
static int adhoc_read(const char *sql) {
  static const char *const reads[] = { "select", "values", "table", "show", NULL };
  const char *p = skip_space(sql);
  int read = 0;
  if (!p) return 0;
  for (int i = 0; reads[i]; i++) if (word_at(p, reads[i])) read = 1;
  for (; read && *p; p++)
    if (!word_char(*p) && word_at(p + 1, "into")) read = 0;
  return read;
}

/* db:query(sql, ...) -> rows, count | nil, err
 * $n parameters from the extra arguments (nil or tododb.null is NULL).
 * rows: array of tables keyed by column name; count: rows affected. Runs
 * under the named statements' policy (run), results in text. */
static int conn_query(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  int n = lua_gettop(L) - 2, base;
  const char **vals;
  PGresult *r;
  Stmt s;
  memset(&s, 0, sizeof s);
  s.q.text = luaL_checkstring(L, 2);
  if (n > 1000) tdb_argerror(L, 3, "at most 1000 parameters, got %d", n);
  luaL_checkstack(L, n + 8, "too many parameters");
  vals = lua_newuserdata(L, sizeof *vals * (size_t)(n > 0 ? n : 1));
  base = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    push_param(L, 3 + i);
    vals[i] = lua_tostring(L, -1);
  }
  s.q.nparams = n;
  s.q.readonly = adhoc_read(s.q.text);
  s.cache = 1;
  if ((r = run(L, c, NULL, &s, vals)) == NULL) return 2;
  lua_settop(L, base);
  tdb_push_rows(L, r);
  {
    const char *t = PQcmdTuples(r);
    tdb_push_int64(L, *t ? tdb_parse_int8(t) : PQntuples(r));
  }
  PQclear(r);
  return 2;
}

int tdb_role_powers(lua_State *L, tdb_Conn *c, int *super, int *bypass, int *owns) {
  PGresult *r = tdb_run(L, c, NULL, TDB_SQL_INFO, NULL);
  if (!r) return 2;
  *super = *bypass = *owns = 0;
  if (PQntuples(r) > 0) {
    *super = tdb_get_bool(r, 0, 0);
    *bypass = tdb_get_bool(r, 0, 1);
    *owns = tdb_get_bool(r, 0, 2);
  }
  PQclear(r);
  return 0;
}

/* db:info() -> { server_version, server_version_num, user, database,
 *   rls_bypassed, superuser, bypassrls, owns_tables, can_lower_wall,
 *   prepared, ssl, libpq_version } | nil, err */
static int conn_info(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  int super, bypass, owns;
  if (tdb_role_powers(L, c, &super, &bypass, &owns)) return 2;
  lua_createtable(L, 0, 12);
  lua_pushboolean(L, super);
  lua_setfield(L, -2, "superuser");
  lua_pushboolean(L, bypass);
  lua_setfield(L, -2, "bypassrls");
  lua_pushboolean(L, owns);
  lua_setfield(L, -2, "owns_tables");
  lua_pushboolean(L, super || bypass || owns);
  lua_setfield(L, -2, "can_lower_wall");
  bypass = super || bypass;
  lua_pushstring(L, PQparameterStatus(c->pg, "server_version"));
  lua_setfield(L, -2, "server_version");
  lua_pushinteger(L, PQserverVersion(c->pg));
  lua_setfield(L, -2, "server_version_num");
  lua_pushstring(L, PQuser(c->pg));
  lua_setfield(L, -2, "user");
  lua_pushstring(L, PQdb(c->pg));
  lua_setfield(L, -2, "database");
  lua_pushboolean(L, bypass);
  lua_setfield(L, -2, "rls_bypassed");
  lua_pushstring(L, c->set_local ? "set_local" : "set_config");
  lua_setfield(L, -2, "rls_setting");
  lua_pushboolean(L, c->prepare);
  lua_setfield(L, -2, "prepared");
  lua_pushboolean(L, PQsslInUse(c->pg));
  lua_setfield(L, -2, "ssl");
  lua_pushinteger(L, PQlibVersion());
  lua_setfield(L, -2, "libpq_version");
  return 1;
}

/* db:is_open() -> boolean */
static int conn_is_open(lua_State *L) {
  tdb_Conn *c = luaL_checkudata(L, 1, TDB_CONN_MT);
  lua_pushboolean(L, c->pg != NULL);
  return 1;
}

static const luaL_Reg conn_methods[] = {
  { "close", conn_close },
  { "exec", conn_exec },
  { "query", conn_query },
  { "info", conn_info },
  { "is_open", conn_is_open },
  { NULL, NULL }
};

/* The whole class in one place: methods from conn.c, user.c, identity.c and session.c
 * in one table, which is __index and tododb.core.Connection. */
void tdb_conn_open(lua_State *L) {
  luaL_newmetatable(L, TDB_CONN_MT);
  lua_pushcfunction(L, conn_close);
  lua_setfield(L, -2, "__gc");
#if TDB_HAS_CLOSE
  lua_pushcfunction(L, conn_close);
  lua_setfield(L, -2, "__close");
#endif
  lua_pushcfunction(L, conn_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  luaL_setfuncs(L, conn_methods, 0);
  luaL_setfuncs(L, tdb_conn_user_methods, 0);
  luaL_setfuncs(L, tdb_conn_identity_methods, 0);
  luaL_setfuncs(L, tdb_conn_session_methods, 0);
  lua_pushboolean(L, 1);                /* TDB_AS_JSON */
  luaL_setfuncs(L, tdb_conn_user_json_methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, "Connection");
  lua_pop(L, 1);
  lua_pushcfunction(L, conn_connect);
  lua_setfield(L, -2, "connect");
}
