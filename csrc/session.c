/* session.c: Session — (connection, user id). Every todo operation lives
 * here; each statement carries user_id = $1 and runs with tododb.user_id
 * set transaction-locally in the same pipeline (tdb_run). */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "tdb.h"

#define LIMIT_DEFAULT 50
#define LIMIT_MAX 200
#define SEARCH_MAX 200
#define CURSOR_BYTES 18               /* version, flags, last id, MAC */
#define CURSOR_VERSION 1

typedef struct tdb_Session {
  tdb_Conn *conn;                      /* kept alive by the uservalue */
  long long user_id;
  char owner[24];                      /* user_id in decimal, for $1 */
  int tx;                              /* 1: a transaction's session; -1: it ended */
} tdb_Session;

/* Cursors carry a MAC over (user, filters, position) so that a changed or
 * foreign cursor is refused. With a per-deployment secret (opts.cursor_key or
 * $TODODB_CURSOR_KEY) only the deployment can make one. Without it the key is
 * this public constant: the MAC is then a checksum anyone can compute — still
 * harmless, as a cursor is applied only inside its owner's rows. */
static const unsigned char public_cursor_key[crypto_generichash_KEYBYTES] =
  "tododb public cursor checksum 1";
#define CURSOR_KEY_MIN 32

/* Derives the 32-byte MAC key of a secret into c (at most TDB_CURSOR_KEYS). */
static void add_cursor_key(tdb_Conn *c, const char *k, size_t n) {
  crypto_generichash(c->cursor_keys[c->ncursor_keys++], crypto_generichash_KEYBYTES,
                     (const unsigned char *)k, n, NULL, 0);
}

/* One secret at stack index idx: a string of at least 32 bytes, else raises. */
static void check_cursor_key(lua_State *L, int idx, int arg, tdb_Conn *c) {
  size_t n;
  const char *k;
  if (lua_type(L, idx) != LUA_TSTRING)
    tdb_argerror(L, arg, "cursor_key must be a string or an array of strings, got %s",
                 luaL_typename(L, idx));
  k = lua_tolstring(L, idx, &n);
  if (n < CURSOR_KEY_MIN) tdb_argerror(L, arg, "cursor_key must be at least 32 bytes");
  add_cursor_key(c, k, n);
}

void tdb_cursor_config(lua_State *L, int idx, tdb_Conn *c) {
  const char *env;
  c->ncursor_keys = 0;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "cursor_key");
    if (lua_istable(L, -1)) {               /* { current, previous … } */
      int n = (int)tdb_rawlen(L, -1);
      if (n < 1 || n > TDB_CURSOR_KEYS)
        tdb_argerror(L, idx, "cursor_key must list 1 to %d keys", TDB_CURSOR_KEYS);
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        check_cursor_key(L, -1, idx, c);
        lua_pop(L, 1);
      }
    } else if (!lua_isnil(L, -1))
      check_cursor_key(L, -1, idx, c);
    lua_pop(L, 1);
    if (c->ncursor_keys) return;
  }
  /* $TODODB_CURSOR_KEY, then $TODODB_CURSOR_KEY_PREVIOUS during a rotation. */
  for (int i = 0; i < 2; i++) {
    const char *name = i ? "TODODB_CURSOR_KEY_PREVIOUS" : "TODODB_CURSOR_KEY";
    if ((env = getenv(name)) == NULL || !*env || (i && !c->ncursor_keys)) continue;
    if (strlen(env) < CURSOR_KEY_MIN) luaL_error(L, "%s must be at least 32 bytes", name);
    add_cursor_key(c, env, strlen(env));
  }
}

/* The session at idx and its open connection (raises when closed). */
static tdb_Session *check_session(lua_State *L, int idx, tdb_Conn **c) {
  tdb_Session *s = luaL_checkudata(L, idx, TDB_SESSION_MT);
  if (!s->conn->pg) tdb_argerror(L, idx, "connection is closed");
  if (s->conn->tx != s) {              /* no call may slip into a transaction */
    if (s->tx) tdb_argerror(L, idx, "transaction is over: use it inside its function only");
    if (s->conn->tx)
      tdb_argerror(L, idx, "connection is inside a transaction: use the transaction's session");
  }
  *c = s->conn;
  return s;
}

static int not_found(lua_State *L) {
  return tdb_push_error(L, "not_found", NULL, NULL, "todo not found");
}

/* Reads a todo id: 0 ok (decimal in buf); else nil, err pushed (2). */
static int read_id(lua_State *L, int idx, char *buf) {
  long long id;
  if (tdb_check_id(L, idx, "todo", &id)) return 2;
  (void)tdb_int8_text(buf, id);
  return 0;
}

/* Type checks raise: these are programming errors, not bad data. The value
 * at idx is field what of argument arg; nil passes. */
static void check_type(lua_State *L, int arg, int idx, int type, const char *what,
                       int nullable) {
  int t = lua_type(L, idx);
  if (t == type || t == LUA_TNIL || (nullable && tdb_is_null(L, idx))) return;
  tdb_argerror(L, arg, "%s must be a %s, got %s", what, lua_typename(L, type),
               luaL_typename(L, idx));
}

