-- bench/wrk.lua: the requests of bench/http's wrk runs (wrk's own LuaJIT).
--   wrk … -s bench/wrk.lua URL -- OP TOKENS
-- OP: list (GET /api/todos?limit=50), get (GET /api/todos/<random id>) or
-- create (POST /api/todos). TOKENS: file of "token<TAB>max id" lines, one per
-- user; each request picks a user at random. Prints one line:
-- WRK requests secs rps p50_ms p99_ms non_2xx socket_errors
local op, users = nil, {}
local counter = 0

function init(args)
  op = args[1]
  for line in io.lines(args[2]) do
    local token, max = line:match "^(%S+)\t(%d+)$"
    users[#users + 1] = { auth = "Bearer " .. token, max = tonumber(max) }
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + #tostring({}))
end

function request()
  local u = users[math.random(#users)]
  if op == "list" then
    return wrk.format("GET", "/api/todos?limit=50", { Authorization = u.auth })
  elseif op == "get" then
    return wrk.format("GET", "/api/todos/" .. math.random(u.max), { Authorization = u.auth })
  end
  counter = counter + 1
  return wrk.format("POST", "/api/todos", { Authorization = u.auth, ["Content-Type"] = "application/json" },
    '{"title":"HTTP bench todo ' .. counter .. '","description":"created by the benchmark"}')
end

function done(summary, latency)
  local e = summary.errors
  io.write(("WRK\t%d\t%.3f\t%.1f\t%.3f\t%.3f\t%d\t%d\n"):format(summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
