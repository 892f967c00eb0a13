-- Isolation property test: five users, 2 000 random session operations on
-- random ids (everybody's, deleted ones, junk); after every step the answer
-- must be what an in-memory model of per-user todo lists predicts.
-- Reproduce a failure with TDB_SEED=<seed> (printed in the message).
local S = require "support"
local tododb = require "tododb"

local SEED = tonumber(os.getenv "TDB_SEED") or os.time()
local STEPS = 2000
local NUSERS = 5

local WORDS = { "milk", "Bread", "call Mom", "100%", "a_b", "été", "naïve", "TAX", "x", "ünï" }
local SEARCHES = { "a", "MILK", "%", "_", "é", "x", "zzz", "" }

local function pick(t) return t[math.random(#t)] end

local function random_title()
  local n, parts = math.random(1, 3), {}
  for i = 1, n do parts[i] = pick(WORDS) end
  local t = table.concat(parts, " ")
  local r = math.random()
  if r < 0.1 then return "  " .. t .. "\t", t end            -- trimmed
  if r < 0.15 then return "   ", nil end                     -- invalid
  return t, t
end

local function random_description()
  local r = math.random()
  if r < 0.3 then return nil, nil, false end
  if r < 0.4 then return "", nil, true end
  if r < 0.5 then return tododb.null, nil, true end
  local d = pick(WORDS) .. " " .. math.random(1000)
  return d, d, true
end

describe("isolation between users", function()
  local db
  before_each(function() db = S.fresh() end)
  after_each(function() db:close() end)

  it("holds over 2 000 random operations (seeded; TDB_SEED reproduces)", function()
    math.randomseed(SEED)
    local sessions, model, uids = {}, {}, {}
    for i = 1, NUSERS do
      local u = assert(db:create_user { email = ("user%d@example.com"):format(i), password = "password " .. i })
      sessions[i], model[i], uids[i] = db:session(u), {}, u.id
    end
    local pool = {}               -- every id ever made, for all users
    local exists = {}             -- "user:id" -> true while it exists (ids count per user)
    local last_id = {}            -- user -> highest id it was given
    local junk = { 0, -1, 2 ^ 62, "99999999999999999999", "-5", 987654321 }
    local step, what = 0, ""

    local function ctx() return ("seed %d, step %d: %s"):format(SEED, step, what) end
    local function check(cond, msg) assert(cond, ctx() .. ": " .. msg) end
    local function eq(expected, got, msg)
      check(expected == got, ("%s: expected %s, got %s"):format(msg, tostring(expected), tostring(got)))
    end

    local function find(u, id)
      for i, t in ipairs(model[u]) do if t.id == id then return i, t end end
    end
    local function same_todo(u, m, t)
      check(t ~= nil, "expected a todo")
      eq(m.id, t.id, "id")
      eq(uids[u], t.user_id, "user_id")
      eq(m.title, t.title, "title")
      eq(m.description, t.description, "description")
      eq(m.completed, t.completed, "completed")
    end
    local function expect_err(code, got, err)
      check(got == nil, "expected " .. code .. ", got " .. tostring(got))
      eq(code, err and err.code, "error code (" .. tostring(err and err.message) .. ")")
    end
    local function random_id()
      local r = math.random()
      if r < 0.08 or #pool == 0 then return pick(junk) end
      local id = pick(pool)
      if r < 0.15 then return tostring(id) end
      return id
    end
    local function key(id)                                -- model key for an id argument
      return tonumber(id)
    end
    local function owned(u, id)
      local k = key(id)
      return k and exists[u .. ":" .. k] and k or nil
    end

    local ops = {}
    function ops.create(u, s)
      local raw, title = random_title()
      local draw, desc, _ = random_description()
      local done = math.random() < 0.3
      what = ("user %d create %q"):format(u, raw)
      local t, err = s:create_todo { title = raw, description = draw, completed = done }
      if not title then return expect_err("invalid", t, err) end
      check(t ~= nil, "create failed: " .. tostring(err and err.message))
      -- Each user's ids count 1, 2, 3 …: never reused, whatever others do.
      eq((last_id[u] or 0) + 1, t.id, "the user's next id")
      last_id[u] = t.id
      local m = { id = t.id, title = title, description = desc, completed = done }
      model[u][#model[u] + 1] = m
      exists[u .. ":" .. t.id] = true
      pool[#pool + 1] = t.id
      same_todo(u, m, t)
    end
    function ops.get(u, s)
      local id = random_id()
      what = ("user %d get %s"):format(u, tostring(id))
      local t, err = s:get_todo(id)
      local k = owned(u, id)
      if not k then return expect_err("not_found", t, err) end
      same_todo(u, select(2, find(u, k)), t)
    end
    function ops.update(u, s)
      local id, changes, desc_set = random_id(), {}, false
      local new_title, new_desc
      if math.random() < 0.5 then
        local raw
        raw, new_title = random_title()
        changes.title = raw
        if not new_title then changes.title = "" end
      end
      if math.random() < 0.4 then
        local draw, d, present = random_description()
        if present then changes.description, new_desc, desc_set = draw, d, true end
      end
      if math.random() < 0.4 then changes.completed = math.random() < 0.5 end
      what = ("user %d update %s title=%s desc=%s completed=%s"):format(u, tostring(id),
        tostring(changes.title), tostring(changes.description), tostring(changes.completed))
      local t, err = s:update_todo(id, changes)
      -- the id is read first: one beyond int8 is simply missing
      if key(id) and math.abs(key(id)) >= 2 ^ 63 then return expect_err("not_found", t, err) end
      if next(changes) == nil then return expect_err("invalid", t, err) end
      if changes.title and not new_title then return expect_err("invalid", t, err) end
      local k = owned(u, id)
      if not k then return expect_err("not_found", t, err) end
      local _, m = find(u, k)
      if changes.title then m.title = new_title end
      if desc_set then m.description = new_desc end
      if changes.completed ~= nil then m.completed = changes.completed end
      same_todo(u, m, t)
    end
    function ops.toggle(u, s)
      local id = random_id()
      what = ("user %d toggle %s"):format(u, tostring(id))
      local t, err = s:toggle_todo(id)
      local k = owned(u, id)
      if not k then return expect_err("not_found", t, err) end
      local _, m = find(u, k)
      m.completed = not m.completed
      same_todo(u, m, t)
    end
    function ops.delete(u, s)
      local id = random_id()
      what = ("user %d delete %s"):format(u, tostring(id))
      local ok, err = s:delete_todo(id)
      local k = owned(u, id)
      if not k then return expect_err("not_found", ok, err) end
      eq(true, ok, "delete result")
      table.remove(model[u], (find(u, k)))
      exists[u .. ":" .. k] = nil
    end
    function ops.list(u, s)
      local opts = { limit = math.random(1, 25) }
      if math.random() < 0.5 then opts.order = math.random() < 0.5 and "oldest" or "newest" end
      local r = math.random()
      if r < 0.25 then opts.completed = true elseif r < 0.5 then opts.completed = false end
      if math.random() < 0.3 then opts.search = pick(SEARCHES) end
      what = ("user %d list order=%s completed=%s search=%s limit=%d"):format(u, tostring(opts.order),
        tostring(opts.completed), tostring(opts.search), opts.limit)
      local want = {}
      for _, m in ipairs(model[u]) do
        local q = opts.search and opts.search:lower()
        if (opts.completed == nil or m.completed == opts.completed)
           and (not q or m.title:lower():find(q, 1, true)) then
          want[#want + 1] = m
        end
      end
      if opts.order ~= "oldest" then
        local rev = {}
        for i = #want, 1, -1 do rev[#rev + 1] = want[i] end
        want = rev
      end
      local pos, pages = 0, 0
      repeat
        local page, err = s:list_todos(opts)
        check(page ~= nil, "list failed: " .. tostring(err and err.message))
        for _, t in ipairs(page.items) do
          pos = pos + 1
          check(want[pos] ~= nil, "an unexpected row " .. tostring(t))
          same_todo(u, want[pos], t)
        end
        eq(math.min(opts.limit, #want - (pos - #page.items)), #page.items, "page size")
        eq(pos < #want, page.next ~= nil, "next cursor present")
        opts.after = page.next
        pages = pages + 1
      until not opts.after or pages >= 2 or math.random() < 0.5
      if not opts.after then eq(#want, pos, "rows listed") end
    end
    function ops.count(u, s)
      local r, opts = math.random(), nil
      if r < 0.3 then opts = { completed = true } elseif r < 0.6 then opts = { completed = false } end
      what = ("user %d count %s"):format(u, tostring(opts and opts.completed))
      local n = 0
      for _, m in ipairs(model[u]) do
        if not opts or m.completed == opts.completed then n = n + 1 end
      end
      eq(n, s:count_todos(opts), "count")
    end
    function ops.complete_all(u, s)
      what = ("user %d complete_all"):format(u)
      local n = 0
      for _, m in ipairs(model[u]) do
        if not m.completed then n, m.completed = n + 1, true end
      end
      eq(n, s:complete_all(), "completed now")
    end
    function ops.delete_completed(u, s)
      what = ("user %d delete_completed"):format(u)
      local keep, n = {}, 0
      for _, m in ipairs(model[u]) do
        if m.completed then n = n + 1; exists[u .. ":" .. m.id] = nil else keep[#keep + 1] = m end
      end
      model[u] = keep
      eq(n, s:delete_completed(), "deleted")
    end

    -- weights: creation dominates so the lists grow; bulk ops are rare
    local plan = {}
    for op, w in pairs { create = 30, get = 15, update = 15, toggle = 10, delete = 8, list = 12,
                         count = 6, complete_all = 2, delete_completed = 2 } do
      for _ = 1, w do plan[#plan + 1] = op end
    end
    table.sort(plan)                                       -- pairs order must not depend on the VM

    local function verify_all()
      for u = 1, NUSERS do
        what = ("full check of user %d"):format(u)
        local seen, after = {}, nil
        repeat
          local page = assert(sessions[u]:list_todos { order = "oldest", limit = 200, after = after })
          for _, t in ipairs(page.items) do seen[#seen + 1] = t end
          after = page.next
        until not after
        eq(#model[u], #seen, "number of todos")
        for i, m in ipairs(model[u]) do same_todo(u, m, seen[i]) end
      end
    end

    for i = 1, STEPS do
      step = i
      local u = math.random(NUSERS)
      ops[pick(plan)](u, sessions[u])
      if i % 250 == 0 then verify_all() end
    end
    step = STEPS + 1
    verify_all()
    -- the database agrees, row by row, when seen without row-level security
    if S.admin_url then
      local admin = assert(tododb.connect(S.admin_url))
      local total = 0
      for u = 1, NUSERS do
        total = total + #model[u]
        eq(#model[u], S.count(admin, "SELECT count(*) AS n FROM todos WHERE user_id = $1", uids[u]),
           "rows of user " .. u)
      end
      eq(total, S.count(admin, "SELECT count(*) AS n FROM todos"), "all rows")
      admin:close()
    end
  end)
end)
