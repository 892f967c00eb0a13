/* user.c: the User object and account operations (methods of Connection).
 * A User never holds the password hash; nothing here returns it to Lua. */
#include <string.h>
#include <sodium.h>
#include "tdb.h"

#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024
#define LIST_MAX 1000
#define AUTH_FAILED "invalid email or password"

typedef struct tdb_User {
  long long id;
  tdb_Str email;                        /* NULL for a user from an identity provider */
  char created_at[TDB_TIME_BUF], updated_at[TDB_TIME_BUF];
  char text[];                          /* email NUL */
} tdb_User;

/* ---- the object --------------------------------------------------------- */

/* tostring(user) -> tododb.User(3, alice@example.com) */
static void user_tostring(lua_State *L, const void *o, const char *id) {
  const char *email = ((const tdb_User *)o)->email.s;
  if (email) lua_pushfstring(L, "tododb.User(%s, %s)", id, email);
  else lua_pushfstring(L, "tododb.User(%s)", id);
}

/* == compares ids; a missing email is left out of to_table(). */
#define FIELD(f, type, key, col) \
  { #f, TDB_F_##type, key, 0, offsetof(tdb_User, f), TDB_USER_##col }
static const tdb_Field fields[] = {
  FIELD(id, INT64, 1, ID), FIELD(email, STR, 0, EMAIL), FIELD(created_at, TIME, 0, CREATED_AT),
  FIELD(updated_at, TIME, 0, UPDATED_AT), { NULL, 0, 0, 0, 0, 0 }
};
#undef FIELD

const tdb_Class tdb_user_class = {
  TDB_USER_MT, fields, "tododb.User is read-only", user_tostring, tdb_push_user
};

void tdb_push_user(lua_State *L, const PGresult *r, int row) {
  tdb_Str email = tdb_field_str(r, row, TDB_USER_EMAIL);
  tdb_User *u = tdb_newobject(L, offsetof(tdb_User, text) + TDB_STR_SIZE(email));
  u->id = tdb_get_int8(r, row, TDB_USER_ID);
  (void)tdb_copy_str(&u->email, u->text, email);
  tdb_get_time(r, row, TDB_USER_CREATED_AT, u->created_at);
  tdb_get_time(r, row, TDB_USER_UPDATED_AT, u->updated_at);
  tdb_set_class(L, &tdb_user_class);
}

int tdb_check_user_id(lua_State *L, int idx, long long *out) {
  tdb_User *u = luaL_testudata(L, idx, TDB_USER_MT);
  if (u) { *out = u->id; return 0; }
  return tdb_check_id(L, idx, "user", out);
}

/* ---- arguments ---------------------------------------------------------- */

/* The string at idx, argument arg or a field of it: raises when it is not
 * a string. */
static const char *check_str(lua_State *L, int arg, int idx, const char *what, size_t *n) {
  if (lua_type(L, idx) != LUA_TSTRING)
    tdb_argerror(L, arg, "%s must be a string, got %s", what, luaL_typename(L, idx));
  return lua_tolstring(L, idx, n);
}

static int check_password(lua_State *L, size_t n) {
  if (n < PASSWORD_MIN || n > PASSWORD_MAX)
    return tdb_push_error(L, "invalid", "password", NULL,
                          "password must be 8 to 1024 bytes");
  return 0;
}

/* Normalises the email at idx (argument arg) into buf; 0 ok, 2 with nil,
 * err pushed. */
static int check_email(lua_State *L, int arg, int idx, char *buf) {
  size_t n, len;
  const char *s = check_str(L, arg, idx, "email", &n);
  const char *msg = tdb_check_email(s, n, buf, &len);
  if (msg) return tdb_push_error(L, "invalid", "email", NULL, "%s", msg);
  return 0;
}

/* A User or an id argument, in decimal into buf: 0 ok, 2 nil, err pushed. */
static int read_id(lua_State *L, int idx, char *buf) {
  long long id;
  if (tdb_check_user_id(L, idx, &id)) return 2;
  (void)tdb_int8_text(buf, id);
  return 0;
}

/* Returns the single-row result as a User (its JSON in a *_json call), or
 * not_found. */
static int one_user(lua_State *L, PGresult *r) {
  int n;
  if (!r) return 2;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return tdb_push_error(L, "not_found", NULL, NULL, "user not found");
  }
  n = tdb_push_row(L, &tdb_user_class, r);
  PQclear(r);
  return n;
}

static int conflict_email(lua_State *L) {
  lua_pop(L, 2);
  return tdb_push_error(L, "conflict", "email", "23505",
                        "an account with this email already exists");
}

/* Is the error pushed at the top a unique violation? */
static int is_unique_violation(lua_State *L) {
  int yes;
  lua_getfield(L, -1, "sqlstate");
  yes = lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "23505");
  lua_pop(L, 1);
  return yes;
}

/* ---- account operations ------------------------------------------------- */

