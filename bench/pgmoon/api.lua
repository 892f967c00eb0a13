-- bench/pgmoon/api.lua: the pgmoon baseline of bench/http. The three routes
-- the benchmark drives, answering the same JSON as examples/nginx (checked
-- by spec/69-bench_pgmoon_spec.lua), written the way an OpenResty user
-- writes them: pgmoon on cosockets with a keepalive pool, one simple-query
-- round trip per request carrying set_config('tododb.user_id', …, true)
-- and the statement, lua-cjson for JSON.
--   GET  /api/todos?limit=&after=   -> {items, next}   (newest first)
--   GET  /api/todos/{id}            -> todo
--   POST /api/todos                 {title, description?, completed?} -> 201 todo
-- Authentication is the example's: the same HS256 bearer token, verified by
-- the same function (tododb.user_id_from_token), so both pay the same for it.
-- Environment: TODODB_TOKEN_SECRET, BENCH_PG_SOCKET (the server's socket
-- file), BENCH_PG_DATABASE, BENCH_PG_USER, BENCH_PGMOON_POOL (connections
-- per worker; requests beyond them queue in the pool's backlog).
local pgmoon = require "pgmoon"
local cjson = require "cjson"
local tododb = require "tododb"

local M = {}

local SECRET = os.getenv "TODODB_TOKEN_SECRET"
local CONFIG = {
  socket_path = os.getenv "BENCH_PG_SOCKET",
  database = os.getenv "BENCH_PG_DATABASE",
  user = os.getenv "BENCH_PG_USER",
  pool_size = tonumber(os.getenv "BENCH_PGMOON_POOL" or "4"),
  backlog = 4096,
}
local COLS = "id, user_id, title, description, completed, created_at, updated_at"

local function answer(status, body, headers)
  ngx.status = status
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.print(body, "\n")
  return ngx.exit(ngx.HTTP_OK)
end

local function fail(status, code, message)
  return answer(status, cjson.encode { error = { code = code, message = message } })
end

-- One round trip: set_config and the statement, one implicit transaction.
-- Returns the statement's rows | nil, err.
local function run(uid, sql)
  local pg = pgmoon.new(CONFIG)
  local ok, err = pg:connect()
  if not ok then return nil, err end
  if pg.sock:getreusedtimes() == 0 then      -- a new connection: timestamps in UTC
    ok, err = pg:query "SET TimeZone = 'UTC'"
    if not ok then pg:disconnect() return nil, err end
  end
  local res
  res, err = pg:query(("SELECT set_config('tododb.user_id', '%d', true); %s"):format(uid, sql))
  if not res then pg:disconnect() return nil, err end
  pg:keepalive()
  return res[2]
end

-- "2026-01-13 09:30:00.000123+00" -> "2026-01-13T09:30:00.000123Z"
local function iso(ts)
  local d, t, f = ts:match "^(%d+%-%d%d%-%d%d) (%d%d:%d%d:%d%d)%.?(%d*)%+00$"
  return d .. "T" .. t .. "." .. f .. ("0"):rep(6 - #f) .. "Z"
end

local function todo(row)
  row.created_at, row.updated_at = iso(row.created_at), iso(row.updated_at)
  if row.description == nil then row.description = cjson.null end
  return row
end

local function list(uid)
  local args = ngx.req.get_uri_args()
  local limit = tonumber(args.limit or "50")
  local after = tonumber(args.after or "9223372036854775807")
  if not limit or limit < 1 or limit > 200 or limit % 1 ~= 0 or not after or after % 1 ~= 0 then
    return fail(400, "malformed", "limit and after must be integers")
  end
  local rows, err = run(uid, ("SELECT %s FROM todos WHERE user_id = %d AND id < %.0f"
    .. " ORDER BY id DESC LIMIT %d"):format(COLS, uid, after, limit + 1))
  if not rows then return fail(500, "internal", tostring(err)) end
  local items = {}
  for i = 1, math.min(#rows, limit) do items[i] = cjson.encode(todo(rows[i])) end
  local next_ = #rows > limit and cjson.encode(tostring(rows[limit].id)) or "null"
  return answer(200, '{"items":[' .. table.concat(items, ",") .. '],"next":' .. next_ .. "}")
end

local function get(uid, id)
  local rows, err = run(uid, ("SELECT %s FROM todos WHERE user_id = %d AND id = %d"):format(COLS, uid, id))
  if not rows then return fail(500, "internal", tostring(err)) end
  if not rows[1] then return fail(404, "not_found", "todo not found") end
  return answer(200, cjson.encode(todo(rows[1])))
end

local function create(uid)
  ngx.req.read_body()
  local ok, t = pcall(cjson.decode, ngx.req.get_body_data() or "")
  if not ok or type(t) ~= "table" then return fail(400, "malformed", "the body is not a JSON object") end
  local title = type(t.title) == "string" and t.title:match "^%s*(.-)%s*$"
  if not title or title == "" or #title:gsub("[\128-\191]", "") > 200 then
    return fail(422, "invalid", "title must be 1 to 200 characters")
  end
  local desc = t.description
  if desc ~= nil and desc ~= cjson.null and type(desc) ~= "string" then
    return fail(422, "invalid", "description must be a string or null")
  end
  if t.completed ~= nil and type(t.completed) ~= "boolean" then
    return fail(422, "invalid", "completed must be true or false")
  end
  local pg = pgmoon.new(CONFIG)                -- for escape_literal only
  local rows, err = run(uid, ("WITH n AS (INSERT INTO todo_counters AS c (user_id, last_id)"
    .. " VALUES (%d, 1) ON CONFLICT (user_id) DO UPDATE SET last_id = c.last_id + 1"
    .. " RETURNING c.last_id) INSERT INTO todos (user_id, id, title, description, completed)"
    .. " SELECT %d, n.last_id, %s, %s, %s FROM n RETURNING %s"):format(uid, uid,
    pg:escape_literal(title), (desc == nil or desc == cjson.null or desc == "") and "NULL"
    or pg:escape_literal(desc), t.completed and "true" or "false", COLS))
  if not rows then return fail(500, "internal", tostring(err)) end
  local row = todo(rows[1])
  return answer(201, cjson.encode(row), { Location = "/api/todos/" .. row.id })
end

-- content_by_lua_block { require("api").handle() }
function M.handle()
  local h = ngx.var.http_authorization
  local token = h and h:match "^%s*[Bb]earer%s+(%S+)%s*$"
  local uid = token and tododb.user_id_from_token(token, SECRET)
  if not uid then return fail(401, "unauthorized", "the bearer token is not valid") end
  local path, method = ngx.var.uri, ngx.req.get_method()
  if path == "/api/todos" then
    if method == "GET" then return list(uid) end
    if method == "POST" then return create(uid) end
  else
    local id = tonumber(path:match "^/api/todos/(%d+)$")
    if id and id < 2^53 and method == "GET" then return get(uid, id) end
  end
  return fail(404, "not_found", "no such resource")
end

return M
