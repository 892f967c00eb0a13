/* password.c: argon2id through libsodium — hash, verify, needs_rehash and
 * the dummy verification that makes an unknown email cost a real check. */
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

/* One verification that always fails, at the connection's cost. The dummy
 * hash is made once per connection, from a random password. */
void tdb_password_dummy(tdb_Conn *c, const char *pw, size_t n) {
  if (!c->dummy_hash[0]) {
    unsigned char rnd[16];
    randombytes_buf(rnd, sizeof rnd);
    if (crypto_pwhash_str(c->dummy_hash, (const char *)rnd, sizeof rnd,
                          c->pwhash_ops, c->pwhash_mem) != 0)
      c->dummy_hash[0] = '\0';
  }
  if (c->dummy_hash[0] && crypto_pwhash_str_verify(c->dummy_hash, pw, n) == 0)
    c->dummy_hash[0] = '\0';                /* cannot happen; never a match */
}
