-- Schema: the database itself rejects bad rows and hides other users' todos,
-- whatever the C layer does. Raw SQL as the runtime role (tododb).
local S = require "support"
local tododb = require "tododb"

local db

local function add_user(email)
  local rows = assert(db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x') RETURNING id", email))
  return rows[1].id
end

local unpack = table.unpack or unpack

-- Runs fn inside a transaction whose tododb.user_id setting is uid, then
-- commits (keep = true) or rolls back. Returns what fn returned.
local function as_user(uid, fn, keep)
  assert(db:exec "BEGIN")
  S.set_user(db, uid)
  local res = { n = 0 }
  local function collect(...) res = { n = select("#", ...), ... } end
  collect(pcall(fn))
  assert(db:exec(keep and res[1] and "COMMIT" or "ROLLBACK"))
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

-- Raw inserts name the id (tododb takes it from the user's counter).
local last_id = 0
local function insert_todo(uid, title, description)
  last_id = last_id + 1
  return db:query("INSERT INTO todos (user_id, id, title, description) VALUES ($1, $2, $3, $4) RETURNING id",
                  uid, last_id, title, description)
end

-- Asserts that the insert fails with that SQLSTATE (not an RLS refusal).
local function rejects(state, uid, title, description)
  as_user(uid, function()
    local rows, err = insert_todo(uid, title, description)
    assert.is_nil(rows, "the database accepted the row")
    assert.equal(state, err.sqlstate, err.message)
  end)
end

local function accepts(uid, title, description)
  return as_user(uid, function()
    local rows, err = insert_todo(uid, title, description)
    assert.is_nil(not rows and err.message or nil)
    return rows[1].id
  end, true)
end

describe("schema constraints", function()
  local alice
  before_each(function()
    db = S.fresh()
    alice = add_user "alice@example.com"
  end)
  after_each(function() db:close() end)

  it("rejects an empty title", function()
    rejects("23514", alice, "")
  end)

  it("rejects a title of only white space", function()
    rejects("23514", alice, "   ")
    rejects("23514", alice, " \t\n\r\f ")
  end)

  -- BUG in lua/tododb/migrations/0001_init.sql: E'\v' is not an escape in
  -- PostgreSQL (it is the letter v), so btrim(title, E' \t\n\r\f\v') strips
  -- the letter v and keeps vertical tabs: "vvv" is refused, "\v" is stored.
  -- Fix: E' \t\n\r\f\x0B'. Turn `pending` into `it` once fixed.
  it("trims vertical tab, not the letter v, in the title CHECK", function()
    rejects("23514", alice, "\v")
    rejects("23514", alice, " \v\t ")
    assert.is_not_nil(accepts(alice, "v"))
    assert.is_not_nil(accepts(alice, "vvv"))
    assert.is_not_nil(accepts(alice, "v" .. ("x"):rep(199)))
  end)

  it("rejects a title of 201 characters and accepts 200", function()
    rejects("23514", alice, ("x"):rep(201))
    assert.is_not_nil(accepts(alice, ("x"):rep(200)))
    assert.is_not_nil(accepts(alice, "  " .. ("x"):rep(200) .. "  "))   -- counted after trimming
  end)

  it("counts characters, not bytes: 200 multi-byte characters are accepted, 201 are not", function()
    local title = ("é"):rep(100) .. ("漢"):rep(99) .. "😀"              -- 200 characters, 501 bytes
    assert.equal(501, #title)
    local id = accepts(alice, title)
    local got = as_user(alice, function()
      return assert(db:query("SELECT title, char_length(title) AS n FROM todos WHERE id = $1", id))[1]
    end)
    assert.equal(title, got.title)
    assert.equal(200, got.n)
    rejects("23514", alice, title .. "é")
  end)

  it("rejects a description of 1001 characters and accepts 1000", function()
    rejects("23514", alice, "t", ("d"):rep(1001))
    rejects("23514", alice, "t", ("é"):rep(1001))
    assert.is_not_nil(accepts(alice, "t", ("é"):rep(1000)))
  end)

  it("rejects a todo for a missing user", function()
    local missing = assert(db:query "SELECT coalesce(max(id), 0) + 1000 AS id FROM users")[1].id
    rejects("23503", missing, "orphan")
  end)

  it("rejects a duplicate email, and an email that is not stored normalised", function()
    local rows, err = db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x')",
                               "alice@example.com")
    assert.is_nil(rows)
    assert.equal("23505", err.sqlstate)
    assert.equal("conflict", err.code)
    -- Only the normalised (ASCII, trimmed, lower-case) form may be stored.
    for _, bad in ipairs { "ALICE@example.com", "Alice@Example.COM", " alice@example.com ",
                           "bob@example.com\t", "\u{212A}ate@example.com", "ali\u{0307}ce@example.com" } do
      rows, err = db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x')", bad)
      assert.is_nil(rows, bad)
      assert.equal("23514", err.sqlstate, bad)
    end
    assert.equal(1, S.count(db, "SELECT count(*) AS n FROM users"))
  end)

  it("rejects an email over 255 characters and an empty password hash", function()
    local rows, err = db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x')",
                               ("a"):rep(250) .. "@x.org")
    assert.is_nil(rows)
    assert.equal("23514", err.sqlstate)
    rows, err = db:query("INSERT INTO users (email, hashed_password) VALUES ($1, '')", "b@example.com")
    assert.is_nil(rows)
    assert.equal("23514", err.sqlstate)
  end)

  it("deletes a user's todos with the user", function()
    local bob = add_user "bob@example.com"
    accepts(alice, "a1"); accepts(alice, "a2"); accepts(bob, "b1")
    local rows, n = db:query("DELETE FROM users WHERE id = $1", alice)
    assert.is_not_nil(rows)
    assert.equal(1, n)
    local left = as_user(alice, function()
      return S.count(db, "SELECT count(*) AS n FROM todos WHERE user_id = $1", alice)
    end)
    assert.equal(0, left)
    assert.equal(1, as_user(bob, function() return S.count(db, "SELECT count(*) AS n FROM todos") end))
    if S.admin_url then
      local admin = assert(tododb.connect(S.admin_url))
      assert.equal(0, S.count(admin, "SELECT count(*) AS n FROM todos WHERE user_id = $1", alice))
      assert.equal(1, S.count(admin, "SELECT count(*) AS n FROM todos WHERE user_id = $1", bob))
      admin:close()
    end
  end)
end)

describe("row-level security", function()
  local alice, bob
  before_each(function()
    db = S.fresh()
    alice = add_user "alice@example.com"
    bob = add_user "bob@example.com"
    accepts(alice, "alice 1"); accepts(alice, "alice 2"); accepts(bob, "bob 1")
  end)
  after_each(function() db:close() end)

  it("shows no rows without the setting", function()
    local rows = assert(db:query "SELECT * FROM todos")
    assert.same({}, rows)
    assert.equal(0, S.count(db, "SELECT count(*) AS n FROM todos"))
  end)

  it("shows only the owner's rows with the transaction-local setting", function()
    local titles = as_user(alice, function()
      local out = {}
      for _, r in ipairs(assert(db:query "SELECT title, user_id FROM todos ORDER BY id")) do
        assert.equal(alice, r.user_id)
        out[#out + 1] = r.title
      end
      return out
    end)
    assert.same({ "alice 1", "alice 2" }, titles)
    assert.equal(1, as_user(bob, function() return S.count(db, "SELECT count(*) AS n FROM todos") end))
    -- Transaction-local: gone after the transaction.
    assert.equal(0, S.count(db, "SELECT count(*) AS n FROM todos"))
  end)

  it("refuses to write a row for another user", function()
    as_user(alice, function()
      local rows, err = insert_todo(bob, "sneaky")
      assert.is_nil(rows)
      assert.equal("42501", err.sqlstate)
    end)
    as_user(alice, function()
      local _, n = assert(db:query("UPDATE todos SET title = 'x' WHERE user_id = $1", bob))
      assert.equal(0, n)
      _, n = assert(db:query("DELETE FROM todos WHERE user_id = $1", bob))
      assert.equal(0, n)
    end, true)
    assert.equal(1, as_user(bob, function()
      return S.count(db, "SELECT count(*) AS n FROM todos WHERE title = 'bob 1'")
    end))
  end)

  it("is in force for the application role", function()
    assert.is_false(db:info().rls_bypassed)
  end)
end)
