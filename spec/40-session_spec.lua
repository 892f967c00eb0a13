-- Sessions: every todo operation, scoped to its owner; listing with keyset
-- cursors; ids that are not ours; Todo objects. Run over prepared and
-- unprepared statements alike, and both must tell the same story.
local S = require "support"
local tododb = require "tododb"
local system = require "system"

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$"
local SEED = tonumber(os.getenv "TDB_SEED") or os.time()
local WHY = " (TDB_SEED=" .. SEED .. ")"

local function fails(code, field, got, err)
  assert.is_nil(got, "expected a failure, got " .. tostring(got))
  assert.is_table(err)
  assert.equal(code, err.code, tostring(err and err.message))
  if field then assert.equal(field, err.field, err.message) end
  assert.is_string(err.message)
  return err
end

-- Rows of todos as the user sees them in raw SQL (row-level security on).
local function raw_todos(db, uid, where)
  assert(db:exec "BEGIN")
  S.set_user(db, uid)
  local rows = assert(db:query("SELECT id, title, description, completed, updated_at FROM todos"
                               .. " WHERE user_id = $1 " .. (where or "") .. " ORDER BY id", uid))
  assert(db:exec "COMMIT")
  return rows
end

local function ids_of(list)
  local out = {}
  for i, t in ipairs(list) do out[i] = t.id end
  return out
end

local function reversed(t)
  local out = {}
  for i = #t, 1, -1 do out[#out + 1] = t[i] end
  return out
end

