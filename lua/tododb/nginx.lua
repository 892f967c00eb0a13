-- tododb.nginx: tododb operations for lua-nginx-module (OpenResty or
-- Debian's libnginx-mod-http-lua), in one of two modes:
--
--   "thread" (default)  tododb.nginx.run(op, args) hands the call to the
--                       nginx thread pool with ngx.run_worker_thread; the
--                       event loop never waits for PostgreSQL or argon2id.
--   "worker"            the call runs in the nginx worker itself and holds
--                       it for one database round trip (or one password hash).
--
-- Operations take and return plain data only (strings, numbers, booleans,
-- tododb.null, tables without cycles): that is all that crosses between the
-- worker's Lua VM and the thread pool's VMs. The operations on todos and
-- register answer JSON text written in C from the result (s:get_todo_json
-- and the other *_json methods), so a success crosses as one string. Every
-- operation answers one table:
--   { ok = true, value = ... }  or  { ok = false, error = { code =, message =, field = } }
-- and never raises; tododb.nginx.failure decides what of an error the client
-- may read. An unexpected Lua error becomes code "internal" with the
-- traceback in `detail` (for the error log, never for the client).
--
-- Each Lua VM that runs operations keeps one database connection (a
-- module-level variable, opened on first use, dropped after an "unavailable"
-- error and reopened on the next call): one per worker in worker mode, one per
-- thread-pool VM (lua_worker_thread_vm_pool_size) per worker in thread mode.
--
-- Environment (declare each with `env NAME;` in nginx.conf, or nginx hides it):
--   DATABASE_URL         the database (else tododb.connect's default)
--   TODODB_TOKEN_SECRET  HS256 key for bearer tokens, at least 32 bytes
--   TODODB_PWHASH        argon2id cost: interactive (default), moderate, min
--   TODODB_NGINX_MODE    "thread" (default) or "worker"
--   TODODB_NGINX_CALLS   thread mode: database calls at a time per worker
--                        (configure{ calls = } wins; default M.calls)
--   TODODB_SIGNUP_UNIFORM  "1": the example API answers every sign-up alike
--   TODODB_JWKS_URL, TODODB_JWKS_FILE, TODODB_TOKEN_ISSUER, ...: tokens of an
--                        external auth service (examples/nginx/jwks.lua)
local tododb = require "tododb"

local M = {
  pool = "tododb",           -- thread_pool name in nginx.conf
  vms = 4,                   -- = lua_worker_thread_vm_pool_size: thread VMs per worker
  calls = 1,                 -- of those, VMs running database calls at a time per worker;
                             -- the others hash passwords (register, login)
  wait = 10,                 -- seconds a call may wait for a free thread VM
  token_ttl = 3600,          -- seconds
}

-- Configuration from the environment ---------------------------------------

-- tododb.nginx.getenv(name) -> value | nil: an empty variable counts as unset
-- (the one reading of the environment for tododb.nginx and the example).
local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end
M.getenv = getenv

-- The mode of this process: "thread" or "worker".
function M.mode()
  local m = getenv "TODODB_NGINX_MODE"
  if m == "worker" then return "worker" end
  return "thread"
end

-- The token key, or nil and why not.
function M.secret()
  local s = getenv "TODODB_TOKEN_SECRET"
  if not s then return nil, "TODODB_TOKEN_SECRET is not set" end
  if #s < 32 then return nil, "TODODB_TOKEN_SECRET must be at least 32 bytes" end
  return s
end

-- Whether sign-up answers alike for new and taken emails (TODODB_SIGNUP_UNIFORM=1).
function M.signup_uniform()
  local v = getenv "TODODB_SIGNUP_UNIFORM"
  return v == "1" or v == "true" or v == "on"
end

local configured = {}          -- options set by configure()

-- Sets pool, vms, calls, wait, token_ttl (call from init_by_lua* or
-- init_worker_by_lua*, before the first call).
function M.configure(opts)
  for k, v in pairs(opts or {}) do
    if M[k] == nil or type(M[k]) == "function" then
      error("tododb.nginx.configure: unknown option '" .. tostring(k) .. "'", 2)
    end
    if (k == "vms" or k == "calls") and (type(v) ~= "number" or v < 1 or v % 1 ~= 0) then
      error("tododb.nginx.configure: " .. k .. " must be a positive integer", 2)
    end
    M[k] = v
    configured[k] = true
  end
  return M
end

-- tododb.nginx.db_calls() -> n | nil, why: database calls at a time per
-- worker in thread mode: configure{ calls = }, else TODODB_NGINX_CALLS, else
-- the default.
function M.db_calls()
  local v = getenv "TODODB_NGINX_CALLS"
  if configured.calls or not v then return M.calls end
  local n = v:match "^%d+$" and tonumber(v)
  if not n or n < 1 then return nil, "TODODB_NGINX_CALLS must be a positive integer, got '" .. v .. "'" end
  return n
end

-- The connection of this Lua VM --------------------------------------------

local db                      -- this VM's connection, or nil

local function connection()
  if db then return db end
  local pwhash = getenv "TODODB_PWHASH"
  local c, err = tododb.connect(getenv "DATABASE_URL", { pwhash = pwhash })
  if not c then return nil, err end
  db = c
  return db
end

-- Drops this VM's connection (the next call reconnects).
function M.reset()
  if db then pcall(db.close, db) end
  db = nil
end

-- Error answers ---------------------------------------------------------------
-- What a client may read of an error: its stable code, its field and a
-- message of ours. Text that can come from the server or the database
-- (internal and unavailable errors, anything carrying a sqlstate: table and
-- constraint names, socket paths, host addresses) is replaced by a generic
-- message and kept in `detail`, for the error log only.

local GENERIC = {
  internal = "internal error",
  unavailable = "the service is unavailable, try again later",
  not_found = "not found",
  conflict = "conflict with existing data",
  invalid = "invalid input",
  unauthorized = "unauthorized",
}

-- tododb.nginx.failure(err [, context]) -> { ok = false, error = { code =, message =, field =, index = }, detail = }
-- err: a tododb error (or a table like one); anything else (a Lua error
-- message) is internal. context prefixes the detail.
function M.failure(err, context)
  local code, message, field, sqlstate, detail, index
  if type(err) == "table" or type(err) == "userdata" then
    code, message, field, sqlstate, detail = err.code, err.message, err.field, err.sqlstate, err.detail
    index = err.index                   -- the failing operation of a batch
  end
  code = GENERIC[code] and code or "internal"
  message = tostring(message or err)
  if code == "internal" or code == "unavailable" or sqlstate then
    local d = (sqlstate and "[" .. sqlstate .. "] " or "") .. message
    detail = detail and d .. " (" .. tostring(detail) .. ")" or d
    message = GENERIC[code]
  end
  if context and detail then detail = context .. ": " .. detail end
  return { ok = false, error = { code = code, message = message, field = field, index = index },
           detail = detail }
end

-- Operations ----------------------------------------------------------------
-- ops.name(db, args) -> value | nil, err. args is a plain table.

local ops = {}
M.ops = ops

-- A user id as the decimal text a token's sub carries.
local function id_text(id)
  if type(id) == "number" then return string.format("%.0f", id) end
  return tostring(id)
end

-- Operations on one user's todos: f(session, args) -> value | nil, err.
-- args.user_id is a user id, or the claims { iss =, sub =, email = } of an
-- external identity: its user, provisioned on first use (db:provision_claims).
local function session_op(f)
  return function(c, a)
    local uid = a.user_id
    if type(uid) == "table" then
      local u, err = c:provision_claims(uid)
      if not u then return nil, err end
      uid = u.id
    end
    local s, err = c:session(uid)
    if not s then return nil, err end
    return f(s, a)
  end
end

-- register{ email =, password = } -> user JSON
function ops.register(c, a)
  return c:create_user_json { email = a.email, password = a.password }
end

-- login{ email =, password = } -> { token =, expires_in =, user = }
function ops.login(c, a)
  local key, why = M.secret()
  if not key then
    return nil, { code = "internal", message = "token signing is not configured", detail = why }
  end
  local u, err = c:authenticate(a.email, a.password)
  if not u then return nil, err end
  local ttl = a.ttl or M.token_ttl
  local token = tododb.token.sign({ sub = id_text(u.id) }, key, { expires_in = ttl })
  return { token = token, token_type = "Bearer", expires_in = ttl, user = u:to_table() }
end

-- list{ user_id =, completed =, search =, order =, limit =, after = }
--   -> '{"items":[todo…],"next":cursor|null}'
ops.list = session_op(function(s, a)
  return s:list_todos_json {
    completed = a.completed, search = a.search, order = a.order,
    limit = a.limit, after = a.after,
  }
end)

-- create{ user_id =, todo = { title =, description =, completed = } } -> todo JSON
ops.create = session_op(function(s, a) return s:create_todo_json(a.todo) end)

-- get{ user_id =, id = } -> todo JSON
ops.get = session_op(function(s, a) return s:get_todo_json(a.id) end)

-- update{ user_id =, id =, changes = { title =, description =, completed = } } -> todo JSON
ops.update = session_op(function(s, a) return s:update_todo_json(a.id, a.changes) end)

-- toggle{ user_id =, id = } -> todo JSON
ops.toggle = session_op(function(s, a) return s:toggle_todo_json(a.id) end)

-- delete{ user_id =, id = } -> true
ops.delete = session_op(function(s, a) return s:delete_todo(a.id) end)

-- batch{ user_id =, ops = { {op =, id =, title =, …}, … } }
--   -> { todo | { id =, deleted = true }, … }, all or none (s:batch)
ops.batch = session_op(function(s, a)
  local r, err = s:batch(a.ops)
  if not r then return nil, err end
  for i, v in ipairs(r) do r[i] = v == true and { id = a.ops[i].id, deleted = true } or v:to_table() end
  return r
end)

-- count{ user_id =, completed = } -> n
ops.count = session_op(function(s, a) return s:count_todos { completed = a.completed } end)

-- complete_all{ user_id = } -> n
ops.complete_all = session_op(function(s) return s:complete_all() end)

-- delete_completed{ user_id = } -> n
ops.delete_completed = session_op(function(s) return s:delete_completed() end)

-- Entry points ----------------------------------------------------------------

local function run_op(op, args)
  local f = ops[op]
  if not f then return M.failure("tododb.nginx: no operation '" .. tostring(op) .. "'") end
  local c, err = connection()
  if not c then return M.failure(err, "connect") end
  local value
  value, err = f(c, args or {})
  if value == nil then
    local res = M.failure(err, op)
    if res.error.code == "unavailable" then M.reset() end
    return res
  end
  return { ok = true, value = value }
end

-- tododb.nginx.dispatch(op, args) -> { ok =, value = | error =, detail = }
-- Runs op in this Lua VM: the function ngx.run_worker_thread calls in the
-- thread pool's VMs, and the whole call in worker mode. Never raises.
function M.dispatch(op, args)
  local ok, res = xpcall(run_op, debug.traceback, op, args)
  if ok then return res end
  -- A raised error (misuse or a bug): the connection may be mid-call.
  M.reset()
  return M.failure(tostring(res))
end

-- tododb.nginx.thread_dispatch(op, args) -> true, value | false, failure
-- What ngx.run_worker_thread calls in a pool VM: dispatch, with a success
-- answered by its value alone (JSON text for most operations), so that
-- only that string is copied back to the worker's VM.
function M.thread_dispatch(op, args)
  local res = M.dispatch(op, args)
  if res.ok then return true, res.value end
  return false, res
end

-- Calls in flight per worker, bounded by two FIFO semaphores over the VM
-- pool: `calls` VMs for database calls, the rest (vms - calls) for the
-- password hashing of register and login, so that a slow hash never holds
-- up the database calls. Database calls are bounded well below the pool
-- size because more of them at once than CPU cores, on a database on the
-- same host, queue in the kernel's run queue instead of in this FIFO: the
-- median barely moves but the tail grows with them (2 workers, 16
-- connections, 2 cores, quiet: p99 8-14 ms at 1 call per worker, 20-44 ms
-- at 2 for 8-24 % more requests/s; get by id under load: 300-800 ms at 4,
-- over 1 s at 8). More help only when the round trip is long (a database
-- across a network).
local HASHING = { register = true, login = true }
local semaphores               -- { db =, hash = }, made on first use

local function semaphore_of(op)
  if not semaphores then
    local new = require("ngx.semaphore").new
    local calls, why = M.db_calls()
    if not calls then return nil, why end
    calls = math.min(calls, M.vms)
    semaphores = { db = assert(new(calls)) }
    semaphores.hash = M.vms > calls and assert(new(M.vms - calls)) or semaphores.db
  end
  return HASHING[op] and semaphores.hash or semaphores.db
end

-- tododb.nginx.run(op, args [, mode]) -> { ok =, value = | error =, detail = }
-- From a yieldable nginx phase (content_by_lua*, access_by_lua*, rewrite_by_lua*).
function M.run(op, args, mode)
  mode = mode or M.mode()
  if mode == "worker" then return M.dispatch(op, args) end
  local semaphore, why = semaphore_of(op)
  if not semaphore then return M.failure(why) end
  local free, err = semaphore:wait(M.wait)
  if not free then
    return M.failure({ code = "unavailable", message = "no free thread VM: " .. tostring(err) })
  end
  local done, ok, value = ngx.run_worker_thread(M.pool, "tododb.nginx", "thread_dispatch", op, args)
  semaphore:post(1)
  if not done then return M.failure("run_worker_thread: " .. tostring(ok)) end
  if ok then return { ok = true, value = value } end
  return value
end

return M
