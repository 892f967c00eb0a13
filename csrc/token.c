/* token.c: JSON Web Tokens (compact JWS) over libsodium: HS256 and EdDSA
 * (Ed25519); headers and claims go through json.c. The key decides the
 * algorithm; the token header never does. Untrusted input is parsed into
 * fixed buffers on the C stack or Lua-owned memory, so a Lua error (out of
 * memory) cannot leak anything. */
#include <math.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "tdb.h"

#define TOK_MAX      16384                 /* longest token accepted */
#define SEG_MAX      (TOK_MAX / 4 * 3)     /* longest decoded segment */
#define JSON_OUT_MAX (64 * 1024)           /* longest JSON written */
#define HS_MIN       32                    /* shortest HS256 secret */
#define TIME_MAX     253402300799.0        /* 9999-12-31T23:59:59Z */
#define LEEWAY       30                    /* default clock skew allowed, s */
#define ED_PK        crypto_sign_PUBLICKEYBYTES
#define ED_SEED      crypto_sign_SEEDBYTES
#define ED_SIG       crypto_sign_BYTES
#define HS_SIG       crypto_auth_hmacsha256_BYTES

/* base64url without padding (RFC 7515 section 2), strict on input: the
 * alphabet only, no padding, no impossible length, unused bits zero. */
#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING

static void b64_encode(tdb_Buf *b, const unsigned char *s, size_t n) {
  size_t len = sodium_base64_ENCODED_LEN(n, B64URL);      /* with the NUL */
  sodium_bin2base64(tdb_buf_room(b, len), len, s, n, B64URL);
  b->n += len - 1;
}

/* The decoded length, or -1 (also when it would exceed cap). */
static long b64_decode(const char *s, size_t n, unsigned char *out, size_t cap) {
  size_t len;
  if (sodium_base642bin(out, cap, s, n, NULL, &len, NULL, B64URL) != 0) return -1;
  return (long)len;
}

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Keys ------------------------------------------------------------------- */
enum { KEY_HS = 1, KEY_JWK, KEY_JWKS };

typedef struct key {
  int kind;
  const char *secret;         /* KEY_HS */
  size_t len;
  unsigned char pk[ED_PK];    /* KEY_JWK */
  int has_d;
  int nusable;                /* KEY_JWKS: Ed25519 signing keys in the set */
} key;

/* Field k of the table at idx as a string, NULL when absent; sets *bad
 * when present but not a string. The table keeps the string alive. */
static const char *field_str(lua_State *L, int idx, const char *k, size_t *n, int *bad) {
  const char *s = NULL;
  lua_getfield(L, idx, k);
  if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, n);
  else if (!lua_isnil(L, -1)) *bad = 1;
  lua_pop(L, 1);
  return s;
}

