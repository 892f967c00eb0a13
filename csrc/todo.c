/* todo.c: the Todo object — a read-only snapshot of one row, decoded
 * straight from the PGresult into one userdata (no intermediate table). */
#include <string.h>
#include "tdb.h"

typedef struct tdb_Todo {
  long long id, user_id;
  int completed;
  tdb_Str title, description;           /* point into text */
  char created_at[TDB_TIME_BUF], updated_at[TDB_TIME_BUF];
  char text[];                          /* title NUL description NUL */
} tdb_Todo;

/* tostring(todo) -> tododb.Todo(12, done, "Buy milk") */
static void todo_tostring(lua_State *L, const void *o, const char *id) {
  const tdb_Todo *t = o;
  lua_pushfstring(L, "tododb.Todo(%s, %s, \"%s\")", id, t->completed ? "done" : "open",
                  t->title.s);
}

/* Fields in to_table() order; id and user_id make ==, a NULL description
 * is tododb.null in to_table(). */
#define FIELD(f, type, key, null, col) \
  { #f, TDB_F_##type, key, null, offsetof(tdb_Todo, f), TDB_TODO_##col }
static const tdb_Field fields[] = {
  FIELD(id, INT64, 1, 0, ID), FIELD(user_id, INT64, 1, 0, USER_ID),
  FIELD(title, STR, 0, 0, TITLE), FIELD(description, STR, 0, 1, DESCRIPTION),
  FIELD(completed, BOOL, 0, 0, COMPLETED), FIELD(created_at, TIME, 0, 0, CREATED_AT),
  FIELD(updated_at, TIME, 0, 0, UPDATED_AT), { NULL, 0, 0, 0, 0, 0 }
};
#undef FIELD

const tdb_Class tdb_todo_class = {
  TDB_TODO_MT, fields, "tododb.Todo is read-only (use session:update_todo)", todo_tostring,
  tdb_push_todo
};

/* Row `row` of a result with TODO_COLS as a Todo. */
void tdb_push_todo(lua_State *L, const PGresult *r, int row) {
  tdb_Str title = tdb_field_str(r, row, TDB_TODO_TITLE);
  tdb_Str description = tdb_field_str(r, row, TDB_TODO_DESCRIPTION);
  tdb_Todo *t = tdb_newobject(L, offsetof(tdb_Todo, text) + TDB_STR_SIZE(title)
                                + TDB_STR_SIZE(description));
  char *at = t->text;
  t->id = tdb_get_int8(r, row, TDB_TODO_ID);
  t->user_id = tdb_get_int8(r, row, TDB_TODO_USER_ID);
  at = tdb_copy_str(&t->title, at, title);
  (void)tdb_copy_str(&t->description, at, description);
  t->completed = tdb_get_bool(r, row, TDB_TODO_COMPLETED);
  tdb_get_time(r, row, TDB_TODO_CREATED_AT, t->created_at);
  tdb_get_time(r, row, TDB_TODO_UPDATED_AT, t->updated_at);
  tdb_set_class(L, &tdb_todo_class);
}

void tdb_todo_open(lua_State *L) {
  tdb_class_open(L, &tdb_todo_class);
  lua_pushinteger(L, (lua_Integer)sizeof(tdb_Todo));
  lua_setfield(L, -2, "todo_size");
}
