-- spec/61-json_spec.lua: the *_json methods write JSON straight from the
-- result. Each answer must equal to_table() of the object the plain method
-- returns, encoded with lua-cjson, field by field: names, nulls, unicode and
-- escapes, pages and their cursors, and the same errors. int8 values are
-- compared as exact decimal text (cjson 2.1.0 itself rounds them to 14 digits).
local S = require "support"
local cjson = require "cjson"

local null = cjson.null

-- An int8 value of to_table() as exact decimal text (LuaJIT holds values
-- beyond 2^53 as strings).
local function exact(v)
  if type(v) == "string" then return v end
  if math.type and math.type(v) == "integer" then return ("%d"):format(v) end
  return ("%.0f"):format(v)
end

-- The JSON text decoded, int8 members (id, user_id) kept as their digits.
local function decode(json)
  assert.equal("string", type(json))
  return cjson.decode((json:gsub('([{,]"[%w_]*id":)(%-?%d+)', '%1"%2"')))
end

local INT8 = { id = true, user_id = true }

-- Asserts that a decoded object (decode) equals obj:to_table() + cjson.
local function same_fields(got, obj)
  local t = obj:to_table()
  local want = cjson.decode(cjson.encode(t))
  for k, v in pairs(want) do
    if INT8[k] then assert.equal(exact(t[k]), got[k], k)
    else assert.equal(v, got[k], k) end
  end
  for k in pairs(got) do assert.is_not_nil(want[k], "extra member " .. k) end
end

local function same_object(json, obj) same_fields(decode(json), obj) end

