-- bench/batch_bench.lua: s:batch against single calls, one connection.
--   lua5.4 bench/batch_bench.lua [samples]      prints its RESULTS.md section
-- Times, interleaved sample by sample so that a changing load hits each
-- alike, and reports medians: one toggle_todo; a batch of 10 toggles; 10
-- separate toggle_todo calls; the same 10 inside s:transaction. Targets:
-- batch of 10 <= 2x one call, >= 5x faster than 10 separate calls.
-- Database: BENCH_URL, else DATABASE_URL, else the embedded one. It makes a
-- scratch user and removes it (and its todos) again.
package.path = (arg[0]:match "^(.*)/" or ".") .. "/?.lua;" .. package.path
local tododb = require "tododb"
local now = require("clock").monotime

local samples = tonumber(arg[1] or "400")

local db = assert(tododb.connect(os.getenv "BENCH_URL" or os.getenv "DATABASE_URL", { pwhash = "min" }))
assert(db:migrate())
local email = ("batch-bench-%d@example.com"):format(os.time())
local user = assert(db:create_user { email = email, password = "batch bench password" })
local s = db:session(user)
local ids, ops = {}, {}
for i = 1, 10 do
  ids[i] = assert(s:create_todo { title = "batch bench " .. i }).id
  ops[i] = { op = "toggle", id = ids[i] }
end

local kinds = {
  { "one", "one toggle_todo", function() assert(s:toggle_todo(ids[1])) end },
  { "batch", "s:batch of 10 toggles", function() assert(s:batch(ops)) end },
  { "separate", "10 separate toggle_todo", function()
      for i = 1, 10 do assert(s:toggle_todo(ids[i])) end
    end },
  { "tx", "10 toggle_todo in s:transaction", function()
      assert(s:transaction(function(tx) for i = 1, 10 do assert(tx:toggle_todo(ids[i])) end end))
    end },
}

for _ = 1, 20 do for _, k in ipairs(kinds) do k[3]() end end      -- warm: statements prepared
local times = {}
for _, k in ipairs(kinds) do times[k[1]] = {} end
for n = 1, samples do
  for j = 0, #kinds - 1 do                  -- rotate the order each sample
    local k = kinds[(n + j) % #kinds + 1]
    local t0 = now()
    k[3]()
    local list = times[k[1]]
    list[#list + 1] = now() - t0
  end
end
assert(db:delete_user(user.id))

local function median(list)
  table.sort(list)
  return list[math.floor((#list + 1) / 2)] * 1e6
end
local med = {}
for _, k in ipairs(kinds) do med[k[1]] = median(times[k[1]]) end

local function load()
  local f = io.open "/proc/loadavg"
  local l = f and f:read "*l" or "?"
  if f then f:close() end
  return l:match "^(%S+ %S+ %S+)" or l
end

local out = {
  "## Batches and transactions (bench/batch_bench.lua)",
  "",
  ("One connection to %s, %s, %d interleaved samples each, medians; load average %s."):format(
    db:info().server_version and "PostgreSQL " .. db:info().server_version or "PostgreSQL",
    jit and jit.version or _VERSION, samples, load()),
  "",
  "| call | median µs | vs one call |",
  "|---|---:|---:|",
}
for _, k in ipairs(kinds) do
  out[#out + 1] = ("| %s | %.0f | %.2f× |"):format(k[2], med[k[1]], med[k[1]] / med.one)
end
local r1, r2 = med.batch / med.one, med.separate / med.batch
out[#out + 1] = ""
out[#out + 1] = ("Batch of 10 / one call: **%.2f×** (target ≤ 2×: %s). 10 separate calls / batch "
  .. "of 10: **%.2f×** (target ≥ 5×: %s)."):format(r1, r1 <= 2 and "met" or "missed",
  r2, r2 >= 5 and "met" or "missed")
out[#out + 1] = ""
out[#out + 1] = "A batch saves round trips, not server work: the server still runs every "
  .. "operation's statement (the update and its RETURNING) plus the transaction's BEGIN, row-level "
  .. "security setting and COMMIT. The ≤ 2× "
  .. "target holds where a round trip costs more than ten operations' server work (a network "
  .. "between client and server); over a unix socket the server work dominates. The variants "
  .. "that let a missing id abort the batch on the server (a CTE with a division by zero) add "
  .. "their own small share."
print(table.concat(out, "\n"))
