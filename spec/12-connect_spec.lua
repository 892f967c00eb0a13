-- Connecting to a server that is full, refuses us, or is not there yet:
-- what is retried is decided by SQLSTATE and connection state.
local S = require "support"
local C = require "cluster"
local tododb = require "tododb"
local system = require "system"

describe("connect retries", function()
  local pg, why

  setup(function()
    -- Room for 3 ordinary connections (5 minus 2 reserved for superusers).
    pg, why = C.started { conf = { max_connections = 5, superuser_reserved_connections = 2 } }
    if pg then
      assert(pg:psql "CREATE ROLE app LOGIN")
      assert(pg:psql "CREATE DATABASE app OWNER app")
    end
  end)

  teardown(function() if pg then pg:destroy() end end)

  local function need()
    if why then pending(why) return false end
    return true
  end

  it("waits for a connection slot while the server is full (SQLSTATE 53300)", function()
    if not need() then return end
    local held = {}
    for i = 1, 3 do held[i] = assert(tododb.connect(pg:url("app", "app"), S.opts())) end
    -- The server is full for `app`: its answer is 53300, which is not final.
    local out = S.capture(C.as_pg(("%s/psql -X -At '%s' -c 'SELECT 1' 2>&1"):format(C.bin, pg:url("app", "app"))))
    assert.matches("remaining connection slots", out, 1, true)
    -- Another process connects while the server is full; a slot frees up
    -- about a second later. CLOCK_MONOTONIC is shared by the processes.
    local child = S.spawn_lua(([[
      local tododb = require "tododb"
      local system = require "system"
      local db, err = tododb.connect(%q, { connect_timeout = 30 })
      io.write(db and "ok" or ("fail " .. tostring(err.code) .. " " .. tostring(err.sqlstate) .. " " .. tostring(err)),
               " ", string.format("%%.3f", system.monotime()), "\n")
    ]]):format(pg:url("app", "app")))
    system.sleep(1)
    local freed_at = system.monotime()
    held[1]:close()
    local line = child:read "*a"
    child:close()
    assert.matches("^ok ", line)
    local done_at = tonumber(line:match "ok (%S+)")
    assert.is_true(done_at >= freed_at, "connected " .. (freed_at - done_at) .. " s before a slot was free")
    for i = 2, 3 do held[i]:close() end
  end)

  -- Connects with 30 s to spare: a definite refusal must end it at once.
  local function refused(url, code, sqlstate)
    local t0 = system.monotime()
    local db, err = tododb.connect(url, { connect_timeout = 30 })
    local elapsed = system.monotime() - t0
    assert.is_nil(db)
    assert.equal(code, err.code)
    assert.equal(sqlstate, err.sqlstate)
    assert.is_true(elapsed < 10, "retried for " .. elapsed .. " s")
    return err
  end

  it("fails at once, keeping the SQLSTATE, for a database that does not exist", function()
    if not need() then return end
    local err = refused(pg:url("app", "no_such_db"), "unavailable", "3D000")
    assert.matches("no_such_db", err.message, 1, true)
    assert.is_nil(err.message:find("LOCATION", 1, true), err.message)
    assert.is_nil(err.message:find("3D000", 1, true), err.message)
  end)

  it("fails at once with unauthorized for a role that does not exist", function()
    if not need() then return end
    refused(pg:url("nobody_here", "app"), "unauthorized", "28000")
  end)

  it("fails at once with unauthorized when pg_hba.conf rejects the connection", function()
    if not need() then return end
    assert(pg:psql "CREATE ROLE shut_out LOGIN")
    pg:write("pg_hba.conf", "local all shut_out reject\nlocal all all trust\n")
    assert(pg:psql "SELECT pg_reload_conf()")
    system.sleep(0.2)
    refused(pg:url("shut_out", "app"), "unauthorized", "28000")
  end)

  it("retries while the server shuts down and starts again (57P03, refused sockets)", function()
    if not need() then return end
    local db = assert(tododb.connect(pg:url("app", "app"), S.opts()))
    db:close()
    assert(pg:stop "fast")
    assert(S.run(("(sleep 1; %s) >/dev/null 2>&1 &"):format(
      C.as_pg(("%s/pg_ctl -D '%s' -l '%s/server.log' -w start"):format(C.bin, pg.data, pg.dir)))))
    local t0 = system.monotime()
    local err
    db, err = tododb.connect(pg:url("app", "app"), { connect_timeout = 30 })
    assert.is_nil(err)
    assert.is_true(system.monotime() - t0 >= 0.9)
    assert.equal(1, db:query "SELECT 1 AS one"[1].one)
    db:close()
  end)
end)
