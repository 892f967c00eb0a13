/* error.c: error objects and tododb.null. */
#include <stdarg.h>
#include <string.h>
#include "tdb.h"

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v) { lua_pushstring(L, v); lua_setfield(L, -2, k); }
}

/* Pushes an error object (code, message, field, sqlstate). */
static void new_error(lua_State *L, const char *code, const char *field,
                      const char *sqlstate, const char *message) {
  lua_createtable(L, 0, 4);
  set_str(L, "code", code);
  set_str(L, "message", message);
  set_str(L, "field", field);
  set_str(L, "sqlstate", sqlstate);
  luaL_setmetatable(L, TDB_ERROR_MT);
}

int tdb_push_error(lua_State *L, const char *code, const char *field,
                   const char *sqlstate, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_pushnil(L);
  new_error(L, code, field, sqlstate, msg);
  return 2;
}

int tdb_argerror(lua_State *L, int arg, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return luaL_argerror(L, arg, msg);
}

const char *tdb_sqlstate_code(const char *s) {
  if (!s || strlen(s) != 5) return "internal";
  if (!strcmp(s, "23505")) return "conflict";
  if (!strcmp(s, "23503")) return "not_found";
  if (!strncmp(s, "23", 2) || !strncmp(s, "22", 2)) return "invalid";
  if (!strcmp(s, "40001") || !strcmp(s, "40P01")) return "conflict";
  if (!strncmp(s, "08", 2) || !strncmp(s, "57P", 3) || !strcmp(s, "53300"))
    return "unavailable";
  return "internal";
}

void tdb_push_null(lua_State *L) { lua_pushlightuserdata(L, NULL); }

int tdb_is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* tostring(err) -> err.message */
static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) lua_pushliteral(L, "tododb error");
  return 1;
}

/* tododb.core.error(code, message [, field]) -> err (for the Lua layer) */
static int error_new(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  const char *field = luaL_optstring(L, 3, NULL);
  new_error(L, code, field, NULL, msg);
  return 1;
}

void tdb_error_open(lua_State *L) {
  luaL_newmetatable(L, TDB_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, error_new);
  lua_setfield(L, -2, "error");
  tdb_push_null(L);
  lua_setfield(L, -2, "null");
}
