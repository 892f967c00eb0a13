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
-- worker's Lua VM and the thread pool's VMs. Every operation answers one table:
--   { ok = true, value = ... }  or  { ok = false, error = { code =, message =, field = } }
-- and never raises; an unexpected Lua error becomes code "internal" with the
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
local tododb = require "tododb"

local M = {
  pool = "tododb",           -- thread_pool name in nginx.conf
  vms = 4,                   -- = lua_worker_thread_vm_pool_size: calls in flight per worker
  wait = 10,                 -- seconds a call may wait for a free thread VM
  token_ttl = 3600,          -- seconds
}

-- Configuration from the environment ---------------------------------------

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

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

-- Sets pool, vms, wait, token_ttl (call from init_by_lua* or init_worker_by_lua*).
function M.configure(opts)
  for k, v in pairs(opts or {}) do
    if M[k] == nil or type(M[k]) == "function" then
      error("tododb.nginx.configure: unknown option '" .. tostring(k) .. "'", 2)
    end
    M[k] = v
  end
  return M
end

-- The connection of this Lua VM --------------------------------------------

local db                      -- this VM's connection, or nil

local function plain_error(err)
  if type(err) ~= "table" and type(err) ~= "userdata" then
    return { code = "internal", message = tostring(err) }
  end
  return {
    code = err.code or "internal",
    message = err.message or tostring(err),
    field = err.field,
  }
end

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

-- Operations ----------------------------------------------------------------
-- ops.name(db, args) -> value | nil, err. args is a plain table.

local ops = {}
M.ops = ops

-- A user id as the decimal text a token's sub carries.
local function id_text(id)
  if type(id) == "number" then return string.format("%.0f", id) end
  return tostring(id)
end

local function todos_of(list)
  local out = {}
  for i, t in ipairs(list) do out[i] = t:to_table() end
  return out
end

-- register{ email =, password = } -> user table
function ops.register(c, a)
  local u, err = c:create_user { email = a.email, password = a.password }
  if not u then return nil, err end
  return u:to_table()
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
--   -> { items = { todo… }, next = cursor | nil }
function ops.list(c, a)
  local page, err = c:session(a.user_id):list_todos {
    completed = a.completed, search = a.search, order = a.order,
    limit = a.limit, after = a.after,
  }
  if not page then return nil, err end
  return { items = todos_of(page.items), next = page.next }
end

-- create{ user_id =, todo = { title =, description =, completed = } } -> todo
function ops.create(c, a)
  local t, err = c:session(a.user_id):create_todo(a.todo)
  if not t then return nil, err end
  return t:to_table()
end

-- get{ user_id =, id = } -> todo
function ops.get(c, a)
  local t, err = c:session(a.user_id):get_todo(a.id)
  if not t then return nil, err end
  return t:to_table()
end

-- update{ user_id =, id =, changes = { title =, description =, completed = } } -> todo
function ops.update(c, a)
  local t, err = c:session(a.user_id):update_todo(a.id, a.changes)
  if not t then return nil, err end
  return t:to_table()
end

-- toggle{ user_id =, id = } -> todo
function ops.toggle(c, a)
  local t, err = c:session(a.user_id):toggle_todo(a.id)
  if not t then return nil, err end
  return t:to_table()
end

-- delete{ user_id =, id = } -> true
function ops.delete(c, a)
  return c:session(a.user_id):delete_todo(a.id)
end

-- count{ user_id =, completed = } -> n
function ops.count(c, a)
  return c:session(a.user_id):count_todos { completed = a.completed }
end

-- complete_all{ user_id = } -> n
function ops.complete_all(c, a)
  return c:session(a.user_id):complete_all()
end

-- delete_completed{ user_id = } -> n
function ops.delete_completed(c, a)
  return c:session(a.user_id):delete_completed()
end

-- Entry points ----------------------------------------------------------------

local function run_op(op, args)
  local f = ops[op]
  if not f then
    return { ok = false, error = { code = "internal", message = "internal error" },
             detail = "tododb.nginx: no operation '" .. tostring(op) .. "'" }
  end
  local c, err = connection()
  if not c then
    local e = plain_error(err)
    return { ok = false, error = e, detail = "connect: " .. tostring(e.message) }
  end
  local value
  value, err = f(c, args or {})
  if value == nil then
    local e = plain_error(err)
    local detail = type(err) == "table" and err.detail or nil
    if e.code == "unavailable" then M.reset() end
    if e.code == "internal" then
      detail = detail or e.message
      e.message = "internal error"
    end
    return { ok = false, error = e, detail = detail }
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
  return { ok = false, error = { code = "internal", message = "internal error" },
           detail = tostring(res) }
end

local semaphore                -- bounds calls in flight to the VM pool size

-- tododb.nginx.run(op, args [, mode]) -> { ok =, value = | error =, detail = }
-- From a yieldable nginx phase (content_by_lua*, access_by_lua*, rewrite_by_lua*).
function M.run(op, args, mode)
  mode = mode or M.mode()
  if mode == "worker" then return M.dispatch(op, args) end
  if not semaphore then
    semaphore = assert(require("ngx.semaphore").new(M.vms))
  end
  local ok, err = semaphore:wait(M.wait)
  if not ok then
    return { ok = false, error = { code = "unavailable", message = "server busy, try again" },
             detail = "waiting for a thread VM: " .. tostring(err) }
  end
  local done, res = ngx.run_worker_thread(M.pool, "tododb.nginx", "dispatch", op, args)
  semaphore:post(1)
  if not done then
    return { ok = false, error = { code = "internal", message = "internal error" },
             detail = "run_worker_thread: " .. tostring(res) }
  end
  return res
end

return M
