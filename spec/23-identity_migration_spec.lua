-- Migration 0002 on a database that has data from before it: emails become
-- their normalised form (or the migration stops with a report, changing
-- nothing), and existing todos keep their ids while new ones count on per user.
local S = require "support"
local migrate = require "tododb.migrate"

-- The owner connection on a schema migrated up to 0001 only.
local function at_0001()
  local owner = S.owner()
  assert(owner:exec "DROP OWNED BY current_user")
  local list = migrate.list
  migrate.list = { "0001_init" }
  local ok, err = owner:migrate()
  migrate.list = list
  assert(ok, err)
  return owner
end

local function add_user(db, email)
  return assert(db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x') RETURNING id",
                         email))[1].id
end

local function emails(db)
  local out = {}
  for _, r in ipairs(assert(db:query "SELECT email FROM users ORDER BY id")) do out[#out + 1] = r.email end
  return out
end

local function applied(db)
  return S.count(db, "SELECT count(*) AS n FROM tododb_migrations")
end

describe("migration 0002", function()
  local owner
  after_each(function() owner:close() end)

  it("stores every email trimmed and lower-cased, and finds them by plain equality", function()
    owner = at_0001()
    add_user(owner, "  Alice@Example.COM ")
    add_user(owner, "bob@example.com\t")
    add_user(owner, "carol@example.com")
    assert(owner:migrate())
    assert.same({ "alice@example.com", "bob@example.com", "carol@example.com" }, emails(owner))
    local db = S.connect()
    local alice = assert(db:find_user "ALICE@example.com")
    assert.equal("alice@example.com", alice.email)
    assert.equal(alice, assert(db:find_user " alice@example.com"))
    db:close()
  end)

  it("stops, changing nothing, when two accounts share an email once normalised", function()
    owner = at_0001()
    -- 0001's index trimmed spaces only: a tab made a second account possible.
    local a = add_user(owner, "kate@example.com")
    local b = add_user(owner, "Kate@example.com\t")
    add_user(owner, "other@example.com")
    local ok, err = owner:migrate()
    assert.is_nil(ok)
    assert.matches("kate@example.com (ids " .. a .. ", " .. b .. ")", err.message, 1, true)
    assert.matches("keep one account per email", err.message, 1, true)
    assert.equal(1, applied(owner))
    assert.same({ "kate@example.com", "Kate@example.com\t", "other@example.com" }, emails(owner))
    -- once the operator has resolved it, the migration goes through
    assert(owner:query("DELETE FROM users WHERE id = $1", b))
    assert(owner:migrate())
    assert.equal(#migrate.list, applied(owner))
  end)

  it("stops, changing nothing, when a stored email is not ASCII", function()
    owner = at_0001()
    add_user(owner, "Alice@Example.com")
    local k = add_user(owner, "\u{212A}ate@example.com")
    local ok, err = owner:migrate()
    assert.is_nil(ok)
    assert.matches("ASCII", err.message, 1, true)
    assert.matches("ids " .. k .. " ", err.message, 1, true)
    assert.equal(1, applied(owner))
    assert.same({ "Alice@Example.com", "\u{212A}ate@example.com" }, emails(owner))
  end)

  it("keeps existing todo ids and starts each user's counter above them", function()
    owner = at_0001()
    local a = add_user(owner, "alice@example.com")
    local b = add_user(owner, "bob@example.com")
    assert(owner:exec "BEGIN")
    -- 0001 took ids from one sequence shared by all users
    for i, uid in ipairs { a, b, a, b, b } do
      assert(owner:query("SELECT set_config('tododb.user_id', $1, true)", tostring(uid)))
      assert(owner:query("INSERT INTO todos (user_id, title) VALUES ($1, $2)", uid, "old " .. i))
    end
    assert(owner:exec "COMMIT")
    assert(owner:migrate())
    local db = S.connect()
    local sa, sb = db:session(a), db:session(b)
    local old = {}
    for _, t in ipairs(assert(sa:list_todos { order = "oldest" }).items) do old[#old + 1] = t.id end
    assert.same({ 1, 3 }, old)
    assert.equal(4, assert(sa:create_todo { title = "new" }).id)
    assert.equal(6, assert(sb:create_todo { title = "new" }).id)
    assert.equal(4, assert(sa:create_todos { { title = "b1" }, { title = "b2" }, { title = "b3" },
                                             { title = "b4" } }))
    local ids = {}
    for _, t in ipairs(assert(sa:list_todos { order = "oldest" }).items) do ids[#ids + 1] = t.id end
    assert.same({ 1, 3, 4, 5, 6, 7, 8 }, ids)
    db:close()
  end)
end)
