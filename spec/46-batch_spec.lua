-- s:batch{ … }: create/update/toggle/delete/get in one round trip, applied
-- atomically, one result per operation, err.index naming the failing one.
local tododb = require "tododb"
local testing = require "tododb.testing"

local db, alice, bob, sa, sb

local function titles(s)
  local out = {}
  for i, t in ipairs(assert(s:list_todos { order = "oldest" }).items) do out[i] = t.title end
  return out
end

describe("session:batch", function()
  local kit = testing.use { reset = "each" }   -- this file's own database
  before_each(function()
    db = kit.db
    alice, bob = kit:user(), kit:user()
    sa, sb = db:session(alice), db:session(bob)
  end)

  it("runs every kind of operation and answers one result per operation, in order", function()
    local a = assert(sa:create_todo { title = "a", description = "old" })
    local b = assert(sa:create_todo { title = "b" })
    local c = assert(sa:create_todo { title = "c" })
    local r = assert(sa:batch {
      { op = "create", title = "  new  ", description = "d", completed = true },
      { op = "update", id = a.id, title = "a2", description = tododb.null },
      { op = "toggle", id = b.id },
      { op = "delete", id = c.id },
      { op = "get", id = a.id },
      { op = "update", id = tostring(b.id), completed = false },
    })
    assert.equal(6, #r)
    assert.equal("new", r[1].title)
    assert.equal("d", r[1].description)
    assert.is_true(r[1].completed)
    assert.equal(alice.id, r[1].user_id)
    assert.equal("a2", r[2].title)
    assert.is_nil(r[2].description)
    assert.is_true(r[3].completed)
    assert.is_true(r[4])
    assert.equal(r[2], r[5])
    assert.equal("a2", r[5].title)
    assert.is_false(r[6].completed)
    assert.same({ "a2", "b", "new" }, titles(sa))
  end)

  it("sees its own earlier operations", function()
    local r = assert(sa:batch {
      { op = "create", title = "x" },
      { op = "toggle", id = 1 },
      { op = "update", id = 1, title = "y" },
      { op = "get", id = 1 },
      { op = "delete", id = 1 },
    })
    assert.is_true(r[4].completed)
    assert.equal("y", r[4].title)
    assert.equal(0, sa:count_todos())
  end)

  it("answers an empty list for an empty batch", function()
    assert.same({}, sa:batch {})
  end)

  it("rolls back everything when an operation fails and names it", function()
    local a = assert(sa:create_todo { title = "a" })
    local tb = assert(sb:create_todo { title = "bob's" })
    for _, case in ipairs {
      { { op = "get", id = 999 }, "not_found" },
      { { op = "toggle", id = 999 }, "not_found" },
      { { op = "delete", id = 999 }, "not_found" },
      { { op = "update", id = 999, title = "z" }, "not_found" },
      { { op = "update", id = -1, title = "z" }, "not_found" },
      { { op = "update", id = 1.5, title = "z" }, "invalid", "id" },
      { { op = "update", id = a.id }, "invalid" },
      { { op = "update", id = a.id, title = "   " }, "invalid", "title" },
      { { op = "create", title = ("x"):rep(201) }, "invalid", "title" },
      { { op = "create", title = "ok", description = ("x"):rep(1001) }, "invalid", "description" },
      { { op = "toggle" }, "invalid", "id" },
      { { op = "archive", id = a.id }, "invalid", "op" },
    } do
      local r, err = sa:batch {
        { op = "create", title = "made first" },
        { op = "update", id = a.id, title = "changed first" },
        { op = "delete", id = a.id },
        case[1],
        { op = "create", title = "made after" },
      }
      assert.is_nil(r)
      assert.equal(case[2], err.code, case[1].op)
      assert.equal(case[3], err.field)
      assert.equal(4, err.index)
      assert.matches("^item 4: ", err.message)
      assert.same({ "a" }, titles(sa))
    end
    -- another user's todo is missing, and stays untouched
    local r, err = sa:batch { { op = "create", title = "mine" }, { op = "delete", id = tb.id } }
    if tb.id ~= a.id then
      assert.is_nil(r)
      assert.equal("not_found", err.code)
      assert.equal(2, err.index)
    end
    assert.same({ "bob's" }, titles(sb))
  end)

  it("fails as a whole when the user is gone", function()
    local ghost = db:session(987654)
    local r, err = ghost:batch { { op = "create", title = "x" } }
    assert.is_nil(r)
    assert.equal("not_found", err.code)
    assert.equal(1, err.index)
    assert(sa:create_todo { title = "still works" })
  end)

  it("refuses a batch larger than 1000 operations", function()
    local ops = {}
    for i = 1, 1001 do ops[i] = { op = "create", title = "t" .. i } end
    local r, err = sa:batch(ops)
    assert.is_nil(r)
    assert.equal("invalid", err.code)
    ops[1001] = nil
    assert.equal(1000, #assert(sa:batch(ops)))
    assert.equal(1000, sa:count_todos())
  end)

  it("inside a transaction, rolls back only itself", function()
    assert(sa:transaction(function(tx)
      assert(tx:create_todo { title = "before" })
      local r, err = tx:batch { { op = "create", title = "undone" }, { op = "get", id = 999 } }
      assert.is_nil(r)
      assert.equal(2, err.index)
      r = assert(tx:batch { { op = "create", title = "kept" }, { op = "toggle", id = 1 } })
      assert.is_true(r[2].completed)
      return true
    end))
    assert.same({ "before", "kept" }, titles(sa))
  end)

  it("is refused on a connection inside another transaction", function()
    assert(sa:transaction(function()
      assert.error_matches(function() sb:batch { { op = "create", title = "x" } } end,
        "inside a transaction", 1, true)
    end))
    assert.equal(0, sb:count_todos())
  end)

  it("raises on misuse", function()
    assert.has_error(function() sa:batch() end)
    assert.has_error(function() sa:batch { "create" } end)
    assert.has_error(function() sa:batch { { title = "no op" } } end)
    assert.has_error(function() sa:batch { { op = "get", id = 1, title = "x" } } end)
    assert.has_error(function() sa:batch { { op = "create", title = 5 } } end)
    assert.has_error(function() sa:batch { { op = "create", title = "x", completed = "yes" } } end)
    assert.has_error(function() sa:batch { setmetatable({ op = "create", title = "x" }, {}) } end)
    assert.equal(0, sa:count_todos())
  end)

  it("works with unnamed statements too (prepare = false)", function()
    local plain = kit:connect { prepare = false }
    local s = plain:session(alice)
    local r = assert(s:batch { { op = "create", title = "p" }, { op = "toggle", id = 1 } })
    assert.is_true(r[2].completed)
    plain:close()
  end)
end)
