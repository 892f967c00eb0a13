-- spec/60-nginx_spec.lua: examples/nginx — the JSON API on a real nginx
-- (lua-nginx-module, the LuaJIT build of tododb) against the test database,
-- driven with curl, in both modes of tododb.nginx; and the point of the
-- thread pool: a slow login does not hold up other requests.
-- The spec runs under lua5.4 and luajit alike: nginx always loads
-- build/luajit, the interpreter only drives processes.
local support = require "support"
local tododb = require "tododb"
local cjson = require "cjson"

local SECRET = "nginx-spec-secret-0123456789abcdef-0123456789"
local null = cjson.null

-- Processes -----------------------------------------------------------------

local sh, read, write = support.sh, support.read, support.write

local exec = support.run

local capture = support.capture

local TOP = support.top
local ROOT = capture("id -u"):gsub("%s+$", "") == "0"
local MODULES = os.getenv "NGINX_MODULES" or "/usr/lib/nginx/modules"
-- Children must not inherit sanitizer runtimes (make check-asan), nor
-- settings of the environment the specs run in.
local ENV = "env -u LD_PRELOAD -u TODODB_TOKEN_SECRET -u TODODB_SIGNUP_UNIFORM "

do
  local seed = os.time() + (tonumber(tostring({}):match "0x(%x+)" or "0", 16) or 0) % 1000003
  math.randomseed(seed)
end

-- support.url with application_name set (URL or key=value form).
local function with_param(url, k, v)
  if url:match "^postgres[%w]*://" then
    return url .. (url:find("?", 1, true) and "&" or "?") .. k .. "=" .. v
  end
  return url .. " " .. k .. "=" .. v
end

-- An nginx serving examples/nginx on a free port, in its own prefix dir,
-- logging down to info level. opts: mode ("thread" | "worker"), workers,
-- threads, pwhash, url (DATABASE_URL), secret (false: none), uniform
-- (TODODB_SIGNUP_UNIFORM=1).
local Server = {}
Server.__index = Server

