-- Fault specs (make faults, not part of make test): servers killed, restarted,
-- full, fake or frozen under load. Each uses throwaway servers
-- (spec/cluster.lua), never the shared test database.
local S = require "support"
local C = require "cluster"
local tododb = require "tododb"
local system = require "system"

local PW = "correct horse battery staple"

-- A server with an ordinary role `app` that owns database `app`, migrated.
-- Acknowledged commits are in the kernel's hands (synchronous_commit on;
-- fsync may stay off: the server crashes here, not the machine).
local function server(o)
  o = o or {}
  o.conf = o.conf or {}
  o.conf.synchronous_commit = "on"
  local pg, why = C.new(o)
  if not pg then return nil, why end
  if not pg:start() then pg:destroy() return nil, "a throwaway server did not start" end
  assert(pg:psql "CREATE ROLE app LOGIN")
  assert(pg:psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tododb_app')"
    .. " THEN CREATE ROLE tododb_app NOLOGIN; END IF; END $$"))
  assert(pg:psql "GRANT tododb_app TO app")
  assert(pg:psql "CREATE DATABASE app OWNER app")
  local db = assert(tododb.connect(pg:url("app", "app"), S.opts()))
  assert(db:migrate())
  db:close()
  return pg
end

-- Kills the postmaster and every process it started with SIGKILL (by pid).
local function kill9(pg)
  local pid = assert(pg:pid())
  S.run(("pkill -KILL -P %d; kill -KILL %d"):format(pid, pid))
  for _ = 1, 100 do
    if not S.run(("kill -0 %d 2>/dev/null"):format(pid)) then break end
    system.sleep(0.05)
  end
  system.sleep(0.3)                    -- the orphaned backends go too
end