-- Walks every page of a listing with random page sizes; returns the ids.
local function walk(s, opts)
  local seen, after, pages = {}, nil, 0
  repeat
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.limit, o.after = math.random(1, 200), after
    local page, err = s:list_todos(o)
    assert.is_nil(err and err.message, WHY)
    assert.is_true(#page.items <= o.limit, WHY)
    if page.next then assert.equal(o.limit, #page.items, "a short page with a cursor" .. WHY) end
    for _, t in ipairs(page.items) do
      assert.equal(s.user_id, t.user_id, WHY)
      seen[#seen + 1] = t.id
    end
    after = page.next
    pages = pages + 1
    assert.is_true(pages <= 1100, "the walk does not end" .. WHY)
  until not after
  return seen
end

local MODES = {
  { name = "prepared statements", opts = {} },
  { name = "unprepared statements", opts = { prepare = false } },
}

for _, mode in ipairs(MODES) do
describe("sessions over " .. mode.name, function()
  local db, alice, bob, sa, sb

  before_each(function()
    math.randomseed(SEED)
    db = S.fresh(mode.opts)
    alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
    bob = assert(db:create_user { email = "bob@example.com", password = "bob password" })
    sa, sb = db:session(alice), db:session(bob.id)
  end)
  after_each(function() db:close() end)

  describe("db:session", function()
    it("binds a User or an id without a query", function()
      assert.equal(alice.id, sa.user_id)
      assert.equal(bob.id, sb.user_id)
      assert.equal(alice.id, db:session(tostring(alice.id)).user_id)
      assert.truthy(tostring(sa):find(tostring(alice.id), 1, true))
      local ghost = db:session(alice.id + bob.id + 1000)   -- nobody: still no error
      assert.equal(0, ghost:count_todos())
    end)

    it("answers a bad id like db:get_user: wrong types raise, bad values are nil, err", function()
      assert.has_error(function() db:session() end)
      assert.has_error(function() db:session {} end)
      assert.has_error(function() db:session(true) end)
      fails("invalid", "id", db:session "abc")
      fails("invalid", "id", db:session(1.5))
      fails("not_found", nil, db:session "99999999999999999999")
      fails("not_found", nil, db:session(2 ^ 63))
      fails("invalid", "id", db:get_user "abc")
      fails("invalid", "id", db:get_user(1.5))
      fails("not_found", nil, db:get_user "99999999999999999999")
      fails("not_found", nil, db:get_user(2 ^ 63))
    end)

    it("keeps its connection alive when nothing else refers to it", function()
      local s = S.connect(mode.opts):session(alice)
      collectgarbage "collect"
      collectgarbage "collect"
      assert(s:create_todo { title = "still here" })
      assert.equal(1, s:count_todos())
    end)

    it("raises once its connection is closed", function()
      local other = S.connect(mode.opts)
      local s = other:session(alice)
      assert(s:create_todo { title = "x" })
      other:close()
      assert.has_error(function() s:get_todo(1) end)
      assert.has_error(function() s:list_todos() end)
    end)
  end)

  describe("create_todo", function()
    it("returns a Todo with trimmed title and defaults", function()
      local t, err = sa:create_todo { title = "  Buy milk \t\n" }
      assert.is_nil(err)
      assert.equal("Buy milk", t.title)
      assert.is_nil(t.description)
      assert.is_false(t.completed)
      assert.equal(alice.id, t.user_id)
      assert.is_number(t.id)
      assert.truthy(t.created_at:match(ISO), t.created_at)
      assert.truthy(t.updated_at:match(ISO), t.updated_at)
      local rows = raw_todos(db, alice.id)
      assert.equal(1, #rows)
      assert.equal("Buy milk", rows[1].title)
      assert.equal(t.id, rows[1].id)
      local d = assert(sa:create_todo { title = "b", description = "2 litres", completed = true })
      assert.equal("2 litres", d.description)
      assert.is_true(d.completed)
      local f = assert(sa:create_todo { title = "c", completed = false, description = "" })
      assert.is_false(f.completed)
      assert.is_nil(f.description)
      local n = assert(sa:create_todo { title = "d", description = tododb.null })
      assert.is_nil(n.description)
      assert.equal(4, sa:count_todos())
      assert.equal(0, sb:count_todos())
    end)

    it("counts title and description in characters", function()
      local t200 = ("é"):rep(100) .. ("漢"):rep(99) .. "😀"
      local t = assert(sa:create_todo { title = t200 })
      assert.equal(t200, t.title)
      fails("invalid", "title", sa:create_todo { title = t200 .. "x" })
      fails("invalid", "title", sa:create_todo { title = ("x"):rep(201) })
      assert(sa:create_todo { title = "  " .. ("x"):rep(200) .. "  " })
      local d1000 = ("ü"):rep(1000)
      assert.equal(d1000, assert(sa:create_todo { title = "d", description = d1000 }).description)
      fails("invalid", "description", sa:create_todo { title = "d", description = d1000 .. "a" })
      assert.equal(3, sa:count_todos())
    end)

    -- Regression: the title CHECK once trimmed the letter v (E'\v' is not an
    -- escape in PostgreSQL), refusing valid titles made only of v's.
    it("accepts titles made of the letter v", function()
      for _, title in ipairs { "v", "vvv", " vv " } do
        local t, err = sa:create_todo { title = title }
        assert.is_nil(err and err.message, title)
        assert.equal((title:gsub("^ +", ""):gsub(" +$", "")), t.title)
      end
    end)

    it("refuses bad text with the field named, writing nothing", function()
      local bad = {
        { { title = "" }, "title" },
        { { title = " \t\r\n " }, "title" },
        { { title = "a\0b" }, "title" },
        { { title = "\xff" }, "title" },
        { { title = "ok \xc3" }, "title" },
        { { title = "\xed\xa0\x80" }, "title" },               -- a UTF-16 surrogate
        { { title = "\xc0\xaf" }, "title" },                   -- overlong
        { { title = "ok", description = "a\0b" }, "description" },
        { { title = "ok", description = "\xfe" }, "description" },
      }
      for _, c in ipairs(bad) do
        local err = fails("invalid", c[2], sa:create_todo(c[1]))
        assert.truthy(err.message:find(c[2], 1, true), err.message)
      end
      assert.equal(0, #raw_todos(db, alice.id))
    end)

    it("treats SQL and odd characters as data", function()
      local titles = { "' OR 1=1 --", "'); DROP TABLE todos; --", "\\N", "NULL", "{a,b}", "\"q\"", "%_\\" }
      for _, title in ipairs(titles) do
        assert.equal(title, assert(sa:create_todo { title = title, description = title }).title)
      end
      local rows = raw_todos(db, alice.id)
      assert.equal(#titles, #rows)
      for i, r in ipairs(rows) do
        assert.equal(titles[i], r.title)
        assert.equal(titles[i], r.description)
      end
    end)

    it("raises for values of the wrong type", function()
      assert.has_error(function() sa:create_todo() end)
      assert.has_error(function() sa:create_todo "title" end)
      assert.has_error(function() sa:create_todo {} end)
      assert.has_error(function() sa:create_todo { title = 42 } end)
      assert.has_error(function() sa:create_todo { title = {} } end)
      assert.has_error(function() sa:create_todo { title = "x", description = 42 } end)
      assert.has_error(function() sa:create_todo { title = "x", completed = "yes" } end)
      assert.has_error(function() sa:create_todo { title = "x", completed = 1 } end)
      assert.equal(0, sa:count_todos())
    end)

    it("reports not_found for a user that no longer exists", function()
      assert(db:delete_user(bob.id))
      fails("not_found", nil, sb:create_todo { title = "orphan" })
      fails("not_found", nil, db:session(alice.id + bob.id + 1000):create_todo { title = "ghost" })
      assert.equal(0, sb:count_todos())
    end)
  end)

  describe("get, update, toggle, delete", function()
    local t
    before_each(function()
      t = assert(sa:create_todo { title = "first", description = "desc" })
    end)

    it("get_todo returns the same snapshot, also by decimal string", function()
      local g = assert(sa:get_todo(t.id))
      assert.equal(t, g)
      assert.same(t:to_table(), g:to_table())
      assert.same(t:to_table(), assert(sa:get_todo(tostring(t.id))):to_table())
    end)

    it("update_todo changes any of title, description, completed and moves updated_at", function()
      system.sleep(0.002)
      local u = assert(sa:update_todo(t.id, { title = "  renamed  " }))
      assert.equal("renamed", u.title)
      assert.equal("desc", u.description)
      assert.is_false(u.completed)
      assert.equal(t.created_at, u.created_at)
      assert.is_true(u.updated_at > t.updated_at, u.updated_at .. " > " .. t.updated_at)
      u = assert(sa:update_todo(t.id, { completed = true }))
      assert.same({ "renamed", "desc", true }, { u.title, u.description, u.completed })
      u = assert(sa:update_todo(t.id, { description = "new desc" }))
      assert.same({ "renamed", "new desc", true }, { u.title, u.description, u.completed })
      u = assert(sa:update_todo(t.id, { description = "" }))
      assert.is_nil(u.description)
      u = assert(sa:update_todo(t.id, { description = "back" }))
      assert.equal("back", u.description)
      u = assert(sa:update_todo(t.id, { description = tododb.null, completed = false }))
      assert.is_nil(u.description)
      assert.is_false(u.completed)
      u = assert(sa:update_todo(t.id, { title = "all", description = "three", completed = true }))
      assert.same({ "all", "three", true }, { u.title, u.description, u.completed })
      local row = raw_todos(db, alice.id)[1]
      assert.same({ "all", "three", true }, { row.title, row.description, row.completed })
      assert.same(u:to_table(), assert(sa:get_todo(t.id)):to_table())
    end)

    it("update_todo refuses an empty change set and bad values, changing nothing", function()
      fails("invalid", nil, sa:update_todo(t.id, {}))
      fails("invalid", "title", sa:update_todo(t.id, { title = "   " }))
      fails("invalid", "title", sa:update_todo(t.id, { title = ("x"):rep(201) }))
      fails("invalid", "title", sa:update_todo(t.id, { title = "\xff", completed = true }))
      fails("invalid", "description", sa:update_todo(t.id, { description = ("x"):rep(1001) }))
      fails("invalid", "description", sa:update_todo(t.id, { description = "a\0", completed = true }))
      assert.has_error(function() sa:update_todo(t.id, { titel = "typo" }) end)
      assert.has_error(function() sa:update_todo(t.id, { "positional" }) end)
      assert.has_error(function() sa:update_todo(t.id, { title = 5 }) end)
      assert.has_error(function() sa:update_todo(t.id, { completed = "yes" }) end)
      assert.has_error(function() sa:update_todo(t.id, { description = true }) end)
      assert.has_error(function() sa:update_todo(t.id) end)
      assert.same(t:to_table(), assert(sa:get_todo(t.id)):to_table())
    end)

    it("toggle_todo flips completed", function()
      local a = assert(sa:toggle_todo(t.id))
      assert.is_true(a.completed)
      local b = assert(sa:toggle_todo(t.id))
      assert.is_false(b.completed)
      assert.equal("first", b.title)
      assert.is_false(raw_todos(db, alice.id)[1].completed)
    end)

    it("delete_todo deletes once", function()
      assert.is_true(sa:delete_todo(t.id))
      fails("not_found", nil, sa:delete_todo(t.id))
      fails("not_found", nil, sa:get_todo(t.id))
      fails("not_found", nil, sa:update_todo(t.id, { title = "x" }))
      fails("not_found", nil, sa:toggle_todo(t.id))
      assert.equal(0, #raw_todos(db, alice.id))
    end)

    it("treat other users' ids and junk ids as missing, touching nothing", function()
      -- Ids count per user: bob's todo gets a number alice has not reached.
      local theirs
      repeat theirs = assert(sb:create_todo { title = "bob's", description = "private" })
      until S.int64 and theirs.id > t.id or tonumber(theirs.id) > tonumber(t.id)
      local snapshot = { raw_todos(db, alice.id), raw_todos(db, bob.id) }
      local cases = {
        { theirs.id, "not_found" }, { tostring(theirs.id), "not_found" },
        { 0, "not_found" }, { -1, "not_found" }, { -t.id, "not_found" },
        { theirs.id + 1000, "not_found" }, { "99999999999999999999", "not_found" },
        { "-99999999999999999999", "not_found" }, { 2 ^ 63, "not_found" },
        { "9223372036854775807", "not_found" },
        { 1.5, "invalid" }, { "abc", "invalid" }, { "", "invalid" }, { "1.0e1", "invalid" },
        { " 1", "invalid" }, { "1 OR 1=1", "invalid" }, { 0 / 0, "invalid" }, { math.huge, "invalid" },
      }
      for _, c in ipairs(cases) do
        local id, code = c[1], c[2]
        local field = code == "invalid" and "id" or nil
        fails(code, field, sa:get_todo(id))
        fails(code, field, sa:update_todo(id, { title = "hijacked", completed = true }))
        fails(code, field, sa:toggle_todo(id))
        fails(code, field, sa:delete_todo(id))
      end
      assert.same(snapshot, { raw_todos(db, alice.id), raw_todos(db, bob.id) })
      assert.has_error(function() sa:get_todo() end)
      assert.has_error(function() sa:get_todo {} end)
      assert.has_error(function() sa:delete_todo(true) end)
      assert.equal(theirs, assert(sb:get_todo(theirs.id)))
    end)
  end)

  describe("Todo objects", function()
    it("have fields, to_table, tostring, == and are read-only", function()
      local t = assert(sa:create_todo { title = "Buy 100% milk", description = "2 litres" })
      local n = assert(sa:create_todo { title = "no desc", completed = true })
      local tab = t:to_table()
      assert.same({ id = t.id, user_id = alice.id, title = "Buy 100% milk", description = "2 litres",
                    completed = false, created_at = t.created_at, updated_at = t.updated_at }, tab)
      local nt = n:to_table()
      assert.equal(tododb.null, nt.description)
      assert.is_true(nt.completed)
      local str = tostring(t)
      assert.truthy(str:find("Buy 100% milk", 1, true), str)
      assert.truthy(str:find(tostring(t.id), 1, true), str)
      assert.is_true(t == assert(sa:get_todo(t.id)))
      assert.is_true(t == assert(sa:toggle_todo(t.id)))     -- same todo, newer snapshot
      assert.is_false(t == n)
      local ok, res = pcall(function() return t == alice end)     -- never raises (5.4)
      assert.is_true(ok, tostring(res))
      assert.is_false(res)
      ok, res = pcall(function() return t == sa end)
      assert.is_true(ok, tostring(res))
      assert.is_false(res)
      assert.is_false(t == t.id)
      assert.is_nil(t.nonexistent)
      assert.has_error(function() t.title = "changed" end)
      assert.has_error(function() t.completed = true end)
      assert.has_error(function() t.anything = 1 end)
      assert.equal("Buy 100% milk", t.title)
      assert.is_false(t.completed)
    end)
  end)

  describe("list_todos", function()
    it("lists newest first by default, 50 a page", function()
      local made = {}
      for i = 1, 60 do made[i] = assert(sa:create_todo { title = "t" .. i }).id end
      assert(sb:create_todo { title = "bob's" })
      local page = assert(sa:list_todos())
      assert.equal(50, #page.items)
      assert.is_string(page.next)
      assert.equal(made[60], page.items[1].id)
      assert.equal(made[11], page.items[50].id)
      local rest = assert(sa:list_todos { after = page.next })
      assert.same({ made[10], made[9], made[8], made[7], made[6], made[5], made[4], made[3],
                    made[2], made[1] }, ids_of(rest.items))
      assert.is_nil(rest.next)
      local old = assert(sa:list_todos { order = "oldest", limit = 3 })
      assert.same({ made[1], made[2], made[3] }, ids_of(old.items))
      assert.same({ made[60] }, ids_of(assert(sa:list_todos { order = "newest", limit = 1 }).items))
    end)

    it("gives no cursor when the last page is exactly full", function()
      for i = 1, 10 do assert(sa:create_todo { title = "t" .. i }) end
      local p = assert(sa:list_todos { limit = 10 })
      assert.equal(10, #p.items)
      assert.is_nil(p.next)
      p = assert(sa:list_todos { limit = 5 })
      assert.is_string(p.next)
      p = assert(sa:list_todos { limit = 5, after = p.next })
      assert.equal(5, #p.items)
      assert.is_nil(p.next)
      local empty = assert(sb:list_todos())
      assert.same({}, empty.items)
      assert.is_nil(empty.next)
    end)

    it("filters by completed and searches substrings case-insensitively, % and _ literal", function()
      local titles = { "100% done", "a_b", "aXb", "Back\\slash", "DONE deal", "plain" }
      for i, title in ipairs(titles) do
        assert(sa:create_todo { title = title, completed = i % 2 == 0 })
      end
      assert(sb:create_todo { title = "bob 100% done a_b" })
      local function search(q, extra)
        local o = { search = q, order = "oldest" }
        for k, v in pairs(extra or {}) do o[k] = v end
        local out = {}
        for _, t in ipairs(assert(sa:list_todos(o)).items) do out[#out + 1] = t.title end
        return out
      end
      assert.same({ "100% done" }, search "%")
      assert.same({ "a_b" }, search "_")
      assert.same({ "Back\\slash" }, search "\\")
      assert.same({ "100% done", "DONE deal" }, search "done")
      assert.same({ "100% done", "DONE deal" }, search "DoNe")
      assert.same({ "aXb" }, search "x")
      assert.same({ "a_b", "aXb", "Back\\slash", "DONE deal", "plain" }, search "A")
      assert.same({}, search "a%b")
      assert.same({ "a_b" }, search "a_b")
      assert.same({ "Back\\slash" }, search "k\\s")
      assert.same(titles, search "")
      assert.same({ "a_b", "Back\\slash", "plain" }, search(nil, { completed = true }))
      assert.same({ "100% done", "aXb", "DONE deal" }, search(nil, { completed = false }))
      assert.same({ "DONE deal", "100% done" }, search("done", { completed = false, order = "newest" }))
      assert.same({}, search("done", { completed = true }))
      fails("invalid", "search", sa:list_todos { search = "\xff" })
      fails("invalid", "search", sa:list_todos { search = "a\0" })
      fails("invalid", "search", sa:list_todos { search = ("x"):rep(201) })
      assert(sa:list_todos { search = ("é"):rep(200) })
    end)

    it("refuses bad limits and orders, and raises for wrong types", function()
      for _, l in ipairs { 0, 201, 1.5, -1, 0 / 0, math.huge } do
        fails("invalid", "limit", sa:list_todos { limit = l })
      end
      assert(sa:list_todos { limit = 1 })
      assert(sa:list_todos { limit = 200 })
      fails("invalid", "order", sa:list_todos { order = "sideways" })
      fails("invalid", "order", sa:list_todos { order = "" })
      assert.has_error(function() sa:list_todos { limit = "10" } end)
      assert.has_error(function() sa:list_todos { completed = "yes" } end)
      assert.has_error(function() sa:list_todos { after = 5 } end)
      assert.has_error(function() sa:list_todos { order = 1 } end)
      assert.has_error(function() sa:list_todos { search = {} } end)
      assert.has_error(function() sa:list_todos "x" end)
    end)

    it("refuses malformed, tampered, foreign and mismatched cursors", function()
      for i = 1, 30 do
        assert(sa:create_todo { title = "a" .. i, completed = i % 3 == 0 })
        assert(sb:create_todo { title = "b" .. i })
      end
      local good = assert(sa:list_todos { limit = 5 }).next
      assert.is_string(good)
      assert.equal(5, #assert(sa:list_todos { limit = 5, after = good }).items)
      local bad = { "", "x", "junk!!", ("A"):rep(24), ("A"):rep(200), good .. "A", good:sub(2),
                    good:sub(1, -2), good .. "=", "\0" .. good, good:upper(), good:lower() }
      for i = 1, #good do                                  -- every single-character flip
        local c = good:sub(i, i)
        bad[#bad + 1] = good:sub(1, i - 1) .. (c == "A" and "B" or "A") .. good:sub(i + 1)
      end
      for _ = 1, 50 do                                     -- random junk
        local b = {}
        for j = 1, math.random(0, 40) do b[j] = string.char(math.random(0, 255)) end
        bad[#bad + 1] = table.concat(b)
      end
      for _, cur in ipairs(bad) do
        if cur ~= good then
          local err = fails("invalid", "after", sa:list_todos { limit = 5, after = cur })
          assert.truthy(err.message:find("cursor", 1, true))
        end
      end
      local foreign = assert(sb:list_todos { limit = 5 }).next
      fails("invalid", "after", sa:list_todos { limit = 5, after = foreign })
      assert.is_not_nil(sb:list_todos { limit = 5, after = foreign })
      -- made with other filters
      fails("invalid", "after", sa:list_todos { after = good, order = "oldest" })
      fails("invalid", "after", sa:list_todos { after = good, completed = false })
      fails("invalid", "after", sa:list_todos { after = good, completed = true })
      fails("invalid", "after", sa:list_todos { after = good, search = "a" })
      local searched = assert(sa:list_todos { search = "a", limit = 2 }).next
      fails("invalid", "after", sa:list_todos { after = searched, search = "a1" })
      fails("invalid", "after", sa:list_todos { after = searched })
      fails("invalid", "after", sa:list_todos { after = searched, search = "A" })
      assert.equal(2, #assert(sa:list_todos { after = searched, search = "a", limit = 2 }).items)
      local open = assert(sa:list_todos { completed = false, limit = 2 }).next
      fails("invalid", "after", sa:list_todos { after = open, completed = true })
      fails("invalid", "after", sa:list_todos { after = open })
      assert.equal(2, #assert(sa:list_todos { after = open, completed = false, limit = 2 }).items)
      local old = assert(sa:list_todos { order = "oldest", limit = 2 }).next
      fails("invalid", "after", sa:list_todos { after = old })
      fails("invalid", "after", sa:list_todos { after = old, order = "newest" })
      -- the same cursor works on another connection (stateless)
      local other = S.connect(mode.opts)
      assert.equal(5, #assert(other:session(alice.id):list_todos { limit = 5, after = good }).items)
      fails("invalid", "after", other:session(bob.id):list_todos { limit = 5, after = good })
      other:close()
    end)

    describe("over 1 000 todos", function()
      local expect
      before_each(function()
        -- interleave alice's and bob's ids
        local n = 0
        for batch = 1, 4 do
          local items = {}
          for i = 1, 250 do
            n = n + 1
            items[i] = { title = ("Todo %04d %s"):format(n, n % 7 == 0 and "SEVEN" or "x"),
                         completed = math.random() < 0.4 }
          end
          assert.equal(250, assert(sa:create_todos(items)))
          local theirs = {}
          for i = 1, 30 do theirs[i] = { title = "bob " .. batch .. " seven " .. i, completed = i % 2 == 0 } end
          assert(sb:create_todos(theirs))
        end
        local rows = raw_todos(db, alice.id)
        expect = { all = {}, done = {}, open = {}, seven = {}, seven_open = {} }
        for _, r in ipairs(rows) do
          expect.all[#expect.all + 1] = r.id
          local list = r.completed and expect.done or expect.open
          list[#list + 1] = r.id
          if r.title:find("SEVEN", 1, true) then
            expect.seven[#expect.seven + 1] = r.id
            if not r.completed then expect.seven_open[#expect.seven_open + 1] = r.id end
          end
        end
        assert.equal(1000, #expect.all)
      end)

      it("walks every page once, in order, both orders, with filters", function()
        assert.same(expect.all, walk(sa, { order = "oldest" }), WHY)
        assert.same(reversed(expect.all), walk(sa, {}), WHY)
        assert.same(reversed(expect.all), walk(sa, { order = "newest" }), WHY)
        assert.same(expect.done, walk(sa, { order = "oldest", completed = true }), WHY)
        assert.same(reversed(expect.done), walk(sa, { completed = true }), WHY)
        assert.same(expect.open, walk(sa, { order = "oldest", completed = false }), WHY)
        assert.same(reversed(expect.open), walk(sa, { completed = false }), WHY)
        assert.same(expect.seven, walk(sa, { order = "oldest", search = "seven" }), WHY)
        assert.same(reversed(expect.seven_open), walk(sa, { completed = false, search = "Seven" }), WHY)
      end)

      it("counts, completes all and deletes the completed, reporting how many", function()
        assert.equal(1000, sa:count_todos())
        assert.equal(1000, sa:count_todos {})
        assert.equal(#expect.done, sa:count_todos { completed = true })
        assert.equal(#expect.open, sa:count_todos { completed = false })
        assert.equal(120, sb:count_todos())
        assert.equal(#expect.open, sa:complete_all())
        assert.equal(0, sa:complete_all())
        assert.equal(1000, sa:count_todos { completed = true })
        assert.equal(60, sb:count_todos { completed = true })
        assert.equal(1000, sa:delete_completed())
        assert.equal(0, sa:delete_completed())
        assert.equal(0, sa:count_todos())
        assert.equal(120, sb:count_todos())
        assert.equal(60, sb:delete_completed())
        assert.equal(60, sb:count_todos { completed = false })
        assert.has_error(function() sa:count_todos { completed = 1 } end)
        assert.has_error(function() sa:count_todos "x" end)
      end)
    end)
  end)

  describe("timestamps", function()
    -- Formatted in C from binary results, never by the server: the same
    -- bytes as to_char(... AT TIME ZONE 'UTC') whatever the session's
    -- DateStyle and TimeZone are.
    local TO_CHAR = "to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    for _, setting in ipairs {
      { "ISO, MDY", "UTC" }, { "SQL, DMY", "Pacific/Chatham" },
      { "German", "America/St_Johns" }, { "Postgres, YMD", "Asia/Kathmandu" },
    } do
      it(("are ISO-8601 UTC under DateStyle %s, TimeZone %s"):format(setting[1], setting[2]), function()
        assert(db:exec(("SET DateStyle = '%s'; SET TimeZone = '%s'"):format(setting[1], setting[2])))
        local t = assert(sa:create_todo { title = "when" })
        local u = assert(db:get_user(alice.id))
        assert(db:exec "BEGIN")                -- as alice: row-level security
        S.set_user(db, alice.id)
        local want = assert(db:query(("SELECT %s AS c, %s AS u FROM todos WHERE user_id = $1 AND id = $2")
          :format(TO_CHAR:format "created_at", TO_CHAR:format "updated_at"), alice.id, t.id))
        assert(db:exec "COMMIT")
        local wantu = assert(db:query(("SELECT %s AS c, %s AS u FROM users WHERE id = $1")
          :format(TO_CHAR:format "created_at", TO_CHAR:format "updated_at"), alice.id))
        assert.equal(1, #want)
        assert.equal(1, #wantu)
        assert.equal(want[1].c, t.created_at)
        assert.equal(want[1].u, t.updated_at)
        assert.equal(wantu[1].c, u.created_at)
        assert.equal(wantu[1].u, u.updated_at)
        assert.matches(ISO, t.created_at)
        assert.equal(t.created_at, assert(sa:get_todo(t.id)).created_at)
        assert.equal(t.updated_at, assert(sa:list_todos().items[1]).updated_at)
      end)
    end

    -- The edges of decode.c's formatter, on binary results (Todo, its JSON)
    -- and on db:query's text (a zone with offsets in seconds before 1940).
    it("are ISO-8601 UTC at the edges: microseconds, years before 1000, 1970 and 2000, leap days, infinity",
       function()
      local t = assert(sa:create_todo { title = "edges" })
      assert(db:exec "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'Europe/Amsterdam'")
      for _, c in ipairs {
        { "2026-01-13 09:30:00+00", "2026-01-13T09:30:00.000000Z" },
        { "2026-01-13 09:30:00.999999+00", "2026-01-13T09:30:00.999999Z" },
        { "2026-01-13 09:30:00.000001+00", "2026-01-13T09:30:00.000001Z" },
        { "2026-07-01 01:30:00.5+05:30", "2026-06-30T20:00:00.500000Z" },
        { "0001-01-01 00:00:00+00", "0001-01-01T00:00:00.000000Z" },
        { "0099-03-01 12:00:00.000100+00", "0099-03-01T12:00:00.000100Z" },
        { "0999-12-31 23:59:59.999999+00", "0999-12-31T23:59:59.999999Z" },
        { "1900-02-28 23:59:59+00", "1900-02-28T23:59:59.000000Z" },
        { "1900-03-01 00:00:00+00", "1900-03-01T00:00:00.000000Z" },
        { "1969-12-31 23:59:59.999999+00", "1969-12-31T23:59:59.999999Z" },
        { "1970-01-01 00:00:00+00", "1970-01-01T00:00:00.000000Z" },
        { "1999-12-31 23:59:59.999999+00", "1999-12-31T23:59:59.999999Z" },
        { "2000-01-01 00:00:00+00", "2000-01-01T00:00:00.000000Z" },
        { "2000-02-29 23:59:59.999999+00", "2000-02-29T23:59:59.999999Z" },
        { "2100-03-01 00:00:00+00", "2100-03-01T00:00:00.000000Z" },
        { "9999-12-31 22:59:59.999999+00", "9999-12-31T22:59:59.999999Z" },
        { "infinity", "infinity" },
        { "-infinity", "-infinity" },
      } do
        assert(db:exec "BEGIN")                -- as alice: row-level security
        S.set_user(db, alice.id)
        assert(db:query("UPDATE todos SET created_at = $3::timestamptz, updated_at = $3::timestamptz"
                        .. " WHERE user_id = $1 AND id = $2", alice.id, t.id, c[1]))
        local rows = assert(db:query("SELECT created_at FROM todos WHERE user_id = $1 AND id = $2",
                                     alice.id, t.id))
        assert(db:exec "COMMIT")
        local got = assert(sa:get_todo(t.id))
        assert.equal(c[2], got.created_at, c[1])
        assert.equal(c[2], got.updated_at, c[1])
        assert.equal(c[2], rows[1].created_at, c[1])
        assert.equal(c[2], assert(sa:get_todo_json(t.id)):match '"created_at":"([^"]*)"', c[1])
      end
    end)
  end)
end)
end

-- One scripted story; ids and timestamps replaced by their order of
-- appearance, so two runs on fresh schemas can be compared line by line.
local function story(opts)
  local db = S.fresh(opts)
  local out, idmap, nid = {}, {}, 0
  local function norm(v)
    if v == tododb.null then return "null" end
    return tostring(v)
  end
  local function id(v)
    if v == nil then return "nil" end
    local k = tostring(v)
    if not idmap[k] then nid = nid + 1; idmap[k] = "#" .. nid end
    return idmap[k]
  end
  local function todo(t)
    local tab = t:to_table()
    return ("%s/%s %q %q %s %s"):format(id(tab.id), id(tab.user_id), tab.title, norm(tab.description),
      norm(tab.completed), tab.created_at:match(ISO) and tab.updated_at:match(ISO) and "ts" or "bad-ts")
  end
  local function log(label, got, err)
    local s
    if got == nil then
      -- Citus names shards <table>_<shard id>: ids differ between schemas.
      local msg = S.citus and err.message:gsub('_%d+"', '"') or err.message
      s = ("ERR %s %s %s"):format(err.code, tostring(err.field), msg)
    elseif type(got) == "userdata" and getmetatable(got) and got.title then s = todo(got)
    elseif type(got) == "table" and got.items then
      local parts = {}
      for _, t in ipairs(got.items) do parts[#parts + 1] = todo(t) end
      s = "page[" .. table.concat(parts, "; ") .. "] next=" .. tostring(got.next ~= nil)
    else s = tostring(got) end
    out[#out + 1] = label .. ": " .. s
  end
  local a = assert(db:create_user { email = "a@example.com", password = "password a" })
  local b = assert(db:create_user { email = "b@example.com", password = "password b" })
  local sa, sb = db:session(a), db:session(b)
  id(a.id); id(b.id)
  local t1 = assert(sa:create_todo { title = " one ", description = "d1" })
  local t2 = assert(sa:create_todo { title = "two", completed = true })
  local t3 = assert(sb:create_todo { title = "three" })
  log("get", sa:get_todo(t1.id))
  log("get other", sa:get_todo(t3.id))
  log("update", sa:update_todo(t1.id, { title = "uno", description = tododb.null }))
  log("update bad", sa:update_todo(t1.id, { title = "" }))
  log("update empty", sa:update_todo(t1.id, {}))
  log("toggle", sa:toggle_todo(t2.id))
  log("toggle other", sb:toggle_todo(t2.id))
  log("list", sa:list_todos { limit = 1 })
  local p = assert(sa:list_todos { limit = 1 })
  log("list next", sa:list_todos { limit = 1, after = p.next })
  log("list bad cursor", sa:list_todos { limit = 1, after = p.next .. "x" })
  log("list search", sa:list_todos { search = "UN" })
  log("count", sa:count_todos())
  log("count done", sa:count_todos { completed = true })
  log("bulk", sa:create_todos { { title = "x" }, { title = "y", completed = true } })
  log("bulk bad", sa:create_todos { { title = "x" }, { title = "" } })
  log("complete all", sa:complete_all())
  log("delete completed", sa:delete_completed())
  log("delete again", sa:delete_todo(t1.id))
  log("bad id", sa:get_todo "abc")
  log("b list", sb:list_todos())
  log("user delete", db:delete_user(b.id))
  log("ghost create", sb:create_todo { title = "ghost" })
  db:close()
  return out
end

describe("prepared and unprepared statements", function()
  it("tell the same story", function()
    local prepared = story {}
    local unprepared = story { prepare = false }
    assert.is_true(#prepared > 20)
    assert.same(prepared, unprepared)
  end)
end)

-- The server's (or role's) DateStyle and TimeZone are not ours to rely on;
-- here they come in the startup packet, as ALTER ROLE … SET would set them.
describe("timestamps", function()
  local function with_options(url, options)
    if url:match "^postgres[a-z]*://" then
      local enc = options:gsub("[^%w%-_.~]", function(c) return ("%%%02X"):format(c:byte()) end)
      return url .. (url:find("?", 1, true) and "&" or "?") .. "options=" .. enc
    end
    return url .. " options='" .. options .. "'"
  end

  for _, style in ipairs { "ISO, MDY", "SQL, DMY", "German, DMY", "Postgres, MDY" } do
    it("are ISO-8601 UTC with microseconds under DateStyle " .. style .. " and a +05:30 zone", function()
      if S.pooler then return pending "PgBouncer drops the startup parameter options (-c ...)" end
      local db = S.fresh()
      local u = assert(db:create_user { email = "tz@example.com", password = "tz password" })
      local t = assert(db:session(u):create_todo { title = "when" })
      db:close()
      local url = with_options(S.url, "-c DateStyle=" .. style:gsub(" ", "") .. " -c TimeZone=Asia/Kolkata")
      local odd = assert(tododb.connect(url, S.opts()))
      local shown = assert(odd:query "SHOW DateStyle")[1].DateStyle
      assert.equal(style, shown)
      local got_u = assert(odd:get_user(u.id))
      local got_t = assert(odd:session(u):get_todo(t.id))
      local fresh_t = assert(odd:session(u):create_todo { title = "later" })
      odd:close()
      for _, v in ipairs { got_u.created_at, got_u.updated_at, got_t.created_at, got_t.updated_at,
                           fresh_t.created_at } do
        assert.truthy(v:match(ISO), v)
      end
      assert.equal(u.created_at, got_u.created_at)
      assert.equal(t.created_at, got_t.created_at)
      assert.equal(t.updated_at, got_t.updated_at)
    end)
  end
end)
