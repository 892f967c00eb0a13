-- Todo ids count per user (1, 2, 3 …): they reveal nothing about other users'
-- writes, are never reused, keep listing order = creation order, and stay
-- exact as int8.
local S = require "support"

local function ids(page)
  local out = {}
  for _, t in ipairs(page.items) do out[#out + 1] = t.id end
  return out
end

describe("todo ids", function()
  local db, sa, sb, alice, _
  before_each(function()
    db = S.fresh()
    alice, _, sa, sb = S.alice_and_bob(db)
  end)
  after_each(function() db:close() end)

  it("count 1, 2, 3 … per user, whatever other users write", function()
    assert.equal(1, assert(sa:create_todo { title = "a1" }).id)
    for i = 1, 5 do assert.equal(i, assert(sb:create_todo { title = "b" .. i }).id) end
    assert.equal(3, assert(sb:create_todos { { title = "x" }, { title = "y" }, { title = "z" } }))
    assert.equal(2, assert(sa:create_todo { title = "a2" }).id)
    assert.same({ 1, 2 }, ids(assert(sa:list_todos { order = "oldest" })))
    assert.same({ 8, 7, 6, 5, 4, 3, 2, 1 }, ids(assert(sb:list_todos())))
  end)

  it("are never reused after a delete", function()
    for i = 1, 3 do assert(sa:create_todo { title = "t" .. i }) end
    assert.is_true(sa:delete_todo(3))
    assert.equal(4, assert(sa:create_todo { title = "t4" }).id)
  end)

  it("bulk creates take a block of ids in the items' order", function()
    assert(sa:create_todo { title = "first" })
    assert.equal(3, assert(sa:create_todos { { title = "i1" }, { title = "i2" }, { title = "i3" } }))
    local page = assert(sa:list_todos { order = "oldest" })
    assert.same({ 1, 2, 3, 4 }, ids(page))
    assert.same({ "first", "i1", "i2", "i3" },
                { page.items[1].title, page.items[2].title, page.items[3].title, page.items[4].title })
    assert.equal(5, assert(sa:create_todo { title = "after" }).id)
  end)

  it("a failed bulk create takes no ids", function()
    assert(sa:create_todo { title = "first" })
    local n, err = sa:create_todos { { title = "ok" }, { title = "" } }
    assert.is_nil(n)
    assert.equal("invalid", err.code)
    assert.equal(2, assert(sa:create_todo { title = "second" }).id)
  end)

  it("are the same numbers for two users yet name different todos", function()
    local ta = assert(sa:create_todo { title = "alice's" })
    local tb = assert(sb:create_todo { title = "bob's" })
    assert.equal(ta.id, tb.id)
    assert.equal("alice's", assert(sa:get_todo(1)).title)
    assert.equal("bob's", assert(sb:get_todo(1)).title)
    assert.is_true(sb:delete_todo(1))
    assert.equal("alice's", assert(sa:get_todo(1)).title)
    assert.are_not.equal(ta, tb)
  end)

  it("stay exact beyond 2^53", function()
    local owner = S.owner()
    assert(owner:exec "BEGIN")
    S.set_user(owner, alice.id)
    assert(owner:query("INSERT INTO todo_counters (user_id, last_id) VALUES ($1, 9007199254740993)",
                       alice.id))
    assert(owner:exec "COMMIT")
    owner:close()
    local t = assert(sa:create_todo { title = "big" })
    if S.int64 then
      assert.equal(math.tointeger("9007199254740994"), t.id)
    else
      assert.equal("9007199254740994", t.id)
    end
    assert.equal("big", assert(sa:get_todo("9007199254740994")).title)
    assert.equal(1, #assert(sa:list_todos()).items)
  end)

  it("vanish with their user: a new account starts at 1 again", function()
    assert(sa:create_todo { title = "t" })
    assert(db:delete_user(alice))
    if S.admin_url then
      local admin = assert(require("tododb").connect(S.admin_url))
      assert.equal(0, S.count(admin, "SELECT count(*) AS n FROM todo_counters WHERE user_id = $1", alice.id))
      admin:close()
    end
    local carol = assert(db:create_user { email = "carol@example.com", password = "carol password" })
    assert.equal(1, assert(db:session(carol):create_todo { title = "c" }).id)
  end)

  it("for a missing user: not_found, and no counter is left behind", function()
    local s = db:session(alice.id + 1000)
    local t, err = s:create_todo { title = "orphan" }
    assert.is_nil(t)
    assert.equal("not_found", err.code)
    local n
    n, err = s:create_todos { { title = "orphan" } }
    assert.is_nil(n)
    assert.equal("not_found", err.code)
  end)
end)
