-- bench/tododb_bench.lua: the tododb side of bench/run, for Lua 5.4 and LuaJIT.
--   tododb_bench.lua setup          migrate, make bench-0001 (real argon2id hash)
--   tododb_bench.lua WORKLOAD OPS   get create toggle list deep count auth bulk
--                                   mixed memory; prints one RESULT line
-- RESULT workload ops secs p50_ms p99_ms peak_rss_kb cpu_us_per_op
-- Environment (bench/run sets it): BENCH_URL (role tododb), BENCH_IDS (file of
-- "user_id<TAB>id" for the users with 10 000 todos), BENCH_BULK_USER,
-- BENCH_EMAIL, BENCH_PASSWORD, BENCH_DEEP (items before the deep page),
-- BENCH_BULK_ROWS, BENCH_START_AT and BENCH_LATFILE (mixed workers).
package.path = (arg[0]:match "^(.*)/" or ".") .. "/?.lua;" .. package.path
local tododb = require "tododb"
local system = require "clock"
local now, clock = system.monotime, os.clock   -- wall (monotonic), CPU of this process

local env = os.getenv
local url = assert(env "BENCH_URL", "BENCH_URL is not set (run bench/run)")
local workload, ops = arg[1], tonumber(arg[2] or "0")
local impl = jit and "tododb-luajit" or "tododb-lua5.4"

local function status(field)                       -- kB from /proc/self/status
  local f = assert(io.open "/proc/self/status")
  local s = f:read "*a"
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local db = assert(tododb.connect(url))

if workload == "setup" then
  assert(db:migrate())
  local email, pw = assert(env "BENCH_EMAIL"), assert(env "BENCH_PASSWORD")
  local u = db:find_user(email) or assert(db:create_user { email = email, password = pw })
  print(u.id)
  return
end

