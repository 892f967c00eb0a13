/* conn.c: Connection — the class, statement cache, pipelined session
 * statements, reconnect, and db:exec / db:query. Connecting is connect.c's,
 * reading values decode.c's. */
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

/* ---- running statements ----------------------------------------------- */

static int result_failed(const PGresult *r) {
  ExecStatusType s = PQresultStatus(r);
  return s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_PIPELINE_SYNC;
}

/* Pushes nil, err for a failed result (or a broken connection). */
static int push_result_error(lua_State *L, tdb_Conn *c, const PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (!alive(c))
    return conn_error(L, c, "unavailable", state, "database connection lost: ",
                      PQerrorMessage(c->pg));
  if (!msg) msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg);
  return conn_error(L, c, tdb_sqlstate_code(state), state, "", msg);
}

/* Queues statement id (preparing it first when needed), noting in cmd what
 * each queued command is: -(id + 1) a prepare, id + 1 the statement. */
static int send_stmt(tdb_Conn *c, int id, const char *const *vals, int *cmd, int *ncmd) {
  const tdb_Sql *q = &tdb_sql[id];
  if (!c->prepare) {
    if (!PQsendQueryParams(c->pg, q->text, q->nparams, NULL, vals, NULL, NULL, TDB_BINARY))
      return 0;
  } else {
    if (!c->prepared[id]) {
      if (!PQsendPrepare(c->pg, q->name, q->text, q->nparams, NULL)) return 0;
      cmd[(*ncmd)++] = -(id + 1);
    }
    if (!PQsendQueryPrepared(c->pg, q->name, q->nparams, vals, NULL, NULL, TDB_BINARY)) return 0;
  }
  cmd[(*ncmd)++] = id + 1;
  return 1;
}

