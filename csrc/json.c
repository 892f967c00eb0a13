/* json.c: strict JSON (RFC 8259). The writer appends to a tdb_Buf, from C
 * values (strings, int8, booleans: enough for a row of a PGresult) or from
 * Lua values (claims); the reader builds Lua values from untrusted text and
 * never raises on bad input. */
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "tdb.h"

#define JSON_DEPTH 32                 /* deepest nesting read or written */
#define JSON_SAFE  9007199254740991LL /* 2^53 - 1: integers beyond are refused */

/* Append buffer ---------------------------------------------------------- */
void tdb_buf_init(lua_State *L, tdb_Buf *b, size_t max) {
  b->L = L;
  b->n = 0;
  b->cap = max < 256 ? max : 256;
  b->max = max;
  b->sep = 0;
  b->p = (char *)tdb_newudata(L, b->cap);
  b->idx = lua_gettop(L);
}

char *tdb_buf_room(tdb_Buf *b, size_t k) {
  if (b->cap - b->n < k) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    if (k > b->max - b->n)
      luaL_error(b->L, "tododb: output longer than %f bytes", (lua_Number)b->max);
    while (cap - b->n < k) cap *= 2;
    if (cap > b->max) cap = b->max;
    p = (char *)tdb_newudata(b->L, cap);
    memcpy(p, b->p, b->n);
    lua_replace(b->L, b->idx);
    b->p = p;
    b->cap = cap;
  }
  return b->p + b->n;
}

void tdb_buf_add(tdb_Buf *b, const void *s, size_t k) {
  if (k) memcpy(tdb_buf_room(b, k), s, k);
  b->n += k;
}

static void buf_addc(tdb_Buf *b, char c) {
  *tdb_buf_room(b, 1) = c;
  b->n++;
}

void tdb_buf_result(tdb_Buf *b) {
  lua_pushlstring(b->L, b->p, b->n);
  lua_replace(b->L, b->idx);
}

/* Writer from C values --------------------------------------------------- */
/* A comma when a value precedes this one at the same level. */
static void value_start(tdb_Buf *b) {
  if (b->sep) buf_addc(b, ',');
  b->sep = 1;
}

void tdb_json_open(tdb_Buf *b, char c) {
  value_start(b);
  buf_addc(b, c);
  b->sep = 0;
}

void tdb_json_close(tdb_Buf *b, char c) {
  buf_addc(b, c);
  b->sep = 1;
}

void tdb_json_key(tdb_Buf *b, const char *k) {
  size_t n = strlen(k);
  char *o;
  if (b->sep) buf_addc(b, ',');
  o = tdb_buf_room(b, n + 3);
  o[0] = '"';
  memcpy(o + 1, k, n);
  o[n + 1] = '"';
  o[n + 2] = ':';
  b->n += n + 3;
  b->sep = 0;
}

/* The letter of a two-character escape for control byte c, or 0. */
static char short_escape(unsigned c) {
  switch (c) {
  case '\b': return 'b';
  case '\f': return 'f';
  case '\n': return 'n';
  case '\r': return 'r';
  case '\t': return 't';
  default: return 0;
  }
}