/* Pushes the validated, trimmed title of the table at t (argument arg);
 * NULL and nil, err pushed on bad input. Raises when title is not a string. */
static const char *push_title(lua_State *L, int arg, int t) {
  size_t n;
  const char *s, *msg;
  lua_getfield(L, t, "title");
  if (lua_type(L, -1) != LUA_TSTRING)
    tdb_argerror(L, arg, "title must be a string, got %s", luaL_typename(L, -1));
  s = lua_tolstring(L, -1, &n);
  if ((msg = tdb_check_title(&s, &n)) != NULL) {
    lua_pop(L, 1);
    tdb_push_error(L, "invalid", "title", NULL, "%s", msg);
    return NULL;
  }
  lua_pushlstring(L, s, n);
  lua_remove(L, -2);
  return lua_tostring(L, -1);
}

/* Checks the description field of the table at t, argument arg (left on
 * the stack). 0 ok, 2 with nil, err pushed. *out: NULL for none/cleared. */
static int read_description(lua_State *L, int arg, int t, const char **out, int *present) {
  size_t n;
  const char *msg;
  lua_getfield(L, t, "description");
  check_type(L, arg, -1, LUA_TSTRING, "description", 1);
  *present = !lua_isnil(L, -1);
  *out = NULL;
  if (lua_type(L, -1) != LUA_TSTRING) return 0;
  *out = lua_tolstring(L, -1, &n);
  if ((msg = tdb_check_description(*out, n)) != NULL)
    return tdb_push_error(L, "invalid", "description", NULL, "%s", msg);
  if (n == 0) *out = NULL;             /* "" clears, like tododb.null */
  return 0;
}

/* Reads the boolean field k of table t, argument arg: "t", "f" or NULL
 * when absent. */
static const char *read_bool(lua_State *L, int arg, int t, const char *k) {
  const char *v;
  lua_getfield(L, t, k);
  check_type(L, arg, -1, LUA_TBOOLEAN, k, 0);
  v = lua_isnil(L, -1) ? NULL : lua_toboolean(L, -1) ? "t" : "f";
  lua_pop(L, 1);
  return v;
}

/* Returns a one-row result as a Todo (its JSON in a *_json call), or
 * not_found for none. */
static int one_todo(lua_State *L, PGresult *r) {
  int n;
  if (!r) return 2;
  if (PQntuples(r) == 0) { PQclear(r); return not_found(L); }
  n = tdb_push_row(L, &tdb_todo_class, r);
  PQclear(r);
  return n;
}

/* Pushes the number of rows a statement touched. */
static int touched(lua_State *L, PGresult *r) {
  if (!r) return 2;
  tdb_push_int64(L, tdb_parse_int8(PQcmdTuples(r)));
  PQclear(r);
  return 1;
}

/* Sessions need a role that row-level security applies to; the first
 * session of a connection checks (one query), unless opts.allow_rls_bypass.
 * 0 ok, 2 with nil, err pushed; raises for a role that bypasses it. */
static int check_role(lua_State *L, tdb_Conn *c) {
  int super, bypass, owns;
  if (c->role_ok || c->allow_rls_bypass) return 0;
  if (tdb_role_powers(L, c, &super, &bypass, &owns)) return 2;
  if (super || bypass)
    return luaL_error(L, "tododb: no sessions on role %s: it is %s, so row-level security does "
                      "not apply to it; connect as the runtime role (README: Security), or "
                      "pass allow_rls_bypass = true", PQuser(c->pg),
                      super ? "a superuser"
                            : "BYPASSRLS (itself or through a role it can SET ROLE to)");
  c->role_ok = 1;
  return 0;
}

/* db:session(user_or_id) -> Session | nil, err (the connection's first
 * session checks its role) */
static int session_new(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  long long id;
  tdb_Session *s;
  if (tdb_check_user_id(L, 2, &id) || check_role(L, c)) return 2;
  s = tdb_newudata(L, sizeof *s);
  s->conn = c;
  s->user_id = id;
  s->tx = 0;
  (void)tdb_int8_text(s->owner, id);
  luaL_setmetatable(L, TDB_SESSION_MT);
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  tdb_setuservalue(L, -2);
  return 1;
}

/* s:create_todo{ title =, description =, completed = } -> Todo | nil, err */
static int session_create(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  const char *vals[4];
  int present;
  luaL_checktype(L, 2, LUA_TTABLE);
  vals[0] = s->owner;
  if ((vals[1] = push_title(L, 2, 2)) == NULL) return 2;
  if (read_description(L, 2, 2, &vals[2], &present)) return 2;
  vals[3] = read_bool(L, 2, 2, "completed");
  return one_todo(L, tdb_run(L, c, s->owner, TDB_SQL_TODO_INSERT, vals));
}

/* Statement stmt on (owner, id), returning the todo. */
static int todo_by_id(lua_State *L, int stmt) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  char id[24];
  const char *vals[2] = { s->owner, id };
  if (read_id(L, 2, id)) return 2;
  return one_todo(L, tdb_run(L, c, s->owner, stmt, vals));
}

/* s:get_todo(id) -> Todo | nil, err */
static int session_get(lua_State *L) { return todo_by_id(L, TDB_SQL_TODO_GET); }

