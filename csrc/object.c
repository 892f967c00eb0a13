/* object.c: the read-only row objects (Todo, User). Each class is a table of
 * fields (name, type, offset); one skeleton serves __index, __newindex,
 * __eq and :to_table() for all of them. */
#include <string.h>
#include "tdb.h"

tdb_Str tdb_field_str(const PGresult *r, int row, int col) {
  tdb_Str v = { NULL, 0 };
  if (!PQgetisnull(r, row, col)) {
    v.s = PQgetvalue(r, row, col);
    v.n = (size_t)PQgetlength(r, row, col);
  }
  return v;
}

char *tdb_copy_str(tdb_Str *out, char *at, tdb_Str v) {
  if (!v.s) { out->s = NULL; out->n = 0; return at; }
  memcpy(at, v.s, v.n);
  at[v.n] = '\0';
  out->s = at;
  out->n = v.n;
  return at + v.n + 1;
}

/* Pushes field f of object o (nil for an absent string). */
static void push_field(lua_State *L, const void *o, const tdb_Field *f) {
  const char *p = (const char *)o + f->offset;
  switch (f->type) {
    case TDB_F_INT64: tdb_push_int64(L, *(const long long *)(const void *)p); break;
    case TDB_F_BOOL: lua_pushboolean(L, *(const int *)(const void *)p); break;
    case TDB_F_TIME: lua_pushstring(L, p); break;
    default: {
      const tdb_Str *s = (const tdb_Str *)(const void *)p;
      if (s->s) lua_pushlstring(L, s->s, s->n); else lua_pushnil(L);
    }
  }
}

static const tdb_Class *class_of(lua_State *L) {
  return (const tdb_Class *)lua_touserdata(L, lua_upvalueindex(1));
}

/* obj:to_table() -> plain table of the fields. An absent value marked null
 * is tododb.null (the same value as cjson.null), so the table encodes as
 * JSON directly; other absent values are left out. */
static int object_to_table(lua_State *L) {
  const tdb_Class *k = class_of(L);
  const void *o = luaL_checkudata(L, 1, k->name);
  int n = 0;
  while (k->fields[n].name) n++;
  lua_createtable(L, 0, n);
  for (const tdb_Field *f = k->fields; f->name; f++) {
    push_field(L, o, f);
    if (lua_isnil(L, -1) && f->null) { lua_pop(L, 1); tdb_push_null(L); }
    lua_setfield(L, -2, f->name);
  }
  return 1;
}

/* obj.field, obj:to_table() */
static int object_index(lua_State *L) {
  const tdb_Class *k = class_of(L);
  const void *o = luaL_checkudata(L, 1, k->name);
  const char *key = luaL_checkstring(L, 2);
  for (const tdb_Field *f = k->fields; f->name; f++)
    if (!strcmp(f->name, key)) { push_field(L, o, f); return 1; }
  if (!strcmp(key, "to_table")) {
    lua_pushvalue(L, lua_upvalueindex(2));
    return 1;
  }
  return 0;
}

static int object_newindex(lua_State *L) {
  return luaL_error(L, "%s", class_of(L)->readonly);
}

/* a == b: the same row (equal key fields). */
static int object_eq(lua_State *L) {
  const tdb_Class *k = class_of(L);
  const char *a = luaL_testudata(L, 1, k->name), *b = luaL_testudata(L, 2, k->name);
  int same = a && b;
  for (const tdb_Field *f = k->fields; same && f->name; f++)
    if (f->key)
      same = *(const long long *)(const void *)(a + f->offset)
             == *(const long long *)(const void *)(b + f->offset);
  lua_pushboolean(L, same);
  return 1;
}

/* tostring(obj): the class's format, given the first field (the id) in decimal. */
static int object_tostring(lua_State *L) {
  const tdb_Class *k = class_of(L);
  const char *o = luaL_checkudata(L, 1, k->name);
  char id[TDB_INT8_BUF];
  (void)tdb_int8_text(id, *(const long long *)(const void *)(o + k->fields[0].offset));
  k->tostring(L, o, id);
  return 1;
}

/* JSON straight from the result: the fields, names and null handling of
 * to_table() (so the same JSON as to_table() + a JSON encoder), without the
 * object or the table. int8 values are written exactly. */
int tdb_json_row(tdb_Buf *b, const tdb_Class *k, const PGresult *r, int row) {
  char t[TDB_TIME_BUF];
  tdb_json_open(b, '{');
  for (const tdb_Field *f = k->fields; f->name; f++) {
    int null = PQgetisnull(r, row, f->col);
    if (null && !f->null) continue;
    tdb_json_key(b, f->name);
    if (null) { tdb_json_null(b); continue; }
    switch (f->type) {
      case TDB_F_INT64: tdb_json_int64(b, tdb_get_int8(r, row, f->col)); break;
      case TDB_F_BOOL: tdb_json_bool(b, tdb_get_bool(r, row, f->col)); break;
      case TDB_F_TIME:
        tdb_get_time(r, row, f->col, t);
        (void)tdb_json_str(b, t, strlen(t));
        break;
      default:
        if (!tdb_json_str(b, PQgetvalue(r, row, f->col), (size_t)PQgetlength(r, row, f->col)))
          return 0;
    }
  }
  tdb_json_close(b, '}');
  return 1;
}

int tdb_json_done(tdb_Buf *b, int ok) {
  if (ok) { tdb_buf_result(b); return 1; }
  lua_settop(b->L, b->idx - 1);
  return tdb_push_error(b->L, "internal", NULL, NULL,
                        "a text column is not UTF-8: the database's encoding must be UTF8");
}

int tdb_push_row(lua_State *L, const tdb_Class *k, const PGresult *r) {
  tdb_Buf b;
  if (!TDB_AS_JSON(L)) { k->push(L, r, 0); return 1; }
  tdb_buf_init(L, &b, TDB_JSON_MAX);
  return tdb_json_done(&b, tdb_json_row(&b, k, r, 0));
}

static void set_method(lua_State *L, const tdb_Class *k, const char *name,
                       lua_CFunction fn) {
  lua_pushlightuserdata(L, (void *)k);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
}

void tdb_set_class(lua_State *L, const tdb_Class *k) {
  lua_pushlightuserdata(L, (void *)k);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
}

void tdb_class_open(lua_State *L, const tdb_Class *k) {
  luaL_newmetatable(L, k->name);
  lua_pushlightuserdata(L, (void *)k);        /* also under k's address (tdb_set_class) */
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)k);
  lua_pushlightuserdata(L, (void *)k);
  lua_pushcclosure(L, object_to_table, 1);
  lua_pushcclosure(L, object_index, 2);
  lua_setfield(L, -2, "__index");
  set_method(L, k, "__newindex", object_newindex);
  set_method(L, k, "__eq", object_eq);
  set_method(L, k, "__tostring", object_tostring);
  lua_pop(L, 1);
}
