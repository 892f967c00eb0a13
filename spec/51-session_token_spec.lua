local support = require "support"
local tododb = require "tododb"

describe("db:session_from_token", function()
  local db, alice, bob
  local key = string.rep("k", 32)
  local now = os.time()

  setup(function()
    db = support.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = "password1" })
    bob = assert(db:create_user { email = "bob@example.com", password = "password1" })
    assert(db:session(bob):create_todo { title = "bob's" })
  end)
  teardown(function() db:close() end)

  local function token(sub, extra)
    local claims = { sub = sub, exp = now + 60 }
    for k, v in pairs(extra or {}) do claims[k] = v end
    return tododb.token.sign(claims, key)
  end

  it("binds a session to the token's subject", function()
    local s = assert(db:session_from_token(token(tostring(alice.id)), key))
    assert.equal(alice.id, s.user_id)
    local t = assert(s:create_todo { title = "from a token" })
    assert.equal(alice.id, t.user_id)
    assert.equal(1, s:count_todos())
  end)

  it("passes verify options through (issuer, audience)", function()
    local tok = token(tostring(alice.id), { iss = "me", aud = "api" })
    assert(db:session_from_token(tok, key, { issuer = "me", audience = "api" }))
    local s, err = db:session_from_token(tok, key, { issuer = "someone else", audience = "api" })
    assert.is_nil(s)
    assert.equal("unauthorized", err.code)
  end)

  it("refuses expired, foreign-key and malformed tokens, with the reason", function()
    local es256 = '{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"es","x":"AA","y":"AA"}]}'
    for _, case in ipairs {
      { "expired", token(tostring(alice.id), { exp = now - 60 }), key },   -- beyond the 30 s leeway
      { "bad_signature", token(tostring(alice.id)), string.rep("x", 32) },
      { "malformed", "not.a.token", key },
      { "no_usable_key", token(tostring(alice.id)), es256 },   -- a JWKS without an Ed25519 key
    } do
      local s, err = db:session_from_token(case[2], case[3])
      assert.is_nil(s)
      assert.equal("unauthorized", err.code)
      assert.equal(case[1], err.reason)
    end
  end)

  it("refuses a subject that is not one of our user ids", function()
    for _, sub in ipairs { "user_abc", "0", "-1", "1.5", "01", "9223372036854775808",
                           "99999999999999999999" } do
      local s, err = db:session_from_token(token(sub), key)
      assert.is_nil(s, sub)
      assert.equal("unauthorized", err.code)
    end
  end)

  it("maps external subjects through opts.map_subject", function()
    local seen
    local s = assert(db:session_from_token(token("auth|alice"), key, {
      map_subject = function(sub, claims)
        seen = claims.sub
        return sub == "auth|alice" and alice.id or nil
      end,
    }))
    assert.equal("auth|alice", seen)
    assert.equal(alice.id, s.user_id)
    local none, err = db:session_from_token(token("auth|mallory"), key,
                                            { map_subject = function() return nil end })
    assert.is_nil(none)
    assert.equal("unauthorized", err.code)
  end)

  it("gives a session that still cannot see another user's todos", function()
    local s = assert(db:session_from_token(token(tostring(alice.id)), key))
    local bobs = db:session(bob):list_todos().items[1]
    -- Ids count per user: probe with a bob id that alice has not reached.
    for _ = 1, s:count_todos() do
      bobs = assert(db:session(bob):create_todo { title = "bob's" })
    end
    local got, err = s:get_todo(bobs.id)
    assert.is_nil(got)
    assert.equal("not_found", err.code)
  end)
end)
