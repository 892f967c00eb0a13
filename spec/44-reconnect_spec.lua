-- A broken connection: reads are retried once transparently, writes never.
local S = require "support"
local tododb = require "tododb"

describe("session calls over a connection whose backend was killed", function()
  local db, admin, s, todo

  local function pid() return assert(db:query "SELECT pg_backend_pid() AS p")[1].p end

  -- Kills db's backend from outside and waits until it is gone.
  local function kill()
    local p = pid()
    assert.is_true(assert(admin:query("SELECT pg_terminate_backend($1) AS ok", p))[1].ok)
    for _ = 1, 200 do
      local r = assert(admin:query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1", p))
      if r[1].n == 0 then return p end
      os.execute "sleep 0.01"
    end
    error("backend " .. tostring(p) .. " did not go away")
  end

  before_each(function()
    if not S.admin_url then return end
    db = S.fresh()
    admin = assert(tododb.connect(S.admin_url))
    local u = assert(db:create_user { email = "alice@example.com", password = "password1" })
    s = db:session(u)
    todo = assert(s:create_todo { title = "survives" })
  end)
  after_each(function()
    if db then db:close(); admin:close() end
  end)

  it("retries a read once, on a new connection", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    local old = kill()
    assert.equal("survives", assert(s:get_todo(todo.id)).title)
    assert.not_equal(old, pid())
    kill()
    assert.equal(1, #assert(s:list_todos()).items)
    kill()
    assert.equal(1, assert(s:count_todos()))
  end)

  it("never retries a write: unavailable, nothing written, the next call works", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    kill()
    local t, err = s:create_todo { title = "maybe" }
    assert.is_nil(t)
    assert.equal("unavailable", err.code)
    assert.equal(1, assert(s:count_todos()))
    kill()
    local ok
    ok, err = s:delete_todo(todo.id)
    assert.is_nil(ok)
    assert.equal("unavailable", err.code)
    assert.equal("survives", assert(s:get_todo(todo.id)).title)
    assert(s:create_todo { title = "after" })
    assert.equal(2, assert(s:count_todos()))
  end)
end)
