-- Shared by the specs: connections to the real test database.
local tododb = require "tododb"
local cli = require "tododb.cli"           -- cli.execute: os.execute's status

local S = {}

S.url = assert(os.getenv "DATABASE_URL", "DATABASE_URL is not set (run the specs with make test)")
S.admin_url = os.getenv "TODODB_ADMIN_URL"     -- superuser URL, or nil
-- The role that owns the tables and runs the migrations; without one, the
-- runtime role does both (a one-role deployment).
S.owner_url = os.getenv "TODODB_OWNER_URL" or S.url
S.two_roles = S.owner_url ~= S.url
S.interp = os.getenv "TDB_INTERP" or "lua5.4"
-- make test-citus: every fresh schema is distributed (scripts/citus run).
S.citus = os.getenv "TODODB_CITUS" == "1"
-- make test-pgbouncer: the URLs go through a transaction-mode pooler.
S.pooler = os.getenv "TODODB_POOLER"
S.int64 = tododb.core.int64                      -- false on LuaJIT

-- Connection options the specs use: argon2id at its cheapest unless a spec
-- asks for the default cost itself.
function S.opts(extra)
  local o = { pwhash = os.getenv "TODODB_TEST_PWHASH" or nil }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

function S.connect(extra)
  return assert(tododb.connect(S.url, S.opts(extra)))
end

-- A connection as the owner role (migrations, schema changes).
function S.owner(extra)
  return assert(tododb.connect(S.owner_url, S.opts(extra)))
end

-- An empty schema, freshly migrated by the owner role; returns a connection
-- as the runtime role.
function S.fresh(extra)
  local owner = S.owner()
  assert(owner:exec "DROP OWNED BY current_user")
  assert(owner:migrate())
  if S.citus then assert(owner:distribute()) end
  owner:close()
  return S.connect(extra)
end

-- Two users on db, alice and bob, and a session of each:
-- alice, bob, alice's session, bob's session.
function S.alice_and_bob(db)
  local alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
  local bob = assert(db:create_user { email = "bob@example.com", password = "bob password" })
  return alice, bob, db:session(alice), db:session(bob)
end

-- Inside a transaction the spec opened: the row-level security setting for
-- user uid as tododb sends it on Citus (SET LOCAL reaches the workers,
-- set_config() would not), right on plain PostgreSQL too.
function S.set_user(db, uid)
  local v = tostring(uid)
  assert(v:match "^%-?%d+$", "user id expected")
  return assert(db:exec(("SET LOCAL tododb.user_id = '%s'"):format(v)))
end

-- The npm install of interop/ (make interop sets TDB_INTEROP) when it is
-- there and a superuser URL is known; else nil and why the specs wait.
function S.interop_dir()
  local dir = os.getenv "TDB_INTEROP"
  local f = dir and S.admin_url and io.open(dir .. "/node_modules/better-auth/package.json")
  if not f then return nil, "needs `make interop` (npm install of interop/) and TODODB_ADMIN_URL" end
  f:close()
  return dir
end

-- Processes the specs start -------------------------------------------------

-- Runs a shell command; true when it exits 0.
function S.run(cmd) return cli.execute(cmd) == 0 end

-- A shell command's standard output.
function S.capture(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read "*a"
  p:close()
  return out
end

-- A string quoted for the shell.
function S.sh(s) return "'" .. (tostring(s):gsub("'", [['\'']])) .. "'" end

-- A file's bytes ("" when it cannot be read), and writing them.
function S.read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read "*a"
  f:close()
  return s
end

function S.write(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  f:close()
end

-- The checkout the specs run in.
S.top = S.capture("pwd"):gsub("%s+$", "")

-- Stops a server the spec started (nginx's master, scripts/serve): TERM,
-- then waits up to 10 s for it to exit before KILL.
function S.stop_pid(pid)
  if not pid then return end
  S.run("pid=" .. pid .. "; kill -TERM $pid 2>/dev/null; for i in $(seq 100); do"
        .. " kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL $pid 2>/dev/null")
end

-- Starts a Lua script in another process of this interpreter (same package
-- paths); returns the pipe of its stdout and stderr, or, with `out`, a pipe
-- that stays empty while they go to the file `out` (a process that writes
-- more than a pipe holds, 64 KiB, before the spec reads it would block).
-- Closing the pipe waits for the process to end.
function S.spawn_lua(script, out)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(script)
  f:close()
  local to = out and (">'" .. out .. "' ") or ""
  return assert(io.popen(("%s '%s' %s2>&1; rm -f '%s'"):format(S.interp, file, to, file), "r"))
end

-- Rows of a table as the admin sees them, bypassing row-level security;
-- falls back to the setting-per-user trick when there is no admin URL.
function S.count(db, sql, ...)
  local rows = assert(db:query(sql, ...))
  return rows[1] and rows[1].n
end

return S