static int streq(const char *s, size_t n, const char *lit) {
  return s && n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* Reads the Ed25519 JWK at idx: public key into pk, seed into seed when
 * seed is non-NULL and the JWK has d (else seed is zeroed). Returns NULL,
 * or what is wrong; *foreign is set when it is merely not an Ed25519
 * signing key (other kty/crv, use other than sig, alg other than EdDSA). */
static const char *jwk_read(lua_State *L, int idx, unsigned char pk[ED_PK],
                            unsigned char *seed, int *has_d, int *foreign) {
  size_t n, xn = 0, dn = 0;
  int bad = 0;
  const char *s, *x, *d;
  unsigned char sd[ED_SEED], sk[crypto_sign_SECRETKEYBYTES], xpk[ED_PK];
  *foreign = 0;
  *has_d = 0;
  s = field_str(L, idx, "kty", &n, &bad);
  if (!streq(s, n, "OKP")) { *foreign = 1; return "JWK kty must be \"OKP\""; }
  s = field_str(L, idx, "crv", &n, &bad);
  if (!streq(s, n, "Ed25519")) { *foreign = 1; return "JWK crv must be \"Ed25519\""; }
  if ((s = field_str(L, idx, "use", &n, &bad)) && !streq(s, n, "sig")) {
    *foreign = 1;
    return "JWK use must be \"sig\"";
  }
  if ((s = field_str(L, idx, "alg", &n, &bad)) && !streq(s, n, "EdDSA")) {
    *foreign = 1;
    return "JWK alg must be \"EdDSA\"";
  }
  x = field_str(L, idx, "x", &xn, &bad);
  d = field_str(L, idx, "d", &dn, &bad);
  field_str(L, idx, "kid", &n, &bad);
  if (bad) return "JWK fields kty, crv, use, alg, kid, x, d must be strings";
  if (d) {
    if (b64_decode(d, dn, sd, sizeof sd) != ED_SEED) {
      sodium_memzero(sd, sizeof sd);
      return "JWK d must be a base64url 32-byte Ed25519 seed";
    }
    crypto_sign_seed_keypair(pk, sk, sd);
    sodium_memzero(sk, sizeof sk);
    if (seed) memcpy(seed, sd, ED_SEED);
    sodium_memzero(sd, sizeof sd);
    *has_d = 1;
  } else if (seed)
    memset(seed, 0, ED_SEED);
  if (x) {
    if (b64_decode(x, xn, xpk, sizeof xpk) != ED_PK)
      return "JWK x must be a base64url 32-byte Ed25519 public key";
    if (!d) memcpy(pk, xpk, ED_PK);
    else if (sodium_memcmp(pk, xpk, ED_PK) != 0) return "JWK x does not match d";
  } else if (!d)
    return "JWK has no x";
  return NULL;
}

/* What a key is for: verifying (a JWK or JWK set is then data, perhaps
 * fetched at run time, and its defects are answered, not raised), signing,
 * or inspecting one JWK (jwk_public, jwk_thumbprint). */
enum { USE_VERIFY, USE_SIGN, USE_ONE };

/* Raises with msg unless the key is for verifying; returns msg. */
static const char *key_bad(lua_State *L, int arg, int use, const char *msg) {
  if (use != USE_VERIFY) tdb_argerror(L, arg, "%s", msg);
  return msg;
}

/* Classifies the key argument: a string secret (HS256), or a JWK or JWK set
 * as a table or JSON text (EdDSA). JSON text replaces the argument with its
 * table. A key of the wrong type or an HS256 secret that is too short
 * raises (misuse, not a bad token); other defects of a JWK or set raise
 * too, except for verifying, where NULL or why no key is usable comes back
 * (the stack above arg is then not restored). */
static const char *key_load(lua_State *L, int arg, key *k, int use) {
  const char *err;
  int foreign;
  memset(k, 0, sizeof *k);
  if (lua_type(L, arg) == LUA_TSTRING) {
    size_t n, i = 0;
    const char *s = lua_tolstring(L, arg, &n);
    while (i < n && is_ws((unsigned char)s[i])) i++;
    if (i == n || s[i] != '{') {
      if (n < HS_MIN) tdb_argerror(L, arg, "HS256 secret must be at least 32 bytes");
      k->kind = KEY_HS;
      k->secret = s;
      k->len = n;
      return NULL;
    }
    /* JSON: a JWK or JWK set (so a secret may not start with '{') */
    if (!tdb_json_decode(L, s, n, 1))
      return key_bad(L, arg, use, "key starts with '{' but is not a JSON JWK or JWK set");
    lua_replace(L, arg);
  }
  if (!lua_istable(L, arg))
    tdb_argerror(L, arg, "string secret, JWK or JWK set expected");
  lua_getfield(L, arg, "keys");
  if (!lua_isnil(L, -1)) {
    int i, n, has_d;
    unsigned char pk[ED_PK];
    if (use == USE_SIGN) tdb_argerror(L, arg, "a JWK set cannot sign; pass one private JWK");
    if (use == USE_ONE) tdb_argerror(L, arg, "an Ed25519 JWK expected");
    if (!lua_istable(L, -1)) return "JWK set: keys is not an array";
    n = (int)tdb_rawlen(L, -1);
    for (i = 1; i <= n; i++) {           /* other and broken members are skipped */
      lua_rawgeti(L, -1, i);
      if (lua_istable(L, -1) && !jwk_read(L, lua_gettop(L), pk, NULL, &has_d, &foreign))
        k->nusable++;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!k->nusable) return "JWK set holds no usable Ed25519 key";
    k->kind = KEY_JWKS;
    return NULL;
  }
  lua_pop(L, 1);
  if ((err = jwk_read(L, arg, k->pk, NULL, &k->has_d, &foreign)))
    return key_bad(L, arg, use, err);
  if (use == USE_SIGN && !k->has_d)
    tdb_argerror(L, arg, "signing needs a private JWK (with d)");
  k->kind = KEY_JWK;
  return NULL;
}

static void hs256(const key *k, const void *m, size_t n, unsigned char mac[HS_SIG]) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, (const unsigned char *)k->secret, k->len);
  crypto_auth_hmacsha256_update(&st, (const unsigned char *)m, n);
  crypto_auth_hmacsha256_final(&st, mac);
  sodium_memzero(&st, sizeof st);
}

