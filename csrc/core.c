/* core.c: luaopen_tododb_core registers every type of the C core. */
#include <sodium.h>
#include "tdb.h"

TDB_EXPORT int luaopen_tododb_core(lua_State *L) {
  if (sodium_init() < 0)
    return luaL_error(L, "tododb: libsodium failed to initialise");
  lua_newtable(L);
  tdb_error_open(L);
  tdb_validate_open(L);
  tdb_password_open(L);
  tdb_conn_open(L);
  tdb_user_open(L);
  tdb_todo_open(L);
  tdb_session_open(L);
  tdb_token_open(L);
  tdb_identity_open(L);
  lua_pushliteral(L, "tododb " TDB_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lua_pushboolean(L, TDB_HAS_INT64);
  lua_setfield(L, -2, "int64");
  return 1;
}