/* s:toggle_todo(id) -> Todo | nil, err */
static int session_toggle(lua_State *L) { return todo_by_id(L, TDB_SQL_TODO_TOGGLE); }

/* Reads the changes in table t (argument arg) into vals[2..6] of TDB_SQL_TODO_UPDATE (set
 * to "f", NULL, "f", NULL, NULL by the caller), leaving strings it made on
 * the stack. 0 ok, 2 with nil, err pushed. */
static int change_vals(lua_State *L, int arg, int t, const char **vals) {
  int present;
  lua_getfield(L, t, "title");
  if (!lua_isnil(L, -1)) {             /* a title change */
    if ((vals[3] = push_title(L, arg, t)) == NULL) return 2;
    vals[2] = "t";
  }
  if (read_description(L, arg, t, &vals[5], &present)) return 2;
  if (present) vals[4] = "t";
  vals[6] = read_bool(L, arg, t, "completed");
  return 0;
}

/* s:update_todo(id, { title =, description =, completed = }) -> Todo | nil, err
 * description = "" or tododb.null clears it. */
static int session_update(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  char id[24];
  const char *vals[7] = { s->owner, id, "f", NULL, "f", NULL, NULL };
  int any = 0;
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "title") && strcmp(k, "description") && strcmp(k, "completed"))
      tdb_argerror(L, 3, "unknown field '%s'",
                   lua_type(L, -2) == LUA_TSTRING ? k : luaL_typename(L, -2));
    any = 1;
    lua_pop(L, 1);
  }
  if (read_id(L, 2, id)) return 2;
  if (!any) return tdb_push_error(L, "invalid", NULL, NULL, "nothing to update");
  if (change_vals(L, 3, 3, vals)) return 2;
  return one_todo(L, tdb_run(L, c, s->owner, TDB_SQL_TODO_UPDATE, vals));
}