/* Options ---------------------------------------------------------------- */
/* Raises unless opts (at arg) is nil or a table whose keys are all named. */
static int opts_check(lua_State *L, int arg, const char *const *names) {
  if (lua_isnoneornil(L, arg)) return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int i, known = 0;
    for (i = 0; k && names[i]; i++) if (!strcmp(k, names[i])) known = 1;
    if (!known)
      tdb_argerror(L, arg, "unknown option '%s'", k ? k : "?");
    lua_pop(L, 1);
  }
  return 1;
}

/* opts[k] as a finite number, or def when absent; raises otherwise. */
static double opt_num(lua_State *L, int arg, int has, const char *k, double def) {
  double d = def;
  if (!has) return def;
  lua_getfield(L, arg, k);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(d = (double)lua_tonumber(L, -1)))
      tdb_argerror(L, arg, "opts.%s must be a finite number", k);
  }
  lua_pop(L, 1);
  return d;
}

static int opt_bool(lua_State *L, int arg, int has, const char *k, int def) {
  int v = def;
  if (!has) return def;
  lua_getfield(L, arg, k);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TBOOLEAN)
      tdb_argerror(L, arg, "opts.%s must be a boolean", k);
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int arg, int has, const char *k, size_t *n) {
  const char *s = NULL;
  if (!has) return NULL;
  lua_getfield(L, arg, k);
  if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, n);
  else if (!lua_isnil(L, -1))
    tdb_argerror(L, arg, "opts.%s must be a string", k);
  lua_pop(L, 1);
  return s;
}

/* Signing ---------------------------------------------------------------- */
/* {"alg":..,"typ":"JWT","kid":..,<opts.header>}: 0; 2 with nil, err pushed. */
static int enc_header(lua_State *L, tdb_Buf *b, int keyarg, const key *k, int optarg,
                       int has, int jwt) {
  size_t n;
  int hidx = 0, bad = 0;
  const char *kid = opt_str(L, optarg, has, "kid", &n);
  tdb_json_open(b, '{');
  tdb_json_key(b, "alg");
  tdb_json_raw(b, k->kind == KEY_HS ? "\"HS256\"" : "\"EdDSA\"", 7);
  if (has) {
    lua_getfield(L, optarg, "header");
    if (lua_isnil(L, -1)) lua_pop(L, 1);
    else {
      if (!lua_istable(L, -1) || tdb_json_arraylen(L, lua_gettop(L)))
        tdb_argerror(L, optarg, "opts.header must be a table of header parameters");
      hidx = lua_gettop(L);
      lua_getfield(L, hidx, "alg");
      lua_getfield(L, hidx, "kid");
      if (!lua_isnil(L, -1) || !lua_isnil(L, -2))
        tdb_argerror(L, optarg, "opts.header may not set alg (the key does) or kid (use opts.kid)");
      lua_getfield(L, hidx, "typ");
      if (!lua_isnil(L, -1)) jwt = 0;
      lua_pop(L, 3);
    }
  }
  if (jwt) {
    tdb_json_key(b, "typ");
    tdb_json_raw(b, "\"JWT\"", 5);
  }
  if (!kid && k->kind == KEY_JWK) kid = field_str(L, keyarg, "kid", &n, &bad);
  if (kid) {
    tdb_json_key(b, "kid");
    if (!tdb_json_str(b, kid, n))
      return tdb_push_error(L, "invalid", "kid", NULL, "kid must be valid UTF-8");
  }
  if (hidx) {
    if (tdb_json_members(L, b, hidx, optarg)) return 2;
    lua_remove(L, hidx);
  }
  tdb_json_close(b, '}');
  return 0;
}

/* Starts the token in a new buffer: BASE64URL(header) "." BASE64URL(payload);
 * raises when the finished token would exceed TOK_MAX. */
