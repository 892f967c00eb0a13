/* core.c: luaopen_tododb_core registers every type of the C core, and the
 * module-level helpers that belong to no type. */
#include <sodium.h>
#include "tdb.h"

/* tododb.core.sha256(s) -> hex digest (migration checksums) */
static int core_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char h[crypto_hash_sha256_BYTES];
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  crypto_hash_sha256(h, (const unsigned char *)s, n);
  sodium_bin2hex(hex, sizeof hex, h, sizeof h);
  lua_pushstring(L, hex);
  return 1;
}

/* Each *_open adds its fields to the module table on top of the stack; none
 * depends on another having run. */
TDB_EXPORT int luaopen_tododb_core(lua_State *L) {
  if (sodium_init() < 0)
    return luaL_error(L, "tododb: libsodium failed to initialise");
  lua_newtable(L);
  tdb_error_open(L);
  tdb_validate_open(L);
  tdb_conn_open(L);
  tdb_user_open(L);
  tdb_todo_open(L);
  tdb_session_open(L);
  tdb_token_open(L);
  lua_pushcfunction(L, core_sha256);
  lua_setfield(L, -2, "sha256");
  lua_pushliteral(L, "tododb " TDB_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lua_pushboolean(L, TDB_HAS_INT64);
  lua_setfield(L, -2, "int64");
  return 1;
}
