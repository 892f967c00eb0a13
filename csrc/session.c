/* session.c: Session — every todo operation, scoped to one user. */
#include "tdb.h"
void tdb_session_open(lua_State *L) { (void)L; }