static void sign_start(lua_State *L, tdb_Buf *out, const tdb_Buf *hb, const char *p, size_t pn,
                       const key *k) {
  size_t total = (hb->n + 2) / 3 * 4 + 1 + (pn + 2) / 3 * 4 + 1 +
                 (k->kind == KEY_HS ? 43 : 86);
  if (pn > TOK_MAX || total > TOK_MAX)
    luaL_error(L, "tododb.token: token would be longer than %d bytes", TOK_MAX);
  tdb_buf_init(L, out, TOK_MAX);
  b64_encode(out, (const unsigned char *)hb->p, hb->n);
  tdb_buf_add(out, ".", 1);
  b64_encode(out, (const unsigned char *)p, pn);
}

/* Appends ".signature" over b's contents and pushes the token. */
static int sign_finish(lua_State *L, tdb_Buf *b, int keyarg, const key *k) {
  unsigned char sig[ED_SIG];
  size_t siglen = HS_SIG;
  if (k->kind == KEY_HS)
    hs256(k, b->p, b->n, sig);
  else {
    unsigned char seed[ED_SEED], pk[ED_PK], sk[crypto_sign_SECRETKEYBYTES];
    int has_d, foreign;
    jwk_read(L, keyarg, pk, seed, &has_d, &foreign);  /* validated by key_load */
    crypto_sign_seed_keypair(pk, sk, seed);
    crypto_sign_detached(sig, NULL, (const unsigned char *)b->p, b->n, sk);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    siglen = ED_SIG;
  }
  tdb_buf_add(b, ".", 1);
  b64_encode(b, sig, siglen);
  lua_pushlstring(L, b->p, b->n);
  return 1;
}

static const char *const sign_opts[] = { "kid", "header", "expires_in", "now", NULL };

/* token.sign(claims, key [, opts]) -> compact JWS | nil, err (opts: kid, header,
 * expires_in, now) */
