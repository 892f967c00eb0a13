-- Throwaway PostgreSQL servers for the specs that restart, kill, freeze,
-- fill up or reconfigure a server (the shared test database must not be
-- disturbed). Each listens on a unix socket in its own directory under /tmp
-- and, when asked, on 127.0.0.1; as the `postgres` user when run as root.
--   local C = require "cluster"
--   local pg = C.new { conf = { max_connections = 5 }, tcp = true }
--   pg:start(); pg:url "postgres"; pg:psql "SELECT 1"; pg:stop "fast"; pg:destroy()
local S = require "support"

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

-- The postmaster's pid (nil when not running).
function C:pid()
  local f = io.open(self.data .. "/postmaster.pid")
  if not f then return nil end
  local pid = tonumber(f:read "*l")
  f:close()
  return pid
end

-- Sends a signal to the postmaster ("KILL", "STOP", "CONT", ...).
function C:signal(sig)
  local pid = self:pid()
  return pid and S.run(("kill -%s %d"):format(sig, pid))
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

-- Stops the server (immediately) and removes its directory.
function C:destroy()
  if self:pid() then
    self:signal "CONT"
    self:stop "immediate"
  end
  S.run("rm -rf " .. q(self.dir))
end

return C
