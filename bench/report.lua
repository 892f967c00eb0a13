-- bench/report.lua: turns what bench/run measured into one table on stdout
-- and bench/RESULTS.md.   lua5.4 bench/report.lua build/bench bench/RESULTS.md
local dir, dest = assert(arg[1]), assert(arg[2])

local function lines(name)
  local f = io.open(dir .. "/" .. name)
  if not f then return function() return nil end end
  local it = f:lines()
  return function()
    local l = it()
    if not l then f:close() end
    return l
  end
end
local function split(l)
  local t = {}
  for v in (l .. "\t"):gmatch "([^\t]*)\t" do t[#t + 1] = v end
  return t
end
local function slurp(name)
  local f = io.open(dir .. "/" .. name)
  if not f then return "" end
  local s = f:read "*a"
  f:close()
  return s
end

local meta = {}
for l in lines "meta.tsv" do local t = split(l); meta[t[1]] = t[2] end

-- ---- aggregate -----------------------------------------------------------------
local IMPLS = { "raw", "tododb-lua5.4", "tododb-luajit", "sqlmodel" }
local NAME = { raw = "raw libpq (C)", ["tododb-lua5.4"] = "tododb, Lua 5.4",
               ["tododb-luajit"] = "tododb, LuaJIT", sqlmodel = "SQLModel" }
local WORKLOADS = { "get", "create", "update", "list", "deep", "count", "auth", "bulk", "mixed" }
local WNAME = { get = "get_todo by id", create = "create_todo", update = "update_todo (toggle completed)",
                list = "list_todos, first page of 50", deep = "list_todos, page of 50 after 9 950 (cursor)",
                count = "count_todos (10 000 todos)", auth = "authenticate (argon2id interactive)",
                bulk = "bulk import, 100 000 todos per op", mixed = "mixed 70/25/5, 2 client processes" }

local raw = {}
for l in lines "results.tsv" do
  local t = split(l)
  local impl, round, w = t[1], t[2], t[3]
  raw[impl] = raw[impl] or {}
  raw[impl][w] = raw[impl][w] or {}
  table.insert(raw[impl][w], { round = round, ops = tonumber(t[4]), secs = tonumber(t[5]),
    p50 = tonumber(t[6]), p99 = tonumber(t[7]), rss = tonumber(t[8]), cpu = tonumber(t[9]) })
end

local function percentiles(files)
  local all = {}
  for _, f in ipairs(files) do
    for l in lines(f) do all[#all + 1] = tonumber(l) end
  end
  if #all == 0 then return nil end
  table.sort(all)
  local function q(p) return all[math.max(1, math.ceil(p * #all))] end
  return q(0.50), q(0.99)
end

local R = {}                       -- R[impl][w] = { ops, rate, p50, p99, rss, cpu, rounds }
for impl, ws in pairs(raw) do
  R[impl] = {}
  for w, runs in pairs(ws) do
    local r
    if w == "mixed" then
      local ops, secs, rss, cpu = 0, 0, 0, 0
      for _, x in ipairs(runs) do
        ops = ops + x.ops; secs = math.max(secs, x.secs)
        rss = math.max(rss, x.rss); cpu = cpu + x.cpu * x.ops
      end
      local p50, p99 = percentiles { "mixed-" .. impl .. "-1.lat", "mixed-" .. impl .. "-2.lat" }
      r = { ops = ops, rate = ops / secs, p50 = p50, p99 = p99, rss = rss, cpu = cpu / ops,
            procs = #runs }
    else                           -- the median round by throughput
      table.sort(runs, function(a, b) return a.ops / a.secs < b.ops / b.secs end)
      local x = runs[math.ceil(#runs / 2)]
      r = { ops = x.ops, rate = x.ops / x.secs, p50 = x.p50, p99 = x.p99, rss = x.rss,
            cpu = x.cpu, rounds = #runs }
    end
    R[impl][w] = r
  end
end
local function get(impl, w) return R[impl] and R[impl][w] end
-- Time per op of impl over raw's. With several rounds, the median of the
-- per-round ratios: round r of both ran back to back, under the same load.
local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end
local function paired(impl, w, field)
  local a, b = raw[impl] and raw[impl][w], raw.raw and raw.raw[w]
  if not a or not b or w == "mixed" then return nil end
  local by, t = {}, {}
  for _, x in ipairs(b) do by[x.round] = x end
  for _, x in ipairs(a) do
    local y = by[x.round]
    if y then
      t[#t + 1] = field == "p50" and x.p50 / y.p50 or (y.ops / y.secs) / (x.ops / x.secs)
    end
  end
  return #t > 0 and median(t) or nil
end
local function vs_raw(impl, w)
  local x = paired(impl, w)
  if x then return x end
  local a, b = get(impl, w), get("raw", w)
  return a and b and b.rate / a.rate
end
local function vs_sqlmodel(impl, w)          -- how many times faster than SQLModel
  local a, b = get(impl, w), get("sqlmodel", w)
  return a and b and a.rate / b.rate
end

-- ---- formatting ------------------------------------------------------------------
local function num(x, d)
  if not x then return "–" end
  local s = ("%." .. (d or 0) .. "f"):format(x)
  local int, frac = s:match "^(-?%d+)(.*)$"
  int = int:reverse():gsub("(%d%d%d)", "%1 "):reverse():gsub("^ ", ""):gsub("^%- ", "-")
  return int .. frac
end
local function ms(x)
  if not x then return "–" end
  if x >= 100 then return num(x, 0) elseif x >= 10 then return num(x, 1) end
  return num(x, 3)
end
local out = {}
local function p(fmt, ...) out[#out + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end

p "# tododb benchmark results"
p ""
p("Produced by `make bench` (`bench/run`, %s mode) on %s. Every number below comes", meta.mode or "?", meta.date or "?")
p "from one run: all implementations ran the same workloads against the same database,"
p "one after the other, workload by workload. Regenerate with `make bench`; do not edit by hand."
p ""
p "| machine | |"
p "|---|---|"
p("| CPU | %s, %s cores (`nproc`) |", meta.cpu or "?", meta.nproc or "?")
p("| kernel | %s |", meta.kernel or "?")
p("| PostgreSQL | %s, embedded cluster (`scripts/devdb`), unix socket; %s |", meta.postgres or "?", meta.pgconf or "")
p("| Lua | %s; %s |", meta.lua or "?", meta.luajit or "no LuaJIT")
p("| libpq / libsodium | %s / %s |", meta.libpq or "?", meta.libsodium or "?")
p("| C compiler | %s, `-O2` |", meta.cc or "?")
if meta.python then p("| SQLModel stack | %s |", meta.python) end
p("| data | database `tododb_bench`: %s, plus a bulk-import user |", meta.seed or "?")
p("| run | %s s in all; raw libpq and tododb take the median of %s rounds where marked |",
  meta.elapsed or "?", meta.rounds or "1")
p("| load | %s (the machine may be shared: compare ratios within this run, not across runs) |", meta.load or "?")
p ""

p "## All workloads"
p ""
p "ops/s is operations per second of wall time on one connection (mixed: both processes"
p "together). p50/p99 are per-operation latencies. Peak RSS is the client process's"
p "(`VmHWM`; mixed: the larger of the two). CPU is the client process's CPU time per"
p "operation. **× raw** is time per operation relative to the raw-libpq C loop issuing"
p "the same statements in the same pipelined form (1.00 = the floor); with several rounds it"
p "is the median of the per-round ratios (the two ran back to back in each round)."
p ""
p "| workload | implementation | ops | ops/s | p50 ms | p99 ms | peak RSS MB | client CPU µs/op | × raw |"
p "|---|---|--:|--:|--:|--:|--:|--:|--:|"
local console = {}
for _, w in ipairs(WORKLOADS) do
  for _, impl in ipairs(IMPLS) do
    local r = get(impl, w)
    if r then
      local ops = num(r.ops) .. (r.rounds and r.rounds > 1 and (" ×" .. r.rounds) or "")
        .. (r.procs and (" (" .. r.procs .. "×" .. num(r.ops / r.procs) .. ")") or "")
      local x = vs_raw(impl, w)
      p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |", WNAME[w], NAME[impl], ops,
        num(r.rate, r.rate < 100 and 2 or 0), ms(r.p50), ms(r.p99), num(r.rss / 1024, 1),
        num(r.cpu, r.cpu < 1000 and 1 or 0), x and ("%.2f"):format(x) or "–")
      console[#console + 1] = ("%-8s %-15s %8d %10s %9s %9s %8.1f %7s"):format(w, impl, r.ops,
        num(r.rate, r.rate < 100 and 2 or 0), ms(r.p50), ms(r.p99), r.rss / 1024,
        x and ("%.2f"):format(x) or "-")
    end
  end
end
p ""
p "Counts marked ×N are per round, N rounds alternating between implementations; the row"
p "shows the median round by throughput. The bulk import and login rows count imports and"
p "logins; SQLModel runs a single import (quick mode: none)."
p ""

-- tododb vs SQLModel
if R.sqlmodel then
  p "## tododb vs SQLModel"
  p ""
  p "Time per operation of the original plan's stack (SQLModel + SQLAlchemy 1.4 + psycopg2,"
  p "one Session per request, `select()`, ORM objects, commit + refresh after writes) over"
  p "tododb's; > 1 means tododb is faster."
  p ""
  p "| workload | tododb (Lua 5.4) ms/op | SQLModel ms/op | SQLModel / tododb | SQLModel / tododb (LuaJIT) |"
  p "|---|--:|--:|--:|--:|"
  for _, w in ipairs(WORKLOADS) do
    local a, b = get("tododb-lua5.4", w), get("sqlmodel", w)
    if a and b then
      local j = vs_sqlmodel("tododb-luajit", w)
      p("| %s | %s | %s | %.1f× | %s |", WNAME[w], ms(1000 / a.rate), ms(1000 / b.rate),
        a.rate / b.rate, j and ("%.1f×"):format(j) or "–")
    end
  end
  p ""
end

-- logins
p "## Logins"
p ""
p "| implementation | ms per login | logins/s per core (CPU time) | hash |"
p "|---|--:|--:|---|"
for _, impl in ipairs(IMPLS) do
  local r = get(impl, "auth")
  if r then
    p("| %s | %s | %s | %s |", NAME[impl], ms(1000 / r.rate), num(1e6 / r.cpu, 1),
      impl == "sqlmodel" and "argon2-cffi (libargon2), t=2, m=64 MiB, p=1"
        or "libsodium argon2id interactive (t=2, m=64 MiB, p=1)")
  end
end
p ""

-- memory
local mem = {}
for l in lines "memory.tsv" do
  local t = split(l)
  mem[#mem + 1] = { impl = t[2], ops = tonumber(t[3]), secs = tonumber(t[4]), rss0 = tonumber(t[5]),
    rss1 = tonumber(t[6]), heap0 = tonumber(t[7]), heap1 = tonumber(t[8]), heapgc = tonumber(t[9]),
    todo = tonumber(t[10]), user = tonumber(t[11]), samples = t[12] }
end
p "## Memory"
p ""
p "A loop of get_todo (90%) and list_todos first page (10%, 50 Todo objects each) on one"
p "connection; RSS read from `/proc/self/status` after 20 000 warm-up operations and at the end."
p ""
p("| interpreter | operations | ops/s | RSS start MB | RSS end MB | growth | Lua heap start → end KB"
  .. " | samples (RSS KB, every 10%) |")
p "|---|--:|--:|--:|--:|--:|--:|---|"
for _, m in ipairs(mem) do
  p("| %s | %s | %s | %.1f | %.1f | %+d KB | %s → %s | %s |", NAME[m.impl] or m.impl, num(m.ops),
    num(m.ops / m.secs), m.rss0 / 1024, m.rss1 / 1024, m.rss1 - m.rss0, num(m.heap0), num(m.heap1),
    m.samples:gsub(",", ", "))
end
if mem[1] then
  p ""
  p("Userdata sizes: `Todo` %d bytes + title and description (`tododb.core.todo_size`),"
    .. " `User` %d bytes (`tododb.core.user_size`).",
    mem[1].todo, mem[1].user)
end
p ""

-- pgbench
local pgb = slurp "pgbench.txt"
local tps = tonumber(pgb:match "tps = ([%d%.]+)")
local pglat = tonumber(pgb:match "latency average = ([%d%.]+) ms")
p "## The server's own ceiling"
p ""
if tps then
  p("`pgbench -S -M prepared`, 1 client, scale 1 (database `tododb_pgbench`): **%s tps**, latency average %s ms.",
    num(tps), ms(pglat))
  local g, t = get("raw", "get"), get("tododb-lua5.4", "get")
  if g and t then
    p("It ran just before the get_todo rounds. One pgbench transaction is one prepared SELECT in")
    p("its own round trip; a tododb operation is set_config + the statement in one pipelined round")
    p("trip (two statements, one transaction, RLS), so raw libpq's get_todo reaches %s ops/s (%.0f%%",
      num(g.rate), g.rate / tps * 100)
    p("of pgbench) and tododb's %s ops/s (%.0f%%).", num(t.rate), t.rate / tps * 100)
  end
else
  p("pgbench did not run: %s", pgb ~= "" and (pgb:gsub("\n", " ")) or "no output")
end
p ""

-- ---- targets -------------------------------------------------------------------------
local explain = slurp "bulk-explain.txt"
local fk = tonumber(explain:match "Trigger for constraint todos_user_id_fkey: time=([%d%.]+)")
local exec = tonumber(explain:match "Execution Time: ([%d%.]+) ms")
local nofk = slurp "bulk-explain-nofk.txt"
local exec_nofk = tonumber(nofk:match "Execution Time: ([%d%.]+) ms")
-- prof[w][name] = { total =, objs = { {ir, obj}… }, fns = { {ir, fn, obj}… } }
local prof = {}
do
  local cur
  for l in lines "profile.txt" do
    local t = split(l)
    if t[1] == "PROFILE" then
      prof[t[2]] = prof[t[2]] or {}
      cur = { objs = {}, fns = {} }
      prof[t[2]][t[3]] = cur
    elseif cur and t[1] == "TOTAL" then cur.total = tonumber(t[2])
    elseif cur and t[1] == "OBJ" then table.insert(cur.objs, { ir = tonumber(t[2]), obj = t[3] })
    elseif cur and t[1] == "FN" then table.insert(cur.fns, { ir = tonumber(t[2]), fn = t[3], obj = t[4] }) end
  end
end
local function obj_ir(pr, pat)
  local n = 0
  for _, o in ipairs(pr and pr.objs or {}) do if o.obj:match(pat) then n = n + o.ir end end
  return n
end
local function fn_ir(pr, pat)
  local n = 0
  for _, f in ipairs(pr and pr.fns or {}) do if f.fn:match(pat) then n = n + f.ir end end
  return n
end
local function rounds_of(impl, w, field)
  local t = {}
  for _, x in ipairs(raw[impl] and raw[impl][w] or {}) do t[#t + 1] = ms(x[field]) end
  return table.concat(t, ", ")
end

p "## Targets (DESIGN.md §6)"
p ""
p "| target | measured | verdict |"
p "|---|---|---|"
local verdicts = {}
local function verdict(name, ok, measured, miss)
  p("| %s | %s | %s |", name, measured,
    ok == nil and "not measured" or ok and "**met**" or ("**missed** " .. (miss or "")))
  verdicts[#verdicts + 1] = { name = name, ok = ok, measured = measured }
end
for _, w in ipairs { "get", "create" } do
  for _, impl in ipairs { "tododb-lua5.4", "tododb-luajit" } do
    local x = vs_raw(impl, w)
    local a, b = get(impl, w), get("raw", w)
    local q = paired(impl, w, "p50")
    verdict(("%s ≤ 1.15× raw libpq (%s)"):format(w == "get" and "get_todo" or "create_todo", NAME[impl]),
      x and x <= 1.15, x and ("%.2f× time/op (median of per-round ratios; median round %s vs %s µs/op);"
        .. " p50 latency %.2f×"):format(
        x, num(1e6 / a.rate), num(1e6 / b.rate), q or a.p50 / b.p50) or "–",
      x and ("by %.0f%%"):format((x / 1.15 - 1) * 100))
  end
end
local function median_of(impl, w, field)
  local t = {}
  for _, x in ipairs(raw[impl] and raw[impl][w] or {}) do t[#t + 1] = x[field] end
  return #t > 0 and median(t) or nil
end
for _, w in ipairs { "list", "deep" } do
  local p99, p50 = median_of("tododb-lua5.4", w, "p99"), median_of("tododb-lua5.4", w, "p50")
  local n = raw["tododb-lua5.4"] and raw["tododb-lua5.4"][w] and #raw["tododb-lua5.4"][w] or 0
  verdict(("list_todos page of 50, 10 000 todos/user, p99 < 2 ms (%s)")
      :format(w == "list" and "first page" or "deep page"),
    p99 and p99 < 2, p99 and ("p99 %s ms, p50 %s ms (median of %d rounds;"
      .. " p99 per round: tododb %s; raw libpq %s)"):format(
      ms(p99), ms(p50), n, rounds_of("tododb-lua5.4", w, "p99"), rounds_of("raw", w, "p99")) or "–",
    p99 and ("by %s ms"):format(ms(p99 - 2)))
end
do
  local r = get("tododb-lua5.4", "bulk")
  local s = r and 1 / r.rate
  verdict("bulk import of 100 000 todos < 2 s", r and s < 2,
    r and ("%.2f s per import (mean of %d; raw libpq %.2f s)"):format(s, r.ops,
      get("raw", "bulk") and 1 / get("raw", "bulk").rate or 0 / 0) or "–",
    s and ("by %.2f s"):format(s - 2))
end
for _, m in ipairs(mem) do
  local g = m.rss1 - m.rss0
  verdict(("no RSS growth over %s operations (%s)"):format(num(m.ops), NAME[m.impl] or m.impl),
    g <= 1024, ("%+d KB (%.1f → %.1f MB)"):format(g, m.rss0 / 1024, m.rss1 / 1024), ("(%+d KB)"):format(g))
end
if R.sqlmodel then
  local parts = {}
  for _, w in ipairs(WORKLOADS) do
    local x = vs_sqlmodel("tododb-lua5.4", w)
    if x then parts[#parts + 1] = ("%s %.1f×"):format(w, x) end
  end
  p("| tododb vs SQLModel, every workload (reported) | %s | reported |", table.concat(parts, ", "))
end
p ""

-- ---- why: evidence -----------------------------------------------------------------
p "## Analysis"
p ""
do
  local a, b = get("tododb-lua5.4", "get"), get("raw", "get")
  if a and b then
    p("**Single operations** are one round trip either way, so the server and the socket dominate:")
    p("get_todo takes %s µs per op in tododb and %s µs in raw libpq (median rounds). What tododb adds",
      num(1e6 / a.rate), num(1e6 / b.rate))
    p("is client CPU: %s µs per get_todo against %s µs for the C loop (CPU time of the client process;",
      num(a.cpu, 1), num(b.cpu, 1))
    p "on a loaded machine it swings with the load, so compare within a round)."
    p ""
  end
end
if next(prof) then
  p "**Where the client's instructions go** (`valgrind --tool=callgrind`; per operation = (Ir of a"
  p "3 000-op run − Ir of a 1 000-op run) / 2 000, so start-up, id loading and warm-up cancel; the"
  p "Lua figure includes the benchmark loop itself and its final sort of the latencies):"
  p ""
  p("| operation | raw libpq Ir/op | tododb Ir/op | extra | libpq (raw / tododb) | Lua VM"
    .. " | libc (raw / tododb) | core.so |")
  p "|---|--:|--:|--:|--:|--:|--:|--:|"
  for _, w in ipairs { "get", "create", "list" } do
    local r, l = prof[w] and prof[w].raw, prof[w] and prof[w].lua
    if r and l and r.total and l.total then
      p("| %s | %s | %s | +%s | %s / %s | %s | %s / %s | %s |", WNAME[w], num(r.total), num(l.total),
        num(l.total - r.total), num(obj_ir(r, "^libpq")), num(obj_ir(l, "^libpq")),
        num(obj_ir(l, "^lua5%.4$")), num(obj_ir(r, "^libc")), num(obj_ir(l, "^libc")),
        num(obj_ir(l, "^core%.so")))
    end
  end
  p ""
  local l = prof.list and prof.list.lua
  if l and l.total then
    local printf = fn_ir(l, "printf") + fn_ir(l, "^_IO_") + fn_ir(l, "strchrnul")
    local strtol = fn_ir(l, "strto")
    p("Per list_todos page, libc's printf machinery (`__vfprintf_internal`, `_IO_*`, `__strchrnul`) costs")
    p("%s Ir and `strtoll` %s Ir of tododb's %s: these are `snprintf(out, 32, \"%%s\", …)` in",
      num(printf), num(strtol), num(l.total))
    p "`copy_time` (csrc/todo.c, two per Todo) and `tdb_parse_int8` (csrc/conn.c, id and user_id per"
    p "Todo). The raw loop only touches the values. Top functions, tododb list_todos, per page:"
    p ""
    p "```"
    p("%10s  %-36s %s", "Ir/page", "function", "object")
    for i = 1, math.min(14, #l.fns) do
      local f = l.fns[i]
      p("%10s  %-36s %s", num(f.ir), f.fn, f.obj)
    end
    p "```"
    p "(`lua5.4` is Debian's stripped interpreter: its internal functions show as addresses.)"
    p ""
  end
end
if exec then
  local a, b = get("tododb-lua5.4", "bulk"), get("raw", "bulk")
  p("**Bulk import.** The server side of one 100 000-row import, as role tododb with row-level")
  p("security on (`EXPLAIN ANALYZE` of the same INSERT … SELECT FROM unnest, rolled back): %s ms,",
    num(exec))
  p("of which the foreign-key trigger `todos_user_id_fkey` takes %s ms (%.0f%%). PostgreSQL checks",
    fk and num(fk) or "?", fk and fk / exec * 100 or 0)
  p "`REFERENCES users` once per inserted row (an SPI query `SELECT 1 … FOR KEY SHARE` on the same"
  if exec_nofk then
    p("users row, 100 000 times). The same INSERT with the constraint dropped (in a rolled-back")
    p("transaction) takes %s ms.", num(exec_nofk))
  else
    p "users row, 100 000 times)."
  end
  if a and b then
    p("Client side, tododb spends %s ms of CPU per import (validation, three array literals built",
      num(a.cpu / 1000))
    p("a character at a time with `luaL_addchar`) against %s ms in the C loop; raw libpq with the",
      num(b.cpu / 1000))
    p("same statement needs %.2f s per import in this run, so the 2 s target is decided by the",
      1 / b.rate)
    p "server's per-row foreign-key check and the machine's load, not by the client."
  end
  p ""
  p "```"
  for l in explain:gmatch "[^\n]+" do
    if not l:match "^%s*$" and not l:match "^BEGIN" and not l:match "^ROLLBACK" then p("%s", l) end
  end
  p "```"
  p ""
end
do
  local c, plan = get("tododb-lua5.4", "count"), slurp "count-explain.txt"
  if c and plan:match "Execution Time" then
    p("**count_todos** is the server's work: %s ms per count in tododb, %s ms in raw libpq. The",
      ms(1000 / c.rate), get("raw", "count") and ms(1000 / get("raw", "count").rate) or "–")
    p "prepared statement's generic plan (`($2::bool IS NULL OR completed = $2)` becomes a filter):"
    p ""
    p "```"
    for l in plan:gmatch "[^\n]+" do
      if not l:match "^%s*$" and not l:match "^%(%d+ rows%)" then p("%s", l) end
    end
    p "```"
    p ""
  end
end
p("Re-run `make bench` for fresh numbers; `make bench QUICK=1` gives a rough picture"
  .. " in about a minute on an idle machine.")

-- The login timing section comes from bench/login_timing, not this run: kept.
local old = io.open(dest)
local kept = old and old:read("*a"):match "\n(## Login timing\n.*)$"
if old then old:close() end
if kept then p("") p("%s", (kept:gsub("\n+$", ""))) end

local f = assert(io.open(dest, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()

print(("%-8s %-15s %8s %10s %9s %9s %8s %7s"):format("workload", "impl", "ops", "ops/s", "p50 ms",
  "p99 ms", "RSS MB", "x raw"))
for _, l in ipairs(console) do print(l) end
for _, v in ipairs(verdicts) do
  print(("target: %-62s %s  %s"):format(v.name, v.ok == nil and "n/a" or v.ok and "met" or "MISSED", v.measured))
end
print("wrote " .. dest)
