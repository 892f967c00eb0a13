/* token.c: JSON Web Tokens (HS256 sign/verify, EdDSA verify). */
#include "tdb.h"

void tdb_token_open(lua_State *L) {
  (void)L;
}