static int has_state(const PGresult *r, const char *state) {
  const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  return s && !strcmp(s, state);
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
 * Inside s:transaction (c->tx) the setting is in force already:
 * run_in_tx sends statements alone. */

static int queue_user_setting(tdb_Conn *c, const char *owner, int *cmd, int *ncmd) {
  char text[96];
  size_t n = strlen(owner);
  if (n == 0 || n > 20 || strspn(owner, "-0123456789") != n) return 0;
  if (!c->set_local) return send_stmt(c, TDB_SQL_SET_CONFIG, &owner, cmd, ncmd);
  if (!send_stmt(c, TDB_SQL_BEGIN, NULL, cmd, ncmd)) return 0;
  snprintf(text, sizeof text, "%s%s'", tdb_sql[TDB_SQL_SET_USER].text, owner);
  if (!PQsendQueryParams(c->pg, text, 0, NULL, NULL, NULL, NULL, 0)) return 0;
  cmd[(*ncmd)++] = 0;
  return 1;
}

/* One pipelined round trip: [BEGIN; SET LOCAL | set_config] [prepare] statement [COMMIT],
 * sync. Returns the statement's result or NULL with *err the first failure
 * (NULL too when the connection broke). A failed transaction block is
 * rolled back (a second round trip, on errors only). */
static PGresult *run_once(tdb_Conn *c, const char *owner, int id,
                          const char *const *vals, double deadline, PGresult **err) {
  int cmd[8], ncmd = 0, i = 0, nulls = 0, block = owner != NULL;
  PGresult *main = NULL;
  *err = NULL;
  c->timed_out = 0;
  if (!PQenterPipelineMode(c->pg)) return NULL;
  if ((!block || queue_user_setting(c, owner, cmd, &ncmd))
      && send_stmt(c, id, vals, cmd, &ncmd) && block && c->set_local)
    (void)send_stmt(c, TDB_SQL_COMMIT, NULL, cmd, &ncmd);
  /* Even after a failed send, sync and drain: the connection must leave
   * pipeline mode idle, or be broken (and reconnected on the next call). */
  if (!PQpipelineSync(c->pg)) ncmd = 0;
  for (;;) {
    PGresult *r;
    if (deadline > 0 && !tdb_wait_result(c->pg, deadline)) {
      /* A hung server: give up on this connection (reopened next call). */
      c->timed_out = c->broken = 1;
      PQclear(main);
      PQclear(*err);
      *err = NULL;
      return NULL;
    }
    r = PQgetResult(c->pg);
    if (!r) {
      if (++nulls > 1) break;          /* nothing more will come */
      i++;
      continue;
    }
    nulls = 0;
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) { PQclear(r); break; }
    if (i < ncmd && cmd[i] < 0 && (!result_failed(r) || has_state(r, "42P05")))
      c->prepared[-cmd[i] - 1] = 1;     /* prepared now, or there already */
    if (result_failed(r)) {
      if (!*err && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) { *err = r; continue; }
    } else if (i < ncmd && cmd[i] == id + 1) {
      PQclear(main);
      main = r;
      continue;
    }
    PQclear(r);
  }
  /* A connection that cannot leave pipeline mode is useless: reconnect. */
  if (!PQexitPipelineMode(c->pg)) c->broken = 1;
  else if (block && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
    PQclear(PQexec(c->pg, tdb_sql[TDB_SQL_ROLLBACK].text));
  if (*err || !main) { PQclear(main); return NULL; }
  return main;
}

static PGresult *run_in_tx(lua_State *L, tdb_Conn *c, int id, const char *const *vals,
                           double deadline);

/* A call that hit c->call_timeout: nil, err pushed; NULL. */
static PGresult *timed_out(lua_State *L, tdb_Conn *c, int id) {
  char msg[256];
  snprintf(msg, sizeof msg, "no answer within %.3g s from host %s%s", c->call_timeout,
           PQhost(c->pg) ? PQhost(c->pg) : "?",
           tdb_sql[id].readonly ? "" : "; the change may have been made");
  conn_error(L, c, "unavailable", NULL, "database timed out: ", msg);
  return NULL;
}

PGresult *tdb_run(lua_State *L, tdb_Conn *c, const char *owner, int id,
                  const char *const *vals) {
  int attempt;
  double deadline = c->call_timeout > 0 ? tdb_now() + c->call_timeout : 0;
  if (c->tx) return run_in_tx(L, c, id, vals, deadline);
  for (attempt = 0; ; attempt++) {
    PGresult *err, *r;
    if (!ensure(L, c)) return NULL;
    r = run_once(c, owner, id, vals, deadline, &err);
    if (r) return r;
    if (c->timed_out) return timed_out(L, c, id);   /* never retried: it may have run */
    if (!alive(c) && tdb_sql[id].readonly && attempt == 0) {
      PQclear(err);                     /* a read may be retried once */
      continue;
    }
    /* The server lost our prepared statements (a pooler's DISCARD ALL, a
     * DEALLOCATE) or already has one: the statement did not run, so any
     * statement may be prepared afresh and tried once more. */
    if (alive(c) && attempt == 0 && (has_state(err, "26000") || has_state(err, "42P05"))) {
      if (has_state(err, "26000")) memset(c->prepared, 0, sizeof c->prepared);
      PQclear(err);
      continue;
    }
    push_result_error(L, c, err);
    PQclear(err);
    return NULL;
  }
}

/* ---- explicit transactions: s:transaction and s:batch (session.c) ------ */

static int is_conflict(const PGresult *r) {
  return has_state(r, "40001") || has_state(r, "40P01");
}

/* A statement inside s:transaction: the RLS setting is in force already, and
 * a failure is final (the transaction is aborted; a new connection would not
 * hold it). */
static PGresult *run_in_tx(lua_State *L, tdb_Conn *c, int id, const char *const *vals,
                           double deadline) {
  PGresult *err = NULL, *r;
  if (alive(c) && (r = run_once(c, NULL, id, vals, deadline, &err)) != NULL) return r;
  if (c->timed_out) return timed_out(L, c, id);
  if (is_conflict(err)) c->tx_conflict = 1;
  push_result_error(L, c, err);
  PQclear(err);
  return NULL;
}

PGresult *tdb_exec(lua_State *L, tdb_Conn *c, const char *sql) {
  PGresult *r;
  if (c->tx ? !alive(c) : !ensure(L, c)) {
    if (c->tx) push_result_error(L, c, NULL);
    return NULL;
  }
  r = PQexec(c->pg, sql);
  if (r && !result_failed(r)) return r;
  if (c->tx && is_conflict(r)) c->tx_conflict = 1;
  push_result_error(L, c, r);
  PQclear(r);
  return NULL;
}

int tdb_run_batch(lua_State *L, tdb_Conn *c, const char *const *head, int nhead,
                  int n, const int *ids, const char *const *const *vals,
                  const char *tail, PGresult **res) {
  /* what[k] for the k-th queued command: a statement index (>= 0), -1 for
   * head or tail, -2 - id for the prepare of statement id. */
  int *what, nwhat = 0, i, k = 0, nulls = 0, failed = -1, sent = 0;
  PGresult *err = NULL;
  for (i = 0; i < n; i++) res[i] = NULL;
  if (c->tx ? !alive(c) : !ensure(L, c)) {
    if (c->tx) push_result_error(L, c, NULL);
    return n;
  }
  what = malloc(sizeof *what * (size_t)(nhead + n + 1 + TDB_NSQL));
  if (!what) return luaL_error(L, "out of memory");
  if (!PQenterPipelineMode(c->pg)) goto done;
  for (i = 0; i < nhead; i++) {
    if (!PQsendQueryParams(c->pg, head[i], 0, NULL, NULL, NULL, NULL, 0)) goto sync;
    what[nwhat++] = -1;
  }
  for (i = 0; c->prepare && i < n; i++)  /* each statement prepared once */
    if (!c->prepared[ids[i]]) {
      if (!PQsendPrepare(c->pg, tdb_sql[ids[i]].name, tdb_sql[ids[i]].text,
                         tdb_sql[ids[i]].nparams, NULL)) goto sync;
      c->prepared[ids[i]] = 2;          /* queued: its result decides */
      what[nwhat++] = -2 - ids[i];
    }
  for (i = 0; i < n; i++) {
    const tdb_Sql *q = &tdb_sql[ids[i]];
    if (!(c->prepare
          ? PQsendQueryPrepared(c->pg, q->name, q->nparams, vals[i], NULL, NULL, TDB_BINARY)
          : PQsendQueryParams(c->pg, q->text, q->nparams, NULL, vals[i], NULL, NULL, TDB_BINARY)))
      goto sync;
    what[nwhat++] = i;
  }
  if (tail) {
    if (!PQsendQueryParams(c->pg, tail, 0, NULL, NULL, NULL, NULL, 0)) goto sync;
    what[nwhat++] = -1;
  }
  sent = 1;
sync:
  /* As in run_once: always sync and drain, so pipeline mode ends idle. */
  if (!PQpipelineSync(c->pg)) nwhat = sent = 0;
  for (;;) {
    PGresult *r = PQgetResult(c->pg);
    int w = k < nwhat ? what[k] : -1;
    if (!r) {
      if (++nulls > 1) break;
      k++;
      continue;
    }
    nulls = 0;
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) { PQclear(r); break; }
    if (w <= -2) c->prepared[-w - 2] = !result_failed(r) || has_state(r, "42P05");
    if (result_failed(r)) {
      if (!err && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
        err = r;
        failed = w >= 0 ? w : n;
        continue;
      }
    } else if (w >= 0 && !res[w]) {
      res[w] = r;
      continue;
    }
    PQclear(r);
  }
  if (!PQexitPipelineMode(c->pg)) c->broken = 1;
done:
  free(what);
  for (i = 0; i < TDB_NSQL; i++)        /* prepares never answered */
    if (c->prepared[i] == 2) c->prepared[i] = 0;
  for (i = 0; i < n && failed < 0; i++) if (!res[i]) failed = n;
  if (!sent || !alive(c)) failed = failed < 0 ? n : failed;
  if (failed < 0) return -1;
  if (c->tx && is_conflict(err)) c->tx_conflict = 1;
  push_result_error(L, c, err);
  PQclear(err);
  for (i = 0; i < n; i++) { PQclear(res[i]); res[i] = NULL; }
  return failed;
}

