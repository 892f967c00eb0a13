/* decode.c: values out of a PGresult — int8, bool, timestamps — by type,
 * for db:query's rows and for the row objects (Todo, User). Nothing here
 * talks to the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tdb.h"

/* Type OIDs (pg_type.oid; fixed for the built-in types). */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_TIMESTAMPTZ 1184

/* ---- text formats ---------------------------------------------------------- */

/* PostgreSQL's int8 text: an optional '-', then digits ("" is 0). */
long long tdb_parse_int8(const char *s) {
  unsigned long long v = 0;
  int neg = *s == '-';
  for (s += neg; *s >= '0' && *s <= '9'; s++) v = v * 10 + (unsigned)(*s - '0');
  return neg ? (v ? -(long long)(v - 1) - 1 : 0) : (long long)v;
}

static long days_from_civil(long y, unsigned m, unsigned d) {
  long era;
  unsigned yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned)(y - era * 400);
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (long)doe - 719468;
}

static void civil_from_days(long z, long *y, unsigned *m, unsigned *d) {
  long era;
  unsigned doe, yoe, doy, mp;
  z += 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = (unsigned)(z - era * 146097);
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  *y = (long)yoe + era * 400;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y += *m <= 2;
}

static int digits(const char *s, int n, long *out) {
  long v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

/* "00" to "99": two digits per table read, not one division per digit. */
static const char pairs[201] =
  "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
  "8081828384858687888990919293949596979899";

static void put2(char *out, unsigned v) {
  out[0] = pairs[2 * v];
  out[1] = pairs[2 * v + 1];
}

size_t tdb_int8_text(char *buf, long long v) {
  char tmp[20], *p = tmp + sizeof tmp;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  size_t n;
  for (; u >= 100; u /= 100) { p -= 2; put2(p, (unsigned)(u % 100)); }
  if (u >= 10) { p -= 2; put2(p, (unsigned)u); }
  else *--p = (char)('0' + u);
  if (v < 0) *--p = '-';
  n = (size_t)(tmp + sizeof tmp - p);
  memcpy(buf, p, n);
  buf[n] = '\0';
  return n;
}

/* Writes "YYYY-MM-DDTHH:MM:SS.ffffffZ" and its NUL (TDB_TIME_BUF bytes) for
 * day `days` after 1970-01-01, `secs` (0..86399) into it and `us`
 * (0..999999): the one ISO-8601 writer, for binary and text results alike.
 * 0 (nothing written) when the year is outside 0000-9999. */
static int put_iso(char *out, long days, unsigned secs, unsigned us) {
  long y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  if (y < 0 || y > 9999) return 0;
  put2(out, (unsigned)y / 100); put2(out + 2, (unsigned)y % 100); out[4] = '-';
  put2(out + 5, m); out[7] = '-';
  put2(out + 8, d); out[10] = 'T';
  put2(out + 11, secs / 3600); out[13] = ':';
  put2(out + 14, secs / 60 % 60); out[16] = ':';
  put2(out + 17, secs % 60); out[19] = '.';
  put2(out + 20, us / 10000); put2(out + 22, us / 100 % 100); put2(out + 24, us % 100);
  out[26] = 'Z';
  out[27] = '\0';
  return 1;
}

/* Normalises a timestamptz in ISO DateStyle to "YYYY-MM-DDTHH:MM:SS.ffffffZ";
 * out needs TDB_TIME_BUF bytes. Returns 0 when s is not in that form. */
static int iso_utc(const char *s, char *out) {
  long Y, M, D, h, mi, sec, us = 0, oh = 0, om = 0, os = 0, days, t;
  int sign;
  const char *p = s + 19;
  if (strlen(s) < 22 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':'
      || s[16] != ':' || !digits(s, 4, &Y) || !digits(s + 5, 2, &M)
      || !digits(s + 8, 2, &D) || !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi)
      || !digits(s + 17, 2, &sec))
    return 0;
  if (*p == '.') {
    int n = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, n++) if (n < 6) us = us * 10 + (*p - '0');
    if (n == 0) return 0;
    for (; n < 6; n++) us *= 10;
  }
  if (*p != '+' && *p != '-') return 0;
  sign = *p++ == '-' ? -1 : 1;
  if (!digits(p, 2, &oh)) return 0;
  p += 2;
  if (*p == ':') { if (!digits(p + 1, 2, &om)) return 0; p += 3; }
  if (*p == ':') { if (!digits(p + 1, 2, &os)) return 0; p += 3; }
  if (*p) return 0;                      /* " BC" and anything else: not ours */
  days = days_from_civil(Y, (unsigned)M, (unsigned)D);
  t = h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60 + os);
  days += t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
  t -= (t >= 0 ? t / 86400 : -((-t + 86399) / 86400)) * 86400;
  return put_iso(out, days, (unsigned)t, (unsigned)us);
}

