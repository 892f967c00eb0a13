-- Better Auth users on the nginx example, by configuration only: a real
-- Better Auth served over HTTP on loopback (interop/betterauth.mjs serve),
-- scripts/serve with TODODB_JWKS_URL pointing at it, curl for every request.
-- Pending without `make interop` or a superuser URL.
local support = require "support"
local tododb = require "tododb"
local cjson = require "cjson"

local dir, why = support.interop_dir()
if not dir then
  describe("Better Auth through nginx", function() pending(why) end)
  return
end

local sh, read, stop = support.sh, support.read, support.stop_pid
local TOP = support.top

-- Starts cmd in the background; returns its pid.
local function background(cmd, log)
  return support.capture(("(%s) >%s 2>&1 & echo $!"):format(cmd, sh(log))):match "%d+"
end

-- Waits until f() is true (polling, at most `tries` × 0.2 s).
local function await(f, tries)
  for _ = 1, tries or 150 do
    if f() then return true end
    support.run "sleep 0.2"
  end
  return false
end

-- curl: status, decoded JSON body (or raw text), headers text.
local function curl(method, url, opts)
  opts = opts or {}
  local hdr = os.tmpname()
  local cmd = { "curl -s -o - -D", sh(hdr), "-X", method }
  for k, v in pairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. sh(k .. ": " .. v) end
  if opts.token then cmd[#cmd + 1] = "-H " .. sh("Authorization: Bearer " .. opts.token) end
  if opts.body then
    cmd[#cmd + 1] = "-H 'Content-Type: application/json' --data-binary " .. sh(cjson.encode(opts.body))
  end
  if opts.cookies then cmd[#cmd + 1] = "-b " .. sh(opts.cookies) .. " -c " .. sh(opts.cookies) end
  cmd[#cmd + 1] = sh(url)
  local out = support.capture(table.concat(cmd, " "))
  local headers = read(hdr)
  os.remove(hdr)
  local status = tonumber(headers:match "^HTTP/%S+ (%d+)")
  local ok, body = pcall(cjson.decode, out)
  return status, ok and body or out, headers
end

describe("Better Auth through nginx", function()
  local ba_port, api_port, ba_pid, serve_pid, base, api
  local logs = os.tmpname()
  local users = {}

  -- Signs up on Better Auth over HTTP; returns { id =, email =, cookies = }.
  local function sign_up(email)
    local cookies = os.tmpname()
    local st, body = curl("POST", base .. "/api/auth/sign-up/email", {
      cookies = cookies, headers = { Origin = base },
      body = { email = email, password = "correct horse battery", name = email:match "^[^@]+" },
    })
    assert.equal(200, st, cjson.encode(body))
    return { id = body.user.id, email = body.user.email, cookies = cookies }
  end

  local function token(u)
    local st, body = curl("GET", base .. "/api/auth/token", { cookies = u.cookies })
    assert.equal(200, st)
    return body.token
  end

  local function kid(tok)
    return cjson.decode(tododb.token.base64url_decode(tok:match "^([^.]+)")).kid
  end

  setup(function()
    local db = support.fresh()
    db:close()
    ba_port, api_port = math.random(20000, 39999), math.random(40000, 59999)
    base = "http://127.0.0.1:" .. ba_port
    api = "http://127.0.0.1:" .. api_port .. "/api"
    ba_pid = background(("BA_ADMIN_URL=%s BA_DATABASE=tododb_better_auth_http BA_ROTATE=8 exec node %s serve %d")
      :format(sh(support.admin_url), sh(dir .. "/betterauth.mjs"), ba_port), logs .. ".ba")
    assert(await(function() return read(logs .. ".ba"):find("ready", 1, true) end),
           "Better Auth did not start:\n" .. read(logs .. ".ba"))
    serve_pid = background(("cd %s && exec env -u LD_PRELOAD -u TODODB_TOKEN_SECRET DATABASE_URL=%s PORT=%d"
      .. " TODODB_PWHASH=min TODODB_NGINX_WORKERS=1 TODODB_JWKS_URL=%s TODODB_TOKEN_ISSUER=%s"
      .. " TODODB_TOKEN_AUDIENCE=%s TODODB_CORS_ORIGINS=http://app.test scripts/serve")
      :format(sh(TOP), sh(support.url), api_port, sh(base .. "/api/auth/jwks"), sh(base), sh(base)),
      logs .. ".serve")
    assert(await(function() return curl("GET", api .. "/todos") == 401 end),
           "nginx did not start:\n" .. read(logs .. ".serve"))
    users.ada = sign_up "ada@example.com"
    users.bob = sign_up "bob@example.com"
  end)

  teardown(function()
    stop(serve_pid)
    stop(ba_pid)
    for _, u in pairs(users) do os.remove(u.cookies) end
    os.remove(logs .. ".ba"); os.remove(logs .. ".serve"); os.remove(logs)
  end)

  it("creates, lists, updates and deletes todos with a Better Auth token", function()
    local tok = token(users.ada)
    local st, t = curl("POST", api .. "/todos", { token = tok, body = { title = "from Better Auth" } })
    assert.equal(201, st)
    assert.equal("from Better Auth", t.title)
    local page
    st, page = curl("GET", api .. "/todos", { token = tok })
    assert.equal(200, st)
    assert.equal(1, #page.items)
    st, t = curl("PATCH", api .. "/todos/" .. ("%d"):format(t.id), { token = tok, body = { completed = true } })
    assert.equal(200, st)
    assert.is_true(t.completed)
    st = curl("DELETE", api .. "/todos/" .. ("%d"):format(t.id), { token = tok })
    assert.equal(204, st)
    page = select(2, curl("GET", api .. "/todos", { token = tok }))
    assert.equal(0, #page.items)
  end)

  it("provisioned the user with its Better Auth identity and email", function()
    local db = support.connect()
    finally(function() db:close() end)
    local u = assert(db:find_user_by_identity(base, users.ada.id))
    assert.equal("ada@example.com", u.email)
  end)

  it("keeps two Better Auth users apart", function()
    local ada, bob = token(users.ada), token(users.bob)
    local st, t = curl("POST", api .. "/todos", { token = ada, body = { title = "ada's secret" } })
    assert.equal(201, st)
    local _, page = curl("GET", api .. "/todos", { token = bob })
    assert.equal(0, #page.items)
    assert.equal(404, (curl("GET", api .. "/todos/" .. ("%d"):format(t.id), { token = bob })))
    assert.equal(404, (curl("DELETE", api .. "/todos/" .. ("%d"):format(t.id), { token = bob })))
    assert.equal(200, (curl("GET", api .. "/todos/" .. ("%d"):format(t.id), { token = ada })))
  end)

  it("fetches the key set again when Better Auth rotates its key", function()
    local first = token(users.ada)
    local started = os.time()
    assert.equal(200, (curl("GET", api .. "/todos", { token = first })))
    local rotated
    assert(await(function()
      rotated = token(users.ada)
      return kid(rotated) ~= kid(first) and os.time() - started >= 11
    end, 200), "Better Auth did not rotate its key")
    assert.equal(200, (curl("GET", api .. "/todos", { token = rotated })))
    assert.equal(200, (curl("GET", api .. "/todos", { token = first })))   -- still listed
  end)

  it("answers 401 to a token of another issuer, and to no token", function()
    local priv = tododb.token.ed25519_keypair()
    local other = tododb.token.sign({ iss = "http://other.example", aud = base, sub = users.ada.id },
                                    priv, { expires_in = 60 })
    local st, body, headers = curl("GET", api .. "/todos", { token = other })
    assert.equal(401, st)
    assert.equal("unauthorized", body.error.code)
    assert.matches("WWW%-Authenticate: Bearer", headers)
    assert.equal(401, (curl("GET", api .. "/todos")))
  end)

  it("leaves sign-up and login to Better Auth", function()
    assert.equal(404, (curl("POST", api .. "/users", { body = { email = "e@example.com", password = "password1" } })))
    assert.equal(404, (curl("POST", api .. "/tokens", { body = { email = "e@example.com", password = "password1" } })))
  end)

  it("answers CORS preflights for configured origins only", function()
    local st, _, headers = curl("OPTIONS", api .. "/todos", {
      headers = { Origin = "http://app.test", ["Access-Control-Request-Method"] = "POST" } })
    assert.equal(204, st)
    assert.matches("Access%-Control%-Allow%-Origin: http://app.test", headers)
    assert.matches("Access%-Control%-Allow%-Headers: Authorization, Content%-Type", headers)
    assert.is_nil(headers:find("Access-Control-Allow-Credentials", 1, true))
    st, _, headers = curl("OPTIONS", api .. "/todos", {
      headers = { Origin = "http://evil.test", ["Access-Control-Request-Method"] = "POST" } })
    assert.equal(403, st)
    assert.is_nil(headers:find("Access-Control-Allow-Origin", 1, true))
    _, _, headers = curl("GET", api .. "/todos", { token = token(users.bob), headers = { Origin = "http://app.test" } })
    assert.matches("Access%-Control%-Allow%-Origin: http://app.test", headers)
  end)
end)
