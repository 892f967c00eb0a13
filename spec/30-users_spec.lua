-- Users: accounts, email rules, argon2id cost, authentication, life cycle.
local S = require "support"
local tododb = require "tododb"
local system = require "system"

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$"
local PW = "correct horse battery"
-- An email of exactly 254 bytes, every label within the rules.
local LONG254 = "a@" .. ("b"):rep(63) .. "." .. ("c"):rep(63) .. "." .. ("d"):rep(63) .. "."
LONG254 = LONG254 .. ("e"):rep(254 - #LONG254 - 4) .. ".com"

local db

local function nusers()
  return S.count(db, "SELECT count(*) AS n FROM users")
end

local function stored_hash(conn, id)
  return assert((conn or db):query("SELECT hashed_password FROM users WHERE id = $1", id))[1].hashed_password
end

-- Every todo of a user as the database holds it: as the superuser when we
-- have one, otherwise as the user itself (row-level security).
local function todo_rows(uid)
  if S.admin_url then
    local admin = assert(tododb.connect(S.admin_url))
    local n = S.count(admin, "SELECT count(*) AS n FROM todos WHERE user_id = $1", uid)
    admin:close()
    return n
  end
  assert(db:exec "BEGIN")
  S.set_user(db, uid)
  local n = S.count(db, "SELECT count(*) AS n FROM todos WHERE user_id = $1", uid)
  assert(db:exec "ROLLBACK")
  return n
end

local function new_user(email, pw)
  return assert(db:create_user { email = email, password = pw or PW })
end

-- Asserts nil, err with that code (and field when given); returns err.
local function fails(code, field, got, err)
  assert.is_nil(got, "expected a failure, got " .. tostring(got))
  assert.is_table(err)
  assert.equal(code, err.code, tostring(err and err.message))
  if field then assert.equal(field, err.field) end
  assert.is_string(err.message)
  assert.equal(err.message, tostring(err))
  return err
end

describe("users", function()
  before_each(function() db = S.fresh() end)
  after_each(function() db:close() end)

  describe("create_user", function()
    it("returns a User with a trimmed, lower-cased email and ISO timestamps", function()
      local u, err = db:create_user { email = "  Alice.Smith@Example.COM \t", password = PW }
      assert.is_nil(err)
      assert.equal("alice.smith@example.com", u.email)
      assert.is_number(u.id)
      assert.truthy(u.created_at:match(ISO), u.created_at)
      assert.truthy(u.updated_at:match(ISO), u.updated_at)
      local row = assert(db:query("SELECT email FROM users WHERE id = $1", u.id))[1]
      assert.equal("alice.smith@example.com", row.email)
      assert.equal(1, nusers())
    end)

    -- One spelling per address: anything outside ASCII is refused, so no
    -- look-alike, other normal form or invisible character can stand in
    -- for (or lock out) an account. International domains come in punycode.
    describe("refuses look-alikes and invisible characters", function()
      local lookalikes = {
        { "\u{212A}ate@example.com", "U+212A KELVIN SIGN (lower() folds it to k)" },
        { "\u{0130}nfo@example.com", "U+0130 capital I with dot (lower() folds it to i)" },
        { "jose\u{0301}@example.com", "NFD: e + U+0301 combining acute" },
        { "jos\u{00E9}@example.com", "NFC: U+00E9" },
        { "ka\u{00A0}te@example.com", "U+00A0 no-break space inside" },
        { "kate@example.com\u{00A0}", "U+00A0 no-break space at the end (not trimmed)" },
        { "ka\u{200B}te@example.com", "U+200B zero width space" },
        { "\u{FEFF}kate@example.com", "U+FEFF byte order mark" },
        { "k\u{0430}te@example.com", "U+0430 Cyrillic a" },
        { "\u{FF4B}ate@example.com", "U+FF4B fullwidth k" },
        { "kate@ex\u{00E4}mple.com", "IDN domain not in punycode" },
      }
      for _, c in ipairs(lookalikes) do
        it(c[2], function()
          local kate = new_user "kate@example.com"
          local err = fails("invalid", "email", db:create_user { email = c[1], password = "attacker pw" })
          assert.truthy(err.message:find("ASCII", 1, true), err.message)
          fails("invalid", "email", db:find_user(c[1]))
          fails("unauthorized", nil, db:authenticate(c[1], PW))
          fails("invalid", "email", db:change_email(kate, c[1]))
          assert.equal(1, nusers())
          assert.equal("kate@example.com", assert(db:get_user(kate.id)).email)
        end)
      end

      it("the look-alike first cannot lock the real address out", function()
        fails("invalid", "email", db:create_user { email = "\u{212A}ate@example.com", password = "attacker pw" })
        local kate = new_user "kate@example.com"
        assert.equal(kate, assert(db:find_user "kate@example.com"))
        fails("unauthorized", nil, db:authenticate("kate@example.com", "attacker pw"))
        assert.equal(kate, assert(db:authenticate("KATE@example.com", PW)))
      end)

      it("accepts an international domain in punycode", function()
        local u = new_user " Kate@XN--Exmple-cua.com "
        assert.equal("kate@xn--exmple-cua.com", u.email)
        assert.equal(u, assert(db:find_user "kate@xn--exmple-cua.com"))
      end)
    end)

    it("accepts the boundary shapes of the rules", function()
      local cases = {
        ("l"):rep(64) .. "@example.com",                               -- local part 64
        "x@" .. ("d"):rep(63) .. ".com",                               -- label 63
        "a@b-c.d-e.org",                                               -- inner hyphens
        "o'brien+tag@x1.io",                                           -- quote in local part
      }
      assert.equal(254, #LONG254)
      cases[#cases + 1] = LONG254
      for i, e in ipairs(cases) do
        local u, err = db:create_user { email = e, password = PW }
        assert.is_nil(err and err.message, e)
        assert.equal(e, u.email)
        assert.equal(i, nusers())
      end
    end)

    it("refuses bad emails with a message naming the rule, writing nothing", function()
      local cases = {
        { "", "required" },
        { "   \t ", "required" },
        { "alice", "one @" },
        { "a@b@example.com", "one @" },
        { "@example.com", "before @" },
        { ("l"):rep(65) .. "@example.com", "before @" },
        { "alice@localhost", "dot" },
        { "alice@example.com.", "empty" },
        { "alice@.example.com", "empty" },
        { "alice@example..com", "empty" },
        { "alice@-example.com", "hyphen" },
        { "alice@example-.com", "hyphen" },
        { "alice@" .. ("d"):rep(64) .. ".com", "63" },
        { "alice@exa_mple.com", "letters, digits" },
        { "alice@exämple.com", "ASCII" },
        { ("a"):rep(300) .. "@example.com", "254" },
        { "x" .. LONG254, "254" },                                      -- 255 bytes
        { "al ice@example.com", "spaces" },
        { "alice@exa mple.com", "spaces" },
        { "alice\t@example.com", "spaces" },
        { "alice\1@example.com", "control" },
        { "alice\127@example.com", "control" },
        { "\xff@example.com", "ASCII" },
        { "al\xc3@example.com", "ASCII" },
        { "alice\0@example.com", "control" },
        { "' OR 1=1 --", "spaces" },
        { "x@y.com'; DROP TABLE users; --", "spaces" },
      }
      new_user "existing@example.com"
      for _, c in ipairs(cases) do
        local err = fails("invalid", "email", db:create_user { email = c[1], password = PW })
        assert.truthy(err.message:find(c[2], 1, true),
          ("%q: message %q does not name the rule %q"):format(c[1], err.message, c[2]))
        assert.is_nil(err.message:find(PW, 1, true))
      end
      assert.equal(1, nusers())
    end)

    it("accepts passwords of 8 and 1024 bytes of any bytes, refuses 7 and 1025", function()
      local any = {}
      for i = 0, 255 do any[#any + 1] = string.char(i) end
      any = table.concat(any)
      local pw1024 = (any:rep(4))
      assert.equal(1024, #pw1024)
      fails("invalid", "password", db:create_user { email = "a@example.com", password = "1234567" })
      fails("invalid", "password", db:create_user { email = "a@example.com", password = "" })
      fails("invalid", "password", db:create_user { email = "a@example.com", password = pw1024 .. "x" })
      assert.equal(0, nusers())
      new_user("a@example.com", "12345678")
      new_user("b@example.com", pw1024)
      assert.is_not_nil(db:authenticate("a@example.com", "12345678"))
      assert.is_not_nil(db:authenticate("b@example.com", pw1024))
      assert.is_nil(db:authenticate("b@example.com", pw1024:sub(1, 1023)))
    end)

    it("accepts a NUL in the middle of a password and checks the bytes after it", function()
      local pw = "before\0after-the-nul"
      local u = new_user("nul@example.com", pw)
      assert.equal(u, db:authenticate("nul@example.com", pw))
      fails("unauthorized", nil, db:authenticate("nul@example.com", "before\0after-the-NUL"))
      fails("unauthorized", nil, db:authenticate("nul@example.com", "before"))
      fails("unauthorized", nil, db:authenticate("nul@example.com", "before\0"))
    end)

    it("raises for arguments of the wrong type, writing nothing", function()
      assert.has_error(function() db:create_user() end)
      assert.has_error(function() db:create_user "a@example.com" end)
      assert.has_error(function() db:create_user { email = "a@example.com" } end)
      assert.has_error(function() db:create_user { password = PW } end)
      assert.has_error(function() db:create_user { email = 42, password = PW } end)
      assert.has_error(function() db:create_user { email = {}, password = PW } end)
      assert.has_error(function() db:create_user { email = "a@example.com", password = 12345678 } end)
      assert.has_error(function() db:create_user { email = "a@example.com", password = {} } end)
      assert.has_error(function() db:create_user { email = "a@example.com", password = true } end)
      assert.equal(0, nusers())
    end)

    it("refuses a duplicate email in any case or spacing as a conflict", function()
      new_user "bob@example.com"
      for _, e in ipairs { "bob@example.com", "BOB@EXAMPLE.COM", "  Bob@Example.Com  " } do
        local err = fails("conflict", "email", db:create_user { email = e, password = "other password" })
        assert.is_nil(err.message:find("other password", 1, true))
      end
      assert.equal(1, nusers())
    end)

    it("lets exactly one of two concurrent creations of the same email win", function()
      local LOCK = 7305001
      local barrier = S.pooler and assert(S.admin_url, "TODODB_ADMIN_URL is not set") or ""
      local holder = S.pooler and assert(tododb.connect(S.admin_url)) or S.connect()
      assert(holder:query("SELECT pg_advisory_lock($1)", LOCK))
      local function spawn(email)
        local script = ([[
          local tododb = require "tododb"
          local db = assert(tododb.connect(%q, { pwhash = "min" }))
          -- The barrier is a session lock: behind a transaction pooler it
          -- takes a direct connection of its own.
          local gate = %q ~= "" and assert(tododb.connect(%q)) or db
          assert(gate:query("SELECT pg_advisory_lock_shared($1)", %d))
          local u, err = db:create_user { email = %q, password = "race password" }
          print(u and ("OK " .. u.id) or ("ERR " .. err.code))
        ]]):format(S.url, barrier, barrier, LOCK, email)
        return S.spawn_lua(script)
      end
      local results = {}
      for round = 1, 3 do
        local email = ("race%d@example.com"):format(round)
        local a, b = spawn(email), spawn(email:upper())
        local waiting = false
        for _ = 1, 200 do
          local rows = assert(holder:query(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            .. " AND objid::bigint = $1", LOCK))
          if rows[1].n >= 2 then waiting = true break end
          system.sleep(0.05)
        end
        assert(holder:query("SELECT pg_advisory_unlock($1)", LOCK))
        local out_a, out_b = a:read "*a", b:read "*a"
        a:close(); b:close()
        assert.is_true(waiting, "the two creators never both waited: " .. out_a .. out_b)
        local ok, conflict = 0, 0
        for _, out in ipairs { out_a, out_b } do
          if out:match "^OK %d+" then ok = ok + 1
          elseif out:match "^ERR conflict" then conflict = conflict + 1 end
        end
        assert.equal(1, ok, out_a .. out_b)
        assert.equal(1, conflict, out_a .. out_b)
        results[round] = S.count(db, "SELECT count(*) AS n FROM users WHERE email = $1", email)
        if round < 3 then assert(holder:query("SELECT pg_advisory_lock($1)", LOCK)) end
      end
      holder:close()
      assert.same({ 1, 1, 1 }, results)
    end)
  end)

  describe("password hashing cost", function()
    it("defaults to argon2id interactive (m=65536, t=2, p=1)", function()
      local plain = assert(tododb.connect(S.url))
      local u = assert(plain:create_user { email = "cost@example.com", password = PW })
      local h = stored_hash(plain, u.id)
      assert.equal("$argon2id$v=19$m=65536,t=2,p=1$", h:sub(1, 31))
      assert.equal(u, plain:authenticate("cost@example.com", PW))
      plain:close()
    end)

    it("uses m=262144, t=3 with pwhash = \"moderate\"", function()
      if os.getenv "TDB_VALGRIND" then return pending "256 MiB argon2id is too slow under valgrind" end
      local mod = assert(tododb.connect(S.url, { pwhash = "moderate" }))
      local u = assert(mod:create_user { email = "moderate@example.com", password = PW })
      assert.equal("$argon2id$v=19$m=262144,t=3,p=1$", stored_hash(mod, u.id):sub(1, 32))
      mod:close()
    end)

    it("upgrades a cheaper hash on login, and the login still works after", function()
      local cheap = assert(tododb.connect(S.url, { pwhash = "min" }))
      local u = assert(cheap:create_user { email = "old@example.com", password = PW })
      local before = stored_hash(cheap, u.id)
      assert.is_nil(before:find("m=65536,t=2", 1, true))
      local plain = assert(tododb.connect(S.url))
      assert.equal(u, plain:authenticate("OLD@example.com", PW))
      local after = stored_hash(plain, u.id)
      assert.equal("$argon2id$v=19$m=65536,t=2,p=1$", after:sub(1, 31))
      assert.equal(u, plain:authenticate("old@example.com", PW))
      assert.equal(u, cheap:authenticate("old@example.com", PW))
      fails("unauthorized", nil, plain:authenticate("old@example.com", PW .. "!"))
      cheap:close(); plain:close()
    end)

    it("does not rehash when a wrong password is given", function()
      local cheap = assert(tododb.connect(S.url, { pwhash = "min" }))
      local u = assert(cheap:create_user { email = "old@example.com", password = PW })
      local before = stored_hash(cheap, u.id)
      local plain = assert(tododb.connect(S.url))
      fails("unauthorized", nil, plain:authenticate("old@example.com", "wrong password"))
      assert.equal(before, stored_hash(plain, u.id))
      cheap:close(); plain:close()
    end)

    -- Regression: crypto_pwhash_str_needs_rehash is true for any difference
    -- of parameters; a login through a cheaper connection must not downgrade.
    it("never downgrades a stronger hash when logging in through a cheaper connection", function()
      local plain = assert(tododb.connect(S.url))
      local u = assert(plain:create_user { email = "strong@example.com", password = PW })
      local cheap = assert(tododb.connect(S.url, { pwhash = "min" }))
      assert.equal(u, cheap:authenticate("strong@example.com", PW))
      assert.equal("$argon2id$v=19$m=65536,t=2,p=1$", stored_hash(cheap, u.id):sub(1, 31))
      cheap:close(); plain:close()
    end)
  end)

  describe("authenticate", function()
    local alice
    before_each(function() alice = new_user "alice@example.com" end)

    it("returns the User for the right password, whatever the email's case and spacing", function()
      for _, e in ipairs { "alice@example.com", "ALICE@EXAMPLE.COM", "  Alice@Example.com\n" } do
        local u, err = db:authenticate(e, PW)
        assert.is_nil(err)
        assert.equal(alice, u)
        assert.equal("alice@example.com", u.email)
      end
    end)

    it("answers unknown email, wrong password and invalid email alike", function()
      local e1 = fails("unauthorized", nil, db:authenticate("nobody@example.com", PW))
      local e2 = fails("unauthorized", nil, db:authenticate("alice@example.com", "wrong password"))
      local e3 = fails("unauthorized", nil, db:authenticate("not an email", PW))
      local e4 = fails("unauthorized", nil, db:authenticate("alice@example.com", ""))
      local e5 = fails("unauthorized", nil, db:authenticate("", ""))
      for _, e in ipairs { e2, e3, e4, e5 } do
        assert.equal(e1.message, e.message)
        assert.equal(e1.field, e.field)
        assert.equal(e1.sqlstate, e.sqlstate)
      end
      assert.is_nil(e2.message:find("wrong password", 1, true))
    end)

    it("raises for non-string arguments", function()
      assert.has_error(function() db:authenticate(nil, PW) end)
      assert.has_error(function() db:authenticate("alice@example.com", nil) end)
      assert.has_error(function() db:authenticate("alice@example.com", 12345678) end)
      assert.has_error(function() db:authenticate({}, PW) end)
    end)

    it("treats SQL fragments as data", function()
      fails("unauthorized", nil, db:authenticate("' OR 1=1 --", PW))
      fails("unauthorized", nil, db:authenticate("alice@example.com' OR '1'='1", PW))
      fails("unauthorized", nil, db:authenticate("alice@example.com", "' OR 1=1 --"))
      assert.equal(1, nusers())
    end)
  end)

  describe("get_user, find_user, list_users", function()
    local alice, bob
    before_each(function()
      alice = new_user "alice@example.com"
      bob = new_user "bob@example.com"
    end)

    it("fetch by id and by email", function()
      assert.equal(alice, db:get_user(alice.id))
      assert.equal(bob, db:get_user(tostring(bob.id)))
      assert.equal(bob, db:find_user " BOB@example.com ")
      local u = db:get_user(alice.id)
      assert.equal(alice.email, u.email)
      assert.equal(alice.created_at, u.created_at)
      assert.equal(alice.updated_at, u.updated_at)
    end)

    it("report not_found for missing ids and emails", function()
      local missing = bob.id + 1000
      fails("not_found", nil, db:get_user(missing))
      fails("not_found", nil, db:get_user(0))
      fails("not_found", nil, db:get_user(-1))
      fails("not_found", nil, db:get_user "99999999999999999999")
      fails("not_found", nil, db:find_user "carol@example.com")
    end)

    it("refuse ids that are not integers and raise for wrong types", function()
      fails("invalid", "id", db:get_user(1.5))
      fails("invalid", "id", db:get_user "abc")
      fails("invalid", "id", db:get_user "")
      fails("invalid", "id", db:get_user "1 OR 1=1")
      fails("invalid", "email", db:find_user "not an email")
      fails("invalid", "email", db:find_user "")
      assert.has_error(function() db:get_user() end)
      assert.has_error(function() db:get_user {} end)
      assert.has_error(function() db:find_user() end)
      assert.has_error(function() db:find_user(42) end)
    end)

    it("take a User object wherever an id is taken", function()
      assert.equal(alice, db:get_user(alice))
      assert.is_true(db:change_password(alice, PW, "a new password"))
      assert(db:authenticate("alice@example.com", "a new password"))
      assert.equal("robert@example.com", assert(db:change_email(bob, "Robert@example.com")).email)
      assert.equal(0, db:delete_user(bob))
      fails("not_found", nil, db:get_user(bob))
    end)

    it("list users in id order with keyset paging", function()
      local all = { alice, bob }
      for i = 1, 5 do all[#all + 1] = new_user(("u%d@example.com"):format(i)) end
      local got = assert(db:list_users())
      assert.equal(7, #got)
      for i, u in ipairs(got) do assert.equal(all[i], u) end
      local seen, after = {}, nil
      repeat
        local page = assert(db:list_users { after = after, limit = 3 })
        assert.is_true(#page <= 3)
        for _, u in ipairs(page) do seen[#seen + 1] = u end
        after = page[#page] and page[#page].id
      until #page < 3
      assert.equal(7, #seen)
      for i, u in ipairs(seen) do assert.equal(all[i], u) end
      assert.same({}, assert(db:list_users { after = all[7].id }))
      local one = assert(db:list_users { after = all[2].id, limit = 1 })
      assert.equal(1, #one)
      assert.equal(all[3], one[1])
      fails("invalid", "limit", db:list_users { limit = 0 })
      fails("invalid", "limit", db:list_users { limit = 1001 })
      fails("invalid", "limit", db:list_users { limit = 1.5 })
      fails("invalid", "after", db:list_users { after = 1.5 })
    end)
  end)

  describe("User objects", function()
    it("have fields, to_table, tostring, == by id and nothing of the hash", function()
      local a = new_user "alice@example.com"
      local b = new_user "bob@example.com"
      local a2 = db:get_user(a.id)
      assert.is_true(a == a2)
      assert.is_false(a == b)
      assert.is_true(a ~= b)
      assert.is_nil(a.hashed_password)
      assert.is_nil(a.password)
      assert.is_nil(a.nonexistent)
      local t = a:to_table()
      assert.same({ id = a.id, email = "alice@example.com", created_at = a.created_at,
                    updated_at = a.updated_at }, t)
      for k, v in pairs(t) do
        assert.is_nil(tostring(v):find("$argon2", 1, true), k)
      end
      local s = tostring(a)
      assert.truthy(s:find("alice@example.com", 1, true))
      assert.truthy(s:find(tostring(a.id), 1, true))
      assert.is_nil(s:find("$argon2", 1, true))
      assert.is_nil(s:find(PW, 1, true))
    end)

    -- Regression: Lua 5.4 calls __eq for any two userdata; == with a value
    -- of another kind must be false, not raise.
    it("compare unequal, without raising, to other kinds of values", function()
      local a = new_user "alice@example.com"
      local t = assert(db:session(a):create_todo { title = "x" })
      local s = db:session(a)
      local ok, res = pcall(function() return a == t end)
      assert.is_true(ok, tostring(res))
      assert.is_false(res)
      ok, res = pcall(function() return a == db end)
      assert.is_true(ok, tostring(res))
      assert.is_false(res)
      ok, res = pcall(function() return a == s end)
      assert.is_true(ok, tostring(res))
      assert.is_false(res)
      assert.is_false(a == a.id)
      assert.is_false(a == a:to_table())
    end)

    it("are read-only", function()
      local a = new_user "alice@example.com"
      assert.has_error(function() a.email = "evil@example.com" end)
      assert.has_error(function() a.id = 1 end)
      assert.has_error(function() a.hashed_password = "x" end)
      assert.has_error(function() a.whatever = 1 end)
      assert.equal("alice@example.com", a.email)
    end)
  end)

  describe("change_password", function()
    local alice
    before_each(function() alice = new_user "alice@example.com" end)

    it("changes it: the new one works, the old one no longer does", function()
      local before = stored_hash(nil, alice.id)
      assert.is_true(db:change_password(alice.id, PW, "a brand new password"))
      assert.are_not.equal(before, stored_hash(nil, alice.id))
      assert.equal(alice, db:authenticate("alice@example.com", "a brand new password"))
      fails("unauthorized", nil, db:authenticate("alice@example.com", PW))
      assert.is_true(db:change_password(tostring(alice.id), "a brand new password", PW))
      assert.equal(alice, db:authenticate("alice@example.com", PW))
    end)

    it("refuses a wrong old password and a bad new one, changing nothing", function()
      local before = stored_hash(nil, alice.id)
      local err = fails("unauthorized", nil, db:change_password(alice.id, "wrong password", "new password 1"))
      assert.is_nil(err.message:find("wrong password", 1, true))
      fails("invalid", "password", db:change_password(alice.id, PW, "short"))
      fails("invalid", "password", db:change_password(alice.id, PW, ("x"):rep(1025)))
      assert.equal(before, stored_hash(nil, alice.id))
      assert.equal(alice, db:authenticate("alice@example.com", PW))
    end)

    it("reports missing users and bad ids, and raises for wrong types", function()
      fails("not_found", nil, db:change_password(alice.id + 1000, PW, "new password 1"))
      fails("not_found", nil, db:change_password("99999999999999999999", PW, "new password 1"))
      fails("invalid", "id", db:change_password(1.5, PW, "new password 1"))
      fails("invalid", "id", db:change_password("abc", PW, "new password 1"))
      assert.has_error(function() db:change_password(alice.id, nil, "new password 1") end)
      assert.has_error(function() db:change_password(alice.id, PW, 123456789) end)
      assert.has_error(function() db:change_password({}, PW, "new password 1") end)
      assert.equal(alice, db:authenticate("alice@example.com", PW))
    end)
  end)

  describe("change_email", function()
    local alice, bob
    before_each(function()
      alice = new_user "alice@example.com"
      bob = new_user "bob@example.com"
    end)

    it("changes it, normalised, and moves updated_at", function()
      system.sleep(0.002)
      local u, err = db:change_email(alice.id, "  Alice.New@Example.ORG ")
      assert.is_nil(err)
      assert.equal(alice, u)
      assert.equal("alice.new@example.org", u.email)
      assert.equal(alice.created_at, u.created_at)
      assert.is_true(u.updated_at > alice.updated_at)
      assert.equal(alice, db:authenticate("alice.new@example.org", PW))
      fails("unauthorized", nil, db:authenticate("alice@example.com", PW))
      fails("not_found", nil, db:find_user "alice@example.com")
    end)

    it("allows re-setting the same address in another case", function()
      local u = assert(db:change_email(alice.id, "ALICE@example.com"))
      assert.equal("alice@example.com", u.email)
    end)

    it("applies the email rules and refuses taken addresses", function()
      fails("invalid", "email", db:change_email(alice.id, "a@b@c.com"))
      fails("invalid", "email", db:change_email(alice.id, ""))
      fails("invalid", "email", db:change_email(alice.id, "alice@example.com."))
      fails("invalid", "email", db:change_email(alice.id, "\xff@example.com"))
      fails("conflict", "email", db:change_email(alice.id, "BOB@example.com"))
      fails("not_found", nil, db:change_email(bob.id + 1000, "carol@example.com"))
      fails("invalid", "id", db:change_email(1.5, "carol@example.com"))
      assert.has_error(function() db:change_email(alice.id, 42) end)
      assert.has_error(function() db:change_email(alice.id) end)
      assert.equal("alice@example.com", db:get_user(alice.id).email)
      assert.equal("bob@example.com", db:get_user(bob.id).email)
    end)
  end)

  describe("delete_user", function()
    it("deletes the user and their todos and says how many todos went", function()
      local alice = new_user "alice@example.com"
      local bob = new_user "bob@example.com"
      local sa, sb = db:session(alice), db:session(bob)
      for i = 1, 3 do assert(sa:create_todo { title = "alice " .. i }) end
      assert(sb:create_todo { title = "bob's" })
      assert.equal(3, sa:count_todos())
      assert.equal(3, todo_rows(alice.id))
      local n, err = db:delete_user(alice.id)
      assert.is_nil(err)
      assert.equal(3, n)
      assert.equal(0, sa:count_todos())
      assert.equal(0, todo_rows(alice.id))
      assert.equal(1, todo_rows(bob.id))
      assert.equal(1, sb:count_todos())
      fails("not_found", nil, db:get_user(alice.id))
      fails("unauthorized", nil, db:authenticate("alice@example.com", PW))
      fails("not_found", nil, db:delete_user(alice.id))
      fails("not_found", nil, sa:create_todo { title = "after death" })
      assert.equal(0, todo_rows(alice.id))
      assert.equal(1, db:delete_user(bob.id))
      assert.equal(0, todo_rows(bob.id))
      assert.equal(0, nusers())
    end)

    it("returns 0 for a user without todos, not_found for missing ids", function()
      local alice = new_user "alice@example.com"
      assert.equal(0, db:delete_user(alice.id))
      fails("not_found", nil, db:delete_user(alice.id + 1000))
      fails("not_found", nil, db:delete_user(0))
      fails("not_found", nil, db:delete_user("99999999999999999999"))
      fails("invalid", "id", db:delete_user(1.5))
      fails("invalid", "id", db:delete_user("abc"))
      assert.has_error(function() db:delete_user() end)
      assert.has_error(function() db:delete_user {} end)
      assert.equal(0, nusers())
    end)
  end)
end)