/* The string body with its quotes; 0 when s is not valid UTF-8. */
static int put_string(tdb_Buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s, *e = p + n, *run;
  buf_addc(b, '"');
  while (p < e) {
    unsigned c;
    size_t k;
    char esc[6] = { '\\', 'u', '0', '0', 0, 0 };
    for (run = p; p < e && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\'; p++) {}
    tdb_buf_add(b, run, (size_t)(p - run));
    if (p == e) break;
    c = *p;
    if (c >= 0x80) {
      if (!(k = tdb_utf8_next((const char *)p, (size_t)(e - p)))) return 0;
      tdb_buf_add(b, p, k);
      p += k;
      continue;
    }
    p++;
    esc[1] = c == '"' || c == '\\' ? (char)c : short_escape(c);
    if (esc[1]) tdb_buf_add(b, esc, 2);
    else {
      esc[1] = 'u';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      tdb_buf_add(b, esc, 6);
    }
  }
  buf_addc(b, '"');
  return 1;
}

int tdb_json_str(tdb_Buf *b, const char *s, size_t n) {
  value_start(b);
  return put_string(b, s, n);
}

void tdb_json_int64(tdb_Buf *b, long long v) {
  char buf[TDB_INT8_BUF];
  size_t n = tdb_int8_text(buf, v);
  value_start(b);
  tdb_buf_add(b, buf, n);
}

int tdb_json_double(tdb_Buf *b, double d) {
  char buf[48], dp, *c;
  const char *ldp;
  int prec, n = 0;
  if (!isfinite(d)) return 0;
  for (prec = 15; prec <= 17; prec++) {          /* shortest that round-trips */
    n = snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  ldp = localeconv()->decimal_point;
  if ((dp = ldp && ldp[0] ? ldp[0] : '.') != '.')
    for (c = buf; *c; c++) if (*c == dp) *c = '.';
  if (strspn(buf, "-0123456789") == (size_t)n) {  /* stays a float when read */
    buf[n++] = '.';
    buf[n++] = '0';
  }
  value_start(b);
  tdb_buf_add(b, buf, (size_t)n);
  return 1;
}

void tdb_json_bool(tdb_Buf *b, int v) {
  value_start(b);
  if (v) tdb_buf_add(b, "true", 4);
  else tdb_buf_add(b, "false", 5);
}

void tdb_json_null(tdb_Buf *b) {
  value_start(b);
  tdb_buf_add(b, "null", 4);
}

void tdb_json_raw(tdb_Buf *b, const char *s, size_t n) {
  value_start(b);
  tdb_buf_add(b, s, n);
}

/* Writer from Lua values ------------------------------------------------ */
/* Each returns NULL, or why the value cannot be JSON (bad data); a type
 * JSON has no form for raises, naming argument arg. */
static const char *lua_value(lua_State *L, tdb_Buf *b, int idx, int arg, int depth);

size_t tdb_json_arraylen(lua_State *L, int idx) {
  size_t count = 0;
  long long k, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER || !tdb_to_int64(L, -1, &k) || k < 1) {
      lua_pop(L, 1);
      return 0;
    }
    count++;
    if (k > max) max = k;
  }
  return count > 0 && (size_t)max == count ? count : 0;
}

static const char *members(lua_State *L, tdb_Buf *b, int idx, int arg, int depth) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn;
    const char *k, *why;
    if (lua_type(L, -2) != LUA_TSTRING)
      tdb_argerror(L, arg, "cannot encode a table mixing array and string keys"
                   " (or with %s keys) in JSON", luaL_typename(L, -2));
    k = lua_tolstring(L, -2, &kn);
    if (!tdb_json_str(b, k, kn)) why = "cannot encode a key that is not valid UTF-8 in JSON";
    else {
      buf_addc(b, ':');
      b->sep = 0;
      why = lua_value(L, b, lua_gettop(L), arg, depth + 1);
    }
    if (why) {
      lua_pop(L, 2);
      return why;
    }
    lua_pop(L, 1);
  }
  return NULL;
}

/* Integers within +-(2^53 - 1) as integers, other numbers as floats (which
 * the reader keeps apart); an integer beyond (Lua 5.4) is refused, as the
 * reader would refuse it. */
static const char *lua_number(lua_State *L, tdb_Buf *b, int idx) {
  long long v;
  if (tdb_to_int64(L, idx, &v) && v >= -JSON_SAFE && v <= JSON_SAFE)
    tdb_json_int64(b, v);
#if TDB_HAS_INT64
  else if (lua_isinteger(L, idx))
    return "cannot encode an integer beyond +-(2^53 - 1) in JSON";
#endif
  else if (!tdb_json_double(b, (double)lua_tonumber(L, idx)))
    return "cannot encode NaN or an infinity in JSON";
  return NULL;
}

static const char *lua_value(lua_State *L, tdb_Buf *b, int idx, int arg, int depth) {
  size_t n, i;
  const char *s, *why = NULL;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &n);
    return tdb_json_str(b, s, n) ? NULL : "cannot encode a string that is not valid UTF-8 in JSON";
  case LUA_TNUMBER:
    return lua_number(L, b, idx);
  case LUA_TBOOLEAN:
    tdb_json_bool(b, lua_toboolean(L, idx));
    return NULL;
  case LUA_TLIGHTUSERDATA:
    if (tdb_is_null(L, idx)) { tdb_json_null(b); return NULL; }
    break;
  case LUA_TTABLE:
    if (depth >= JSON_DEPTH) return "cannot encode tables nested deeper than 32 (a cycle?) in JSON";
    luaL_checkstack(L, 6, "tododb: JSON too deep");
    if ((n = tdb_json_arraylen(L, idx)) > 0) {
      tdb_json_open(b, '[');
      for (i = 1; i <= n && !why; i++) {
        lua_rawgeti(L, idx, (int)i);
        why = lua_value(L, b, lua_gettop(L), arg, depth + 1);
        lua_pop(L, 1);
      }
      tdb_json_close(b, ']');
    } else {
      tdb_json_open(b, '{');
      why = members(L, b, idx, arg, depth);
      tdb_json_close(b, '}');
    }
    return why;
  default:
    break;
  }
  tdb_argerror(L, arg, "cannot encode a %s value in JSON", luaL_typename(L, idx));
  return NULL;
}

