-- A hung server ends a call with `unavailable` after opts.timeout; a write
-- that timed out is reported as one that may have happened, never retried.
local S = require "support"
local C = require "cluster"
local tododb = require "tododb"
local system = require "system"

describe("the per-call deadline", function()
  local pg, why, url

  setup(function()
    pg, why = C.started {}
    if pg then
      url = pg:url "postgres"
      local db = assert(tododb.connect(url, S.opts()))
      assert(db:migrate())
      db:close()
    end
  end)
  teardown(function() if pg then pg:destroy() end end)

  -- Freezes (SIGSTOP) db's server process from now on; returns its pid.
  local function freeze(db)
    local pid = db:query "SELECT pg_backend_pid() AS p"[1].p
    assert(S.run(("kill -STOP %d"):format(pid)))
    return pid
  end
  -- A new connection, frozen.
  local function frozen(opts)
    local db = assert(tododb.connect(url, S.opts(opts)))
    return db, freeze(db)
  end
  -- Ends a frozen server process. SIGTERM first, while it is stopped, so it
  -- dies on waking, before it reads what was sent meanwhile.
  local function thaw(pid)
    S.run(("kill -TERM %d; kill -CONT %d"):format(pid, pid))
  end

  it("raises for a timeout that is not a positive number or false", function()
    if why then return pending(why) end
    assert.has_error(function() tododb.connect(url, { timeout = 0 }) end)
    assert.has_error(function() tododb.connect(url, { timeout = "1" }) end)
    local db = assert(tododb.connect(url, { timeout = false }))
    db:close()
  end)

  it("ends a read on a hung server with unavailable after the timeout, then reconnects", function()
    if why then return pending(why) end
    local db, pid = frozen { timeout = 1 }
    local t0 = system.monotime()
    local u, err = db:get_user(1)
    local elapsed = system.monotime() - t0
    thaw(pid)
    assert.is_nil(u)
    assert.equal("unavailable", err.code)
    assert.matches("no answer within 1 s", err.message, 1, true)
    assert.is_nil(err.message:find("may have been made", 1, true))
    assert.is_true(elapsed >= 0.9 and elapsed < 5, "returned after " .. elapsed .. " s")
    -- The next call runs on a new connection.
    local _, e2 = db:get_user(1)
    assert.equal("not_found", e2.code)
    db:close()
  end)

  it("reports a write that timed out as one that may have happened, and never retries it", function()
    if why then return pending(why) end
    local db, pid = frozen { timeout = 1 }
    local u, err = db:create_user { email = "late@example.com", password = "correct horse 1" }
    assert.is_nil(u)
    assert.equal("unavailable", err.code)
    assert.matches("the change may have been made", err.message, 1, true)
    db:close()
    thaw(pid)                -- the frozen backend dies before running it
    system.sleep(0.2)
    local check = assert(tododb.connect(url, S.opts()))
    assert.equal(0, check:query("SELECT count(*) AS n FROM users WHERE email = $1", "late@example.com")[1].n)
    check:close()
  end)

  it("bounds db:query and db:exec as well, under the same read and write rule", function()
    if why then return pending(why) end
    local db, pid = frozen { timeout = 1 }
    local t0 = system.monotime()
    local rows, err = db:query("SELECT $1::int AS v", 7)
    local elapsed = system.monotime() - t0
    thaw(pid)
    assert.is_nil(rows)
    assert.equal("unavailable", err.code)
    assert.matches("no answer within 1 s", err.message, 1, true)
    assert.is_nil(err.message:find("may have been made", 1, true))
    assert.is_true(elapsed >= 0.9 and elapsed < 5, "returned after " .. elapsed .. " s")
    assert.equal(7, db:query("SELECT $1::int AS v", 7)[1].v)   -- on a new connection
    pid = freeze(db)
    local ok
    ok, err = db:exec "CREATE TABLE late_exec (x int)"
    thaw(pid)
    assert.is_nil(ok)
    assert.equal("unavailable", err.code)
    assert.matches("the change may have been made", err.message, 1, true)
    pid = freeze(db)
    rows, err = db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x')", "late2@example.com")
    thaw(pid)
    assert.is_nil(rows)
    assert.matches("the change may have been made", err.message, 1, true)
    system.sleep(0.2)
    assert.equal(0, db:query("SELECT count(*) AS n FROM users WHERE email = $1", "late2@example.com")[1].n)
    assert.is_nil(db:query "SELECT to_regclass('late_exec') AS t"[1].t)
    db:close()
  end)

  it("bounds s:batch as well, which is a write", function()
    if why then return pending(why) end
    local db = assert(tododb.connect(url, S.opts { timeout = 1, allow_rls_bypass = true }))
    local s = db:session(assert(db:create_user { email = "batch@example.com", password = "correct horse 1" }))
    assert.equal(0, assert(s:count_todos()))
    local pid = freeze(db)
    local t0 = system.monotime()
    local res, err = s:batch { { op = "create", title = "late" } }
    local elapsed = system.monotime() - t0
    thaw(pid)
    assert.is_nil(res)
    assert.equal("unavailable", err.code)
    assert.matches("the change may have been made", err.message, 1, true)
    assert.is_true(elapsed >= 0.9 and elapsed < 5, "returned after " .. elapsed .. " s")
    system.sleep(0.2)
    assert.equal(0, assert(s:count_todos()))               -- on a new connection
    db:close()
  end)
end)