/* s:delete_todo(id) -> true | nil, err */
static int session_delete(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  char id[24];
  const char *vals[2] = { s->owner, id };
  PGresult *r;
  int gone;
  if (read_id(L, 2, id)) return 2;
  if ((r = tdb_run(L, c, s->owner, TDB_SQL_TODO_DELETE, vals)) == NULL) return 2;
  gone = tdb_parse_int8(PQcmdTuples(r)) == 1;
  PQclear(r);
  if (!gone) return not_found(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- listing ------------------------------------------------------------ */

/* The MAC under key k (k NULL: the connection's current key). */
static void cursor_mac(const tdb_Session *s, const unsigned char *k, const unsigned char *head,
                       const char *search, size_t n, unsigned char *mac) {
  crypto_generichash_state st;
  unsigned char uid[8];
  for (int i = 0; i < 8; i++) uid[i] = (unsigned char)((unsigned long long)s->user_id >> (56 - 8 * i));
  if (!k) k = s->conn->ncursor_keys ? s->conn->cursor_keys[0] : public_cursor_key;
  crypto_generichash_init(&st, k, crypto_generichash_KEYBYTES, 8);
  crypto_generichash_update(&st, uid, sizeof uid);
  crypto_generichash_update(&st, head, 10);
  crypto_generichash_update(&st, (const unsigned char *)search, n);
  crypto_generichash_final(&st, mac, 8);
}

#define CURSOR_TEXT sodium_base64_ENCODED_LEN(CURSOR_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)

/* The cursor after id `last` into out[CURSOR_TEXT] (NUL-terminated). */
static void make_cursor(const tdb_Session *s, int flags, long long last, const char *search,
                        size_t n, char *out) {
  unsigned char b[CURSOR_BYTES];
  b[0] = CURSOR_VERSION;
  b[1] = (unsigned char)flags;
  for (int i = 0; i < 8; i++) b[2 + i] = (unsigned char)((unsigned long long)last >> (56 - 8 * i));
  cursor_mac(s, NULL, b, search, n, b + 10);
  sodium_bin2base64(out, CURSOR_TEXT, b, sizeof b, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* Decodes a cursor made for this user and these filters. 1 ok. */
static int read_cursor(const tdb_Session *s, const char *cur, size_t len, int flags,
                       const char *search, size_t n, long long *last) {
  unsigned char b[CURSOR_BYTES], mac[8];
  size_t got;
  unsigned long long v = 0;
  if (len > 64 || sodium_base642bin(b, sizeof b, cur, len, NULL, &got, NULL,
                                    sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0
      || got != CURSOR_BYTES || b[0] != CURSOR_VERSION || b[1] != flags)
    return 0;
  for (int k = 0; ; k++) {             /* the current key, then older ones */
    cursor_mac(s, k < s->conn->ncursor_keys ? s->conn->cursor_keys[k] : NULL, b, search, n, mac);
    if (sodium_memcmp(mac, b + 10, 8) == 0) break;
    if (k + 1 >= s->conn->ncursor_keys) return 0;
  }
  for (int i = 0; i < 8; i++) v = (v << 8) | b[2 + i];
  if (v > (unsigned long long)LLONG_MAX) return 0;
  *last = (long long)v;
  return 1;
}

/* The JSON of a page: {"items":[todo…],"next":cursor|null} from the first
 * n rows of r (next null on the last page). Returns what session_list does. */
static int page_json(lua_State *L, const PGresult *r, int n, const char *next) {
  tdb_Buf b;
  int ok = 1;
  tdb_buf_init(L, &b, TDB_JSON_MAX);
  tdb_json_open(&b, '{');
  tdb_json_key(&b, "items");
  tdb_json_open(&b, '[');
  for (int i = 0; i < n && ok; i++) ok = tdb_json_row(&b, &tdb_todo_class, r, i);
  tdb_json_close(&b, ']');
  tdb_json_key(&b, "next");
  if (next) (void)tdb_json_str(&b, next, strlen(next));
  else tdb_json_null(&b);
  tdb_json_close(&b, '}');
  return tdb_json_done(&b, ok);
}

/* s:list_todos{ completed =, search =, order = "newest"|"oldest", limit =, after = }
 *   -> { items = { Todo… }, next = cursor | nil } | nil, err
 * s:list_todos_json{ … } -> '{"items":[…],"next":cursor|null}' | nil, err
 * Keyset pagination on id (creation order); the cursor is opaque. */
static int session_list(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  const char *vals[5], *search = NULL, *done;
  size_t sn = 0;
  long long limit = LIMIT_DEFAULT, last;
  int oldest = 0, flags, id, nrows, ret = 1;
  char bound[24], lim[24], cursor[CURSOR_TEXT];
  PGresult *r;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  else { lua_settop(L, 1); lua_newtable(L); }
  done = read_bool(L, 2, 2, "completed");
  lua_getfield(L, 2, "order");
  check_type(L, 2, -1, LUA_TSTRING, "order", 0);
  if (lua_isstring(L, -1)) {
    const char *o = lua_tostring(L, -1);
    if (!strcmp(o, "oldest")) oldest = 1;
    else if (strcmp(o, "newest"))
      return tdb_push_error(L, "invalid", "order", NULL, "order must be \"newest\" or \"oldest\"");
  }
  if (tdb_check_int_field(L, 2, "limit", 0, 1, LIMIT_MAX, &limit)) return 2;
  lua_getfield(L, 2, "search");
  check_type(L, 2, -1, LUA_TSTRING, "search", 0);
  if (lua_isstring(L, -1)) {
    long chars;
    search = lua_tolstring(L, -1, &sn);
    if ((chars = tdb_utf8_len(search, sn)) < 0 || chars > SEARCH_MAX)
      return tdb_push_error(L, "invalid", "search", NULL,
                            "search must be valid UTF-8 of at most 200 characters");
  }
  flags = oldest | (done ? (done[0] == 't' ? 2 : 4) : 0);
  last = oldest ? 0 : LLONG_MAX;
  lua_getfield(L, 2, "after");
  check_type(L, 2, -1, LUA_TSTRING, "after", 0);
  if (lua_isstring(L, -1)) {
    size_t cn;
    const char *cur = lua_tolstring(L, -1, &cn);
    if (!read_cursor(s, cur, cn, flags, search ? search : "", sn, &last))
      return tdb_push_error(L, "invalid", "after", NULL,
                            "cursor is malformed or was made for other filters");
  }
  if (search && sn > 0) {               /* substring match; % _ \ literal */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '%');
    for (size_t i = 0; i < sn; i++) {
      if (search[i] == '%' || search[i] == '_' || search[i] == '\\') luaL_addchar(&b, '\\');
      luaL_addchar(&b, search[i]);
    }
    luaL_addchar(&b, '%');
    luaL_pushresult(&b);
  } else lua_pushnil(L);
  (void)tdb_int8_text(bound, last);
  (void)tdb_int8_text(lim, limit + 1);
  vals[0] = s->owner;
  vals[1] = bound;
  vals[2] = lua_tostring(L, -1);
  vals[3] = lim;
  vals[4] = done;
  id = done ? (oldest ? TDB_SQL_TODO_LIST_OLD_F : TDB_SQL_TODO_LIST_NEW_F)
            : (oldest ? TDB_SQL_TODO_LIST_OLD : TDB_SQL_TODO_LIST_NEW);
  if ((r = tdb_run(L, c, s->owner, id, vals)) == NULL) return 2;
  nrows = PQntuples(r);
  if (nrows > limit) {                  /* one row more than asked: a next page */
    make_cursor(s, flags, tdb_get_int8(r, (int)limit - 1, TDB_TODO_ID), search ? search : "",
                sn, cursor);
    nrows = (int)limit;
  }
  if (TDB_AS_JSON(L)) ret = page_json(L, r, nrows, nrows < PQntuples(r) ? cursor : NULL);
  else {
    lua_createtable(L, 0, 2);
    lua_createtable(L, nrows, 0);
    for (int i = 0; i < nrows; i++) {
      tdb_push_todo(L, r, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "items");
    if (nrows < PQntuples(r)) {
      lua_pushstring(L, cursor);
      lua_setfield(L, -2, "next");
    }
  }
  PQclear(r);
  return ret;
}

/* s:count_todos{ completed = } -> number | nil, err */
static int session_count(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  const char *vals[2] = { s->owner, NULL };
  PGresult *r;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    vals[1] = read_bool(L, 2, 2, "completed");
  }
  if ((r = tdb_run(L, c, s->owner, TDB_SQL_TODO_COUNT, vals)) == NULL) return 2;
  tdb_push_int64(L, tdb_get_int8(r, 0, 0));
  PQclear(r);
  return 1;
}

/* A bulk statement on all of the owner's todos; returns rows touched. */
static int bulk(lua_State *L, int stmt) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  const char *vals[1] = { s->owner };
  return touched(L, tdb_run(L, c, s->owner, stmt, vals));
}

/* s:complete_all() -> number of todos completed now | nil, err */
static int session_complete_all(lua_State *L) { return bulk(L, TDB_SQL_TODO_COMPLETE_ALL); }

/* s:delete_completed() -> number of todos deleted | nil, err */
static int session_delete_completed(lua_State *L) { return bulk(L, TDB_SQL_TODO_DELETE_DONE); }

/* ---- bulk insert ---------------------------------------------------------- */

/* Appends s as a quoted element of a PostgreSQL array literal. */
static void add_element(luaL_Buffer *b, const char *s, size_t n) {
  luaL_addchar(b, '"');
  while (n > 0) {                       /* runs without quotes in one go */
    size_t run = strcspn(s, "\"\\");
    if (run > n) run = n;
    luaL_addlstring(b, s, run);
    if (run == n) break;
    luaL_addchar(b, '\\');
    luaL_addchar(b, s[run]);
    s += run + 1;
    n -= run + 1;
  }
  luaL_addchar(b, '"');
}

static int item_error(lua_State *L, int i) {
  lua_getfield(L, -1, "message");
  lua_pushfstring(L, "item %d: %s", i, lua_tostring(L, -1));
  lua_setfield(L, -3, "message");
  lua_pop(L, 1);
  lua_pushinteger(L, i);
  lua_setfield(L, -2, "index");
  return 2;
}

/* s:create_todos{ {title=, description=, completed=}, … } -> count | nil, err
 * One statement: all rows or none. err.index names the first bad item. */
static int session_create_many(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  const char *vals[4];
  PGresult *r;
  int n, i, present;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)tdb_rawlen(L, 2);
  lua_settop(L, 2);
  for (i = 1; i <= n; i++) {             /* validate everything first */
    const char *d;
    lua_rawgeti(L, 2, i);
    /* Plain tables only: the second pass relies on the items keeping
     * their strings alive, which a proxy's __index need not do. */
    if (!lua_istable(L, -1) || lua_getmetatable(L, -1))
      tdb_argerror(L, 2, "item %d must be a plain table", i);
    if (!push_title(L, 2, 3) || read_description(L, 2, 3, &d, &present)) return item_error(L, i);
    (void)read_bool(L, 2, 3, "completed");
    lua_settop(L, 2);
  }
  if (n == 0) { lua_pushinteger(L, 0); return 1; }
  for (int col = 0; col < 3; col++) {    /* one array literal per column */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '{');
    for (i = 1; i <= n; i++) {
      const char *v;
      size_t len = 0;
      lua_rawgeti(L, 2, i);
      lua_getfield(L, -1, col == 0 ? "title" : col == 1 ? "description" : "completed");
      if (col == 0) {
        v = lua_tolstring(L, -1, &len);
        (void)tdb_check_title(&v, &len);
      } else if (col == 1)
        v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
      else
        v = lua_isboolean(L, -1) ? (lua_toboolean(L, -1) ? "t" : "f") : NULL;
      lua_pop(L, 2);                     /* the list still holds the strings */
      if (i > 1) luaL_addchar(&b, ',');
      if (!v || (col == 1 && len == 0)) luaL_addstring(&b, "NULL");
      else if (col == 2) luaL_addstring(&b, v);
      else add_element(&b, v, len);
    }
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
  }
  vals[0] = s->owner;
  vals[1] = lua_tostring(L, 3);
  vals[2] = lua_tostring(L, 4);
  vals[3] = lua_tostring(L, 5);
  if ((r = tdb_run(L, c, s->owner, TDB_SQL_TODO_INSERT_MANY, vals)) == NULL) return 2;
  tdb_push_int64(L, tdb_get_int8(r, 0, 0));   /* the statement counts the rows */
  PQclear(r);
  return 1;
}

/* ---- transactions and batches ------------------------------------------- */

#define RETRIES_MAX 100
#define BATCH_MAX 1000

static int conflict_state(const char *st) {
  return st && (!strcmp(st, "40001") || !strcmp(st, "40P01"));
}

/* Is the value at idx an error whose sqlstate is a serialization failure or
 * a deadlock? */
static int is_conflict(lua_State *L, int idx) {
  int yes = 0;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "sqlstate");
    yes = lua_type(L, -1) == LUA_TSTRING && conflict_state(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return yes;
}

/* Runs transaction-control text; 1 ok, 0 with nil, err pushed. */
static int tx_exec(lua_State *L, tdb_Conn *c, const char *sql) {
  PGresult *r;
  if (!c->pg) {
    tdb_push_error(L, "unavailable", NULL, NULL, "connection was closed in the transaction");
    return 0;
  }
  if ((r = tdb_exec(L, c, sql)) == NULL) return 0;
  PQclear(r);
  return 1;
}

/* COMMIT: 1 ok, 0 with nil, err pushed, also when the server rolled back
 * instead (a statement had failed and fn went on regardless). */
static int tx_commit(lua_State *L, tdb_Conn *c) {
  PGresult *r;
  int committed;
  if (!c->pg) return tx_exec(L, c, NULL);
  if ((r = tdb_exec(L, c, tdb_tx_sql[TDB_TX_COMMIT])) == NULL) return 0;
  committed = !strcmp(PQcmdStatus(r), "COMMIT");
  PQclear(r);
  if (committed) return 1;
  tdb_push_error(L, "internal", NULL, "25P02", "transaction rolled back: a statement in it "
                 "failed and the function went on");
  return 0;
}

/* Ends the transaction: rolls back (or back to the savepoint) unless it was
 * committed; a rollback that fails leaves the connection to be re-made. */
static void tx_abort(lua_State *L, tdb_Conn *c, int nested) {
  if (c->pg && !tx_exec(L, c, tdb_tx_sql[nested ? TDB_TX_ROLLBACK_TO : TDB_TX_ROLLBACK])) {
    lua_pop(L, 2);
    c->broken = 1;
  }
}

/* After fn ran under lua_pcall (status st) with results from base to the top:
 * 1 to commit, 0 to roll back (raised, or returned nil|false, err). */
static int fn_succeeded(lua_State *L, int st, int base) {
  if (st != LUA_OK) return 0;
  return lua_gettop(L) < base + 1 || lua_toboolean(L, base) || lua_isnoneornil(L, base + 1);
}

/* Returns what fn left from base: its results after a commit (true when it
 * returned nothing), nil, err after a rollback; re-raises what it raised. */
static int tx_return(lua_State *L, int st, int base) {
  if (st != LUA_OK) return lua_error(L);
  if (lua_gettop(L) < base) { lua_pushboolean(L, 1); return 1; }
  return lua_gettop(L) - base + 1;
}

/* tx:transaction(fn): a savepoint inside the open transaction. */
static int savepoint(lua_State *L, tdb_Conn *c) {
  int st, ok;
  if (!tx_exec(L, c, tdb_tx_sql[TDB_TX_SAVEPOINT])) return 2;
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  ok = fn_succeeded(L, st, 4);
  if (ok && !tx_exec(L, c, tdb_tx_sql[TDB_TX_RELEASE])) return 2;
  if (!ok) tx_abort(L, c, 1);
  return tx_return(L, st, 4);
}

/* Reads opts at 3: *retries and the BEGIN text. Raises on misuse; 0 ok,
 * 2 with nil, err pushed for a bad value. */
static int tx_options(lua_State *L, int nested, long long *retries, const char **begin) {
  *retries = 0;
  *begin = tdb_tx_sql[TDB_TX_BEGIN];
  if (lua_isnoneornil(L, 3)) return 0;
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "retries") && strcmp(k, "isolation"))
      tdb_argerror(L, 3, "unknown option '%s'",
                   lua_type(L, -2) == LUA_TSTRING ? k : luaL_typename(L, -2));
    if (nested) tdb_argerror(L, 3, "options apply to the outermost transaction only");
    lua_pop(L, 1);
  }
  lua_getfield(L, 3, "retries");
  check_type(L, 3, -1, LUA_TNUMBER, "retries", 0);
  if (!lua_isnil(L, -1) && (tdb_to_int64(L, -1, retries) != 1 || *retries < 0
                            || *retries > RETRIES_MAX))
    return tdb_push_error(L, "invalid", "retries", NULL,
                          "retries must be an integer from 0 to %d", RETRIES_MAX);
  lua_getfield(L, 3, "isolation");
  check_type(L, 3, -1, LUA_TSTRING, "isolation", 0);
  if (lua_isstring(L, -1)) {
    const char *v = lua_tostring(L, -1);
    if (!strcmp(v, "repeatable read")) *begin = tdb_tx_sql[TDB_TX_BEGIN_RR];
    else if (!strcmp(v, "serializable")) *begin = tdb_tx_sql[TDB_TX_BEGIN_SER];
    else if (strcmp(v, "read committed"))
      return tdb_push_error(L, "invalid", "isolation", NULL, "isolation must be "
                            "\"read committed\", \"repeatable read\" or \"serializable\"");
  }
  lua_pop(L, 2);
  return 0;
}