static int token_sign(lua_State *L) {
  key k;
  tdb_Buf hb, pb, out;
  int has;
  double exp_in, now;
  luaL_checktype(L, 1, LUA_TTABLE);
  key_load(L, 2, &k, USE_SIGN);
  has = opts_check(L, 3, sign_opts);
  exp_in = opt_num(L, 3, has, "expires_in", 0);
  now = opt_num(L, 3, has, "now", (double)time(NULL));
  if (exp_in < 0) tdb_argerror(L, 3, "opts.expires_in must not be negative");
  lua_settop(L, 3);
  if (tdb_json_arraylen(L, 1)) tdb_argerror(L, 1, "claims must be a table with string keys");
  tdb_buf_init(L, &hb, JSON_OUT_MAX);
  if (enc_header(L, &hb, 2, &k, 3, has, 1)) return 2;
  tdb_buf_init(L, &pb, JSON_OUT_MAX);
  tdb_json_open(&pb, '{');
  if (tdb_json_members(L, &pb, 1, 1)) return 2;
  if (has) {
    lua_getfield(L, 3, "expires_in");
    if (!lua_isnil(L, -1)) {
      lua_getfield(L, 1, "iat");
      if (lua_isnil(L, -1)) {
        lua_pushnumber(L, (lua_Number)floor(now));
        tdb_json_key(&pb, "iat");
        if (tdb_json_value(L, &pb, -1, 3)) return 2;
        lua_pop(L, 1);
      }
      lua_getfield(L, 1, "exp");
      if (lua_isnil(L, -1)) {
        lua_pushnumber(L, (lua_Number)floor(now + exp_in));
        tdb_json_key(&pb, "exp");
        if (tdb_json_value(L, &pb, -1, 3)) return 2;
        lua_pop(L, 1);
      }
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  tdb_json_close(&pb, '}');
  sign_start(L, &out, &hb, pb.p, pb.n, &k);
  return sign_finish(L, &out, 2, &k);
}

static const char *const sign_payload_opts[] = { "kid", "header", NULL };

/* token.sign_payload(payload, key [, opts]) -> compact JWS | nil, err, over any bytes
 * (opts: kid, header; no default typ) */
static int token_sign_payload(lua_State *L) {
  key k;
  tdb_Buf hb, out;
  size_t n;
  const char *payload;
  int has;
  luaL_checktype(L, 1, LUA_TSTRING);
  payload = lua_tolstring(L, 1, &n);
  key_load(L, 2, &k, USE_SIGN);
  has = opts_check(L, 3, sign_payload_opts);
  lua_settop(L, 3);
  tdb_buf_init(L, &hb, JSON_OUT_MAX);
  if (enc_header(L, &hb, 2, &k, 3, has, 0)) return 2;
  sign_start(L, &out, &hb, payload, n, &k);
  return sign_finish(L, &out, 2, &k);
}

/* Verification ----------------------------------------------------------- */
/* A refusal names its err.reason and its err.message in one literal:
 * WHY("expired", "token expired") is "expired\0token expired". */
#define WHY(reason, message) reason "\0" message

/* Pushes nil, err {code = "unauthorized", reason, message}; returns 2. */
static int fail(lua_State *L, const char *reason, const char *message) {
  tdb_push_error(L, "unauthorized", NULL, NULL, "%s", message);
  lua_pushstring(L, reason);
  lua_setfield(L, -2, "reason");
  return 2;
}

static int refuse(lua_State *L, const char *why) {
  return fail(L, why, why + strlen(why) + 1);
}

/* Picks the key for the header at hidx into pk (EdDSA keys). */
static const char *select_key(lua_State *L, int keyarg, key *k, int hidx) {
  size_t kidn = 0, n;
  const char *kid, *s;
  int bad = 0, i, nk, found = 0, has_d, foreign;
  kid = field_str(L, hidx, "kid", &kidn, &bad);
  if (bad) return WHY("malformed", "malformed token: kid is not a string");
  if (k->kind == KEY_HS) return NULL;
  if (k->kind == KEY_JWK) {
    s = field_str(L, keyarg, "kid", &n, &bad);
    if (kid && s && (n != kidn || memcmp(s, kid, n) != 0))
      return WHY("unknown_kid", "unknown key id");
    return NULL;
  }
  lua_getfield(L, keyarg, "keys");
  nk = (int)tdb_rawlen(L, -1);
  for (i = 1; i <= nk && !found; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_istable(L, -1) &&
        !jwk_read(L, lua_gettop(L), k->pk, NULL, &has_d, &foreign)) {
      if (!kid) found = k->nusable == 1;
      else {
        s = field_str(L, lua_gettop(L), "kid", &n, &bad);
        found = s && n == kidn && memcmp(s, kid, n) == 0;
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (found) return NULL;
  return kid ? WHY("unknown_kid", "unknown key id")
             : WHY("unknown_kid", "token has no kid and the key set has several keys");
}

/* Checks the token (arg 1) against the key; on success pushes the payload
 * bytes and returns NULL, else returns WHY with the stack unchanged. dec
 * holds SEG_MAX bytes. */
static const char *jws_check(lua_State *L, int keyarg, key *k, char *dec) {
  size_t n, hn, pn, sn;
  const char *tok = lua_tolstring(L, 1, &n), *d1, *d2, *s, *why = NULL;
  unsigned char sig[ED_SIG], mac[HS_SIG];
  long len;
  int top = lua_gettop(L), bad = 0;
  size_t want = k->kind == KEY_HS ? HS_SIG : ED_SIG;
  if (n == 0) return WHY("malformed", "malformed token: empty");
  if (n > TOK_MAX) return WHY("too_large", "token too long (the limit is 16384 bytes)");
  if (!(d1 = memchr(tok, '.', n)) ||
      !(d2 = memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok))) ||
      memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok)))
    return WHY("malformed", "malformed token: not three segments");
  hn = (size_t)(d1 - tok);
  pn = (size_t)(d2 - d1 - 1);
  sn = n - (size_t)(d2 + 1 - tok);
  if ((len = b64_decode(tok, hn, (unsigned char *)dec, SEG_MAX)) <= 0)
    return WHY("malformed", "malformed token: header is not base64url");
  if (!tdb_json_decode(L, dec, (size_t)len, 1))
    return WHY("malformed", "malformed token: header is not a JSON object");
  s = field_str(L, top + 1, "alg", &n, &bad);
  if (!streq(s, n, k->kind == KEY_HS ? "HS256" : "EdDSA"))
    why = WHY("algorithm", "algorithm not allowed for this key");
  else {
    lua_getfield(L, top + 1, "crit");
    if (!lua_isnil(L, -1))
      why = WHY("unsupported", "unsupported critical header parameter");
    lua_pop(L, 1);
  }
  if (!why) why = select_key(L, keyarg, k, top + 1);
  lua_settop(L, top);
  if (why) return why;
  if (b64_decode(d2 + 1, sn, sig, sizeof sig) != (long)want)
    return WHY("malformed", "malformed token: bad signature encoding");
  if (k->kind == KEY_HS) {
    hs256(k, tok, (size_t)(d2 - tok), mac);
    bad = sodium_memcmp(mac, sig, HS_SIG) != 0;
  } else
    bad = crypto_sign_verify_detached(sig, (const unsigned char *)tok,
                                      (size_t)(d2 - tok), k->pk) != 0;
  if (bad) return WHY("bad_signature", "bad signature");
  if ((len = b64_decode(d1 + 1, pn, (unsigned char *)dec, SEG_MAX)) < 0)
    return WHY("malformed", "malformed token: payload is not base64url");
  lua_pushlstring(L, dec, (size_t)len);
  return NULL;
}

