/* password.c: argon2id through libsodium — hash, verify, needs_rehash and
 * the dummy verification that makes an unknown email cost what a known one does. */
#include <stdio.h>
#include <string.h>
#include <sodium.h>
#include "tdb.h"

void tdb_password_config(lua_State *L, int idx, tdb_Conn *c) {
  c->pwhash_ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
  c->pwhash_mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
  if (!lua_istable(L, idx)) return;
  lua_getfield(L, idx, "pwhash");
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (!strcmp(s, "interactive")) {
    } else if (!strcmp(s, "moderate")) {
      c->pwhash_ops = crypto_pwhash_OPSLIMIT_MODERATE;
      c->pwhash_mem = crypto_pwhash_MEMLIMIT_MODERATE;
    } else if (!strcmp(s, "min")) {           /* for test suites only */
      c->pwhash_ops = crypto_pwhash_OPSLIMIT_MIN;
      c->pwhash_mem = crypto_pwhash_MEMLIMIT_MIN;
    } else
      tdb_argerror(L, idx, "pwhash must be \"interactive\", \"moderate\", \"min\" or {ops=, mem=}");
  } else if (lua_istable(L, -1)) {
    lua_Number ops, mem;
    lua_getfield(L, -1, "ops");
    lua_getfield(L, -2, "mem");
    ops = lua_tonumber(L, -2);
    mem = lua_tonumber(L, -1);
    if (!(ops >= crypto_pwhash_OPSLIMIT_MIN && ops <= 64))
      tdb_argerror(L, idx, "pwhash.ops must be 1 to 64");
    if (!(mem >= crypto_pwhash_MEMLIMIT_MIN && mem <= 4294967296.0))
      tdb_argerror(L, idx, "pwhash.mem must be 8192 to 4294967296 bytes");
    c->pwhash_ops = (unsigned long long)ops;
    c->pwhash_mem = (size_t)mem;
    lua_pop(L, 2);
  } else if (!lua_isnil(L, -1))
    tdb_argerror(L, idx, "pwhash must be a string or a table, got %s", luaL_typename(L, -1));
  lua_pop(L, 1);
}

int tdb_password_hash(tdb_Conn *c, const char *pw, size_t n, char *out) {
  return crypto_pwhash_str(out, pw, n, c->pwhash_ops, c->pwhash_mem) == 0;
}

int tdb_password_verify(const char *hash, const char *pw, size_t n) {
  return crypto_pwhash_str_verify(hash, pw, n) == 0;
}

/* Upgrade only: true when the stored hash is not argon2id, or is weaker than
 * the connection's cost on one axis and stronger on none. A login through a
 * cheaper connection never replaces a stronger hash. */
int tdb_password_needs_rehash(tdb_Conn *c, const char *hash) {
  unsigned long m_kib, t;
  unsigned p;
  if (crypto_pwhash_str_needs_rehash(hash, c->pwhash_ops, c->pwhash_mem) == 0) return 0;
  if (sscanf(hash, "$argon2id$v=19$m=%lu,t=%lu,p=%u$", &m_kib, &t, &p) != 3) return 1;
  return (unsigned long long)m_kib * 1024 <= c->pwhash_mem && t <= c->pwhash_ops;
}

/* One verification that always fails, at the argon2id parameters `params`
 * ("$argon2id$v=19$m=…,t=…,p=…$", as a stored hash starts) or, when NULL or
 * unusable, at the connection's cost. The dummy hash is assembled from the
 * parameters and random salt and tag: verifying it costs exactly what
 * verifying a real hash with those parameters costs, and nothing is hashed
 * beforehand, so a connection's first login costs no more than its others. */
void tdb_password_dummy(tdb_Conn *c, const char *params, const char *pw, size_t n) {
  unsigned char salt[16], tag[32];
  char hash[crypto_pwhash_STRBYTES];
  unsigned long m_kib = 0, t = 0;
  unsigned p = 0;
  size_t len;
  if (!params || sscanf(params, "$argon2id$v=19$m=%lu,t=%lu,p=%u$", &m_kib, &t, &p) != 3
      || m_kib < crypto_pwhash_MEMLIMIT_MIN / 1024 || m_kib > 4194304UL || t < 1 || t > 64
      || p != 1) {
    m_kib = (unsigned long)(c->pwhash_mem / 1024);
    t = (unsigned long)c->pwhash_ops;
  }
  randombytes_buf(salt, sizeof salt);
  randombytes_buf(tag, sizeof tag);
  snprintf(hash, sizeof hash, "$argon2id$v=19$m=%lu,t=%lu,p=1$", m_kib, t);
  len = strlen(hash);
  sodium_bin2base64(hash + len, sizeof hash - len, salt, sizeof salt,
                    sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  len = strlen(hash);
  hash[len++] = '$';
  sodium_bin2base64(hash + len, sizeof hash - len, tag, sizeof tag,
                    sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  if (crypto_pwhash_str_verify(hash, pw, n) == 0) sodium_memzero(hash, sizeof hash); /* never */
}
