-- bench/testing_bench.lua: what tododb.testing costs a spec file.
--   lua5.4 bench/testing_bench.lua [files]
-- Medians over `files` (default 10) kits made and closed one after another:
-- setup (testing.new: clone of the template, connections), teardown
-- (kit:close: drop), and kit:reset (empty the tables). The database comes
-- from the environment as for any kit (DATABASE_URL, TODODB_OWNER_URL,
-- TODODB_ADMIN_URL, else the embedded one).
local testing = require "tododb.testing"
local now = require("system").monotime     -- lua-system: a wall clock
local files = tonumber(arg[1]) or 10

local setup, teardown, reset, mode = {}, {}, {}, nil
assert(testing.new()):close()               -- the template exists from here on
for i = 1, files do
  local t0 = now()
  local kit = assert(testing.new())
  local t1 = now()
  kit:todos(kit:session(), 10)
  local t2 = now()
  assert(kit:reset())
  local t3 = now()
  mode = kit.mode
  kit:close()
  setup[i], reset[i], teardown[i] = t1 - t0, t3 - t2, now() - t3
end

local function median(list)
  table.sort(list)
  return list[math.floor((#list + 1) / 2)] * 1e3
end
local f = io.open "/proc/loadavg"
local load = f and f:read "*l":match "^(%S+ %S+ %S+)" or "?"
if f then f:close() end
print(("tododb.testing, %s mode, %d files, load average %s: setup %.0f ms, teardown %.0f ms "
  .. "(per spec file %.0f ms); reset %.0f ms"):format(mode, files, load, median(setup),
  median(teardown), median(setup) + median(teardown), median(reset)))
