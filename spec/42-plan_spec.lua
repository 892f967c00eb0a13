-- Query plans and row-level security, on the statements the C core really
-- sends: their texts are read from csrc/sql.c (macros expanded here), so a
-- change there is what gets explained.
local S = require "support"
local tododb = require "tododb"

-- ---- csrc/sql.c, read as C ------------------------------------------------

local function source_dir()
  local src = debug.getinfo(1, "S").source:match "^@(.*)/spec/[^/]*$"
  return src or "."
end

-- Tokens of a C fragment: string literals (unescaped), identifiers, others.
local function tokens(text)
  local out, i = {}, 1
  while i <= #text do
    local c = text:sub(i, i)
    if c:match "%s" then
      i = i + 1
    elseif text:sub(i, i + 1) == "/*" then
      i = assert(text:find("*/", i + 2, true), "unterminated comment") + 2
    elseif c == '"' then
      local j, buf = i + 1, {}
      while text:sub(j, j) ~= '"' do
        local ch = text:sub(j, j)
        if ch == "\\" then
          local e = text:sub(j + 1, j + 1)
          buf[#buf + 1] = ({ n = "\n", t = "\t", ['"'] = '"', ["\\"] = "\\" })[e] or error("escape \\" .. e)
          j = j + 2
        else
          buf[#buf + 1] = ch
          j = j + 1
        end
      end
      out[#out + 1] = { str = table.concat(buf) }
      i = j + 1
    elseif c:match "[%a_]" then
      local id = text:match("^[%w_]+", i)
      out[#out + 1] = { id = id }
      i = i + #id
    else
      out[#out + 1] = { op = c }
      i = i + 1
    end
  end
  return out
end

-- The statements of tdb_sql[], by enum name (TDB_SQL_TODO_GET -> text).
local function read_sql()
  local f = assert(io.open(source_dir() .. "/csrc/sql.c", "r"))
  local src = f:read "*a"
  f:close()
  src = src:gsub("\\\n", " ")
  local macros = {}
  for name, params, body in src:gmatch "#define%s+([%w_]+)(%b())([^\n]*)" do
    local ps = {}
    for p in params:sub(2, -2):gmatch "[%w_]+" do ps[#ps + 1] = p end
    macros[name] = { params = ps, body = tokens(body) }
  end
  for name, body in src:gmatch "#define%s+([%w_]+)%s+(\"[^\n]*)" do
    macros[name] = { body = tokens(body) }
  end
  local expand
  -- Expands a token list into the concatenated string.
  function expand(toks, env)
    local out, i = {}, 1
    while i <= #toks do
      local t = toks[i]
      if t.str then
        out[#out + 1] = t.str
        i = i + 1
      elseif t.id and env and env[t.id] then
        out[#out + 1] = env[t.id]
        i = i + 1
      elseif t.id and macros[t.id] then
        local m = macros[t.id]
        if m.params then                        -- NAME(arg, arg, ...)
          assert(toks[i + 1] and toks[i + 1].op == "(", "macro call " .. t.id)
          local args, cur, depth, j = {}, {}, 0, i + 2
          while true do
            local a = toks[j]
            if a.op == "(" then depth = depth + 1 end
            if a.op == ")" and depth == 0 then break end
            if a.op == ")" then depth = depth - 1 end
            if a.op == "," and depth == 0 then
              args[#args + 1] = expand(cur, env); cur = {}
            else
              cur[#cur + 1] = a
            end
            j = j + 1
          end
          args[#args + 1] = expand(cur, env)
          local menv = {}
          for k, p in ipairs(m.params) do menv[p] = args[k] end
          out[#out + 1] = expand(m.body, menv)
          i = j + 1
        else
          out[#out + 1] = expand(m.body, env)
          i = i + 1
        end
      else
        error("cannot expand token " .. (t.id or t.op or "?") .. " in csrc/sql.c")
      end
    end
    return table.concat(out)
  end
  local body = assert(src:match "tdb_sql%[TDB_NSQL%]%s*=%s*(%b{})", "tdb_sql[] not found")
  local sql = {}
  for entry, inner in body:gmatch "%[(TDB_SQL_[%w_]+)%]%s*=%s*(%b{})" do
    local toks = tokens(inner:sub(2, -2))
    -- { "name", text..., nparams, readonly }
    assert(toks[1].str and toks[2].op == ",", "entry " .. entry)
    local last = #toks
    while toks[last].op ~= "," do last = last - 1 end  -- before readonly
    last = last - 1
    while toks[last].op ~= "," do last = last - 1 end  -- before nparams
    local text_toks = {}
    for k = 3, last - 1 do text_toks[#text_toks + 1] = toks[k] end
    sql[entry] = expand(text_toks)
  end
  return sql
end

local SQL = read_sql()

local function explain_text(rows)
  local lines = {}
  for _, r in ipairs(rows) do lines[#lines + 1] = r["QUERY PLAN"] end
  return table.concat(lines, "\n")
end

-- The parameters for each statement we explain, for user uid and todo id.
local function params_for(name, uid, id)
  local u = tostring(uid)
  return ({
    TDB_SQL_TODO_GET = { u, tostring(id) },
    TDB_SQL_TODO_TOGGLE = { u, tostring(id) },
    TDB_SQL_TODO_DELETE = { u, tostring(id) },
    TDB_SQL_TODO_UPDATE = { u, tostring(id), "true", "x", "false", nil, nil, n = 7 },
    TDB_SQL_TODO_LIST_NEW = { u, "9223372036854775807", nil, "51", n = 4 },
    TDB_SQL_TODO_LIST_OLD = { u, "0", nil, "51", n = 4 },
    TDB_SQL_TODO_LIST_NEW_F = { u, "9223372036854775807", nil, "51", "false", n = 5 },
    TDB_SQL_TODO_LIST_OLD_F = { u, "0", nil, "51", "true", n = 5 },
    TDB_SQL_TODO_COUNT = { u, nil, n = 2 },
  })[name]
end

local unpack = table.unpack or unpack

describe("csrc/sql.c as read by this spec", function()
  it("yields every todo statement, with $1 as the owner", function()
    for _, name in ipairs { "TDB_SQL_TODO_GET", "TDB_SQL_TODO_LIST_NEW", "TDB_SQL_TODO_LIST_OLD",
                            "TDB_SQL_TODO_LIST_NEW_F", "TDB_SQL_TODO_LIST_OLD_F", "TDB_SQL_TODO_COUNT",
                            "TDB_SQL_TODO_UPDATE", "TDB_SQL_TODO_TOGGLE", "TDB_SQL_TODO_DELETE" } do
      assert.is_string(SQL[name], name)
      assert.truthy(SQL[name]:find("user_id = $1", 1, true), name)
    end
    assert.truthy(SQL.TDB_SQL_TODO_LIST_NEW:find("ORDER BY id DESC", 1, true))
    assert.truthy(SQL.TDB_SQL_TODO_LIST_OLD_F:find("completed = $5", 1, true))
  end)
end)

describe("query plans over 200 000 rows", function()
  local db, target, sample

  setup(function()
    if not S.admin_url then return end
    db = S.fresh()
    local admin = assert(tododb.connect(S.admin_url))
    -- replica role: no FK triggers for the seed rows (fast). One statement
    -- at a time: Citus runs no multi-shard statement in a transaction after
    -- one that touched the coordinator's copy of the users reference table.
    for _, sql in ipairs {
      "SET session_replication_role = replica",
      [[INSERT INTO users (email, hashed_password)
        SELECT 'plan' || g || '@example.com', 'x' FROM generate_series(1, 20) g]],
      [[INSERT INTO todos (user_id, id, title, description, completed)
        SELECT u.ids[1 + g % 20], g, 'todo ' || g, CASE WHEN g % 5 = 0 THEN 'd' END, g % 3 = 0
        FROM (SELECT array_agg(id ORDER BY id) AS ids FROM users) u, generate_series(1, 200000) g]],
      "INSERT INTO todo_counters (user_id, last_id) SELECT user_id, max(id) FROM todos GROUP BY user_id",
      "ANALYZE users",
      "ANALYZE todos",
      "RESET session_replication_role",
    } do assert(admin:exec(sql)) end
    local rows = assert(admin:query [[
      SELECT (SELECT min(id) FROM users) AS uid, (SELECT count(*) FROM todos) AS n]])
    target = rows[1].uid
    assert.equal(200000, rows[1].n)
    assert.equal(10000, S.count(admin, "SELECT count(*) AS n FROM todos WHERE user_id = $1", target))
    sample = assert(admin:query("SELECT id FROM todos WHERE user_id = $1 ORDER BY id OFFSET 5000 LIMIT 1",
                                target))[1].id
    admin:close()
  end)
  teardown(function() if db then db:close() end end)

  -- EXPLAIN as role tododb, inside a transaction with the RLS setting.
  local function explain(name, generic)
    local p = params_for(name, target, sample)
    assert(db:exec "BEGIN")
    S.set_user(db, target)
    local rows, err
    if generic then
      assert(db:exec "SET LOCAL plan_cache_mode = force_generic_plan")
      assert(db:exec("PREPARE tdb_plan_spec AS " .. SQL[name]))
      local args = {}
      for i = 1, p.n or #p do
        args[i] = p[i] == nil and "NULL" or ("'" .. p[i] .. "'")
      end
      rows, err = db:query("EXPLAIN EXECUTE tdb_plan_spec(" .. table.concat(args, ", ") .. ")")
    else
      rows, err = db:query("EXPLAIN " .. SQL[name], unpack(p, 1, p.n or #p))
    end
    assert(db:exec "ROLLBACK")
    if generic then assert(db:exec "DEALLOCATE tdb_plan_spec") end
    assert.is_not_nil(rows, rows == nil and err.message or nil)
    return explain_text(rows)
  end

  local function uses_index(plan, what)
    assert.truthy(plan:find("Index", 1, true), what .. " does not use an index:\n" .. plan)
    assert.is_nil(plan:find("Seq Scan on todos", 1, true), what .. " scans todos:\n" .. plan)
  end

  for _, name in ipairs { "TDB_SQL_TODO_LIST_NEW", "TDB_SQL_TODO_LIST_OLD", "TDB_SQL_TODO_LIST_NEW_F",
                          "TDB_SQL_TODO_LIST_OLD_F", "TDB_SQL_TODO_GET", "TDB_SQL_TODO_COUNT",
                          "TDB_SQL_TODO_UPDATE", "TDB_SQL_TODO_TOGGLE", "TDB_SQL_TODO_DELETE" } do
    it(name .. " uses an index (custom and generic plans)", function()
      if not S.admin_url then return pending "TODODB_ADMIN_URL is not set: no fast seeding" end
      uses_index(explain(name, false), name .. " (custom plan)")
      uses_index(explain(name, true), name .. " (generic plan)")
    end)
  end

  it("a search listing still walks the index", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set: no fast seeding" end
    assert(db:exec "BEGIN")
    S.set_user(db, target)
    local rows = assert(db:query("EXPLAIN " .. SQL.TDB_SQL_TODO_LIST_NEW, tostring(target),
                                 "9223372036854775807", "%todo 1%", "51"))
    assert(db:exec "ROLLBACK")
    uses_index(explain_text(rows), "list with search")
  end)

  it("the session sees exactly its 10 000 rows", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set: no fast seeding" end
    local s = db:session(target)
    assert.equal(10000, s:count_todos())
    local page = assert(s:list_todos { limit = 200, completed = true })
    assert.equal(200, #page.items)
    for _, t in ipairs(page.items) do assert.equal(target, t.user_id) end
    assert.equal(sample, assert(s:get_todo(sample)).id)
    local other = db:session(target + 1)
    local got, err = other:get_todo(sample)
    assert.is_nil(got)
    assert.equal("not_found", err.code)
  end)
end)

describe("row-level security", function()
  local db, alice, bob, at

  before_each(function()
    db = S.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
    bob = assert(db:create_user { email = "bob@example.com", password = "bob password" })
    at = assert(db:session(alice):create_todo { title = "alice's", completed = true })
    assert(db:session(bob):create_todo { title = "bob's" })
  end)
  after_each(function() db:close() end)

  -- The setting as tododb sends it on Citus (set_config() would not reach
  -- the workers); "" too, which S.set_user refuses.
  local function set_local(value)
    if value == "" then assert(db:exec "SET LOCAL tododb.user_id = ''")
    else S.set_user(db, value) end
  end

  -- Runs a statement of sql.c as tododb with the setting (nil: none) and
  -- rolls back. Returns rows and the affected count.
  local function run_as(setting, name, ...)
    assert(db:exec "BEGIN")
    if setting ~= nil then set_local(setting) end
    local rows, n = db:query(SQL[name], ...)
    assert(db:exec "ROLLBACK")
    assert.is_not_nil(rows, tostring(n))
    return rows, n
  end

  local NEWEST = "9223372036854775807"

  it("lets the right setting see the row (the control case)", function()
    local a = tostring(alice.id)
    assert.equal(1, #run_as(a, "TDB_SQL_TODO_GET", a, tostring(at.id)))
    assert.equal(1, #run_as(a, "TDB_SQL_TODO_LIST_NEW", a, NEWEST, nil, "51"))
    assert.equal(1, run_as(a, "TDB_SQL_TODO_COUNT", a, nil)[1].count)
    local _, n = run_as(a, "TDB_SQL_TODO_DELETE", a, tostring(at.id))
    assert.equal(1, n)
  end)

  for _, setting in ipairs { "bob", "none", "empty" } do
    it("hides alice's rows from statements scoped to alice under setting " .. setting, function()
      local a = tostring(alice.id)
      local value = ({ bob = tostring(bob.id), none = nil, empty = "" })[setting]
      local id = tostring(at.id)
      assert.equal(0, #run_as(value, "TDB_SQL_TODO_GET", a, id))
      assert.equal(0, #run_as(value, "TDB_SQL_TODO_LIST_NEW", a, NEWEST, nil, "51"))
      assert.equal(0, #run_as(value, "TDB_SQL_TODO_LIST_OLD_F", a, "0", nil, "51", "true"))
      assert.equal(0, run_as(value, "TDB_SQL_TODO_COUNT", a, nil)[1].count)
      assert.equal(0, select(2, run_as(value, "TDB_SQL_TODO_TOGGLE", a, id)))
      assert.equal(0, select(2, run_as(value, "TDB_SQL_TODO_DELETE", a, id)))
      assert.equal(0, select(2, run_as(value, "TDB_SQL_TODO_COMPLETE_ALL", a)))
      assert.equal(0, select(2, run_as(value, "TDB_SQL_TODO_DELETE_DONE", a)))
      assert.equal(0, #run_as(value, "TDB_SQL_TODO_LIST_OLD", a, "0", nil, "51"))
      -- and it cannot write a row for alice either
      assert(db:exec "BEGIN")
      if value then set_local(value) end
      local rows, err = db:query(SQL.TDB_SQL_TODO_INSERT, a, "planted", nil, nil)
      assert(db:exec "ROLLBACK")
      assert.is_nil(rows)
      assert.equal("42501", err.sqlstate)
      -- nothing changed
      local mine = db:session(alice)
      assert.equal(1, mine:count_todos())
      assert.is_true(assert(mine:get_todo(at.id)).completed)
    end)
  end

  it("sees nothing at all without the setting, even unscoped", function()
    assert.equal(0, S.count(db, "SELECT count(*) AS n FROM todos"))
  end)

  it("is reported by db:info(): bypassed for a superuser, in force for tododb", function()
    assert.is_false(assert(db:info()).rls_bypassed)
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    local admin = assert(tododb.connect(S.admin_url))
    assert.is_true(assert(admin:info()).rls_bypassed)
    assert.equal(2, S.count(admin, "SELECT count(*) AS n FROM todos"))
    admin:close()
  end)
end)