static int written(lua_State *L, const char *why) {
  return why ? tdb_push_error(L, "invalid", NULL, NULL, "%s", why) : 0;
}

int tdb_json_value(lua_State *L, tdb_Buf *b, int idx, int arg) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  return written(L, lua_value(L, b, idx, arg, 0));
}

int tdb_json_members(lua_State *L, tdb_Buf *b, int idx, int arg) {
  return written(L, members(L, b, idx, arg, 1));
}

/* Reader ----------------------------------------------------------------- */
typedef struct jreader {
  lua_State *L;
  const unsigned char *p, *e;
  char *scratch;              /* holds unescaped strings; >= input length */
  int depth;
} jreader;

static int jr_value(jreader *r);

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void jr_ws(jreader *r) {
  while (r->p < r->e && is_ws(*r->p)) r->p++;
}

static int jr_hex4(jreader *r, unsigned long *out) {
  int i;
  unsigned long v = 0;
  if (r->e - r->p < 4) return 0;
  for (i = 0; i < 4; i++) {
    unsigned char c = *r->p++;
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned long)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned long)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned long)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

static size_t utf8_put(char *o, unsigned long cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* At '"': pushes the string. Output never outruns input (\uXXXX: 6 -> <= 3
 * bytes, a surrogate pair: 12 -> 4), so scratch cannot overflow. */
static int jr_string(jreader *r) {
  char *o = r->scratch;
  unsigned long cp, lo;
  size_t k;
  r->p++;
  for (;;) {
    unsigned char c;
    if (r->p >= r->e) return 0;
    c = *r->p;
    if (c == '"') {
      r->p++;
      lua_pushlstring(r->L, r->scratch, (size_t)(o - r->scratch));
      return 1;
    }
    if (c < 0x20) return 0;
    if (c != '\\') {
      if (!(k = tdb_utf8_next((const char *)r->p, (size_t)(r->e - r->p)))) return 0;
      memcpy(o, r->p, k);
      o += k;
      r->p += k;
      continue;
    }
    if (++r->p >= r->e) return 0;
    switch (*r->p++) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '/': *o++ = '/'; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u':
      if (!jr_hex4(r, &cp)) return 0;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (r->e - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u') return 0;
        r->p += 2;
        if (!jr_hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) return 0;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF)
        return 0;
      o += utf8_put(o, cp);
      break;
    default:
      return 0;
    }
  }
}

