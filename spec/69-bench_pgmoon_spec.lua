-- spec/69-bench_pgmoon_spec.lua: the HTTP benchmark's pgmoon baseline
-- (bench/pgmoon/api.lua) answers the same JSON as the example API
-- (examples/nginx) for the requests the benchmark sends, so that make bench
-- compares like with like. Both servers are started by the benchmark's own
-- launcher (bench/http) against the test database. Not timed.
local S = require "support"
local tododb = require "tododb"
local cjson = require "cjson"

local SECRET = "bench-pgmoon-spec-secret-0123456789abcdef"

local sh = S.sh

local pgmoon_dir = S.capture("bench/http pgmoon-dir 2>&1"):gsub("%s+$", "")
local why
if not S.run("bench/http pgmoon-dir >/dev/null 2>&1") then
  why = "pgmoon is not available: " .. pgmoon_dir
elseif S.citus then
  why = "the pgmoon baseline sends set_config(), which Citus workers do not see"
elseif S.pooler then
  why = "the pgmoon baseline connects to the server's own unix socket, not through the pooler"
elseif not (S.url:match "[?&]host=/" and S.url:match "[?&]port=%d") then
  why = "the pgmoon baseline needs a postgresql:// URL with host=<socket dir>&port="
elseif not io.open("build/luajit/tododb/core.so") then
  why = "build/luajit/tododb/core.so is missing (make LUA=luajit)"
end

local describe_ = why and pending or describe
describe_("the HTTP benchmark's pgmoon baseline" .. (why and (" (" .. why .. ")") or ""), function()
  local db, dirs, port, token, empty_token = nil, {}, {}, nil, nil

  local function start(kind)
    local dir = os.tmpname()
    os.remove(dir)
    dirs[kind] = dir .. "-" .. kind
    local out = S.capture(("env -u LD_PRELOAD BENCH_URL=%s TODODB_TOKEN_SECRET=%s BENCH_PGMOON_POOL=2"
      .. " BENCH_WORKERS=1 BENCH_THREADS=2 bench/http start %s %s 2>&1"):format(sh(S.url), sh(SECRET),
      kind, sh(dirs[kind])))
    port[kind] = assert(tonumber(out:match "^(%d+)%s*$"), out)
  end

  -- GET or POST on one server: status, decoded body.
  local function request(kind, method, path, tok, body)
    local cmd = ("env -u LD_PRELOAD curl -s -S --max-time 10 -X %s -H %s"):format(method,
      sh("Authorization: Bearer " .. tok))
    if body then cmd = cmd .. " -H 'Content-Type: application/json' --data-binary " .. sh(body) end
    local out = S.capture(cmd .. " -w '\\n%{http_code}' " .. sh("http://127.0.0.1:" .. port[kind] .. path))
    local text, status = out:match "^(.*)\n(%d%d%d)$"
    assert(status, out)
    return tonumber(status), cjson.decode(text)
  end

  -- The same request to both: same status; bodies returned.
  local function both(method, path, tok, body)
    local s1, a = request("thread", method, path, tok or token, body)
    local s2, b = request("pgmoon", method, path, tok or token, body)
    assert.equal(s1, s2)
    return a, b, s1
  end

  setup(function()
    db = S.fresh()
    local u = assert(db:create_user { email = "bench-http@example.com", password = "bench http password" })
    local e = assert(db:create_user { email = "bench-empty@example.com", password = "bench http password" })
    local s = db:session(u)
    for i = 1, 60 do
      assert(s:create_todo { title = i == 7 and "Ünïcödé ✓ \"quoted\" / slash" or "todo " .. i,
                             description = i % 3 == 0 and "description " .. i or nil,
                             completed = i % 4 == 0 })
    end
    token = tododb.token.sign({ sub = tostring(u.id) }, SECRET, { expires_in = 600 })
    empty_token = tododb.token.sign({ sub = tostring(e.id) }, SECRET, { expires_in = 600 })
    start("thread")
    start("pgmoon")
  end)

  teardown(function()
    for _, dir in pairs(dirs) do
      S.run("bench/http stop " .. sh(dir) .. "; rm -rf " .. sh(dir))
    end
    if db then db:close() end
  end)

  it("lists the same page of 50, newest first, with a next page on both", function()
    local a, b, status = both("GET", "/api/todos?limit=50")
    assert.equal(200, status)
    assert.equal(50, #a.items)
    assert.same(a.items, b.items)
    assert.equal(60, a.items[1].id)
    assert.equal(cjson.null, a.items[2].description)
    assert.is_string(a.next)
    assert.is_string(b.next)
  end)

  it("gives the same second page through each one's own cursor", function()
    local a1, b1 = both("GET", "/api/todos?limit=50")
    local _, a2 = request("thread", "GET", "/api/todos?limit=50&after=" .. a1.next, token)
    local _, b2 = request("pgmoon", "GET", "/api/todos?limit=50&after=" .. b1.next, token)
    assert.equal(10, #a2.items)
    assert.same(a2.items, b2.items)
    assert.equal(cjson.null, a2.next)
    assert.equal(cjson.null, b2.next)
  end)

  it("answers an empty list alike", function()
    local a, b = both("GET", "/api/todos?limit=50", empty_token)
    assert.same({ items = {}, next = cjson.null }, a)
    assert.same(a, b)
  end)

  it("returns the same todo by id, unicode, nulls and timestamps included", function()
    for _, id in ipairs { 1, 3, 4, 7 } do
      local a, b, status = both("GET", "/api/todos/" .. id)
      assert.equal(200, status)
      assert.same(a, b)
    end
    local a = both("GET", "/api/todos/7")
    assert.equal("Ünïcödé ✓ \"quoted\" / slash", a.title)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$", a.created_at)
  end)

  it("answers 404 for a missing todo on both", function()
    local _, _, status = both("GET", "/api/todos/999999")
    assert.equal(404, status)
  end)

  it("creates the same todo, as each server reads it back", function()
    local body = '{"title":"  HTTP bench todo  ","description":"created by the benchmark"}'
    local a, b, status = both("POST", "/api/todos", nil, body)
    assert.equal(201, status)
    assert.equal(a.id + 1, b.id)
    for _, k in ipairs { "user_id", "title", "description", "completed" } do assert.equal(a[k], b[k]) end
    -- Each server returns what the other one made, field by field.
    local _, a_by_pgmoon = request("pgmoon", "GET", ("/api/todos/%.0f"):format(a.id), token)
    local _, b_by_tododb = request("thread", "GET", ("/api/todos/%.0f"):format(b.id), token)
    assert.same(a, a_by_pgmoon)
    assert.same(b, b_by_tododb)
    local c = both("POST", "/api/todos", nil, '{"title":"no description"}')
    assert.equal(cjson.null, c.description)
  end)

  it("refuses a request without a valid token on both", function()
    local _, _, status = both("GET", "/api/todos", "not-a-token")
    assert.equal(401, status)
  end)
end)