/* s:transaction(fn [, { retries =, isolation = }]) -> fn's results | nil, err
 * fn(tx) runs inside BEGIN … COMMIT with the row-level security setting in
 * force throughout; tx has the session's methods. Raising or returning
 * nil, err rolls back. A conflict (40001, 40P01) reruns fn up to `retries`
 * times. Inside fn, tx:transaction(fn2) is a savepoint. */
static int session_transaction(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c), *tx;
  long long retries, attempt;
  const char *begin;
  char setup[128];
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (tx_options(L, s->tx, &retries, &begin)) return 2;
  lua_settop(L, 3);
  if (s->tx) return savepoint(L, c);
  snprintf(setup, sizeof setup, "%s; ", begin);
  snprintf(setup + strlen(setup), sizeof setup - strlen(setup), tdb_tx_sql[TDB_TX_SET_USER],
           s->user_id);
  for (attempt = 0; ; attempt++) {
    int st, ok, retry, nres;
    if (!tx_exec(L, c, setup)) return 2;
    tx = tdb_newudata(L, sizeof *tx);   /* at 4: the transaction's session */
    *tx = *s;
    tx->tx = 1;
    luaL_setmetatable(L, TDB_SESSION_MT);
    tdb_getuservalue(L, 1);             /* keeps the connection alive */
    tdb_setuservalue(L, 4);
    c->tx = tx;
    c->tx_conflict = 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 4);
    st = lua_pcall(L, 1, LUA_MULTRET, 0);
    ok = fn_succeeded(L, st, 5);
    if (ok) {
      if (tx_commit(L, c)) {
        c->tx = NULL;
        tx->tx = -1;
        return tx_return(L, st, 5);
      }
      retry = is_conflict(L, -1);       /* COMMIT's nil, err is the answer */
      nres = 2;
      if (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE) tx_abort(L, c, 0);
    } else {
      tx_abort(L, c, 0);
      retry = is_conflict(L, st == LUA_OK ? 6 : 5);
      nres = st == LUA_OK ? lua_gettop(L) - 4 : -1;
    }
    c->tx = NULL;
    tx->tx = -1;
    if (!(retry || c->tx_conflict) || attempt >= retries || !c->pg)
      return nres < 0 ? lua_error(L) : nres;
    lua_settop(L, 3);                   /* a conflict: run fn again */
  }
}