-- Asserts that a JSON page equals a page of list_todos: the same items in
-- order and the same cursor (null on the last page, where next is nil).
local function same_page(json, page)
  local got = decode(json)
  assert.equal(#page.items, #got.items)
  assert.truthy(json:find('"items":[', 1, true))      -- an array, also when empty
  for i, t in ipairs(page.items) do same_fields(got.items[i], t) end
  assert.equal(page.next or null, got.next)
end

-- obj:method_json(...) and obj:method(...) answer nil and the same error.
local function same_error(obj, method, ...)
  local a1, e1 = obj[method .. "_json"](obj, ...)
  local a2, e2 = obj[method](obj, ...)
  assert.is_nil(a1)
  assert.is_nil(a2)
  for _, k in ipairs { "code", "message", "field", "sqlstate" } do assert.equal(e2[k], e1[k], k) end
  return e1
end

-- Both raise the same message (but for the method's name).
local function same_raise(obj, method, ...)
  local ok1, m1 = pcall(obj[method .. "_json"], obj, ...)
  local ok2, m2 = pcall(obj[method], obj, ...)
  assert.is_false(ok1)
  assert.is_false(ok2)
  assert.equal(tostring(m2), (tostring(m1):gsub(method .. "_json", method)))
end

describe("JSON from the result", function()
  local db, alice, bob, sa, sb
  before_each(function()
    db = S.fresh()
    alice, bob, sa, sb = S.alice_and_bob(db)
  end)
  after_each(function() db:close() end)

  describe("of a todo", function()
    it("equals to_table() with a null and with a set description, open and done", function()
      local t1 = assert(sa:create_todo { title = "no description" })
      local t2 = assert(sa:create_todo { title = "done", description = "2 litres", completed = true })
      local j1, j2 = assert(sa:get_todo_json(t1.id)), assert(sa:get_todo_json(t2.id))
      same_object(j1, assert(sa:get_todo(t1.id)))
      same_object(j2, assert(sa:get_todo(t2.id)))
      assert.equal(null, decode(j1).description)
      assert.truthy(j1:find('"description":null', 1, true))
      assert.is_true(decode(j2).completed)
      assert.is_false(decode(j1).completed)
    end)

    it("keeps unicode titles and escapes quotes, backslashes and control characters", function()
      local titles = {
        "日本語のタイトル ✓ 🎉 é", 'say "hi" \\ back/slash', "tab\there\r\nnew line",
        "bell \7 and \1 and \31 and \127", "\u{2028}\u{2029} separators",
      }
      for _, title in ipairs(titles) do
        local json = assert(sa:create_todo_json { title = title, description = title })
        local t = assert(sa:get_todo(decode(json).id))
        same_object(json, t)
        assert.equal(title, decode(json).title)
        assert.equal(title, decode(json).description)
        assert.is_nil(json:find("[%z\1-\31]"), "raw control byte in " .. json)
      end
    end)

    it("answers create, update and toggle with the row they wrote", function()
      local json = assert(sa:create_todo_json { title = "  trimmed  ", completed = true })
      local id = decode(json).id
      same_object(json, assert(sa:get_todo(id)))
      assert.equal("trimmed", decode(json).title)
      assert.equal(1, sa:count_todos())
      json = assert(sa:update_todo_json(id, { title = "changed", description = "more" }))
      same_object(json, assert(sa:get_todo(id)))
      assert.equal("more", decode(json).description)
      json = assert(sa:update_todo_json(id, { description = null }))
      same_object(json, assert(sa:get_todo(id)))
      assert.equal(null, decode(json).description)
      json = assert(sa:toggle_todo_json(id))
      same_object(json, assert(sa:get_todo(id)))
      assert.is_false(decode(json).completed)
    end)

    it("writes todo ids and user ids beyond 2^53 exactly", function()
      local owner = S.owner()
      assert(owner:exec "BEGIN")
      S.set_user(owner, alice.id)
      assert(owner:query("INSERT INTO todo_counters (user_id, last_id) VALUES ($1, 9007199254740993)",
                         alice.id))
      assert(owner:exec "COMMIT")
      owner:close()
      local json = assert(sa:create_todo_json { title = "big" })
      assert.truthy(json:find('"id":9007199254740994,', 1, true))
      same_object(json, assert(sa:get_todo("9007199254740994")))
      same_object(assert(sa:get_todo_json("9007199254740994")), assert(sa:get_todo("9007199254740994")))
      json = assert(sa:list_todos_json())
      same_page(json, assert(sa:list_todos()))
      assert.truthy(json:find('"id":9007199254740994,', 1, true))
    end)

    it("works inside a transaction like the plain methods", function()
      local json = assert(sa:transaction(function(tx)
        local t = assert(tx:create_todo { title = "in tx" })
        return tx:get_todo_json(t.id)
      end))
      same_object(json, assert(sa:get_todo(decode(json).id)))
    end)
  end)

  describe("of a page", function()
    it("is an empty array with next null for no todos, also under a filter", function()
      assert.equal('{"items":[],"next":null}', assert(sa:list_todos_json()))
      assert(sa:create_todo { title = "open" })
      assert.equal('{"items":[],"next":null}', assert(sa:list_todos_json { completed = true }))
      assert.equal('{"items":[],"next":null}', assert(sa:list_todos_json { search = "nothing" }))
      same_page(assert(sa:list_todos_json { completed = false }), assert(sa:list_todos { completed = false }))
    end)

    it("pages with the same items and cursors as list_todos, across every page", function()
      for i = 1, 8 do assert(sa:create_todo { title = "t" .. i, completed = i % 3 == 0 }) end
      for _, opts in ipairs { { limit = 3 }, { limit = 3, order = "oldest" },
                              { limit = 2, completed = false }, { limit = 1, search = "t" } } do
        local after, pages = nil, 0
        repeat
          local o = { after = after }
          for k, v in pairs(opts) do o[k] = v end
          local json, page = assert(sa:list_todos_json(o)), assert(sa:list_todos(o))
          same_page(json, page)
          after = page.next
          pages = pages + 1
        until not after
        assert.truthy(pages > 1)
      end
    end)

    it("takes the cursors of list_todos and gives ones list_todos takes", function()
      for i = 1, 5 do assert(sa:create_todo { title = "t" .. i }) end
      local first = decode(assert(sa:list_todos_json { limit = 2 }))
      local page = assert(sa:list_todos { limit = 2, after = first.next })
      same_page(assert(sa:list_todos_json { limit = 2, after = first.next }), page)
      same_page(assert(sa:list_todos_json { limit = 2, after = page.next }),
                assert(sa:list_todos { limit = 2, after = page.next }))
    end)

    it("holds only the session's own todos", function()
      assert(sb:create_todo { title = "bob's" })
      assert(sa:create_todo { title = "alice's" })
      local got = decode(assert(sa:list_todos_json()))
      assert.equal(1, #got.items)
      assert.equal("alice's", got.items[1].title)
      assert.equal(exact(alice.id), got.items[1].user_id)
    end)
  end)

  describe("errors", function()
    it("are the plain methods' errors: missing, foreign and malformed ids", function()
      local t = assert(sa:create_todo { title = "alice's" })
      same_error(sa, "get_todo", 99)
      assert.equal("not_found", same_error(sb, "get_todo", t.id).code)
      same_error(sb, "toggle_todo", t.id)
      same_error(sb, "update_todo", t.id, { title = "mine" })
      same_error(sa, "get_todo", "abc")
      same_error(sa, "get_todo", "99999999999999999999")
      local now = assert(sa:get_todo(t.id))
      assert.equal("alice's", now.title)
      assert.is_false(now.completed)
    end)

    it("are the plain methods' errors: bad input, bad cursors, nothing to update", function()
      local t = assert(sa:create_todo { title = "x" })
      assert(sa:create_todo { title = "y" })
      assert.equal("title", same_error(sa, "create_todo", { title = "   " }).field)
      same_error(sa, "create_todo", { title = ("x"):rep(201) })
      same_error(sa, "update_todo", t.id, {})
      same_error(sa, "list_todos", { after = "garbage" })
      same_error(sa, "list_todos", { limit = 0 })
      local cursor = assert(assert(sa:list_todos { limit = 1 }).next)
      assert.equal("after", same_error(sa, "list_todos", { after = cursor, completed = true }).field)
      same_error(sb, "list_todos", { after = cursor })
      assert.equal(2, sa:count_todos())
    end)

    it("raise for wrong argument types as the plain methods do", function()
      same_raise(sa, "create_todo", { title = 5 })
      same_raise(sa, "get_todo", {})
      same_raise(sa, "list_todos", { limit = "x" })
      same_raise(sa, "update_todo", 1, { colour = "red" })
      same_raise(db, "get_user", true)
    end)
  end)

  describe("of a user", function()
    it("equals to_table() for get, find, create and change_email", function()
      same_object(assert(db:get_user_json(alice.id)), assert(db:get_user(alice.id)))
      same_object(assert(db:get_user_json(alice)), alice)
      same_object(assert(db:find_user_json("  Bob@Example.com ")), bob)
      local json = assert(db:create_user_json { email = "Carol@Example.com", password = "carol password" })
      same_object(json, assert(db:find_user("carol@example.com")))
      assert.equal("carol@example.com", decode(json).email)
      assert.is_nil(json:find("password", 1, true))
      assert.is_nil(json:find("argon2", 1, true))
      json = assert(db:change_email_json(bob, "robert@example.com"))
      same_object(json, assert(db:get_user(bob.id)))
      assert.equal("robert@example.com", decode(json).email)
    end)

    it("leaves out the email of a user without one, like to_table()", function()
      local u = assert(db:provision_user { issuer = "https://auth.example.com", subject = "s-1" })
      local json = assert(db:get_user_json(u.id))
      same_object(json, u)
      assert.is_nil(json:find('"email"', 1, true))
    end)

    it("writes user ids beyond 2^53 exactly", function()
      if not S.admin_url then return pending "needs TODODB_ADMIN_URL" end
      local admin = assert(require("tododb").connect(S.admin_url))
      assert(admin:query "SELECT setval(pg_get_serial_sequence('users', 'id'), 9007199254740993)")
      admin:close()
      local json = assert(db:create_user_json { email = "big@example.com", password = "big password" })
      assert.truthy(json:find('"id":9007199254740994,', 1, true))
      same_object(json, assert(db:get_user("9007199254740994")))
      local s = db:session("9007199254740994")
      json = assert(s:create_todo_json { title = "t" })
      assert.truthy(json:find('"user_id":9007199254740994,', 1, true))
      same_object(json, assert(s:get_todo(1)))
    end)

    it("answers the plain methods' errors", function()
      same_error(db, "get_user", 12345)
      same_error(db, "find_user", "nobody@example.com")
      same_error(db, "find_user", "not an email")
      assert.equal("conflict", same_error(db, "create_user",
                                          { email = "alice@example.com", password = "another one" }).code)
      same_error(db, "create_user", { email = "x@example.com", password = "short" })
      same_error(db, "change_email", alice, "bob@example.com")
      assert.equal(2, #assert(db:list_users()))
    end)
  end)
end)