describe("faults", function()
  it("server killed with -9 during a two-process write load: every acknowledged create is there once", function()
    local pg, why = server {}
    if not pg then return pending(why) end
    local setup = assert(tododb.connect(pg:url("app", "app"), S.opts()))
    local u = assert(setup:create_user { email = "load@example.com", password = PW })
    setup:close()
    local stop = os.tmpname()
    os.remove(stop)
    local script = [[
      local tododb = require "tododb"
      local db = assert(tododb.connect(%q, { connect_timeout = 30, pwhash = "min" }))
      local s = db:session(%s)
      local i = 0
      while not io.open(%q) do
        i = i + 1
        local title = ("w%s-%%d"):format(i)
        local t, err = s:create_todo { title = title }
        if t then io.write("ACK ", title, "\n") else io.write("ERR ", err.code, "\n") end
        io.flush()
      end
    ]]
    local workers = {}
    for k = 1, 2 do
      workers[k] = S.spawn_lua(script:format(pg:url("app", "app"), tostring(u.id), stop, tostring(k)))
    end
    system.sleep(1.5)
    kill9(pg)
    assert(pg:start())
    system.sleep(1.5)
    assert(io.open(stop, "w")):close()
    local acked, errors = {}, {}
    for k = 1, 2 do
      for line in workers[k]:lines() do
        local title = line:match "^ACK (.*)$"
        if title then acked[#acked + 1] = title
        else errors[#errors + 1] = line end
      end
      workers[k]:close()
    end
    os.remove(stop)
    -- Each worker's connection died under it: its next write said so.
    assert.is_true(#errors >= 2, #errors .. " failed writes")
    for _, e in ipairs(errors) do assert.matches("^ERR unavailable", e) end
    local admin = assert(tododb.connect(pg:url("postgres", "app"), { connect_timeout = 10 }))
    local rows = assert(admin:query "SELECT title, count(*) AS n FROM todos GROUP BY title")
    local seen = {}
    for _, r in ipairs(rows) do
      assert.equal(1, r.n, "created twice: " .. r.title)
      seen[r.title] = true
    end
    for _, title in ipairs(acked) do assert.is_true(seen[title], "acknowledged but lost: " .. title) end
    assert.is_true(#acked > 0)
    admin:close()
    pg:destroy()
  end)

  for _, mode in ipairs { "fast", "immediate" } do
    it("restart -m " .. mode .. ": reads recover by themselves, writes say unavailable and ran at most once", function()
      local pg, why = server {}
      if not pg then return pending(why) end
      local db = assert(tododb.connect(pg:url("app", "app"), S.opts { connect_timeout = 30 }))
      local u = assert(db:create_user { email = "r@example.com", password = PW })
      local s = db:session(u)
      local t = assert(s:create_todo { title = "before" })
      assert(pg:restart(mode))
      local got, err = s:get_todo(t.id)          -- a read: retried once, transparently
      assert.is_nil(err)
      assert.equal("before", got.title)
      assert(pg:restart(mode))
      local w
      w, err = s:create_todo { title = "during" }  -- a write: reported, not retried
      assert.is_nil(w)
      assert.equal("unavailable", err.code)
      assert.is_true(s:count_todos() <= 2)
      assert(s:create_todo { title = "after" })
      local titles = {}
      for _, x in ipairs(assert(s:list_todos { order = "oldest" }).items) do titles[#titles + 1] = x.title end
      assert.equal("before", titles[1])
      assert.equal("after", titles[#titles])
      assert.is_true(#titles <= 3)
      db:close()
      pg:destroy()
    end)
  end

  it("a fake server that accepts and closes is retried until the deadline", function()
    if not S.run "command -v openssl >/dev/null" then return pending "openssl is not installed" end
    local dir = S.capture("mktemp -d /tmp/tododb-fake.XXXXXX"):match "%S+"
    assert(S.run(("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -days 1 -subj /CN=fake -keyout k.pem -out c.pem >/dev/null 2>&1"):format(dir)))
    local port = C.free_port()
    -- openssl s_server expects a TLS ClientHello; a PostgreSQL startup
    -- packet makes it drop the connection, and it goes on accepting.
    local pid = S.capture(("cd %s && (openssl s_server -quiet -accept 127.0.0.1:%d -cert c.pem -key k.pem"
      .. " </dev/null >/dev/null 2>&1 & echo $!)"):format(dir, port)):match "%d+"
    for _ = 1, 50 do
      if S.run(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(port)) then break end
      system.sleep(0.1)
    end
    local t0 = system.monotime()
    local db, err = tododb.connect(("postgresql://u@127.0.0.1:%d/x?sslmode=disable"):format(port),
                                   { connect_timeout = 2 })
    local elapsed = system.monotime() - t0
    S.run("kill " .. pid)
    S.run("rm -rf " .. dir)
    assert.is_nil(db)
    assert.equal("unavailable", err.code)
    assert.matches("timed out after 2 s", err.message, 1, true)
    assert.is_true(elapsed >= 1.9, "gave up after " .. elapsed .. " s")
  end)

  it("frozen primary, promoted replica: the next call lands on the new primary", function()
    local a, why = C.new { conf = { wal_level = "replica", max_wal_senders = 4 },
                           hba = "local all all trust\nlocal replication all trust\n" }
    if not a then return pending(why) end
    if not a:start() then a:destroy() return pending "the primary did not start" end
    local b = C.new {}
    if not b then a:destroy() return pending "no second server" end
    S.run("rm -rf '" .. b.data .. "'")
    local ok = S.run(C.as_pg(("%s/pg_basebackup -D '%s' -h '%s' -p %d -U postgres -R -X stream >/dev/null 2>&1")
      :format(C.bin, b.data, a.dir, a.port)))
    if not ok then a:destroy() b:destroy() return pending "pg_basebackup failed" end
    b:write("postgresql.conf", ("\nport = %d\nunix_socket_directories = '%s'\n"):format(b.port, b.dir), "a")
    assert(b:start())
    local url = ("postgresql:///postgres?host=%s,%s&port=%d,%d&user=postgres"
      .. "&target_session_attrs=read-write&connect_timeout=2"):format(a.dir, b.dir, a.port, b.port)
    local db = assert(tododb.connect(url, { connect_timeout = 20, timeout = 3 }))
    assert.equal(a.port, db:query "SELECT current_setting('port')::int AS p"[1].p)
    assert(db:info())
    -- Freeze the primary (postmaster and backends), promote the replica.
    local pid = a:pid()
    S.run(("pkill -STOP -P %d; kill -STOP %d"):format(pid, pid))
    assert(b:pg_ctl "promote -w")
    local _, err = db:info()                    -- in flight on the frozen host
    assert.equal("unavailable", err.code)
    local t0 = system.monotime()
    local info
    info, err = db:info()                       -- reconnects: a hangs 2 s, then b
    local elapsed = system.monotime() - t0
    S.run(("kill -CONT %d; pkill -CONT -P %d"):format(pid, pid))
    assert.is_nil(err)
    assert.truthy(info)
    assert.equal(b.port, db:query "SELECT current_setting('port')::int AS p"[1].p)
    assert.is_true(elapsed < 8, "took " .. elapsed .. " s")
    db:close()
    a:destroy()
    b:destroy()
  end)
end)