/* db:create_user{ email =, password = } -> User | nil, err */
static int user_create(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char email[TDB_EMAIL_BUF], hash[crypto_pwhash_STRBYTES];
  const char *pw, *vals[2];
  size_t pwn;
  PGresult *r;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "email");
  lua_getfield(L, 2, "password");
  pw = check_str(L, 2, -1, "password", &pwn);
  if (check_email(L, 2, -2, email) || check_password(L, pwn)) return 2;
  if (!tdb_password_hash(c, pw, pwn, hash))
    return tdb_push_error(L, "internal", NULL, NULL, "password hashing failed (out of memory)");
  vals[0] = email;
  vals[1] = hash;
  r = tdb_run(L, c, NULL, TDB_SQL_USER_INSERT, vals);
  sodium_memzero(hash, sizeof hash);
  if (!r) return is_unique_violation(L) ? conflict_email(L) : 2;
  return one_user(L, r);
}

/* db:authenticate(email, password) -> User | nil, err (unauthorized)
 * The same answer, at the same cost, for an unknown email and a wrong
 * password: an unknown email is verified against a dummy with the parameters
 * of a stand-in account's hash (sql.c), whatever the connection's cost, and
 * a known one against its own hash, without rehashing. A hash made
 * with weaker parameters is upgraded on success. */
static int user_authenticate(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char email[TDB_EMAIL_BUF], hash[crypto_pwhash_STRBYTES], standin[24];
  size_t en, pwn, len;
  int i, found;
  const char *params;
  const char *e = check_str(L, 2, 2, "email", &en);
  const char *pw = check_str(L, 3, 3, "password", &pwn);
  const char *vals[3];
  PGresult *r;
  if (pwn > PASSWORD_MAX || tdb_check_email(e, en, email, &len) != NULL) {
    /* Never hash megabytes; an over-long password never matches. */
    tdb_password_dummy(c, NULL, pw, pwn > PASSWORD_MAX ? PASSWORD_MAX : pwn);
    return tdb_push_error(L, "unauthorized", NULL, NULL, AUTH_FAILED);
  }
  vals[0] = email;
  vals[1] = standin;
  {
    unsigned char h[8];
    unsigned long long v = 0;
    crypto_generichash(h, sizeof h, (const unsigned char *)email, len, NULL, 0);
    for (i = 0; i < 8; i++) v = (v << 8) | h[i];
    snprintf(standin, sizeof standin, "%llu", v >> 2);
  }
  if ((r = tdb_run(L, c, NULL, TDB_SQL_USER_AUTH, vals)) == NULL) return 2;
  /* Rows: the account (id set), if any, and the stand-in's hash parameters
   * (id NULL), if there is any account. An account without a password
   * (external identities only) fails like an unknown email. */
  params = NULL;
  found = -1;
  for (i = 0; i < PQntuples(r); i++) {
    if (!PQgetisnull(r, i, TDB_USER_ID)) found = i;
    else if (!PQgetisnull(r, i, TDB_USER_HASH)) params = PQgetvalue(r, i, TDB_USER_HASH);
  }
  if (found < 0 || PQgetisnull(r, found, TDB_USER_HASH)) {
    tdb_password_dummy(c, params, pw, pwn);
    PQclear(r);
    return tdb_push_error(L, "unauthorized", NULL, NULL, AUTH_FAILED);
  }
  i = found;
  if (!tdb_password_verify(PQgetvalue(r, i, TDB_USER_HASH), pw, pwn)) {
    PQclear(r);
    return tdb_push_error(L, "unauthorized", NULL, NULL, AUTH_FAILED);
  }
  tdb_push_user(L, r, i);
  if (tdb_password_needs_rehash(c, PQgetvalue(r, i, TDB_USER_HASH)) && tdb_password_hash(c, pw, pwn, hash)) {
    PGresult *u;
    char id[TDB_INT8_BUF];
    (void)tdb_int8_text(id, tdb_get_int8(r, i, TDB_USER_ID));
    vals[0] = id;
    vals[1] = hash;
    vals[2] = PQgetvalue(r, i, TDB_USER_HASH);
    if ((u = tdb_run(L, c, NULL, TDB_SQL_USER_SET_HASH, vals)) != NULL) PQclear(u);
    else lua_pop(L, 2);                 /* the login stands; next one retries */
    sodium_memzero(hash, sizeof hash);
  }
  PQclear(r);
  return 1;
}

/* db:get_user(id) -> User | nil, err */
static int user_get(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char buf[24];
  const char *vals[1] = { buf };
  if (read_id(L, 2, buf)) return 2;
  return one_user(L, tdb_run(L, c, NULL, TDB_SQL_USER_BY_ID, vals));
}

/* db:find_user(email) -> User | nil, err */
static int user_find(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char email[TDB_EMAIL_BUF];
  const char *vals[1] = { email };
  if (check_email(L, 2, 2, email)) return 2;
  return one_user(L, tdb_run(L, c, NULL, TDB_SQL_USER_BY_EMAIL, vals));
}