/* ---- one value ----------------------------------------------------------- */

/* Big-endian integer of n bytes (binary format). */
static long long be_int(const char *p, int n) {
  unsigned long long v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | (unsigned char)p[i];
  if (n < 8 && (v >> (8 * n - 1))) v |= ~0ULL << (8 * n);      /* sign */
  return (long long)v;
}

/* The same for 8 bytes (int8, timestamptz), written out: one load and a
 * byte swap. */
static long long be8(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (long long)((unsigned long long)u[0] << 56 | (unsigned long long)u[1] << 48
                     | (unsigned long long)u[2] << 40 | (unsigned long long)u[3] << 32
                     | (unsigned long long)u[4] << 24 | (unsigned long long)u[5] << 16
                     | (unsigned long long)u[6] << 8 | (unsigned long long)u[7]);
}

long long tdb_get_int8(const PGresult *r, int row, int col) {
  const char *v = PQgetvalue(r, row, col);
  int n;
  if (PQfformat(r, col) == 0) return tdb_parse_int8(v);
  n = PQgetlength(r, row, col);
  return n == 8 ? be8(v) : be_int(v, n);
}

int tdb_get_bool(const PGresult *r, int row, int col) {
  const char *v = PQgetvalue(r, row, col);
  return PQfformat(r, col) == 0 ? v[0] == 't' : v[0] != 0;
}

/* Microseconds since 2000-01-01 00:00:00 UTC (binary timestamptz) as
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ", as to_char(… AT TIME ZONE 'UTC',
 * 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') wrote it; outside years 0000-9999
 * (PostgreSQL's ±infinity among them) "infinity" or "-infinity". */
static void format_utc(long long us, char *out) {
  long long day_us = 86400000000LL, days = us / day_us, t = us % day_us;
  unsigned secs;
  if (t < 0) { t += day_us; days--; }
  secs = (unsigned)(t / 1000000);
  days += 10957;                                            /* 2000 -> 1970 */
  if (!put_iso(out, (long)days, secs, (unsigned)(t - (long long)secs * 1000000)))
    strcpy(out, us < 0 ? "-infinity" : "infinity");
}

void tdb_get_time(const PGresult *r, int row, int col, char *out) {
  const char *v = PQgetvalue(r, row, col);
  size_t n;
  if (PQfformat(r, col) == 1) { format_utc(be8(v), out); return; }
  n = (size_t)PQgetlength(r, row, col);
  if (PQftype(r, col) == OID_TIMESTAMPTZ && iso_utc(v, out)) return;
  if (n >= TDB_TIME_BUF) n = TDB_TIME_BUF - 1;       /* already text */
  memcpy(out, v, n);
  out[n] = '\0';
}

/* Pushes field (row, col) decoded by its type; nil for NULL. */
static void push_value(lua_State *L, const PGresult *r, int row, int col) {
  const char *v;
  char iso[TDB_TIME_BUF];
  if (PQgetisnull(r, row, col)) { lua_pushnil(L); return; }
  v = PQgetvalue(r, row, col);
  switch (PQftype(r, col)) {
    case OID_INT8: case OID_INT2: case OID_INT4: case OID_OID:
      tdb_push_int64(L, tdb_parse_int8(v)); break;
    case OID_BOOL: lua_pushboolean(L, v[0] == 't'); break;
    case OID_FLOAT4: case OID_FLOAT8: lua_pushnumber(L, strtod(v, NULL)); break;
    case OID_TIMESTAMPTZ:
      if (iso_utc(v, iso)) { lua_pushstring(L, iso); break; }
      /* fall through */
    default: lua_pushlstring(L, v, (size_t)PQgetlength(r, row, col));
  }
}


/* ---- whole rows -------------------------------------------------------------- */

void tdb_push_rows(lua_State *L, const PGresult *r) {
  int nrows = PQntuples(r), ncols = PQnfields(r);
  lua_createtable(L, nrows, 0);
  for (int row = 0; row < nrows; row++) {
    lua_createtable(L, 0, ncols);
    for (int col = 0; col < ncols; col++) {
      push_value(L, r, row, col);
      lua_setfield(L, -2, PQfname(r, col));
    }
    lua_rawseti(L, -2, row + 1);
  }
}
