local support = require "support"
local tododb = require "tododb"

local ISS = "https://auth.example.com"

local function users(db)
  return support.count(db, "SELECT count(*) AS n FROM users")
end

describe("external identities", function()
  local db

  before_each(function() db = support.fresh() end)
  after_each(function() db:close() end)

  describe("db:provision_user", function()
    it("creates a user without password or email, then finds the same one", function()
      local u, created = assert(db:provision_user { issuer = ISS, subject = "Zx81abcDEF" })
      assert.is_true(created)
      assert.is_nil(u.email)
      assert.equal("tododb.User(" .. tostring(u.id) .. ")", tostring(u))
      assert.is_nil(u:to_table().email)
      local again, created2 = assert(db:provision_user { issuer = ISS, subject = "Zx81abcDEF" })
      assert.is_false(created2)
      assert.equal(u, again)
      assert.equal(1, users(db))
    end)

    it("keys on issuer and subject together, subjects case-sensitive", function()
      local a = assert(db:provision_user { issuer = ISS, subject = "s1" })
      local b = assert(db:provision_user { issuer = "https://other.example", subject = "s1" })
      local c = assert(db:provision_user { issuer = ISS, subject = "S1" })
      assert.are_not.equal(a.id, b.id)
      assert.are_not.equal(a.id, c.id)
      assert.equal(3, users(db))
    end)

    it("stores the email normalised when it is given", function()
      local u = assert(db:provision_user { issuer = ISS, subject = "s", email = "  Ann@Example.COM " })
      assert.equal("ann@example.com", u.email)
      assert.equal(u, db:find_user("ann@example.com"))
    end)

    it("never links an email held by another account: conflict, nothing written", function()
      local pw = assert(db:create_user { email = "bob@example.com", password = "password1" })
      local u, err = db:provision_user { issuer = ISS, subject = "bob", email = "BOB@example.com" }
      assert.is_nil(u)
      assert.equal("conflict", err.code)
      assert.equal("email", err.field)
      assert.equal(1, users(db))
      assert.equal(0, support.count(db, "SELECT count(*) AS n FROM user_identities"))
      -- the password account is untouched and still logs in
      assert.equal(pw, db:authenticate("bob@example.com", "password1"))
      -- the same identity without the email is a separate account
      local other = assert(db:provision_user { issuer = ISS, subject = "bob" })
      assert.are_not.equal(pw.id, other.id)
    end)

    it("answers invalid for bad values and raises for wrong types", function()
      for _, case in ipairs {
        { { issuer = "", subject = "s" }, "issuer" },
        { { issuer = ISS, subject = "" }, "subject" },
        { { issuer = ISS, subject = string.rep("x", 256) }, "subject" },
        { { issuer = string.rep("i", 1025), subject = "s" }, "issuer" },
        { { issuer = ISS, subject = "a\0b" }, "subject" },
        { { issuer = ISS, subject = "\255" }, "subject" },
        { { issuer = ISS, subject = "s", email = "not an email" }, "email" },
      } do
        local u, err = db:provision_user(case[1])
        assert.is_nil(u)
        assert.equal("invalid", err.code)
        assert.equal(case[2], err.field)
      end
      assert.equal(0, users(db))
      assert.error_matches(function() db:provision_user { issuer = 1, subject = "s" } end,
                           "bad argument #1 .*issuer must be a string, got number")
      assert.error_matches(function() db:provision_user { issuer = ISS } end,
                           "bad argument #1 .*subject must be a string, got nil")
      assert.error_matches(function() db:provision_user { issuer = ISS, subject = "s", email = true } end,
                           "bad argument #1 .*email must be a string, got boolean")
      assert.has_error(function() db:provision_user "x" end)
    end)

    it("gives two racing calls for one identity the same user, created once", function()
      local holder, watcher = support.connect(), support.connect()
      finally(function() holder:close(); watcher:close() end)
      -- Both callers find nothing, then queue behind the lock at their insert.
      assert(holder:exec "BEGIN")
      assert(holder:exec "LOCK TABLE user_identities IN EXCLUSIVE MODE")
      local script = ([[
        local db = assert(require("tododb").connect(%q))
        local u, created = db:provision_user { issuer = %q, subject = "racer" }
        print(u and ("ok " .. tostring(u.id) .. " " .. tostring(created)) or ("err " .. tostring(created)))
      ]]):format(support.url, ISS)
      local a, b = support.spawn_lua(script), support.spawn_lua(script)
      local waiting = 0
      for _ = 1, 1200 do
        waiting = watcher:query([[SELECT count(*) AS n FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND query LIKE '%user_identities%']])[1].n
        if waiting == 2 then break end
        support.run "sleep 0.05"
      end
      assert.equal(2, waiting)
      assert(holder:exec "COMMIT")
      local ra, rb = a:read "*a", b:read "*a"
      a:close(); b:close()
      local ida, ca = ra:match "^ok (%d+) (%a+)"
      local idb, cb = rb:match "^ok (%d+) (%a+)"
      assert.is_truthy(ida, ra)
      assert.is_truthy(idb, rb)
      assert.equal(ida, idb)
      assert.same({ "false", "true" }, (function() local t = { ca, cb }; table.sort(t); return t end)())
      assert.equal(1, users(db))
    end)
  end)

  describe("users without a password", function()
    it("fail authenticate like an unknown email", function()
      local u = assert(db:provision_user { issuer = ISS, subject = "p", email = "pat@example.com" })
      for _, pw in ipairs { "", "password1", string.rep("x", 2000) } do
        local got, err = db:authenticate("pat@example.com", pw)
        assert.is_nil(got)
        assert.equal("unauthorized", err.code)
        assert.equal("invalid email or password", err.message)
      end
      local _, unknown = db:authenticate("nobody@example.com", "password1")
      assert.equal(unknown.message, select(2, db:authenticate("pat@example.com", "password1")).message)
      local ok, err = db:change_password(u, "", "password2")
      assert.is_nil(ok)
      assert.equal("unauthorized", err.code)
    end)

    it("are deleted with their identities", function()
      local u = assert(db:provision_user { issuer = ISS, subject = "gone" })
      assert(db:session(u):create_todo { title = "t" })
      assert.equal(1, db:delete_user(u))
      assert.equal(0, support.count(db, "SELECT count(*) AS n FROM user_identities"))
      local again, created = assert(db:provision_user { issuer = ISS, subject = "gone" })
      assert.is_true(created)
      assert.are_not.equal(u.id, again.id)
    end)
  end)

  describe("db:find_user_by_identity, db:link_identity, db:unlink_identity", function()
    it("link an existing account explicitly, once", function()
      local pw = assert(db:create_user { email = "carol@example.com", password = "password1" })
      local none, err = db:find_user_by_identity(ISS, "carol")
      assert.is_nil(none)
      assert.equal("not_found", err.code)
      assert.is_true(db:link_identity(pw, ISS, "carol"))
      assert.equal(pw, db:find_user_by_identity(ISS, "carol"))
      local u, created = assert(db:provision_user { issuer = ISS, subject = "carol", email = "carol@example.com" })
      assert.is_false(created)
      assert.equal(pw, u)
      local other = assert(db:create_user { email = "dan@example.com", password = "password1" })
      local ok
      ok, err = db:link_identity(other, ISS, "carol")
      assert.is_nil(ok)
      assert.equal("conflict", err.code)
      ok, err = db:link_identity(987654321, ISS, "nobody")
      assert.is_nil(ok)
      assert.equal("not_found", err.code)
      ok, err = db:unlink_identity(other, ISS, "carol")      -- not other's
      assert.is_nil(ok)
      assert.equal("not_found", err.code)
      assert.is_true(db:unlink_identity(pw, ISS, "carol"))
      assert.equal("not_found", select(2, db:find_user_by_identity(ISS, "carol")).code)
      assert.equal(pw, db:authenticate("carol@example.com", "password1"))
      assert.has_error(function() db:link_identity({}, ISS, "s") end)
      assert.equal("invalid", select(2, db:link_identity("x", ISS, "s")).code)
      assert.error_matches(function() db:find_user_by_identity(ISS, 5) end,
                           "bad argument #2 .*subject must be a string, got number")
      ok, err = db:link_identity(pw, ISS, "")
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
    end)
  end)

  describe("db:session_from_token", function()
    local key = string.rep("k", 32)
    local now = os.time()
    local function token(claims)
      local c = { exp = now + 60 }
      for k, v in pairs(claims) do c[k] = v end
      return tododb.token.sign(c, key)
    end

    it("provisions the user of (iss, sub) and finds it again", function()
      local tok = token { iss = ISS, sub = "ext-1", email = "Eve@Example.com" }
      local s = assert(db:session_from_token(tok, key, { issuer = ISS, provision = true }))
      assert(s:create_todo { title = "mine" })
      local s2 = assert(db:session_from_token(tok, key, { issuer = ISS, provision = true }))
      assert.equal(s.user_id, s2.user_id)
      assert.equal(1, s2:count_todos())
      local u = db:find_user_by_identity(ISS, "ext-1")
      assert.equal(s.user_id, u.id)
      assert.equal("eve@example.com", u.email)
    end)

    it("keeps provisioned users apart", function()
      local a = assert(db:session_from_token(token { iss = ISS, sub = "a" }, key, { provision = true }))
      local b = assert(db:session_from_token(token { iss = ISS, sub = "b" }, key, { provision = true }))
      local t = assert(a:create_todo { title = "a's" })
      assert.equal("not_found", select(2, b:get_todo(t.id)).code)
      assert.equal(0, b:count_todos())
    end)

    it("leaves the email out when asked to, or when tododb cannot store it", function()
      assert(db:create_user { email = "taken@example.com", password = "password1" })
      local tok = token { iss = ISS, sub = "t", email = "taken@example.com" }
      local s, err = db:session_from_token(tok, key, { provision = true })
      assert.is_nil(s)
      assert.equal("conflict", err.code)
      s = assert(db:session_from_token(tok, key, { provision = { email = false } }))
      assert.is_nil(db:get_user(s.user_id).email)
      local odd = assert(db:session_from_token(token { iss = ISS, sub = "o", email = "no at sign" },
                                               key, { provision = true }))
      assert.is_nil(db:get_user(odd.user_id).email)
    end)

    it("refuses to provision without an issuer or with an unusable subject", function()
      for _, claims in ipairs { { sub = "x" }, { iss = ISS, sub = string.rep("s", 300) } } do
        local s, err = db:session_from_token(token(claims), key, { provision = true })
        assert.is_nil(s)
        assert.equal("unauthorized", err.code)
      end
      assert.equal(0, users(db))
    end)

    it("still verifies the token before provisioning anything", function()
      local bad = tododb.token.sign({ iss = ISS, sub = "x", exp = now + 60 }, string.rep("z", 32))
      local s, err = db:session_from_token(bad, key, { provision = true })
      assert.is_nil(s)
      assert.equal("unauthorized", err.code)
      s, err = db:session_from_token(token { iss = "https://evil.example", sub = "x" }, key,
                                     { issuer = ISS, provision = true })
      assert.is_nil(s)
      assert.equal("unauthorized", err.code)
      assert.equal(0, users(db))
    end)

    it("returns map_subject's error instead of unauthorized", function()
      local s, err = db:session_from_token(token { sub = "m" }, key, {
        map_subject = function() return nil, tododb.core.error("unavailable", "lookup failed") end,
      })
      assert.is_nil(s)
      assert.equal("unavailable", err.code)
      assert.equal("lookup failed", err.message)
      assert.has_error(function()
        db:session_from_token(token { sub = "m" }, key, { provision = true, map_subject = print })
      end)
    end)
  end)
end)
