-- A real Better Auth (interop/betterauth.mjs, installed by `make interop`):
-- its EdDSA tokens and JWKS through tododb's verify, provisioning, isolation
-- and key rotation. Pending without the npm install or a superuser URL.
local support = require "support"
local tododb = require "tododb"
local cjson = require "cjson"

local dir, why = support.interop_dir()
if not dir then
  describe("Better Auth interop", function() pending(why) end)
  return
end

-- Runs Better Auth once: two users, their tokens, the JWKS before, during
-- and after a key rotation, a token from another issuer.
local function run_better_auth()
  local out = support.capture(("BA_ADMIN_URL='%s' node '%s/betterauth.mjs'")
    :format(support.admin_url, dir))
  local ok, data = pcall(cjson.decode, out)
  assert(ok and type(data) == "table", "betterauth.mjs printed no JSON: " .. out)
  return data
end

describe("Better Auth interop", function()
  local ba, db, opts

  setup(function()
    ba = run_better_auth()
    opts = { issuer = ba.issuer, audience = ba.audience, now = ba.now }
  end)
  before_each(function() db = support.fresh() end)
  after_each(function() db:close() end)

  local function with(extra)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("verifies its tokens against its JWKS with issuer and audience", function()
    local jwks = cjson.encode(ba.jwks_before)
    for _, u in ipairs(ba.users) do
      local claims = assert(tododb.token.verify(u.token, jwks, opts))
      assert.equal(u.id, claims.sub)
      assert.equal(u.email, claims.email)
      assert.equal(ba.issuer, claims.iss)
    end
    local claims, err = tododb.token.verify(ba.users[1].token, jwks, with { audience = "https://api.example" })
    assert.is_nil(claims)
    assert.equal("unauthorized", err.code)
    assert.equal("wrong_audience", err.reason)
    claims, err = tododb.token.verify(ba.users[1].token, jwks, with { issuer = "https://evil.example" })
    assert.is_nil(claims)
    assert.equal("unauthorized", err.code)
    assert.equal("wrong_issuer", err.reason)
  end)

  it("provisions each Better Auth user on first use, with its email, once", function()
    local jwks = cjson.encode(ba.jwks_before)
    local ada = ba.users[1]
    local s = assert(db:session_from_token(ada.token, jwks, with { provision = true }))
    local u = assert(db:find_user_by_identity(ba.issuer, ada.id))
    assert.equal(s.user_id, u.id)
    assert.equal(ada.email, u.email)
    local again = assert(db:session_from_token(ada.token, jwks, with { provision = true }))
    assert.equal(s.user_id, again.user_id)
    assert.equal(1, support.count(db, "SELECT count(*) AS n FROM users"))
    -- no password: the email cannot log in with one
    assert.equal("unauthorized", select(2, db:authenticate(ada.email, "correct horse battery")).code)
  end)

  it("keeps two Better Auth users' todos apart", function()
    local jwks = cjson.encode(ba.jwks_before)
    local a = assert(db:session_from_token(ba.users[1].token, jwks, with { provision = true }))
    local b = assert(db:session_from_token(ba.users[2].token, jwks, with { provision = true }))
    assert.are_not.equal(a.user_id, b.user_id)
    local mine = {}
    for i = 1, 3 do mine[#mine + 1] = assert(a:create_todo { title = "ada's " .. i }) end
    local bobs = assert(b:create_todo { title = "bob's" })
    assert.equal(1, b:count_todos())
    assert.equal("bob's", b:list_todos().items[1].title)
    for _, t in ipairs(mine) do
      if t.id ~= bobs.id then              -- ids may be per user: bob's own id 1 is his
        assert.equal("not_found", select(2, b:get_todo(t.id)).code)
        assert.equal("not_found", select(2, b:update_todo(t.id, { title = "x" })).code)
        assert.equal("not_found", select(2, b:delete_todo(t.id)).code)
      end
    end
    assert.equal(3, a:count_todos())
    for _, t in ipairs(mine) do assert.equal(t.title, assert(a:get_todo(t.id)).title) end
  end)

  it("follows a key rotation: the old kid works while listed, not after", function()
    local old, new = ba.users[1], ba.rotated
    assert.are_not.equal(old.kid, new.kid)
    local during, after = cjson.encode(ba.jwks_during), cjson.encode(ba.jwks_after)
    assert.equal(2, #ba.jwks_during.keys)
    assert(tododb.token.verify(old.token, during, opts))
    assert(tododb.token.verify(new.token, during, opts))
    assert(tododb.token.verify(new.token, after, opts))
    local claims, err = tododb.token.verify(old.token, after, opts)
    assert.is_nil(claims)
    assert.equal("unauthorized", err.code)
    assert.equal("unknown_kid", err.reason)
    -- the same user before and after the rotation
    local s1 = assert(db:session_from_token(old.token, during, with { provision = true }))
    local s2 = assert(db:session_from_token(new.token, after, with { provision = true }))
    assert.equal(s1.user_id, s2.user_id)
  end)

  it("refuses a token of another issuer signed with the same key, provisioning nothing", function()
    local other = ba.other_issuer
    assert.equal(ba.users[1].kid, other.kid)
    local jwks = cjson.encode(ba.jwks_before)
    local s, err = db:session_from_token(other.token, jwks, with { provision = true })
    assert.is_nil(s)
    assert.equal("unauthorized", err.code)
    assert.equal("wrong_issuer", err.reason)
    assert.equal(0, support.count(db, "SELECT count(*) AS n FROM users"))
  end)
end)