enum { OP_CREATE, OP_UPDATE, OP_TOGGLE, OP_DELETE, OP_GET };
static const char *const op_names[] = { "create", "update", "toggle", "delete", "get", NULL };
/* The statements of a batch fail on the server when the todo is missing. */
static const int op_stmt[] = { TDB_SQL_TODO_INSERT, TDB_SQL_TODO_UPDATE_MUST,
                               TDB_SQL_TODO_TOGGLE_MUST, TDB_SQL_TODO_DELETE_MUST,
                               TDB_SQL_TODO_GET_MUST };

/* Raises unless every key of operation t (item i) is one its op takes. */
static void check_op_keys(lua_State *L, int t, int i, int op) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int known = !strcmp(k, "op") || (op != OP_CREATE && !strcmp(k, "id"))
      || ((op == OP_CREATE || op == OP_UPDATE)
          && (!strcmp(k, "title") || !strcmp(k, "description") || !strcmp(k, "completed")));
    if (!known)
      tdb_argerror(L, 2, "item %d: unknown field '%s' for op '%s'", i,
                   lua_type(L, -2) == LUA_TSTRING ? k : luaL_typename(L, -2), op_names[op]);
    lua_pop(L, 1);
  }
}

/* Reads item i (table at t) into the parameters v of statement *id, leaving
 * the strings it made on the stack. 0 ok, 2 with nil, err pushed. */
