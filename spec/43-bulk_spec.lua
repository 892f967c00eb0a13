-- Bulk insert: s:create_todos{ {title=, description=, completed=}, … } —
-- one statement, all rows or none, the same rules per item, exact text.
local S = require "support"
local tododb = require "tododb"

local db, alice, bob, sa, sb

-- All of a session's todos, oldest first (through list_todos).
local function all_todos(s)
  local out, after = {}, nil
  repeat
    local page = assert(s:list_todos { order = "oldest", limit = 200, after = after })
    for _, t in ipairs(page.items) do out[#out + 1] = t end
    after = page.next
  until not after
  return out
end

-- Rows as the database holds them (as the user: row-level security).
local function raw_count(uid)
  assert(db:exec "BEGIN")
  S.set_user(db, uid)
  local n = S.count(db, "SELECT count(*) AS n FROM todos")
  assert(db:exec "ROLLBACK")
  return n
end

local function items(n, fn)
  local list = {}
  for i = 1, n do list[i] = fn and fn(i) or { title = "item " .. i } end
  return list
end

describe("create_todos", function()
  before_each(function()
    db = S.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
    bob = assert(db:create_user { email = "bob@example.com", password = "bob password" })
    sa, sb = db:session(alice), db:session(bob)
    assert(sb:create_todo { title = "bob's own" })
  end)
  after_each(function() db:close() end)

  it("inserts every item for the session's user and returns the count", function()
    local n, err = sa:create_todos(items(100))
    assert.is_nil(err)
    assert.equal(100, n)
    assert.equal(100, sa:count_todos())
    assert.equal(100, raw_count(alice.id))
    assert.equal(1, sb:count_todos())
    local got = all_todos(sa)
    for i, t in ipairs(got) do
      assert.equal("item " .. i, t.title)
      assert.equal(alice.id, t.user_id)
    end
  end)

  it("returns 0 for an empty list and writes nothing", function()
    assert.equal(0, sa:create_todos {})
    assert.equal(0, raw_count(alice.id))
  end)

  it("round-trips awkward text exactly, trims titles, and maps empty descriptions to nil", function()
    local cases = {
      { title = 'say "hi"', description = '"quoted" \'single\'' },
      { title = "back\\slash \\\\ \\\"", description = "\\" },
      { title = "{braces}", description = "{a,b}" },
      { title = "a,b,c", description = "," },
      { title = "NULL", description = "NULL" },
      { title = "null", description = "\\N" },
      { title = "  padded\t ", description = "  kept  " },
      { title = "in\nner\tspace", description = "line1\nline2" },
      { title = "é漢😀", description = ("ü"):rep(1000) },
      { title = ("漢"):rep(200), description = nil },
      { title = "'); DROP TABLE todos; --", description = "" },
      { title = "\"", description = tododb.null },
      { title = "}", description = "{" },
      { title = "()[]$1::text", description = "%_" },
    }
    local want = {
      'say "hi"', "back\\slash \\\\ \\\"", "{braces}", "a,b,c", "NULL", "null", "padded",
      "in\nner\tspace", "é漢😀", ("漢"):rep(200), "'); DROP TABLE todos; --", "\"", "}", "()[]$1::text",
    }
    local want_desc = {
      '"quoted" \'single\'', "\\", "{a,b}", ",", "NULL", "\\N", "  kept  ", "line1\nline2",
      ("ü"):rep(1000), nil, nil, nil, "{", "%_",
    }
    for i, c in ipairs(cases) do c.completed = i % 2 == 0 end
    assert.equal(#cases, sa:create_todos(cases))
    local got = all_todos(sa)
    assert.equal(#cases, #got)
    for i, t in ipairs(got) do
      assert.equal(want[i], t.title, "title " .. i)
      assert.equal(want_desc[i], t.description, "description " .. i)
      assert.equal(i % 2 == 0, t.completed, "completed " .. i)
      -- and each comes back the same one by one
      local one = assert(sa:get_todo(t.id))
      assert.same(t:to_table(), one:to_table())
    end
    assert.equal(tododb.null, got[10]:to_table().description)
  end)

  it("defaults completed to false and honours true/false", function()
    assert.equal(3, sa:create_todos { { title = "a" }, { title = "b", completed = true },
                                      { title = "c", completed = false } })
    local got = all_todos(sa)
    assert.same({ false, true, false }, { got[1].completed, got[2].completed, got[3].completed })
    assert.equal(1, sa:count_todos { completed = true })
  end)

  it("is all or nothing: a bad item 57 of 100 names its index and field, and nothing is written", function()
    local bad = {
      { title = "", field = "title" },
      { title = "   ", field = "title" },
      { title = ("x"):rep(201), field = "title" },
      { title = "a\0b", field = "title" },
      { title = "\xff", field = "title" },
      { title = "ok", description = ("d"):rep(1001), field = "description" },
      { title = "ok", description = "bad \xc3", field = "description" },
      { title = "ok", description = "nul\0", field = "description" },
    }
    for _, b in ipairs(bad) do
      local list = items(100)
      list[57] = { title = b.title, description = b.description }
      list[80] = { title = "" }                            -- a second bad one: the first is named
      local n, err = sa:create_todos(list)
      assert.is_nil(n)
      assert.equal("invalid", err.code)
      assert.equal(57, err.index)
      assert.equal(b.field, err.field)
      assert.truthy(err.message:find("57", 1, true), err.message)
      assert.truthy(err.message:find(b.field, 1, true), err.message)
      assert.equal(0, raw_count(alice.id))
    end
    assert.equal(0, sa:count_todos())
    assert.equal(1, sb:count_todos())
  end)

  it("raises for items of the wrong type, writing nothing", function()
    local function with(i, item)
      local list = items(10)
      list[i] = item
      return list
    end
    assert.has_error(function() sa:create_todos() end)
    assert.has_error(function() sa:create_todos "x" end)
    assert.has_error(function() sa:create_todos(with(5, "title")) end)
    assert.has_error(function() sa:create_todos(with(5, { title = 5 })) end)
    assert.has_error(function() sa:create_todos(with(5, {})) end)
    assert.has_error(function() sa:create_todos(with(5, { title = "x", description = 1 })) end)
    assert.has_error(function() sa:create_todos(with(5, { title = "x", completed = "yes" })) end)
    assert.equal(0, raw_count(alice.id))
  end)

  it("reports not_found for a user that no longer exists", function()
    assert(db:delete_user(bob.id))
    local n, err = sb:create_todos(items(5))
    assert.is_nil(n)
    assert.equal("not_found", err.code)
    assert.equal(0, raw_count(bob.id))
  end)

  it("inserts 10 000 items, each one correct", function()
    local list = items(10000, function(i)
      return { title = ("bulk %05d \"%s\""):format(i, i % 3 == 0 and "{x}" or "y,z"),
               description = i % 4 == 0 and ("d" .. i) or nil,
               completed = i % 5 == 0 }
    end)
    assert.equal(10000, sa:create_todos(list))
    assert.equal(10000, sa:count_todos())
    assert.equal(2000, sa:count_todos { completed = true })
    local got = all_todos(sa)
    assert.equal(10000, #got)
    local prev = -1
    for i, t in ipairs(got) do
      assert.equal(list[i].title, t.title)
      assert.equal(list[i].description, t.description)
      assert.equal(list[i].completed, t.completed)
      assert.is_true(t.id > prev)
      prev = t.id
    end
    for _ = 1, 50 do                                       -- a sample, one by one
      local i = math.random(#got)
      assert.same(got[i]:to_table(), assert(sa:get_todo(got[i].id)):to_table())
    end
    assert.equal(1, sb:count_todos())
  end)
end)
