-- Throwaway PostgreSQL servers for the specs that restart, kill, freeze,
-- fill up or reconfigure a server (the shared test database must not be
-- disturbed). Each listens on a unix socket in its own directory under /tmp
-- and, when asked, on 127.0.0.1; as the `postgres` user when run as root.
--   local C = require "cluster"
--   local pg = C.new { conf = { max_connections = 5 }, tcp = true }
--   pg:start(); pg:url "postgres"; pg:psql "SELECT 1"; pg:stop "fast"; pg:destroy()
--   local pg, why = C.started {}   -- new and started, or nil and why not
local S = require "support"
local system = require "system"

local C = {}
C.__index = C

local root = S.capture("id -u"):match "%d+" == "0"
C.bin = S.capture("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1"):match "%S+"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A command as the server's user, without the sanitizer runtimes of
-- `make check-asan` (initdb hangs under them), and never for long.
local function as_pg(cmd)
  return "env -u LD_PRELOAD timeout 120 " .. (root and "runuser -u postgres -- " or "") .. cmd
end
C.as_pg = as_pg

-- A TCP port on 127.0.0.1 that nothing listens on now.
function C.free_port()
  for _ = 1, 50 do
    local port = 20000 + math.random(0, 19999)
    if not S.run(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' >/dev/null 2>&1"):format(port)) then
      return port
    end
  end
  error "no free TCP port found on 127.0.0.1"
end

math.randomseed(os.time() + tonumber(tostring({}):match "0x(%x+)" or "0", 16) % 100000)

-- C.new{ conf = {name = value}, hba = "lines", tcp = bool, port = n } -> server (initdb done)
-- Returns nil, reason when the server binaries are missing or initdb fails.
function C.new(o)
  o = o or {}
  if not C.bin then return nil, "no PostgreSQL server binaries under /usr/lib/postgresql" end
  local self = setmetatable({ port = o.port or C.free_port(), tcp = o.tcp }, C)
  self.dir = S.capture("mktemp -d /tmp/tododb-spec.XXXXXX"):match "%S+"
  self.data = self.dir .. "/data"
  if root then S.run(("chown postgres: %s && chmod 755 %s"):format(q(self.dir), q(self.dir))) end
  if not S.run(as_pg(("%s/initdb -D %s -U postgres -A trust -E UTF8 --locale=C.UTF-8 >%s/initdb.log 2>&1")
      :format(C.bin, q(self.data), q(self.dir)))) then
    local log = S.capture("cat " .. q(self.dir .. "/initdb.log"))
    S.run("rm -rf " .. q(self.dir))
    return nil, "initdb failed: " .. log
  end
  local conf = {
    listen_addresses = o.tcp and "'127.0.0.1'" or "''", port = self.port,
    unix_socket_directories = "'" .. self.dir .. "'", fsync = "off",
    synchronous_commit = "off", full_page_writes = "off", shared_buffers = "16MB",
    max_connections = 20,
  }
  for k, v in pairs(o.conf or {}) do conf[k] = v end
  local lines = {}
  for k, v in pairs(conf) do lines[#lines + 1] = k .. " = " .. tostring(v) end
  self:write("postgresql.conf", table.concat(lines, "\n") .. "\n", "a")
  if o.hba then self:write("pg_hba.conf", o.hba) end
  return self
end

-- C.started(o): a server from C.new(o), started; nil and why not otherwise
-- (with nothing left behind).
function C.started(o)
  local pg, why = C.new(o)
  if pg and not pg:start() then
    pg:destroy()
    return nil, "the throwaway server did not start"
  end
  return pg, why
end

-- Writes (or appends to, mode "a") a file of the data directory (which
-- exists: its owner stays the server's user).
function C:write(name, text, mode)
  local f = assert(io.open(self.data .. "/" .. name, mode or "w"))
  f:write(text)
  f:close()
end

function C:pg_ctl(args)
  return S.run(as_pg(("%s/pg_ctl -D %s %s >>%s/ctl.log 2>&1"):format(C.bin, q(self.data), args, q(self.dir))))
end

function C:start() return self:pg_ctl(("-l %s -w -t 60 start"):format(q(self.dir .. "/server.log"))) end
-- mode: "fast" (default), "smart" or "immediate"
function C:stop(mode) return self:pg_ctl("-m " .. (mode or "fast") .. " -w stop") end
function C:restart(mode)
  return self:pg_ctl(("-m %s -l %s -w -t 60 restart"):format(mode or "fast", q(self.dir .. "/server.log")))
end

-- A process is gone once /proc no longer lists it. A killed process stays a
-- zombie until its parent (init, for a postmaster) reaps it, which can take
-- a second or more; `kill -0` succeeds on a zombie, and a new postmaster
-- refuses to start while the old one's pid answers `kill -0`.
local function gone(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return true end
  f:close()
  return false
end

-- Waits (polling, at most `secs` seconds) until every pid of the list is gone.
local function wait_gone(pids, secs)
  local deadline = system.monotime() + secs
  repeat
    local left = false
    for _, p in ipairs(pids) do left = left or not gone(p) end
    if not left then return true end
    system.sleep(0.05)
  until system.monotime() > deadline
  return nil, "processes still there after " .. secs .. " s: " .. table.concat(pids, " ")
end

-- The postmaster's pid when this server's postmaster runs (not a zombie,
-- not a stale pid file left by a crash), else nil.
function C:pid()
  local f = io.open(self.data .. "/postmaster.pid")
  if not f then return nil end
  local pid = tonumber(f:read "*l")
  f:close()
  f = pid and io.open("/proc/" .. pid .. "/cmdline")
  local cmd = f and f:read "*a" or ""
  if f then f:close() end
  if not cmd:find(self.data, 1, true) then return nil end
  return pid
end

-- The postmaster and the processes it started: { postmaster, children... }.
function C:pids()
  local pid = self:pid()
  if not pid then return {} end
  local pids = { pid }
  -- Without the sanitizer runtimes of `make check-asan` (pgrep hangs under them).
  for p in S.capture("env -u LD_PRELOAD pgrep -P " .. pid):gmatch "%d+" do pids[#pids + 1] = tonumber(p) end
  return pids
end

-- Sends a signal to the postmaster ("KILL", "STOP", "CONT", ...).
function C:signal(sig)
  local pid = self:pid()
  return pid and S.run(("kill -%s %d"):format(sig, pid))
end

-- Crashes the server: the postmaster is stopped (it starts nothing more),
-- then it and every process it started get SIGKILL. Returns true once they
-- are all gone (the server can start again), nil and why after `secs`
-- seconds (default 60).
function C:kill9(secs)
  local pids = self:pids()
  if not pids[1] then return nil, "the server is not running" end
  S.run(("kill -STOP %d; kill -KILL %s 2>/dev/null"):format(pids[1], table.concat(pids, " ")))
  return wait_gone(pids, secs or 60)
end

-- URL as `user` over the unix socket, or over TCP when tcp is true.
function C:url(user, db, tcp)
  if tcp then
    return ("postgresql://%s@127.0.0.1:%d/%s"):format(user or "postgres", self.port, db or "postgres")
  end
  return ("postgresql:///%s?host=%s&port=%d&user=%s"):format(db or "postgres", self.dir, self.port,
                                                              user or "postgres")
end

-- Runs SQL as the superuser with psql; returns its output (nil, output on error).
function C:psql(sql, db)
  local out = S.capture(as_pg(("%s/psql -X -q -At -v ON_ERROR_STOP=1 -h %s -p %d -U postgres -d %s -c %s"
    .. " 2>&1; echo \"rc=$?\""):format(C.bin, q(self.dir), self.port, db or "postgres", q(sql))))
  local body, rc = out:match "^(.-)\n?rc=(%d+)%s*$"
  if rc ~= "0" then return nil, body end
  return body
end

-- Stops the server (immediately; also when a spec froze it with SIGSTOP or
-- left it half-dead) and removes its directory. Specs call it from
-- teardown/finally so that a failing spec stops its servers too.
function C:destroy()
  local pids = self:pids()
  if pids[1] then
    S.run("kill -CONT " .. table.concat(pids, " ") .. " 2>/dev/null")   -- some may have ended
    if not self:pg_ctl "-m immediate -w -t 20 stop" then self:kill9() end
  end
  S.run("rm -rf " .. q(self.dir))
end

return C
