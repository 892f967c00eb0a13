-- Connection: connecting, errors, secrets, life cycle, values, reconnects.
local S = require "support"
local tododb = require "tododb"
local system = require "system"

local LUA54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")

local sh = S.run

local read = S.capture

-- A TCP port on 127.0.0.1 that nothing listens on (checked, not assumed).
local function closed_port()
  for _, port in ipairs { 1, 9, 47, 61, 2, 3 } do
    if not sh(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' >/dev/null 2>&1"):format(port)) then
      return port
    end
  end
  error "no closed TCP port found on 127.0.0.1"
end

local function urldecode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The DATABASE_URL as a key=value conninfo (nil when it is not a URL we parse).
local function as_conninfo(url)
  local rest = url:match "^postgres[a-z]*://(.*)$"
  if not rest then return url end
  local authority, path, query = rest:match "^([^/?]*)/?([^?]*)%??(.*)$"
  if not authority then return nil end
  local kv = {}
  local userinfo, hostport = authority:match "^(.*)@(.*)$"
  hostport = hostport or authority
  if userinfo then
    local u, p = userinfo:match "^([^:]*):(.*)$"
    kv[#kv + 1] = { "user", urldecode(u or userinfo) }
    if p then kv[#kv + 1] = { "password", urldecode(p) } end
  end
  if hostport:find "[,%[]" then return nil end         -- multi-host or IPv6: skip
  local host, port = hostport:match "^([^:]*):?(%d*)$"
  if host ~= "" then kv[#kv + 1] = { "host", urldecode(host) } end
  if port ~= "" then kv[#kv + 1] = { "port", port } end
  if path ~= "" then kv[#kv + 1] = { "dbname", urldecode(path) } end
  for k, v in query:gmatch "([^&=]+)=([^&]*)" do kv[#kv + 1] = { urldecode(k), urldecode(v) } end
  local out = {}
  for _, p in ipairs(kv) do
    out[#out + 1] = p[1] .. "='" .. p[2]:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
  end
  return table.concat(out, " ")
end

local function pid_of(db)
  return assert(db:query "SELECT pg_backend_pid() AS p")[1].p
end

-- Whether the backend pid still exists, waiting up to ~2.5 s for it to go.
local function backend_gone(watcher, pid)
  for _ = 1, 50 do
    local rows = assert(watcher:query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1", pid))
    if rows[1].n == 0 then return true end
    system.sleep(0.05)
  end
  return false
end

describe("tododb.connect", function()
  it("connects by URL", function()
    local db, err = tododb.connect(S.url, S.opts())
    assert.is_nil(err)
    assert.is_true(db:is_open())
    assert.equal(1, db:query "SELECT 1 AS one"[1].one)
    db:close()
  end)

  it("connects by key=value conninfo", function()
    local ci = as_conninfo(S.url)
    if not ci then return pending "DATABASE_URL is a multi-host or IPv6 URL" end
    assert.not_matches("://", ci, 1, true)
    local db = assert(tododb.connect(ci, S.opts()))
    local url_db = S.connect()
    assert.equal(url_db:query "SELECT current_database() AS d"[1].d,
                 db:query "SELECT current_database() AS d"[1].d)
    db:close(); url_db:close()
  end)

  it("returns nil, err with code invalid for a malformed URL or conninfo", function()
    for _, bad in ipairs {
      "postgresql://localhost/db?no_such_parameter=1",
      "postgresql://u@localhost:5432/db?sslmode=require&%zz=1",
      "this is not a conninfo",
    } do
      local db, err = tododb.connect(bad)
      assert.is_nil(db, bad)
      assert.equal("invalid", err.code, bad)
      assert.equal(err.message, tostring(err))
      assert.matches("invalid connection string", err.message, 1, true)
    end
  end)

  it("raises for wrong argument types", function()
    assert.has_error(function() tododb.connect(42) end)
    assert.has_error(function() tododb.connect({}) end)
    assert.has_error(function() tododb.connect(S.url, "opts") end)
    assert.has_error(function() tododb.connect(S.url, { connect_timeout = "soon" }) end)
    assert.has_error(function() tododb.connect(S.url, { connect_timeout = -1 }) end)
  end)

  it("gives up on an unreachable port after about connect_timeout with unavailable", function()
    local port = closed_port()
    local t0 = system.monotime()
    local db, err = tododb.connect(("postgresql://u@127.0.0.1:%d/x"):format(port),
                                   { connect_timeout = 0.5 })
    local elapsed = system.monotime() - t0
    assert.is_nil(db)
    assert.equal("unavailable", err.code)
    assert.is_true(elapsed >= 0.4, "returned after " .. elapsed .. " s")
    assert.is_true(elapsed <= 3, "returned after " .. elapsed .. " s")
  end)

  describe("a server that comes up within the timeout", function()
    local dir
    local bin = read("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1"):match "%S+"
    local root = read("id -u"):match "%d+" == "0"
    -- Without the sanitizer runtimes of `make check-asan` (initdb hangs
    -- under them), and never for long.
    local function as_pg(cmd)
      return "env -u LD_PRELOAD timeout 120 " .. (root and "runuser -u postgres -- " or "") .. cmd
    end

    after_each(function()
      if dir then
        sh(as_pg(("'%s/pg_ctl' -D '%s/data' -m immediate -w stop >/dev/null 2>&1"):format(bin, dir)))
        sh(("rm -rf '%s'"):format(dir))
        dir = nil
      end
    end)

    it("is reached by the retrying connect", function()
      if not bin then return pending "no PostgreSQL server binaries under /usr/lib/postgresql" end
      dir = read("mktemp -d /tmp/tododb-late.XXXXXX"):match "%S+"
      if root then sh(("chown postgres: '%s'"):format(dir)) end
      if not sh(as_pg(("'%s/initdb' -D '%s/data' -U postgres -A trust >/dev/null 2>&1"):format(bin, dir))) then
        return pending "initdb of a throwaway cluster failed"
      end
      local port = 20000 + (os.time() % 20000)
      local conf = assert(io.open(dir .. "/data/postgresql.conf", "a"))
      conf:write(("listen_addresses = ''\nport = %d\nunix_socket_directories = '%s'\nfsync = off\n"):format(port, dir))
      conf:close()
      -- Starts one second from now, in the background.
      assert(sh(("(sleep 1; %s) >/dev/null 2>&1 &"):format(
        as_pg(("'%s/pg_ctl' -D '%s/data' -l '%s/log' -w start"):format(bin, dir, dir)))))
      local t0 = system.monotime()
      local db, err = tododb.connect(("postgresql:///postgres?host=%s&port=%d&user=postgres"):format(dir, port),
                                     { connect_timeout = 20 })
      local elapsed = system.monotime() - t0
      assert.is_nil(err)
      assert.is_true(elapsed >= 0.9, "connected after " .. elapsed .. " s, before the server started")
      assert.equal(1, db:query "SELECT 1 AS one"[1].one)
      db:close()
    end)
  end)

  describe("never shows the connection password", function()
    local port = closed_port()
    local cases = {
      { ("postgresql://u:Sup3rSecret@127.0.0.1:%d/x"):format(port), { "Sup3rSecret" } },
      { ("postgresql://u:Sup3r%%zzSecret@127.0.0.1:%d/x"):format(port), { "Sup3r", "Secret" } },
      { ("postgresql://u:%%zzSup3rSecret@127.0.0.1:%d/x"):format(port), { "Sup3r", "Secret" } },
      { ("postgresql://u:Sup3r%%53ecret@127.0.0.1:%d/x"):format(port), { "Sup3rSecret", "Sup3r%53ecret" } },
      { ("postgresql://u:Sup3rSecret@127.0.0.1:%d/x?bogus=1"):format(port), { "Sup3rSecret" } },
      { ("host=127.0.0.1 port=%d user=u password=Sup3rSecret dbname=x"):format(port), { "Sup3rSecret" } },
      { ("host=127.0.0.1 port=%d user=u password='Sup3r Secret' dbname=x"):format(port), { "Sup3r", "Secret" } },
      { ("host=127.0.0.1 port=%d password = Sup3rSecret bogus=1"):format(port), { "Sup3rSecret" } },
    }
    for _, case in ipairs(cases) do
      it("in " .. case[1]:gsub("Sup3r", "…"), function()
        local db, err = tododb.connect(case[1], { connect_timeout = 0.3 })
        assert.is_nil(db)
        assert.is_truthy(err.code == "invalid" or err.code == "unavailable", err.code)
        for _, secret in ipairs(case[2]) do
          assert.is_nil(tostring(err):find(secret, 1, true), tostring(err))
          assert.is_nil(err.message:find(secret, 1, true), err.message)
        end
      end)
    end
  end)
end)

describe("Connection life cycle", function()
  local watcher
  setup(function() watcher = S.connect() end)
  teardown(function() watcher:close() end)

  it("raises on use after close, and close twice is fine", function()
    local db = S.connect()
    local pid = pid_of(db)
    db:close()
    assert.is_false(db:is_open())
    assert.matches("closed", tostring(db))
    assert.has_no_error(function() db:close() end)
    assert.has_error(function() db:query "SELECT 1" end, nil)
    assert.has_error(function() db:exec "SELECT 1" end)
    assert.has_error(function() db:info() end)
    local ok, msg = pcall(db.query, db, "SELECT 1")
    assert.is_false(ok)
    assert.matches("connection is closed", msg, 1, true)
    -- Behind a pooler the server connection outlives the client's.
    if not S.pooler then assert.is_true(backend_gone(watcher, pid)) end
  end)

  it("closes at the end of a <close> scope (Lua 5.4)", function()
    if not LUA54 then return pending "to-be-closed variables are Lua 5.4 syntax" end
    local f = assert(load [[
      local db = ...
      do local scoped <close> = db end
      return db:is_open()
    ]])
    local db = S.connect()
    local pid = pid_of(db)
    assert.is_false(f(db))
    if not S.pooler then assert.is_true(backend_gone(watcher, pid)) end
  end)

  it("closes when collected (__gc)", function()
    local weak = setmetatable({}, { __mode = "v" })
    local function open()
      local db = S.connect()
      weak[1] = db
      return pid_of(db)
    end
    local pid = open()
    for _ = 1, 4 do collectgarbage "collect" end
    assert.is_nil(weak[1])
    if not S.pooler then assert.is_true(backend_gone(watcher, pid)) end
  end)
end)

describe("the Connection and Session classes", function()
  it("are one method table each, tododb.core.Connection and tododb.core.Session", function()
    local core = require "tododb.core"
    local db = S.connect()
    local s = db:session(1)
    for _, m in ipairs { "query", "exec", "info", "close", "create_user", "get_user",
                         "authenticate", "session", "migrate", "session_from_token" } do
      assert.is_function(core.Connection[m], m)
      assert.equal(core.Connection[m], db[m], m)
    end
    for _, m in ipairs { "create_todo", "get_todo", "list_todos", "delete_completed" } do
      assert.is_function(core.Session[m], m)
      assert.equal(core.Session[m], s[m], m)
    end
    db:close()
  end)

  it("take methods added from Lua on every connection and session", function()
    local core = require "tododb.core"
    local db = S.connect()
    local s = db:session(7)
    core.Connection.spec_added = function(self) return self end
    core.Session.spec_added = function(self) return self.user_id end
    local ok, err = pcall(function()
      assert.equal(db, db:spec_added())
      assert.equal(7, s:spec_added())
    end)
    core.Connection.spec_added, core.Session.spec_added = nil, nil
    db:close()
    assert(ok, err)
    assert.is_nil(db.spec_added)
  end)
end)

describe("db:query's prepared statements", function()
  -- Behind a transaction pooler the server session that runs our statement
  -- may be one another client prepared on: a name both clients use would
  -- run that client's SQL in place of ours.
  local function adhoc_names(db)
    local names = {}
    for _, r in ipairs(assert(db:query("SELECT name FROM pg_prepared_statements"
                                       .. " WHERE name LIKE 'tdb_q%' ORDER BY name"))) do
      names[#names + 1] = r.name
    end
    return names
  end

  it("are named apart in every client, so one never runs another's SQL", function()
    if S.pooler then return pending "behind the pooler statements are unnamed (prepare off)" end
    local a, b = S.connect(), S.connect()
    assert(a:query "SELECT 1 AS one")
    assert(b:query "SELECT 2 AS two")
    local na, nb = adhoc_names(a), adhoc_names(b)
    assert.is_true(#na >= 1 and #nb >= 1)
    for _, x in ipairs(na) do
      for _, y in ipairs(nb) do assert.not_equal(x, y) end
    end
    a:close()
    b:close()
  end)
end)

describe("db:info", function()
  it("reports the server and that row-level security applies to the app role", function()
    local db = S.connect()
    local info = assert(db:info())
    assert.is_string(info.server_version)
    assert.matches("^%d+", info.server_version)
    assert.is_true(info.server_version_num >= 130000)
    assert.is_false(info.rls_bypassed)
    assert.equal(not S.url:find("tododb_prepare=off", 1, true), info.prepared)
    db:close()
  end)

  it("reports rls_bypassed for the admin role", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    local db = assert(tododb.connect(S.admin_url))
    assert.is_true(db:info().rls_bypassed)
    db:close()
  end)

  it("reports prepared = false with opts.prepare = false", function()
    local db = S.connect { prepare = false }
    assert.is_false(db:info().prepared)
    db:close()
  end)

  it("reports prepared = false with tododb_prepare=off in the URL", function()
    local url = S.url .. (S.url:find("?", 1, true) and "&" or "?") .. "tododb_prepare=off"
    local db = assert(tododb.connect(url, S.opts()))
    assert.is_false(db:info().prepared)
    db:close()
    db = assert(tododb.connect(S.url .. (S.url:find("?", 1, true) and "&" or "?") .. "tododb_prepare=on", S.opts()))
    assert.is_true(db:info().prepared)
    db:close()
  end)

  it("reports prepared = false with tododb_prepare=off in a conninfo", function()
    local ci = as_conninfo(S.url)
    if not ci then return pending "DATABASE_URL is a multi-host or IPv6 URL" end
    local db = assert(tododb.connect(ci .. " tododb_prepare=off", S.opts()))
    assert.is_false(db:info().prepared)
    assert.equal(1, db:query "SELECT 1 AS one"[1].one)
    db:close()
    for _, spelled in ipairs { "tododb_prepare='off' ", "tododb_prepare = 'off'", "tododb_prepare='OFF'" } do
      db = assert(tododb.connect(spelled .. " " .. ci, S.opts()))
      assert.is_false(db:info().prepared, spelled)
      assert.equal(1, db:query "SELECT 1 AS one"[1].one)
      db:close()
    end
    db = assert(tododb.connect(ci .. " tododb_prepare='on'", S.opts()))
    assert.is_true(db:info().prepared)
    db:close()
  end)

  it("refuses a tododb_prepare that is neither on nor off", function()
    local url = S.url .. (S.url:find("?", 1, true) and "&" or "?") .. "tododb_prepare=of"
    local db, err = tododb.connect(url, S.opts())
    assert.is_nil(db)
    assert.equal("invalid", err.code)
    assert.matches("tododb_prepare", err.message, 1, true)
    local ci = as_conninfo(S.url)
    if ci then
      db, err = tododb.connect(ci .. " tododb_prepare='maybe'", S.opts())
      assert.is_nil(db)
      assert.equal("invalid", err.code)
    end
  end)
end)

for _, prepare in ipairs { true, false } do
  describe(("db:query (prepare = %s)"):format(tostring(prepare)), function()
    local db
    before_each(function() db = S.connect { prepare = prepare } end)
    after_each(function() db:close() end)

    it("round-trips NULL and booleans", function()
      local rows = assert(db:query("SELECT NULL::int AS a, true AS b, false AS c,"
        .. " $1::text AS d, $2::bool AS e, $3::int AS f, $4::bool AS g", nil, true, tododb.null, false))
      local r = rows[1]
      assert.is_nil(r.a); assert.is_true(r.b); assert.is_false(r.c)
      assert.is_nil(r.d); assert.is_true(r.e); assert.is_nil(r.f); assert.is_false(r.g)
    end)

    it("round-trips int8 exactly", function()
      if S.int64 then
        local r = assert(db:query("SELECT 9007199254740993::int8 AS big, $1::int8 AS param,"
          .. " (-9223372036854775808)::int8 AS min, 9223372036854775807::int8 AS max,"
          .. " $2::int8 + 0 AS maxp", math.tointeger(9007199254740993), math.maxinteger))[1]
        assert.equal("integer", math.type(r.big))
        assert.equal("9007199254740993", ("%d"):format(r.big))
        assert.equal("9007199254740993", ("%d"):format(r.param))
        assert.equal(math.mininteger, r.min)
        assert.equal(math.maxinteger, r.max)
        assert.equal(math.maxinteger, r.maxp)
      else
        local r = assert(db:query("SELECT '9007199254740993'::int8 AS big, $1::int8 AS param,"
          .. " (-9223372036854775808)::int8 AS min, 9223372036854775807::int8 AS max,"
          .. " 9007199254740992::int8 AS safe", "9007199254740993"))[1]
        assert.equal("9007199254740993", r.big)
        assert.equal("9007199254740993", r.param)
        assert.equal("-9223372036854775808", r.min)
        assert.equal("9223372036854775807", r.max)
        assert.equal(9007199254740992, r.safe)
      end
    end)

    it("round-trips text verbatim", function()
      local s = "it's a \"quote\", a \\back\\slash, 'é', 漢字 and 😀 \t\n"
      local r = assert(db:query("SELECT $1::text AS s, length($1::text) AS n,"
        .. " 'O''Brien \\n' AS lit", s))[1]
      assert.equal(s, r.s)
      assert.equal(47, r.n)                        -- characters, not bytes
      assert.equal("O'Brien \\n", r.lit)
    end)

    it("returns timestamptz as ISO-8601 UTC with microseconds", function()
      local q = "SELECT '2026-01-13 10:30:00.000123+01'::timestamptz AS t,"
        .. " '2026-01-13 00:15:00-05:30'::timestamptz AS u, '2026-01-13 10:30:00+00'::timestamptz AS v"
      local r = assert(db:query(q))[1]
      assert.equal("2026-01-13T09:30:00.000123Z", r.t)
      assert.equal("2026-01-13T05:45:00.000000Z", r.u)
      assert.equal("2026-01-13T10:30:00.000000Z", r.v)
      assert.is_true(db:exec "SET TimeZone='Asia/Kolkata'")
      assert.equal("Asia/Kolkata", db:query "SELECT current_setting('TimeZone') AS z"[1].z)
      assert.matches("+05:30", db:query "SELECT '2026-01-13 10:30:00+01'::timestamptz::text AS s"[1].s, 1, true)
      r = assert(db:query(q))[1]
      assert.equal("2026-01-13T09:30:00.000123Z", r.t)
      assert.equal("2026-01-13T05:45:00.000000Z", r.u)
    end)

    it("returns the rows and the affected count", function()
      assert(db:exec "CREATE TEMP TABLE h2_count (x int)")
      local rows, n = db:query "INSERT INTO h2_count SELECT generate_series(1, 3)"
      assert.same({}, rows); assert.equal(3, n)
      rows, n = db:query("UPDATE h2_count SET x = x * 10 WHERE x > $1", 1)
      assert.same({}, rows); assert.equal(2, n)
      rows, n = db:query "SELECT x FROM h2_count ORDER BY x"
      assert.equal(3, n)
      assert.same({ { x = 1 }, { x = 20 }, { x = 30 } }, rows)
      rows, n = db:query("SELECT x FROM h2_count WHERE x > $1", 100)
      assert.same({}, rows); assert.equal(0, n)
      rows, n = db:query "DELETE FROM h2_count"
      assert.same({}, rows); assert.equal(3, n)
    end)

    it("raises for wrong argument types", function()
      assert.has_error(function() db:query() end)
      assert.has_error(function() db:query({}) end)
      assert.has_error(function() db:query("SELECT $1::text", {}) end)
      assert.has_error(function() db:query("SELECT $1::text", function() end) end)
      assert.has_error(function() db:query("SELECT $1::text", "a\0b") end)
      assert.has_error(function() db:exec() end)
      assert.has_error(function() db:exec(true) end)
      assert.has_error(function() db.query("SELECT 1") end)
      assert.has_error(function() db.info({}) end)
    end)

    it("reports a SQL error with code, sqlstate and message", function()
      local rows, err = db:query "SELECT * FROM h2_no_such_table"
      assert.is_nil(rows)
      assert.equal("42P01", err.sqlstate)
      assert.equal("internal", err.code)
      assert.matches("h2_no_such_table", err.message, 1, true)
      assert.equal(err.message, tostring(err))
      rows, err = db:query("SELECT 1 / $1::int AS z", 0)
      assert.is_nil(rows)
      assert.equal("22012", err.sqlstate)
      assert.equal("invalid", err.code)
      local ok
      ok, err = db:exec "SELEKT 1"
      assert.is_nil(ok)
      assert.equal("42601", err.sqlstate)
      -- The connection is still usable afterwards.
      assert.equal(2, db:query "SELECT 2 AS two"[1].two)
    end)

    it("reports unavailable once when the backend is killed, then reconnects", function()
      local before = pid_of(db)
      local rows, err = db:query "SELECT pg_terminate_backend(pg_backend_pid())"
      assert.is_nil(rows)
      assert.equal("unavailable", err.code)
      local after = pid_of(db)
      assert.not_equal(before, after)
      assert.equal(3, db:query "SELECT 3 AS three"[1].three)
    end)

    it("reports unavailable once when an admin kills the backend, then reconnects", function()
      if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
      if S.pooler then
        return pending "behind a transaction pooler the next statement gets another server connection"
      end
      local admin = assert(tododb.connect(S.admin_url))
      local before = pid_of(db)
      assert.is_true(admin:query("SELECT pg_terminate_backend($1::int) AS ok", before)[1].ok)
      assert.is_true(backend_gone(admin, before))
      local ok, err = db:exec "SELECT 1"
      assert.is_nil(ok)
      assert.equal("unavailable", err.code)
      assert.is_true(db:exec "SELECT 1")
      assert.not_equal(before, pid_of(db))
      admin:close()
    end)
  end)
end
