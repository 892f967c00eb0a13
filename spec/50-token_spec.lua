-- spec/50-token_spec.lua: tododb.token — JWT (HS256, EdDSA) in C.
local core = require "tododb.core"
local token = core.token
local b64e, b64d = token.base64url_encode, token.base64url_decode

local SECRET = "0123456789abcdef0123456789abcdef-secret"   -- 39 bytes
local NOW = 1700000000

-- RFC 7515 Appendix A.1 (HS256)
local A1_TOKEN = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
  .. ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
  .. ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
local A1_K = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
local A1_PAYLOAD = '{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}'

-- RFC 8037 Appendix A (Ed25519)
local R_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
local R_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
local R_THUMB = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
local R_TOKEN = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
  .. ".hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
local R_PRIV = { kty = "OKP", crv = "Ed25519", d = R_D, x = R_X }
local R_PUB = { kty = "OKP", crv = "Ed25519", x = R_X }

local function merge(a, b)
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

local function claims(extra) return merge({ sub = "user-1", iat = NOW, exp = NOW + 300 }, extra) end
-- The clock at NOW and no leeway, unless a test says otherwise.
local function at(extra) return merge({ now = NOW, leeway = 0 }, extra) end

local function segments(tok)
  local h, p, s = tok:match "^([^.]*)%.([^.]*)%.([^.]*)$"
  return h, p, s
end

-- verify must answer nil, {code="unauthorized"} (message matching pattern,
-- reason when given).
local function rejected(tok, key, opts, pattern, reason)
  local c, err = token.verify(tok, key, opts)
  assert.is_nil(c)
  assert.is_table(err)
  assert.equal("unauthorized", err.code)
  assert.is_string(err.reason)
  if pattern then assert.matches(pattern, err.message) end
  if reason then assert.equal(reason, err.reason) end
  return err
end

-- A payload signed properly, so only the payload itself can be at fault.
local function signed(payload) return token.sign_payload(payload, SECRET) end

describe("tododb.token base64url", function()
  it("round-trips every byte value and matches RFC 4648 vectors", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for n = 0, 5 do assert.equal(all:sub(1, n * 37), b64d(b64e(all:sub(1, n * 37)))) end
    assert.equal("", b64e "")
    assert.equal("Zg", b64e "f")
    assert.equal("Zm8", b64e "fo")
    assert.equal("Zm9v", b64e "foo")
    assert.equal("-_8", b64e "\251\255")
  end)

  it("rejects padding, foreign characters, impossible lengths, stray bits", function()
    for _, bad in ipairs { "Zg==", "Zm8=", "Zm9v+", "Zm9v/", "Zm 9v", "Zm9vY", "Zm9vA",
                           "A", "Z", "Zh", "Zm9", "Zm\0" } do
      local s, err = b64d(bad)
      assert.is_nil(s, bad)
      assert.equal("invalid", err.code)
    end
    assert.equal("foo", b64d "Zm9v")
    assert.equal("fo", b64d "Zm8")
  end)
end)

