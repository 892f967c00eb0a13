/* compat.h: the only file that reads LUA_VERSION_NUM.
 * tododb builds against Lua 5.4 and LuaJIT 2.1 (Lua 5.1 C API). */
#ifndef TDB_COMPAT_H
#define TDB_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>

#if LUA_VERSION_NUM == 501                     /* LuaJIT 2.1 */
#  define TDB_HAS_CLOSE 0
#  define TDB_HAS_INT64 0
#  define tdb_newudata(L, sz) lua_newuserdata((L), (sz))
#  define tdb_newobject(L, sz) lua_newuserdata((L), (sz))
#  define tdb_rawlen(L, i) lua_objlen((L), (i))
#  define tdb_getuservalue(L, i) lua_getfenv((L), (i))
#  define tdb_setuservalue(L, i) lua_setfenv((L), (i))
#elif LUA_VERSION_NUM >= 504
#  define TDB_HAS_CLOSE 1
#  define TDB_HAS_INT64 1
#  define tdb_newudata(L, sz) lua_newuserdatauv((L), (sz), 1)
/* Row objects (Todo, User) keep nothing in a user value. */
#  define tdb_newobject(L, sz) lua_newuserdatauv((L), (sz), 0)
#  define tdb_rawlen(L, i) lua_rawlen((L), (i))
#  define tdb_getuservalue(L, i) ((void)lua_getiuservalue((L), (i), 1))
#  define tdb_setuservalue(L, i) ((void)lua_setiuservalue((L), (i), 1))
#else
#  error "tododb needs Lua 5.4 or LuaJIT 2.1"
#endif

/* Largest integer a double holds exactly: 2^53. */
#define TDB_SAFE_INT 9007199254740992LL

/* Push an int8 value. On LuaJIT numbers are doubles, so a value beyond
 * +-2^53 is pushed as its decimal string instead of being rounded. */
static inline void tdb_push_int64(lua_State *L, long long v) {
#if TDB_HAS_INT64
  lua_pushinteger(L, (lua_Integer)v);
#else
  if (v > TDB_SAFE_INT || v < -TDB_SAFE_INT) {
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", v);
    lua_pushstring(L, buf);
  } else
    lua_pushnumber(L, (lua_Number)v);
#endif
}

/* Is the number at idx an integer in int8 range? Then 1 and *out set. */
static inline int tdb_to_int64(lua_State *L, int idx, long long *out) {
  lua_Number d;
#if TDB_HAS_INT64
  if (lua_isinteger(L, idx)) { *out = (long long)lua_tointeger(L, idx); return 1; }
#endif
  d = lua_tonumber(L, idx);
  if (d != d || d == HUGE_VAL || d == -HUGE_VAL || floor(d) != d) return 0;
  if (d >= -(double)LLONG_MIN || d < (double)LLONG_MIN) return 0;
  *out = (long long)d;
  return 1;
}

#endif
