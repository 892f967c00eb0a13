-- bench/login_timing.lua: does a failed login take as long for an unknown
-- email as for an existing one? (bench/login_timing runs it.) For each mix of
-- the stored hash's argon2id cost and the connection's configured cost, it
-- times 50 failed logins of existing emails (wrong password) and 50 of unknown
-- emails, interleaved, and prints the medians and their ratio as a Markdown
-- table. Not a test: the ratio is for a person to read (target: within 10 %).
--   LOGIN_URL    runtime role URL of a database of its own: every account in it
--                is removed before each scenario
--   LOGIN_N      logins per kind and scenario (default 50)
local tododb = require "tododb"
local system = require "system"
local now = system.monotime

local url = assert(os.getenv "LOGIN_URL", "LOGIN_URL is not set (run bench/login_timing)")
local N = tonumber(os.getenv "LOGIN_N" or "50")
local CHEAP = { ops = 1, mem = 16 * 1024 * 1024 }
local DEAR = { ops = 2, mem = 32 * 1024 * 1024 }
local PW = "the right password"
local TAG = ("%x"):format(os.time())

local function cost(c) return ("t=%d, %d MiB"):format(c.ops, c.mem // (1024 * 1024)) end
local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

local made = {}
local function make_users(stored, k)
  local db = assert(tododb.connect(url, { pwhash = stored }))
  for _, u in ipairs(assert(db:list_users { limit = 1000 })) do assert(db:delete_user(u)) end
  local out = {}
  for i = 1, k do
    local u = assert(db:create_user { email = ("timing-%s-%d-%d@example.com"):format(TAG, #made, i),
                                      password = PW })
    out[i] = u.email
    made[#made + 1] = u.id
  end
  db:close()
  return out
end

-- Wall time and this process's CPU time of one failed login, in ms. CPU time
-- (argon2id runs in this process) is what the hash costs; wall time adds
-- the round trip and whatever else the machine is doing.
local function timed(db, email)
  local t0, c0 = now(), os.clock()
  local u, err = db:authenticate(email, "a wrong password")
  local dt, dc = now() - t0, os.clock() - c0
  assert(u == nil, "a wrong password was accepted")
  assert(err.code == "unauthorized", err.message)
  return dt * 1000, dc * 1000
end

local unknown_n = 0
local function unknown()
  unknown_n = unknown_n + 1
  return ("nobody-%s-%d@example.com"):format(TAG, unknown_n)
end

-- One scenario: stored and configured costs; fresh = a new connection per
-- login, whose first login is timed.
local function scenario(name, stored, configured, fresh)
  local emails = make_users(stored, 5)
  local known, unk, known_cpu, unk_cpu = {}, {}, {}, {}
  local db = not fresh and assert(tododb.connect(url, { pwhash = configured })) or nil
  if db then timed(db, emails[1]); timed(db, unknown()) end   -- warm: statements prepared
  for i = 1, N do
    for _, kind in ipairs(i % 2 == 0 and { "k", "u" } or { "u", "k" }) do
      local c = db or assert(tododb.connect(url, { pwhash = configured }))
      local ms, cpu = timed(c, kind == "k" and emails[(i % #emails) + 1] or unknown())
      if kind == "k" then known[#known + 1], known_cpu[#known_cpu + 1] = ms, cpu
      else unk[#unk + 1], unk_cpu[#unk_cpu + 1] = ms, cpu end
      if not db then c:close() end
    end
  end
  if db then db:close() end
  local mk, mu, ck, cu = median(known), median(unk), median(known_cpu), median(unk_cpu)
  return { name = name, stored = cost(stored), configured = cost(configured), known = mk,
           unknown = mu, ratio = mu / mk, known_cpu = ck, unknown_cpu = cu, cpu_ratio = cu / ck }
end

local rows = {
  scenario("same cost", DEAR, DEAR),
  scenario("stored cheaper than configured", CHEAP, DEAR),
  scenario("stored dearer than configured", DEAR, CHEAP),
  scenario("first login on a fresh connection", DEAR, DEAR, true),
}

local admin = assert(tododb.connect(url))
for _, id in ipairs(made) do admin:delete_user(id) end
admin:close()

print(("Medians of %d failed logins each (wrong password / unknown email), %s, module %s:"):format(
  N, jit and jit.version or _VERSION, os.getenv "LOGIN_MODULE" or "this checkout"))
print ""
print("| scenario | stored hash | configured | existing email | unknown email | unknown / existing"
  .. " | CPU: existing | CPU: unknown | CPU ratio |")
print "|---|---|---|---:|---:|---:|---:|---:|---:|"
local worst, worst_cpu = 0, 0
for _, r in ipairs(rows) do
  print(("| %s | %s | %s | %.1f ms | %.1f ms | %.2f | %.1f ms | %.1f ms | %.2f |"):format(r.name,
    r.stored, r.configured, r.known, r.unknown, r.ratio, r.known_cpu, r.unknown_cpu, r.cpu_ratio))
  worst = math.max(worst, math.abs(r.ratio - 1))
  worst_cpu = math.max(worst_cpu, math.abs(r.cpu_ratio - 1))
end
print ""
print(("largest difference: wall %.1f %%, CPU %.1f %% (target: within 10 %%)"):format(
  worst * 100, worst_cpu * 100))
