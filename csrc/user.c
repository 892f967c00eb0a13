/* user.c: the User object and account operations. */
#include "tdb.h"
void tdb_user_open(lua_State *L) { (void)L; }
