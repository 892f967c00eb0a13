-- examples/nginx/handler.lua: a JSON todo API over tododb, for nginx with
-- lua-nginx-module (see examples/nginx/nginx.conf and scripts/serve).
--
--   POST   /api/users                  {email, password}        -> 201 user (202 with TODODB_SIGNUP_UNIFORM=1)
--   POST   /api/tokens                 {email, password}        -> 201 {token, token_type, expires_in}
--   GET    /api/todos?completed=&search=&order=&limit=&after=   -> {items, next}
--   POST   /api/todos                  {title, description?, completed?} -> 201 todo
--   GET    /api/todos/{id}                                      -> todo
--   PATCH  /api/todos/{id}             {title?, description?, completed?} -> todo
--   DELETE /api/todos/{id}                                      -> 204
--   POST   /api/todos/complete-all                              -> {updated}
--   DELETE /api/todos?completed=true                            -> {deleted}
--   PATCH  /api/todos                  {ops: [{op, id?, title?, description?, completed?}, …]}
--                                      -> {results: [todo | {id, deleted: true}, …]}, all or none
--
-- Todo routes need `Authorization: Bearer <token>`: our own HS256 token from
-- /api/tokens, or with TODODB_JWKS_URL / TODODB_JWKS_FILE set a token of an
-- external auth service such as Better Auth (examples/nginx/jwks.lua; its
-- users are provisioned on first use, /api/users and /api/tokens answer 404).
-- TODODB_CORS_ORIGINS lists the browser origins allowed to call. Every error is
-- {"error":{"code","message","field","request_id"}}: invalid 422 (400 for a
-- body that is not a JSON object or a malformed query), unauthorized 401,
-- not_found 404, conflict 409, unavailable 503, internal 500, 413 body too
-- large, 415 body not application/json. Every answer has an X-Request-Id
-- header. Messages never carry database or server text; the details go to
-- the error log under the request id: expected failures (and why a token was
-- refused) at info level, an unavailable database at warn, real faults at error.
-- A PATCH /api/todos error names the failing operation in error.index (1-based).
local cjson = require("cjson").new()
local tododb = require "tododb"
local tnginx = require "tododb.nginx"
local jwks = require "jwks"

local H = {
  max_body = 16 * 1024,       -- bytes of JSON a request may carry
  max_ops = 100,              -- operations in one PATCH /api/todos
}

cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(16)

local null = cjson.null       -- the same light userdata as tododb.null

-- JSON output -----------------------------------------------------------------
-- Todos, pages and users arrive as JSON text written by tododb in C (the
-- *_json methods) and are sent as they are. This small encoder is for the
-- rest (errors, counts, batch results): integers (ids) must come out exact,
-- and cjson 2.1.0 prints numbers with at most 14 significant digits; empty
-- arrays must stay [].

local ARRAY = {}              -- metatable marking a table as a JSON array
local RAW = {}                -- metatable of { "digits" }: an integer as text

local function array(t) return setmetatable(t or {}, ARRAY) end

-- Ids on LuaJIT beyond 2^53 arrive as decimal strings: emit them as numbers.
local function int(v)
  if type(v) == "string" and v:match "^%-?%d+$" then return setmetatable({ v }, RAW) end
  return v
end

local function encode_number(v)
  if v ~= v or v == math.huge or v == -math.huge then return "null" end
  if v == math.floor(v) and v > -2^63 and v < 2^63 then
    return string.format("%.0f", v)
  end
  return string.format("%.17g", v)
end