/* token.verify_signature(token, key) -> payload bytes | nil, err
 * (signature, alg and kid only; no claim checks) */
static int token_verify_signature(lua_State *L) {
  key k;
  char dec[SEG_MAX];
  const char *why;
  luaL_checktype(L, 1, LUA_TSTRING);
  why = key_load(L, 2, &k, USE_VERIFY);
  lua_settop(L, 2);
  if (why) return fail(L, "no_usable_key", why);
  if ((why = jws_check(L, 2, &k, dec))) return refuse(L, why);
  return 1;
}

typedef struct vopts {
  double now, leeway;
  int require_exp, require_sub, has;
} vopts;

/* A time claim: absent (0), valid (1, *v set) or bad (-1). */
static int time_claim(lua_State *L, int t, const char *name, double *v) {
  int r = 1;
  lua_getfield(L, t, name);
  if (lua_isnil(L, -1)) r = 0;
  else if (lua_type(L, -1) != LUA_TNUMBER) r = -1;
  else {
    *v = (double)lua_tonumber(L, -1);
    if (!isfinite(*v) || *v < 0 || *v > TIME_MAX) r = -1;
  }
  lua_pop(L, 1);
  return r;
}

/* 1 when the string at -1 equals opts.audience (a string) or one of its
 * elements (an array of strings). */
static int aud_accepted(lua_State *L, int optarg) {
  size_t n, an;
  const char *a = lua_tolstring(L, -1, &an), *s;
  int i, ok = 0;
  lua_getfield(L, optarg, "audience");
  if (lua_type(L, -1) == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &n);
    ok = n == an && memcmp(s, a, n) == 0;
  } else
    for (i = 1; !ok && i <= (int)tdb_rawlen(L, -1); i++) {
      lua_rawgeti(L, -1, i);
      s = lua_tolstring(L, -1, &n);
      ok = n == an && memcmp(s, a, n) == 0;
      lua_pop(L, 1);
    }
  lua_pop(L, 1);
  return ok;
}

static const char *check_claims(lua_State *L, int t, int optarg, const vopts *o) {
  double v;
  int r, i, ok = 0, want = 0, len;
  size_t n, in;
  const char *s, *iss;
  if ((r = time_claim(L, t, "exp", &v)) < 0)
    return WHY("malformed", "exp is not a valid NumericDate");
  if (r == 0 && o->require_exp) return WHY("missing_claim", "token has no exp");
  if (r == 1 && o->now - o->leeway >= v) return WHY("expired", "token expired");
  if ((r = time_claim(L, t, "nbf", &v)) < 0)
    return WHY("malformed", "nbf is not a valid NumericDate");
  if (r == 1 && o->now + o->leeway < v)
    return WHY("not_yet_valid", "token not yet valid (nbf)");
  if ((r = time_claim(L, t, "iat", &v)) < 0)
    return WHY("malformed", "iat is not a valid NumericDate");
  if (r == 1 && o->now + o->leeway < v)
    return WHY("issued_in_future", "token issued in the future (iat)");
  lua_getfield(L, t, "sub");
  r = lua_type(L, -1);
  s = r == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  lua_pop(L, 1);
  if (r == LUA_TNIL) { if (o->require_sub) return WHY("missing_claim", "token has no sub"); }
  else if (!s || n == 0) return WHY("malformed", "sub is not a non-empty string");
  iss = opt_str(L, optarg, o->has, "issuer", &in);
  if (iss) {
    lua_getfield(L, t, "iss");
    s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    lua_pop(L, 1);
    if (!s || n != in || memcmp(s, iss, n) != 0) return WHY("wrong_issuer", "wrong issuer");
  }
  if (o->has) {
    lua_getfield(L, optarg, "audience");
    want = !lua_isnil(L, -1);
    lua_pop(L, 1);
  }
  lua_getfield(L, t, "aud");
  r = lua_type(L, -1);
  if (r == LUA_TNIL) ok = want ? -3 : 1;
  else if (r == LUA_TSTRING) ok = !want ? -1 : aud_accepted(L, optarg);
  else if (r == LUA_TTABLE && (len = (int)tdb_rawlen(L, -1)) > 0) {
    for (i = 1; ok == 0 && i <= len; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) != LUA_TSTRING) ok = -2;
      lua_pop(L, 1);
    }
    if (ok == 0 && !want) ok = -1;
    for (i = 1; ok == 0 && i <= len; i++) {
      lua_rawgeti(L, -1, i);
      ok = aud_accepted(L, optarg);
      lua_pop(L, 1);
    }
  } else
    ok = -2;
  lua_pop(L, 1);
  switch (ok) {
  case 1: return NULL;
  case -1: return WHY("wrong_audience", "token has an audience but opts.audience was not given");
  case -2: return WHY("malformed", "aud is not a string or an array of strings");
  case -3: return WHY("wrong_audience", "token has no aud");
  default: return WHY("wrong_audience", "wrong audience");
  }
}