/* ---- db:exec, db:query, db:info ----------------------------------------- */

/* db:exec(sql) -> true | nil, err   (simple protocol; several statements) */
static int conn_exec(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  PGresult *r;
  if (!ensure(L, c)) return 2;
  r = PQexec(c->pg, sql);
  if (!r || result_failed(r)) {
    push_result_error(L, c, r);
    PQclear(r);
    return 2;
  }
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
      if (tdb_to_int64(L, i, &v)) snprintf(buf, sizeof buf, "%lld", v);
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

/* db:query(sql, ...) -> rows, count | nil, err
 * $n parameters from the extra arguments (nil or tododb.null is NULL).
 * rows: array of tables keyed by column name; count: rows affected. */
static int conn_query(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  int n = lua_gettop(L) - 2, base, named = 0;
  const char **vals;
  PGresult *r;
  char name[64];
  if (n > 1000) tdb_argerror(L, 3, "at most 1000 parameters, got %d", n);
  if (!ensure(L, c)) return 2;
  luaL_checkstack(L, n + 8, "too many parameters");
  vals = lua_newuserdata(L, sizeof *vals * (size_t)(n > 0 ? n : 1));
  base = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    push_param(L, 3 + i);
    vals[i] = lua_tostring(L, -1);
  }
  /* Statement cache: sql -> name. A name holds this client's random nonce,
   * so behind a transaction pooler a server session prepared by another
   * client can never run its statement for ours: ours is missing there
   * (an error, 26000), never a different one under the same name. */
  if (c->prepare) {
    tdb_getuservalue(L, 1);
    lua_getfield(L, -1, sql);
    snprintf(name, sizeof name, "tdb_q%016llx_%u_", c->nonce, c->generation);
    if (lua_isstring(L, -1) && !strncmp(lua_tostring(L, -1), name, strlen(name))) {
      snprintf(name, sizeof name, "%s", lua_tostring(L, -1));
      named = 1;
    } else if (c->nadhoc < MAX_ADHOC) {
      PGresult *p;
      snprintf(name, sizeof name, "tdb_q%016llx_%u_%d", c->nonce, c->generation, c->nadhoc + 1);
      p = PQprepare(c->pg, name, sql, n, NULL);
      if (!p || result_failed(p)) {
        push_result_error(L, c, p);
        PQclear(p);
        return 2;
      }
      PQclear(p);
      c->nadhoc++;
      lua_pushstring(L, name);
      lua_setfield(L, -3, sql);
      named = 1;
    }
    lua_pop(L, 2);
  }
  r = named ? PQexecPrepared(c->pg, name, n, vals, NULL, NULL, 0)
            : PQexecParams(c->pg, sql, n, NULL, vals, NULL, NULL, 0);
  if (!r || result_failed(r)) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (named && state && !strcmp(state, "26000")) {
      tdb_getuservalue(L, 1);           /* the server forgot it: forget it too */
      lua_pushnil(L);
      lua_setfield(L, -2, sql);
      lua_pop(L, 1);
    }
    push_result_error(L, c, r);
    PQclear(r);
    return 2;
  }
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
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, "Connection");
  lua_pop(L, 1);
  lua_pushcfunction(L, conn_connect);
  lua_setfield(L, -2, "connect");
}