local function encode(v)
  local t = type(v)
  if v == nil or v == null then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then return encode_number(v)
  elseif t == "string" then return (cjson.encode(v):gsub("\\/", "/"))
  elseif t == "table" then
    local mt, out = getmetatable(v), {}
    if mt == RAW then return v[1] end
    if mt == ARRAY or v[1] ~= nil then
      for i = 1, #v do out[i] = encode(v[i]) end
      return "[" .. table.concat(out, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for i, k in ipairs(keys) do out[i] = encode(k) .. ":" .. encode(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  return "null"
end

local function todo_json(t)
  t.id, t.user_id = int(t.id), int(t.user_id)
  return t
end

-- Responses -------------------------------------------------------------------

local STATUS = {
  invalid = 422, unauthorized = 401, not_found = 404, conflict = 409,
  unavailable = 503, internal = 500,
}

-- An error answer: status, body (index: the failing operation of a batch).
local function fail(status, code, message, field, index)
  return status, { error = { code = code, message = message, field = field or null, index = index } }
end

-- nginx's $request_id, read once: an unindexed variable is computed anew
-- (a new random id) on every read.
local function request_id()
  local ctx = ngx.ctx
  if not ctx.request_id then ctx.request_id = ngx.var.request_id end
  return ctx.request_id
end

-- A line in nginx's error log, tagged with the request id the answer carries.
local function log(level, ...)
  ngx.log(level, "tododb: request ", request_id(), ": ", ...)
end

-- Maps a failed tododb.nginx call ({ error =, detail = }, already
-- client-safe: tododb.nginx.failure) to an answer; the detail goes to the
-- log: error level for 500, warn for 503, info for the rest.
local function db_fail(res)
  local e = res.error or {}
  local status = STATUS[e.code] or 500
  if status >= 500 then
    log(status == 503 and ngx.WARN or ngx.ERR, tostring(e.code), ": ", tostring(res.detail))
  elseif res.detail then
    log(ngx.INFO, tostring(e.code), ": ", tostring(res.detail))
  end
  return fail(status, e.code, e.message, e.field, e.index)
end

-- CORS (TODODB_CORS_ORIGINS: comma-separated origins, "*" for any): an
-- allowed Origin gets Access-Control-Allow-Origin on every answer, and
-- preflights are answered here. Tokens travel in Authorization, never in
-- cookies, so no Access-Control-Allow-Credentials.
local function cors_origin()
  local origin, list = ngx.var.http_origin, tnginx.getenv "TODODB_CORS_ORIGINS"
  if not origin or not list then return nil end
  for o in list:gmatch "[^,%s]+" do
    if o == "*" or o == origin then return origin end
  end
end

-- Every answer carries the request id (X-Request-Id, and request_id in an
-- error body): the key to the error log's lines about it.
local function send(status, body, headers)
  ngx.req.discard_body()                -- no-op when the body was read
  ngx.status = status
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.header["X-Request-Id"] = request_id()
  local origin = cors_origin()
  if origin then
    ngx.header["Access-Control-Allow-Origin"] = origin
    ngx.header["Access-Control-Expose-Headers"] = "Location, X-Request-Id"
    ngx.header["Vary"] = "Origin"
  end
  if type(body) == "table" and body.error then
    body.error.request_id = request_id()
    if status < 500 then log(ngx.INFO, status, " ", tostring(body.error.code), ": ", tostring(body.error.message)) end
  end
  if body == nil then return ngx.exit(status) end
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.print(type(body) == "string" and body or encode(body), "\n")
  return ngx.exit(ngx.HTTP_OK)
end

-- Requests --------------------------------------------------------------------

-- The JSON object in the body: table | nil, status, body.
local function read_json()
  local ct = (ngx.var.content_type or ""):lower()
  if not (ct:match "^%s*application/json%s*$" or ct:match "^%s*application/json%s*;") then
    return nil, fail(415, "unsupported_media_type", "the body must be application/json")
  end
  local len = tonumber(ngx.var.http_content_length or "")
  if len and len > H.max_body then
    return nil, fail(413, "too_large", "the body must be at most " .. H.max_body .. " bytes")
  end
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if not data and ngx.req.get_body_file() then
    return nil, fail(413, "too_large", "the body must be at most " .. H.max_body .. " bytes")
  end
  data = data or ""
  if #data > H.max_body then
    return nil, fail(413, "too_large", "the body must be at most " .. H.max_body .. " bytes")
  end
  local ok, v = pcall(cjson.decode, data)
  if not ok then return nil, fail(400, "malformed", "the body is not valid JSON") end
  if type(v) ~= "table" then
    return nil, fail(400, "malformed", "the body must be a JSON object")
  end
  for k in pairs(v) do
    if type(k) ~= "string" then return nil, fail(400, "malformed", "the body must be a JSON object") end
  end
  return v
end

-- Checks the fields of a JSON object: spec maps name -> "string" |
-- "string?" (string or null) | "boolean"; required names are listed in req.
-- Returns nil or status, body (422 naming the field).
local function check_fields(obj, spec, req)
  for k, v in pairs(obj) do
    local want = spec[k]
    if not want then return fail(422, "invalid", "unknown field '" .. k .. "'", k) end
    local t = type(v)
    if want == "string" and t ~= "string" then
      return fail(422, "invalid", k .. " must be a string", k)
    elseif want == "string?" and t ~= "string" and v ~= null then
      return fail(422, "invalid", k .. " must be a string or null", k)
    elseif want == "boolean" and t ~= "boolean" then
      return fail(422, "invalid", k .. " must be true or false", k)
    end
  end
  for _, k in ipairs(req or {}) do
    if obj[k] == nil then return fail(422, "invalid", k .. " is required", k) end
  end
end

-- The user of the bearer token: a user id (own HS256 tokens), or the
-- claims of an external identity (JWKS mode; provisioned by tododb.nginx)
-- | nil, status, body.
local function authenticate()
  local h = ngx.var.http_authorization
  local token = type(h) == "string" and h:match "^%s*[Bb]earer%s+(%S+)%s*$"
  if not token then
    return nil, fail(401, "unauthorized", "a bearer token is required")
  end
  if jwks.enabled() then
    local claims, why, code = jwks.identity(token)
    if claims then return claims end
    if code == "unavailable" then
      return nil, db_fail(tnginx.failure({ code = "unavailable", message = why }, "key set"))
    end
    log(ngx.INFO, "token refused: ", tostring(why))
    return nil, fail(401, "unauthorized", "the bearer token is not valid")
  end
  local key, why = tnginx.secret()
  if not key then return nil, db_fail(tnginx.failure(why)) end
  -- Why a token failed (expired, bad signature, ...) is for the log only.
  local uid, err = tododb.user_id_from_token(token, key)
  if not uid then
    log(ngx.INFO, "token refused: ", tostring(err and err.message))
    return nil, fail(401, "unauthorized", "the bearer token is not valid")
  end
  return uid
end

-- Query arguments: table | nil, status, body (400 for malformed ones).
local function query()
  local args, err = ngx.req.get_uri_args(32)
  if err == "truncated" then return nil, fail(400, "malformed", "too many query arguments") end
  local q = {}
  for k, v in pairs(args) do
    if type(v) ~= "string" then
      return nil, fail(400, "malformed", "query argument '" .. k .. "' must appear once, with a value", k)
    end
    q[k] = v
  end
  if q.completed ~= nil then
    if q.completed == "true" then q.completed = true
    elseif q.completed == "false" then q.completed = false
    else return nil, fail(400, "malformed", "completed must be true or false", "completed") end
  end
  if q.limit ~= nil then
    if not q.limit:match "^%d+$" or #q.limit > 9 then
      return nil, fail(400, "malformed", "limit must be an integer", "limit")
    end
    q.limit = tonumber(q.limit)
  end
  return q
end

local function call(op, args)
  local res = tnginx.run(op, args)
  if not res.ok then return nil, db_fail(res) end
  return res.value
end

-- Routes: each returns status, body [, headers] ----------------------------

local TODO_FIELDS = { title = "string", description = "string?", completed = "boolean" }
local ACCOUNT_FIELDS = { email = "string", password = "string" }

local function todo_input(obj)
  local t = {}
  for k, v in pairs(obj) do t[k] = v end
  if t.description == null then t.description = "" end   -- "" clears, like null
  return t
end

local routes = {}

-- The {email, password} body of the account routes: table | nil, status, body.
local function account()
  local obj, st, body = read_json()
  if not obj then return nil, st, body end
  st, body = check_fields(obj, ACCOUNT_FIELDS, { "email", "password" })
  if st then return nil, st, body end
  return { email = obj.email, password = obj.password }
end

-- 201 with the user; 409 conflict when the email is taken. With
-- TODODB_SIGNUP_UNIFORM=1 both are 202 {"status":"accepted"}: the answer does
-- not tell whether the email had an account (for deployments that confirm
-- the address by mail before the account is usable).
function routes.register()
  local u, st, body = account()
  if u then u, st, body = call("register", u) end
  if tnginx.signup_uniform() and (u or body.error.code == "conflict") then
    return 202, { status = "accepted" }
  end
  if not u then return st, body end
  return 201, u
end

function routes.token()
  local r, st, body = account()
  if r then r, st, body = call("login", r) end
  if not r then return st, body end
  return 201, { token = r.token, token_type = r.token_type, expires_in = r.expires_in }
end

function routes.list(uid)
  local q, st, body = query()
  if not q then return st, body end
  local page
  page, st, body = call("list", {
    user_id = uid, completed = q.completed, search = q.search, order = q.order,
    limit = q.limit, after = q.after,
  })
  if not page then return st, body end
  return 200, page
end

function routes.create(uid)
  local obj, st, body = read_json()
  if not obj then return st, body end
  st, body = check_fields(obj, TODO_FIELDS, { "title" })
  if st then return st, body end
  local t
  t, st, body = call("create", { user_id = uid, todo = todo_input(obj) })
  if not t then return st, body end
  -- tododb writes the fields in to_table() order: id first.
  return 201, t, { Location = "/api/todos/" .. t:match '^{"id":(%d+),' }
end

function routes.get(uid, id)
  local t, st, body = call("get", { user_id = uid, id = id })
  if not t then return st, body end
  return 200, t
end

function routes.update(uid, id)
  local obj, st, body = read_json()
  if not obj then return st, body end
  st, body = check_fields(obj, TODO_FIELDS)
  if st then return st, body end
  if next(obj) == nil then
    return fail(422, "invalid", "nothing to update: send title, description or completed")
  end
  local t
  t, st, body = call("update", { user_id = uid, id = id, changes = todo_input(obj) })
  if not t then return st, body end
  return 200, t
end

function routes.delete(uid, id)
  local ok, st, body = call("delete", { user_id = uid, id = id })
  if not ok then return st, body end
  return 204
end

function routes.complete_all(uid)
  local n, st, body = call("complete_all", { user_id = uid })
  if not n then return st, body end
  return 200, { updated = n }
end

function routes.delete_completed(uid)
  local q, st, body = query()
  if not q then return st, body end
  if q.completed ~= true then
    return fail(422, "invalid", "only completed todos can be deleted in bulk: DELETE /api/todos?completed=true",
                "completed")
  end
  local n
  n, st, body = call("delete_completed", { user_id = uid })
  if not n then return st, body end
  return 200, { deleted = n }
end

-- The operations of a batch, checked: list | nil, status, body.
local OP_FIELDS = {
  create = { title = "string", description = "string?", completed = "boolean" },
  update = { id = "id", title = "string", description = "string?", completed = "boolean" },
  toggle = { id = "id" }, delete = { id = "id" }, get = { id = "id" },
}

local function batch_ops(obj)
  for k in pairs(obj) do
    if k ~= "ops" then return nil, fail(422, "invalid", "unknown field '" .. k .. "'", k) end
  end
  local list, n = obj.ops, 0
  if type(list) ~= "table" then return nil, fail(422, "invalid", "ops must be an array", "ops") end
  for k in pairs(list) do
    if type(k) ~= "number" then return nil, fail(422, "invalid", "ops must be an array", "ops") end
    n = n + 1
  end
  if n == 0 or n ~= #list then return nil, fail(422, "invalid", "ops must be a non-empty array", "ops") end
  if n > H.max_ops then
    return nil, fail(422, "invalid", "at most " .. H.max_ops .. " operations", "ops")
  end
  local out = {}
  for i, op in ipairs(list) do
    local spec = type(op) == "table" and OP_FIELDS[op.op]
    if not spec then
      return nil, fail(422, "invalid", "op must be create, update, toggle, delete or get", "op", i)
    end
    local t = {}
    for k, v in pairs(op) do if k ~= "op" and k ~= "id" then t[k] = v end end
    local st, body = check_fields(t, spec)
    if st then
      body.error.index = i
      return nil, st, body
    end
    if spec.id and (type(op.id) ~= "number" or op.id ~= math.floor(op.id)) then
      return nil, fail(422, "invalid", "id must be an integer", "id", i)
    elseif not spec.id and op.id ~= nil then
      return nil, fail(422, "invalid", "unknown field 'id'", "id", i)
    end
    t.op, t.id = op.op, op.id
    if t.description == null then t.description = "" end   -- "" clears, like null
    out[i] = t
  end
  return out
end

-- PATCH /api/todos: several changes in one round trip, all or none.
function routes.batch(uid)
  local obj, st, body = read_json()
  if not obj then return st, body end
  local list
  list, st, body = batch_ops(obj)
  if not list then return st, body end
  local results
  results, st, body = call("batch", { user_id = uid, ops = list })
  if not results then return st, body end
  for i, r in ipairs(results) do results[i] = r.deleted and { id = int(r.id), deleted = true } or todo_json(r) end
  return 200, { results = array(results) }
end

-- path -> { METHOD = { route, needs_auth } }, plus the id of /api/todos/{id}.
local function match(path)
  if (path == "/api/users" or path == "/api/tokens") and jwks.enabled() then
    return nil                          -- accounts live in the auth service
  end
  if path == "/api/users" then return { POST = { routes.register } } end
  if path == "/api/tokens" then return { POST = { routes.token } } end
  if path == "/api/todos" then
    return { GET = { routes.list, true }, POST = { routes.create, true },
             DELETE = { routes.delete_completed, true }, PATCH = { routes.batch, true } }
  end
  if path == "/api/todos/complete-all" then return { POST = { routes.complete_all, true } } end
  local id = path:match "^/api/todos/(%d+)$"
  if id then
    return { GET = { routes.get, true }, PATCH = { routes.update, true },
             DELETE = { routes.delete, true } }, id
  end
end

local function preflight(methods)
  local allow = {}
  for m in pairs(methods) do allow[#allow + 1] = m end
  table.sort(allow)
  if not cors_origin() then return fail(403, "forbidden", "origin not allowed") end
  return 204, nil, {
    ["Access-Control-Allow-Methods"] = table.concat(allow, ", "),
    ["Access-Control-Allow-Headers"] = "Authorization, Content-Type",
    ["Access-Control-Max-Age"] = "600",
  }
end

local function route()
  local path = ngx.var.uri:gsub("/+$", "")
  local methods, id = match(path)
  if not methods then
    if path:match "^/api/todos/[^/]+$" then return fail(404, "not_found", "todo not found") end
    return fail(404, "not_found", "no such resource")
  end
  local method = ngx.req.get_method()
  if method == "OPTIONS" and ngx.var.http_access_control_request_method then
    return preflight(methods)
  end
  local r = methods[method]
  if not r then
    local allow = {}
    for m in pairs(methods) do allow[#allow + 1] = m end
    table.sort(allow)
    local st, body = fail(405, "method_not_allowed", method .. " is not allowed here")
    return st, body, { Allow = table.concat(allow, ", ") }
  end
  local uid
  if r[2] then
    local st, body
    uid, st, body = authenticate()
    if not uid then return st, body, { ["WWW-Authenticate"] = 'Bearer realm="tododb"' } end
  end
  return r[1](uid, id)
end

-- content_by_lua_block { require("handler").handle() }
function H.handle()
  local ok, status, body, headers = xpcall(route, debug.traceback)
  if not ok then
    status, body = db_fail(tnginx.failure(status, "handler failed"))
    headers = nil
  end
  return send(status, body, headers)
end

-- init_worker_by_lua_block { require("handler").init_worker() }
-- Checks the configuration once per worker; connections open on first use.
function H.init_worker()
  if jwks.enabled() then
    local problem = jwks.problem()
    if problem then ngx.log(ngx.WARN, "tododb: ", problem) end
    return
  end
  local _, why = tnginx.secret()
  if why then ngx.log(ngx.WARN, "tododb: ", why, "; /api/tokens and todo routes will fail") end
  ngx.log(ngx.INFO, "tododb: ", tnginx.mode(), " mode",
          tnginx.mode() == "thread" and (", thread pool '" .. tnginx.pool .. "'") or "")
end

H.encode = encode
return H
