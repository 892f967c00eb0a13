-- bench/report.lua: turns what bench/run measured into bench/RESULTS.md and a
-- summary on stdout.   lua5.4 bench/report.lua build/bench bench/RESULTS.md
-- RESULTS.md is made of blocks, one per part of bench/run (<!-- bench:NAME -->
-- … <!-- /bench:NAME -->): the parts of this run (meta.tsv "parts") get new
-- blocks, the others keep theirs from the run that made them; the "Login
-- timing" section (bench/login_timing, by hand) is kept as it is.
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
local IMPLS = { "floor", "raw", "tododb-lua5.4", "tododb-luajit", "sqlmodel" }
local NAME = { floor = "natural floor (C)", raw = "tododb's statements (C)",
               ["tododb-lua5.4"] = "tododb, Lua 5.4", ["tododb-luajit"] = "tododb, LuaJIT",
               sqlmodel = "SQLModel" }
local WORKLOADS = { "get", "create", "toggle", "list", "deep", "count", "auth", "bulk", "mixed" }
local WNAME = { get = "get_todo by id", create = "create_todo", toggle = "toggle_todo",
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
local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end
-- ops/s of impl over base's (p50: latency of impl over base's), one ratio per
-- round in round order: round r of both ran back to back, under the same load.
local function per_round(runs, impl, base, w, field)
  local a, b = runs[impl] and runs[impl][w], runs[base] and runs[base][w]
  if not a or not b or w == "mixed" then return {} end
  local by, rs, t = {}, {}, {}
  for _, y in ipairs(b) do by[y.round] = y end
  for _, x in ipairs(a) do if by[x.round] then rs[#rs + 1] = x end end
  table.sort(rs, function(x, y) return x.round < y.round end)
  for _, x in ipairs(rs) do
    local y = by[x.round]
    t[#t + 1] = field == "p50" and x.p50 / y.p50 or (x.ops / x.secs) / (y.ops / y.secs)
  end
  return t
end
-- With several rounds, the median of the per-round ratios.
local function paired(runs, impl, base, w, field)
  local t = per_round(runs, impl, base, w, field)
  return #t > 0 and median { table.unpack(t) } or nil
end
-- The per-round ratios of ops/s as text: "0.84, 0.86, 0.88".
local function listed(t)
  local out = {}
  for i, v in ipairs(t) do out[i] = ("%.2f"):format(v) end
  return table.concat(out, ", ")
end
local function vs(impl, base, w)
  local x = paired(raw, impl, base, w)
  if x then return x end
  local a, b = get(impl, w), get(base, w)
  return a and b and a.rate / b.rate
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
local explain = slurp "bulk-explain.txt"
local fkname, fk = explain:match "Trigger for constraint (%S+): time=([%d%.]+)"
fk = tonumber(fk)
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

local out = {}
local function p(fmt, ...) out[#out + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end
local console, verdicts = {}, {}
local function verdict(name, ok, measured, miss)
  p("| %s | %s | %s |", name, measured,
    ok == nil and "not measured" or ok and "**met**" or ("**missed** " .. (miss or "")))
  verdicts[#verdicts + 1] = { name = name, ok = ok, measured = measured }
end
local function ratio(x) return x and ("%.2f×"):format(x) or "–" end
local ran = {}
for part in (meta.parts or ""):gmatch "%S+" do ran[part] = true end
local blocks, ORDER = {}, { "machine", "ops", "memory", "profile", "http", "citus", "batch" }
local function stamp()
  p("_Part of the run of %s (%s mode, %s s in all; %s)._", meta.date or "?", meta.mode or "?",
    meta.elapsed or "?", meta.load or "load not recorded")
  p ""
end

-- ---- machine ---------------------------------------------------------------------
p "| machine | |"
p "|---|---|"
p("| CPU | %s, %s cores (`nproc`) |", meta.cpu or "?", meta.nproc or "?")
p("| kernel | %s |", meta.kernel or "?")
p("| PostgreSQL | %s, embedded cluster (`scripts/devdb`), unix socket; %s |", meta.postgres or "?", meta.pgconf or "")
p("| Lua | %s; %s |", meta.lua or "?", meta.luajit or "no LuaJIT")
p("| libpq / libsodium | %s / %s |", meta.libpq or "?", meta.libsodium or "?")
p("| C compiler | %s, `-O2` |", meta.cc or "?")
p("| nginx / wrk | %s (Debian, lua-nginx-module) / %s |", meta.nginx or "?", meta.wrk or "?")
if meta.pgmoon then p("| pgmoon | %s |", meta.pgmoon) end
if meta.python then p("| SQLModel stack | %s |", meta.python) end
p("| data | database `tododb_bench`: %s, plus a bulk-import user |", meta.seed or "?")
p("| latest run | %s, parts: %s; %s |", meta.date or "?", meta.parts or "?", meta.load or "?")
p ""
blocks.machine, out = out, {}

-- ---- ops -------------------------------------------------------------------------
if ran.ops and next(R) then
  p "## All workloads"
  p ""
  stamp()
  p "ops/s is operations per second of wall time on one connection (mixed: both processes"
  p "together). p50/p99 are per-operation latencies. Peak RSS is the client process's"
  p "(`VmHWM`; mixed: the larger of the two). CPU is the client process's CPU time per"
  p "operation. Two C loops on libpq alone (`bench/raw_libpq.c`) are the baselines, each one"
  p "pipelined round trip per operation with `set_config` in it: the **natural floor**, the"
  p "statements a C programmer would write for the same results (plain columns, text results,"
  p "every value read into C values), and **tododb's statements** (csrc/sql.c, binary results,"
  p "values only touched). **÷ floor** and **÷ C stmts** are ops/s over theirs (1.00 = as fast;"
  p("with %s rounds, the median of the per-round ratios: the loops ran back to back in each round).",
    meta.rounds or "1")
  p ""
  p("| workload | implementation | ops | ops/s | p50 ms | p99 ms | peak RSS MB | client CPU µs/op"
    .. " | ÷ floor | ÷ C stmts |")
  p "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
  for _, w in ipairs(WORKLOADS) do
    for _, impl in ipairs(IMPLS) do
      local r = get(impl, w)
      if r then
        local ops = num(r.ops) .. (r.rounds and r.rounds > 1 and (" ×" .. r.rounds) or "")
          .. (r.procs and (" (" .. r.procs .. "×" .. num(r.ops / r.procs) .. ")") or "")
        local f = impl ~= "floor" and vs(impl, "floor", w)
        local c = impl ~= "floor" and impl ~= "raw" and vs(impl, "raw", w)
        p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", WNAME[w], NAME[impl], ops,
          num(r.rate, r.rate < 100 and 2 or 0), ms(r.p50), ms(r.p99), num(r.rss / 1024, 1),
          num(r.cpu, r.cpu < 1000 and 1 or 0), f and ("%.2f"):format(f) or "–",
          c and ("%.2f"):format(c) or "–")
        console[#console + 1] = ("%-8s %-15s %8d %10s %9s %9s %8.1f %7s"):format(w, impl, r.ops,
          num(r.rate, r.rate < 100 and 2 or 0), ms(r.p50), ms(r.p99), r.rss / 1024,
          f and ("%.2f"):format(f) or "-")
      end
    end
  end
  p ""
  p "Counts marked ×N are per round, N rounds alternating between implementations; the row"
  p "shows the median round by throughput. The bulk import and login rows count imports and"
  p "logins; SQLModel runs a single import (quick mode: none). The natural floor covers the"
  p "workloads with an obvious hand-written statement (not logins, bulk imports or the mix)."
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

-- pgbench
  local pgb = slurp "pgbench.txt"
  local tps = tonumber(pgb:match "tps = ([%d%.]+)")
  local pglat = tonumber(pgb:match "latency average = ([%d%.]+) ms")
  p "## The server's own ceiling"
  p ""
  if tps then
    p("`pgbench -S -M prepared`, 1 client, scale 1 (database `tododb_pgbench`): **%s tps**, latency average %s ms.",
      num(tps), ms(pglat))
    local g, t = get("floor", "get"), get("tododb-lua5.4", "get")
    if g and t then
      p("It ran just before the get_todo rounds. One pgbench transaction is one prepared SELECT in")
      p("its own round trip; a tododb operation is set_config + the statement in one pipelined round")
      p("trip (two statements, one transaction, RLS), so the natural floor's get reaches %s ops/s (%.0f%%",
        num(g.rate), g.rate / tps * 100)
      p("of pgbench) and tododb's %s ops/s (%.0f%%).", num(t.rate), t.rate / tps * 100)
    end
  else
    p("pgbench did not run: %s", pgb ~= "" and (pgb:gsub("\n", " ")) or "no output")
  end
  p ""


  p "## Targets: one connection (issue 11, DESIGN.md §6)"
  p ""
  p "| target | measured | verdict |"
  p "|---|---|---|"
  for _, w in ipairs { "list", "get", "create", "toggle" } do
    local want = w == "list" and 0.7 or 0.87
    for _, impl in ipairs { "tododb-lua5.4", "tododb-luajit" } do
      local x = vs(impl, "floor", w)
      local a, b = get(impl, w), get("floor", w)
      local q = paired(raw, impl, "floor", w, "p50")
      verdict(("%s ≥ %.2f× the natural floor's ops/s (%s)"):format(WNAME[w], want, NAME[impl]),
        x and x >= want, x and ("%.2f× (median of per-round ratios %s; median round %s vs %s ops/s);"
          .. " p50 latency %.2f×"):format(x, listed(per_round(raw, impl, "floor", w)), num(a.rate), num(b.rate),
          q or a.p50 / b.p50) or "–",
        x and ("by %.0f%%"):format((1 - x / want) * 100))
    end
  end
  local function median_of(impl, w, field)
    local t = {}
    for _, x in ipairs(raw[impl] and raw[impl][w] or {}) do t[#t + 1] = x[field] end
    return #t > 0 and median(t) or nil
  end
  local function rounds_of(impl, w, field)
    local t = {}
    for _, x in ipairs(raw[impl] and raw[impl][w] or {}) do t[#t + 1] = ms(x[field]) end
    return table.concat(t, ", ")
  end
  for _, w in ipairs { "list", "deep" } do
    local p99, p50 = median_of("tododb-lua5.4", w, "p99"), median_of("tododb-lua5.4", w, "p50")
    local n = raw["tododb-lua5.4"] and raw["tododb-lua5.4"][w] and #raw["tododb-lua5.4"][w] or 0
    verdict(("list_todos page of 50, 10 000 todos/user, p99 < 2 ms (%s)")
        :format(w == "list" and "first page" or "deep page"),
      p99 and p99 < 2, p99 and ("p99 %s ms, p50 %s ms (median of %d rounds;"
        .. " p99 per round: tododb %s; floor %s)"):format(
        ms(p99), ms(p50), n, rounds_of("tododb-lua5.4", w, "p99"), rounds_of("floor", w, "p99")) or "–",
      p99 and ("by %s ms"):format(ms(p99 - 2)))
  end
  do
    local r = get("tododb-lua5.4", "bulk")
    local s = r and 1 / r.rate
    verdict("bulk import of 100 000 todos < 2 s", r and s < 2,
      r and ("%.2f s per import (mean of %d; tododb's statement in C %.2f s)"):format(s, r.ops,
        get("raw", "bulk") and 1 / get("raw", "bulk").rate or 0 / 0) or "–",
      s and ("by %.2f s"):format(s - 2))
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
  p "## Analysis"
  p ""
  do
    local a, b = get("tododb-lua5.4", "get"), get("floor", "get")
    if a and b then
      p("**Single operations** are one round trip either way, so the server and the socket dominate:")
      p("get_todo takes %s µs per op in tododb and %s µs in the natural floor (median rounds). What tododb adds",
        num(1e6 / a.rate), num(1e6 / b.rate))
      p("is client CPU: %s µs per get_todo against %s µs for the C loop (CPU time of the client process;",
        num(a.cpu, 1), num(b.cpu, 1))
      p "on a loaded machine it swings with the load, so compare within a round)."
      p ""
    end
  end
  -- A missed one-connection target: what tododb adds, from the CPU times and the profile.
  for _, w in ipairs { "get", "create", "toggle", "list" } do
    local want = w == "list" and 0.7 or 0.87
    for _, impl in ipairs { "tododb-lua5.4", "tododb-luajit" } do
      local x, a, b = vs(impl, "floor", w), get(impl, w), get("floor", w)
      if x and x < want and a and b then
        local pr = prof[w]
        local r, l = pr and pr.floor, pr and pr.lua
        local rounds = per_round(raw, impl, "floor", w)
        local best = math.max(0, table.unpack(rounds))
        p("**Why %s (%s) reached %.2f× and not %.2f×.** One operation is one round trip of %s µs in"
          .. " the floor (median round); tododb's client spent %s µs of CPU per operation against the"
          .. " floor's %s µs%s. The per-round ratios were %s: %s",
          WNAME[w], NAME[impl], x, want, num(1e6 / b.rate), num(a.cpu, 1), num(b.cpu, 1),
          r and l and r.total and l.total and (" (callgrind, Lua 5.4: %s instructions per operation"
            .. " against %s: Lua VM %s including the benchmark loop, core.so %s, libpq %+d, libc %+d)")
            :format(num(l.total), num(r.total), num(obj_ir(l, "^lua5%.4$")),
            num(obj_ir(l, "^core%.so")), obj_ir(l, "^libpq") - obj_ir(r, "^libpq"),
            obj_ir(l, "^libc") - obj_ir(r, "^libc")) or "",
          listed(rounds),
          best >= want and ("the best round met the target (%.2f×), so the miss is within the"
              .. " spread between rounds; what tododb adds is the interpreter's share of a call (argument"
              .. " checks, the method call, building the result object), which the C loop does not have.")
              :format(best)
            or "what remains is the interpreter's share of a call (argument checks, the method call,"
              .. " building the result object), which the C loop does not have.")
        p ""
      end
    end
  end
  if exec then
    local a, b = get("tododb-lua5.4", "bulk"), get("raw", "bulk")
    p("**Bulk import.** The server side of one 100 000-row import, as role tododb with row-level")
    p("security on (`EXPLAIN ANALYZE` of the same INSERT … SELECT FROM unnest, rolled back): %s ms,",
      num(exec))
    p("of which the foreign-key trigger `%s` takes %s ms (%.0f%%). PostgreSQL checks",
      fkname or "?", fk and num(fk) or "?", fk and fk / exec * 100 or 0)
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
      p("a character at a time with `luaL_addchar`) against %s ms in the C loop; the C loop with the",
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
      p("**count_todos** is the server's work: %s ms per count in tododb, %s ms in the natural floor. The",
        ms(1000 / c.rate), get("floor", "count") and ms(1000 / get("floor", "count").rate) or "–")
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


  blocks.ops, out = out, {}
end

-- ---- memory -------------------------------------------------------------------------
local mem = {}
for l in lines "memory.tsv" do
  local t = split(l)
  mem[#mem + 1] = { impl = t[2], ops = tonumber(t[3]), secs = tonumber(t[4]), rss0 = tonumber(t[5]),
    rss1 = tonumber(t[6]), heap0 = tonumber(t[7]), heap1 = tonumber(t[8]), heapgc = tonumber(t[9]),
    todo = tonumber(t[10]), user = tonumber(t[11]), samples = t[12] }
end
if ran.memory and mem[1] then
  p "## Memory"
  p ""
  stamp()
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
  for _, m in ipairs(mem) do
    local g = m.rss1 - m.rss0
    p("RSS over %s operations (%s): %+d KB (%.1f → %.1f MB): target no growth **%s**.", num(m.ops),
      NAME[m.impl] or m.impl, g, m.rss0 / 1024, m.rss1 / 1024, g <= 1024 and "met" or "missed")
    verdicts[#verdicts + 1] = { name = ("no RSS growth over %s operations (%s)"):format(num(m.ops),
      NAME[m.impl] or m.impl), ok = g <= 1024, measured = ("%+d KB"):format(g) }
  end
  p ""
  blocks.memory, out = out, {}
end

-- ---- profile -------------------------------------------------------------------------
if ran.profile and next(prof) then
  p "## Where the client's instructions go"
  p ""
  stamp()
  p "`valgrind --tool=callgrind`, per operation = (Ir of a 3N-op run − Ir of an N-op run) / 2N,"
  p "so start-up, id loading and warm-up cancel; the Lua figure includes the benchmark loop."
  p ""
  p("| operation | floor Ir/op | tododb Ir/op | extra | libpq (floor / tododb) | Lua VM"
    .. " | libc (floor / tododb) | core.so |")
  p "|---|--:|--:|--:|--:|--:|--:|--:|"
  for _, w in ipairs { "get", "create", "toggle", "list" } do
    local r, l = prof[w] and prof[w].floor, prof[w] and prof[w].lua
    if r and l and r.total and l.total then
      p("| %s | %s | %s | %+d | %s / %s | %s | %s / %s | %s |", WNAME[w], num(r.total), num(l.total),
        l.total - r.total, num(obj_ir(r, "^libpq")), num(obj_ir(l, "^libpq")),
        num(obj_ir(l, "^lua5%.4$")), num(obj_ir(r, "^libc")), num(obj_ir(l, "^libc")),
        num(obj_ir(l, "^core%.so")))
    end
  end
  p ""
  for _, name in ipairs { "lua", "floor" } do
    local l = prof.list and prof.list[name]
    if l and l.total then
      p("Top functions per list_todos page, %s:", name == "lua" and "tododb (Lua 5.4)" or "the natural floor")
      p ""
      p "```"
      p("%10s  %-36s %s", "Ir/page", "function", "object")
      for i = 1, math.min(14, #l.fns) do
        local f = l.fns[i]
        p("%10s  %-36s %s", num(f.ir), f.fn, f.obj)
      end
      p "```"
      p ""
    end
  end
  p "(`lua5.4` is Debian's stripped interpreter: its internal functions show as addresses.)"
  p ""
  blocks.profile, out = out, {}
end

-- ---- http -----------------------------------------------------------------------------
-- http.tsv: server conns op round requests secs rps p50 p99 non2xx errors, then CPU
-- per request (µs: nginx, postgres, wrk, the machine), idle %, context switches/request.
local HR = {}                      -- HR[server][conns][op] = { run, … } (one per round)
local any_cpu = false              -- the runs carry where the CPU went
for l in lines "http.tsv" do
  local t = split(l)
  local s, c, op = t[1], tonumber(t[2]), t[3]
  HR[s] = HR[s] or {}
  HR[s][c] = HR[s][c] or {}
  HR[s][c][op] = HR[s][c][op] or {}
  local x = { round = tonumber(t[4]), requests = tonumber(t[5]), secs = tonumber(t[6]), rps = tonumber(t[7]),
    p50 = tonumber(t[8]), p99 = tonumber(t[9]), non2xx = tonumber(t[10]), errors = tonumber(t[11]),
    nginx = tonumber(t[12]), pg = tonumber(t[13]), wrk = tonumber(t[14]), busy = tonumber(t[15]),
    idle = tonumber(t[16]), cs = tonumber(t[17]) }
  x.ok = x.non2xx + x.errors == 0
  if x.busy then
    x.other = math.max(0, x.busy - x.nginx - x.pg - x.wrk)
    any_cpu = true
  end
  table.insert(HR[s][c][op], x)
end
local function hruns(s, c, op) return HR[s] and HR[s][c] and HR[s][c][op] end
-- The median round of a cell by requests/s (failed rounds never count).
local function hmid(s, c, op)
  local t = {}
  for _, x in ipairs(hruns(s, c, op) or {}) do t[#t + 1] = x end
  if #t == 0 then return nil end
  table.sort(t, function(a, b) return (a.ok and a.rps or -1) < (b.ok and b.rps or -1) end)
  return t[math.ceil(#t / 2)]
end
local PGMOON = { "pgmoon1", "pgmoon4", "pgmoon16" }
-- Server s's successful run of round r.
local function hround(s, c, op, r)
  for _, x in ipairs(hruns(s, c, op) or {}) do
    if x.round == r and x.ok then return x end
  end
end
-- pgmoon's best run of round r (by requests/s).
local function hbest(c, op, r)
  local b
  for _, s in ipairs(PGMOON) do
    local x = hround(s, c, op, r)
    if x and (not b or x.rps > b.rps) then b = x end
  end
  return b
end
-- The median over rounds of f(tododb's run, the baseline's run of the same
-- round): base(c, op, round), pgmoon's best run by default.
local function hratio(s, c, op, f, base)
  local t = {}
  for _, x in ipairs(hruns(s, c, op) or {}) do
    local b = (base or hbest)(c, op, x.round)
    if b and x.ok then t[#t + 1] = f(x, b) end
  end
  return #t > 0 and median(t) or nil
end
local function hbest_mid(c, op)     -- the pgmoon setting whose median round is fastest
  local b, bs
  for _, s in ipairs(PGMOON) do
    local x = hmid(s, c, op)
    if x and x.ok and (not b or x.rps > b.rps) then b, bs = x, s end
  end
  return b, bs
end
local SERVERS = { "thread", "thread2", "worker", "pgmoon1", "pgmoon4", "pgmoon16" }
local TODODB = { "thread", "thread2", "worker" }
local SNAME = { thread = "tododb, thread mode", thread2 = "tododb, thread mode, 2 calls/worker",
  worker = "tododb, worker mode",
  pgmoon1 = "pgmoon, pool 1/worker", pgmoon4 = "pgmoon, pool 4/worker", pgmoon16 = "pgmoon, pool 16/worker" }
local ONAME = { list = "list, page of 50", get = "get by id", create = "create" }
local HTARGET = { list = 1.5, get = 1.3, create = 1.2 }
local skip_http = slurp "http-skip.txt"
if ran.http and next(HR) then
  local rounds = tonumber(meta.http_rounds or "1") or 1
  p "## HTTP: the JSON API on nginx against pgmoon"
  p ""
  stamp()
  p("`wrk -t2` for %s s per cell (after a 1 s warm-up), %s against examples/nginx (Debian's nginx +"
    .. " lua-nginx-module, 2 workers, the LuaJIT build) in thread mode (the default: calls on nginx's",
    meta.http_secs or "?", rounds > 1 and ("in %d rounds (the servers in a rotating order within each)"):format(rounds)
      or "in one round")
  p("thread pool, %s Lua VMs per worker of which %s run%s database calls at a time: tododb.nginx's",
    meta.http_vms or "4", meta.http_calls or "?", meta.http_calls == "1" and "s" or "")
  p "defaults), the same with 2 database calls at a time per worker (`TODODB_NGINX_CALLS=2`), worker"
  p "mode (1 connection per worker), and against `bench/pgmoon/api.lua` in the"
  p "same nginx build with the same workers: pgmoon on cosockets with a keepalive pool of 1 (as"
  p "many connections in use as tododb in worker mode), 4 and 16 connections per worker, one"
  p "simple-query round trip per request carrying `set_config('tododb.user_id', …, true)` and the"
  p "statement, lua-cjson for JSON. Same database and data (`tododb_bench`, 10 users × 10 000"
  p "todos, a random user per request). Authentication is the same on both: the same HS256 bearer"
  p "token, verified by the same function (`tododb.user_id_from_token`). spec/69-bench_pgmoon_spec.lua"
  p "checks that both answer the same JSON. Rows show each server's median round (by requests/s)."
  p "**÷ pgmoon** is requests/s over pgmoon's with one connection per worker, **÷ best** over the best"
  p "of the three pgmoon settings of the same round, **p99 ÷** the p99 latency over that best"
  p "pgmoon's; with several rounds each ratio is the median of the per-round ratios."
  if skip_http ~= "" then p("") p("pgmoon was not available, so only tododb ran: %s", (skip_http:gsub("%s+$", ""))) end
  p ""
  p "| request | connections | server | requests/s | p50 ms | p99 ms | ÷ pgmoon | ÷ best | p99 ÷ pgmoon |"
  p "|---|--:|---|--:|--:|--:|--:|--:|--:|"
  for _, op in ipairs { "list", "get", "create" } do
    for _, c in ipairs { 16, 64 } do
      for _, s in ipairs(SERVERS) do
        local x = hmid(s, c, op)
        if x then
          local bad = not x.ok and (" (%d non-2xx, %d socket errors)"):format(x.non2xx, x.errors) or ""
          local mine = not s:match "^pgmoon"
          local rps = function(y, b) return y.rps / b.rps end
          p("| %s | %d | %s%s | %s | %s | %s | %s | %s | %s |", ONAME[op], c, SNAME[s], bad, num(x.rps),
            ms(x.p50), ms(x.p99),
            mine and ratio(hratio(s, c, op, rps, function(...) return hround("pgmoon1", ...) end)) or "",
            mine and ratio(hratio(s, c, op, rps)) or "",
            mine and ratio(hratio(s, c, op, function(y, b) return y.p99 / b.p99 end)) or "")
          console[#console + 1] = ("http %-6s c%-3d %-9s %9s rps  p50 %7s  p99 %7s%s"):format(op, c, s,
            num(x.rps), ms(x.p50), ms(x.p99), bad)
        end
      end
    end
  end
  p ""
  -- Where the CPU went: per request, in each server's median round.
  if any_cpu then
    p "### Where the CPU goes"
    p ""
    p "CPU time per request during each median round, from `/proc` before and after the wrk run:"
    p "the nginx server under test (master, workers and their thread pools), the PostgreSQL server"
    p "(postmaster and backends), wrk itself, every other process (**other**) and the whole machine"
    p "(**all**: busy time of every core, per request); **idle** is the machine's idle share,"
    p "**switches** its context switches"
    p "per request. When idle is near 0 the run was bound by the two cores, and requests/s is"
    p "close to 2 s of CPU per second over **all**."
    p ""
    p("| request | connections | server | requests/s | nginx µs | PostgreSQL µs | wrk µs | other µs"
      .. " | all µs | idle | switches |")
    p "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    for _, op in ipairs { "list", "get", "create" } do
      for _, c in ipairs { 16, 64 } do
        for _, s in ipairs { "thread", "thread2", "worker", "pgmoon16" } do
          local x = hmid(s, c, op)
          if x and x.busy then
            p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s %% | %s |", ONAME[op], c, SNAME[s], num(x.rps),
              num(x.nginx), num(x.pg), num(x.wrk), num(x.other),
              num(x.busy), num(x.idle, 1), num(x.cs, 1))
          end
        end
      end
    end
    p ""
  end
  if HR.pgmoon1 then
    p "### Targets: HTTP (issue 11)"
    p ""
    p "| target | measured | verdict |"
    p "|---|---|---|"
    for _, op in ipairs { "list", "get", "create" } do
      for _, c in ipairs { 16, 64 } do
        local b = hbest_mid(c, op)
        for _, s in ipairs(TODODB) do
          local x = hmid(s, c, op)
          local r = hratio(s, c, op, function(y, e) return y.rps / e.rps end)
          verdict(("%s, %d connections, %s ≥ %.1f× pgmoon's best requests/s"):format(ONAME[op], c,
              SNAME[s], HTARGET[op]),
            r and r >= HTARGET[op],
            r and ("%.2f× (median round %s vs %s requests/s)"):format(r, num(x.rps), num(b and b.rps)) or "–",
            r and ("by %.0f%%"):format((1 - r / HTARGET[op]) * 100))
        end
        for _, s in ipairs { "thread", "thread2" } do
          local x = hmid(s, c, op)
          local r = hratio(s, c, op, function(y, e) return y.p99 / e.p99 end)
          verdict(("%s, %d connections, %s p99 ≤ 1.5× the best pgmoon's"):format(ONAME[op], c, SNAME[s]),
            r and r <= 1.5, r and ("%.2f× (median round %s vs %s ms)"):format(r, ms(x.p99), ms(b and b.p99)) or "–",
            r and ("by %.0f%%"):format((r / 1.5 - 1) * 100))
        end
      end
    end
    p ""
    -- Why a throughput target was missed, from the CPU table: a CPU-bound run
    -- does 2 cores' worth of CPU per second, so the ratio of requests/s is the
    -- inverse ratio of CPU per request.
    for _, op in ipairs { "list", "get", "create" } do
      for _, c in ipairs { 16, 64 } do
        local b, bs = hbest_mid(c, op)
        for _, s in ipairs(TODODB) do
          local x = hmid(s, c, op)
          local r = hratio(s, c, op, function(y, e) return y.rps / e.rps end)
          if r and r < HTARGET[op] and x.busy and b and b.busy then
            local w = hmid("worker", c, op)
            p("**Why %s at %d connections, %s, reached %.2f× and not %.1f×.** %s It used %s µs of CPU"
              .. " per request (nginx %s, PostgreSQL %s, wrk %s) against pgmoon's %s µs (%s: nginx %s,"
              .. " PostgreSQL %s, wrk %s); a run bound by the cores needs at most %s µs per request for"
              .. " the target.%s%s",
              ONAME[op], c, SNAME[s], r, HTARGET[op],
              x.idle < b.idle + 5 and ("Both runs were bound by the two cores (idle %.1f %% against"
                  .. " pgmoon's %.1f %%; the counters include the moments around wrk's start and end,"
                  .. " about 5 %% of a run)."):format(x.idle, b.idle)
                or ("The cores were idle %.1f %% of the run (pgmoon's: %.1f %%): requests waited for"
                  .. " something other than the CPU."):format(x.idle, b.idle),
              num(x.busy), num(x.nginx), num(x.pg), num(x.wrk), num(b.busy), SNAME[bs], num(b.nginx),
              num(b.pg), num(b.wrk), num(b.busy / HTARGET[op]),
              x.other > 0.1 * x.busy and (" Processes outside the benchmark took %s µs per request of"
                .. " it."):format(num(x.other)) or "",
              s:match "^thread" and w and w.cs and x.cs > w.cs and (" Thread mode switches context %.1f"
                .. " times per request against worker mode's %.1f: each call is handed to a pool"
                .. " thread and its answer back to the event loop, and the extra nginx CPU (%s µs"
                .. " against worker mode's %s) is those hand-offs."):format(x.cs, w.cs, num(x.nginx),
                num(w.nginx)) or "")
            p ""
          end
        end
      end
    end
  end
  blocks.http, out = out, {}
end

-- ---- citus ------------------------------------------------------------------------------
local function runs_of(file)
  local t = {}
  for l in lines(file) do
    local x = split(l)
    t[x[1]] = t[x[1]] or {}
    t[x[1]][x[3]] = t[x[1]][x[3]] or {}
    table.insert(t[x[1]][x[3]], { round = x[2], ops = tonumber(x[4]), secs = tonumber(x[5]),
      p50 = tonumber(x[6]), p99 = tonumber(x[7]) })
  end
  return t
end
local RLS, CIT = runs_of "rls.tsv", runs_of "citus.tsv"
local rmeta = {}
for l in lines "rls-meta.tsv" do local t = split(l); rmeta[t[1]] = t[2] end
if ran.citus and next(RLS) then
  p "## Citus, and what the Citus-ready session mechanism costs on plain PostgreSQL"
  p ""
  stamp()
  p "Row-level security needs `tododb.user_id` in force on whichever node runs the statement:"
  p "on Citus that takes `BEGIN; SET LOCAL …; statement; COMMIT` (set_config() stays on the"
  p "coordinator); elsewhere set_config() in the statement's pipeline is enough. The runner"
  p("(csrc/conn.c) probes for Citus once per connection and picks; on this server tododb reports"
    .. " `rls_setting = %s`. tododb's statements in C, one connection, each variant alternating"
    .. " op by op with set_config in one process, so that both meet the same load (median of the"
    .. " rounds' ratios of the summed latencies):",
    rmeta.rls_setting or "?")
  p ""
  p "| workload | RLS setting | ops/s (median round) | p50 ms | ÷ set_config (time per op) |"
  p "|---|---|--:|--:|--:|"
  local worst
  for _, w in ipairs { "get", "list", "create" } do
    for _, v in ipairs { "set_config", "runner", "set_local" } do
      local list = RLS[v] and RLS[v][w]
      if list then
        table.sort(list, function(a, b) return a.ops / a.secs < b.ops / b.secs end)
        local m = list[math.ceil(#list / 2)]
        local x = v ~= "set_config" and paired(RLS, v, "set_config", w)
        local t = x and 1 / x
        if v == "runner" and t then worst = math.max(worst or 0, t) end
        p("| %s | %s | %s | %s | %s |", WNAME[w], v == "runner" and "the runner's choice" or v,
          num(m.ops / m.secs), ms(m.p50), t and ("%.3f×"):format(t) or "")
      end
    end
  end
  p ""
  p "| target | measured | verdict |"
  p "|---|---|---|"
  verdict("plain PostgreSQL: the runner's RLS path ≤ 1.05× the set_config pipeline's time per op",
    worst and worst <= 1.05, worst and ("worst of get/list/create %.3f× (`rls_setting = %s`)"):format(worst,
      rmeta.rls_setting or "?") or "–", worst and ("by %.1f%%"):format((worst / 1.05 - 1) * 100))
  p ""
  local skip = slurp "citus-skip.txt"
  if skip ~= "" then
    p("The 3-node rows were skipped: %s", (skip:gsub("%s+$", "")))
  elseif next(CIT) then
    p("**On Citus** %s: a coordinator and 2 workers on loopback (scripts/citus), `todos` distributed"
      .. " by user_id, users a reference table (`tododb distribute`), 10 users × 1 000 todos;"
      .. " informational, since all three nodes share this machine's cores with the client. Plain"
      .. " PostgreSQL rows: the embedded cluster, same counts, run just before.", rmeta.citus or "")
    p ""
    p("| workload | implementation | plain ops/s | plain p50 ms | Citus ops/s | Citus p50 ms"
      .. " | Citus p99 ms | Citus ÷ plain |")
    p "|---|---|--:|--:|--:|--:|--:|--:|"
    for _, w in ipairs { "get", "list", "create" } do
      for _, impl in ipairs { "raw", "tododb-lua5.4" } do
        local a = CIT["plain-" .. impl] and CIT["plain-" .. impl][w] and CIT["plain-" .. impl][w][1]
        local b = CIT["citus-" .. impl] and CIT["citus-" .. impl][w] and CIT["citus-" .. impl][w][1]
        if a and b then
          p("| %s | %s | %s | %s | %s | %s | %s | %.2f× |", WNAME[w], NAME[impl], num(a.ops / a.secs),
            ms(a.p50), num(b.ops / b.secs), ms(b.p50), ms(b.p99), (b.ops / b.secs) / (a.ops / a.secs))
        end
      end
    end
    p ""
  end
  blocks.citus, out = out, {}
end

-- ---- batch ------------------------------------------------------------------------------
local batch = slurp "batch.md"
if ran.batch and batch ~= "" then
  local head, rest = batch:match "^(## [^\n]*)\n\n(.*)$"
  if head then p("%s", head) p "" end
  stamp()
  p("%s", ((rest or batch):gsub("\n+$", "")))
  p ""
  blocks.batch, out = out, {}
end

-- ---- RESULTS.md: new blocks, kept blocks, the login timing section -----------------------
local old = io.open(dest)
local text = old and old:read "*a" or ""
if old then old:close() end
local doc = {
  "# tododb benchmark results",
  "",
  "Produced by `make bench` (`bench/run`). Each section below comes from one run of its part",
  "(`make bench BENCH=\"ops memory profile http citus batch\"`, all by default) and says which;",
  "within a section all implementations ran against the same database, one after the other.",
  "Compare ratios within a section, not numbers across sections or machines. Regenerate with",
  "`make bench`; do not edit by hand.",
  "",
}
for _, name in ipairs(ORDER) do
  local body = blocks[name] and table.concat(blocks[name], "\n")
  if not body then
    body = text:match("<!%-%- bench:" .. name .. " %-%->\n(.-)\n<!%-%- /bench:" .. name .. " %-%->")
  end
  if body then
    doc[#doc + 1] = ("<!-- bench:%s -->\n%s\n<!-- /bench:%s -->\n"):format(name, (body:gsub("\n+$", "")), name)
  end
end
local kept = text:match "\n(## Login timing\n.-)\n*<!%-%-" or text:match "\n(## Login timing\n.*)$"
if kept then doc[#doc + 1] = (kept:gsub("\n+$", "")) .. "\n" end
local f = assert(io.open(dest, "w"))
f:write(table.concat(doc, "\n"))
f:close()

print(("%-8s %-15s %8s %10s %9s %9s %8s %7s"):format("workload", "impl", "ops", "ops/s", "p50 ms",
  "p99 ms", "RSS MB", "÷floor"))
for _, l in ipairs(console) do print(l) end
for _, v in ipairs(verdicts) do
  print(("target: %-70s %s  %s"):format(v.name, v.ok == nil and "n/a" or v.ok and "met" or "MISSED", v.measured))
end
print("wrote " .. dest)
