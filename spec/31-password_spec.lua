-- Passwords: what an attacker can learn from answers (never from timing
-- here — no clocks in specs), huge inputs, and no secrets in messages.
local S = require "support"

local PW = "correct horse battery"
local MB = ("\1\2\3 password "):rep(65536)          -- 1 MiB

local db, alice

local function unauthorized(got, err)
  assert.is_nil(got)
  assert.equal("unauthorized", err.code)
  return err
end

describe("passwords", function()
  before_each(function()
    db = S.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = PW })
  end)
  after_each(function() db:close() end)

  it("give one answer for an unknown email, a wrong password and a malformed email", function()
    local answers = {
      unauthorized(db:authenticate("nobody@example.com", PW)),
      unauthorized(db:authenticate("alice@example.com", PW .. "x")),
      unauthorized(db:authenticate("alice@example.com", PW:sub(1, -2))),
      unauthorized(db:authenticate("nobody", PW)),
      unauthorized(db:authenticate("\xff\0@@", PW)),
      unauthorized(db:authenticate(("a"):rep(500) .. "@example.com", PW)),
    }
    for i = 2, #answers do
      local a, b = answers[1], answers[i]
      assert.equal(a.message, b.message, "answer " .. i)
      assert.equal(a.code, b.code)
      assert.equal(a.field, b.field)
      assert.equal(a.sqlstate, b.sqlstate)
      local keys_a, keys_b = {}, {}
      for k in pairs(a) do keys_a[#keys_a + 1] = k end
      for k in pairs(b) do keys_b[#keys_b + 1] = k end
      table.sort(keys_a); table.sort(keys_b)
      assert.same(keys_a, keys_b)
    end
    assert.is_nil(answers[1].field)
  end)

  it("give that answer for a deleted account too", function()
    local bob = assert(db:create_user { email = "bob@example.com", password = PW })
    local wrong = unauthorized(db:authenticate("alice@example.com", "wrong password"))
    assert(db:delete_user(bob.id))
    local gone = unauthorized(db:authenticate("bob@example.com", PW))
    assert.equal(wrong.message, gone.message)
  end)

  it("refuse a 1 MiB password without crashing", function()
    local e1 = unauthorized(db:authenticate("alice@example.com", MB))
    local e2 = unauthorized(db:authenticate("nobody@example.com", MB))
    assert.equal(e1.message, e2.message)
    assert.is_true(#e1.message < 200)
    assert.equal(alice, db:authenticate("alice@example.com", PW))
  end)

  -- Regression: a password over 1024 bytes must never match (it was once
  -- truncated to 1024 bytes, so any suffix to a 1024-byte password worked).
  it("refuse a longer password whose first 1024 bytes are the right one", function()
    local pw = ("k"):rep(1000) .. ("%024d"):format(7)
    assert.equal(1024, #pw)
    local u = assert(db:create_user { email = "long@example.com", password = pw })
    assert.equal(u, db:authenticate("long@example.com", pw))
    unauthorized(db:authenticate("long@example.com", pw .. "x"))
    unauthorized(db:authenticate("long@example.com", pw .. MB))
    local got, err = db:change_password(u.id, pw .. "anything", "a new password")
    assert.is_nil(got)
    assert.equal("unauthorized", err.code)
    assert.equal(u, db:authenticate("long@example.com", pw))
  end)

  it("refuse a 1 MiB old password in change_password and a 1 MiB new one", function()
    local got, err = db:change_password(alice.id, MB, "a new password")
    assert.is_nil(got)
    assert.equal("unauthorized", err.code)
    got, err = db:change_password(alice.id, PW, MB)
    assert.is_nil(got)
    assert.equal("invalid", err.code)
    assert.equal("password", err.field)
    assert.equal(alice, db:authenticate("alice@example.com", PW))
  end)

  it("never put a password or a hash into an error message or a User", function()
    local secret = "s3cret-Password-42"
    local u = assert(db:create_user { email = "carol@example.com", password = secret })
    local hash = assert(db:query("SELECT hashed_password FROM users WHERE id = $1", u.id))[1].hashed_password
    local msgs = {}
    local function collect(_, err) msgs[#msgs + 1] = err and err.message or "" end
    collect(db:authenticate("carol@example.com", secret .. "!"))
    collect(db:authenticate("nobody@example.com", secret))
    collect(db:change_password(u.id, secret .. "!", secret .. "?"))
    collect(db:change_password(u.id, secret, "short"))
    collect(db:create_user { email = "carol@example.com", password = secret })
    collect(db:create_user { email = "bad email", password = secret })
    collect(db:create_user { email = "dave@example.com", password = secret:sub(1, 5) })
    for _, m in ipairs(msgs) do
      assert.is_nil(m:find(secret:sub(1, 8), 1, true), m)
      assert.is_nil(m:find("$argon2", 1, true), m)
      assert.is_nil(m:find(hash:sub(-20), 1, true), m)
    end
    assert.equal(7, #msgs)
    for _, v in pairs(u:to_table()) do assert.is_nil(tostring(v):find("argon2", 1, true)) end
  end)

  it("store a salted hash: the same password twice gives different hashes", function()
    local b = assert(db:create_user { email = "bob@example.com", password = PW })
    local rows = assert(db:query("SELECT hashed_password AS h FROM users WHERE id IN ($1, $2) ORDER BY id",
                                 alice.id, b.id))
    assert.equal(2, #rows)
    assert.are_not.equal(rows[1].h, rows[2].h)
    assert.equal("$argon2id$", rows[1].h:sub(1, 10))
    assert.is_nil(rows[1].h:find(PW, 1, true))
  end)
end)

-- An unknown email must cost what an account's hash costs, whatever the
-- connection's own cost: observed through memory, not time. argon2id fills
-- m KiB, so a login's rise of the process's peak RSS (VmHWM) shows the
-- parameters it verified at. Each login runs in a fresh process.
describe("failed logins verify at the stored hashes' cost", function()
  local SALT, TAG = "c2FsdHNhbHRzYWx0c2FsdA", ("A"):rep(43)
  local function hash(m_kib) return ("$argon2id$v=19$m=%d,t=1,p=1$%s$%s"):format(m_kib, SALT, TAG) end

  -- The peak-RSS rise, in KiB, of one failed login in a new process.
  local function rise(email, pwhash)
    local p = S.spawn_lua(([[
      local tododb = require "tododb"
      local db = assert(tododb.connect(%q, { pwhash = %s }))
      assert(db:find_user "warm-up@example.com" == nil)       -- connected, statements ready
      local function hwm()
        local f = assert(io.open "/proc/self/status")
        local kb = f:read("*a"):match "VmHWM:%%s*(%%d+)"
        f:close()
        return tonumber(kb)
      end
      local before = hwm()
      local u, err = db:authenticate(%q, "a wrong password")
      assert(u == nil and err.code == "unauthorized")
      print("RISE " .. (hwm() - before))
    ]]):format(S.url, pwhash, email))
    local out = p:read "*a"
    p:close()
    return assert(tonumber(out:match "RISE (%-?%d+)"), out)
  end

  before_each(function() db = S.fresh() end)
  after_each(function() db:close() end)

  local function store(email, h)
    assert(db:query("INSERT INTO users (email, hashed_password) VALUES ($1, $2)", email, h))
  end

  it("an unknown email costs the stored 32 MiB, not the connection's minimum", function()
    store("stored@example.com", hash(32768))
    assert.is_true(rise("stored@example.com", '"min"') > 24 * 1024)       -- the account itself
    assert.is_true(rise("nobody@example.com", '"min"') > 24 * 1024)
  end)

  it("an unknown email costs the stored minimum, not the connection's 32 MiB", function()
    store("stored@example.com", hash(8))
    assert.is_true(rise("stored@example.com", "{ ops = 1, mem = 33554432 }") < 8 * 1024)
    assert.is_true(rise("nobody@example.com", "{ ops = 1, mem = 33554432 }") < 8 * 1024)
  end)

  it("an unknown email falls back to the connection's cost when no stored hash is argon2id", function()
    store("other@example.com", "$2b$10$notargon2notargon2notargon2notargon2notargon2notarg")
    assert.is_true(rise("nobody@example.com", "{ ops = 1, mem = 33554432 }") > 24 * 1024)
    local empty = S.fresh()
    empty:close()
    assert.is_true(rise("nobody@example.com", "{ ops = 1, mem = 33554432 }") > 24 * 1024)
  end)
end)
