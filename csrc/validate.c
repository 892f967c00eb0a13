/* validate.c: the input rules — ids, UTF-8, email, title, description.
 * The migration's CHECK constraints mirror these rules. */
#include <string.h>
#include "tdb.h"

#define TITLE_MAX 200
#define DESCRIPTION_MAX 1000
#define EMAIL_MAX 254
#define LOCAL_MAX 64
#define LABEL_MAX 63

static int is_space(unsigned char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* The integer at idx: 1 and *out set; 0 when it is not an integer; -1 when
 * it is one outside int8. Raises for a type other than number or string
 * (strings only with strings set). */
static int read_integer(lua_State *L, int idx, int strings, const char *what,
                        long long *out) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    lua_Number d = lua_tonumber(L, idx);
    if (tdb_to_int64(L, idx, out)) return 1;
    return d == d && d != HUGE_VAL && d != -HUGE_VAL && floor(d) == d ? -1 : 0;
  }
  if (t == LUA_TSTRING && strings) {          /* decimal, as from a URL path */
    size_t n;
    const char *s = lua_tolstring(L, idx, &n), *p = s;
    unsigned long long v = 0, lim = (unsigned long long)LLONG_MAX;
    int neg = 0, big = 0;
    if (*p == '-') { neg = 1; p++; }
    if (p == s + n || (size_t)(p - s) > n) return 0;
    for (; p < s + n; p++) {
      if (*p < '0' || *p > '9') return 0;
      if (!big && v > (lim + (unsigned)neg - (unsigned)(*p - '0')) / 10) big = 1;
      else if (!big) v = v * 10 + (unsigned)(*p - '0');
    }
    if (big) return -1;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 1;
  }
  return tdb_argerror(L, idx, "%s must be %s, got %s", what,
                      strings ? "an integer or a decimal string" : "an integer",
                      luaL_typename(L, idx));
}

int tdb_check_id(lua_State *L, int idx, const char *what, long long *out) {
  int k = read_integer(L, idx, 1, "id", out);
  if (k == 0) return tdb_push_error(L, "invalid", "id", NULL, "%s id must be an integer", what);
  if (k < 0) return tdb_push_error(L, "not_found", NULL, NULL, "%s not found", what);
  return 0;
}

int tdb_check_int_field(lua_State *L, int arg, const char *field, int strings,
                        long long lo, long long hi, long long *out) {
  long long v = 0;              /* set by read_integer when it returns 1 */
  int k = 1;
  lua_getfield(L, arg, field);
  if (!lua_isnil(L, -1)) {
    int t = lua_type(L, -1);
    if (t != LUA_TNUMBER && !(strings && t == LUA_TSTRING))
      tdb_argerror(L, arg, "%s must be %s, got %s", field,
                   strings ? "an integer or a decimal string" : "an integer",
                   luaL_typename(L, -1));
    k = read_integer(L, -1, strings, field, &v) == 1 && v >= lo && v <= hi;
    if (k) *out = v;
  }
  lua_pop(L, 1);
  if (!k)
    return tdb_push_error(L, "invalid", field, NULL, "%s must be an integer from %lld to %lld",
                          field, lo, hi);
  return 0;
}

size_t tdb_utf8_next(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  unsigned c = s[0], cp, min;
  size_t len, i;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
  else return 0;
  if (n < len) return 0;
  for (i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

long tdb_utf8_len(const char *s, size_t n) {
  const char *e = s + n;
  long count = 0;
  size_t k;
  while (s < e) {
    if (*s == 0) return -1;
    if ((unsigned char)*s < 0x80) k = 1;
    else if (!(k = tdb_utf8_next(s, (size_t)(e - s)))) return -1;
    s += k;
    count++;
  }
  return count;
}

const char *tdb_check_email(const char *s, size_t n, char *buf, size_t *outlen) {
  const char *at = NULL, *label;
  size_t i, local;
  int ats = 0, dots = 0;
  while (n > 0 && is_space((unsigned char)*s)) { s++; n--; }
  while (n > 0 && is_space((unsigned char)s[n - 1])) n--;
  if (n == 0) return "email is required";
  if (n > EMAIL_MAX) return "email must be at most 254 characters";
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    /* ASCII only: one spelling per address, with no look-alike letters
     * (U+212A KELVIN SIGN), other normal forms or invisible characters. */
    if (ch >= 0x80) return "email must be ASCII (an international domain in punycode, xn--...)";
    if (ch <= 0x20 || ch == 0x7F) return "email must not contain spaces or control characters";
    buf[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    if (ch == '@') { ats++; at = buf + i; }
  }
  buf[n] = '\0';
  if (ats != 1) return "email must contain exactly one @";
  local = (size_t)(at - buf);
  if (local == 0 || local > LOCAL_MAX) return "the part of the email before @ must be 1 to 64 characters";
  label = at + 1;
  for (const char *p = at + 1; ; p++) {
    if (*p == '.' || *p == '\0') {
      size_t len = (size_t)(p - label);
      if (len == 0) return "email domain must be dot-separated labels, none empty";
      if (len > LABEL_MAX) return "email domain labels must be at most 63 characters";
      if (label[0] == '-' || p[-1] == '-') return "email domain labels must not start or end with a hyphen";
      if (*p == '\0') break;
      dots++;
      label = p + 1;
    } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
      return "email domain may contain only letters, digits, hyphens and dots";
  }
  if (dots == 0) return "email domain must contain a dot";
  *outlen = n;
  return NULL;
}

const char *tdb_check_title(const char **s, size_t *n) {
  const char *p = *s;
  size_t len = *n;
  long chars;
  while (len > 0 && is_space((unsigned char)*p)) { p++; len--; }
  while (len > 0 && is_space((unsigned char)p[len - 1])) len--;
  if ((chars = tdb_utf8_len(p, len)) < 0) return "title must be valid UTF-8 without NUL bytes";
  if (chars < 1 || chars > TITLE_MAX) return "title must be 1 to 200 characters";
  *s = p;
  *n = len;
  return NULL;
}

const char *tdb_check_description(const char *s, size_t n) {
  long chars = tdb_utf8_len(s, n);
  if (chars < 0) return "description must be valid UTF-8 without NUL bytes";
  if (chars > DESCRIPTION_MAX) return "description must be at most 1000 characters";
  return NULL;
}

/* tododb.core.normalize_email(s) -> normalised email | nil, err */
static int validate_email(lua_State *L) {
  size_t n, out;
  const char *s = luaL_checklstring(L, 1, &n);
  char buf[EMAIL_MAX + 2];
  const char *msg = tdb_check_email(s, n, buf, &out);
  if (msg) return tdb_push_error(L, "invalid", "email", NULL, "%s", msg);
  lua_pushlstring(L, buf, out);
  return 1;
}

void tdb_validate_open(lua_State *L) {
  lua_pushcfunction(L, validate_email);
  lua_setfield(L, -2, "normalize_email");
}
