-- A broken connection: reads are retried once transparently, writes never.
local S = require "support"
local tododb = require "tododb"

describe("calls over a connection whose backend was killed", function()
  local db, admin, s, todo

  local function pid() return assert(db:query "SELECT pg_backend_pid() AS p")[1].p end

  -- Kills db's backend from outside and waits until it is gone.
  local function kill()
    local p = pid()
    assert.is_true(assert(admin:query("SELECT pg_terminate_backend($1::int) AS ok", p))[1].ok)
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
    if S.pooler then
      return pending "behind a transaction pooler the next statement gets another server connection"
    end
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

  -- db:query and db:exec under the same policy.
  it("retries a db:query read once, on a new connection", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    for _, sql in ipairs {
      "SELECT $1::int AS v",
      "  -- a read\n/* a /* nested */ comment */ select $1::int AS v",
      "VALUES ($1::int)",
      "TABLE users",
    } do
      local old = kill()
      local rows, err
      if sql:find("$1", 1, true) then rows, err = db:query(sql, 5) else rows, err = db:query(sql) end
      assert.is_table(rows, sql .. ": " .. tostring(err))
      assert.not_equal(old, pid())
    end
  end)

  it("never retries a db:query or db:exec that may write", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    if S.pooler then
      return pending "behind a transaction pooler the next statement gets another server connection"
    end
    local insert = "INSERT INTO users (email, hashed_password) VALUES ($1, 'x')"
    for _, sql in ipairs {
      insert,
      "WITH w AS (" .. insert .. " RETURNING id) SELECT id FROM w",
      "SELECT $1::text AS x INTO h_into",
      "/* /* */ SELECT */ " .. insert,
    } do
      kill()
      local rows, err = db:query(sql, "written@example.com")
      assert.is_nil(rows, sql)
      assert.equal("unavailable", err.code)
    end
    kill()
    local ok, err = db:exec "INSERT INTO users (email, hashed_password) VALUES ('written@example.com', 'x')"
    assert.is_nil(ok)
    assert.equal("unavailable", err.code)
    assert.equal(0, db:query("SELECT count(*) AS n FROM users WHERE email = $1", "written@example.com")[1].n)
    assert.is_nil(db:query "SELECT to_regclass('h_into') AS t"[1].t)
  end)
end)

describe("prepared statements the server no longer has", function()
  it("are prepared again, for reads and writes alike", function()
    local db = S.fresh()
    local u = assert(db:create_user { email = "carol@example.com", password = "password1" })
    local s = db:session(u)
    local t = assert(s:create_todo { title = "first" })
    assert(s:get_todo(t.id))
    -- What a pooler's DISCARD ALL or a server-side DEALLOCATE does.
    assert(db:exec "DEALLOCATE ALL")
    assert.equal("first", assert(s:get_todo(t.id)).title)
    assert(db:exec "DEALLOCATE ALL")
    assert.equal("second", assert(s:create_todo { title = "second" }).title)
    assert.equal(2, assert(s:count_todos()))
    assert(db:exec "DEALLOCATE ALL")
    assert(db:get_user(u.id))
    -- db:query's statements alike (the read and the write after it).
    assert.equal(1, db:query("SELECT count(*) AS n FROM users WHERE id = $1", u.id)[1].n)
    assert(db:exec "DEALLOCATE ALL")
    assert.equal(1, db:query("SELECT count(*) AS n FROM users WHERE id = $1", u.id)[1].n)
    assert(db:exec "DEALLOCATE ALL")
    local _, n = assert(db:query("UPDATE users SET updated_at = now() WHERE id = $1", u.id))
    assert.equal(1, n)
    db:close()
  end)
end)

describe("connection strings with passwords", function()
  it("never echo a password, whatever its characters", function()
    for _, case in ipairs {
      { "postgresql://u:*@127.0.0.1:1/x", "*" },
      { "postgresql://u:***@127.0.0.1:1/x", "***" },
      { "host=127.0.0.1 port=1 password='two words' dbname=x", "words" },
      { "host=127.0.0.1 port=1 password=two words dbname=x", "words" },
      { "postgresql://u:s3cr%zzet@127.0.0.1:1/x", "s3cr" },
    } do
      local db, err = tododb.connect(case[1], { connect_timeout = 0.2 })
      assert.is_nil(db)
      assert.is_truthy(err.code == "invalid" or err.code == "unavailable")
      if #case[2] > 3 then assert.is_nil(err.message:find(case[2], 1, true), case[1]) end
      assert.is_nil(err.message:find(case[1], 1, true))
    end
  end)
end)

describe("create_todos items", function()
  it("must be plain tables (a proxy's strings are not kept alive)", function()
    local db = S.fresh()
    local u = assert(db:create_user { email = "dan@example.com", password = "password1" })
    local proxy = setmetatable({}, { __index = function(_, k) if k == "title" then return "x" end end })
    assert.has_error(function() db:session(u):create_todos { { title = "ok" }, proxy } end)
    assert.equal(0, db:session(u):count_todos())
    db:close()
  end)
end)