-- The users with 10 000 todos and their seeded todo ids.
local users, ids = {}, {}
for line in io.lines(assert(env "BENCH_IDS")) do
  local u, id = line:match "^(%d+)\t(%d+)$"
  u, id = tonumber(u), tonumber(id)
  if not ids[u] then ids[u] = {}; users[#users + 1] = u end
  local t = ids[u]
  t[#t + 1] = id
end
local sessions = {}
for i, u in ipairs(users) do sessions[i] = db:session(u) end
local random = math.random
math.randomseed(tonumber(env "BENCH_WORKER" or "1") * 7919)

local function pick()                              -- a session and one of its todo ids
  local i = random(#users)
  local list = ids[users[i]]
  return sessions[i], list[random(#list)]
end

local lat = {}
local function report(n, secs, cpu)
  table.sort(lat)
  local function q(p) return lat[math.max(1, math.ceil(p * #lat))] * 1000 end
  print(("RESULT\t%s\t%d\t%.6f\t%.4f\t%.4f\t%d\t%.2f"):format(workload, n, secs, q(0.50),
    q(0.99), status "VmHWM", cpu / n * 1e6))
end

-- Runs body(i) ops times after warm ops untimed; one latency per op.
local function run(body, warm)
  for i = 1, warm or math.min(200, math.max(10, math.floor(ops / 10))) do body(-i) end
  local c0, t0 = clock(), now()
  for i = 1, ops do
    local a = now()
    body(i)
    lat[i] = now() - a
  end
  report(ops, now() - t0, clock() - c0)
end

local W = {}

function W.get()
  run(function()
    local s, id = pick()
    assert(s:get_todo(id))
  end)
end

function W.create()
  run(function(i)
    local s = sessions[random(#users)]
    assert(s:create_todo { title = "Bench todo " .. i, description = "created by the benchmark" })
  end)
end

function W.toggle()
  run(function()
    local s, id = pick()
    assert(s:toggle_todo(id))
  end)
end

function W.list()                                  -- first page, newest first
  run(function()
    local page = assert(sessions[random(#users)]:list_todos { limit = 50 })
    assert(#page.items == 50)
  end)
end

function W.deep()                                  -- the page after BENCH_DEEP items, by cursor
  local s = sessions[1]
  local deep, cur = tonumber(env "BENCH_DEEP" or "9950"), nil
  for _ = 1, math.floor(deep / 50) do cur = assert(s:list_todos { limit = 50, after = cur }).next end
  run(function()
    local page = assert(s:list_todos { limit = 50, after = cur })
    assert(#page.items == 50)
  end)
end

function W.count()
  run(function()
    assert(sessions[random(#users)]:count_todos() >= 10000)
  end)
end

function W.auth()                                  -- argon2id interactive, libsodium
  local email, pw = assert(env "BENCH_EMAIL"), assert(env "BENCH_PASSWORD")
  run(function() assert(db:authenticate(email, pw)) end, 1)
end

-- Deletes the bulk user's todos (not timed).
local function clear_user(uid)
  assert(db:exec "BEGIN")
  assert(db:query("SELECT set_config('tododb.user_id', $1, true)", tostring(uid)))
  assert(db:query("DELETE FROM todos WHERE user_id = $1", uid))
  assert(db:exec "COMMIT")
end

function W.bulk()                                  -- one s:create_todos call per op
  local uid = assert(tonumber(env "BENCH_BULK_USER"))
  local n = tonumber(env "BENCH_BULK_ROWS" or "100000")
  local s, items = db:session(uid), {}
  for i = 1, n do
    items[i] = { title = "Imported todo " .. i, completed = i % 5 == 0,
                 description = i % 3 == 0 and "Imported description " .. i or nil }
  end
  assert(s:create_todos { { title = "warm-up" } })
  local cpu = 0
  for i = 1, ops do
    clear_user(uid)
    local c, a = clock(), now()
    assert(assert(s:create_todos(items)) == n)
    lat[i] = now() - a
    cpu = cpu + clock() - c
  end
  local total = 0
  for i = 1, ops do total = total + lat[i] end
  report(ops, total, cpu)
  clear_user(uid)
end

-- 35% get, 35% list (first page), 12.5% update, 12.5% create, 5% delete of a
-- todo this worker created. Starts at BENCH_START_AT (wall clock) so that the
-- workers overlap; writes every latency (ms) to BENCH_LATFILE.
function W.mixed()
  local mine = {}
  local function create(i)
    local k = random(#users)
    local t = assert(sessions[k]:create_todo { title = "Mixed todo " .. i })
    mine[#mine + 1] = { k, t.id }
  end
  for i = 1, 50 do create(-i) end
  local ops_ = {
    function() local s, id = pick(); assert(s:get_todo(id)) end,
    function() assert(sessions[random(#users)]:list_todos { limit = 50 }) end,
    function(i) local s, id = pick(); assert(s:update_todo(id, { completed = i % 2 == 0 })) end,
    create,
    function()
      local j = random(#mine)
      local m = mine[j]
      mine[j] = mine[#mine]; mine[#mine] = nil
      assert(sessions[m[1]]:delete_todo(m[2]))
    end,
  }
  local function choose(r)
    return r < 0.35 and 1 or r < 0.70 and 2 or r < 0.825 and 3 or r < 0.95 and 4 or 5
  end
  for i = 1, 100 do ops_[choose(random())](-i) end
  local start = tonumber(env "BENCH_START_AT")
  if start then
    while system.gettime() < start do system.sleep(0.001) end
  end
  local c0, t0 = clock(), now()
  for i = 1, ops do
    local f = ops_[choose(random())]
    local a = now()
    f(i)
    lat[i] = now() - a
  end
  local secs, cpu = now() - t0, clock() - c0
  local f = assert(io.open(assert(env "BENCH_LATFILE"), "w"))
  for i = 1, ops do f:write(("%.4f\n"):format(lat[i] * 1000)) end
  f:close()
  report(ops, secs, cpu)
end

-- ops of get_todo (90%) and list_todos (10%, 50 Todo objects each): RSS
-- after warm-up and at the end, with samples between.
function W.memory()
  local function op(i)
    if i % 10 == 0 then assert(sessions[random(#users)]:list_todos { limit = 50 })
    else local s, id = pick(); assert(s:get_todo(id)) end
  end
  for i = 1, 20000 do op(i) end
  local rss0, heap0 = status "VmRSS", collectgarbage "count"
  local samples, t0 = {}, now()
  for i = 1, ops do
    op(i)
    if i % math.max(1, math.floor(ops / 10)) == 0 then samples[#samples + 1] = status "VmRSS" end
  end
  local secs = now() - t0
  local rss1, heap1 = status "VmRSS", collectgarbage "count"
  collectgarbage "collect"
  print(("MEMORY\t%s\t%d\t%.2f\t%d\t%d\t%.0f\t%.0f\t%.0f\t%d\t%d\t%s"):format(impl, ops, secs,
    rss0, rss1, heap0, heap1, collectgarbage "count", tododb.core.todo_size,
    tododb.core.user_size, table.concat(samples, ",")))
end

local w = W[workload]
if not w then
  io.stderr:write("tododb_bench: unknown workload ", tostring(workload), "\n")
  os.exit(2)
end
w()
db:close()
