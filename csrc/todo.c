/* todo.c: the Todo object. */
#include "tdb.h"
void tdb_todo_open(lua_State *L) { (void)L; }