static int batch_item(lua_State *L, tdb_Session *s, int t, int i, int *id, const char **v) {
  int op, present;
  char buf[24];
  if (!lua_istable(L, t) || lua_getmetatable(L, t))
    tdb_argerror(L, 2, "item %d must be a plain table", i);
  lua_getfield(L, t, "op");
  if (lua_type(L, -1) != LUA_TSTRING)
    tdb_argerror(L, 2, "item %d: op must be a string, got %s", i, luaL_typename(L, -1));
  for (op = 0; op_names[op] && strcmp(op_names[op], lua_tostring(L, -1)); op++) {}
  if (!op_names[op])
    return tdb_push_error(L, "invalid", "op", NULL,
                          "op must be \"create\", \"update\", \"toggle\", \"delete\" or \"get\"");
  check_op_keys(L, t, i, op);
  *id = op_stmt[op];
  v[0] = s->owner;
  if (op == OP_CREATE) {
    if ((v[1] = push_title(L, 2, t)) == NULL || read_description(L, 2, t, &v[2], &present))
      return 2;
    v[3] = read_bool(L, 2, t, "completed");
    return 0;
  }
  lua_getfield(L, t, "id");
  if (lua_isnil(L, -1)) return tdb_push_error(L, "invalid", "id", NULL, "id is required");
  if (read_id(L, lua_gettop(L), buf)) return 2;
  lua_pushstring(L, buf);               /* stays on the stack until sent */
  v[1] = lua_tostring(L, -1);
  if (op != OP_UPDATE) return 0;
  lua_getfield(L, t, "title");
  lua_getfield(L, t, "description");
  lua_getfield(L, t, "completed");
  if (lua_isnil(L, -1) && lua_isnil(L, -2) && lua_isnil(L, -3))
    return tdb_push_error(L, "invalid", NULL, NULL, "nothing to update");
  v[2] = "f"; v[3] = NULL; v[4] = "f"; v[5] = v[6] = NULL;
  return change_vals(L, 2, t, v);
}

/* s:batch{ {op = "create", title =, …}, {op = "update", id =, title =, …},
 *          {op = "toggle" | "delete" | "get", id =}, … } -> { result… } | nil, err
 * One round trip, one transaction: every operation or none. Results are in
 * order: a Todo, or true for a delete. err.index names the failing item. */