static const char *const verify_opts[] = {
  "now", "leeway", "audience", "issuer", "require_exp", "require_sub", NULL
};

/* token.verify(token, key [, opts]) -> claims | nil, err (opts: now,
 * leeway, audience, issuer, require_exp, require_sub) */
static int token_verify(lua_State *L) {
  key k;
  vopts o;
  char dec[SEG_MAX];
  const char *why, *kwhy, *p;
  size_t n;
  int i;
  luaL_checktype(L, 1, LUA_TSTRING);
  kwhy = key_load(L, 2, &k, USE_VERIFY);
  o.has = opts_check(L, 3, verify_opts);
  lua_settop(L, 3);
  o.now = opt_num(L, 3, o.has, "now", (double)time(NULL));
  o.leeway = opt_num(L, 3, o.has, "leeway", LEEWAY);
  if (o.leeway < 0) tdb_argerror(L, 3, "opts.leeway must not be negative");
  o.require_exp = opt_bool(L, 3, o.has, "require_exp", 1);
  o.require_sub = opt_bool(L, 3, o.has, "require_sub", 1);
  opt_str(L, 3, o.has, "issuer", &n);
  if (o.has) {
    lua_getfield(L, 3, "audience");
    if (lua_istable(L, -1)) {
      for (i = 1; i <= (int)tdb_rawlen(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING)
          tdb_argerror(L, 3, "opts.audience must be a string or an array of strings");
        lua_pop(L, 1);
      }
    } else if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
      tdb_argerror(L, 3, "opts.audience must be a string or an array of strings");
    lua_pop(L, 1);
  }
  if (kwhy) return fail(L, "no_usable_key", kwhy);
  if ((why = jws_check(L, 2, &k, dec))) return refuse(L, why);
  p = lua_tolstring(L, -1, &n);
  if (!tdb_json_decode(L, p, n, 1))
    return fail(L, "malformed", "malformed token: claims are not a JSON object");
  if ((why = check_claims(L, lua_gettop(L), 3, &o))) return refuse(L, why);
  return 1;
}

/* Keys for users and tests ----------------------------------------------- */
static void push_b64(lua_State *L, const unsigned char *s, size_t n) {
  tdb_Buf b;
  tdb_buf_init(L, &b, (size_t)-1);
  b64_encode(&b, s, n);
  tdb_buf_result(&b);
}

/* RFC 7638 thumbprint of an Ed25519 public key, pushed as base64url. */
static void push_thumbprint(lua_State *L, const unsigned char pk[ED_PK]) {
  unsigned char h[crypto_hash_sha256_BYTES];
  char x[sodium_base64_ENCODED_LEN(ED_PK, B64URL)], json[96];
  int n;
  sodium_bin2base64(x, sizeof x, pk, ED_PK, B64URL);
  n = snprintf(json, sizeof json, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x);
  crypto_hash_sha256(h, (const unsigned char *)json, (size_t)n);
  push_b64(L, h, sizeof h);
}