describe("tododb.token HS256", function()
  it("round-trips claims of every JSON type", function()
    local tok = token.sign(claims { n = 42, neg = -7, f = 1.5, yes = true, no = false,
      list = { 1, "two", { three = 3 } }, obj = { a = { b = "c" } }, empty = {},
      text = 'quote " backslash \\ newline \n tab \t ctl \1 utf8 \195\169' }, SECRET)
    local c = assert(token.verify(tok, SECRET, at()))
    assert.equal("user-1", c.sub)
    assert.equal(42, c.n)
    assert.equal(-7, c.neg)
    assert.equal(1.5, c.f)
    assert.is_true(c.yes)
    assert.is_false(c.no)
    assert.same({ 1, "two", { three = 3 } }, c.list)
    assert.same({ a = { b = "c" } }, c.obj)
    assert.same({}, c.empty)
    assert.equal('quote " backslash \\ newline \n tab \t ctl \1 utf8 \195\169', c.text)
    if math.type then assert.equal("integer", math.type(c.n)) end
  end)

  it("writes a JWT header that names the algorithm and the kid", function()
    local h = segments(token.sign(claims(), SECRET))
    assert.equal('{"alg":"HS256","typ":"JWT"}', b64d(h))
    h = segments(token.sign(claims(), SECRET, { kid = "k1" }))
    assert.equal('{"alg":"HS256","typ":"JWT","kid":"k1"}', b64d(h))
    h = segments(token.sign(claims(), SECRET, { header = { typ = "at+jwt" } }))
    assert.equal('{"alg":"HS256","typ":"at+jwt"}', b64d(h))
  end)

  it("adds iat and exp with opts.expires_in", function()
    local tok = token.sign({ sub = "u" }, SECRET, { expires_in = 60, now = NOW })
    local c = assert(token.verify(tok, SECRET, at()))
    assert.equal(NOW, c.iat)
    assert.equal(NOW + 60, c.exp)
    rejected(tok, SECRET, at { now = NOW + 60 }, "expired")
  end)

  it("verifies the RFC 7515 A.1 example", function()
    local key = assert(b64d(A1_K))
    assert.equal(64, #key)
    assert.equal(A1_PAYLOAD, token.verify_signature(A1_TOKEN, key))
    local c = assert(token.verify(A1_TOKEN, key, { now = 1300819300, require_sub = false }))
    assert.equal("joe", c.iss)
    assert.equal(1300819380, c.exp)
    assert.is_true(c["http://example.com/is_root"])
    rejected(A1_TOKEN, key, { now = 1300819380, leeway = 0, require_sub = false }, "expired", "expired")
    rejected(A1_TOKEN, key, { now = 1300819300 }, "sub")
    rejected(A1_TOKEN:sub(1, -2) .. "j", key, { now = 1300819300, require_sub = false }, "signature")
  end)

  it("rejects another secret and any tampering", function()
    local tok = token.sign(claims(), SECRET)
    rejected(tok, SECRET .. "!", at(), "bad signature")
    local h, _, s = segments(tok)
    local forged = h .. "." .. b64e('{"sub":"admin","iat":' .. NOW .. ',"exp":' .. (NOW + 300) .. '}') .. "." .. s
    rejected(forged, SECRET, at(), "bad signature")
    assert.is_table(token.verify(tok, SECRET, at()))
  end)

  it("refuses weak or ambiguous secrets (raises)", function()
    assert.has_error(function() token.sign(claims(), string.rep("x", 31)) end)
    assert.has_error(function() token.verify("a.b.c", string.rep("x", 31)) end)
    assert.has_error(function() token.sign(claims(), "{" .. string.rep("x", 40)) end)
    assert.is_string(token.sign(claims(), string.rep("x", 32)))
  end)
end)

describe("tododb.token EdDSA", function()
  it("derives the RFC 8037 public key and thumbprint from the seed", function()
    local priv, pub = token.ed25519_keypair { seed = assert(b64d(R_D)) }
    assert.equal(R_X, priv.x)
    assert.equal(R_D, priv.d)
    assert.equal(R_X, pub.x)
    assert.is_nil(pub.d)
    assert.equal(R_THUMB, pub.kid)
    assert.equal(R_THUMB, token.jwk_thumbprint(R_PUB))
    assert.same(R_PUB, token.jwk_public(R_PRIV))
  end)

  it("produces and verifies the RFC 8037 A.4/A.5 signature", function()
    assert.equal(R_TOKEN, token.sign_payload("Example of Ed25519 signing", R_PRIV))
    assert.equal("Example of Ed25519 signing", token.verify_signature(R_TOKEN, R_PUB))
    assert.equal("Example of Ed25519 signing", token.verify_signature(R_TOKEN, R_PRIV))
    local json = string.format('{"kty":"OKP","crv":"Ed25519","x":"%s"}', R_X)
    assert.equal("Example of Ed25519 signing", token.verify_signature(R_TOKEN, json))
    assert.equal("Example of Ed25519 signing",
      token.verify_signature(R_TOKEN, '{"keys":[' .. json .. ']}'))
    local p, err = token.verify_signature(R_TOKEN:gsub("hgyY", "hgyZ"), R_PUB)
    assert.is_nil(p)
    assert.equal("unauthorized", err.code)
    -- the payload is not a claims object, so verify refuses it
    rejected(R_TOKEN, R_PUB, nil, "not a JSON object")
  end)

  it("round-trips with a JWK, its JSON text and a JWK set", function()
    local priv, pub = token.ed25519_keypair { kid = "main" }
    assert.equal("main", priv.kid)
    local tok = token.sign(claims(), priv)
    assert.equal('{"alg":"EdDSA","typ":"JWT","kid":"main"}', b64d((segments(tok))))
    assert.equal("user-1", token.verify(tok, pub, at()).sub)
    assert.equal("user-1", token.verify(tok, priv, at()).sub)
    local json = string.format('{"kty":"OKP","crv":"Ed25519","x":"%s","kid":"main"}', pub.x)
    assert.equal("user-1", token.verify(tok, json, at()).sub)
    assert.equal("user-1", token.verify(tok, { keys = { pub } }, at()).sub)
    assert.equal("user-1", token.verify(tok, '{"keys":[' .. json .. ']}', at()).sub)
    rejected(tok, merge(pub, { kid = "other" }), at(), "key id")
  end)

  it("chooses the JWK set member by kid", function()
    local p1, k1 = token.ed25519_keypair { kid = "one" }
    local p2, k2 = token.ed25519_keypair { kid = "two" }
    local rsa = { kty = "RSA", kid = "rsa", n = "AQAB", e = "AQAB" }
    local set = { keys = { rsa, k1, k2 } }
    assert.equal("user-1", token.verify(token.sign(claims(), p1), set, at()).sub)
    assert.equal("user-1", token.verify(token.sign(claims(), p2), set, at()).sub)
    rejected(token.sign(claims(), p1, { kid = "three" }), set, at(), "unknown key id")
    -- a token claiming kid "two" but signed by key one
    rejected(token.sign(claims(), p1, { kid = "two" }), set, at(), "bad signature")
    -- no kid: fine with one candidate, refused among several
    local anon = { kty = "OKP", crv = "Ed25519", d = p1.d, x = p1.x }
    rejected(token.sign(claims(), anon), set, at(), "no kid")
    assert.equal("user-1", token.verify(token.sign(claims(), anon), { keys = { rsa, k1 } }, at()).sub)
  end)

  it("rejects a token from another key", function()
    local mine, _ = token.ed25519_keypair()
    local _, theirs = token.ed25519_keypair()
    rejected(token.sign(claims(), mine), merge(theirs, { kid = mine.kid }), at(), "bad signature")
  end)
end)

describe("tododb.token algorithm confusion", function()
  local priv, pub = token.ed25519_keypair()
  local body = b64e('{"sub":"admin","exp":' .. (NOW + 300) .. '}')

  it("rejects alg none with every kind of key", function()
    for _, h in ipairs { '{"alg":"none"}', '{"alg":"NONE","typ":"JWT"}', '{"typ":"JWT"}', '{"alg":null}' } do
      for _, sig in ipairs { "", "c2ln" } do
        local tok = b64e(h) .. "." .. body .. "." .. sig
        rejected(tok, SECRET, at(), "algorithm")
        rejected(tok, pub, at(), "algorithm")
        rejected(tok, { keys = { pub } }, at(), "algorithm")
      end
    end
  end)

  it("lets the key decide: HS256 under an Ed25519 key and EdDSA under a secret fail", function()
    local hs = token.sign(claims(), SECRET)
    local ed = token.sign(claims(), priv)
    rejected(hs, pub, at(), "algorithm")
    rejected(hs, { keys = { pub } }, at(), "algorithm")
    rejected(ed, SECRET, at(), "algorithm")
    assert.is_table(token.verify(hs, SECRET, at()))
    assert.is_table(token.verify(ed, pub, at()))
  end)

  it("rejects HS256 tokens keyed with the public key itself", function()
    for _, secret in ipairs { assert(b64d(pub.x)), pub.x, pub.x .. pub.x } do
      rejected(token.sign(claims(), secret), pub, at(), "algorithm")
    end
  end)

  it("ignores an embedded jwk header", function()
    local evil, evil_pub = token.ed25519_keypair { kid = pub.kid }
    local tok = token.sign(claims(), evil, { header = { jwk = evil_pub } })
    rejected(tok, pub, at(), "bad signature")
  end)

  it("rejects critical header parameters it does not understand", function()
    rejected(token.sign(claims(), SECRET, { header = { crit = { "exp" }, exp = 1 } }), SECRET, at(), "critical")
    rejected(token.sign(claims(), priv, { header = { crit = { "b64" }, b64 = false } }), pub, at(), "critical")
    assert.is_table(token.verify(token.sign(claims(), SECRET, { header = { cty = "x" } }), SECRET, at()))
  end)
end)

describe("tododb.token claims", function()
  local function tok(c) return token.sign(c, SECRET) end

  it("checks exp, with leeway", function()
    local t = tok(claims { exp = NOW - 5 })
    rejected(t, SECRET, at(), "expired")
    rejected(t, SECRET, at { leeway = 5 }, "expired")
    assert.is_table(token.verify(t, SECRET, at { leeway = 6 }))
    rejected(tok(claims { exp = NOW }), SECRET, at(), "expired")
    assert.is_table(token.verify(tok(claims { exp = NOW + 1 }), SECRET, at()))
  end)

  it("requires exp unless opts.require_exp is false", function()
    local t = tok { sub = "u" }
    rejected(t, SECRET, at(), "no exp")
    assert.equal("u", token.verify(t, SECRET, at { require_exp = false }).sub)
  end)

  it("checks nbf and iat against the clock, with leeway", function()
    local t = tok(claims { nbf = NOW + 10 })
    rejected(t, SECRET, at(), "nbf")
    assert.is_table(token.verify(t, SECRET, at { leeway = 10 }))
    t = tok(claims { iat = NOW + 10 })
    rejected(t, SECRET, at(), "iat")
    assert.is_table(token.verify(t, SECRET, at { leeway = 10 }))
    assert.is_table(token.verify(tok(claims { nbf = NOW, iat = NOW }), SECRET, at()))
  end)

  it("uses the real clock without opts.now", function()
    assert.is_table(token.verify(token.sign({ sub = "u" }, SECRET, { expires_in = 60 }), SECRET))
    rejected(tok(claims()), SECRET, nil, "expired")      -- NOW is in 2023
  end)

  it("allows 30 s of clock skew by default", function()
    local o = { now = NOW }
    assert.is_table(token.verify(tok(claims { exp = NOW - 29 }), SECRET, o))
    rejected(tok(claims { exp = NOW - 30 }), SECRET, o, "expired", "expired")
    assert.is_table(token.verify(tok(claims { iat = NOW + 30, nbf = NOW + 30 }), SECRET, o))
    rejected(tok(claims { iat = NOW + 31 }), SECRET, o, "iat", "issued_in_future")
    rejected(tok(claims { nbf = NOW + 31 }), SECRET, o, "nbf", "not_yet_valid")
    -- a server clock 2 s behind its issuer's
    assert.is_table(token.verify(token.sign({ sub = "u" }, SECRET,
      { expires_in = 60, now = os.time() + 2 }), SECRET))
  end)

  it("requires a non-empty string sub", function()
    rejected(tok { exp = NOW + 10 }, SECRET, at(), "no sub")
    assert.is_table(token.verify(tok { exp = NOW + 10 }, SECRET, at { require_sub = false }))
    rejected(tok(claims { sub = "" }), SECRET, at(), "sub")
    rejected(tok(claims { sub = 5 }), SECRET, at { require_sub = false }, "sub")
    rejected(tok(claims { sub = { "a" } }), SECRET, at(), "sub")
  end)

  it("checks the audience (string or array on either side)", function()
    local o = at { audience = "api" }
    assert.is_table(token.verify(tok(claims { aud = "api" }), SECRET, o))
    assert.is_table(token.verify(tok(claims { aud = { "web", "api" } }), SECRET, o))
    assert.is_table(token.verify(tok(claims { aud = "web" }), SECRET, at { audience = { "api", "web" } }))
    rejected(tok(claims { aud = "web" }), SECRET, o, "wrong audience")
    rejected(tok(claims { aud = { "web", "cli" } }), SECRET, o, "wrong audience")
    rejected(tok(claims()), SECRET, o, "no aud")
    rejected(tok(claims { aud = "api" }), SECRET, at(), "audience")
    rejected(tok(claims { aud = { "api", 7 } }), SECRET, o, "aud")
    rejected(tok(claims { aud = 7 }), SECRET, o, "aud")
    rejected(tok(claims { aud = {} }), SECRET, o, "aud")
  end)

  it("checks the issuer", function()
    local o = at { issuer = "https://id.example" }
    assert.is_table(token.verify(tok(claims { iss = "https://id.example" }), SECRET, o))
    rejected(tok(claims { iss = "https://evil.example" }), SECRET, o, "issuer")
    rejected(tok(claims()), SECRET, o, "issuer")
    rejected(tok(claims { iss = 1 }), SECRET, o, "issuer")
    assert.is_table(token.verify(tok(claims { iss = "anyone" }), SECRET, at()))
  end)

  it("rejects time claims that are not sane finite numbers", function()
    for _, exp in ipairs { '"2000000000"', "true", "null", "[1]", "-1", "1e400", "-1e400",
        "99999999999999999999999", "1e308", "253402300800" } do
      local t = signed('{"sub":"u","exp":' .. exp .. '}')
      assert.is_string(token.verify_signature(t, SECRET))
      rejected(t, SECRET, at())
    end
    rejected(signed('{"sub":"u","exp":2000000000,"nbf":"0"}'), SECRET, at(), "nbf")
    rejected(signed('{"sub":"u","exp":2000000000,"iat":1e999}'), SECRET, at())
    assert.is_table(token.verify(signed('{"sub":"u","exp":2000000000.5}'), SECRET, at()))
  end)

  it("maps JSON null to tododb null", function()
    local c = assert(token.verify(signed('{"sub":"u","exp":2000000000,"x":null,"a":[null,1]}'),
      SECRET, at()))
    assert.equal(core.null, c.x)
    assert.equal(core.null, c.a[1])
    assert.equal(1, c.a[2])
  end)

  -- The same claims with the same types under Lua 5.4 and LuaJIT (this file
  -- runs under both): numbers are numbers, never strings.
  it("reads integers within +-(2^53 - 1) as integers and refuses larger ones", function()
    local c = assert(token.verify(signed('{"sub":"u","exp":2000000000,'
      .. '"max":9007199254740991,"min":-9007199254740991,"f":9007199254740993.0,"e":1e300,'
      .. '"z":-0,"list":[9007199254740991]}'), SECRET, at()))
    for _, k in ipairs { "max", "min", "f", "e", "z" } do assert.equal("number", type(c[k]), k) end
    assert.equal(9007199254740991, c.max)
    assert.equal(-9007199254740991, c.min)
    assert.equal(9007199254740992, c.f)                 -- a float, rounded alike on both
    assert.equal(1e300, c.e)
    assert.equal(9007199254740991, c.list[1])
    if math.type then
      assert.equal("integer", math.type(c.max))
      assert.equal("float", math.type(c.f))
      assert.equal("float", math.type(c.e))
    end
    for _, js in ipairs { '"big":9007199254740992', '"big":-9007199254740992',
        '"big":9007199254740993', '"big":-9223372036854775808', '"big":18446744073709551616',
        '"big":[1,99999999999999999999]', '"big":{"x":12345678901234567}' } do
      local t = signed('{"sub":"u","exp":2000000000,' .. js .. '}')
      rejected(t, SECRET, at(), "not a JSON object", "malformed")
    end
  end)

  it("gives numeric sub, aud and iss beyond 2^53 the same verdict on both interpreters", function()
    for _, js in ipairs {
      '{"sub":9007199254740993,"exp":2000000000}',
      '{"sub":"u","aud":9007199254740993,"exp":2000000000}',
      '{"sub":"u","aud":[9007199254740993],"exp":2000000000}',
      '{"sub":"u","iss":9007199254740993,"exp":2000000000}',
    } do
      rejected(signed(js), SECRET, at { audience = "9007199254740993", issuer = "9007199254740993" },
        nil, "malformed")
    end
    -- within range a number is still not a string
    rejected(signed('{"sub":900719925474099,"exp":2000000000}'), SECRET, at(), "sub", "malformed")
    rejected(signed('{"sub":"u","aud":900719925474099,"exp":2000000000}'), SECRET,
      at { audience = "900719925474099" }, "aud", "malformed")
    rejected(signed('{"sub":"u","iss":900719925474099,"exp":2000000000}'), SECRET,
      at { issuer = "900719925474099" }, "issuer", "wrong_issuer")
  end)

  it("writes numbers so that they read back with the same value and kind", function()
    local big = 2 ^ 60                                   -- a float on both
    local c = assert(token.verify(tok(claims { big = big, neg = -big, near = 2 ^ 53 + 2,
      safe = 9007199254740991, half = 0.5 }), SECRET, at()))
    assert.equal(big, c.big)
    assert.equal(-big, c.neg)
    assert.equal(2 ^ 53 + 2, c.near)
    assert.equal(9007199254740991, c.safe)
    assert.equal(0.5, c.half)
    if math.type then
      assert.equal("float", math.type(c.big))
      assert.equal("float", math.type(c.near))
      assert.equal("integer", math.type(c.safe))
      for _, n in ipairs { math.maxinteger, 9007199254740992 } do
        local t, err = token.sign(claims { n = n }, SECRET)
        assert.is_nil(t)
        assert.equal("invalid", err.code)
        assert.matches("2^53", err.message, 1, true)
      end
    end
  end)

  it("signs nothing for claims JSON cannot carry: nil, err invalid", function()
    local cyc = { sub = "u" }
    cyc.self = cyc
    for _, c in ipairs { { n = 0 / 0 }, { n = math.huge }, { n = -math.huge }, { s = "\255" },
        { ["\255"] = 1 }, { list = { "ok", "\192" } }, cyc } do
      local t, err = token.sign(c, SECRET)
      assert.is_nil(t)
      assert.equal("invalid", err.code)
      assert.matches("JSON", err.message, 1, true)
    end
    local t, err = token.sign(claims(), SECRET, { header = { x = "\255" } })
    assert.is_nil(t)
    assert.equal("invalid", err.code)
    t, err = token.sign(claims(), SECRET, { kid = "\255" })
    assert.is_nil(t)
    assert.equal("kid", err.field)
  end)

  it("decodes escapes and surrogate pairs", function()
    local c = assert(token.verify(signed(' { "sub" : "\\u00e9\\ud83d\\ude00\\n\\/\\"" ,\r\n'
      .. ' "exp" : 2000000000 } '), SECRET, at()))
    assert.equal("\195\169\240\159\152\128\n/\"", c.sub)
  end)
end)

describe("tododb.token malformed tokens", function()
  local good = token.sign(claims(), SECRET)

  it("accepts the control token", function()
    assert.is_table(token.verify(good, SECRET, at()))
  end)

  it("rejects wrong shapes", function()
    local h, p, s = segments(good)
    for _, bad in ipairs { "", ".", "..", "...", h, h .. "." .. p, h .. "." .. p .. "." .. s .. ".",
        h .. "." .. p .. "." .. s .. "." .. s, "." .. p .. "." .. s, h .. ".." .. s, h .. "." .. p .. ".",
        " " .. good, good .. " ", good .. "\n", good .. "=", h .. "=." .. p .. "." .. s,
        h .. "." .. p .. "=." .. s, h .. "." .. p .. "." .. s .. "==",
        h:gsub("^e", "*") .. "." .. p .. "." .. s, h .. "." .. p:gsub("J", "+", 1) .. "." .. s,
        h .. "." .. p .. "." .. s:gsub("^.", "/"), h .. "." .. p .. "x." .. s } do
      rejected(bad, SECRET, at())
    end
  end)

  it("rejects every truncation and every single-character change", function()
    for i = 0, #good - 1 do rejected(good:sub(1, i), SECRET, at()) end
    local alphabet = "AZaz09-_.*"
    for i = 1, #good do
      for j = 1, #alphabet do
        local c = alphabet:sub(j, j)
        if c ~= good:sub(i, i) then
          rejected(good:sub(1, i - 1) .. c .. good:sub(i + 1), SECRET, at())
        end
      end
    end
  end)

  it("caps the size at 16 KiB", function()
    assert.equal(16384, token.max_size)
    rejected(string.rep("A", 100 * 1024), SECRET, at(), "too long", "too_large")
    local h, _, s = segments(good)
    rejected(h .. "." .. string.rep("A", 100 * 1024) .. "." .. s, SECRET, at(), "too long", "too_large")
    rejected(h .. "." .. string.rep("A", 16384) .. "." .. s, SECRET, at(), "too long", "too_large")
    assert.has_error(function() token.sign(claims { pad = string.rep("x", 12500) }, SECRET) end)
    local t = token.sign(claims { pad = string.rep("x", 12000) }, SECRET)
    assert.is_true(#t > 16000 and #t <= 16384)
    assert.is_table(token.verify(t, SECRET, at()))
  end)

  it("takes a Better Auth token carrying the whole user row", function()
    local priv, pub = token.ed25519_keypair()
    local url = "http://localhost:3000"
    local user = { sub = "4tGqXfu3vbE8XtkoQyNOFZCzmvy2kdpN", id = "4tGqXfu3vbE8XtkoQyNOFZCzmvy2kdpN",
      name = "Alice Example", email = "alice@example.com", emailVerified = true,
      createdAt = "2026-11-26T09:00:00.000Z", updatedAt = "2026-11-26T09:00:00.000Z",
      iss = url, aud = url, iat = NOW, exp = NOW + 900 }
    local o = at { issuer = url, audience = url }
    -- an avatar URL as Google or GitHub give them
    user.image = "https://lh3.googleusercontent.com/a/" .. string.rep("ACg8ocK", 20) .. "=s96-c"
    assert.equal(user.image, token.verify(token.sign(user, priv), pub, o).image)
    -- even a small avatar stored inline as a data: URL
    user.image = "data:image/webp;base64," .. string.rep("UklGRlYAAABXRUJQ", 480)
    assert.equal(user.image, token.verify(token.sign(user, priv), { keys = { pub } }, o).image)
  end)

  it("rejects headers that are not JSON objects", function()
    local _, p, s = segments(good)
    for _, h in ipairs { "", "{", "[]", '"HS256"', '{"alg":"HS256",}', '{"alg":"HS256"} x',
        '{"alg":"HS256","alg":"HS256"}', '{"alg":"HS256","typ":"\255"}' } do
      rejected(b64e(h) .. "." .. p .. "." .. s, SECRET, at(), "malformed")
    end
    rejected(b64e('{"alg":1}') .. "." .. p .. "." .. s, SECRET, at(), "algorithm")
    rejected(b64e('{"alg":"HS256","kid":7}') .. "." .. p .. "." .. s, SECRET, at(), "kid")
  end)

  it("rejects invalid JSON payloads even when the signature is good", function()
    for _, js in ipairs {
      '{"sub":"a",}', '{"sub":"a"', '{sub:"a"}', "{'sub':'a'}", '{"sub":"a"} x', '{"sub":"a"}{}',
      '{"sub" "a"}', '{"sub":"a",,"b":1}', '{"a":01}', '{"a":1.}', '{"a":.5}', '{"a":-}', '{"a":+1}',
      '{"a":1e}', '{"a":1e400}', '{"a":[-1e400]}', '{"a":0x10}', '{"a":NaN}', '{"a":Infinity}',
      '{"a":tru}', '{"a":nul}',
      '{"a":"\\x"}', '{"a":"\\u12"}', '{"a":"\\ud800"}', '{"a":"\\udc00\\ud800"}', '{"a":"\\ud800\\u0041"}',
      '{"a":"tab\there"}', '{"a":"nl\nhere"}', '{"a":"\0"}', '{"a":[1,2}', '{"a":[1,]}',
      '{"sub":"a","sub":"b"}', '{"a":1}\0', '\239\187\191{"a":1}',
    } do
      local t = signed(js)
      assert.equal(js, token.verify_signature(t, SECRET))
      rejected(t, SECRET, at(), "not a JSON object")
    end
  end)

  it("rejects payloads that are not objects", function()
    for _, js in ipairs { "", " ", "[]", "[1,2]", '"sub"', "42", "null", "true", "[{}]" } do
      rejected(signed(js), SECRET, at(), "not a JSON object")
    end
  end)

  it("rejects invalid UTF-8 in strings and names", function()
    for _, bad in ipairs { "\255", "\192\175", "\237\160\128", "\226\130", "\244\144\128\128", "\128" } do
      rejected(signed('{"sub":"a' .. bad .. '","exp":2000000000}'), SECRET, at(), "not a JSON object")
      rejected(signed('{"sub":"a","exp":2000000000,"' .. bad .. '":1}'), SECRET, at(), "not a JSON object")
    end
    assert.is_table(token.verify(signed('{"sub":"a\226\130\172\244\143\191\191","exp":2000000000}'), SECRET, at()))
  end)

  it("survives nesting bombs", function()
    for _, js in ipairs {
      string.rep("[", 3000) .. string.rep("]", 3000),
      '{"sub":"a","exp":2000000000,"x":' .. string.rep("[", 3000) .. string.rep("]", 3000) .. "}",
      '{"sub":"a","exp":2000000000,"x":' .. string.rep('{"a":', 1000) .. "1" .. string.rep("}", 1000) .. "}",
      string.rep("[", 4000),
    } do
      rejected(signed(js), SECRET, at())
    end
    local ok = '{"sub":"a","exp":2000000000,"x":' .. string.rep("[", 20) .. string.rep("]", 20) .. "}"
    assert.is_table(token.verify(signed(ok), SECRET, at()))
  end)

  it("never raises on random garbage", function()
    math.randomseed(50)
    local h, p, s = segments(good)
    local bytes = { "{", "}", "[", "]", '"', "\\", ":", ",", "1", "-", "e", ".", "u", "d8", "\255", " ", "n", "t" }
    for _ = 1, 2000 do
      local parts = {}
      for k = 1, math.random(0, 40) do parts[k] = bytes[math.random(#bytes)] end
      local js = table.concat(parts)
      local c, err = token.verify(signed(js), SECRET, at())
      assert.is_true(c == nil and err.code == "unauthorized" or type(c) == "table")
      local m = { h, p, s }
      local i = math.random(3)
      local pos = math.random(#m[i])
      m[i] = m[i]:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. m[i]:sub(pos + 1)
      c, err = token.verify(table.concat(m, "."), SECRET, at())
      assert.is_true(c == nil and err.code == "unauthorized" or type(c) == "table")
    end
  end)
end)

describe("tododb.token err.reason", function()
  local priv, pub = token.ed25519_keypair { kid = "one" }
  local function tok(c, o) return token.sign(c, SECRET, o) end

  it("names each kind of refusal", function()
    local _, p, s = segments(tok(claims()))
    for _, case in ipairs {
      { "malformed", "abc" },
      { "malformed", b64e('{"alg":"HS256"') .. "." .. p .. "." .. s },
      { "malformed", signed('{"sub":"u"') },
      { "malformed", tok(claims { exp = "soon" }) },
      { "malformed", tok(claims { sub = 42 }) },
      { "too_large", string.rep("A", 16385) },
      { "algorithm", token.sign(claims(), priv), SECRET },
      { "algorithm", tok(claims()), pub },
      { "unsupported", tok(claims(), { header = { crit = { "exp" }, exp = 1 } }) },
      { "unknown_kid", token.sign(claims(), priv, { kid = "two" }), { keys = { pub } } },
      { "bad_signature", tok(claims()), SECRET .. "!" },
      { "expired", tok(claims { exp = NOW - 60 }) },
      { "not_yet_valid", tok(claims { nbf = NOW + 60 }) },
      { "issued_in_future", tok(claims { iat = NOW + 60 }) },
      { "missing_claim", tok { sub = "u" } },
      { "missing_claim", tok { exp = NOW + 60 } },
      { "wrong_audience", tok(claims { aud = "web" }), SECRET, { audience = "api" } },
      { "wrong_audience", tok(claims()), SECRET, { audience = "api" } },
      { "wrong_audience", tok(claims { aud = "api" }) },
      { "wrong_issuer", tok(claims { iss = "evil" }), SECRET, { issuer = "good" } },
    } do
      local err = rejected(case[2], case[3] or SECRET, { now = NOW, audience = case[4] and case[4].audience,
        issuer = case[4] and case[4].issuer })
      assert.equal(case[1], err.reason, err.message)
    end
    local _, err = token.verify_signature(tok(claims()), SECRET .. "!")
    assert.equal("bad_signature", err.reason)
  end)

  it("answers a key set without a usable key with nil, err (no_usable_key)", function()
    local es256 = { kty = "EC", crv = "P-256", alg = "ES256", kid = "es",
      x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }
    local rsa = { kty = "RSA", kid = "rsa", n = "AQAB", e = "AQAB" }
    local es_json = '{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"es","x":"' .. es256.x
      .. '","y":"' .. es256.y .. '"}]}'
    local t = token.sign(claims(), priv)
    for _, key in ipairs { { keys = { es256 } }, { keys = { es256, rsa } }, es_json, { keys = {} },
        '{"keys":[]}', { keys = "x" }, { keys = { "x" } }, '{"keys":[1,"x",null]}', {}, es256, rsa,
        { kty = "OKP", crv = "X25519", x = pub.x }, { kty = "OKP", crv = "Ed25519" },
        { kty = "OKP", crv = "Ed25519", x = "short" }, { kty = "OKP", crv = "Ed25519", x = pub.x, kid = 5 },
        "{not json at all}", '{"kty":"RSA"}', '{"keys":[' .. string.rep("[", 100) } do
      local c, err = token.verify(t, key, at())
      assert.is_nil(c)
      assert.equal("unauthorized", err.code)
      assert.equal("no_usable_key", err.reason)
      c, err = token.verify_signature(t, key)
      assert.is_nil(c)
      assert.equal("no_usable_key", err.reason)
    end
    -- usable members are found among the others; broken Ed25519 members are skipped
    local broken = { kty = "OKP", crv = "Ed25519", kid = "bad", x = "short" }
    assert.is_table(token.verify(t, { keys = { es256, broken, rsa, pub } }, at()))
    assert.is_table(token.verify(t, '{"keys":[' .. es_json:match "%[(.*)%]" .. ','
      .. string.format('{"kty":"OKP","crv":"Ed25519","kid":"one","x":"%s"}]}', pub.x), at()))
  end)

  it("still raises for bad options when the key is unusable", function()
    assert.has_error(function() token.verify(token.sign(claims(), priv), { keys = {} }, { leeway = -1 }) end)
  end)
end)

describe("tododb.token misuse raises", function()
  local priv, pub = token.ed25519_keypair()
  local good = token.sign(claims(), SECRET)

  it("for a token that is not a string", function()
    for _, v in ipairs { 123, true, {} } do
      assert.has_error(function() token.verify(v, SECRET) end)
      assert.has_error(function() token.verify_signature(v, SECRET) end)
    end
    assert.has_error(function() token.verify(nil, SECRET) end)
  end)

  it("for keys of the wrong type", function()
    for _, key in ipairs { 42, true, print } do
      assert.has_error(function() token.verify(good, key) end)
      assert.has_error(function() token.verify_signature(good, key) end)
    end
    assert.has_error(function() token.verify(good) end)
  end)

  it("for bad options", function()
    for _, o in ipairs { "x", { leeway = -1 }, { leeway = "5" }, { now = 0 / 0 }, { audiance = "api" },
        { audience = 5 }, { audience = { 5 } }, { issuer = true }, { require_exp = "no" } } do
      assert.has_error(function() token.verify(good, SECRET, o) end)
    end
  end)

  it("for claims of types JSON has no form for and keys that cannot sign", function()
    for _, c in ipairs { { f = print }, { [true] = 1 }, { 1, 2 }, { [1] = "a", b = 2 },
        { co = coroutine.create(print) }, { nested = { ok = 1, [2] = "mixed" } } } do
      assert.has_error(function() token.sign(c, SECRET) end)
    end
    assert.has_error(function() token.sign(claims(), SECRET, { header = { x = print } }) end)
    assert.has_error(function() token.sign("x", SECRET) end)
    assert.has_error(function() token.sign(claims(), pub) end)
    assert.has_error(function() token.sign(claims(), { keys = { priv } }) end)
    for _, key in ipairs { {}, { kty = "RSA", n = "x", e = "AQAB" }, { kty = "OKP", crv = "Ed25519" },
        "{not json at all}", '{"kty":"RSA"}', { keys = {} } } do
      assert.has_error(function() token.sign(claims(), key) end)
      assert.has_error(function() token.jwk_public(key) end)
      assert.has_error(function() token.jwk_thumbprint(key) end)
    end
    local wrong_x = (pub.x:sub(1, 1) == "A" and "B" or "A") .. pub.x:sub(2)
    assert.has_error(function() token.sign(claims(), merge(priv, { x = wrong_x })) end)
    assert.has_error(function() token.sign(claims(), SECRET, { header = { alg = "none" } }) end)
    assert.has_error(function() token.sign(claims(), SECRET, { kid = 7 }) end)
    assert.has_error(function() token.ed25519_keypair { seed = "short" } end)
  end)
end)