local function start(opts)
  assert(io.open(TOP .. "/build/luajit/tododb/core.so"),
         "build/luajit/tododb/core.so is missing (make LUA=luajit)")
  assert(io.open(MODULES .. "/ngx_http_lua_module.so"),
         MODULES .. "/ngx_http_lua_module.so is missing (make deps)")
  local dir = os.tmpname()
  os.remove(dir)
  dir = dir .. "-nginx"
  assert(exec("mkdir -p " .. sh(dir .. "/logs") .. " " .. sh(dir .. "/tmp")))
  local s = setmetatable({ dir = dir, n = 0 }, Server)
  local template = read(TOP .. "/examples/nginx/nginx.conf")
  -- nginx's connections carry their own application_name, so that a spec
  -- can find (and terminate) exactly those.
  s.appname = "tododb-nginx-spec-" .. math.random(1000000, 9999999)
  local url = opts.url or with_param(support.url, "application_name", s.appname)
  local env = ENV .. "DATABASE_URL=" .. sh(url)
    .. (opts.secret == false and "" or " TODODB_TOKEN_SECRET=" .. sh(SECRET))
    .. (opts.uniform and " TODODB_SIGNUP_UNIFORM=1" or "")
    .. " TODODB_PWHASH=" .. sh(opts.pwhash or "min")
    .. " TODODB_NGINX_MODE=" .. sh(opts.mode or "thread")
  local tried = {}
  for _ = 1, 20 do
    local port = math.random(20000, 59999)
    local conf = template:gsub("@(%u+)@", {
      MODULES = MODULES, USER = ROOT and "user root;" or "", PREFIX = dir, TOP = TOP,
      PORT = tostring(port), WORKERS = tostring(opts.workers or 2),
      THREADS = tostring(opts.threads or 4), RESOLVER = "",
    }):gsub("(\nerror_log %S+) warn;", "%1 info;")
    write(dir .. "/nginx.conf", conf)
    local cmd = env .. " nginx -p " .. sh(dir) .. " -c " .. sh(dir .. "/nginx.conf")
      .. " -e " .. sh(dir .. "/logs/error.log") .. " >" .. sh(dir .. "/start.log") .. " 2>&1"
    if exec(cmd) then
      s.port = port
      s.pid = read(dir .. "/nginx.pid"):match "%d+"
      assert(s.pid, "nginx started without a pid file")
      return s
    end
    local log = read(dir .. "/start.log") .. read(dir .. "/logs/error.log")
    if not log:find("Address already in use", 1, true) then
      exec("rm -rf " .. sh(dir))
      error("nginx did not start:\n" .. log)
    end
    tried[#tried + 1] = port
    os.remove(dir .. "/logs/error.log")   -- the next try's log must not hold this bind failure
  end
  exec("rm -rf " .. sh(dir))
  error("no free port among " .. table.concat(tried, " "))
end

-- Stops nginx (waits for the master to exit) and removes its directory.
function Server:stop()
  if self.pid then
    support.stop_pid(self.pid)
    self.pid = nil
  end
  exec("rm -rf " .. sh(self.dir))
end

function Server:error_log() return read(self.dir .. "/logs/error.log") end

function Server:url(path) return "http://127.0.0.1:" .. self.port .. path end

-- The curl command line of a request (see Server:request).
function Server:curl(method, path, o)
  o = o or {}
  local parts = { ENV .. "curl -s -S --max-time 10 -X", method }
  if o.token then parts[#parts + 1] = "-H " .. sh("Authorization: Bearer " .. o.token) end
  local body, ctype = o.body, o.content_type
  if o.json ~= nil then
    body = o.json
    if type(body) ~= "string" then body = cjson.encode(body) end
    ctype = ctype or "application/json"
  end
  if body then
    self.n = self.n + 1
    local file = self.dir .. "/body" .. self.n
    write(file, body)
    parts[#parts + 1] = "--data-binary @" .. sh(file)
    parts[#parts + 1] = "-H " .. sh("Content-Type:" .. (ctype and " " .. ctype or ""))
  end
  parts[#parts + 1] = sh(self:url(path))
  return table.concat(parts, " ")
end

-- server:request(method, path, { token =, json = table | text, body =,
--   content_type = }) -> { status =, body =, json =, headers = }
function Server:request(method, path, o)
  local hfile = self.dir .. "/headers"
  local out = capture(self:curl(method, path, o) .. " -D " .. sh(hfile)
                      .. " -o - -w '\\n%{http_code}' 2>&1")
  local body, status = out:match "^(.*)\n(%d%d%d)$"
  assert(status, "curl failed: " .. out)
  local r = { status = tonumber(status), body = body, headers = {} }
  for k, v in read(hfile):gmatch "([%w-]+):%s*([^\r\n]*)" do r.headers[k:lower()] = v end
  if body ~= "" then
    local ok, v = pcall(cjson.decode, body)
    if ok then r.json = v end
  end
  return r
end

local function id_text(id) return string.format("%.0f", id) end

-- Assertions ------------------------------------------------------------------

-- r is an error answer with this status, code and (if given) field, and the
-- request id of its X-Request-Id header (unless nginx itself answered, outside /api/).
local function assert_error(r, status, code, field, outside_api)
  assert.equal(status, r.status, r.body)
  assert.equal("application/json", r.headers["content-type"])
  assert.is_table(r.json, r.body)
  assert.is_table(r.json.error, r.body)
  assert.equal(code, r.json.error.code, r.body)
  assert.is_string(r.json.error.message)
  if field ~= nil then assert.equal(field, r.json.error.field, r.body) end
  assert.not_match("stack traceback", r.body)
  assert.not_match("SELECT", r.body)
  if not outside_api then
    assert.matches("^%x+$", r.headers["x-request-id"] or "")
    assert.equal(r.headers["x-request-id"], r.json.error.request_id, r.body)
  end
end

-- Nothing of the database or the server in an answer.
local function assert_no_internals(r)
  for _, word in ipairs { "todos", "constraint", "foreign", "violat", "socket", "/tmp", "PGSQL", "FATAL",
                          "database", "127.0.0.1", "signature", "expired", "algorithm", "TODODB_" } do
    assert.is_nil(r.body:find(word, 1, true), "'" .. word .. "' in " .. r.body)
  end
end

-- The error log's lines about one request (by the id its answer carried).
local function log_of(server, r)
  local id, lines = assert(r.headers["x-request-id"]), {}
  for line in server:error_log():gmatch "[^\n]+" do
    if line:find("request " .. id, 1, true) then lines[#lines + 1] = line end
  end
  return table.concat(lines, "\n")
end

local function assert_clean_log(server)
  local log = server:error_log()
  for line in log:gmatch "[^\n]+" do
    assert.not_match("%[error%]", line)
    assert.not_match("%[crit%]", line)
    assert.not_match("%[alert%]", line)
    assert.not_match("%[emerg%]", line)
  end
end

-- What clients may read of an error (no nginx needed) ------------------------

describe("tododb.nginx.failure", function()
  local tnginx = require "tododb.nginx"
  local db
  setup(function() db = support.fresh() end)
  teardown(function() if db then db:close() end end)

  it("keeps the code, message and field of an error tododb itself worded", function()
    local _, err = db:create_user { email = "not an email", password = "long enough" }
    local r = tnginx.failure(err)
    assert.is_false(r.ok)
    assert.same({ code = "invalid", message = err.message, field = "email" }, r.error)
    assert.is_nil(r.detail)
  end)

  it("replaces database text by a generic message and keeps it in detail", function()
    local u = assert(db:create_user { email = "gone@example.com", password = "long enough" })
    local s = db:session(u.id)
    assert(db:delete_user(u.id))
    local _, err = s:create_todo { title = "orphan" }
    assert.equal("not_found", err.code)
    local r = tnginx.failure(err, "create")
    assert.same({ code = "not_found", message = "not found" }, r.error)
    assert.matches("^create: %[23503%] ", r.detail)
    assert.matches(err.message, r.detail, 1, true)
    local _, qerr = db:query "SELECT * FROM no_such_table_here"
    r = tnginx.failure(qerr)
    assert.same({ code = "internal", message = "internal error" }, r.error)
    assert.matches("no_such_table_here", r.detail, 1, true)
  end)

  it("never shows the message of an unavailable or internal error", function()
    local r = tnginx.failure { code = "unavailable", message = 'connection to server on socket "/tmp/x" failed' }
    assert.equal("unavailable", r.error.code)
    assert.is_nil(r.error.message:find("/tmp", 1, true))
    assert.matches("/tmp/x", r.detail, 1, true)
    r = tnginx.failure { code = "internal", message = "signing is not configured", detail = "no key" }
    assert.same({ code = "internal", message = "internal error" }, r.error)
    assert.equal("signing is not configured (no key)", r.detail)
  end)

  it("makes anything else (a Lua error, an unknown code) internal", function()
    local r = tnginx.failure "handler.lua:12: attempt to index a nil value"
    assert.same({ code = "internal", message = "internal error" }, r.error)
    assert.matches("attempt to index", r.detail, 1, true)
    r = tnginx.failure { code = "weird", message = "?" }
    assert.equal("internal", r.error.code)
  end)
end)

describe("tododb.nginx.getenv", function()
  it("reads a variable, and an empty one as unset", function()
    local probe = [[-e 'local g = require("tododb.nginx").getenv
      io.write(tostring(g "TDB_SPEC_SET"), " ", tostring(g "TDB_SPEC_EMPTY"), " ", tostring(g "TDB_SPEC_NONE"))']]
    local out = capture("env -u TDB_SPEC_NONE TDB_SPEC_SET=yes TDB_SPEC_EMPTY= " .. support.interp .. " " .. probe)
    assert.equal("yes nil nil", out)
  end)
end)

describe("tododb.nginx.configure", function()
  local tnginx = require "tododb.nginx"

  it("takes vms and calls as positive integers and refuses anything else", function()
    local vms, calls = tnginx.vms, tnginx.calls
    finally(function() tnginx.configure { vms = vms, calls = calls } end)
    assert.equal(tnginx, tnginx.configure { vms = 6, calls = 2 })
    assert.equal(6, tnginx.vms)
    assert.equal(2, tnginx.calls)
    for _, bad in ipairs { 0, -1, 1.5, "2", true } do
      assert.has_error(function() tnginx.configure { calls = bad } end,
                       "tododb.nginx.configure: calls must be a positive integer")
      assert.has_error(function() tnginx.configure { vms = bad } end,
                       "tododb.nginx.configure: vms must be a positive integer")
    end
    assert.has_error(function() tnginx.configure { threads = 4 } end,
                     "tododb.nginx.configure: unknown option 'threads'")
    assert.equal(2, tnginx.calls)
  end)

  it("takes thread mode's calls from TODODB_NGINX_CALLS unless configure set them", function()
    local function calls(value, configure)
      local probe = [[-e 'local t = require("tododb.nginx") ]] .. (configure or "")
        .. [[ local n, why = t.db_calls() io.write(tostring(n), " ", tostring(why))']]
      return capture("env TODODB_NGINX_CALLS=" .. sh(value) .. " " .. support.interp .. " " .. probe)
    end
    assert.equal(tnginx.calls .. " nil", calls "")
    assert.equal("3 nil", calls "3")
    assert.equal("2 nil", calls("3", "t.configure { calls = 2 }"))
    for _, bad in ipairs { "0", "-1", "two", "1.5" } do
      assert.equal("nil TODODB_NGINX_CALLS must be a positive integer, got '" .. bad .. "'", calls(bad))
    end
  end)
end)

-- The API, in each mode -------------------------------------------------------

for _, mode in ipairs { "thread", "worker" } do
  describe("nginx JSON API (" .. mode .. " mode)", function()
    local server, db
    local alice, bob = {}, {}

    local function req(...) return server:request(...) end

    local function register(u, email)
      u.email, u.password = email, "correct horse battery"
      local r = req("POST", "/api/users", { json = { email = email, password = u.password } })
      assert.equal(201, r.status, r.body)
      u.id = r.json.id
      r = req("POST", "/api/tokens", { json = { email = email, password = u.password } })
      assert.equal(201, r.status, r.body)
      u.token = r.json.token
    end

    local function create(u, todo)
      local r = req("POST", "/api/todos", { token = u.token, json = todo })
      assert.equal(201, r.status, r.body)
      return r.json
    end

    setup(function()
      db = support.fresh()
      server = start { mode = mode }
      register(alice, "Alice-" .. mode .. "@Example.com")
      register(bob, "bob-" .. mode .. "@example.com")
    end)

    teardown(function()
      if server then server:stop() end
      if db then db:close() end
    end)

    describe("accounts", function()
      it("registers users without exposing their password", function()
        assert.is_number(alice.id)
        assert.is_string(alice.token)
        local r = req("POST", "/api/users",
                      { json = { email = "carol-" .. mode .. "@example.com", password = "long enough" } })
        assert.equal(201, r.status)
        assert.equal("carol-" .. mode .. "@example.com", r.json.email)
        assert.is_nil(r.json.password)
        assert.is_nil(r.json.hashed_password)
        assert.not_match("argon2", r.body)
      end)

      it("refuses a second account for the same email with 409", function()
        local r = req("POST", "/api/users",
                      { json = { email = alice.email:upper(), password = "another password" } })
        assert_error(r, 409, "conflict", "email")
      end)

      it("refuses bad account data with 422 naming the field", function()
        assert_error(req("POST", "/api/users", { json = { email = "not an email", password = "long enough" } }),
                     422, "invalid", "email")
        assert_error(req("POST", "/api/users", { json = { email = "dave@example.com", password = "short" } }),
                     422, "invalid", "password")
        assert_error(req("POST", "/api/users", { json = { email = 5, password = "long enough" } }),
                     422, "invalid", "email")
        assert_error(req("POST", "/api/users", { json = { email = "dave@example.com" } }),
                     422, "invalid", "password")
      end)

      it("answers a wrong password or an unknown email with the same 401", function()
        local a = req("POST", "/api/tokens", { json = { email = alice.email, password = "wrong password" } })
        local b = req("POST", "/api/tokens", { json = { email = "nobody@example.com", password = "wrong password" } })
        assert_error(a, 401, "unauthorized")
        assert_error(b, 401, "unauthorized")
        assert.equal(a.json.error.message, b.json.error.message)
      end)

      it("issues HS256 tokens whose sub is the user id, valid for an hour", function()
        local claims = assert(tododb.token.verify(alice.token, SECRET))
        assert.equal(id_text(alice.id), claims.sub)
        assert.is_true(claims.exp > os.time() + 3500 and claims.exp <= os.time() + 3601)
      end)
    end)

    describe("authentication", function()
      it("answers 401 without a token", function()
        local r = req("GET", "/api/todos")
        assert_error(r, 401, "unauthorized")
        assert.match("^Bearer", r.headers["www-authenticate"])
        assert_error(req("POST", "/api/todos", { json = { title = "x" } }), 401, "unauthorized")
        assert_error(req("POST", "/api/todos/complete-all"), 401, "unauthorized")
        assert_error(req("DELETE", "/api/todos/1"), 401, "unauthorized")
      end)

      it("answers 401 for a malformed token or another key's token", function()
        assert_error(req("GET", "/api/todos", { token = "not-a-token" }), 401, "unauthorized")
        local other = tododb.token.sign({ sub = id_text(alice.id) }, string.rep("k", 32), { expires_in = 60 })
        assert_error(req("GET", "/api/todos", { token = other }), 401, "unauthorized")
        local tampered = alice.token:sub(1, -3) .. (alice.token:sub(-2) == "AA" and "BB" or "AA")
        assert_error(req("GET", "/api/todos", { token = tampered }), 401, "unauthorized")
      end)

      it("takes a token of up to token.max_size in the Authorization header", function()
        -- Better Auth puts the user row in its tokens; nginx's default header
        -- buffers (8 KiB) would refuse such a token before the handler sees it.
        local pad = string.rep("a", math.floor(tododb.token.max_size * 3 / 4) - 400)
        local big = tododb.token.sign({ sub = id_text(alice.id), pad = pad }, SECRET, { expires_in = 60 })
        assert.is_true(#big > 12 * 1024 and #big <= tododb.token.max_size, #big)
        local r = req("GET", "/api/todos", { token = big })
        assert.equal(200, r.status, r.body)
        assert.is_table(r.json.items)
      end)

      it("answers 401 for an expired token", function()
        local expired = tododb.token.sign({ sub = id_text(alice.id), exp = os.time() - 60 }, SECRET)
        assert_error(req("GET", "/api/todos", { token = expired }), 401, "unauthorized")
      end)

      it("answers 401 for a token whose subject is not a user id", function()
        local t = tododb.token.sign({ sub = "admin" }, SECRET, { expires_in = 60 })
        assert_error(req("GET", "/api/todos", { token = t }), 401, "unauthorized")
      end)

      it("tells the client nothing of why a token failed; the reason goes to the log", function()
        local priv = tododb.token.ed25519_keypair()
        local answers = {}
        for why, t in pairs {
          expired = tododb.token.sign({ sub = id_text(alice.id), exp = os.time() - 60 }, SECRET),
          ["bad signature"] = tododb.token.sign({ sub = id_text(alice.id) }, string.rep("k", 32),
                                                { expires_in = 60 }),
          algorithm = tododb.token.sign({ sub = id_text(alice.id) }, priv, { expires_in = 60 }),
          subject = tododb.token.sign({ sub = "admin" }, SECRET, { expires_in = 60 }),
        } do
          local r = req("GET", "/api/todos", { token = t })
          assert_error(r, 401, "unauthorized")
          assert_no_internals(r)
          answers[#answers + 1] = r.json.error.message
          assert.matches("token refused: %S", log_of(server, r), nil, why)
        end
        for i = 2, #answers do assert.equal(answers[1], answers[i]) end
      end)
    end)

    describe("todos", function()
      it("go through create, read, update and delete for each user", function()
        for _, u in ipairs { alice, bob } do
          local r = req("POST", "/api/todos",
                        { token = u.token, json = { title = "  Buy milk  ", description = "2 litres" } })
          assert.equal(201, r.status, r.body)
          local t = r.json
          assert.equal("Buy milk", t.title)
          assert.equal("2 litres", t.description)
          assert.is_false(t.completed)
          assert.equal(u.id, t.user_id)
          assert.equal("/api/todos/" .. id_text(t.id), r.headers.location)
          assert.match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$", t.created_at)

          local path = "/api/todos/" .. id_text(t.id)
          r = req("GET", path, { token = u.token })
          assert.equal(200, r.status)
          assert.same(t, r.json)

          r = req("PATCH", path, { token = u.token, json = { completed = true, title = "Buy oat milk" } })
          assert.equal(200, r.status, r.body)
          assert.is_true(r.json.completed)
          assert.equal("Buy oat milk", r.json.title)
          assert.equal("2 litres", r.json.description)

          r = req("PATCH", path, { token = u.token, json = { description = null } })
          assert.equal(200, r.status, r.body)
          assert.equal(null, r.json.description)
          assert.truthy(r.body:find('"description":null', 1, true))

          r = req("PATCH", path, { token = u.token, json = { description = "again" } })
          assert.equal("again", r.json.description)
          r = req("PATCH", path, { token = u.token, json = { description = "" } })
          assert.equal(null, r.json.description)

          r = req("GET", "/api/todos", { token = u.token })
          assert.equal(200, r.status)
          assert.equal(1, #r.json.items)
          assert.equal(t.id, r.json.items[1].id)
          assert.equal(null, r.json.next)

          r = req("DELETE", path, { token = u.token })
          assert.equal(204, r.status)
          assert.equal("", r.body)
          assert_error(req("GET", path, { token = u.token }), 404, "not_found")
          assert_error(req("DELETE", path, { token = u.token }), 404, "not_found")
          r = req("GET", "/api/todos", { token = u.token })
          assert.equal(200, r.status)
          assert.equal("[]", r.body:match '"items":(%b[])')
        end
      end)

      it("keep each user's todos from the other: another's id is 404 and nothing changes", function()
        local mine = create(bob, { title = "bob's secret", description = "keep out" })
        local path = "/api/todos/" .. id_text(mine.id)
        assert_error(req("GET", path, { token = alice.token }), 404, "not_found")
        assert_error(req("PATCH", path, { token = alice.token, json = { title = "pwned", completed = true } }),
                     404, "not_found")
        assert_error(req("DELETE", path, { token = alice.token }), 404, "not_found")
        local r = req("GET", "/api/todos", { token = alice.token })
        for _, t in ipairs(r.json.items) do assert.not_equal(mine.id, t.id) end
        assert.equal(0, req("POST", "/api/todos/complete-all", { token = alice.token }).json.updated)
        r = req("GET", path, { token = bob.token })
        assert.equal(200, r.status)
        assert.same(mine, r.json)
        assert.equal(204, req("DELETE", path, { token = bob.token }).status)
      end)

      it("answer a deleted user's token with a 404 that names nothing of the database", function()
        local gone = {}
        register(gone, "gone-" .. mode .. "@example.com")
        assert(db:delete_user(gone.id))
        local r = req("POST", "/api/todos", { token = gone.token, json = { title = "orphan" } })
        assert_error(r, 404, "not_found")
        assert_no_internals(r)
        assert.matches("[23503]", log_of(server, r), 1, true)    -- the database's text is logged
      end)

      it("carry the request id on success too", function()
        local r = req("POST", "/api/todos", { token = alice.token, json = { title = "with an id" } })
        assert.equal(201, r.status)
        assert.matches("^%x+$", r.headers["x-request-id"])
        local again = req("GET", "/api/todos/" .. id_text(r.json.id), { token = alice.token })
        assert.not_equal(r.headers["x-request-id"], again.headers["x-request-id"])
        assert.equal(204, req("DELETE", "/api/todos/" .. id_text(r.json.id), { token = alice.token }).status)
      end)

      it("answer a missing id or a non-numeric one with 404", function()
        assert_error(req("GET", "/api/todos/999999999", { token = alice.token }), 404, "not_found")
        assert_error(req("GET", "/api/todos/99999999999999999999999", { token = alice.token }), 404, "not_found")
        assert_error(req("GET", "/api/todos/abc", { token = alice.token }), 404, "not_found")
      end)

      it("answer the JSON tododb writes from the result, ids beyond 2^53 exact", function()
        local dave = {}
        register(dave, "dave-" .. mode .. "@example.com")
        local owner = support.owner()
        assert(owner:exec "BEGIN")
        support.set_user(owner, id_text(dave.id))
        assert(owner:query("INSERT INTO todo_counters (user_id, last_id) VALUES ($1, 9007199254740993)",
                           id_text(dave.id)))
        assert(owner:exec "COMMIT")
        owner:close()
        local r = req("POST", "/api/todos", { token = dave.token, json = { title = "big \"one\" ✓" } })
        assert.equal(201, r.status, r.body)
        assert.equal("/api/todos/9007199254740994", r.headers.location)
        local s = db:session(dave.id)
        assert.equal(assert(s:get_todo_json("9007199254740994")) .. "\n", r.body)
        r = req("GET", "/api/todos/9007199254740994", { token = dave.token })
        assert.equal(200, r.status, r.body)
        assert.equal(assert(s:get_todo_json("9007199254740994")) .. "\n", r.body)
        r = req("GET", "/api/todos?limit=5", { token = dave.token })
        assert.equal(assert(s:list_todos_json { limit = 5 }) .. "\n", r.body)
        r = req("PATCH", "/api/todos/9007199254740994", { token = dave.token, json = { completed = true } })
        assert.equal(assert(s:get_todo_json("9007199254740994")) .. "\n", r.body)
      end)
    end)

    describe("bad requests", function()
      it("answers malformed JSON, or JSON that is not an object, with 400", function()
        for _, text in ipairs { '{"title":', "", "nope", '"a string"', "[1,2]", "42" } do
          assert_error(req("POST", "/api/todos", { token = alice.token, json = text }), 400, "malformed")
        end
        assert_error(req("POST", "/api/users", { json = "{" }), 400, "malformed")
      end)

      it("answers a body that is not application/json with 415", function()
        assert_error(req("POST", "/api/todos", { token = alice.token, body = '{"title":"x"}',
                                                  content_type = "text/plain" }), 415, "unsupported_media_type")
        assert_error(req("POST", "/api/todos", { token = alice.token, body = '{"title":"x"}' }), 415,
                     "unsupported_media_type")
        assert_error(req("PATCH", "/api/todos/1", { token = alice.token, body = '{"title":"x"}',
                                                     content_type = "application/x-www-form-urlencoded" }), 415,
                     "unsupported_media_type")
        local r = req("POST", "/api/todos", { token = alice.token, json = { title = "charset" },
                                               content_type = "application/json; charset=utf-8" })
        assert.equal(201, r.status, r.body)
      end)

      it("answers an oversized body with 413", function()
        local big = cjson.encode { title = "big", description = string.rep("x", 20000) }
        assert_error(req("POST", "/api/todos", { token = alice.token, json = big }), 413, "too_large")
        assert_error(req("POST", "/api/users", { json = big }), 413, "too_large")
      end)

      it("answers invalid fields with 422 naming the field", function()
        local function bad(body, field, method, path)
          local r = req(method or "POST", path or "/api/todos", { token = alice.token, json = body })
          assert_error(r, 422, "invalid", field)
        end
        bad({ title = "" }, "title")
        bad({ title = "   " }, "title")
        bad({ title = string.rep("t", 201) }, "title")
        bad('{"title":5}', "title")
        bad('{"title":null}', "title")
        bad({ description = "no title" }, "title")
        bad({ title = "x", completed = "yes" }, "completed")
        bad({ title = "x", description = 7 }, "description")
        bad({ title = "x", description = string.rep("d", 1001) }, "description")
        bad({ title = "x", owner = 2 }, "owner")
        local t = create(alice, { title = "to patch" })
        local path = "/api/todos/" .. id_text(t.id)
        bad({ completed = "true" }, "completed", "PATCH", path)
        bad({ title = "" }, "title", "PATCH", path)
        bad({ id = 5 }, "id", "PATCH", path)
        assert_error(req("PATCH", path, { token = alice.token, json = "{}" }), 422, "invalid")
        assert.same(t, req("GET", path, { token = alice.token }).json)
      end)

      it("answers malformed query arguments with 400 and out-of-range ones with 422", function()
        assert_error(req("GET", "/api/todos?limit=abc", { token = alice.token }), 400, "malformed", "limit")
        assert_error(req("GET", "/api/todos?completed=maybe", { token = alice.token }), 400, "malformed", "completed")
        assert_error(req("GET", "/api/todos?limit=1&limit=2", { token = alice.token }), 400, "malformed")
        assert_error(req("GET", "/api/todos?limit=0", { token = alice.token }), 422, "invalid", "limit")
        assert_error(req("GET", "/api/todos?limit=201", { token = alice.token }), 422, "invalid", "limit")
        assert_error(req("GET", "/api/todos?order=sideways", { token = alice.token }), 422, "invalid", "order")
        assert_error(req("GET", "/api/todos?after=forged", { token = alice.token }), 422, "invalid", "after")
      end)

      it("answers unknown routes with 404 and wrong methods with 405", function()
        assert_error(req("GET", "/api/nothing"), 404, "not_found")
        assert_error(req("GET", "/elsewhere"), 404, "not_found", nil, true)
        local r = req("PUT", "/api/todos", { token = alice.token })
        assert_error(r, 405, "method_not_allowed")
        assert.match("GET", r.headers.allow)
      end)
    end)

    describe("listing", function()
      it("pages through 25 todos, 7 at a time, each exactly once", function()
        local r = req("DELETE", "/api/todos?completed=true", { token = bob.token })
        assert.equal(200, r.status)
        local want = {}
        for i = 1, 25 do
          local t = create(bob, { title = "item " .. i, completed = i % 5 == 0 })
          want[#want + 1] = t.id
        end
        for _, order in ipairs { "newest", "oldest" } do
          local seen, ids, pages, after = {}, {}, {}, nil
          repeat
            local q = "/api/todos?limit=7&order=" .. order .. (after and "&after=" .. after or "")
            r = req("GET", q, { token = bob.token })
            assert.equal(200, r.status, r.body)
            pages[#pages + 1] = #r.json.items
            for _, t in ipairs(r.json.items) do
              assert.is_nil(seen[t.id], "todo " .. tostring(t.id) .. " listed twice")
              seen[t.id] = true
              ids[#ids + 1] = t.id
            end
            after = r.json.next ~= null and r.json.next or nil
          until not after
          assert.same({ 7, 7, 7, 4 }, pages)
          assert.equal(25, #ids)
          for _, id in ipairs(want) do assert.is_true(seen[id]) end
          if order == "oldest" then assert.same(want, ids) end
        end
        r = req("GET", "/api/todos?completed=true&limit=200", { token = bob.token })
        assert.equal(5, #r.json.items)
        r = req("GET", "/api/todos?search=item%201&limit=200", { token = bob.token })
        assert.equal(11, #r.json.items)    -- item 1, 10-19
      end)

      it("completes all and deletes the completed ones, with counts", function()
        local r = req("GET", "/api/todos?completed=false&limit=200", { token = bob.token })
        local open = #r.json.items
        assert.is_true(open > 0)
        r = req("POST", "/api/todos/complete-all", { token = bob.token })
        assert.equal(200, r.status, r.body)
        assert.same({ updated = open }, r.json)
        assert.same({ updated = 0 }, req("POST", "/api/todos/complete-all", { token = bob.token }).json)
        assert_error(req("DELETE", "/api/todos", { token = bob.token }), 422, "invalid", "completed")
        assert_error(req("DELETE", "/api/todos?completed=false", { token = bob.token }), 422, "invalid", "completed")
        r = req("DELETE", "/api/todos?completed=true", { token = bob.token })
        assert.equal(200, r.status, r.body)
        assert.same({ deleted = 25 }, r.json)
        r = req("GET", "/api/todos", { token = bob.token })
        assert.equal(0, #r.json.items)
        assert.same({ deleted = 0 }, req("DELETE", "/api/todos?completed=true", { token = bob.token }).json)
      end)
    end)

    describe("database connection", function()
      it("is re-established after the server drops it", function()
        if not support.admin_url then
          pending("needs TODODB_ADMIN_URL to terminate backends")
          return
        end
        create(alice, { title = "before" })
        local admin = assert(tododb.connect(support.admin_url))
        local killed = assert(admin:query(
          "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1",
          server.appname))
        assert.is_true(#killed >= 1)
        admin:close()
        -- Each dropped connection answers one write with 503 (a write is never
        -- retried) and is re-established; which pool VM takes a request is
        -- not ours to choose, so count rather than expect an order.
        local statuses, failed = {}, 0
        for i = 1, 8 + #killed do
          local r = req("POST", "/api/todos", { token = alice.token, json = { title = "after " .. i } })
          statuses[#statuses + 1] = r.status
          if r.status ~= 201 then
            failed = failed + 1
            assert_error(r, 503, "unavailable")
            assert_no_internals(r)
            assert.matches("%[warn%].*unavailable", log_of(server, r))
          end
        end
        assert.is_true(failed <= #killed, table.concat(statuses, " "))
        assert.equal(200, req("GET", "/api/todos", { token = alice.token }).status)
      end)
    end)

    describe("PATCH /api/todos (a batch)", function()
      local function patch(u, body) return req("PATCH", "/api/todos", { token = u.token, json = body }) end

      -- Reads are retried after a lost connection: they repair the pool's
      -- connections that an earlier spec killed, so writes here meet live ones.
      setup(function()
        for _ = 1, 24 do req("GET", "/api/todos", { token = alice.token }) end
      end)

      it("applies every change in order and answers one result each", function()
        local a = create(alice, { title = "batch a" })
        local b = create(alice, { title = "batch b", description = "d" })
        local r = patch(alice, { ops = {
          { op = "create", title = "batch new", completed = true },
          { op = "update", id = a.id, title = "batch a2" },
          { op = "toggle", id = b.id },
          { op = "update", id = b.id, description = null },
          { op = "get", id = a.id },
          { op = "delete", id = a.id },
        } })
        assert.equal(200, r.status, r.body)
        local res = r.json.results
        assert.equal(6, #res)
        assert.equal("batch new", res[1].title)
        assert.is_true(res[1].completed)
        assert.equal("batch a2", res[2].title)
        assert.is_true(res[3].completed)
        assert.equal(null, res[4].description)
        assert.equal(a.id, res[5].id)
        assert.same({ id = a.id, deleted = true }, res[6])
        assert.equal(404, req("GET", "/api/todos/" .. id_text(a.id), { token = alice.token }).status)
      end)

      it("changes nothing when one operation fails, and names it", function()
        local t = create(alice, { title = "batch keep" })
        local theirs = create(bob, { title = "bob's batch" })
        local r = patch(alice, { ops = {
          { op = "update", id = t.id, title = "batch changed" },
          { op = "delete", id = theirs.id + 100000 },
        } })
        assert_error(r, 404, "not_found")
        assert.equal(2, r.json.error.index)
        local got = req("GET", "/api/todos/" .. id_text(t.id), { token = alice.token })
        assert.equal("batch keep", got.json.title)
        r = patch(alice, { ops = { { op = "toggle", id = t.id }, { op = "create", title = "   " } } })
        assert_error(r, 422, "invalid", "title")
        assert.equal(2, r.json.error.index)
        r = patch(bob, { ops = { { op = "get", id = t.id + 100000 } } })
        assert_error(r, 404, "not_found")
        assert.equal("bob's batch", req("GET", "/api/todos/" .. id_text(theirs.id),
                                        { token = bob.token }).json.title)
      end)

      it("refuses malformed batches with 422 naming the operation", function()
        local function bad(body, field, index)
          local r = patch(alice, body)
          assert_error(r, 422, "invalid", field)
          assert.equal(index, r.json.error.index)
        end
        bad({ ops = {} }, "ops")
        bad({ ops = "toggle" }, "ops")
        bad({ ops = { { op = "toggle", id = 1 } }, extra = 1 }, "extra")
        bad({ ops = { { op = "rename", id = 1 } } }, "op", 1)
        bad({ ops = { { op = "toggle", id = 1 }, { op = "toggle" } } }, "id", 2)
        bad({ ops = { { op = "toggle", id = 1.5 } } }, "id", 1)
        bad({ ops = { { op = "create", title = 5 } } }, "title", 1)
        bad({ ops = { { op = "create", title = "x", id = 3 } } }, "id", 1)
        bad({ ops = { { op = "get", id = 1, title = "x" } } }, "title", 1)
        local many = {}
        for i = 1, 101 do many[i] = { op = "create", title = "t" .. i } end
        bad({ ops = many }, "ops")
        assert_error(req("PATCH", "/api/todos", { json = { ops = { { op = "get", id = 1 } } } }),
                     401, "unauthorized")
      end)

      it("refuses a body over the size limit with 413", function()
        local big = {}
        for i = 1, 100 do big[i] = { op = "create", title = ("x"):rep(190) .. i } end
        assert_error(patch(alice, { ops = big }), 413, "too_large")
      end)
    end)

    it("leaves no [error], [crit] or [alert] lines in the error log", function()
      assert_clean_log(server)
    end)
  end)
end

-- Failures of the deployment ------------------------------------------------

describe("nginx JSON API with an unusable database and no token key", function()
  local server

  setup(function()
    local url = support.url
    if url:match "^postgres[%w]*://" then
      url = url:gsub("^(postgres[%w]*://[^/?]*/)[^?]*", "%1tododb_no_such_database")
    else
      url = url .. " dbname=tododb_no_such_database"
    end
    server = start { mode = "thread", url = url, secret = false }
  end)

  teardown(function() if server then server:stop() end end)

  it("answers 503 with a generic message, the details in the log under the request id", function()
    local r = server:request("POST", "/api/users", { json = { email = "x@example.com", password = "long enough" } })
    assert_error(r, 503, "unavailable")
    assert_no_internals(r)
    local log = log_of(server, r)
    assert.matches("%[warn%]", log)
    assert.matches("tododb_no_such_database", log, 1, true)
  end)

  it("answers 500 internal when the token key is missing, the reason in the log", function()
    local t = tododb.token.sign({ sub = "1" }, SECRET, { expires_in = 60 })
    local r = server:request("GET", "/api/todos", { token = t })
    assert_error(r, 500, "internal")
    assert_no_internals(r)
    assert.equal("internal error", r.json.error.message)
    local log = log_of(server, r)
    assert.matches("%[error%]", log)
    assert.matches("TODODB_TOKEN_SECRET is not set", log, 1, true)
  end)
end)

describe("nginx JSON API with TODODB_SIGNUP_UNIFORM=1", function()
  local server, db

  setup(function()
    db = support.fresh()
    server = start { mode = "worker", uniform = true }
  end)

  teardown(function()
    if server then server:stop() end
    if db then db:close() end
  end)

  it("answers a new and a taken email alike with 202, and creates the account once", function()
    local function signup(email, password)
      return server:request("POST", "/api/users", { json = { email = email, password = password } })
    end
    local new = signup("uni@example.com", "long enough")
    local taken = signup("UNI@example.com", "other pass")
    assert.equal(202, new.status, new.body)
    assert.equal(202, taken.status, taken.body)
    assert.equal(new.body, taken.body)
    assert.same({ status = "accepted" }, new.json)
    assert.is_nil(new.body:find("uni@", 1, true))
    assert(db:authenticate("uni@example.com", "long enough"))
    assert.is_nil(db:authenticate("uni@example.com", "other pass"))
    assert.equal(1, #assert(db:list_users {}))
  end)

  it("still answers invalid input with 422 naming the field", function()
    local account = { email = "not an email", password = "long enough" }
    assert_error(server:request("POST", "/api/users", { json = account }), 422, "invalid", "email")
  end)

  it("leaves no [error], [crit] or [alert] lines in the error log", function()
    assert_clean_log(server)
  end)
end)

-- The thread pool -------------------------------------------------------------

describe("nginx thread-pool mode", function()
  local server, db, token

  setup(function()
    db = support.fresh()
    -- One worker, and argon2id at a cost that takes a while.
    server = start { mode = "thread", workers = 1, pwhash = "moderate" }
  end)

  teardown(function()
    if server then server:stop() end
    if db then db:close() end
  end)

  it("serves a list while a slow login is still hashing on the single worker", function()
    local account = { email = "slow@example.com", password = "correct horse battery" }
    assert.equal(201, server:request("POST", "/api/users", { json = account }).status)
    -- How long one login takes here (the race waits a quarter of it).
    local out = capture(server:curl("POST", "/api/tokens", { json = account })
                        .. " -o " .. sh(server.dir .. "/token.json") .. " -w '%{http_code} %{time_total}'")
    local code, secs = out:match "^(%d+) ([%d.]+)"
    assert.equal("201", code, out)
    token = cjson.decode(read(server.dir .. "/token.json")).token
    assert.equal(200, server:request("GET", "/api/todos", { token = token }).status)   -- warm

    local d = server.dir
    local delay = string.format("%.3f", math.min(0.25, tonumber(secs) / 4))
    local script = table.concat({
      "( " .. server:curl("POST", "/api/tokens", { json = account })
        .. " -o /dev/null -w '%{http_code}' > " .. sh(d .. "/login.code")
        .. "; date +%s%N > " .. sh(d .. "/login.done") .. " ) &",
      "sleep " .. delay,
      server:curl("GET", "/api/todos", { token = token })
        .. " -o /dev/null -w '%{http_code}' > " .. sh(d .. "/list.code"),
      "date +%s%N > " .. sh(d .. "/list.done"),
      "wait",
    }, "\n")
    write(d .. "/race.sh", script)
    assert.is_true(exec("sh " .. sh(d .. "/race.sh")))
    assert.equal("201", read(d .. "/login.code"))
    assert.equal("200", read(d .. "/list.code"))
    local login_done = tonumber((read(d .. "/login.done"):gsub("%s", "")))
    local list_done = tonumber((read(d .. "/list.done"):gsub("%s", "")))
    assert.is_true(list_done < login_done,
                   "the list (issued " .. delay .. " s into the login) finished after the login")
  end)

  it("queues database calls beyond its one at a time and answers every one", function()
    local d = server.dir
    local lines = {}
    for i = 1, 24 do
      lines[i] = "( " .. server:curl("GET", "/api/todos", { token = token })
        .. " -o /dev/null -w '%{http_code}\\n' >> " .. sh(d .. "/many.codes") .. " ) &"
    end
    lines[#lines + 1] = "wait"
    write(d .. "/many.sh", table.concat(lines, "\n"))
    assert.is_true(exec("sh " .. sh(d .. "/many.sh")))
    local codes = read(d .. "/many.codes")
    assert.equal(("200\n"):rep(24), codes)
  end)

  it("leaves no [error], [crit] or [alert] lines in the error log", function()
    assert_clean_log(server)
  end)
end)