/* Pushes {kty, crv, x [, d] [, kid]}; the kid is at kididx (0: none). */
static void push_jwk(lua_State *L, const unsigned char pk[ED_PK],
                     const unsigned char *seed, int kididx) {
  lua_createtable(L, 0, 5);
  lua_pushliteral(L, "OKP");
  lua_setfield(L, -2, "kty");
  lua_pushliteral(L, "Ed25519");
  lua_setfield(L, -2, "crv");
  push_b64(L, pk, ED_PK);
  lua_setfield(L, -2, "x");
  if (seed) {
    push_b64(L, seed, ED_SEED);
    lua_setfield(L, -2, "d");
  }
  if (kididx && !lua_isnil(L, kididx)) {
    lua_pushvalue(L, kididx);
    lua_setfield(L, -2, "kid");
  }
}

static const char *const keypair_opts[] = { "seed", "kid", NULL };

/* token.ed25519_keypair([opts]) -> private_jwk, public_jwk (opts: seed, a
 * 32-byte string; kid, default the RFC 7638 thumbprint) */
static int token_ed25519_keypair(lua_State *L) {
  unsigned char pk[ED_PK], sk[crypto_sign_SECRETKEYBYTES], seed[ED_SEED];
  size_t sn = 0, kn = 0;
  int has = opts_check(L, 1, keypair_opts);
  const char *s = opt_str(L, 1, has, "seed", &sn);
  const char *kid = opt_str(L, 1, has, "kid", &kn);
  lua_settop(L, 1);
  if (s) {
    if (sn != ED_SEED) tdb_argerror(L, 1, "opts.seed must be 32 bytes");
    memcpy(seed, s, ED_SEED);
    crypto_sign_seed_keypair(pk, sk, seed);
  } else {
    crypto_sign_keypair(pk, sk);
    memcpy(seed, sk, ED_SEED);               /* libsodium: sk = seed || pk */
  }
  sodium_memzero(sk, sizeof sk);
  if (kid) lua_pushlstring(L, kid, kn);
  else push_thumbprint(L, pk);
  push_jwk(L, pk, seed, 2);
  push_jwk(L, pk, NULL, 2);
  sodium_memzero(seed, sizeof seed);
  return 2;
}

/* token.jwk_public(jwk) -> public JWK {kty, crv, x [, kid]} (from a private
 * or public Ed25519 JWK, table or JSON) */
static int token_jwk_public(lua_State *L) {
  key k;
  key_load(L, 1, &k, USE_ONE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "kid");
  if (lua_type(L, 2) != LUA_TSTRING) { lua_pop(L, 1); lua_pushnil(L); }
  push_jwk(L, k.pk, NULL, 2);
  return 1;
}

/* token.jwk_thumbprint(jwk) -> RFC 7638 SHA-256 thumbprint, base64url */
static int token_jwk_thumbprint(lua_State *L) {
  key k;
  key_load(L, 1, &k, USE_ONE);
  push_thumbprint(L, k.pk);
  return 1;
}

/* token.base64url_encode(bytes) -> text without padding */
static int token_b64_encode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (n >= ((size_t)-1) / 4) tdb_argerror(L, 1, "string too long");
  push_b64(L, (const unsigned char *)s, n);
  return 1;
}

/* token.base64url_decode(text) -> bytes | nil, err (strict: no padding) */
static int token_b64_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char *out = (unsigned char *)tdb_newudata(L, n / 4 * 3 + 3);
  long len = b64_decode(s, n, out, n / 4 * 3 + 3);
  if (len < 0) return tdb_push_error(L, "invalid", NULL, NULL, "not base64url");
  lua_pushlstring(L, (const char *)out, (size_t)len);
  return 1;
}

static const luaL_Reg token_funcs[] = {
  { "sign", token_sign },
  { "sign_payload", token_sign_payload },
  { "verify", token_verify },
  { "verify_signature", token_verify_signature },
  { "ed25519_keypair", token_ed25519_keypair },
  { "jwk_public", token_jwk_public },
  { "jwk_thumbprint", token_jwk_thumbprint },
  { "base64url_encode", token_b64_encode },
  { "base64url_decode", token_b64_decode },
  { NULL, NULL }
};

void tdb_token_open(lua_State *L) {
  lua_newtable(L);
  luaL_setfuncs(L, token_funcs, 0);
  lua_pushinteger(L, TOK_MAX);
  lua_setfield(L, -2, "max_size");
  lua_setfield(L, -2, "token");
}
