/* todo.c: the Todo object — a read-only snapshot of one row, decoded
 * straight from the PGresult into one userdata (no intermediate table). */
#include <string.h>
#include "tdb.h"

typedef struct tdb_Todo {
  long long id, user_id;
  int completed, has_description;
  size_t title_len, description_len;
  char created_at[32], updated_at[32];
  char text[];                    /* title NUL description NUL */
} tdb_Todo;

static void copy_time(const PGresult *r, int row, int col, char *out) {
  size_t n = (size_t)PQgetlength(r, row, col);          /* formatted by sql.c */
  if (n > 31) n = 31;
  memcpy(out, PQgetvalue(r, row, col), n);
  out[n] = '\0';
}

/* Columns: id, user_id, title, description, completed, created_at, updated_at. */
void tdb_push_todo(lua_State *L, const PGresult *r, int row) {
  size_t tl = (size_t)PQgetlength(r, row, 2), dl = (size_t)PQgetlength(r, row, 3);
  tdb_Todo *t = tdb_newudata(L, offsetof(tdb_Todo, text) + tl + dl + 2);
  t->id = tdb_parse_int8(PQgetvalue(r, row, 0));
  t->user_id = tdb_parse_int8(PQgetvalue(r, row, 1));
  t->title_len = tl;
  memcpy(t->text, PQgetvalue(r, row, 2), tl + 1);
  t->has_description = !PQgetisnull(r, row, 3);
  t->description_len = dl;
  memcpy(t->text + tl + 1, PQgetvalue(r, row, 3), dl + 1);
  t->completed = PQgetvalue(r, row, 4)[0] == 't';
  copy_time(r, row, 5, t->created_at);
  copy_time(r, row, 6, t->updated_at);
  luaL_setmetatable(L, TDB_TODO_MT);
}

static tdb_Todo *check_todo(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, TDB_TODO_MT);
}

/* Pushes field k of t; 0 when there is no such field. */
static int push_field(lua_State *L, const tdb_Todo *t, const char *k) {
  if (!strcmp(k, "id")) tdb_push_int64(L, t->id);
  else if (!strcmp(k, "title")) lua_pushlstring(L, t->text, t->title_len);
  else if (!strcmp(k, "completed")) lua_pushboolean(L, t->completed);
  else if (!strcmp(k, "description")) {
    if (t->has_description)
      lua_pushlstring(L, t->text + t->title_len + 1, t->description_len);
    else lua_pushnil(L);
  }
  else if (!strcmp(k, "user_id")) tdb_push_int64(L, t->user_id);
  else if (!strcmp(k, "created_at")) lua_pushstring(L, t->created_at);
  else if (!strcmp(k, "updated_at")) lua_pushstring(L, t->updated_at);
  else return 0;
  return 1;
}

static const char *const fields[] = {
  "id", "user_id", "title", "description", "completed", "created_at", "updated_at", NULL
};

/* todo:to_table() -> plain table; a NULL description is tododb.null
 * (the same value as cjson.null), so the table encodes as JSON directly. */
static int todo_to_table(lua_State *L) {
  tdb_Todo *t = check_todo(L, 1);
  lua_createtable(L, 0, 7);
  for (int i = 0; fields[i]; i++) {
    push_field(L, t, fields[i]);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); tdb_push_null(L); }
    lua_setfield(L, -2, fields[i]);
  }
  return 1;
}

/* todo.field, todo:to_table() */
static int todo_index(lua_State *L) {
  tdb_Todo *t = check_todo(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (push_field(L, t, k)) return 1;
  if (!strcmp(k, "to_table")) { lua_pushcfunction(L, todo_to_table); return 1; }
  return 0;
}

static int todo_newindex(lua_State *L) {
  return luaL_error(L, "tododb.Todo is read-only (use session:update_todo)");
}

/* a == b: the same todo (same owner and id). */
static int todo_eq(lua_State *L) {
  tdb_Todo *a = luaL_testudata(L, 1, TDB_TODO_MT), *b = luaL_testudata(L, 2, TDB_TODO_MT);
  lua_pushboolean(L, a && b && a->id == b->id && a->user_id == b->user_id);
  return 1;
}

/* tostring(todo) -> tododb.Todo(12, done, "Buy milk") */
static int todo_tostring(lua_State *L) {
  tdb_Todo *t = check_todo(L, 1);
  char id[24];
  snprintf(id, sizeof id, "%lld", t->id);
  lua_pushfstring(L, "tododb.Todo(%s, %s, \"%s\")", id,
                  t->completed ? "done" : "open", t->text);
  return 1;
}

void tdb_todo_open(lua_State *L) {
  luaL_newmetatable(L, TDB_TODO_MT);
  lua_pushcfunction(L, todo_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, todo_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, todo_eq);
  lua_setfield(L, -2, "__eq");
  lua_pushcfunction(L, todo_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushinteger(L, (lua_Integer)sizeof(tdb_Todo));
  lua_setfield(L, -2, "todo_size");
}