/* db:change_password(id, old, new) -> true | nil, err */
static int user_change_password(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char buf[24], hash[crypto_pwhash_STRBYTES];
  size_t on, nn;
  const char *old = check_str(L, 3, 3, "old password", &on);
  const char *new = check_str(L, 4, 4, "new password", &nn);
  const char *vals[3] = { buf };
  PGresult *r, *u;
  int ok;
  if (read_id(L, 2, buf) || check_password(L, nn)) return 2;
  if ((r = tdb_run(L, c, NULL, TDB_SQL_USER_HASH, vals)) == NULL) return 2;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return tdb_push_error(L, "not_found", NULL, NULL, "user not found");
  }
  if (on > PASSWORD_MAX || !tdb_password_verify(PQgetvalue(r, 0, TDB_USER_HASH), old, on)) {
    PQclear(r);
    return tdb_push_error(L, "unauthorized", "password", NULL, "the old password is wrong");
  }
  if (!tdb_password_hash(c, new, nn, hash)) {
    PQclear(r);
    return tdb_push_error(L, "internal", NULL, NULL, "password hashing failed (out of memory)");
  }
  vals[1] = hash;
  vals[2] = PQgetvalue(r, 0, TDB_USER_HASH);
  u = tdb_run(L, c, NULL, TDB_SQL_USER_SET_HASH, vals);
  sodium_memzero(hash, sizeof hash);
  PQclear(r);
  if (!u) return 2;
  ok = PQntuples(u) == 1;
  PQclear(u);
  if (!ok)
    return tdb_push_error(L, "conflict", "password", NULL,
                          "the password was changed at the same time; try again");
  lua_pushboolean(L, 1);
  return 1;
}

/* db:change_email(id, new_email) -> User | nil, err */
static int user_change_email(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char buf[24], email[TDB_EMAIL_BUF];
  const char *vals[2] = { buf, email };
  PGresult *r;
  if (read_id(L, 2, buf) || check_email(L, 3, 3, email)) return 2;
  if ((r = tdb_run(L, c, NULL, TDB_SQL_USER_SET_EMAIL, vals)) == NULL)
    return is_unique_violation(L) ? conflict_email(L) : 2;
  return one_user(L, r);
}

/* db:delete_user(id) -> number of todos deleted with it | nil, err */
static int user_delete(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char buf[24];
  const char *vals[1] = { buf };
  PGresult *r;
  if (read_id(L, 2, buf)) return 2;
  /* As the user, so that row-level security lets the count see its todos. */
  if ((r = tdb_run(L, c, buf, TDB_SQL_USER_DELETE, vals)) == NULL) return 2;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return tdb_push_error(L, "not_found", NULL, NULL, "user not found");
  }
  tdb_push_int64(L, tdb_get_int8(r, 0, 1));            /* d.id, n.c */
  PQclear(r);
  return 1;
}

/* db:list_users{ after = id, limit = n (1-1000, default 100) } -> { User… } */
static int user_list(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  long long after = 0, limit = 100;
  char a[TDB_INT8_BUF], l[TDB_INT8_BUF];
  const char *vals[2] = { a, l };
  PGresult *r;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (tdb_check_int_field(L, 2, "after", 1, LLONG_MIN, LLONG_MAX, &after)
        || tdb_check_int_field(L, 2, "limit", 1, 1, LIST_MAX, &limit))
      return 2;
  }
  (void)tdb_int8_text(a, after);
  (void)tdb_int8_text(l, limit);
  if ((r = tdb_run(L, c, NULL, TDB_SQL_USER_LIST, vals)) == NULL) return 2;
  lua_createtable(L, PQntuples(r), 0);
  for (int i = 0; i < PQntuples(r); i++) {
    tdb_push_user(L, r, i);
    lua_rawseti(L, -2, i + 1);
  }
  PQclear(r);
  return 1;
}

const luaL_Reg tdb_conn_user_methods[] = {
  { "create_user", user_create },
  { "authenticate", user_authenticate },
  { "get_user", user_get },
  { "find_user", user_find },
  { "change_password", user_change_password },
  { "change_email", user_change_email },
  { "delete_user", user_delete },
  { "list_users", user_list },
  { NULL, NULL }
};

/* db:create_user_json{…}, db:get_user_json(id), db:find_user_json(email),
 * db:change_email_json(id, email) -> JSON text of the User | nil, err */
const luaL_Reg tdb_conn_user_json_methods[] = {
  { "create_user_json", user_create },
  { "get_user_json", user_get },
  { "find_user_json", user_find },
  { "change_email_json", user_change_email },
  { NULL, NULL }
};

void tdb_user_open(lua_State *L) {
  tdb_class_open(L, &tdb_user_class);
  lua_pushinteger(L, (lua_Integer)sizeof(tdb_User));
  lua_setfield(L, -2, "user_size");
}
