/* identity.c: users from an external identity provider (methods of Connection).
 * An identity is (issuer, subject) as a verified token names it; it belongs
 * to at most one user. Such users may have no password and no email. */
#include <stdlib.h>
#include <string.h>
#include "tdb.h"

#define ISSUER_MAX 1024        /* characters; the CHECKs of migration 0004 */
#define SUBJECT_MAX 255

/* Reads the issuer or subject at idx (argument arg, or a field of it) into
 * *s: 0 ok, 2 with nil, err pushed. Raises when it is not a string. */
static int check_part(lua_State *L, int arg, int idx, const char *what, long max,
                      const char **s) {
  size_t n;
  long chars;
  if (lua_type(L, idx) != LUA_TSTRING)
    return tdb_argerror(L, arg, "%s must be a string, got %s", what, luaL_typename(L, idx));
  *s = lua_tolstring(L, idx, &n);
  chars = tdb_utf8_len(*s, n);
  if (chars < 1 || chars > max)
    return tdb_push_error(L, "invalid", what, NULL,
                          "%s must be 1 to %ld characters of UTF-8", what, max);
  return 0;
}

/* The SQLSTATE of the error pushed at the top, or "". */
static const char *pushed_sqlstate(lua_State *L) {
  const char *s;
  lua_getfield(L, -1, "sqlstate");
  s = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
  lua_pop(L, 1);                 /* the error table still holds the string */
  return s;
}

/* Runs the (issuer, subject) lookup: 0 with *found set and, when found, the
 * User pushed; 2 with nil, err pushed. */
static int lookup(lua_State *L, tdb_Conn *c, const char *const *vals, int *found) {
  PGresult *r = tdb_run(L, c, NULL, TDB_SQL_IDENT_USER, vals);
  if (!r) return 2;
  if ((*found = PQntuples(r) > 0)) tdb_push_user(L, r, 0);
  PQclear(r);
  return 0;
}

/* db:find_user_by_identity(issuer, subject) -> User | nil, err (not_found) */
static int identity_find(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  const char *vals[2];
  int found;
  if (check_part(L, 2, 2, "issuer", ISSUER_MAX, &vals[0])
      || check_part(L, 3, 3, "subject", SUBJECT_MAX, &vals[1])
      || lookup(L, c, vals, &found)) return 2;
  if (!found) return tdb_push_error(L, "not_found", NULL, NULL, "user not found");
  return 1;
}

/* db:provision_user{ issuer =, subject = [, email =] } -> User, created | nil, err
 * Finds the user of an identity, or creates it (no password) together with the
 * identity in one statement. Two calls racing for the same identity get the
 * same user. An email already held by another account is never linked: the
 * answer is a conflict on field email. */
static int identity_provision(lua_State *L) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char email[TDB_EMAIL_BUF];
  const char *vals[3] = { NULL, NULL, NULL };
  PGresult *r;
  int found;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "issuer");
  lua_getfield(L, 2, "subject");
  lua_getfield(L, 2, "email");
  if (check_part(L, 2, 3, "issuer", ISSUER_MAX, &vals[0])
      || check_part(L, 2, 4, "subject", SUBJECT_MAX, &vals[1])) return 2;
  if (!lua_isnil(L, 5)) {
    size_t n, len;
    const char *s, *msg;
    if (lua_type(L, 5) != LUA_TSTRING)
      return tdb_argerror(L, 2, "email must be a string, got %s", luaL_typename(L, 5));
    s = lua_tolstring(L, 5, &n);
    if ((msg = tdb_check_email(s, n, email, &len)) != NULL)
      return tdb_push_error(L, "invalid", "email", NULL, "%s", msg);
    vals[2] = email;
  }
  if (lookup(L, c, vals, &found)) return 2;
  if (found) {
    lua_pushboolean(L, 0);
    return 2;
  }
  if ((r = tdb_run(L, c, NULL, TDB_SQL_IDENT_CREATE, vals)) != NULL) {
    tdb_push_user(L, r, 0);
    PQclear(r);
    lua_pushboolean(L, 1);
    return 2;
  }
  if (strcmp(pushed_sqlstate(L), "23505") != 0) return 2;
  lua_pop(L, 2);
  /* Either a concurrent call created this identity (read its user) or the
   * email belongs to another account. */
  if (lookup(L, c, vals, &found)) return 2;
  if (found) {
    lua_pushboolean(L, 0);
    return 2;
  }
  return tdb_push_error(L, "conflict", "email", "23505",
                        "an account with this email already exists; "
                        "link the identity to it explicitly or provision without an email");
}

/* Runs statement id (link or unlink) over the arguments (user, issuer,
 * subject): its result, or NULL with nil, err pushed. */
static PGresult *identity_run(lua_State *L, int id) {
  tdb_Conn *c = tdb_check_conn(L, 1);
  char uid[TDB_INT8_BUF];
  const char *vals[3] = { NULL, NULL, uid };
  long long v;
  if (tdb_check_user_id(L, 2, &v)) return NULL;
  (void)tdb_int8_text(uid, v);
  if (check_part(L, 3, 3, "issuer", ISSUER_MAX, &vals[0])
      || check_part(L, 4, 4, "subject", SUBJECT_MAX, &vals[1])) return NULL;
  return tdb_run(L, c, NULL, id, vals);
}

/* db:link_identity(user, issuer, subject) -> true | nil, err
 * conflict when the identity already belongs to a user; not_found for no user. */
static int identity_link(lua_State *L) {
  PGresult *r = identity_run(L, TDB_SQL_IDENT_LINK);
  if (!r) {
    const char *state = pushed_sqlstate(L);
    if (!strcmp(state, "23505")) {
      lua_pop(L, 2);
      return tdb_push_error(L, "conflict", "subject", "23505",
                            "this identity already belongs to a user");
    }
    if (!strcmp(state, "23503")) {
      lua_pop(L, 2);
      return tdb_push_error(L, "not_found", NULL, "23503", "user not found");
    }
    return 2;
  }
  PQclear(r);
  lua_pushboolean(L, 1);
  return 1;
}

/* db:unlink_identity(user, issuer, subject) -> true | nil, err (not_found) */
static int identity_unlink(lua_State *L) {
  PGresult *r = identity_run(L, TDB_SQL_IDENT_UNLINK);
  int n;
  if (!r) return 2;
  n = atoi(PQcmdTuples(r));
  PQclear(r);
  if (n == 0) return tdb_push_error(L, "not_found", NULL, NULL, "identity not found");
  lua_pushboolean(L, 1);
  return 1;
}

const luaL_Reg tdb_conn_identity_methods[] = {
  { "find_user_by_identity", identity_find },
  { "provision_user", identity_provision },
  { "link_identity", identity_link },
  { "unlink_identity", identity_unlink },
  { NULL, NULL }
};