static int session_batch(lua_State *L) {
  tdb_Conn *c;
  tdb_Session *s = check_session(L, 1, &c);
  const char *head[2];
  const char *(*vals)[7];               /* one parameter list per item */
  const char ***pv;
  int n, i, *ids, failed;
  PGresult **res;
  char setuser[64];
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)tdb_rawlen(L, 2);
  lua_settop(L, 2);
  if (n > BATCH_MAX)
    return tdb_push_error(L, "invalid", NULL, NULL, "a batch holds at most %d operations",
                          BATCH_MAX);
  if (n == 0) { lua_newtable(L); return 1; }
  ids = lua_newuserdata(L, sizeof *ids * (size_t)n);
  vals = lua_newuserdata(L, sizeof *vals * (size_t)n);
  pv = lua_newuserdata(L, sizeof *pv * (size_t)n);
  res = lua_newuserdata(L, sizeof *res * (size_t)n);
  for (i = 0; i < n; i++) {             /* validate everything first */
    luaL_checkstack(L, 8, "batch too large");
    lua_rawgeti(L, 2, i + 1);
    if (batch_item(L, s, lua_gettop(L), i + 1, &ids[i], vals[i])) return item_error(L, i + 1);
    pv[i] = vals[i];
  }
  if (s->tx) head[0] = tdb_tx_sql[TDB_TX_SAVEPOINT];
  else {
    snprintf(setuser, sizeof setuser, tdb_tx_sql[TDB_TX_SET_USER], s->user_id);
    head[0] = tdb_tx_sql[TDB_TX_BEGIN];
    head[1] = setuser;
  }
  failed = tdb_run_batch(L, c, head, s->tx ? 1 : 2, n, ids, (const char *const *const *)pv,
                         tdb_tx_sql[s->tx ? TDB_TX_RELEASE : TDB_TX_COMMIT], res);
  if (failed >= 0) {                    /* nil, err on the stack */
    if (failed < n && ids[failed] != TDB_SQL_TODO_INSERT) {
      lua_getfield(L, -1, "sqlstate");  /* the statement found no todo */
      if (lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "22012")) {
        lua_pop(L, 3);
        not_found(L);
      } else lua_pop(L, 1);
    }
    if (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE) tx_abort(L, c, s->tx);
    return failed < n ? item_error(L, failed + 1) : 2;
  }
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    if (ids[i] == TDB_SQL_TODO_DELETE_MUST) lua_pushboolean(L, 1);
    else tdb_push_todo(L, res[i], 0);
    lua_rawseti(L, -2, i + 1);
  }
  for (i = 0; i < n; i++) PQclear(res[i]);
  return 1;
}

/* s.user_id, s:method(...). Upvalues: the method table, "user_id". Every
 * method call passes here, so a method is one raw lookup of the key as it
 * came (the methods check their session themselves); anything else takes
 * the checked way. */
static int session_index(lua_State *L) {
  tdb_Session *s;
  const char *k;
  if (!lua_rawequal(L, 2, lua_upvalueindex(2))) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
  }
  s = luaL_checkudata(L, 1, TDB_SESSION_MT);
  k = luaL_checkstring(L, 2);
  if (!strcmp(k, "user_id")) { tdb_push_int64(L, s->user_id); return 1; }
  lua_getfield(L, lua_upvalueindex(1), k);
  return 1;
}

/* tostring(s) -> tododb.Session(user 3) */
static int session_tostring(lua_State *L) {
  tdb_Session *s = luaL_checkudata(L, 1, TDB_SESSION_MT);
  lua_pushfstring(L, "tododb.Session(user %s)", s->owner);
  return 1;
}

const luaL_Reg tdb_conn_session_methods[] = {
  { "session", session_new },
  { NULL, NULL }
};

static const luaL_Reg session_methods[] = {
  { "create_todo", session_create },
  { "create_todos", session_create_many },
  { "get_todo", session_get },
  { "update_todo", session_update },
  { "toggle_todo", session_toggle },
  { "delete_todo", session_delete },
  { "list_todos", session_list },
  { "count_todos", session_count },
  { "complete_all", session_complete_all },
  { "delete_completed", session_delete_completed },
  { "transaction", session_transaction },
  { "batch", session_batch },
  { NULL, NULL }
};

/* The same functions answering JSON text (TDB_AS_JSON): what to_table() of
 * the Todo (or of each item, with next null on the last page) encodes to. */
static const luaL_Reg session_json_methods[] = {
  { "create_todo_json", session_create },
  { "get_todo_json", session_get },
  { "update_todo_json", session_update },
  { "toggle_todo_json", session_toggle },
  { "list_todos_json", session_list },
  { NULL, NULL }
};

void tdb_session_open(lua_State *L) {
  luaL_newmetatable(L, TDB_SESSION_MT);
  lua_newtable(L);
  luaL_setfuncs(L, session_methods, 0);
  lua_pushboolean(L, 1);
  luaL_setfuncs(L, session_json_methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "Session");
  lua_pushliteral(L, "user_id");
  lua_pushcclosure(L, session_index, 2);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, session_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
