-- Fault specs (make faults, not part of make test): servers killed, restarted,
-- full, fake or frozen under load. Each uses throwaway servers
-- (spec/cluster.lua), never the shared test database, and stops them in a
-- `finally`, also when it fails. Waits are polls with generous bounds: the
-- only durations asserted are the deadlines tododb promises.
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

-- True once cond() holds, polled for at most `secs` seconds.
local function eventually(secs, cond)
  local deadline = system.monotime() + secs
  while not cond() do
    if system.monotime() > deadline then return false end
    system.sleep(0.1)
  end
  return true
end

local function lines_of(path)
  local t = {}
  local f = io.open(path)
  if f then
    for l in f:lines() do t[#t + 1] = l end
    f:close()
  end
  return t
end

-- Lines of `path` from line `from` on that match `pat`.
local function count(path, pat, from)
  local n = 0
  for i, l in ipairs(lines_of(path)) do
    if i >= (from or 1) and l:match(pat) then n = n + 1 end
  end
  return n
end

-- n worker processes running `body` until load:stop(). The body sees URL,
-- UID (a user's id), K (the worker's number) and running(); each worker's
-- output goes line by line to its own file (workers[k].out), not to a pipe
-- the spec would have to drain while it waits.
local PRELUDE = [[
local URL, UID, K, STOP = %q, %s, %d, %q
io.stdout:setvbuf "line"
local until_at = os.time() + 300             -- never outlives a lost spec
local function running()
  local f = io.open(STOP)
  if f then f:close() return false end
  return os.time() < until_at
end
]]
local function start_load(n, url, uid, body)
  local load = { stop = os.tmpname(), workers = {} }
  os.remove(load.stop)
  for k = 1, n do
    local out = os.tmpname()
    load.workers[k] = { out = out,
      proc = S.spawn_lua(PRELUDE:format(url, tostring(uid), k, load.stop) .. body, out) }
  end
  -- Ends the workers and waits for them; idempotent.
  function load.finish()
    assert(io.open(load.stop, "w")):close()
    for _, w in ipairs(load.workers) do
      if w.proc then w.proc:close() w.proc = nil end
    end
  end
  function load.cleanup()
    load.finish()
    for _, w in ipairs(load.workers) do os.remove(w.out) end
    os.remove(load.stop)
  end
  -- Line counts of the workers' outputs now.
  function load.marks()
    local m = {}
    for k, w in ipairs(load.workers) do m[k] = #lines_of(w.out) + 1 end
    return m
  end
  -- True once every worker has `want` lines matching pat after its mark.
  function load.each(want, pat, marks)
    return eventually(120, function()
      for k, w in ipairs(load.workers) do
        if count(w.out, pat, marks and marks[k]) < want then return false end
      end
      return true
    end)
  end
  return load
end

-- Writes todos titled w<K>-<i>: "ACK <title>" or "ERR <code> <title>";
-- `after` (Lua source, optional) runs after each write.
local function writer(after)
  return [[
local tododb = require "tododb"
local db = assert(tododb.connect(URL, { connect_timeout = 20, pwhash = "min" }))
local s = db:session(UID)
local i = 0
while running() do
  i = i + 1
  local title = ("w%d-%d"):format(K, i)
  local t, err = s:create_todo { title = title }
  io.write(t and "ACK " or ("ERR " .. err.code .. " "), title, "\n")
]] .. (after or "") .. "\nend\n"
end

-- Checks the workers' outputs against the server: every line is ACK or ERR
-- unavailable, every acknowledged title is there exactly once, every failed
-- one at most once. Returns per worker { acks = n, errs = n }.
local function check_writes(pg, load)
  local admin = assert(tododb.connect(pg:url("postgres", "app"), { connect_timeout = 30 }))
  local n = {}
  for _, r in ipairs(assert(admin:query "SELECT title, count(*) AS n FROM todos GROUP BY title")) do
    n[r.title] = r.n
  end
  admin:close()
  local per = {}
  for k, w in ipairs(load.workers) do
    per[k] = { acks = 0, errs = 0 }
    for _, l in ipairs(lines_of(w.out)) do
      local ack = l:match "^ACK (%S+)$"
      local code, failed = l:match "^ERR (%S+) (%S+)$"
      if ack then
        per[k].acks = per[k].acks + 1
        assert.equal(1, n[ack], "acknowledged " .. ack .. ", found " .. tostring(n[ack] or 0) .. " times")
      elseif failed then
        per[k].errs = per[k].errs + 1
        assert.equal("unavailable", code, l)
        assert.is_true((n[failed] or 0) <= 1, failed .. " ran twice")
      elseif not l:match "^READ ok$" then
        error("worker " .. k .. ": " .. l)
      end
    end
  end
  return per
end

local function new_user(pg, email)
  local db = assert(tododb.connect(pg:url("app", "app"), S.opts()))
  local u = assert(db:create_user { email = email, password = PW })
  db:close()
  return u
end

describe("faults", function()
  it("server killed with -9 during a two-process write load: every acknowledged create is there once", function()
    local pg, why = server {}
    if not pg then return pending(why) end
    local load
    finally(function()
      if load then load.cleanup() end
      pg:destroy()
    end)
    load = start_load(2, pg:url("app", "app"), new_user(pg, "load@example.com").id, writer())
    assert.is_true(load.each(50, "^ACK "), "the workers did not get going")
    local before = load.marks()
    assert(pg:kill9())
    assert(pg:start())
    -- Both workers come back by themselves and go on writing.
    assert.is_true(load.each(50, "^ACK ", before), "the workers did not write again after the restart")
    load.finish()
    local per = check_writes(pg, load)
    for k = 1, 2 do
      -- The crash cut each worker's connection under it: its next write
      -- said unavailable (it may or may not have happened).
      assert.is_true(per[k].errs >= 1, "worker " .. k .. " saw no failed write")
    end
  end)

  for _, mode in ipairs { "fast", "immediate" } do
    it("restart -m " .. mode .. ": reads recover by themselves, writes say unavailable and ran at most once", function()
      local pg, why = server {}
      if not pg then return pending(why) end
      local db, load
      finally(function()
        if load then load.cleanup() end
        if db then db:close() end
        pg:destroy()
      end)
      db = assert(tododb.connect(pg:url("app", "app"), S.opts { connect_timeout = 30 }))
      local u = assert(db:create_user { email = "r@example.com", password = PW })
      local s = db:session(u)
      local t = assert(s:create_todo { title = "before" })
      -- One call right after each restart, on the connection that died.
      assert(pg:restart(mode))
      local got, err = s:get_todo(t.id)          -- a read: retried once, transparently
      assert.is_nil(err)
      assert.equal("before", got.title)
      assert(pg:restart(mode))
      local w
      w, err = s:create_todo { title = "during" }  -- a write: reported, not retried
      assert.is_nil(w)
      assert.equal("unavailable", err.code)
      assert.is_true(db:query("SELECT count(*) AS n FROM todos WHERE title = 'during'")[1].n <= 1)
      assert(s:create_todo { title = "after" })
      -- A restart under two processes of reads (three per write) and writes.
      load = start_load(2, pg:url("app", "app"), u.id, writer(([[
          for _ = 1, 3 do
            local got, rerr = s:get_todo(%d)
            io.write(got and got.title == "before" and "READ ok\n"
                     or ("READ failed: " .. tostring(rerr or got.title) .. "\n"))
          end
      ]]):format(t.id)))
      assert.is_true(load.each(20, "^ACK ") and load.each(60, "^READ "), "the workers did not get going")
      local marks = load.marks()
      assert(pg:restart(mode))
      assert.is_true(load.each(20, "^ACK ", marks) and load.each(60, "^READ ", marks),
                     "the workers did not go on after the restart")
      load.finish()
      check_writes(pg, load)         -- also fails on any read that did not recover
    end)
  end

  it("max_connections exhausted: connects wait for a free slot, within connect_timeout", function()
    -- Room for 3 ordinary connections (5 minus 2 reserved for superusers).
    local pg, why = server { conf = { max_connections = 5, superuser_reserved_connections = 2 } }
    if not pg then return pending(why) end
    local held, load = {}, nil
    finally(function()
      if load then load.cleanup() end
      for _, h in ipairs(held) do h:close() end
      pg:destroy()
    end)
    for i = 1, 3 do held[i] = assert(tododb.connect(pg:url("app", "app"), S.opts())) end
    -- Full: the answer is 53300, retried until the deadline, not failed at once.
    local t0 = system.monotime()
    local db, err = tododb.connect(pg:url("app", "app"), { connect_timeout = 2 })
    local elapsed = system.monotime() - t0
    assert.is_nil(db)
    assert.equal("unavailable", err.code)
    assert.equal("53300", err.sqlstate)
    assert.matches("timed out after 2 s", err.message, 1, true)
    assert.is_true(elapsed >= 1.9, "gave up after " .. elapsed .. " s")
    -- Four processes connect to the full server, each holding its connection
    -- for a while; the 3 slots free up a second later, so the fourth
    -- also waits for one of the other three. CLOCK_MONOTONIC is shared.
    load = start_load(4, pg:url("app", "app"), 0, [[
      local tododb = require "tododb"
      local system = require "system"
      local db, err = tododb.connect(URL, { connect_timeout = 30 })
      if not db then io.write("FAIL ", tostring(err.sqlstate), " ", tostring(err), "\n") return end
      local at = system.monotime()
      assert(db:query "SELECT 1 AS one")
      system.sleep(0.5)
      db:close()
      io.write(("OK %.3f\n"):format(at))
    ]])
    system.sleep(1)
    local freed_at = system.monotime()
    for i = 3, 1, -1 do held[i]:close() held[i] = nil end
    load.finish()
    for k, w in ipairs(load.workers) do
      local out = table.concat(lines_of(w.out), "\n")
      local at = tonumber(out:match "^OK (%S+)$")
      assert.is_truthy(at, "worker " .. k .. ": " .. out)
      assert.is_true(at >= freed_at, "connected " .. (freed_at - at) .. " s before a slot was free")
    end
  end)

  it("a fake server that accepts and closes is retried until the deadline", function()
    local port = C.free_port()
    local log = os.tmpname()
    -- Accepts, reads the startup packet, closes; one line per connection.
    local pid = S.capture(([[perl -MIO::Socket::INET -e '
      $| = 1;
      my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => %d, Listen => 64,
                                    ReuseAddr => 1) or die "listen: $!\n";
      print "listening\n";
      while (my $c = $s->accept) { sysread($c, my $b, 8192); print "accepted\n"; close $c }
    ' >%s 2>&1 & echo $!]]):format(port, log)):match "%d+"
    finally(function()
      S.run("kill " .. pid)
      os.remove(log)
    end)
    assert.is_true(eventually(30, function() return count(log, "^listening$") == 1 end),
                   "the fake server did not listen: " .. table.concat(lines_of(log), " "))
    local t0 = system.monotime()
    local db, err = tododb.connect(("postgresql://u@127.0.0.1:%d/x?sslmode=disable"):format(port),
                                   { connect_timeout = 2 })
    local elapsed = system.monotime() - t0
    assert.is_nil(db)
    assert.equal("unavailable", err.code)
    assert.matches("timed out after 2 s", err.message, 1, true)
    assert.is_true(elapsed >= 1.9, "gave up after " .. elapsed .. " s")
    assert.is_true(elapsed < 10, "the deadline of 2 s was not kept: " .. elapsed .. " s")
    assert.is_true(count(log, "^accepted$") >= 2, "not retried: " .. table.concat(lines_of(log), " "))
  end)

  it("frozen primary, promoted replica: the next call lands on the new primary", function()
    local a, why = C.new { conf = { wal_level = "replica", max_wal_senders = 4 },
                           hba = "local all all trust\nlocal replication all trust\n" }
    if not a then return pending(why) end
    local b, db
    finally(function()              -- busted keeps one finally per spec
      if db then db:close() end
      a:destroy()
      if b then b:destroy() end
    end)
    if not a:start() then return pending "the primary did not start" end
    b = C.new {}
    if not b then return pending "no second server" end
    S.run("rm -rf '" .. b.data .. "'")
    local ok = S.run(C.as_pg(("%s/pg_basebackup -D '%s' -h '%s' -p %d -U postgres -R -X stream >/dev/null 2>&1")
      :format(C.bin, b.data, a.dir, a.port)))
    if not ok then return pending "pg_basebackup failed" end
    b:write("postgresql.conf", ("\nport = %d\nunix_socket_directories = '%s'\n"):format(b.port, b.dir), "a")
    assert(b:start())
    local url = ("postgresql:///postgres?host=%s,%s&port=%d,%d&user=postgres"
      .. "&target_session_attrs=read-write&connect_timeout=2"):format(a.dir, b.dir, a.port, b.port)
    -- A call waits 2 s for an answer, as long as a hung host may take to
    -- connect: the new primary's answer must not be charged for a's 2 s.
    db = assert(tododb.connect(url, { connect_timeout = 20, timeout = 2 }))
    assert.equal(a.port, db:query "SELECT current_setting('port')::int AS p"[1].p)
    assert(db:info())
    -- Freeze the primary (postmaster and backends), promote the replica.
    local frozen = a:pids()
    S.run("kill -STOP " .. table.concat(frozen, " "))
    assert(b:pg_ctl "promote -w")
    local _, err = db:info()                    -- in flight on the frozen host
    assert.equal("unavailable", err.code)
    local t0 = system.monotime()
    local info
    info, err = db:info()                       -- reconnects: a hangs 2 s, then b
    local elapsed = system.monotime() - t0
    S.run("kill -CONT " .. table.concat(frozen, " ") .. " 2>/dev/null")
    assert.is_nil(err)
    assert.truthy(info)
    assert.equal(b.port, db:query "SELECT current_setting('port')::int AS p"[1].p)
    -- The per-host timeout (2 s) for a, then b: generous room for a busy machine.
    assert.is_true(elapsed < 8, "took " .. elapsed .. " s")
  end)
end)