static int is_digit(const jreader *r) {
  return r->p < r->e && *r->p >= '0' && *r->p <= '9';
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? ; integers within
 * +-(2^53 - 1) stay integers, others are refused (I-JSON, RFC 7493 2.2: on
 * LuaJIT they would lose digits or become strings, so 5.4 and LuaJIT could
 * disagree about a claim); numbers with a fraction or an exponent become
 * finite doubles (overflow to inf is refused). */
static int jr_number(jreader *r) {
  const unsigned char *s = r->p;
  int isint = 1, neg = 0;
  char buf[64], *end, dp;
  const char *ldp;
  size_t len, i;
  double d;
  if (r->p < r->e && *r->p == '-') { neg = 1; r->p++; }
  if (!is_digit(r)) return 0;
  if (*r->p == '0') r->p++;
  else while (is_digit(r)) r->p++;
  if (r->p < r->e && *r->p == '.') {
    isint = 0;
    r->p++;
    if (!is_digit(r)) return 0;
    while (is_digit(r)) r->p++;
  }
  if (r->p < r->e && (*r->p == 'e' || *r->p == 'E')) {
    isint = 0;
    r->p++;
    if (r->p < r->e && (*r->p == '+' || *r->p == '-')) r->p++;
    if (!is_digit(r)) return 0;
    while (is_digit(r)) r->p++;
  }
  len = (size_t)(r->p - s);
  if (len >= sizeof buf) return 0;
  if (isint) {
    long long m = 0;
    if (len - (size_t)neg > 16) return 0;       /* JSON_SAFE has 16 digits */
    for (i = (size_t)neg; i < len; i++) m = m * 10 + (s[i] - '0');
    if (m > JSON_SAFE) return 0;
    tdb_push_int64(r->L, neg ? -m : m);
    return 1;
  }
  memcpy(buf, s, len);
  buf[len] = '\0';
  ldp = localeconv()->decimal_point;
  if ((dp = ldp && ldp[0] ? ldp[0] : '.') != '.')
    for (i = 0; i < len; i++) if (buf[i] == '.') buf[i] = dp;
  d = strtod(buf, &end);
  if (end != buf + len || !isfinite(d)) return 0;
  lua_pushnumber(r->L, (lua_Number)d);
  return 1;
}

static int jr_literal(jreader *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->e - r->p) < n || memcmp(r->p, word, n) != 0) return 0;
  r->p += n;
  return 1;
}

static int jr_object(jreader *r) {
  lua_State *L = r->L;
  int t, dup;
  r->p++;
  lua_newtable(L);
  t = lua_gettop(L);
  jr_ws(r);
  if (r->p < r->e && *r->p == '}') { r->p++; return 1; }
  for (;;) {
    jr_ws(r);
    if (r->p >= r->e || *r->p != '"' || !jr_string(r)) return 0;
    lua_pushvalue(L, -1);
    lua_rawget(L, t);
    dup = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (dup) return 0;                          /* duplicate member name */
    jr_ws(r);
    if (r->p >= r->e || *r->p != ':') return 0;
    r->p++;
    if (!jr_value(r)) return 0;
    lua_rawset(L, t);
    jr_ws(r);
    if (r->p >= r->e) return 0;
    if (*r->p == '}') { r->p++; return 1; }
    if (*r->p++ != ',') return 0;
  }
}

static int jr_array(jreader *r) {
  lua_State *L = r->L;
  int t, n = 0;
  r->p++;
  lua_newtable(L);
  t = lua_gettop(L);
  jr_ws(r);
  if (r->p < r->e && *r->p == ']') { r->p++; return 1; }
  for (;;) {
    if (!jr_value(r)) return 0;
    lua_rawseti(L, t, ++n);
    jr_ws(r);
    if (r->p >= r->e) return 0;
    if (*r->p == ']') { r->p++; return 1; }
    if (*r->p++ != ',') return 0;
  }
}

static int jr_value(jreader *r) {
  int ok;
  jr_ws(r);
  if (r->p >= r->e) return 0;
  switch (*r->p) {
  case '{': case '[':
    if (++r->depth > JSON_DEPTH) return 0;
    luaL_checkstack(r->L, 4, "tododb: JSON too deep");
    ok = *r->p == '{' ? jr_object(r) : jr_array(r);
    r->depth--;
    return ok;
  case '"':
    return jr_string(r);
  case 't':
    if (!jr_literal(r, "true")) return 0;
    lua_pushboolean(r->L, 1);
    return 1;
  case 'f':
    if (!jr_literal(r, "false")) return 0;
    lua_pushboolean(r->L, 0);
    return 1;
  case 'n':
    if (!jr_literal(r, "null")) return 0;
    tdb_push_null(r->L);
    return 1;
  default:
    return jr_number(r);
  }
}

int tdb_json_decode(lua_State *L, const char *s, size_t n, int object) {
  int top = lua_gettop(L);
  char local[512];
  jreader r;
  memset(&r, 0, sizeof r);
  r.L = L;
  r.p = (const unsigned char *)s;
  r.e = r.p + n;
  r.depth = 0;
  jr_ws(&r);
  if (object && (r.p == r.e || *r.p != '{')) return 0;
  r.scratch = n <= sizeof local ? local : (char *)tdb_newudata(L, n);
  if (jr_value(&r)) {
    jr_ws(&r);
    if (r.p == r.e) {
      if (lua_gettop(L) == top + 2) lua_remove(L, top + 1);   /* the scratch */
      return 1;
    }
  }
  lua_settop(L, top);
  return 0;
}
