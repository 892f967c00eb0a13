-- Multi-host connection strings: a hung first host costs its per-host
-- timeout (the string's connect_timeout), then the next host is tried.
local S = require "support"
local C = require "cluster"
local tododb = require "tododb"
local system = require "system"

describe("multi-host failover", function()
  local a, b, why

  setup(function()
    a, why = C.started {}
    if a then b, why = C.started {} end
  end)

  teardown(function()
    if a then a:destroy() end
    if b then b:destroy() end
  end)

  local function url(per_host)
    return ("postgresql:///postgres?host=%s,%s&port=%d,%d&user=postgres&connect_timeout=%d")
      :format(a.dir, b.dir, a.port, b.port, per_host)
  end

  it("moves on to the next host when the first one hangs, within its per-host timeout", function()
    if why then return pending(why) end
    assert(a:signal "STOP")                 -- accepts at the socket, never answers
    local ok, db, err, elapsed = pcall(function()
      local t0 = system.monotime()
      local d, e = tododb.connect(url(2), { connect_timeout = 20 })
      return d, e, system.monotime() - t0
    end)
    a:signal "CONT"
    assert.is_true(ok, db)
    assert.is_nil(err)
    assert.is_true(elapsed >= 1.5 and elapsed < 10, "connected after " .. tostring(elapsed) .. " s")
    local port = db:query "SELECT current_setting('port')::int AS p"[1].p
    assert.equal(b.port, port)
    db:close()
  end)

  it("names the host and the phase when every host times out", function()
    if why then return pending(why) end
    assert(a:signal "STOP")
    assert(b:signal "STOP")
    local ok, db, err = pcall(tododb.connect, url(2), { connect_timeout = 3 })
    a:signal "CONT"
    b:signal "CONT"
    assert.is_true(ok, db)
    assert.is_nil(db)
    assert.equal("unavailable", err.code)
    assert.matches("timed out after 3 s", err.message, 1, true)
    assert.matches("did not answer in time", err.message, 1, true)
    assert.matches("(authentication)", err.message, 1, true)
    assert.is_truthy(err.message:find(a.dir, 1, true) or err.message:find(b.dir, 1, true), err.message)
  end)

  it("connects to the first host when it answers", function()
    if why then return pending(why) end
    local db = assert(tododb.connect(url(2), S.opts()))
    assert.equal(a.port, db:query "SELECT current_setting('port')::int AS p"[1].p)
    db:close()
  end)
end)
